"""Every command works with ``--device cuda``: on a pretend GPU here (:mod:`fake_cuda`: CPU
arithmetic, CUDA's rules on mixing devices), on the real one with ``-m cuda``.

The pretend device catches the bug class of issue 16 (a tensor made on the CPU meets the
model's weights on the GPU: lip ROIs, masks, generators, NumPy conversions) in the ordinary
suite; and since its arithmetic is the CPU's, a run on it must give the CPU run's numbers.
"""

from __future__ import annotations

import contextlib

import numpy as np
import pytest
import soundfile as sf
import torch

from pyro_avss.audio import StftConfig
from pyro_avss.checkpoint import SpeechModels
from pyro_avss.inference.separation import SeparationSettings, separate_recordings
from pyro_avss.nets.lips import LipProjection
from pyro_avss.nets.vae import DecoderBank, SpeechEncoder

from fake_cuda import OnCuda, fake_cuda

CFG = StftConfig(n_fft=256, hop=128)
SR = 16000
FAST = SeparationSettings(steps=6, num_samples=2)


class Gpu:
    """The GPU a test runs on: the pretend one (always) or the real one (``-m cuda``, skipped
    without one). ``exact``: its arithmetic is the CPU's, so results must equal a CPU run's."""

    def __init__(self, monkeypatch, real: bool):
        self.monkeypatch, self.real, self.exact = monkeypatch, real, not real

    def __call__(self):
        return contextlib.nullcontext() if self.real else fake_cuda(self.monkeypatch)


