"""Batch separation never loses a finished result and never writes outside ``--out``.

Names from data are confined to the output folder, each recording is written as soon as it is
done (all its files or none), one failing recording does not stop the others, an interrupted
batch resumes with ``--skip-existing``, and bad options end in one line, not a traceback.
"""

from __future__ import annotations

import csv
import os
import re
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from pyro_avss.inference import run_separate
from pyro_avss.inference.run_separate import SeparationJob, jobs_from_inputs, output_names, run_jobs
from pyro_avss.errors import SeparationDiverged
from pyro_avss.inference.separation import SeparationSettings

from test_separation import noisy, random_models

ROOT = Path(__file__).resolve().parents[1]
TINY = SeparationSettings(steps=2, num_samples=1, batch_size=2)


def run_cli(*args, **kwargs):
    return subprocess.run([sys.executable, str(ROOT / "cli.py"), *args], capture_output=True,
                          text=True, **kwargs)


def write_clips(folder: Path, n: int, seconds=0.3) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        paths.append(folder / f"clip{i:03d}.wav")
        sf.write(paths[-1], noisy(seconds, i), 16000)
    return paths


def write_manifest(path: Path, rows: list[dict]) -> Path:
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=["id", "mixture"])
        w.writeheader()
        w.writerows(rows)
    return path


