"""The speaker switch: one speaker per source and utterance, a sticky chain over its decoders.

Its evidence must be the sum over every switch path the prior allows (checked by brute force,
groups of unequal size included), reduce to the per-utterance switch when every component is a
speaker of its own and to the Markov switch when all are one speaker, keep posteriors that sum to
one where one chain with zero transitions between groups does not (float32, log-likelihoods
hundreds of nats apart), and observe the mixture as a Pyro site that agrees with its factor.
"""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from pyro_avss.errors import InputError
from pyro_avss.inference.separation import SeparationSettings, fit_batch
from pyro_avss.models.generative import SeparationModel
from pyro_avss.models.noise import NMFNoise
from pyro_avss.models.speaker_switch import SpeakerSwitch
from pyro_avss.models.switch import MarkovSwitch, UtteranceSwitch, make_switch
from pyro_avss.nets.vae import DecoderBank

from test_observation import factor_only, loss_and_grads, nets, problem
from test_separation import random_models


def frame_logliks(B, T, S, seed=0, spread=3.0):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(B, T, S, generator=g, dtype=torch.float64) * spread - 50.0)


def padded_mask(B, T):
    mask = torch.ones(B, T, dtype=torch.bool)
    mask[-1, T - 2:] = False
    return mask


def uniform_pi(B, J, K):
    return torch.full((B, J, K), 1.0 / K, dtype=torch.float64)


@pytest.mark.parametrize("J", [1, 2])
def test_it_reduces_to_the_utterance_switch_and_to_the_markov_switch(J):
    K, B, T = 3, 2, 7
    loglik, mask = frame_logliks(B, T, K ** J), padded_mask(B, T)
    pi = uniform_pi(B, J, K)
    alone = SpeakerSwitch([0, 1, 2], J, stay_prob=0.9)         # every component its own speaker
    utterance = UtteranceSwitch(K, J)
    assert torch.allclose(alone.log_evidence(loglik, mask, pi),
                          utterance.utterance_logits(loglik, mask, pi).logsumexp(-1))
    together = SpeakerSwitch(["a"] * K, J, stay_prob=0.9)      # one speaker: the Markov chain
    chain = MarkovSwitch(K, J, learn_prior=False, stay_prob=0.9 + 0.1 / K)   # keep, or redraw itself
    assert torch.allclose(together.log_evidence(loglik, mask, pi), chain.log_evidence(loglik, mask, pi))


def brute_force(speakers, weights, J, rho, loglik):
    """``log Σ_paths p(path) exp Σ_t ℓ[t, path_t]`` over every joint path, and its per-frame
    joint-state posteriors, for one utterance ``loglik (T, K^J)``."""
    K, T = len(speakers), loglik.shape[0]
    groups = sorted(set(speakers), key=speakers.index)
    total_w = {g: sum(w for s, w in zip(speakers, weights) if s == g) for g in groups}
    w = [weights[k] / total_w[speakers[k]] for k in range(K)]

    def source_path_prob(path):
        group = speakers[path[0]]
        if any(speakers[k] != group for k in path):
            return 0.0
        p = w[path[0]] / len(groups)
        for a, b in zip(path, path[1:]):
            p *= rho * (a == b) + (1 - rho) * w[b]
        return p

    total, post = 0.0, torch.zeros(T, K ** J, dtype=torch.float64)
    for paths in itertools.product(itertools.product(range(K), repeat=T), repeat=J):
        p = math.prod(source_path_prob(path) for path in paths)
        if p == 0.0:
            continue
        states = [sum(paths[j][t] * K ** (J - 1 - j) for j in range(J)) for t in range(T)]
        weight = p * math.exp(sum(float(loglik[t, s]) for t, s in enumerate(states)))
        total += weight
        for t, s in enumerate(states):
            post[t, s] += weight
    return math.log(total), post / total


@pytest.mark.parametrize("J,T", [(1, 4), (2, 3)])
def test_evidence_and_posteriors_are_the_sums_over_every_allowed_path(J, T):
    speakers, weights = ["a", "b", "a"], [1.0, 1.0, 0.25]       # groups of 2 and 1: padding
    switch = SpeakerSwitch(speakers, J, stay_prob=0.7, weights=weights)
    loglik = frame_logliks(1, T, 3 ** J, seed=1, spread=1.0) + 50.0
    mask = torch.ones(1, T, dtype=torch.bool)
    log_z, post = brute_force(speakers, weights, J, 0.7, loglik[0])
    assert float(switch.log_evidence(loglik, mask, uniform_pi(1, J, 3))) == pytest.approx(log_z, abs=1e-6)
    assert torch.allclose(switch.posterior(loglik, mask, uniform_pi(1, J, 3))[0], post, atol=1e-6)


