"""Separation: exactness of the outputs, quality on real speech, chunking, missing faces, CLI."""

from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from pyro_avss.audio import load_audio
from pyro_avss.checkpoint import SpeechModels
from pyro_avss.errors import InputError
from pyro_avss.evaluation.metrics import si_sdr
from pyro_avss.inference.separation import SeparationSettings, chunk_bounds, separate_recordings
from pyro_avss.nets.lips import LipProjection
from pyro_avss.nets.vae import DecoderBank, SpeechEncoder
from pyro_avss.audio import StftConfig

from conftest import data_root, grid_rows

ROOT = Path(__file__).resolve().parents[1]
FAST = SeparationSettings(steps=30, num_samples=2)


def random_models(K=2, lip_dim=0, seed=0):
    torch.manual_seed(seed)
    lips = LipProjection(max(lip_dim, 1), 8)
    # info as fit writes it for components whose clips gave no pitch range (a file without the
    # key predates the ranges, and each input it separates gets a notice saying so)
    return SpeechModels(SpeechEncoder(513, 8, 32, lip_dim), DecoderBank(K, 513, 8, 32, lip_dim), lips, StftConfig(),
                        info={"pitch_ranges": {}})


def noisy(seconds=1.0, seed=0):
    rng = np.random.default_rng(seed)
    t = np.arange(int(16000 * seconds)) / 16000
    speech = 0.2 * np.sin(2 * np.pi * 200 * t) * (np.sin(2 * np.pi * 2 * t) > 0)
    return (speech + 0.05 * rng.standard_normal(len(t))).astype(np.float32)


