"""The Markov switch's stay probability: from a time constant, or learnt by SVI."""

from __future__ import annotations

import math

import numpy as np
import pyro
import pytest
import torch
from pyro.infer import SVI, Trace_ELBO

from pyro_avss.api import separation_settings
from pyro_avss.config import load_config
from pyro_avss.errors import ConfigError, InputError
from pyro_avss.inference.separation import SeparationSettings, separate_recordings
from pyro_avss.models.switch import DEFAULT_STAY, STAY_PARAM, MarkovSwitch, stay_from_seconds

from test_separation import noisy, random_models

HOP = 256 / 16000


def test_time_constant_sets_the_stay_and_excludes_an_explicit_stay_prob():
    # ρ = exp(-hop/τ): a run lasts 1/(1-ρ) ≈ τ/hop + 1/2 frames, i.e. about τ seconds
    for tau in (0.1, 0.5, 2.0):
        stay = stay_from_seconds(tau, HOP)
        assert stay == pytest.approx(math.exp(-HOP / tau), rel=1e-12)
        assert HOP / (1 - stay) == pytest.approx(tau + HOP / 2, rel=3e-3)
    assert stay_from_seconds(0.1, HOP) < stay_from_seconds(0.5, HOP) < stay_from_seconds(2.0, HOP)
    assert SeparationSettings().stay(HOP) == DEFAULT_STAY
    assert SeparationSettings(stay_prob=0.9).stay(HOP) == 0.9
    assert SeparationSettings(stay_seconds=0.5).stay(HOP) == pytest.approx(math.exp(-HOP / 0.5))
    cfg = load_config(None, ["separate.stay_seconds=0.5", "separate.switch_prior=markov"])["separate"]
    assert SeparationSettings.from_config(cfg).stay(HOP) == pytest.approx(0.9685, abs=1e-4)
    with pytest.raises(InputError, match="separate.stay_seconds.*both set"):
        SeparationSettings(stay_prob=0.9, stay_seconds=0.5)
    with pytest.raises(InputError, match=r"separate.stay_seconds: must be > 0"):
        SeparationSettings(stay_seconds=0)
    with pytest.raises(InputError, match=r"separate.stay_prob: must be in \(0, 1\)"):
        SeparationSettings(stay_prob=1.0)
    with pytest.raises(InputError, match="separate.stay_prob: must be a number"):
        SeparationSettings(stay_prob="often")
    with pytest.raises(InputError, match="separate.learn_stay.*switch_prior=markov"):
        SeparationSettings(learn_stay=True)
    with pytest.raises(ConfigError, match="learn_stay must be bool"):
        separation_settings(["separate.learn_stay=maybe"])


def test_learnt_transition_starts_at_the_fixed_one_and_rows_sum_to_one():
    K, J, B = 3, 2, 4
    fixed = MarkovSwitch(K, J, stay_prob=0.9)
    pyro.clear_param_store()
    learnt = MarkovSwitch(K, J, stay_prob=0.9, learn_stay=True)
    log_a = learnt.log_transition("cpu", B)
    assert log_a.shape == (B, K ** J, K ** J)
    assert torch.allclose(log_a, fixed.log_transition("cpu").expand(B, -1, -1), atol=1e-6)
    assert torch.allclose(log_a.logsumexp(-1), torch.zeros(B, K ** J), atol=1e-5)
    assert pyro.param(STAY_PARAM).shape == (B, J)
    with pytest.raises(ValueError, match="batch size"):
        learnt.log_transition("cpu")


