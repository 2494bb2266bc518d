"""MCEM reference algorithm: acceptance, EM monotonicity, exact M-step descent, outputs."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from pyro_avss.audio import StftConfig
from pyro_avss.checkpoint import SpeechModels
from pyro_avss.errors import InputError
from pyro_avss.inference import mcem
from pyro_avss.inference.mcem import MCEMSettings, mcem_separate
from pyro_avss.nets.lips import LipProjection
from pyro_avss.nets.vae import DecoderBank, SpeechEncoder

SR = 16000
CFG = StftConfig(n_fft=128, hop=64)




def tiny_models(K: int = 2, seed: int = 0) -> SpeechModels:
    torch.manual_seed(seed)
    F = CFG.num_bins
    names = [f"spk{k}" for k in range(K)]
    return SpeechModels(SpeechEncoder(F, 4, 16, 0), DecoderBank(K, F, 4, 16, 0, names=names),
                        LipProjection(4, 8), CFG)


def noisy_tone(seconds: float = 0.5, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(int(SR * seconds)) / SR
    speech = 0.1 * np.sin(2 * np.pi * 200 * t) * (1 + np.sin(2 * np.pi * 4 * t))
    return (speech + 0.02 * rng.normal(size=t.size)).astype(np.float32)


@pytest.fixture(scope="module")
def run():
    models, audio = tiny_models(), noisy_tone()
    return models, audio, mcem_separate(models, audio, None, MCEMSettings(em_iterations=15, tol=0.0))


def test_outputs_reconstruct_the_mixture(run):
    models, audio, res = run
    assert res.sources.shape == (1, audio.size) and res.noise.shape == audio.shape
    assert np.abs(res.sources[0] + res.noise - audio).max() < 1e-4
    assert np.abs(res.sources[0]).max() > 1e-4          # not a trivial all-noise answer
    T = CFG.num_frames(audio.size)
    assert res.posterior.shape == (T, 1, 2)
    np.testing.assert_allclose(res.posterior.sum(-1), 1.0, atol=1e-5)
    # 15 EM iterations of 40 MH steps + 100 final steps, plus one initial pass per MH run
    assert res.steps == 15 and res.decoder_passes == 15 * 41 + 101


def test_acceptance_rate_is_sensible(run):
    _, _, res = run
    assert 0.05 < res.acceptance < 0.95
    assert all(0.0 < h["acceptance"] < 1.0 for h in res.history)


def test_larger_proposals_are_accepted_less_often():
    models, audio = tiny_models(), noisy_tone()
    rates = [mcem_separate(models, audio, None, MCEMSettings(em_iterations=2, tol=0.0, proposal_var=v,
                                                            final_steps=10, final_burn_in=5)).acceptance
             for v in (1e-3, 0.01, 1.0)]
    assert rates[0] > rates[1] > rates[2]


def test_cost_decreases_over_em_iterations_up_to_mc_noise(run):
    _, _, res = run
    costs = np.array([h["cost"] for h in res.history])
    assert np.all(np.isfinite(costs))
    drop = costs[0] - costs[-1]
    assert drop > 0.1                                    # EM really improves the fit
    # the MC estimate may wiggle: allow rises of at most 2 % of the total improvement
    rises = np.diff(costs)
    assert rises.max() <= 0.02 * drop, rises


def test_m_step_never_increases_the_cost_for_fixed_samples():
    """Multiplicative updates (exponent 1/2) are a majorise-minimise scheme: with the samples
    held fixed the Monte-Carlo cost must not go up, not even by MC noise."""
    models, audio = tiny_models(K=3, seed=1), noisy_tone(seed=1)
    from pyro_avss.inference.inputs import utterance_inputs

    x = utterance_inputs(audio, None, models.lips, CFG)
    gen = torch.Generator().manual_seed(0)
    problem = mcem._Problem(models.decoders, x.power, x.lips, x.present, MCEMSettings(), gen)
    with torch.no_grad():
        z = torch.randn(x.power.shape[0], 4, generator=gen)
        _, ls, cll, _, _ = mcem._metropolis(problem, z, 12, 4, 0.1, gen)
        costs = [mcem._cost(problem, ls)]
        for _ in range(8):
            mcem._m_step(problem, ls, mcem._responsibilities(problem, cll))
            costs.append(mcem._cost(problem, ls))
            cll = problem.component_loglik(ls)      # E-step over the switch for the same z
    assert all(b <= a + 1e-6 * abs(a) for a, b in zip(costs, costs[1:])), costs
    assert costs[-1] < costs[0] - 0.05


def test_component_restriction_and_early_stop():
    models, audio = tiny_models(K=3), noisy_tone()
    res = mcem_separate(models, audio, None, MCEMSettings(em_iterations=50, tol=1e-2, components=(1,)))
    assert np.all(res.posterior[:, 0, [0, 2]] == 0.0)
    np.testing.assert_allclose(res.posterior[:, 0, 1], 1.0)
    assert 2 <= res.steps < 50                           # the loose tolerance stops it early
    last, before = res.history[-1]["cost"], res.history[-2]["cost"]
    assert abs(last - before) < 1e-2 * abs(before)


def test_same_seed_same_result_and_bad_settings():
    models, audio = tiny_models(), noisy_tone()
    s = MCEMSettings(em_iterations=2, mh_steps=6, burn_in=3, final_steps=6, final_burn_in=3, seed=3)
    a, b = mcem_separate(models, audio, None, s), mcem_separate(models, audio, None, s)
    np.testing.assert_array_equal(a.sources, b.sources)
    with pytest.raises(InputError, match="burn_in"):
        mcem_separate(models, audio, None, MCEMSettings(mh_steps=5, burn_in=5))
    with pytest.raises(InputError, match="1-D"):
        mcem_separate(models, np.zeros((2, 100), np.float32), None)
    assert math.isfinite(a.acceptance)
