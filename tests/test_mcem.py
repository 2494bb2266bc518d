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


# ---------------------------------------------------------------------------------------------
# the switch prior: per frame (default, the published algorithm) or one per utterance
# ---------------------------------------------------------------------------------------------
SMALL = dict(em_iterations=3, mh_steps=6, burn_in=3, final_steps=6, final_burn_in=3, seed=3)

#: numbers of the code before ``MCEMSettings.switch`` existed (commit db669e9) with ``SMALL``:
#: EM costs, acceptance, Σ|speech estimate|, one sample of it, the first two frames' posterior
BEFORE = {
    2: ([-0.5398434996604919, -1.3327409029006958, -1.6222363710403442], 0.9560185185185185,
        103.34037780761719, 0.016539055854082108, [[0.9774725, 0.02252751], [0.6675269, 0.3324731]]),
    3: ([-0.5370100736618042, -1.3337810039520264, -1.6253705024719238], 0.9540343915343915,
        103.42569732666016, 0.017110276967287064,
        [[0.39373484, 0.4288422, 0.17742296], [0.35475674, 0.44701934, 0.1982239]]),
}


@pytest.mark.parametrize("K", [2, 3])
def test_the_per_frame_default_is_the_code_before_the_switch_setting(K):
    """Same seed, same numbers as before ``switch`` existed (bit-identical on the machine they
    were recorded on; the tolerance only allows another CPU's rounding: one more random draw or
    another target would move every number by far more)."""
    assert MCEMSettings().switch == "iid"
    res = mcem_separate(tiny_models(K=K), noisy_tone(), None, MCEMSettings(**SMALL))
    costs, acceptance, total, sample, post = BEFORE[K]
    np.testing.assert_allclose([h["cost"] for h in res.history], costs, rtol=1e-5)
    assert res.acceptance == pytest.approx(acceptance, abs=1e-12)
    assert float(np.abs(res.sources).sum()) == pytest.approx(total, rel=1e-5)
    assert float(res.sources[0, 1000]) == pytest.approx(sample, rel=1e-4, abs=1e-7)
    np.testing.assert_allclose(res.posterior[:2, 0], post, rtol=1e-4, atol=1e-6)


def test_one_component_is_the_same_model_for_both_switches():
    models, audio = tiny_models(K=1), noisy_tone()
    a = mcem_separate(models, audio, None, MCEMSettings(**SMALL))
    b = mcem_separate(models, audio, None, MCEMSettings(**SMALL, switch="utterance"))
    for x, y in ((a.sources, b.sources), (a.noise, b.noise), (a.posterior, b.posterior)):
        np.testing.assert_array_equal(x, y)
    assert a.history == b.history and a.acceptance == b.acceptance


def test_the_utterance_switch_has_one_posterior_for_every_frame():
    models, audio = tiny_models(K=3, seed=1), noisy_tone()
    utt = mcem_separate(models, audio, None, MCEMSettings(**SMALL, switch="utterance")).posterior[:, 0]
    np.testing.assert_array_equal(utt, np.broadcast_to(utt[:1], utt.shape))
    np.testing.assert_allclose(utt.sum(-1), 1.0, atol=1e-5)
    frame = mcem_separate(models, audio, None, MCEMSettings(**SMALL)).posterior[:, 0]
    assert np.ptp(frame, axis=0).max() > 0.05               # the per-frame one varies


def bank(shapes: torch.Tensor) -> SpeechModels:
    """Decoders that ignore z: component k's log-variance is ``shapes[k] (F,)``."""
    models = tiny_models(K=len(shapes))
    with torch.no_grad():
        models.decoders.w3.zero_()
        models.decoders.b3.copy_(shapes)
    return models


