"""Training: the loss goes down, resume is exact, checkpoints round-trip, bad input is handled."""

from __future__ import annotations

import math
import re

import numpy as np
import pytest
import soundfile as sf
import torch

from pyro_avss.checkpoint import SpeechModels
from pyro_avss.config import load_config
from pyro_avss.errors import ConfigError, InputError, TrainingDiverged
from pyro_avss.inference.training import fit

from conftest import grid_rows


def synthetic_rows(folder, speakers=("a", "b"), per_speaker=3, seconds=0.6, corrupt=False):
    """Tiny harmonic 'voices' with different pitches written as wav files."""
    rng = np.random.default_rng(0)
    rows = []
    t = np.arange(int(16000 * seconds)) / 16000
    for si, spk in enumerate(speakers):
        for i in range(per_speaker):
            f0 = 120 * (1 + si) * (1 + 0.05 * i)
            x = sum(np.sin(2 * np.pi * f0 * h * t) / h for h in range(1, 6)) * 0.1
            x = (x * (0.5 + 0.5 * np.sin(2 * np.pi * 3 * t)) + 0.003 * rng.standard_normal(len(t)))
            path = folder / f"{spk}_{i}.wav"
            sf.write(path, x.astype(np.float32), 16000)
            rows.append({"id": f"{spk}_{i}", "speaker": spk, "split": "train" if i else "dev",
                         "audio": str(path), "lips": ""})
    if corrupt:
        bad = folder / "broken.wav"
        bad.write_bytes(b"RIFF\x00\x00garbage")
        rows.append({"id": "broken", "speaker": speakers[0], "split": "train", "audio": str(bad), "lips": ""})
    return rows


def tiny_config(*extra):
    return load_config(None, ["model.use_video=false", "model.hidden=32", "model.latent_dim=4",
                              "train.batch_size=8", "train.segment_frames=16", "train.warmup_epochs=1",
                              *extra])


def test_fit_on_real_clips_lowers_the_loss(tmp_path):
    rows = grid_rows("train", "s1", 12) + grid_rows("dev", "s1", 3)
    fit(tiny_config("train.epochs=6", "train.patience=10"), tmp_path / "run", rows=rows, progress=False)
    log = np.genfromtxt(tmp_path / "run" / "log.csv", delimiter=",", names=True)
    assert log["dev_loss"][-1] < log["dev_loss"][0] - 50      # nats per frame
    assert (tmp_path / "run" / "learning_curve.png").stat().st_size > 1000
    assert (tmp_path / "run" / "config.yaml").exists()


def test_resume_equals_uninterrupted_run(tmp_path):
    rows = synthetic_rows(tmp_path)
    cfg = tiny_config("train.epochs=4", "train.patience=10")
    full = fit(cfg, tmp_path / "full", rows=rows, progress=False)
    cfg_half = tiny_config("train.epochs=2", "train.patience=10")
    fit(cfg_half, tmp_path / "half", rows=rows, progress=False)
    # the interrupted run continues with the full number of epochs
    resumed = fit(cfg, tmp_path / "half", rows=rows, progress=False, resume=True)
    a = torch.load(tmp_path / "full" / "state.pt", weights_only=True)
    b = torch.load(tmp_path / "half" / "state.pt", weights_only=True)
    assert a["epoch"] == b["epoch"] == 4
    for key in a["decoders"]:
        assert torch.equal(a["decoders"][key], b["decoders"][key]), key
    assert [r["train_loss"] for r in a["log"]] == [r["train_loss"] for r in b["log"]]
    assert torch.equal(full.decoders.w3, resumed.decoders.w3)


def test_checkpoint_round_trip(tmp_path):
    rows = synthetic_rows(tmp_path)
    models = fit(tiny_config("train.epochs=1"), tmp_path / "run", rows=rows, progress=False)
    raw = torch.load(tmp_path / "run" / "model.pt", weights_only=True)   # plain data only
    assert raw["format"] == "pyro_avss-model" and raw["stft"]["n_fft"] == 1024
    assert raw["versions"]["torch"] and raw["components"][0]["name"] == "universal"
    models.save(tmp_path / "copy.pt")
    again = SpeechModels.load(tmp_path / "copy.pt")
    z = torch.randn(5, 4)
    assert torch.equal(models.decoders(z), again.decoders(z))
    assert again.stft == models.stft and again.config == models.config