def all_files(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


def complete(folder: Path, J=1) -> bool:
    return sorted(p.name for p in folder.iterdir()) == sorted(output_names(J))


@pytest.mark.parametrize("bad", ["../../escape", "/tmp/abs_escape", "a/b", "..", ".hidden",
                                 "x\\y", "tab\tid", ""])
def test_ids_that_would_leave_the_output_folder_are_refused(tmp_path, bad):
    (clip,) = write_clips(tmp_path / "in", 1)
    manifest = write_manifest(tmp_path / "m.csv", [{"id": bad, "mixture": str(clip)},
                                                   {"id": "fine", "mixture": str(clip)}])
    jobs, problems = jobs_from_inputs([str(manifest)], [], 1)
    if bad == "":                      # no id: the file stem names the folder
        assert [j.name for j in jobs] == ["clip000", "fine"] and not problems
        return
    assert [j.name for j in jobs] == ["fine"]
    assert len(problems) == 1 and "cannot name an output folder" in problems[0][1]


def test_duplicate_ids_are_refused_before_any_work(tmp_path):
    clips = write_clips(tmp_path / "in", 3)
    manifest = write_manifest(tmp_path / "m.csv", [{"id": "same", "mixture": str(clips[0])},
                                                   {"id": "same", "mixture": str(clips[1])},
                                                   {"id": "other", "mixture": str(clips[2])}])
    jobs, problems = jobs_from_inputs([str(manifest)], [], 1)
    assert [j.name for j in jobs] == ["other"]
    assert len(problems) == 2 and all("used by 2 inputs" in why for _, why in problems)


def test_cli_writes_nothing_outside_out_for_hostile_ids(tmp_path):
    models = random_models()
    models.save(tmp_path / "model.pt")
    (clip,) = write_clips(tmp_path / "in", 1)
    rows = [{"id": i, "mixture": str(clip)} for i in ("../escaped", str(tmp_path / "abs"), "ok", "d", "d")]
    manifest = write_manifest(tmp_path / "m.csv", rows)
    before = all_files(tmp_path)
    res = run_cli("separate", "--model", str(tmp_path / "model.pt"), "--mixture", str(manifest),
                  "--out", str(tmp_path / "out"), "--set", "separate.steps=2", "--quiet", "--force")
    assert res.returncode == 1, res.stderr
    assert "Traceback" not in res.stderr and res.stderr.count("error:") == 4, res.stderr
    new = all_files(tmp_path) - before
    assert all(p.startswith("out") for p in new), new
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["ok"]
    assert "separated 1 of 5 input(s)" in res.stdout and "4 failed" in res.stdout


def test_each_group_is_written_before_the_next_is_separated(tmp_path, monkeypatch):
    clips = write_clips(tmp_path / "in", 5)
    out = tmp_path / "out"
    seen = []
    real = run_separate.separate_recordings

    def watched(models, jobs, settings, device=None):
        seen.append(sum(1 for p in out.glob("clip*") if complete(p)) if out.exists() else 0)
        return real(models, jobs, settings, device)

    monkeypatch.setattr(run_separate, "separate_recordings", watched)
    jobs = [SeparationJob(c, [None], c.stem) for c in clips]
    outcome = run_jobs(random_models(), jobs, out, TINY, device="cpu", resample=False,
                       force=False, detector="roi", progress=False, echo=lambda _: None)
    assert seen == [0, 2, 4]                     # groups of batch_size = 2
    assert sorted(outcome.done) == [c.stem for c in clips] and not outcome.failures
    assert all(complete(out / c.stem) for c in clips)


def test_one_failing_recording_fails_alone(tmp_path, monkeypatch):
    clips = write_clips(tmp_path / "in", 4)
    bad_length = len(noisy(0.7))
    sf.write(clips[1], noisy(0.7), 16000)
    real = run_separate.separate_recordings

    def fragile(models, jobs, settings, device=None):
        if any(len(a) == bad_length for a, _ in jobs):
            raise SeparationDiverged("separation loss became nan at step 3")
        return real(models, jobs, settings, device)

    monkeypatch.setattr(run_separate, "separate_recordings", fragile)
    lines = []
    jobs = [SeparationJob(c, [None], c.stem) for c in clips]
    outcome = run_jobs(random_models(), jobs, tmp_path / "out", TINY, device="cpu",
                       resample=False, force=False, detector="roi", progress=False, echo=lines.append)
    assert sorted(outcome.done) == ["clip000", "clip002", "clip003"]
    assert lines == [f"error: {clips[1]}: separation loss became nan at step 3"]
    assert not (tmp_path / "out" / "clip001").exists()


def test_an_interrupted_write_leaves_no_half_folder_and_resume_finishes(tmp_path, monkeypatch):
    clips = write_clips(tmp_path / "in", 3)
    out = tmp_path / "out"
    real = run_separate.write_outputs
    calls = []

    def interrupted(folder, result, mixture, models, plot=True, notices=()):
        calls.append(folder)
        if len(calls) == 2:
            from pyro_avss.audio import save_audio

            save_audio(folder / "source1.wav", result.sources[0], 16000)
            raise KeyboardInterrupt
        return real(folder, result, mixture, models, plot, notices)

    monkeypatch.setattr(run_separate, "write_outputs", interrupted)
    jobs = [SeparationJob(c, [None], c.stem) for c in clips]
    args = dict(device="cpu", resample=False, detector="roi", progress=False, echo=lambda _: None)
    with pytest.raises(KeyboardInterrupt):
        run_jobs(random_models(), jobs, out, TINY, force=False, **args)
    assert sorted(p.name for p in out.iterdir()) == ["clip000"]       # no partial clip001
    monkeypatch.setattr(run_separate, "write_outputs", real)
    resumed = run_jobs(random_models(), jobs, out, TINY, force=False, skip_existing=True, **args)
    assert resumed.skipped == ["clip000"] and resumed.done == ["clip001", "clip002"]
    assert sorted(p.name for p in out.iterdir()) == ["clip000", "clip001", "clip002"]
    again = run_jobs(random_models(), jobs, out, TINY, force=False, **args)
    assert not again.done and again.failures[0] == (
        str(clips[0]), f"{out / 'clip000'}: outputs exist (use --force to replace them or "
                       "--skip-existing to keep them)")
    assert all(complete(p) for p in out.iterdir())


def test_force_replaces_every_file_of_a_recording(tmp_path):
    (clip,) = write_clips(tmp_path / "in", 1)
    args = dict(device="cpu", resample=False, detector="roi", progress=False, echo=lambda _: None)
    for out, jobs in ((tmp_path / "single", 1), (tmp_path / "batch", 2)):
        two = [SeparationJob(clip, [None, None], f"r{i}") for i in range(jobs)]
        one = [SeparationJob(clip, [None], f"r{i}") for i in range(jobs)]
        run_jobs(random_models(), two, out, TINY, force=False, **args)
        folder = out if jobs == 1 else out / "r0"
        assert (folder / "source2.wav").exists()
        (folder / "notes.txt").write_text("the user's own file")
        outcome = run_jobs(random_models(), one, out, TINY, force=True, **args)
        assert not outcome.failures
        assert not (folder / "source2.wav").exists()             # no stale source next to new ones
        # a single input writes into OUT itself, which may hold the user's files: they stay
        assert (folder / "notes.txt").exists() == (jobs == 1)


def test_sigint_during_a_batch_then_skip_existing_completes_it(tmp_path):
    """After SIGINT every visible folder is complete, and a rerun with --skip-existing finishes
    with exactly one complete folder per row. 40 rows by default; the full check:
    ``PYRO_AVSS_BATCH_ROWS=1000 python -m pytest tests/test_batch_safety.py -k sigint``."""
    rows = int(os.environ.get("PYRO_AVSS_BATCH_ROWS", "40"))
    models = random_models()
    models.save(tmp_path / "model.pt")
    clips = write_clips(tmp_path / "in", rows, seconds=0.2)
    manifest = write_manifest(tmp_path / "m.csv", [{"id": c.stem, "mixture": str(c)} for c in clips])
    out = tmp_path / "out"
    cmd = [sys.executable, str(ROOT / "cli.py"), "separate", "--model", str(tmp_path / "model.pt"),
           "--mixture", str(manifest), "--out", str(out), "--set", "separate.steps=1",
           "--set", "separate.batch_size=2", "--set", "separate.num_samples=1", "--quiet"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while time.time() < deadline and len(list(out.glob("clip*"))) < rows // 10:
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    proc.communicate(timeout=60)
    visible = [p for p in out.iterdir() if not p.name.startswith(".")]
    assert rows // 10 <= len(visible) < rows or proc.returncode == 0
    assert all(complete(p) for p in visible)
    res = subprocess.run(cmd + ["--skip-existing"], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    assert sorted(os.listdir(out)) == [c.stem for c in clips]         # no hidden partial left
    assert all(complete(out / c.stem) for c in clips)
    assert f"({len(visible)} kept from an earlier run)" in res.stdout


@pytest.mark.parametrize("args, message", [
    (["--device", "bogus"], "--device: expected auto, cpu, cuda or cuda:N, got 'bogus'"),
    (["--detector", "bogus"], "Invalid value for '--detector'"),
    (["--threads", "-1"], "Invalid value for '--threads'"),
    (["--set", "separate.chunk_seconds=0"], "separate.chunk_seconds: must be > 0, got 0.0"),
    (["--set", "separate.overlap_seconds=20"], "separate.overlap_seconds: must be in [0, chunk_seconds / 2"),
    (["--set", "separate.batch_size=0"], "separate.batch_size: must be >= 1, got 0"),
    (["--set", "separate.noise_rank=0"], "separate.noise_rank: must be >= 1, got 0"),
    (["--set", "separate.switch_prior=bogus"], "separate.switch_prior: must be auto, iid, markov, utterance or speaker"),
    (["--set", "separate.lr=.nan"], "separate.lr must be a finite number"),
    (["--video", "."], "--video: .: give one video file per source, not a folder or glob"),
    (["--force", "--skip-existing"], "choose one: replace or keep existing outputs"),
])
def test_bad_separate_options_end_in_one_line(tmp_path, args, message):
    random_models().save(tmp_path / "model.pt")
    (clip,) = write_clips(tmp_path / "in", 1)
    res = run_cli("separate", "--model", str(tmp_path / "model.pt"), "--mixture", str(clip),
                  "--out", str(tmp_path / "out"), "--quiet", *args)
    assert res.returncode == 2, res.stderr
    assert "Traceback" not in res.stderr and message in res.stderr, res.stderr
    assert len(res.stderr.strip().splitlines()) == 1, res.stderr        # click's refusals too
    assert not (tmp_path / "out").exists()


def test_a_binary_csv_is_one_line(tmp_path):
    random_models().save(tmp_path / "model.pt")
    manifest = tmp_path / "m.csv"
    manifest.write_bytes(bytes(range(256)) * 4)
    res = run_cli("separate", "--model", str(tmp_path / "model.pt"), "--mixture", str(manifest),
                  "--out", str(tmp_path / "out"), "--quiet")
    assert res.returncode == 1 and "Traceback" not in res.stderr
    assert f"{manifest}: not a readable CSV manifest" in res.stderr or "no 'mixture'" in res.stderr


def test_malformed_model_files_are_one_line(tmp_path):
    import torch

    from pyro_avss.checkpoint import SpeechModels
    from pyro_avss.errors import InputError

    good = random_models().to_dict()
    wrong_size = {**good, "sizes": {**good["sizes"], "hidden": good["sizes"]["hidden"] + 1}}
    missing = {k: v for k, v in good.items() if k != "decoders"}
    cases = {"list": [1, 2, 3], "missing": missing, "wrong_size": wrong_size,
             "no_format": {"weights": torch.zeros(2)}}
    for name, data in cases.items():
        torch.save(data, tmp_path / f"{name}.pt")
        with pytest.raises(InputError) as err:
            SpeechModels.load(tmp_path / f"{name}.pt")
        text = str(err.value)
        assert "\n" not in text and text.startswith(str(tmp_path / name)), text
        assert "not a pyro_avss model" in text, text
    res = run_cli("separate", "--model", str(tmp_path / "wrong_size.pt"), "--mixture", "x.wav",
                  "--out", str(tmp_path / "out"))
    assert res.returncode == 2 and "Traceback" not in res.stderr
    assert "not a pyro_avss model: Error(s) in loading state_dict" in res.stderr


def test_score_does_not_overwrite_its_output(tmp_path):
    out = tmp_path / "scores.json"
    out.write_text("{}")
    res = run_cli("score", "--model", "missing.pt", "--out", str(out))
    assert res.returncode == 2 and "scores.json: output exists (use --force" in res.stderr
    assert out.read_text() == "{}"


def test_silent_degradations_become_notices(tmp_path):
    """A truncated WAV, a video with no face and one shorter than the audio: one notice line
    each on the console and in notices.txt; the recordings are still separated."""
    import torch

    from pyro_avss.video.track import LipTrack

    clips = write_clips(tmp_path / "in", 3, seconds=1.0)
    data = clips[0].read_bytes()
    clips[0].write_bytes(data[:len(data) // 2])                         # cut short
    models = random_models(lip_dim=4)
    n = 25
    rois = np.random.default_rng(0).integers(0, 255, (n, 64, 64), dtype=np.uint8)
    models.lips.fit([(torch.as_tensor(rois), torch.ones(n, dtype=torch.bool))])
    tracks = {}
    for name, found, frames in (("noface", np.zeros(n, bool), n), ("short", np.ones(n, bool), 10)):
        tracks[name] = tmp_path / f"{name}.npz"
        LipTrack(rois=rois[:frames], landmarks=np.zeros((frames, 0, 2), np.float32),
                 timestamps=np.arange(frames) / 25.0, fps=25.0, face_found=found[:frames],
                 detector="roi").save(tracks[name])
    jobs = [SeparationJob(clips[0], [None], "cut"), SeparationJob(clips[1], [tracks["noface"]], "noface"),
            SeparationJob(clips[2], [tracks["short"]], "short")]
    lines = []
    out = tmp_path / "out"
    outcome = run_jobs(models, jobs, out, TINY, device="cpu", resample=False, force=False,
                       detector="roi", progress=False, echo=lines.append)
    assert sorted(outcome.done) == ["cut", "noface", "short"] and not outcome.failures
    expected = {"cut": "truncated file, 16022 bytes of audio its header announces are missing",
                "noface": "no face found in any frame",
                "short": "the video covers 0.40 s of the 1.00 s of audio"}
    assert len(lines) == 3
    for name, text in expected.items():
        assert any(text in line and line.startswith("notice: ") for line in lines), (name, lines)
        assert text in (out / name / "notices.txt").read_text()


def test_the_figure_of_a_long_recording_is_pooled_minute_by_minute():
    import torch

    from pyro_avss.audio import StftConfig, stft
    from pyro_avss.inference.separation_outputs import _pool, display_power

    cfg = StftConfig()
    x = noisy(150.0)                                          # 2.5 minutes: three pieces
    full = stft(torch.as_tensor(x), cfg).abs().pow(2).numpy()
    for factor in (1, 3):
        shown = display_power(x, cfg, factor)
        assert shown.shape == _pool(full, factor).shape
        # pieces are cut on frame boundaries: only the frames at the cuts see other samples
        assert np.median(np.abs(shown - _pool(full, factor)) / (_pool(full, factor) + 1e-9)) < 1e-3


def test_clips_that_could_not_be_prepared_are_a_notice(tmp_path, capsys):
    from pyro_avss.log import log_to_console

    log_to_console()                                  # as the command line does
    from pyro_avss.data.prepare import MANIFEST_COLUMNS
    from pyro_avss.data.prepared import cache_folder, prepared_rows

    corpus = tmp_path / "corpus"
    corpus.mkdir()
    folder = cache_folder(corpus, tmp_path / "cache")
    folder.mkdir(parents=True)
    (folder / "manifest.csv").write_text(",".join(MANIFEST_COLUMNS) + "\n")
    (folder / "failures.csv").write_text("id,path,reason\na,a.wav,cannot decode\nb,b.mpg,no face\n")
    assert prepared_rows([str(corpus)], tmp_path / "cache", progress=False) == []
    err = capsys.readouterr().err
    assert f"notice: {corpus}: 2 clip(s) could not be prepared and are left out" in err


def unwritable_out(tmp_path: Path, how: str, monkeypatch) -> Path:
    """An ``--out`` that cannot be written: under a read-only folder (skipped as root, whom
    permissions do not stop), an existing file, a path under a file, or a folder that the
    permission check is told it may not write in (so that root runs that branch too)."""
    if how == "read-only parent":
        if os.geteuid() == 0:
            pytest.skip("root writes in read-only folders (the other variants run as root)")
        parent = tmp_path / "locked"
        parent.mkdir(mode=0o500)
        return parent / "out"
    if how in ("a file", "under a file"):
        (tmp_path / "taken").write_text("a file, not a folder")
        return tmp_path / "taken" if how == "a file" else tmp_path / "taken" / "out"
    real = os.access

    def access(path, mode, **kwargs):          # tmp_path is not writable, as for another user
        inside = Path(path).resolve().is_relative_to(tmp_path.resolve())
        return not (inside and mode & os.W_OK) and real(path, mode, **kwargs)

    monkeypatch.setattr(os, "access", access)
    return tmp_path / "out"


@pytest.mark.parametrize("how", ["read-only parent", "a file", "under a file", "no permission"])
@pytest.mark.parametrize("command", ["separate", "evaluate", "fit"])
def test_an_unwritable_output_folder_is_one_line(tmp_path, monkeypatch, how, command):
    from click.testing import CliRunner

    from pyro_avss.cli import main

    from pyro_avss.data.clips import Clip
    from pyro_avss.data.mixture_builder import build_mixture_specs
    from pyro_avss.data.mixture_manifest import write_mixture_manifest

    random_models().save(tmp_path / "model.pt")
    clip, noise = write_clips(tmp_path / "in", 2)
    write_mixture_manifest(build_mixture_specs([Clip("c", "a", clip, None, "dev")],
                                               [("n", noise)], [0.0]), tmp_path / "mix.csv")
    out = unwritable_out(tmp_path, how, monkeypatch)
    args = {"separate": ["separate", "--model", str(tmp_path / "model.pt"), "--mixture", str(clip),
                         "--no-figure", "--quiet"],
            "evaluate": ["evaluate", "--mixtures", str(tmp_path / "mix.csv"), "--systems", "mixture",
                         "--quiet"],
            "fit": ["fit", "--set", "train.epochs=1"]}[command]
    before = all_files(tmp_path)
    res = CliRunner().invoke(main, [*args, "--out", str(out)])
    if how == "read-only parent":
        out.parent.chmod(0o700)                       # so that pytest can remove tmp_path
    assert res.exit_code == 2 and isinstance(res.exception, SystemExit), res.output
    assert res.stderr.count("\n") == 1 and res.stderr.startswith(f"error: {out}: "), res.stderr
    assert ("permission denied" if how in ("read-only parent", "no permission")
            else "is a file, not a folder") in res.stderr
    assert all_files(tmp_path) == before                          # no partial folder anywhere


def test_a_scaled_down_file_is_a_notice_naming_where_it_lies(tmp_path):
    """A full-scale input gives estimates that would clip: the gain is a notice line naming the
    file in its final folder (not the hidden one it was written in) and a line of notices.txt,
    not a two-line Python warning."""
    x = np.sign(noisy(0.25)) + (noisy(0.25) == 0)
    sf.write(tmp_path / "loud.wav", x.astype(np.float32), 16000, subtype="FLOAT")
    lines = []
    out = tmp_path / "out"
    with warnings.catch_warnings():
        warnings.simplefilter("error")                        # no warning may escape
        outcome = run_jobs(random_models(), [SeparationJob(tmp_path / "loud.wav", [None], "loud")],
                           out, TINY, device="cpu", resample=False, force=False, detector="roi",
                           progress=False, echo=lines.append, figure=False)
    assert outcome.done == ["loud"] and lines, lines
    for line in lines:
        name = line.split(": ")[1]
        assert re.fullmatch(rf"notice: {out}/(noise|source1)\.wav: scaled by 0\.\d+ \(-\d+\.\d dB\) "
                            "to avoid clipping", line), line
        assert line[len("notice: "):].replace(f"{out}/", "") in (out / "notices.txt").read_text()
        assert Path(name).is_file()
