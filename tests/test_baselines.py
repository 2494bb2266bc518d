"""Classical baselines: spectral gating and semi-supervised NMF."""

from __future__ import annotations

import time

import numpy as np
import pytest
import torch

from pyro_avss.audio import StftConfig, load_audio, make_window, stft
from pyro_avss.errors import InputError
from pyro_avss.evaluation.baselines import (estimate_noise_psd, learn_speech_bases,
                                            nmf_separation, spectral_gating)
from pyro_avss.evaluation.metrics import si_sdr

from conftest import data_root, grid_rows

SR = 16000


def _power(x: np.ndarray) -> np.ndarray:
    return stft(torch.from_numpy(np.asarray(x, dtype=np.float32))).abs().square().numpy()


def _mix_at(speech: np.ndarray, noise: np.ndarray, snr_db: float) -> np.ndarray:
    gain = np.sqrt(np.sum(speech.astype(np.float64) ** 2)
                   / (np.sum(noise.astype(np.float64) ** 2) * 10 ** (snr_db / 10)))
    return (speech + gain * noise).astype(np.float32)


# --------------------------------------------------------------------------------------------
# real GRID speech + real noise
# --------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def grid_case():
    train = [r["audio"] for r in grid_rows("train", "s1", 24)]
    dev = [r["audio"] for r in grid_rows("dev", "s1", 2)]
    bases = learn_speech_bases([_power(load_audio(p)) for p in train], rank=32, iterations=80,
                               max_frames=4000, seed=0)
    noise = load_audio(data_root() / "noise" / "doing_the_dishes.flac")
    cases = []
    for i, path in enumerate(dev):
        speech = load_audio(path)
        excerpt = noise[SR * (7 + 20 * i):SR * (7 + 20 * i) + len(speech)]
        cases.append((speech, _mix_at(speech, excerpt, 0.0)))
    return bases, cases


def test_spectral_gating_improves_real_mixture(grid_case):
    _, cases = grid_case
    for speech, mixture in cases:
        est, noise = spectral_gating(mixture)
        assert est.shape == noise.shape == mixture.shape and est.dtype == np.float32
        np.testing.assert_allclose(est + noise, mixture, rtol=0, atol=1e-4)
        gain = si_sdr(est, speech) - si_sdr(mixture, speech)
        assert gain > 2.0, f"SI-SDR improvement only {gain:.2f} dB"


def test_nmf_improves_real_mixture(grid_case):
    bases, cases = grid_case
    assert bases.shape == (513, 32) and np.all(bases >= 0)
    np.testing.assert_allclose(bases.sum(axis=0), 1.0, rtol=1e-4)
    for speech, mixture in cases:
        start = time.perf_counter()
        est, noise = nmf_separation(mixture, bases)
        elapsed = time.perf_counter() - start
        np.testing.assert_allclose(est + noise, mixture, rtol=0, atol=1e-4)
        gain = si_sdr(est, speech) - si_sdr(mixture, speech)
        assert gain > 2.0, f"SI-SDR improvement only {gain:.2f} dB"
        assert elapsed < 10.0  # about 0.15 s on an idle 2-core CPU; generous for loaded CI
    kl = learn_speech_bases([_power(cases[0][0])], rank=8, iterations=30, divergence="kl")
    est, _ = nmf_separation(cases[1][1], kl, divergence="kl", iterations=30)
    assert np.isfinite(est).all()


# --------------------------------------------------------------------------------------------
# synthetic signals (no shared data needed)
# --------------------------------------------------------------------------------------------
def _harmonic_bursts(seconds: float = 3.0, seed: int = 0) -> np.ndarray:
    """Speech-like: harmonic tones (random F0) in 250-ms bursts separated by pauses."""
    rng = np.random.default_rng(seed)
    n = int(seconds * SR)
    x = np.zeros(n)
    t = np.arange(int(0.25 * SR)) / SR
    for start in range(SR // 4, n - len(t), int(0.4 * SR)):
        f0 = rng.uniform(110, 220)
        tone = sum(np.sin(2 * np.pi * k * f0 * t) / k for k in range(1, 12) if k * f0 < 7000)
        x[start:start + len(t)] = tone * np.hanning(len(t))
    return (0.2 * x / np.abs(x).max()).astype(np.float32)


def test_noise_psd_estimate_is_unbiased_on_white_noise():
    cfg = StftConfig()
    x = np.random.default_rng(0).standard_normal(6 * SR) * 0.1
    estimate = estimate_noise_psd(_power(x), cfg)
    window = make_window(cfg, dtype=torch.float64).numpy()
    ratio = np.median(estimate[:, 5:-5] / (0.01 * np.sum(window ** 2)))
    assert 0.85 < ratio < 1.25


def test_baselines_on_synthetic_mixture():
    speech = _harmonic_bursts()
    noise = np.random.default_rng(1).standard_normal(len(speech)).astype(np.float32)
    mixture = _mix_at(speech, noise, 0.0)
    est, rest = spectral_gating(mixture)
    np.testing.assert_allclose(est + rest, mixture, rtol=0, atol=1e-4)
    assert si_sdr(est, speech) - si_sdr(mixture, speech) > 3.0

    bases = learn_speech_bases(_power(_harmonic_bursts(seed=5)), rank=16, iterations=60)
    a, _ = nmf_separation(mixture, bases, iterations=60, seed=3)
    b, _ = nmf_separation(mixture, torch.from_numpy(bases), iterations=60, seed=3)
    assert np.array_equal(a, b)  # deterministic, numpy or torch bases
    assert si_sdr(a, speech) - si_sdr(mixture, speech) > 3.0


def test_bad_arguments_raise_input_errors():
    x = _harmonic_bursts(1.0)
    with pytest.raises(InputError, match="divergence"):
        nmf_separation(x, np.ones((513, 4)), divergence="euclid")
    with pytest.raises(InputError, match="speech_bases"):
        nmf_separation(x, np.ones((257, 4)))
    with pytest.raises(InputError, match="1-D"):
        spectral_gating(np.zeros((2, 100)))
    with pytest.raises(InputError, match="non-silent frames"):
        learn_speech_bases([_power(x)[:3]], rank=8)