def test_speaker_decoders_and_switching_from_a_universal_model(tmp_path):
    rows = synthetic_rows(tmp_path)
    fit(tiny_config("train.epochs=1"), tmp_path / "uni", rows=rows, progress=False)
    spk = fit(tiny_config("train.epochs=2", "train.mode=speakers", "train.include_universal=true",
                          f"train.init={tmp_path / 'uni' / 'model.pt'}"), tmp_path / "spk", rows=rows,
              progress=False)
    assert spk.component_names == ["a", "b", "universal"]
    ranges = spk.info["pitch_ranges"]      # each one's pitch, from its own clips (126, 132 / 252, 264 Hz)
    assert 120 <= ranges["a"][0] <= ranges["a"][1] <= 139 < 240 <= ranges["b"][0] <= ranges["b"][1] <= 277
    assert ranges["universal"][0] < ranges["a"][1] and ranges["universal"][1] > ranges["b"][0]
    assert SpeechModels.load(tmp_path / "spk" / "model.pt").info["pitch_ranges"] == ranges
    assert spk.component_summary().startswith("a (pitch 1") and ", universal (pitch " in spk.component_summary()
    # the frozen encoder is the universal one
    uni = SpeechModels.load(tmp_path / "uni" / "model.pt")
    assert torch.equal(spk.encoder.loc.weight, uni.encoder.loc.weight)
    sw = fit(tiny_config("train.epochs=2", "train.mode=switching", "train.labels=hidden",
                         "train.num_components=2", "train.switch_prior=markov",
                         f"train.init={tmp_path / 'uni' / 'model.pt'}"), tmp_path / "sw", rows=rows,
             progress=False)
    assert sw.component_names == ["cluster0", "cluster1"]
    assert not torch.equal(sw.decoders.w3[0], sw.decoders.w3[1])


def test_corrupt_clip_is_reported_and_skipped(tmp_path):
    rows = synthetic_rows(tmp_path, corrupt=True)
    fit(tiny_config("train.epochs=1"), tmp_path / "run", rows=rows, progress=False)
    skipped = (tmp_path / "run" / "skipped.csv").read_text()
    assert "broken" in skipped and "cannot decode" in skipped


def test_nan_loss_stops_and_keeps_last_good_model(tmp_path, monkeypatch):
    from pyro_avss.inference import training

    rows = synthetic_rows(tmp_path)
    fit(tiny_config("train.epochs=1"), tmp_path / "run", rows=rows, progress=False)
    good = (tmp_path / "run" / "model.pt").read_bytes()
    monkeypatch.setattr(training.Trainer, "loss", lambda self, batch, beta, differentiable=True: torch.tensor(math.nan))
    with pytest.raises(TrainingDiverged, match="loss became nan at epoch 2"):
        fit(tiny_config("train.epochs=3"), tmp_path / "run", rows=rows, progress=False, resume=True)
    assert (tmp_path / "run" / "model.pt").read_bytes() == good


def test_unknown_config_key_is_named(tmp_path):
    with pytest.raises(ConfigError, match="unknown config key 'train.learning_rate'"):
        load_config(None, ["train.learning_rate=0.1"])
    bad = tmp_path / "bad.yaml"
    bad.write_text("model:\n  layers: 3\n")
    with pytest.raises(ConfigError, match=r"bad.yaml: unknown config key 'model.layers'"):
        load_config(bad)
    with pytest.raises(ConfigError, match="train.epochs must be int"):
        load_config(None, ["train.epochs=many"])


def test_output_folder_is_not_overwritten(tmp_path):
    rows = synthetic_rows(tmp_path)
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "something").write_text("x")
    with pytest.raises(InputError, match="not empty"):
        fit(tiny_config("train.epochs=1"), tmp_path / "run", rows=rows, progress=False)


