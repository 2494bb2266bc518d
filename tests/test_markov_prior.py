"""The speech prior with memory: the Gauss–Markov chain over frames, in training and separation."""

from __future__ import annotations

import math

import pyro
import pyro.distributions as dist
import pyro.poutine as poutine
import pytest
import torch
from pyro.infer import Trace_ELBO, TraceEnum_ELBO

from pyro_avss.audio import StftConfig
from pyro_avss.checkpoint import SpeechModels
from pyro_avss.errors import InputError
from pyro_avss.inference.separation import SeparationSettings, fit_batch
from pyro_avss.models.generative import (MAX_PLATE_NESTING, SeparationModel, latent_prior, speech_guide,
                                         speech_model)
from pyro_avss.models.markov import GaussMarkovChain, linear_recurrence
from pyro_avss.models.switch import make_switch
from pyro_avss.nets.lips import LipProjection
from pyro_avss.nets.vae import DecoderBank, LatentDynamics, SpeechEncoder, VisualPrior

F, D, DV = 33, 4, 6


def test_linear_recurrence_matches_the_loop():
    torch.manual_seed(0)
    for T in (1, 2, 5, 37, 64):
        a = torch.rand(3, 1, 2, D) * 1.8 - 0.9
        u = torch.randn(3, T, 2, D)
        x, expected = torch.zeros(3, 2, D), []
        for t in range(T):
            x = a[:, 0] * x + u[:, t]
            expected.append(x)
        assert torch.allclose(linear_recurrence(a, u), torch.stack(expected, 1), atol=1e-5), T


def _chain_by_pyro_markov(loc, scale, corr, value):
    """The same chain written frame by frame with ``pyro.markov``: its joint log density."""
    T = loc.shape[-3]

    def model():
        previous = None
        for t in pyro.markov(range(T)):
            if previous is None:
                mean, sd = loc[..., 0, :, :], scale[..., 0, :, :]
            else:
                mean = loc[..., t, :, :] + corr * (previous - loc[..., t - 1, :, :])
                sd = torch.sqrt(1 - corr * corr) * scale[..., t, :, :]
            previous = pyro.sample(f"z_{t}", dist.Normal(mean, sd).to_event(2),
                                   obs=value[..., t, :, :])

    return poutine.trace(model).get_trace().log_prob_sum()


def test_chain_log_density_equals_the_pyro_markov_formulation():
    torch.manual_seed(1)
    B, T, J = 2, 9, 2
    loc, scale = torch.randn(B, T, J, D), torch.rand(B, T, J, D) + 0.3
    corr = torch.rand(J, D) * 0.9
    value = torch.randn(B, T, J, D)
    chain = GaussMarkovChain(loc, scale, corr)
    assert chain.batch_shape == (B, T) and chain.event_shape == (J, D)
    assert torch.allclose(chain.log_prob(value).sum(), _chain_by_pyro_markov(loc, scale, corr, value),
                          rtol=1e-5)
    # no correlation: the frame-wise prior exactly
    flat = GaussMarkovChain(loc, scale, torch.zeros(J, D))
    assert torch.allclose(flat.log_prob(value), dist.Normal(loc, scale).to_event(2).log_prob(value), atol=1e-5)


def test_chain_samples_have_the_prior_marginals_and_the_correlation():
    torch.manual_seed(2)
    T, a = 400, torch.tensor([0.0, 0.5, 0.9, 0.97])
    loc = torch.full((T, 1, D), 2.0)
    chain = GaussMarkovChain(loc, torch.full((T, 1, D), 0.5), a)
    z = chain.rsample((200,))                                               # (200, T, 1, D)
    dev = (z - 2.0)[:, :, 0]
    assert torch.allclose(dev.std((0, 1)), torch.full((D,), 0.5), rtol=0.05)
    lag1 = (dev[:, 1:] * dev[:, :-1]).mean((0, 1)) / dev.var((0, 1))
    assert torch.allclose(lag1, a, atol=0.03)
    assert torch.allclose(chain.variance, torch.full((T, 1, D), 0.25), atol=1e-5)
    # differentiable in every parameter
    loc, scale, corr = (torch.zeros(5, 1, D, requires_grad=True), torch.ones(5, 1, D, requires_grad=True),
                        torch.full((1, D), 0.3, requires_grad=True))
    GaussMarkovChain(loc, scale, corr).rsample().pow(2).sum().backward()
    assert all(t.grad is not None and t.grad.abs().sum() > 0 for t in (loc, scale, corr))


def test_chain_refuses_a_time_varying_correlation():
    with pytest.raises(ValueError, match="time axis"):
        GaussMarkovChain(torch.zeros(2, 5, 1, D), torch.ones(2, 5, 1, D), torch.zeros(2, 5, 1, D))


def _batch(B=3, T=10, present=1.0):
    torch.manual_seed(3)
    mask = torch.ones(B, T, dtype=torch.bool)
    mask[-1, 6:] = False
    return {"power": torch.rand(B, T, F) + 0.1, "lips": torch.randn(B, T, DV),
            "present": torch.full((B, T), present), "labels": torch.full((B, T), -1), "mask": mask}


