"""What a separation costs besides separating: imports only where used, no ``torch._dynamo``.

A 3-s clip separates in about a second of SVI, while importing ``torch._dynamo`` (pulled in
by constructing any ``torch.optim`` optimizer), matplotlib or the face-landmark stack costs
seconds; with a video, only MediaPipe's face mesh is imported (its package would bring
matplotlib and the tasks API). These tests check ``sys.modules`` after a real ``cli.py`` call in a fresh process (not
the time, which depends on the machine), and that the optimizer used instead is Pyro's
ClippedAdam step for step.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyro.optim
import soundfile as sf
import torch

from pyro_avss.inference import run_separate
from pyro_avss.inference.run_separate import SeparationJob, run_jobs
from pyro_avss.inference.optim import DecayingAdam
from pyro_avss.inference.separation import SeparationSettings

from test_separation import noisy, random_models

ROOT = Path(__file__).resolve().parents[1]
VIDEO_STACK = ("mediapipe", "cv2", "av", "pyro_avss.video.track", "pyro_avss.video.landmarks")
# the listing is written by an atexit handler: `separate` leaves through os._exit, after those
RUN_AND_LIST_MODULES = """
import atexit, json, runpy, sys
cli, out, *args = sys.argv[1:]
sys.argv = [cli, *args]

def listing():
    with open(out, "w") as f:
        json.dump(sorted(sys.modules), f)

atexit.register(listing)
runpy.run_path(cli, run_name="__main__")
"""


def cli_modules(tmp_path: Path, *args) -> set[str]:
    """The modules loaded by one ``cli.py`` call in a fresh interpreter (its exit status must be 0)."""
    listing = tmp_path / "modules.json"
    res = subprocess.run([sys.executable, "-c", RUN_AND_LIST_MODULES, str(ROOT / "cli.py"),
                          str(listing), *args], capture_output=True, text=True, cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    return set(json.loads(listing.read_text()))


def audio_visual_model(path: Path) -> Path:
    """A random-weight model that uses video (so the separation path asks for lips)."""
    models = random_models(lip_dim=4)
    rois = np.random.default_rng(0).integers(0, 255, (25, 64, 64), dtype=np.uint8)
    models.lips.fit([(torch.as_tensor(rois), torch.ones(25, dtype=torch.bool))])
    assert models.uses_video
    models.save(path)
    return path


def separate_args(tmp_path: Path, *extra) -> list[str]:
    sf.write(tmp_path / "mix.wav", noisy(0.3), 16000)
    return ["separate", "--model", str(audio_visual_model(tmp_path / "model.pt")), "--mixture",
            str(tmp_path / "mix.wav"), "--out", str(tmp_path / "out"), "--quiet", "--threads", "1",
            "--set", "separate.steps=2", "--set", "separate.num_samples=1", *extra]


def test_help_imports_neither_torch_nor_pyro(tmp_path):
    for args in (["--help"], ["separate", "--help"]):
        loaded = cli_modules(tmp_path, *args)
        assert not {"torch", "pyro", "numpy", "matplotlib"} & loaded, args


def test_audio_only_separation_without_figure_imports_no_dynamo_matplotlib_or_video(tmp_path):
    loaded = cli_modules(tmp_path, *separate_args(tmp_path, "--no-figure"))
    assert "pyro" in loaded and "torch" in loaded             # it did separate
    assert "torch._dynamo" not in loaded
    assert not [m for m in loaded if m.split(".")[0] == "matplotlib"]
    assert not set(VIDEO_STACK) & loaded
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [
        "noise.wav", "source1.wav", "speakers.csv", "switch_posterior.csv"]


def test_the_figure_brings_matplotlib_only(tmp_path):
    loaded = cli_modules(tmp_path, *separate_args(tmp_path))
    assert "matplotlib" in loaded and "matplotlib.pyplot" not in loaded
    assert "torch._dynamo" not in loaded and not set(VIDEO_STACK) & loaded
    assert (tmp_path / "out" / "separation.png").stat().st_size > 0


def with_video(tmp_path: Path) -> list[str]:
    """``--video`` (a textured clip without a face: the detector still runs on every frame)."""
    from pyro_avss.recipes.demo.mouth_video import write_roi_video

    frames = np.random.default_rng(0).integers(0, 255, (10, 96, 96, 3), dtype=np.uint8)
    write_roi_video(tmp_path / "source.mp4", frames, 25)
    return ["--video", str(tmp_path / "source.mp4"), "--detector", "mediapipe"]


def test_a_video_brings_the_face_mesh_but_not_matplotlib_or_the_rest_of_mediapipe(tmp_path):
    loaded = cli_modules(tmp_path, *separate_args(tmp_path, "--no-figure", *with_video(tmp_path)))
    assert "mediapipe.python.solutions.face_mesh" in loaded and "pyro_avss.video.track" in loaded
    assert "torch._dynamo" not in loaded
    assert not [m for m in loaded if m.split(".")[0] in ("matplotlib", "sounddevice")]
    assert not [m for m in loaded if m.startswith(("mediapipe.tasks", "mediapipe.python.solutions.d"))]


def test_the_face_mesh_import_leaves_all_of_mediapipe_importable():
    code = """