@pytest.fixture(params=["pretend", pytest.param("cuda", marks=[
    pytest.mark.cuda, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")])])
def gpu(request, monkeypatch):
    return Gpu(monkeypatch, request.param == "cuda")


def same_or_whole(gpu, got, expected, mixture):
    """On the pretend GPU the CPU's estimates; on a real one (other random draws) estimates that
    still add up to the mixture."""
    if gpu.exact:
        np.testing.assert_allclose(got.sources, expected.sources, atol=1e-5)
        np.testing.assert_allclose(got.posterior, expected.posterior, atol=1e-5)
    else:
        np.testing.assert_allclose(got.sources.sum(0) + got.noise, mixture, atol=1e-3)


def tiny_models(K=2, lip_dim=4, seed=0) -> SpeechModels:
    torch.manual_seed(seed)
    F = CFG.num_bins
    lips = LipProjection(max(lip_dim, 1), 8)
    if lip_dim:
        rois = torch.randint(0, 256, (30, 64, 64), dtype=torch.uint8)
        lips.fit([(rois, torch.ones(30, dtype=torch.bool))])
    # info as fit writes it when no pitch range was found (see random_models in test_separation)
    return SpeechModels(SpeechEncoder(F, 4, 16, lip_dim), DecoderBank(K, F, 4, 16, lip_dim), lips, CFG,
                        info={"pitch_ranges": {}})


def voice(seconds=0.6, seed=0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(int(SR * seconds)) / SR
    x = sum(np.sin(2 * np.pi * (150 + 40 * seed) * h * t) / h for h in range(1, 5))
    return (0.1 * x * (0.6 + 0.4 * np.sin(2 * np.pi * 3 * t)) + 0.01 * rng.standard_normal(t.size)).astype(np.float32)


def track(seconds=0.6, seed=0, faces=True):
    from pyro_avss.video.track import LipTrack

    n = int(seconds * 25) + 1
    found = np.ones(n, bool) if faces else np.arange(n) % 3 > 0
    rois = np.random.default_rng(seed).integers(0, 256, (n, 64, 64), dtype=np.uint8) * found[:, None, None]
    return LipTrack(rois=rois.astype(np.uint8), landmarks=np.zeros((n, 0, 2), np.float32),
                    timestamps=np.arange(n) / 25.0, fps=25.0, face_found=found, detector="roi")


def test_the_pretend_gpu_refuses_what_a_gpu_refuses(monkeypatch):
    with fake_cuda(monkeypatch):
        weights = torch.nn.Linear(3, 2).to("cuda")
        x = torch.ones(4, 3)
        assert isinstance(weights.weight, OnCuda) and weights.weight.device.type == "cuda"
        with pytest.raises(RuntimeError, match="same device"):
            weights(x)
        y = weights(x.to(weights.weight.device))
        assert y.device.type == "cuda" and (y * torch.tensor(2.0)).device.type == "cuda"
        with pytest.raises(TypeError, match="numpy"):
            y.detach().numpy()
        assert y.detach().cpu().numpy().shape == (4, 2)
        with pytest.raises(RuntimeError, match="generator"):
            torch.rand(3, generator=torch.Generator().manual_seed(0), device="cuda")
        assert torch.zeros(2, device="cuda").device.type == "cuda"


CASES = {"av1": (1, 4, {}), "av2": (2, 4, {}), "ao2-markov": (2, 0, {"switch_prior": "markov"}),
         "ao1-utterance": (1, 0, {"switch_prior": "utterance"}),
         "av1-pyro-learnt-stay": (1, 4, {"switch_prior": "markov", "enumeration": "pyro",
                                         "learn_stay": True}),
         "av2-harmonic-combs": (2, 4, {"harmonics_at": 3})}


@pytest.mark.parametrize("case", CASES)
def test_separation_on_the_gpu_is_the_cpu_separation(gpu, case):
    """Audio-visual and audio-only, one and two talkers, each switch prior: the same numbers on
    the pretend GPU as on the CPU (its arithmetic is the CPU's), and no device mixed on the way."""
    from dataclasses import replace

    J, lip_dim, changes = CASES[case]
    models = tiny_models(lip_dim=lip_dim)
    settings = replace(FAST, **changes)
    jobs = [(voice(0.6, 0) + voice(0.6, 1), [track(0.6, j, faces=j == 0) for j in range(J)]),
            (voice(0.4, 2), [track(0.4, 5)] * J)]
    cpu = separate_recordings(models, jobs, settings)
    with gpu():
        out = separate_recordings(models, jobs, settings, torch.device("cuda"))
    models.to("cpu")
    for a, b, (mixture, _) in zip(cpu, out, jobs):
        same_or_whole(gpu, b, a, mixture)


@pytest.mark.parametrize("switch,lip_dim", [("iid", 4), ("utterance", 0)])
def test_mcem_on_the_gpu_is_the_cpu_mcem(gpu, switch, lip_dim):
    from pyro_avss.inference.mcem import MCEMSettings, mcem_separate

    models = tiny_models(lip_dim=lip_dim)
    settings = MCEMSettings(em_iterations=2, mh_steps=3, burn_in=1, final_steps=3, final_burn_in=1,
                            switch=switch)
    cpu = mcem_separate(models, voice(), track(), settings)
    with gpu():
        out = mcem_separate(models, voice(), track(), settings, torch.device("cuda"))
    models.to("cpu")
    same_or_whole(gpu, out, cpu, voice())


def synthetic_corpus(folder, lips=True):
    """Prepared-manifest rows of two 'speakers' (harmonic tones), with lip caches."""
    rows = []
    for s, speaker in enumerate("ab"):
        for i in range(3):
            audio, cache = folder / f"{speaker}{i}.wav", folder / f"{speaker}{i}.npz"
            sf.write(audio, voice(0.5, s), SR)
            track(0.5, 3 * s + i).save(cache)
            rows.append({"id": f"{speaker}{i}", "speaker": speaker, "split": "train" if i else "dev",
                         "audio": str(audio), "lips": str(cache) if lips else ""})
    return rows


FIT = ["model.hidden=16", "model.latent_dim=4", "train.batch_size=8", "train.segment_frames=16",
       "train.warmup_epochs=1", "train.epochs=2", "lips.dim=4", "lips.downsample=8"]


@pytest.mark.parametrize("extra", [[], ["lips.front_end=temporal", "model.prior=visual"]])
def test_fit_on_the_gpu_is_the_cpu_fit(gpu, tmp_path, extra):
    """Training (audio-visual, with the temporal lip encoder and the visual prior too), its dev
    loss, its checkpoint and a resume from it, on the pretend GPU."""
    from pyro_avss.config import load_config
    from pyro_avss.inference.training import fit

    rows = synthetic_corpus(tmp_path)
    cfg = lambda *more: load_config(None, FIT + extra + list(more))  # noqa: E731
    cpu = fit(cfg(), tmp_path / "cpu", rows=rows, progress=False, device="cpu")
    with gpu():
        fit(cfg("train.epochs=1"), tmp_path / "gpu", rows=rows, progress=False, device="cuda")
        resumed = fit(cfg(), tmp_path / "gpu", rows=rows, progress=False, device="cuda", resume=True)
    resumed.to("cpu")
    for a, b in zip(cpu.decoders.state_dict().values(), resumed.decoders.state_dict().values()):
        if gpu.exact:
            torch.testing.assert_close(b.as_subclass(torch.Tensor), a, atol=1e-5, rtol=1e-5)
        assert torch.isfinite(b).all()
    init = f"train.init={tmp_path / 'gpu' / 'model.pt'}"
    with gpu():           # speaker decoders, and a switch trained without labels
        spk = fit(cfg("train.mode=speakers", "train.epochs=1", init), tmp_path / "spk", rows=rows,
                  progress=False, device="cuda")
        sw = fit(cfg("train.mode=switching", "train.labels=hidden", "train.num_components=2",
                     "train.switch_prior=markov", "train.epochs=1", init), tmp_path / "sw", rows=rows,
                 progress=False, device="cuda")
    assert spk.component_names == ["a", "b"] and sw.component_names == ["cluster0", "cluster1"]


def test_evaluate_every_model_system_on_the_gpu(gpu, tmp_path):
    """``evaluate --device cuda`` with an audio-visual model: SVI (universal, oracle, switching),
    the oracles and MCEM give the CPU's numbers."""
    import csv

    from pyro_avss.data.clips import Clip
    from pyro_avss.data.mixture_builder import build_mixture_specs
    from pyro_avss.data.mixture_manifest import write_mixture_manifest
    from pyro_avss.evaluation.harness import evaluate
    from pyro_avss.evaluation.lip_tracks import TrackCache

    clips = []
    for s, speaker in enumerate("ab"):
        sf.write(tmp_path / f"{speaker}.wav", voice(0.5, s), SR)
        clips.append(Clip(speaker, speaker, tmp_path / f"{speaker}.wav", tmp_path / f"{speaker}.mp4", "dev"))
        for device in ("cpu", "cuda"):      # the videos' lip tracks, as if already extracted
            track(0.5, s).save(TrackCache(tmp_path / device / "lips", "roi").path(clips[-1].video))
    sf.write(tmp_path / "noise.wav", 0.05 * np.random.default_rng(0).standard_normal(SR).astype(np.float32), SR)
    specs = build_mixture_specs(clips, [("white", tmp_path / "noise.wav")], [0.0], seed=0)
    specs += build_mixture_specs(clips[:1], [("white", tmp_path / "noise.wav")], [0.0], interferers=clips,
                                 num_interferers=1, seed=0)
    write_mixture_manifest(specs, tmp_path / "mix.csv")
    models = tiny_models(K=3)
    models.decoders.names = ["universal", "a", "b"]
    models.save(tmp_path / "model.pt")
    systems = "universal,oracle-speaker,switching,oracle-noise,oracle-latent,mcem,mcem-oracle"
    fast = ["separate.steps=3", "separate.num_samples=1", "mcem.em_iterations=1", "mcem.mh_steps=2",
            "mcem.burn_in=1", "mcem.final_steps=2", "mcem.final_burn_in=1"]
    runs = {}
    for device in ("cpu", "cuda"):
        with gpu() if device == "cuda" else contextlib.nullcontext():
            summary = evaluate(tmp_path / "mix.csv", tmp_path / "model.pt", tmp_path / device, systems,
                               device=device, overrides=fast, progress=False, examples=0)
        assert all(s["failed"] == 0 for s in summary["systems"].values()), summary["systems"]
        with open(tmp_path / device / "results.csv", newline="") as fh:
            runs[device] = {(r["id"], r["system"], r["source"]): float(r["si_sdr"] or "nan")
                            for r in csv.DictReader(fh)}
    assert runs["cpu"].keys() == runs["cuda"].keys() and len(runs["cpu"]) >= 7 * 3
    for key, value in runs["cpu"].items() if gpu.exact else ():
        assert runs["cuda"][key] == pytest.approx(value, abs=1e-3, nan_ok=True), key


def test_bench_measures_on_the_gpu(gpu):
    """``bench --device cuda``'s measurement (audio-visual, two sources, a batch of two)."""
    from pyro_avss.recipes.bench import BenchConfig, measure

    cfg = BenchConfig(0.5, 2, 2, 2, device="cuda", overrides=["separate.steps=2", "separate.num_samples=1"],
                      threads=1)
    with gpu():
        row = measure(cfg)
    assert row["error"] == "" and row["steps"] == 2 and row["device"] == "cuda"


def test_cli_separate_with_device_cuda(gpu, tmp_path):
    """``separate --device cuda`` on a batch (a folder) with a video per mixture."""
    from pyro_avss.cli import main

    models = tiny_models()
    models.save(tmp_path / "model.pt")
    (tmp_path / "in").mkdir()
    for i in range(2):
        sf.write(tmp_path / "in" / f"m{i}.wav", voice(0.5, i), SR)
        track(0.5, i).save(tmp_path / "in" / f"m{i}.npz")
    args = ["separate", "--model", str(tmp_path / "model.pt"), "--mixture", str(tmp_path / "in"),
            "--out", str(tmp_path / "out"), "--device", "cuda", "--no-figure", "--quiet",
            "--set", "separate.steps=3"]
    with gpu():
        assert main(args, standalone_mode=False) in (None, 0)
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["m0", "m1"]