@pytest.mark.parametrize("K, elbo", [(1, Trace_ELBO), (3, TraceEnum_ELBO)])
def test_training_takes_the_kl_to_the_chain_and_learns_its_correlation(K, elbo):
    batch = _batch()
    dec, enc = DecoderBank(K, F, D, 16, DV), SpeechEncoder(F, D, 16, DV)
    prior, dynamics = VisualPrior(DV, D, 16), LatentDynamics(D)
    switch = make_switch("iid", K, 1, learn_prior=False, enumerate=K > 1)
    guide = poutine.trace(speech_guide).get_trace(batch, enc)
    model = poutine.trace(poutine.replay(speech_model, guide)).get_trace(batch, dec, switch, 1.0, prior,
                                                                          dynamics)
    z = guide.nodes["z"]["value"]
    loc, scale = prior(batch["lips"], batch["present"])
    expected = GaussMarkovChain(loc[..., None, :], scale[..., None, :], dynamics()).log_prob(z)
    assert torch.allclose(model.nodes["z"]["fn"].log_prob(z), expected)
    loss = elbo(max_plate_nesting=MAX_PLATE_NESTING).differentiable_loss(
        lambda b: speech_model(b, dec, switch, 0.5, prior, dynamics), lambda b: speech_guide(b, enc, None, 0.5),
        batch)
    loss.backward()
    assert math.isfinite(loss.item()) and dynamics.logit.grad.abs().sum() > 0


def test_without_a_face_the_chain_falls_back_to_the_standard_one():
    batch = _batch(present=0.0)
    d = latent_prior(VisualPrior(DV, D, 16), batch["lips"][..., None, :], batch["present"][..., None],
                     [1, D], LatentDynamics(D))
    plain = latent_prior(None, batch["lips"][..., None, :], batch["present"][..., None], [1, D], LatentDynamics(D))
    z = torch.randn(3, 10, 1, D)
    assert torch.allclose(d.log_prob(z), plain.log_prob(z))


def _models(dynamics=True, seed=0):
    torch.manual_seed(seed)
    return SpeechModels(SpeechEncoder(F, D, 16, DV), DecoderBank(2, F, D, 16, DV), LipProjection(DV, 8),
                        StftConfig(), prior=VisualPrior(DV, D, 16),
                        dynamics=LatentDynamics(D, 0.8) if dynamics else None)


@pytest.mark.parametrize("guide", ["auto", "meanfield", "markov"])
def test_separation_with_memory_and_each_guide(guide):
    m = _models()
    B, T, J = 2, 12, 2
    power = torch.rand(B, T, F) + 0.1
    mask = torch.ones(B, T, dtype=torch.bool)
    mask[1, 9:] = False
    s = SeparationSettings(steps=3, num_samples=2, guide=guide)
    fit = fit_batch(m, power, torch.randn(B, T, J, DV), torch.ones(B, T, J), mask, s)
    assert torch.allclose(fit.masks.sum(2), torch.ones(B, T, F), atol=1e-4)
    assert torch.allclose(fit.posterior.sum(-1), torch.ones(B, T, J), atol=1e-4)
    has_corr = "z_corr" in fit.params
    assert has_corr == (guide != "meanfield")
    if has_corr:
        assert tuple(fit.params["z_corr"].shape) == (B, 1, J, D)


def test_structured_guide_starts_at_the_prior_correlation_and_is_meanfield_without_memory():
    m = _models()
    B, T, J = 1, 8, 2
    args = (torch.rand(B, T, F) + 0.1, torch.randn(B, T, J, DV), torch.ones(B, T, J), torch.ones(B, T, dtype=bool))
    pyro.clear_param_store()
    switch = make_switch("utterance", 2, J)
    sep = SeparationModel(m.encoder, m.decoders, switch, prior=m.prior, dynamics=m.dynamics, guide="markov")
    q = poutine.trace(sep.guide).get_trace(*args).nodes["z"]["fn"]
    assert isinstance(q, GaussMarkovChain)
    assert torch.allclose(pyro.param("z_corr")[0, 0], m.dynamics().expand(J, D))
    pyro.clear_param_store()
    plain = SeparationModel(m.encoder, m.decoders, switch, prior=m.prior, guide="markov")
    poutine.trace(plain.guide).get_trace(*args)
    assert torch.all(pyro.param("z_corr") == 0)
    with pytest.raises(InputError, match="separate.guide"):
        SeparationSettings(guide="bogus")
    with pytest.raises(ValueError, match="guide must be"):
        SeparationModel(m.encoder, m.decoders, switch, guide="bogus")


def test_model_file_keeps_the_dynamics_and_old_files_have_none(tmp_path):
    m = _models()
    m.save(tmp_path / "m.pt")
    back = SpeechModels.load(tmp_path / "m.pt")
    assert torch.equal(back.dynamics(), m.dynamics())
    assert torch.load(tmp_path / "m.pt", weights_only=True)["format_version"] == 3
    plain = _models(dynamics=False)
    plain.save(tmp_path / "plain.pt")
    assert torch.load(tmp_path / "plain.pt", weights_only=True)["format_version"] == 2
    assert SpeechModels.load(tmp_path / "plain.pt").dynamics is None