def generated_by(shape: torch.Tensor, seconds: float, seed: int = 0) -> np.ndarray:
    """Gaussian 'speech' of log power spectrum ``shape`` with a varying level, in faint white noise."""
    from pyro_avss.audio import istft, stft

    g = torch.Generator().manual_seed(seed)
    n = int(SR * seconds)
    spec = stft(torch.randn(n, generator=g), CFG)
    level = 0.5 + 0.5 * torch.sin(torch.linspace(0, 6, spec.shape[0]))[:, None] ** 2
    speech = istft(spec * (shape / 2).exp() * level, n, CFG)
    return (0.3 * speech / speech.abs().max() + 0.003 * torch.randn(n, generator=g)).numpy().astype(np.float32)


@pytest.mark.parametrize("true", [0, 1, 2])
def test_the_utterance_switch_picks_the_component_that_generated_the_data(true):
    f = torch.linspace(0, 1, CFG.num_bins)
    shapes = torch.stack([4 - 8 * f, -4 + 8 * f, 4 * torch.cos(3 * math.pi * f)])
    settings = MCEMSettings(**{**SMALL, "em_iterations": 5}, switch="utterance", noise_rank=1)
    post = mcem_separate(bank(shapes), generated_by(shapes[true], 0.5), None, settings).posterior[:, 0]
    assert post[0, true] > 0.99


def test_the_utterance_switch_pools_evidence_the_per_frame_switch_cannot():
    """Decoders so alike that one frame says little: summed over the utterance the evidence is
    decisive; the per-frame switch keeps hedging on every frame."""
    f = torch.linspace(0, 1, CFG.num_bins)
    base, eps = 2 * torch.cos(2 * math.pi * f), 0.1
    shapes = torch.stack([base - eps * (2 * f - 1), base + eps * (2 * f - 1),
                          base + eps * torch.cos(5 * math.pi * f)])
    audio, models = generated_by(shapes[1], 1.0), bank(shapes)
    settings = dict(**{**SMALL, "em_iterations": 5}, noise_rank=1)
    utt = mcem_separate(models, audio, None, MCEMSettings(**settings, switch="utterance")).posterior[:, 0]
    frame = mcem_separate(models, audio, None, MCEMSettings(**settings)).posterior[:, 0]
    assert utt[0, 1] > 0.99
    assert frame[:, 1].mean() < 0.6


@pytest.mark.parametrize("switch", ["iid", "utterance"])
def test_m_step_never_increases_the_cost_for_fixed_samples(switch):
    """Multiplicative updates (exponent 1/2) are a majorise-minimise scheme, and γ at the
    current parameters makes it EM over the switch (module docstring): with the samples held
    fixed the Monte-Carlo cost must not go up, not even by MC noise, per frame or per utterance."""
    models, audio = tiny_models(K=3, seed=1), noisy_tone(seed=1)
    from pyro_avss.inference.inputs import utterance_inputs

    x = utterance_inputs(audio, None, models.lips, CFG)
    gen = torch.Generator().manual_seed(0)
    problem = mcem._Problem(models.decoders, x.power, x.lips, x.present, MCEMSettings(switch=switch), gen)
    with torch.no_grad():
        z = torch.randn(x.power.shape[0], 4, generator=gen)
        _, ls, cll, _, _ = mcem._metropolis(problem, z, 12, 4, 0.1, gen)
        costs = [mcem._cost(problem, ls)]
        for _ in range(8):
            mcem._m_step(problem, ls, mcem._responsibilities(problem, cll))
            costs.append(mcem._cost(problem, ls))
            cll = problem.component_loglik(ls)
    assert all(b <= a + 1e-6 * abs(a) for a, b in zip(costs, costs[1:])), costs
    assert costs[-1] < costs[0] - 0.05


def test_an_unknown_switch_is_refused_in_one_line():
    from pyro_avss.evaluation.harness import settings_from_overrides

    with pytest.raises(InputError, match=r"^mcem.switch: must be iid or utterance, got 'bogus'$"):
        MCEMSettings(switch="bogus").check()
    with pytest.raises(InputError, match="mcem.switch"):
        settings_from_overrides(["mcem.switch=bogus"], {})
    assert settings_from_overrides(["mcem.switch=utterance"], {})[1].switch == "utterance"
