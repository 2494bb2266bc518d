"""The math of the generative model: likelihood, exact switch marginalisation and posteriors."""

from __future__ import annotations

import itertools
import math

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro.infer import Trace_ELBO, TraceEnum_ELBO

from pyro_avss.models.generative import MAX_PLATE_NESTING, SeparationModel, speech_guide, speech_model
from pyro_avss.models.likelihood import frame_log_likelihood, mixture_log_likelihood
from pyro_avss.models.switch import IIDSwitch, MarkovSwitch, joint_states, make_switch
from pyro_avss.nets.vae import DecoderBank, SpeechEncoder

B, T, F, D, DV = 2, 12, 9, 4, 3


def tiny_nets(K, seed=0):
    torch.manual_seed(seed)
    return SpeechEncoder(F, D, 16, DV), DecoderBank(K, F, D, 16, DV)


def tiny_inputs(J, seed=1):
    g = torch.Generator().manual_seed(seed)
    power = torch.rand(B, T, F, generator=g) * 3
    lips = torch.randn(B, T, J, DV, generator=g)
    present = (torch.rand(B, T, J, generator=g) > 0.2).float()
    mask = torch.ones(B, T, dtype=torch.bool)
    mask[1, 9:] = False
    return power, lips, present, mask


def test_likelihood_is_complex_gaussian_up_to_constant():
    torch.manual_seed(0)
    x = torch.randn(5, F, dtype=torch.complex128)
    log_var = torch.randn(5, F, dtype=torch.float64)
    ours = frame_log_likelihood(x.abs() ** 2, log_var)
    direct = (-math.log(math.pi) - log_var - x.abs() ** 2 / log_var.exp()).sum(-1)
    assert torch.allclose(ours, direct + F * math.log(math.pi), atol=1e-10)
    expo = dist.Exponential(torch.exp(-log_var)).log_prob(x.abs() ** 2).sum(-1)
    assert torch.allclose(ours, expo, atol=1e-10)


def test_joint_states_cover_every_combination():
    table = joint_states(3, 2)
    assert table.shape == (9, 2)
    assert {tuple(r) for r in table.tolist()} == set(itertools.product(range(3), repeat=2))


@pytest.mark.parametrize("J", [1, 2])
def test_enumerated_elbo_equals_logsumexp_elbo(J):
    enc, dec = tiny_nets(3)
    args = tiny_inputs(J)
    losses = []
    for enumerate_ in (True, False):
        pyro.clear_param_store()
        pyro.set_rng_seed(3)
        sep = SeparationModel(enc, dec, IIDSwitch(3, J, enumerate=enumerate_))
        elbo = (TraceEnum_ELBO if enumerate_ else Trace_ELBO)(max_plate_nesting=MAX_PLATE_NESTING)
        losses.append(elbo.loss(sep.model, sep.guide, *args))
    assert losses[0] == pytest.approx(losses[1], rel=1e-5)


def test_training_elbo_enumerated_equals_hand_written():
    """Partially labelled training batch: TraceEnum over m vs an explicit logsumexp."""
    enc, dec = tiny_nets(2)
    power, lips, present, mask = tiny_inputs(1)
    labels = torch.full((B, T), -1)
    labels[0, :5] = 1
    batch = {"power": power, "lips": lips[..., 0, :], "present": present[..., 0], "labels": labels,
             "mask": mask}
    pyro.set_rng_seed(5)
    sw = IIDSwitch(2, 1, learn_prior=False, enumerate=True)
    enum_loss = TraceEnum_ELBO(max_plate_nesting=2).loss(
        lambda b: speech_model(b, dec, sw, 0.5), lambda b: speech_guide(b, enc, None, 0.5), batch)
    # by hand, with the same z sample
    pyro.set_rng_seed(5)
    loc, scale = enc(torch.log(power + 1e-8), batch["lips"], batch["present"])
    z = dist.Normal(loc, scale).sample()[..., None, :]
    ll = mixture_log_likelihood(power, dec(z, batch["lips"][..., None, :], batch["present"][..., None]), None)
    ll = torch.where((labels[..., None] < 0) | (torch.arange(2) == labels[..., None]), ll, ll - 1e5)
    evidence = torch.logsumexp(ll + math.log(0.5), -1)
    kl = (dist.Normal(loc, scale).log_prob(z[..., 0, :]) - dist.Normal(0, 1).log_prob(z[..., 0, :])).sum(-1)
    hand = -((evidence - 0.5 * kl) * mask).sum().detach()
    assert enum_loss == pytest.approx(float(hand), rel=1e-5)


def brute_force_posterior(loglik, log_prior_path):
    """p(m_t = s | x) by summing over all S^T paths of one utterance (loglik (T, S))."""
    T, S = loglik.shape
    post = torch.zeros(T, S, dtype=torch.float64)
    weights = []
    paths = list(itertools.product(range(S), repeat=T))
    for path in paths:
        weights.append(log_prior_path(path) + sum(loglik[t, s] for t, s in enumerate(path)))
    weights = torch.softmax(torch.stack(weights), 0)
    for w, path in zip(weights, paths):
        for t, s in enumerate(path):
            post[t, s] += w
    return post