@pytest.mark.parametrize("J,prior", [(1, "iid"), (2, "markov"), (2, "iid"), (2, "utterance"), (2, "speaker")])
def test_sources_and_noise_sum_to_the_mixture(J, prior):
    x = noisy()
    out = separate_recordings(random_models(), [(x, [None] * J)],
                              SeparationSettings(steps=10, num_samples=2, switch_prior=prior))[0]
    assert out.sources.shape == (J, len(x)) and out.noise.shape == (len(x),)
    assert np.abs(out.sources.sum(0) + out.noise - x).max() < 1e-4
    assert out.posterior.shape == (len(x) // 256 + 1, J, 2)
    assert np.allclose(out.posterior.sum(-1), 1, atol=1e-4)


@pytest.mark.parametrize("lip_dim, chosen", [(0, "iid"), (4, "utterance")])
def test_the_default_switch_is_per_frame_for_audio_only_banks_and_per_utterance_with_lips(
        monkeypatch, lip_dim, chosen):
    import pyro_avss.inference.batch_fit as batch_fit

    built = []
    make = batch_fit.make_switch
    monkeypatch.setattr(batch_fit, "make_switch", lambda prior, *a, **k: built.append(prior) or make(prior, *a, **k))
    models = random_models(lip_dim=lip_dim)
    settings = SeparationSettings(steps=3, num_samples=1)
    assert settings.switch_prior == "auto" and settings.switch_prior_for(models) == chosen
    assert SeparationSettings(switch_prior="markov").switch_prior_for(models) == "markov"   # asked for: kept
    separate_recordings(models, [(noisy(0.5), [None])], settings)
    assert built and set(built) == {chosen}


@pytest.mark.parametrize("components, per_source", [(None, ((2,), (0,))), ((0, 2), ((0,), (2,)))])
def test_each_source_can_be_told_its_component(components, per_source):
    x = noisy()
    settings = SeparationSettings(steps=5, num_samples=2, switch_prior="iid", components=components,
                                  source_components=per_source)
    out = separate_recordings(random_models(K=3), [(x, [None, None])], settings)[0]
    for j, (k,) in enumerate(per_source):
        assert np.allclose(out.posterior[:, j, k], 1, atol=1e-4), j
    assert np.abs(out.sources.sum(0) + out.noise - x).max() < 1e-4
    with pytest.raises(InputError, match="gives 2 sources but the mixture has 1"):
        separate_recordings(random_models(K=3), [(x, [None])], settings)


@pytest.mark.parametrize("prior", ["iid", "utterance", "markov"])
def test_pyro_enumeration_and_the_marginal_observation_give_the_same_separation(prior):
    x = noisy(0.5)
    a, b = (separate_recordings(random_models(), [(x, [None])],
                                SeparationSettings(steps=15, num_samples=2, switch_prior=prior,
                                                   enumeration=how))[0] for how in ("pyro", "marginal"))
    assert np.abs(a.sources - b.sources).max() < 1e-3


def test_long_recording_is_chunked_and_cross_faded():
    assert chunk_bounds(100, 200, 20, 4) == [(0, 100)]
    bounds = chunk_bounds(16000 * 5, 16000 * 2, 16000 // 2, 256)
    assert bounds[0][0] == 0 and bounds[-1][0] + bounds[-1][1] == 16000 * 5
    assert all(s % 256 == 0 for s, _ in bounds)
    x = noisy(5.0)
    settings = SeparationSettings(steps=10, num_samples=2, chunk_seconds=2.0, overlap_seconds=0.5)
    out = separate_recordings(random_models(), [(x, [None, None])], settings)[0]
    assert out.sources.shape == (2, len(x))
    assert np.abs(out.sources.sum(0) + out.noise - x).max() < 1e-4


def test_batch_of_different_lengths_matches_one_by_one():
    models = random_models()
    a, b = noisy(1.0, 1), noisy(0.6, 2)
    together = separate_recordings(models, [(a, [None]), (b, [None])], FAST)
    alone = separate_recordings(models, [(b, [None])], FAST)
    assert together[1].sources.shape == (1, len(b))
    # padding is masked: the short clip's result barely depends on its batch neighbour
    assert si_sdr(together[1].sources[0], alone[0].sources[0]) > 20


def test_frames_without_a_face_use_no_visual_input():
    """Documented behaviour: where the face is missing, present = 0 and the audio-visual
    decoders receive no lip input; separation still runs on every frame."""
    from pyro_avss.video.track import LipTrack

    models = random_models(lip_dim=4)
    n = 40
    rois = np.random.default_rng(0).integers(0, 255, (n, 64, 64), dtype=np.uint8)
    found = np.ones(n, dtype=bool)
    found[10:25] = False
    rois[~found] = 0
    models.lips.fit([(torch.as_tensor(rois), torch.as_tensor(found))])
    track = LipTrack(rois=rois, landmarks=np.zeros((n, 0, 2), np.float32),
                     timestamps=np.arange(n) / 25.0, fps=25.0, face_found=found, detector="roi")
    from pyro_avss.inference.inputs import aligned_lips

    times = StftConfig().frame_times(100)
    lips, present = aligned_lips(track, models.lips, times)
    missing = (times >= 10 / 25 - 0.02) & (times < 25 / 25 - 0.02)
    assert present[torch.as_tensor(missing)].sum() == 0 and present.sum() > 50
    assert torch.all(lips[present == 0] == 0)
    out = separate_recordings(models, [(noisy(1.6), [track])], FAST)[0]
    assert np.isfinite(out.sources).all()


def test_real_speech_in_real_noise_improves_by_more_than_3_db(small_grid_model):
    root = data_root()
    models, _ = small_grid_model
    noise = load_audio(root / "noise" / "doing_the_dishes.flac")
    rows = grid_rows("dev", "s1")[20:24]
    jobs, refs, offset = [], [], 16000
    for r in rows:
        s = load_audio(r["audio"])
        n = noise[offset:offset + len(s)].copy()
        offset += 3 * len(s)
        n *= np.sqrt(np.sum(s ** 2) / np.sum(n ** 2))          # 0 dB
        jobs.append((s + n, [None]))
        refs.append(s)
    out = separate_recordings(models, jobs, SeparationSettings())
    gains = [si_sdr(o.sources[0], r) - si_sdr(j[0], r) for o, r, j in zip(out, refs, jobs)]
    assert np.mean(gains) > 3.0, gains


def test_separation_leaves_the_networks_untouched():
    models = random_models(K=2)
    before = {n: p.detach().clone() for n, p in models.decoders.named_parameters()}
    separate_recordings(models, [(noisy(0.5), [None])], SeparationSettings(steps=3, num_samples=1))
    for n, p in models.decoders.named_parameters():
        assert p.requires_grad and p.grad is None, n        # frozen during SVI, restored after
        assert torch.equal(p, before[n]), n
    assert all(p.requires_grad and p.grad is None for p in models.encoder.parameters())


@pytest.mark.parametrize("change, key", [({"lr_decay": 1.5}, "separate.lr_decay"),
                                         ({"lr_decay": 0.0}, "separate.lr_decay"),
                                         ({"lr": -0.1}, "separate.lr"),
                                         ({"noise_updates": "em"}, "separate.noise_updates"),
                                         ({"steps": 0}, "separate.steps"),
                                         ({"num_samples": 0}, "separate.num_samples")])
def test_bad_separation_settings_name_their_key(change, key):
    with pytest.raises(InputError) as err:
        SeparationSettings(**change)
    assert str(err.value).startswith(key + ":")


def run_cli(*args):
    return subprocess.run([sys.executable, str(ROOT / "cli.py"), *args], capture_output=True, text=True)


def test_cli_separate_outputs_and_bad_inputs(tmp_path, small_grid_model):
    _, run = small_grid_model
    model = str(run / "model.pt")
    good = tmp_path / "good.wav"
    sf.write(good, noisy(1.0), 16000)
    wrong_rate = tmp_path / "rate.wav"
    sf.write(wrong_rate, noisy(1.0), 8000)
    stereo = tmp_path / "stereo.wav"
    sf.write(stereo, np.stack([noisy(1.0), noisy(1.0, 3)], 1), 16000)
    empty = tmp_path / "empty.wav"
    sf.write(empty, np.zeros(0, np.float32), 16000)
    res = run_cli("separate", "--model", model, "--mixture", str(good), "--out", str(tmp_path / "o1"),
                  "--set", "separate.steps=20", "--quiet")
    assert res.returncode == 0, res.stderr
    names = sorted(p.name for p in (tmp_path / "o1").iterdir())
    assert names == ["noise.wav", "separation.png", "source1.wav", "speakers.csv", "switch_posterior.csv"]
    header = (tmp_path / "o1" / "switch_posterior.csv").read_text().splitlines()[0]
    assert header == "time_s,source,component,probability"
    speakers = list(csv.DictReader(open(tmp_path / "o1" / "speakers.csv")))
    assert [r["source"] for r in speakers] == ["1"] and 0.0 <= float(speakers[0]["mean_probability"]) <= 1.0
    # existing outputs are not overwritten without --force
    res = run_cli("separate", "--model", model, "--mixture", str(good), "--out", str(tmp_path / "o1"), "--quiet")
    assert res.returncode == 1 and "outputs exist" in res.stdout + res.stderr
    # a batch with bad files: each gets one line, the good ones are still separated
    res = run_cli("separate", "--model", model, "--mixture", str(tmp_path / "*.wav"),
                  "--mixture", str(tmp_path / "missing.wav"), "--out", str(tmp_path / "o2"),
                  "--set", "separate.steps=10", "--quiet")
    text = res.stdout + res.stderr
    assert res.returncode == 1
    assert "rate.wav: sample rate is 8000 Hz but 16000 Hz is expected" in text
    assert "empty.wav: audio is empty" in text and "missing.wav: file not found" in text
    assert (tmp_path / "o2" / "good" / "source1.wav").exists()
    assert (tmp_path / "o2" / "stereo" / "source1.wav").exists()      # channels are averaged
    res = run_cli("separate", "--model", str(tmp_path / "nope.pt"), "--mixture", str(good), "--out",
                  str(tmp_path / "o3"))
    assert res.returncode == 2 and res.stderr.strip().endswith("nope.pt: model file not found")
    res = run_cli("separate", "--model", model, "--mixture", str(good), "--out", str(tmp_path / "o4"),
                  "--set", "separate.lr_decay=2")
    assert res.returncode != 0 and "separate.lr_decay: must be in (0, 1], got 2" in res.stderr
