"""Evaluation harness: systems by name, CSV/JSON/MD outputs, resuming, failures, skips."""

from __future__ import annotations

import csv
import json
import math
import warnings

import numpy as np
import pytest
import soundfile as sf
import torch

from pyro_avss.audio import StftConfig
from pyro_avss.checkpoint import SpeechModels
from pyro_avss.data.clips import Clip
from pyro_avss.data.mixture_builder import build_mixture_specs
from pyro_avss.data.mixture_manifest import write_mixture_manifest
from pyro_avss.data.mixtures import render_mixture
from pyro_avss.errors import ConfigError, InputError
from pyro_avss.evaluation import scoring, system_interface, systems
from pyro_avss.evaluation.harness import evaluate
from pyro_avss.evaluation.overrides import settings_from_overrides
from pyro_avss.evaluation.scoring import best_order, true_speaker_switch
from pyro_avss.evaluation.metrics import si_sdr
from pyro_avss.evaluation.results_csv import CSV_COLUMNS, read_results, write_results
from pyro_avss.nets.lips import LipProjection
from pyro_avss.nets.vae import DecoderBank, SpeechEncoder

SR = 16000
CFG = StftConfig(n_fft=256, hop=128)
FAST = ["separate.steps=4", "separate.num_samples=2", "mcem.em_iterations=2", "mcem.mh_steps=4",
        "mcem.burn_in=2", "mcem.final_steps=4", "mcem.final_burn_in=2"]




