"""The Python entry points (pyro_avss.api), the installed command and the packaged configs.

Everything runs on tiny random-weight models (``random_models`` of test_separation) and clips of
a fraction of a second, with a few SVI steps: these tests check the plumbing, not the quality.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from click.testing import CliRunner

import pyro_avss
from pyro_avss.api import Separator, SeparationResult, separation_settings
from pyro_avss.config import CONFIG_DIR, config_file, load_config, packaged_configs
from pyro_avss.errors import ConfigError, InputError
from pyro_avss.inference.run_separate import output_names
from pyro_avss.settings.separation import SeparationSettings

from test_separation import noisy, random_models

ROOT = Path(__file__).resolve().parents[1]
TINY = {"steps": 3, "num_samples": 1}


def tiny_separator(**kw) -> Separator:
    return Separator(random_models(K=2), separation_settings(**{**TINY, **kw}), device="cpu")


def this_checkout_env() -> dict:
    """The environment of a child process that imports this checkout's pyro_avss."""
    return {**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(ROOT)] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p])}


def readme_example() -> str:
    text = (ROOT / "README.md").read_text()
    section = text.split("## Python API", 1)[1]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def test_the_readme_example_runs(tmp_path, monkeypatch):
    random_models(K=2).save(tmp_path / "model.pt")
    sf.write(tmp_path / "mix.wav", noisy(0.4), 16000)
    monkeypatch.chdir(tmp_path)
    code = readme_example().replace('steps=100', 'steps=3, num_samples=1, device="cpu"')
    assert 'steps=3' in code                            # the README still sets steps=100
    namespace: dict = {}
    exec(compile(code, "README.md", "exec"), namespace)
    result = namespace["result"]
    assert isinstance(result, SeparationResult) and len(result.sources) == 2
    assert sorted(p.name for p in (tmp_path / "separated").iterdir()) == sorted(
        output_names(2, plot=False))


def test_separating_an_array_gives_sources_that_sum_to_it_and_saves_the_command_files(tmp_path):
    x = noisy(0.5)
    result = tiny_separator().separate(x, sample_rate=16000, sources=2)
    assert len(result.sources) == 2 and result.sample_rate == 16000
    assert all(s.shape == x.shape and s.dtype == np.float32 for s in result.sources)
    assert result.noise.shape == x.shape
    assert np.abs(sum(result.sources) + result.noise - x).max() < 1e-4      # masks sum to one
    T = len(x) // 256 + 1
    assert result.posteriors.shape == (2, T, 2) and result.frame_times.shape == (T,)
    assert np.allclose(result.posteriors.sum(-1), 1, atol=1e-4)
    assert result.components == ["component0", "component1"]
    assert set(result.best_components) <= set(result.components)

    out = result.save(tmp_path / "out")
    assert sorted(p.name for p in out.iterdir()) == sorted(output_names(2, plot=False))
    back, rate = sf.read(out / "source2.wav", dtype="float32")
    assert rate == 16000 and np.abs(back - result.sources[1]).max() < 1e-3   # 16-bit PCM
    rows = (out / "switch_posterior.csv").read_text().splitlines()
    assert rows[0] == "time_s,source,component,probability" and len(rows) == 1 + T * 2 * 2
    with pytest.raises(InputError, match="outputs exist"):
        result.save(out)
    result.save(out, overwrite=True)