def _runs_loglik(run: int, T: int = 120, strength: float = 1.5) -> torch.Tensor:
    """``(1, T, 2)`` evidence for a two-state sequence that changes state every ``run`` frames:
    ``strength`` nats for the true state, so the chain has to weigh it."""
    truth = (torch.arange(T) // run) % 2
    return strength * torch.nn.functional.one_hot(truth, 2).float()[None]


def _fit_stay(loglik: torch.Tensor, start: float = 0.9, steps: int = 30) -> float:
    """Fit only the stay logit by SVI (no latent variables: the guide is empty)."""
    pyro.clear_param_store()
    switch = MarkovSwitch(2, 1, learn_prior=False, stay_prob=start, learn_stay=True)
    mask = torch.ones(loglik.shape[:2], dtype=torch.bool)

    def model():
        with pyro.plate("utt", loglik.shape[0], dim=-2):
            switch.observe(loglik, mask)

    svi = SVI(model, lambda: None, pyro.optim.Adam({"lr": 0.25}), Trace_ELBO())
    for _ in range(steps):
        svi.step()
    return float(torch.sigmoid(pyro.param(STAY_PARAM)).detach())


def test_learnt_stay_moves_to_long_runs_and_to_rapid_switching():
    long_runs = _fit_stay(_runs_loglik(run=40))       # 2 changes in 120 frames
    rapid = _fit_stay(_runs_loglik(run=2))            # a change every other frame
    assert long_runs > 0.97
    assert rapid < 0.7


def test_stay_gradient_flows_and_ignores_padded_frames():
    g = torch.Generator().manual_seed(0)
    T, valid = 30, 21
    loglik = torch.randn(2, T, 2, generator=g) * 3
    mask = torch.ones(2, T, dtype=torch.bool)
    mask[1, valid:] = False
    pi = torch.full((2, 1, 2), 0.5)

    def value_and_grad(ll, m, p):
        pyro.clear_param_store()
        switch = MarkovSwitch(2, 1, stay_prob=0.9, learn_stay=True)
        log_z = switch.log_evidence(ll, m, p)
        (grad,) = torch.autograd.grad(log_z.sum(), pyro.param(STAY_PARAM).unconstrained())
        return log_z, grad

    log_z, grad = value_and_grad(loglik, mask, pi)
    assert torch.isfinite(grad).all() and (grad.abs() > 1e-4).all()
    garbage = loglik.clone()
    garbage[1, valid:] = 1e3                              # whatever the padding holds
    log_z2, grad2 = value_and_grad(garbage, mask, pi)
    alone, grad_alone = value_and_grad(loglik[1:, :valid], mask[1:, :valid], pi[1:])
    assert torch.allclose(log_z2, log_z) and torch.allclose(grad2, grad)
    assert torch.allclose(log_z[1], alone[0], atol=1e-4)
    assert torch.allclose(grad[1], grad_alone[0], atol=1e-5)


def test_separation_fits_and_reports_the_stay_per_source():
    x = noisy(seconds=0.6)
    settings = SeparationSettings(steps=8, num_samples=1, switch_prior="markov", stay_seconds=0.5,
                                  learn_stay=True)
    out = separate_recordings(random_models(), [(x, [None, None])], settings)[0]
    start = stay_from_seconds(0.5, HOP)
    assert out.switch_stay.shape == (2,) and np.all((out.switch_stay > 0) & (out.switch_stay < 1))
    assert np.abs(out.switch_stay - start).max() > 1e-3         # SVI moved it
    assert np.abs(out.sources.sum(0) + out.noise - x).max() < 1e-4
    fixed = separate_recordings(random_models(), [(x, [None])],
                                SeparationSettings(steps=2, num_samples=1, switch_prior="markov"))[0]
    assert fixed.switch_stay is None


@pytest.mark.parametrize("K", [3, 6])
@pytest.mark.parametrize("tau", [30.0, 3000.0])
def test_two_source_posteriors_sum_to_one_for_a_sticky_chain_in_float32(K, tau):
    """Two sources, a sticky chain (τ = 30 s / 3000 s at a 16 ms hop) and frame log-likelihoods
    hundreds of nats apart, as between speakers' decoders: the posteriors of the float32
    recursion summed to 0.0–0.07 instead of 1 before it ran in float64."""
    g = torch.Generator().manual_seed(0)
    B, T, J = 2, 400, 2
    loglik = torch.randn(B, T, K ** J, generator=g) * 300.0 - 5000.0
    switch = MarkovSwitch(K, J, learn_prior=False, stay_prob=math.exp(-0.016 / tau))
    post = switch.posterior(loglik, torch.ones(B, T, dtype=torch.bool), torch.full((B, J, K), 1.0 / K))
    assert post.dtype == torch.float32
    assert torch.allclose(post.sum(-1), torch.ones(B, T), atol=1e-3)