def _voice(f0: float, seconds: float, variant: int) -> np.ndarray:
    t = np.arange(int(SR * seconds)) / SR
    x = sum(np.sin(2 * np.pi * f0 * (h + 1) * t * (1 + 0.03 * variant)) / (h + 1) for h in range(8))
    return (0.1 * x * (0.5 + 0.5 * np.sin(2 * np.pi * 3 * t))).astype(np.float32)


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """Two synthetic 'speakers' (a, b), white noise, a tiny random model with components
    universal, a, b, a training-corpus manifest and a mixture manifest (2 × J=1, 1 × J=2)."""
    root = tmp_path_factory.mktemp("harness")
    clips, rows = [], []
    for spk, f0 in (("a", 140.0), ("b", 220.0)):
        for i in range(3):
            path = root / f"{spk}{i}.wav"
            sf.write(path, _voice(f0, 1.0, i), SR)
            split = "train" if i < 2 else "dev"
            rows.append({"id": f"{spk}{i}", "speaker": spk, "audio": str(path), "split": split})
            if split == "dev":
                clips.append(Clip(f"{spk}{i}", spk, path, None, "dev"))
    with open(root / "train.csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=["id", "speaker", "audio", "split"])
        w.writeheader()
        w.writerows(rows)
    sf.write(root / "noise.wav", (0.05 * np.random.default_rng(0).normal(size=3 * SR)).astype(np.float32), SR)
    noises = [("white", root / "noise.wav")]
    specs = build_mixture_specs(clips, noises, [0.0, 5.0], seed=0)[:3]
    specs += build_mixture_specs(clips[:1], noises, [0.0], interferers=clips, num_interferers=1, seed=0)
    write_mixture_manifest(specs, root / "mix.csv")
    torch.manual_seed(0)
    F = CFG.num_bins
    config = {"data": {"corpora": [str(root / "train.csv")], "cache": str(root / "cache")}}
    SpeechModels(SpeechEncoder(F, 4, 16, 0), DecoderBank(3, F, 4, 16, 0, names=["universal", "a", "b"]),
                 LipProjection(4, 8), CFG, config=config).save(root / "model.pt")
    return root, specs


@pytest.fixture(scope="module")
def first_run(setup):
    root, specs = setup
    names = "mixture,spectral-gating,nmf,universal,oracle-speaker,switching,mcem"
    summary = evaluate(root / "mix.csv", root / "model.pt", root / "out", names, overrides=FAST,
                       progress=False, examples=1)
    return root, specs, summary, read_results(root / "out" / "results.csv")


def test_outputs_are_written(first_run):
    root, specs, summary, rows = first_run
    out = root / "out"
    for name in ("results.csv", "summary.json", "results.md", "metrics_vs_snr.png",
                 "nmf_speech_bases.npz", f"examples/{specs[0].id}.png"):
        assert (out / name).exists(), name
    with open(out / "results.csv", newline="") as fh:
        assert tuple(next(csv.reader(fh))) == CSV_COLUMNS
    # one row per mixture, system and source: 3 x J=1 and 1 x J=2 mixtures, 7 systems
    assert len(rows) == 7 * (3 + 2)
    data = json.loads((out / "summary.json").read_text())
    assert data["mixtures"] == 4 and set(data["systems"]) >= {"mixture", "switching", "mcem"}
    assert data["systems"]["switching"]["ok"] == 5
    assert "by_snr" in data["systems"]["universal"] and "white" in data["systems"]["nmf"]["by_noise"]
    md = (out / "results.md").read_text()
    assert "| switching |" in md and "SI-SDRi" in md and "MCEM handles one source" in md


def test_rows_have_consistent_values(first_run):
    _, specs, _, rows = first_run
    by = {(r["id"], r["system"], int(r["source"])): r for r in rows}
    for spec in specs:
        mix = by[(spec.id, "mixture", 1)]
        assert mix["status"] == "ok" and mix["si_sdri"] == 0.0 and mix["rtf"] == 0.0
        assert math.isclose(mix["si_sdr"], mix["input_si_sdr"])
    single = [s for s in specs if s.num_sources == 1]
    for spec in single:
        for name in ("spectral-gating", "nmf", "universal", "oracle-speaker", "switching", "mcem"):
            r = by[(spec.id, name, 1)]
            assert r["status"] == "ok", (name, r["error"])
            assert math.isfinite(r["si_sdr"]) and math.isclose(r["si_sdri"], r["si_sdr"] - r["input_si_sdr"])
            assert r["audio_s"] == pytest.approx(1.0, abs=0.01)
            if name != "spectral-gating" and name != "nmf":
                assert r["runtime_s"] > 0 and r["rtf"] == pytest.approx(r["runtime_s"] / r["audio_s"])
        assert math.isnan(by[(spec.id, "universal", 1)]["switch_true_mass"])   # no switch there
        assert by[(spec.id, "oracle-speaker", 1)]["switch_true_mass"] == pytest.approx(1.0)
        assert 0.0 <= by[(spec.id, "switching", 1)]["switch_true_mass"] <= 1.0
        assert 0.0 < by[(spec.id, "mcem", 1)]["acceptance"] < 1.0
    two = [s for s in specs if s.num_sources == 2][0]
    for name, status in (("spectral-gating", "skipped"), ("nmf", "skipped"), ("mcem", "skipped"),
                         ("switching", "ok")):
        for j in (1, 2):
            r = by[(two.id, name, j)]
            assert r["status"] == status
            assert r["target_speaker"] == two.sources[j - 1].speaker
    assert "J = 1" in by[(two.id, "mcem", 1)]["error"]


def test_resume_computes_nothing_again(first_run, monkeypatch):
    root, _, _, rows = first_run

    def boom(*args, **kwargs):
        raise AssertionError("recomputed a finished (mixture, system) pair")

    monkeypatch.setattr(systems.SVISystem, "run", boom)
    monkeypatch.setattr(systems.MCEMSystem, "run", boom)
    monkeypatch.setattr(systems.SpectralGatingSystem, "run_one", boom)
    monkeypatch.setattr(systems.NMFSystem, "run_one", boom)
    from pyro_avss import plots
    from pyro_avss.evaluation import listening_report

    figures = sorted((root / "out").rglob("*.png"))
    assert any(p.name.endswith("_posterior.png") for p in figures)
    monkeypatch.setattr(listening_report, "plot_example", boom)       # nor are its figures drawn again
    monkeypatch.setattr(plots, "posterior_figure", boom)
    evaluate(root / "mix.csv", root / "model.pt", root / "out",
             "mixture,spectral-gating,nmf,universal,oracle-speaker,switching,mcem",
             overrides=FAST, progress=False, examples=1)
    again = read_results(root / "out" / "results.csv")
    key = lambda r: (r["id"], r["system"], r["source"])  # noqa: E731
    assert sorted(map(key, again)) == sorted(map(key, rows))
    old = {key(r): r["si_sdr"] for r in rows if r["status"] == "ok"}
    assert all(r["si_sdr"] == old[key(r)] for r in again if r["status"] == "ok")


def test_a_mixture_stopped_between_its_sources_rows_is_run_again(setup, tmp_path):
    """A run stopped after the first source's row of a two-source mixture was written: the
    resumed run drops that row and separates the mixture again, so each source has one row."""
    root, specs = setup
    evaluate(root / "mix.csv", root / "model.pt", tmp_path, "universal", overrides=FAST, progress=False,
             examples=0)
    two = next(s for s in specs if s.num_sources == 2)
    rows = read_results(tmp_path / "results.csv")
    write_results(tmp_path / "results.csv", [r for r in rows if (r["id"], r["source"]) != (two.id, 2.0)],
                  append=False)
    evaluate(root / "mix.csv", root / "model.pt", tmp_path, "universal", overrides=FAST, progress=False,
             examples=0)
    again = read_results(tmp_path / "results.csv")
    assert sorted((r["id"], r["source"]) for r in again) == sorted((r["id"], r["source"]) for r in rows)
    assert all(r["status"] == "ok" for r in again)


def test_failures_are_recorded_then_retried(setup, monkeypatch, tmp_path):
    root, specs = setup

    def broken(mixture, *args, **kwargs):
        raise RuntimeError("gating exploded")

    monkeypatch.setattr("pyro_avss.evaluation.baselines.spectral_gating", broken)
    evaluate(root / "mix.csv", None, tmp_path, "spectral-gating", limit=2, progress=False)
    rows = read_results(tmp_path / "results.csv")
    assert len(rows) == 2 and all(r["status"] == "failed" for r in rows)
    assert all("gating exploded" in r["error"] for r in rows)
    monkeypatch.undo()
    summary = evaluate(root / "mix.csv", None, tmp_path, "spectral-gating", limit=2, progress=False)
    rows = read_results(tmp_path / "results.csv")
    assert len(rows) == 2 and all(r["status"] == "ok" for r in rows)
    assert summary["systems"]["spectral-gating"]["failed"] == 0


def test_metric_failures_are_recorded(setup, monkeypatch, tmp_path):
    root, _ = setup

    class Silent(system_interface.System):
        name = "mixture"

        def run_one(self, item):
            return np.zeros_like(item.rendered.mixture), None, {}

    monkeypatch.setitem(systems.SYSTEMS, "mixture", Silent)
    summary = evaluate(root / "mix.csv", None, tmp_path, ["mixture"], limit=1, progress=False)
    (row,) = read_results(tmp_path / "results.csv")
    assert row["status"] == "ok" and math.isnan(row["si_sdr"]) and math.isnan(row["pesq_wb"])
    assert "silent" in row["si_sdr_error"] and "silent" in row["pesq_wb_error"]
    assert math.isfinite(row["input_si_sdr"])
    assert summary["systems"]["mixture"]["metric_failures"]["pesq_wb"] == 1


def test_resuming_with_the_model_named_by_another_path_does_not_warn(setup, tmp_path, monkeypatch):
    root, _ = setup
    evaluate(root / "mix.csv", root / "model.pt", tmp_path, "mixture", limit=1, progress=False)
    monkeypatch.chdir(root)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        evaluate(root / "mix.csv", "model.pt", tmp_path, "mixture", limit=1, progress=False)


def test_resuming_with_other_settings_warns(setup, tmp_path):
    root, _ = setup
    evaluate(root / "mix.csv", None, tmp_path, "mixture", limit=1, progress=False)
    with pytest.warns(UserWarning, match="other separation settings"):
        evaluate(root / "mix.csv", None, tmp_path, "mixture", limit=1, progress=False,
                 overrides=["separate.steps=3"])
    assert len(read_results(tmp_path / "results.csv")) == 1


def test_a_key_added_since_the_first_run_at_its_default_does_not_warn(setup, tmp_path):
    """A folder written before a separation key existed resumes quietly while that key is at
    its default (the behaviour of before), and warns once it is not."""
    root, _ = setup
    evaluate(root / "mix.csv", None, tmp_path, "mixture", limit=1, progress=False)
    stored = json.loads((tmp_path / "settings.json").read_text())
    del stored["separation"]["audio_only_share"]                 # as written before the key existed
    (tmp_path / "settings.json").write_text(json.dumps(stored))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        evaluate(root / "mix.csv", None, tmp_path, "mixture", limit=1, progress=False)
    del stored["separation"]["restart_at"]
    (tmp_path / "settings.json").write_text(json.dumps(stored))
    with pytest.warns(UserWarning, match="other separation settings"):
        evaluate(root / "mix.csv", None, tmp_path, "mixture", limit=1, progress=False,
                 overrides=["separate.restart_at=20"])


def test_unknown_system_and_missing_model_are_clear_errors(setup, tmp_path):
    root, _ = setup
    with pytest.raises(InputError, match="unknown system 'wiener'.*choose from.*switching"):
        evaluate(root / "mix.csv", root / "model.pt", tmp_path, "mixture,wiener", progress=False)
    with pytest.raises(InputError, match="need a model"):
        evaluate(root / "mix.csv", None, tmp_path, "universal", progress=False)
    with pytest.raises(InputError, match="file not found"):
        evaluate(tmp_path / "nope.csv", None, tmp_path, "mixture", progress=False)


def test_oracle_without_component_is_skipped(setup, tmp_path):
    root, specs = setup
    torch.manual_seed(1)
    F = CFG.num_bins
    models = SpeechModels(SpeechEncoder(F, 4, 16, 0), DecoderBank(1, F, 4, 16, 0, names=["universal"]),
                          LipProjection(4, 8), CFG)
    evaluate(root / "mix.csv", None, tmp_path, "oracle-speaker,switching", limit=1, progress=False,
             models=models, overrides=FAST)
    rows = read_results(tmp_path / "results.csv")
    assert [r["status"] for r in rows] == ["skipped", "skipped"]
    assert "no component for speaker" in rows[0]["error"]
    assert "no speaker components" in rows[1]["error"]


def test_settings_from_overrides():
    sep, mc, data = settings_from_overrides(
        ["separate.steps=7", "mcem.em_iterations=3", "mcem.proposal_var=0.02", "data.cache=/x"],
        {"data": {"corpora": ["grid"], "cache": "c"}})
    assert sep.steps == 7 and mc.em_iterations == 3 and mc.proposal_var == 0.02
    assert data.corpora == ["grid"] and data.cache == "/x"
    # mcem.* keys are read like every other config key: the same one-line errors
    with pytest.raises(ConfigError, match=r"^--set: unknown config key 'mcem.nope' \(keys under mcem: noise_rank, "):
        settings_from_overrides(["mcem.nope=1"], {})
    with pytest.raises(ConfigError, match=r"^--set: mcem.mh_steps must be int, got 1.5$"):
        settings_from_overrides(["mcem.mh_steps=1.5"], {})
    # a model saved by another version may hold data keys this one does not know: ignored
    assert settings_from_overrides([], {"data": {"cache": "c", "retired_key": 1}})[2].cache == "c"
    with pytest.raises(ConfigError, match="unknown config key"):
        settings_from_overrides(["separate.nope=1"], {})


def test_true_speaker_mass_counts_speech_frames_only():
    t = np.arange(SR) / SR
    ref = np.where(t < 0.5, 0.0, np.sin(2 * np.pi * 300 * t)).astype(np.float32)
    T = CFG.num_frames(ref.size)
    post = np.zeros((T, 2))
    speech = scoring.speech_frames(ref, CFG)
    assert 0.3 * T < speech.sum() < 0.7 * T
    post[speech, 1] = 0.9
    post[~speech, 1] = 0.0
    assert true_speaker_switch(post, ref, 1, CFG)[0] == pytest.approx(0.9)       # the mass


def test_best_order_matches_estimates_to_references():
    rng = np.random.default_rng(0)
    refs = rng.normal(size=(3, 4000))
    est = refs[[2, 0, 1]] + 0.1 * rng.normal(size=(3, 4000))
    order = best_order(est, refs)
    np.testing.assert_allclose(est[order], refs, atol=0.5)


def spy_on_known_noise(monkeypatch) -> list:
    """A list that gets ``(system name, item, known noise power)`` for every noise the oracle-noise
    systems are told."""
    seen = []
    original = systems.OracleNoiseSystem.noise_model

    def spy(self, items):
        factory = original(self, items)
        seen.append((self.name, items[0], factory().power))
        return factory

    monkeypatch.setattr(systems.OracleNoiseSystem, "noise_model", spy)
    return seen


def test_oracle_noise_is_told_the_noise_it_was_mixed_with(setup, tmp_path, monkeypatch):
    root, specs = setup
    seen = spy_on_known_noise(monkeypatch)
    evaluate(root / "mix.csv", root / "model.pt", tmp_path, "oracle-noise,switching",
             overrides=FAST + ["separate.steps=20"], progress=False, examples=0)
    rows = read_results(tmp_path / "results.csv")
    assert all(r["status"] == "ok" for r in rows)
    assert len(seen) == len(specs)                            # one recording per call
    _, item, known = seen[0]
    from pyro_avss.audio import stft

    mixture = stft(torch.as_tensor(item.rendered.mixture), CFG).abs().pow(2)
    noise = stft(torch.as_tensor(item.rendered.noise), CFG).abs().pow(2)
    assert torch.allclose(known[0], noise / mixture.mean())  # the model's units
    told = np.mean([r["si_sdri"] for r in rows if r["system"] == "oracle-noise"])
    guessed = np.mean([r["si_sdri"] for r in rows if r["system"] == "switching"])
    assert told > guessed                                     # knowing the noise helps
    too_long = ["separate.chunk_seconds=0.5", "separate.overlap_seconds=0"]
    evaluate(root / "mix.csv", root / "model.pt", tmp_path / "long", "oracle-noise", limit=1,
             overrides=FAST + too_long, progress=False, examples=0)
    assert "one chunk" in read_results(tmp_path / "long" / "results.csv")[0]["error"]


def test_time_smoothed_is_a_centred_moving_average_per_bin():
    from pyro_avss.evaluation.model_systems import time_smoothed

    power = torch.rand(20, 3)
    smooth = time_smoothed(power, 2)
    assert smooth.shape == power.shape
    assert torch.allclose(smooth[7], power[5:10].mean(0))
    assert torch.allclose(smooth[0], (3 * power[0] + power[1] + power[2]) / 5)   # edge repeated
    assert torch.equal(time_smoothed(power, 0), power)
    steady = torch.ones(20, 3) * 4.0
    assert torch.allclose(time_smoothed(steady, 5), steady)


def test_oracle_noise_smooth_is_told_the_noise_averaged_over_a_fifth_of_a_second(setup, tmp_path, monkeypatch):
    from pyro_avss.audio import stft
    from pyro_avss.evaluation.model_systems import time_smoothed

    root, _ = setup
    seen = spy_on_known_noise(monkeypatch)
    evaluate(root / "mix.csv", root / "model.pt", tmp_path, "oracle-noise-smooth", limit=1,
             overrides=FAST + ["separate.steps=5"], progress=False, examples=0)
    assert read_results(tmp_path / "results.csv")[0]["status"] == "ok"
    name, item, known = seen[0]
    assert name == "oracle-noise-smooth"
    mixture = stft(torch.as_tensor(item.rendered.mixture), CFG).abs().pow(2)
    noise = stft(torch.as_tensor(item.rendered.noise), CFG).abs().pow(2) / mixture.mean()
    half = round(0.2 * CFG.sample_rate / CFG.hop / 2)
    assert half >= 1
    assert torch.allclose(known[0], time_smoothed(noise, half), rtol=1e-4, atol=1e-7)
    assert not torch.allclose(known[0], noise)


def test_oracle_latent_decodes_each_clean_source_with_its_speakers_decoder(setup, tmp_path, monkeypatch):
    """oracle-latent asks for source j's variance from its own clean signal and its speaker's
    decoder; given the true powers it is exactly the ideal Wiener filter."""
    from pyro_avss.audio import istft, stft
    from pyro_avss.evaluation import oracles

    root, specs = setup
    calls = []

    def true_power(models, source, track, component):
        calls.append((np.asarray(source).copy(), component))
        return stft(torch.as_tensor(np.asarray(source, dtype=np.float32)), models.stft).abs().pow(2)

    monkeypatch.setattr(oracles, "decoded_source_variance", true_power)
    evaluate(root / "mix.csv", root / "model.pt", tmp_path, "oracle-latent", limit=1,
             progress=False, examples=0)
    (row,) = read_results(tmp_path / "results.csv")
    assert row["status"] == "ok"
    spec = specs[0]
    rendered = render_mixture(spec)
    names = SpeechModels.load(root / "model.pt").component_names
    assert [k for _, k in calls] == [names.index(str(s.speaker)) for s in spec.sources]
    for (given, _), ref in zip(calls, rendered.sources):
        np.testing.assert_array_equal(given, ref)               # the clean reference, nothing else
    X = stft(torch.as_tensor(rendered.mixture), CFG)
    P = [stft(torch.as_tensor(s), CFG).abs().pow(2) for s in rendered.sources]
    total = sum(P) + stft(torch.as_tensor(rendered.noise), CFG).abs().pow(2)
    ideal = istft(X * P[0] / total, len(rendered.mixture), CFG).numpy()
    assert float(row["si_sdr"]) == pytest.approx(si_sdr(ideal, rendered.sources[0]), abs=1e-3)