@pytest.mark.parametrize("J", [1, 2])
def test_posteriors_sum_to_one_in_float32_where_log_likelihoods_are_far_apart(J):
    """Twins of three speakers; frame log-likelihoods hundreds of nats apart (as between one
    speaker's decoder and another's). A single chain whose transitions between speakers are
    EXCLUDED loses most of the posterior here (see the module docstring); this one must not."""
    speakers = ["s1", "s4", "u", "s1", "s4", "u"]
    switch = SpeakerSwitch(speakers, J, stay_prob=0.9995)
    B, T = 2, 188
    loglik = frame_logliks(B, T, 6 ** J, spread=300.0).float()
    post = switch.posterior(loglik, torch.ones(B, T, dtype=torch.bool), uniform_pi(B, J, 6).float())
    assert torch.allclose(post.sum(-1), torch.ones(B, T), atol=1e-5)
    assert torch.isfinite(post).all() and float(post.min()) >= 0.0


@pytest.mark.parametrize("speakers", [["a", "a"], ["a", "b"]])
def test_the_observed_site_agrees_with_the_factor(speakers):
    """Same ELBO and gradients whether the mixture is the observed site (a mixture over group
    tuples of hidden Markov models) or a factor of the evidence computed from ``ℓ``."""
    inputs = problem(J=2)
    enc, dec = nets()

    def model(factor):
        switch = make_switch("speaker", 2, 2, stay_prob=0.8, speakers=speakers)
        switch = factor_only(switch) if factor else switch
        return SeparationModel(enc, dec, switch, NMFNoise(rank=2), gain="frame")

    site, factor = loss_and_grads(model(False), inputs, False), loss_and_grads(model(True), inputs, False)
    assert site[0] == pytest.approx(factor[0], rel=1e-5, abs=1e-3)
    for name in site[1]:
        assert torch.allclose(site[1][name], factor[1][name], rtol=1e-3, atol=1e-3), name


def test_make_switch_builds_it_from_the_banks_speakers_and_says_what_is_wrong():
    bank = DecoderBank.from_components(
        [dict(DecoderBank(1, 5, 3, 8, lip_dim=2).component_state(0), name=n) for n in ("s1", "s4")],
        5, 3, 8, 2).with_audio_only_twins()
    assert bank.names == ["s1", "s4", "s1-ao", "s4-ao"]
    assert bank.speakers() == ["s1", "s4", "s1", "s4"]
    switch = make_switch("speaker", 4, 1, speakers=bank.speakers())
    assert switch.members == [[0, 2], [1, 3]]
    with pytest.raises(ValueError, match="3 speakers given for 4 components"):
        make_switch("speaker", 4, 1, speakers=["s1", "s4", "s1"])
    with pytest.raises(ValueError, match="no enumerated form"):
        make_switch("speaker", 4, 1, speakers=bank.speakers(), enumerate=True)


def test_separation_keeps_one_speaker_per_source_and_lets_its_twin_take_frames():
    """A twins bank end to end (faces seen, so a component and its twin differ): each source's
    posterior mass on a speaker (its decoder plus its twin) is the same in every frame of the
    recording, while the share between the two varies from frame to frame."""
    models = random_models(K=2, lip_dim=6, seed=3)
    models.decoders = models.decoders.with_audio_only_twins()
    g = torch.Generator().manual_seed(0)
    B, T, J = 2, 60, 2
    power = torch.rand(B, T, 513, generator=g) + 0.1
    lips = torch.randn(B, T, J, 6, generator=g)
    settings = SeparationSettings(steps=10, num_samples=2, switch_prior="speaker", stay_seconds=0.05,
                                  prune_threshold=0.0)
    fit = fit_batch(models, power, lips, torch.ones(B, T, J), torch.ones(B, T, dtype=torch.bool), settings)
    post = fit.posterior                                                         # (B, T, J, 4)
    assert torch.allclose(post.sum(-1), torch.ones(B, T, J), atol=1e-5)
    per_speaker = post[..., :2] + post[..., 2:]                                  # (B, T, J, 2)
    assert torch.allclose(per_speaker, per_speaker[:, :1].expand_as(per_speaker), atol=1e-5)
    assert float((post[..., :2] / per_speaker.clamp_min(1e-9)).std(1).max()) > 1e-2


def test_settings_refuse_the_enumerated_form_and_learn_its_stay():
    with pytest.raises(InputError, match="separate.enumeration: pyro: the speaker switch has no enumerated"):
        SeparationSettings(switch_prior="speaker", enumeration="pyro")
    assert SeparationSettings(switch_prior="speaker", learn_stay=True).learn_stay
