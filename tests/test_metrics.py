"""Metric wrappers: SI-SDR, BSS-Eval SDR, PESQ, STOI and failure recording."""

from __future__ import annotations

import math
import warnings
from pathlib import Path

import numpy as np
import pytest

from pyro_avss.audio import load_audio, resample_audio
from pyro_avss.evaluation.metrics import (MetricError, compute_metrics, estoi, pesq_nb, pesq_wb,
                                          sdr, si_sdr, si_sdr_improvement, stoi)

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def _direct_si_sdr(est: np.ndarray, ref: np.ndarray) -> float:
    est = est - est.mean()
    ref = ref - ref.mean()
    proj = (est @ ref) / (ref @ ref) * ref
    return 10 * np.log10((proj @ proj) / ((est - proj) @ (est - proj)))


@pytest.fixture(scope="module")
def speech_and_noise():
    clip = DATA / "grid" / "s1" / "audio" / "bbaf2n.flac"
    noise_file = DATA / "noise" / "running_tap.flac"
    if not (clip.exists() and noise_file.exists()):
        pytest.skip(f"shared data not found at {DATA}")
    speech = load_audio(clip)
    noise = load_audio(noise_file)[16000 * 5:16000 * 5 + len(speech)]
    energy = np.sum(speech.astype(np.float64) ** 2) / np.sum(noise.astype(np.float64) ** 2)
    noise = noise * np.sqrt(energy)
    return speech, (speech + noise.astype(np.float32))  # reference, 0 dB mixture


# --------------------------------------------------------------------------------------------
# SI-SDR / SDR (no data needed)
# --------------------------------------------------------------------------------------------
def test_si_sdr_matches_direct_computation_and_is_scale_invariant():
    rng = np.random.default_rng(0)
    ref = rng.standard_normal(8000) + 0.3
    est = ref + 0.5 * rng.standard_normal(8000) - 0.1
    value = si_sdr(est, ref)
    assert value == pytest.approx(_direct_si_sdr(est, ref), abs=1e-9)
    assert 5.0 < value < 7.0
    assert si_sdr(37.0 * est, ref) == pytest.approx(value, abs=1e-9)
    assert si_sdr(est, 1e-3 * ref) == pytest.approx(value, abs=1e-9)
    assert si_sdr(est + 5.0, ref) == pytest.approx(value, abs=1e-9)  # zero-mean first
    assert si_sdr(-est, ref) == pytest.approx(value, abs=1e-9)
    mixture = ref + 2.0 * rng.standard_normal(8000)
    assert si_sdr_improvement(est, ref, mixture) == pytest.approx(
        value - _direct_si_sdr(mixture, ref), abs=1e-9)
    assert si_sdr(ref, ref) > 150.0  # finite for identical signals


def test_si_sdr_silent_reference_is_nan():
    x = np.random.default_rng(1).standard_normal(4000)
    assert math.isnan(si_sdr(x, np.zeros(4000)))
    assert math.isnan(si_sdr(x, np.full(4000, 0.3)))  # DC only: silent after mean removal
    assert math.isnan(si_sdr(np.zeros(4000), x))
    with pytest.raises(MetricError, match="4000 samples but reference has 3999"):
        si_sdr(x, x[:-1])


def test_sdr_matches_mir_eval_without_warnings():
    from mir_eval.separation import bss_eval_sources

    rng = np.random.default_rng(2)
    refs = rng.standard_normal((2, 8000))
    ests = refs[::-1] * 0.3 + refs + 0.2 * rng.standard_normal((2, 8000))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        expected = bss_eval_sources(refs, ests, compute_permutation=False)[0]
        expected_single = bss_eval_sources(refs[:1], ests[:1], compute_permutation=False)[0][0]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        got = sdr(ests, refs)
    assert not [w for w in caught if issubclass(w.category, FutureWarning)]
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-9)
    assert sdr(ests[0], refs[0]) == pytest.approx(expected_single, abs=1e-9)
    with pytest.raises(MetricError, match="silent"):
        sdr(np.stack([ests[0], np.zeros(8000)]), refs)