@pytest.mark.parametrize("prior", ["iid", "markov", "utterance"])
def test_switch_posterior_equals_brute_force(prior):
    """Two sources, K = 2 components (4 joint states), 5 frames: 4^5 paths."""
    K, J, Tn = 2, 2, 5
    g = torch.Generator().manual_seed(0)
    loglik = torch.randn(1, Tn, K ** J, generator=g, dtype=torch.float64) * 3
    pi = torch.tensor([[[0.7, 0.3], [0.4, 0.6]]], dtype=torch.float64)
    mask = torch.ones(1, Tn, dtype=torch.bool)
    switch = make_switch(prior, K, J, stay_prob=0.8)
    ours = switch.posterior(loglik, mask, pi)[0]
    states = joint_states(K, J)
    log_pi_joint = sum(pi[0, j, states[:, j]].log() for j in range(J))
    if prior == "iid":
        def log_prior_path(path):
            return sum(log_pi_joint[s] for s in path)
    elif prior == "utterance":               # only constant paths have prior mass
        def log_prior_path(path):
            return log_pi_joint[path[0]] if len(set(path)) == 1 else torch.tensor(-math.inf).double()
    else:
        A = torch.tensor([[0.8, 0.2], [0.2, 0.8]], dtype=torch.float64).log()
        logA = sum(A[states[:, None, j], states[None, :, j]] for j in range(J))

        def log_prior_path(path):
            return log_pi_joint[path[0]] + sum(logA[a, b] for a, b in zip(path[:-1], path[1:]))
    brute = brute_force_posterior(loglik[0], log_prior_path)
    assert torch.allclose(ours, brute, atol=1e-8)


def forward_backward(loglik, log_pi, log_A):
    """Textbook log-space forward-backward for one sequence (float64)."""
    T, S = loglik.shape
    alpha = torch.zeros(T, S, dtype=torch.float64)
    beta = torch.zeros(T, S, dtype=torch.float64)
    alpha[0] = log_pi + loglik[0]
    for t in range(1, T):
        alpha[t] = torch.logsumexp(alpha[t - 1][:, None] + log_A, 0) + loglik[t]
    for t in range(T - 2, -1, -1):
        beta[t] = torch.logsumexp(log_A + (loglik[t + 1] + beta[t + 1])[None, :], 1)
    return torch.softmax(alpha + beta, -1), torch.logsumexp(alpha[-1], 0)


def test_discrete_hmm_marginals_equal_explicit_forward_backward():
    K, Tn = 3, 300
    g = torch.Generator().manual_seed(1)
    # realistic magnitudes: per-frame log-likelihoods of several hundred nats
    loglik = (-400 + 20 * torch.randn(1, Tn, K, generator=g)).double()
    pi = torch.tensor([[[0.5, 0.3, 0.2]]], dtype=torch.float64)
    mask = torch.ones(1, Tn, dtype=torch.bool)
    sw = MarkovSwitch(K, 1, stay_prob=0.95)
    post = sw.posterior(loglik, mask, pi)[0]
    ref, log_z = forward_backward(loglik[0], pi[0, 0].log(), sw.log_transition("cpu"))
    assert torch.allclose(post, ref, atol=1e-9)
    assert float(sw.log_evidence(loglik, mask, pi)[0]) == pytest.approx(float(log_z), rel=1e-9)
    # float32 with the per-frame shift stays accurate at T = 300
    post32 = sw.posterior(loglik.float(), mask, pi.float())[0]
    assert (post32.double() - ref).abs().max() < 1e-3


def test_compute_marginals_agrees_with_iid_posterior():
    enc, dec = tiny_nets(3)
    power, lips, present, mask = tiny_inputs(1)
    pyro.clear_param_store()
    sep = SeparationModel(enc, dec, IIDSwitch(3, 1, enumerate=True))
    elbo = TraceEnum_ELBO(max_plate_nesting=2)
    elbo.loss(sep.model, sep.guide, power, lips, present, mask)          # creates the params
    store = pyro.get_param_store()
    # fix z at the guide mean so both computations condition on the same z
    store["z_scale"] = torch.full_like(store["z_scale"], 1e-8)
    marg = elbo.compute_marginals(sep.model, sep.guide, power, lips, present, mask)["m0"].probs
    z = store["z_loc"]
    log_speech = sep.speech_log_variance(z, lips, present, store["gain"])
    ll = mixture_log_likelihood(power, log_speech, sep.noise.log_variance(power, mask))
    ours = sep.switch.posterior(ll, mask, store["switch_pi"])
    assert torch.allclose(marg[mask], ours[mask], atol=1e-4)


def test_decoders_broadcast_over_extra_dims():
    _, dec = tiny_nets(4)
    z = torch.randn(7, 3, B, T, 2, D)           # e.g. particles x enumeration x batch
    lips = torch.randn(B, T, 2, DV)
    out = dec(z, lips, torch.ones(B, T, 2))
    assert out.shape == (7, 3, B, T, 2, 4, F)
    one = dec(z[0, 0], lips, torch.ones(B, T, 2))
    assert torch.allclose(out[0, 0], one, atol=1e-6)


def test_missing_lips_remove_the_visual_term():
    _, dec = tiny_nets(2)
    z = torch.randn(B, T, 1, D)
    lips = torch.randn(B, T, 1, DV)
    gone = dec(z, lips, torch.zeros(B, T, 1))
    zeros = dec(z, torch.zeros_like(lips), torch.ones(B, T, 1))
    assert torch.allclose(gone, zeros, atol=1e-6)