def test_settings_are_checked_like_set(tmp_path):
    random_models().save(tmp_path / "model.pt")
    model = tmp_path / "model.pt"
    assert Separator.load(model, "cpu", steps=7).settings.steps == 7
    assert Separator.load(model, "cpu", {"separate.steps": 9, "lr": 0.1}).settings.lr == 0.1
    assert Separator.load(model, "cpu", ["separate.switch_prior=iid"]).settings.switch_prior == "iid"
    with pytest.raises(ConfigError, match="unknown config key 'separate.stepz'"):
        Separator.load(model, stepz=7)
    with pytest.raises(ConfigError, match="separate.steps must be int, got 'many'"):
        Separator.load(model, steps="many")
    with pytest.raises(InputError, match=r"^separate.lr_decay: must be in \(0, 1\], got 2"):
        Separator.load(model, lr_decay=2)
    with pytest.raises(ConfigError, match="'train.lr' is not a separation setting"):
        Separator.load(model, overrides={"train.lr": 0.1})
    with pytest.raises(InputError, match="expected auto, cpu, cuda"):
        Separator.load(model, "gpu")
    with pytest.raises(InputError, match="model file not found"):
        Separator.load(tmp_path / "nope.pt")
    # the command keeps accepting any known key after --set, as it always has
    assert separation_settings(["train.lr=0.1"], strict=False).steps == SeparationSettings().steps


def test_arrays_need_their_rate_and_are_resampled_only_when_asked():
    sep = tiny_separator()
    x = noisy(0.3)
    with pytest.raises(InputError, match="give sample_rate="):
        sep.separate(x)
    with pytest.raises(InputError, match="sample rate is 8000 Hz but 16000 Hz is expected"):
        sep.separate(x, sample_rate=8000)
    with pytest.raises(InputError, match="1-D"):
        sep.separate(np.stack([x, x]), sample_rate=16000)
    with pytest.raises(InputError, match="float samples"):
        sep.separate((x * 32767).astype(np.int16), sample_rate=16000)
    with pytest.raises(InputError, match="1 to 3 sources"):
        sep.separate(x, sample_rate=16000, sources=4)
    out = sep.separate(x, sample_rate=8000, resample=True)
    assert len(out.sources) == 1 and out.sources[0].shape == (2 * len(x),)


def test_many_recordings_in_one_call(tmp_path):
    sf.write(tmp_path / "a.wav", noisy(0.3, 1), 16000)
    b = noisy(0.5, 2)
    sep = tiny_separator()
    results = sep.separate_many([tmp_path / "a.wav", b], sources=[1, 2], sample_rate=16000)
    assert [len(r.sources) for r in results] == [1, 2]
    assert np.array_equal(results[0].mixture, sf.read(tmp_path / "a.wav", dtype="float32")[0])
    assert results[1].sources[0].shape == b.shape
    with pytest.raises(InputError, match="one entry per mixture"):
        sep.separate_many([b, b], sources=[1], sample_rate=16000)


def test_videos_given_to_an_audio_only_model_are_a_notice(tmp_path):
    with pytest.warns(UserWarning, match="the model is audio-only"):
        result = tiny_separator().separate(noisy(0.3), videos=["alice.mp4", "bob.mp4"],
                                           sample_rate=16000)
    assert len(result.sources) == 2 and len(result.notices) == 1
    result.save(tmp_path / "out")
    assert "audio-only" in (tmp_path / "out" / "notices.txt").read_text()


def test_lip_tracks_as_objects_or_caches(tmp_path):
    from pyro_avss.video.track import LipTrack

    models = random_models(lip_dim=4)
    n = 12
    rois = np.random.default_rng(0).integers(0, 255, (n, 64, 64), dtype=np.uint8)
    models.lips.fit([(torch.as_tensor(rois), torch.ones(n, dtype=torch.bool))])
    track = LipTrack(rois=rois, landmarks=np.zeros((n, 0, 2), np.float32),
                     timestamps=np.arange(n) / 25.0, fps=25.0, face_found=np.ones(n, bool),
                     detector="roi")
    track.save(tmp_path / "lips.npz")
    sep = Separator(models, separation_settings(**TINY), "cpu")
    result = sep.separate(noisy(0.48), videos=[track, tmp_path / "lips.npz"], sample_rate=16000)
    assert len(result.sources) == 2 and not result.notices
    with pytest.raises(InputError, match="sources=1 but 2 videos"):
        sep.separate(noisy(0.48), videos=[track, track], sources=1, sample_rate=16000)