# --------------------------------------------------------------------------------------------
# PESQ / STOI on a real GRID clip
# --------------------------------------------------------------------------------------------
def test_pesq_and_stoi_return_the_library_values(speech_and_noise):
    from pesq import pesq
    from pystoi import stoi as pystoi_stoi

    ref, mix = speech_and_noise
    assert pesq_wb(mix, ref) == pesq(16000, ref, mix, "wb")
    ref8, mix8 = resample_audio(ref, 16000, 8000), resample_audio(mix, 16000, 8000)
    assert pesq_nb(mix, ref) == pytest.approx(pesq(8000, ref8, mix8, "nb"), abs=1e-6)
    assert stoi(mix, ref) == pytest.approx(pystoi_stoi(ref.astype(np.float64),
                                                       mix.astype(np.float64), 16000), abs=1e-9)
    assert estoi(mix, ref) == pytest.approx(
        pystoi_stoi(ref.astype(np.float64), mix.astype(np.float64), 16000, extended=True),
        abs=1e-9)
    assert 1.0 <= pesq_wb(mix, ref) < 2.0 and 0.2 < estoi(mix, ref) < stoi(mix, ref) < 0.9


def test_identical_signals_score_at_the_top(speech_and_noise):
    ref, _ = speech_and_noise
    m = compute_metrics(ref, ref)
    assert m["stoi"] == pytest.approx(1.0, abs=1e-6) and m["estoi"] == pytest.approx(1.0, abs=1e-6)
    assert m["pesq_wb"] > 4.5 and m["pesq_nb"] > 4.4
    assert m["si_sdr"] > 100 and m["sdr"] > 100
    assert not [k for k in m if k.endswith("_error")]


def test_compute_metrics_with_mixture(speech_and_noise):
    ref, mix = speech_and_noise
    m = compute_metrics(0.5 * ref + 0.1 * (mix - ref), ref, mixture=mix,
                        metrics=("si_sdr", "pesq_wb", "stoi"))
    assert set(m) == {"si_sdr", "pesq_wb", "stoi", "input_si_sdr", "input_pesq_wb",
                      "input_stoi", "si_sdri"}
    assert m["input_si_sdr"] == pytest.approx(0.0, abs=0.05)
    assert m["si_sdri"] == pytest.approx(m["si_sdr"] - m["input_si_sdr"])
    assert m["si_sdri"] > 10 and m["pesq_wb"] > m["input_pesq_wb"]
    with pytest.raises(ValueError, match="unknown metric"):
        compute_metrics(ref, ref, metrics=("pesq",))


def test_failures_are_recorded_with_reasons(speech_and_noise, capsys):
    ref, mix = speech_and_noise
    silent_est = compute_metrics(np.zeros_like(ref), ref)
    silent_ref = compute_metrics(mix, np.zeros_like(ref))
    short = compute_metrics(mix[:2000], ref[:2000], metrics=("pesq_wb", "pesq_nb", "stoi"))
    for name in ("si_sdr", "sdr", "pesq_wb", "pesq_nb", "stoi", "estoi"):
        assert math.isnan(silent_est[name]) and "estimate is silent" in silent_est[name + "_error"]
        assert math.isnan(silent_ref[name]) and "reference is silent" in silent_ref[name + "_error"]
    assert math.isnan(short["pesq_wb"]) and short["pesq_wb_error"].startswith("BufferTooShortError")
    assert "too little speech" in short["stoi_error"]
    mismatch = compute_metrics(mix[:-1], ref, metrics=("stoi", "pesq_wb"))
    assert "samples but reference has" in mismatch["stoi_error"]
    with pytest.raises(MetricError, match="16000 Hz or more"):
        pesq_wb(ref[::2], ref[::2], sample_rate=8000)
    assert capsys.readouterr().out == ""  # the pesq wrapper never got to print its usage text