import sys
from pyro_avss.video.face_mesh_import import face_mesh_module
mesh = face_mesh_module()
assert "matplotlib" not in sys.modules and "mediapipe.tasks" not in sys.modules
import mediapipe as mp
from mediapipe.python.solutions import drawing_utils
assert mp.solutions.face_mesh is mesh and mp.__version__ and mp.tasks.vision.FaceLandmarker
assert mp.solutions.hands.Hands and "solutions" in dir(mp) and drawing_utils.DrawingSpec
"""
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert res.returncode == 0, res.stderr


def test_a_mediapipe_laid_out_otherwise_still_gives_the_face_mesh_the_ordinary_way():
    # the light import fails (here: a package it expects is not found); the face mesh then comes
    # from the ordinary import, so `auto` does not silently fall back to another detector
    code = """
import importlib.util, sys
real = importlib.util.find_spec
importlib.util.find_spec = lambda name, *a: None if name == "mediapipe.python.solutions" else real(name, *a)
from pyro_avss.video.face_mesh_import import face_mesh_module
mesh = face_mesh_module()
importlib.util.find_spec = real
assert mesh.FaceMesh and "mediapipe.python.solutions.drawing_utils" in sys.modules
"""
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert res.returncode == 0, res.stderr


def test_skip_existing_without_figure_keeps_outputs_that_have_none(tmp_path):
    args = separate_args(tmp_path, "--no-figure")
    cli_modules(tmp_path, *args)
    before = (tmp_path / "out" / "source1.wav").stat().st_mtime_ns
    res = subprocess.run([sys.executable, str(ROOT / "cli.py"), *args, "--skip-existing"],
                         capture_output=True, text=True)
    assert res.returncode == 0 and "1 kept from an earlier run" in res.stdout, res.stderr
    assert (tmp_path / "out" / "source1.wav").stat().st_mtime_ns == before


def test_decaying_adam_is_clipped_adam_without_clipping():
    torch.manual_seed(0)
    start = [torch.randn(3, 5), torch.randn(7)]
    ours = [p.clone().requires_grad_() for p in start]
    theirs = [p.clone().requires_grad_() for p in start]
    mine = [DecayingAdam([p], lr=0.4, lrd=0.95) for p in ours]
    reference = [pyro.optim.clipped_adam.ClippedAdam([p], lr=0.4, lrd=0.95, clip_norm=float("inf"))
                 for p in theirs]
    for step in range(30):
        for a, b in zip(ours, theirs):
            a.grad = torch.randn_like(a) * (step + 1)
            b.grad = a.grad.clone()
        for opt in mine + reference:
            opt.step()
        for a, b in zip(ours, theirs):
            assert torch.equal(a, b), step
    restored = DecayingAdam([ours[0]], lr=0.4, lrd=0.95)
    restored.load_state_dict(mine[0].state_dict())
    assert restored.lr == mine[0].lr and restored.state["step"] == 30


def test_one_face_detector_serves_every_video_of_a_batch(tmp_path, monkeypatch):
    from pyro_avss.recipes.demo.mouth_video import write_roi_video
    from pyro_avss.video import landmarks

    built = []
    real = landmarks.make_detector

    def counting(name):
        built.append(name)
        return real(name)

    monkeypatch.setattr(landmarks, "make_detector", counting)
    frames = np.random.default_rng(0).integers(0, 255, (8, 64, 64, 3), dtype=np.uint8)
    jobs = []
    for i in range(3):
        sf.write(tmp_path / f"clip{i}.wav", noisy(0.3, i), 16000)
        write_roi_video(tmp_path / f"clip{i}.mp4", frames, 25)
        jobs.append(SeparationJob(tmp_path / f"clip{i}.wav", [tmp_path / f"clip{i}.mp4"], f"clip{i}"))
    models = random_models(lip_dim=4)
    models.lips.fit([(torch.as_tensor(frames[..., 0]), torch.ones(8, dtype=torch.bool))])
    closed = []
    monkeypatch.setattr(run_separate._SharedDetector, "close",
                        lambda self: closed.append(self.detector))
    outcome = run_jobs(models, jobs, tmp_path / "out", SeparationSettings(steps=2, num_samples=1),
                       device="cpu", resample=False, force=False, detector="roi", progress=False,
                       echo=lambda _: None, figure=False)
    assert sorted(outcome.done) == ["clip0", "clip1", "clip2"] and not outcome.failures
    assert built == ["roi"] and len(closed) == 1 and closed[0] is not None