def test_importing_the_package_stays_cheap_until_the_api_is_used():
    code = ("import sys, pyro_avss; assert 'torch' not in sys.modules, 'torch'; "
            "pyro_avss.Separator; assert 'torch' in sys.modules; print(pyro_avss.fit.__module__)")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env=this_checkout_env(), cwd=ROOT.parent)
    assert res.returncode == 0 and res.stdout.strip() == "pyro_avss.api", res.stderr
    assert pyro_avss.SeparationResult is SeparationResult


@pytest.mark.parametrize("module", ["pyro_avss.cli", "pyro_avss"])
def test_the_installed_command_runs_from_any_folder(tmp_path, module):
    res = subprocess.run([sys.executable, "-m", module, "--help"], capture_output=True, text=True,
                         env=this_checkout_env(), cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    assert "separate" in res.stdout and "fit" in res.stdout


def test_a_config_name_resolves_to_the_packaged_file_from_any_folder(tmp_path, monkeypatch):
    assert {"grid_universal", "grid_speakers"} <= set(packaged_configs())
    assert CONFIG_DIR == ROOT / "pyro_avss" / "configs"
    assert (ROOT / "configs" / "grid_universal.yaml").samefile(CONFIG_DIR / "grid_universal.yaml")
    monkeypatch.chdir(tmp_path)
    for name in ("grid_universal", "grid_universal.yaml"):
        assert config_file(name) == CONFIG_DIR / "grid_universal.yaml"
    assert load_config("grid_universal")["data"]["corpora"] == ["../shared/data/grid"]
    (tmp_path / "grid_universal.yaml").write_text("train:\n  epochs: 3\n")
    assert load_config("grid_universal.yaml")["train"]["epochs"] == 3     # a file wins
    with pytest.raises(ConfigError, match="nope: config file not found .*grid_universal"):
        load_config("nope")
    # the command resolves it too (the epochs check runs right after the config is read)
    from pyro_avss.cli import main

    res = CliRunner().invoke(main, ["fit", "--config", "grid_speakers", "--out", "run",
                                    "--set", "train.epochs=0"])
    assert res.exit_code == 2 and "train.epochs: must be >= 1, got 0" in res.output
    res = CliRunner().invoke(main, ["fit", "--config", "nope", "--out", "run"])
    assert res.exit_code == 2 and "nope: config file not found" in res.output


def test_fit_builds_the_config_like_the_command(tmp_path, monkeypatch):
    from pyro_avss.inference import training

    seen = []
    monkeypatch.setattr(training, "fit", lambda cfg, out, **kw: seen.append((cfg, out, kw)) or "m")
    assert pyro_avss.fit("grid_speakers", tmp_path, ["train.lr=0.01"], "cpu", seed=3) == "m"
    cfg, out, kw = seen[-1]
    assert cfg["train"]["mode"] == "speakers" and cfg["train"]["lr"] == 0.01
    assert cfg["train"]["seed"] == 3 and out == tmp_path and kw["device"] == "cpu"
    pyro_avss.fit({"train": {"epochs": 2}}, tmp_path, {"train.batch_size": 8})
    assert seen[-1][0]["train"]["epochs"] == 2 and seen[-1][0]["train"]["batch_size"] == 8
    (tmp_path / "config.yaml").write_text("train:\n  epochs: 5\n")
    pyro_avss.fit(None, tmp_path, resume=True)
    assert seen[-1][0]["train"]["epochs"] == 5 and seen[-1][2]["resume"]
    with pytest.raises(ConfigError, match="unknown config key 'train.epoch'"):
        pyro_avss.fit({"train": {"epoch": 2}}, tmp_path)


def test_every_packaged_config_is_valid_and_named_in_the_fit_help():
    from pyro_avss.cli import main
    from pyro_avss.settings import Settings

    help_text = " ".join(CliRunner().invoke(main, ["fit", "--help"]).output.split())
    for name in packaged_configs():
        Settings.from_config(load_config(name))           # every value passes its checks
        assert name in help_text, f"packaged config {name} is missing from `fit --help`"