def test_a_run_that_failed_before_training_can_be_started_again(tmp_path):
    """A fit that stopped before its first saved step leaves only config.yaml (and skipped.csv):
    a plain retry is accepted, and --resume says there is nothing to resume."""
    rows = synthetic_rows(tmp_path)
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.yaml").write_text("train: {}\n")
    (run / "skipped.csv").write_text("id,reason\n")
    with pytest.raises(InputError, match="nothing to resume .*run again without --resume"):
        fit(tiny_config("train.epochs=1"), run, rows=rows, progress=False, resume=True)
    fit(tiny_config("train.epochs=1"), run, rows=rows, progress=False)
    assert (run / "model.pt").exists()


@pytest.mark.parametrize("override, message", [
    ("train.batch_size=0", "train.batch_size: must be >= 1, got 0"),
    ("train.segment_frames=0", "train.segment_frames: must be >= 1, got 0"),
    ("train.lr=-1", "train.lr: must be > 0, got -1.0"),
    ("train.lr=.nan", "train.lr must be a finite number"),
    ("train.lip_dropout=2", "train.lip_dropout: must be in [0, 1], got 2.0"),
])
def test_bad_train_values_are_refused_before_any_work(tmp_path, override, message):
    with pytest.raises((InputError, ConfigError)) as err:
        fit(tiny_config(override), tmp_path / "run", rows=[], progress=False)
    assert message in str(err.value) and not (tmp_path / "run").exists()


def test_a_corrupt_training_state_is_one_line_on_resume(tmp_path):
    rows = synthetic_rows(tmp_path)
    run = tmp_path / "run"
    run.mkdir()
    (run / "state.pt").write_bytes(b"not a torch file")
    with pytest.raises(InputError, match=r"state.pt: cannot resume from this training state"):
        fit(tiny_config("train.epochs=1"), run, rows=rows, progress=False, resume=True)


def test_a_dev_loss_that_runs_away_is_reported():
    from pyro_avss.inference.training import overfitting_notice

    def log(devs, warmup=1):
        return [{"epoch": i + 1, "beta": 0.5 if i < warmup else 1.0, "dev_loss": d}
                for i, d in enumerate(devs)]

    ran_away = overfitting_notice(log([-500.0, -1700.0, -1783.0, -900.0, 33252.0]))
    assert "-1783.0 (epoch 3" in ran_away and "33252.0 (epoch 5)" in ran_away
    assert overfitting_notice(log([-500.0, -3600.0, -3628.0, -3533.0])) is None    # a few per cent
    assert overfitting_notice(log([-100.0, 500.0], warmup=2)) is None              # warm-up only
    assert overfitting_notice([]) is None


def test_fit_command_reports_a_diverged_run_in_one_line_with_status_1(tmp_path, monkeypatch):
    """A run that started and diverged is not a command that could not start (status 2): it
    ends with status 1 and one ``error:`` line, without autograd's warning about reading a
    tensor that requires grad."""
    import csv as csv_module

    from click.testing import CliRunner

    from pyro_avss.cli import main
    from pyro_avss.inference import training

    rows = synthetic_rows(tmp_path)
    manifest = tmp_path / "corpus.csv"
    with open(manifest, "w", newline="") as f:
        writer = csv_module.DictWriter(f, fieldnames=["id", "speaker", "split", "audio"])
        writer.writeheader()
        writer.writerows({k: r[k] for k in ("id", "speaker", "split", "audio")} for r in rows)
    nan = torch.tensor(math.nan, requires_grad=True)
    monkeypatch.setattr(training.Trainer, "loss", lambda self, batch, beta, differentiable=True: nan * 1.0)
    sets = [f"data.corpora=[{manifest}]", f"data.cache={tmp_path / 'cache'}", "model.use_video=false",
            "model.hidden=16", "model.latent_dim=4", "train.epochs=1", "train.batch_size=8",
            "train.segment_frames=8"]
    result = CliRunner().invoke(main, ["fit", "--out", str(tmp_path / "out"), "--device", "cpu",
                                       *[a for s in sets for a in ("--set", s)]])
    progress = re.compile(r"\d+/\d+ \[")                          # tqdm bars of the preparation
    lines = [line for line in result.stderr.splitlines() if line.strip() and not progress.search(line)]
    assert result.exit_code == 1, result.output
    assert len(lines) == 1 and lines[0].startswith("error: loss became nan at epoch 1"), lines
