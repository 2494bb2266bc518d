"""The mouth gate: video frames whose mouth region is not mouth-like count as frames without a
face, so that a corrupted or occluded region does not steer separation with confident, wrong lips."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch

from pyro_avss.audio import StftConfig
from pyro_avss.checkpoint import SpeechModels
from pyro_avss.data.lip_corruption import LipCorruption, corrupt_track
from pyro_avss.inference.inputs import aligned_lips
from pyro_avss.nets.lips import LipProjection
from pyro_avss.nets.vae import DecoderBank, SpeechEncoder
from pyro_avss.video.track import LipTrack

SIDE = 16


def mouth_track(frames: int, seed: int) -> LipTrack:
    """A clip of synthetic mouths: a few smooth shapes whose weights change from frame to frame
    (a low-dimensional family, as real mouth regions are), plus a little sensor noise."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:SIDE, 0:SIDE] / (SIDE - 1)
    shapes = np.stack([np.exp(-((x - 0.5) ** 2 / 0.05 + (y - c) ** 2 / w)) for c, w in
                       ((0.5, 0.01), (0.4, 0.004), (0.6, 0.004), (0.5, 0.04))])       # (4, S, S)
    weights = rng.uniform(0.2, 1.0, (frames, 4))
    level = rng.uniform(60, 90)                        # each clip its own lighting
    rois = level + 120 * np.einsum("nk,kij->nij", weights, shapes) + rng.normal(0, 1.5, (frames, SIDE, SIDE))
    return LipTrack(rois=np.clip(np.round(rois), 0, 255).astype(np.uint8),
                    landmarks=np.zeros((frames, 0, 2), np.float32), timestamps=np.arange(frames) / 25.0,
                    fps=25.0, face_found=np.ones(frames, bool), detector="test")


def fitted_projection(sigmas: float = 5.0) -> LipProjection:
    tracks = [mouth_track(60, seed) for seed in range(12)]
    proj = LipProjection(dim=4, downsample=8).fit((t.rois, t.face_found) for t in tracks)
    return proj.fit_gate(((t.rois, t.face_found) for t in tracks), sigmas)


def test_the_gate_passes_unseen_mouths_and_stops_pixel_noise():
    proj = fitted_projection()
    assert proj.gated and math.isfinite(float(proj.gate_threshold))
    clean = mouth_track(200, seed=99)                               # a clip the gate never saw
    assert proj.mouth_like(clean.rois, clean.face_found).float().mean() >= 0.99
    noisy = corrupt_track(clean, LipCorruption("noise", 0.3), np.random.default_rng(0))
    corrupted = (noisy.rois != clean.rois).reshape(200, -1).any(-1)
    passed = proj.mouth_like(noisy.rois, noisy.face_found).numpy()
    assert corrupted.sum() == 60 and not passed[corrupted].any()   # every noise frame stopped
    assert passed[~corrupted].mean() >= 0.99                        # the median centre is robust to them


def test_frames_without_a_face_stay_without_one_and_no_gate_changes_nothing():
    proj = fitted_projection()
    track = mouth_track(30, seed=5)
    found = torch.ones(30, dtype=torch.bool)
    found[:10] = False
    assert not proj.mouth_like(track.rois, found)[:10].any()
    open_gate = fitted_projection(sigmas=0.0)
    assert not open_gate.gated
    noisy = corrupt_track(track, LipCorruption("noise", 0.5), np.random.default_rng(1))
    assert torch.equal(open_gate.mouth_like(noisy.rois, noisy.face_found), torch.ones(30, dtype=torch.bool))
    with pytest.raises(RuntimeError, match="fit must be called"):
        LipProjection(dim=4, downsample=8).fit_gate([(track.rois, track.face_found)], 5.0)


def test_stopped_frames_reach_the_model_as_frames_without_a_face_unless_the_gate_is_off():
    proj = fitted_projection()
    clean = mouth_track(100, seed=7)
    noisy = corrupt_track(clean, LipCorruption("noise", 0.3), np.random.default_rng(2))
    corrupted = (noisy.rois != clean.rois).reshape(100, -1).any(-1)
    times = StftConfig().frame_times(250)                          # 4 s of STFT frames over 100 video frames
    _, present = aligned_lips(noisy, proj, times)
    from pyro_avss.video.align import align_to_frames
    index, _ = align_to_frames(noisy.timestamps, times, noisy.face_found, 1 / 25)
    on_bad = torch.as_tensor(corrupted[index])
    _, ungated = aligned_lips(noisy, proj, times, gate=False)
    assert ungated[on_bad].min() == 1 and present[on_bad].sum() == 0
    kept = ~on_bad & (ungated > 0)                                  # frames in the video's time span
    assert present[kept].mean() >= 0.97


def test_the_gate_is_kept_in_the_model_file_and_older_files_load_without_one(tmp_path):
    models = SpeechModels(SpeechEncoder(33, 4, 16, 4), DecoderBank(1, 33, 4, 16, 4), fitted_projection(),
                          StftConfig())
    models.save(tmp_path / "gated.pt")
    raw = torch.load(tmp_path / "gated.pt", weights_only=True)
    assert raw["format_version"] == 5
    back = SpeechModels.load(tmp_path / "gated.pt")
    assert torch.equal(back.lips.gate_threshold, models.lips.gate_threshold)
    del raw["lip_projection"]["gate_threshold"]                     # as written before the gate
    raw["format_version"] = 2
    torch.save(raw, tmp_path / "old.pt")
    old = SpeechModels.load(tmp_path / "old.pt")
    assert not old.lips.gated and old.format_version == 2


def test_separation_reads_the_gate_setting():
    from pyro_avss.inference.separation import _Chunk, _chunk_inputs, _read_tracks

    proj = fitted_projection()
    models = SpeechModels(SpeechEncoder(513, 4, 16, 4), DecoderBank(1, 513, 4, 16, 4), proj, StftConfig())
    clean = mouth_track(75, seed=3)
    noisy = corrupt_track(clean, LipCorruption("noise", 0.3), np.random.default_rng(3))
    audio = np.random.default_rng(0).normal(0, 0.1, 48000).astype(np.float32)
    chunk = _Chunk(0, 0, 0, 48000, models.stft.num_frames(48000))
    gated = _chunk_inputs(models, audio, _read_tracks(models, [noisy], True, "recording 1"), chunk)[3]
    ungated = _chunk_inputs(models, audio, _read_tracks(models, [noisy], False, "recording 1"), chunk)[3]
    dropped = ((ungated > 0) & (gated == 0)).float().mean()
    assert (gated <= ungated).all() and 0.2 < dropped < 0.4       # the 30 % noise frames go


def test_separation_warns_when_the_gate_stops_most_of_a_video():
    from pyro_avss.inference.inputs import gated_tracks

    proj = fitted_projection()
    clean = mouth_track(50, seed=11)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        gated_tracks([clean], proj, "recording 1")                  # a few stopped frames: quiet
    unlike = corrupt_track(clean, LipCorruption("noise", 0.8), np.random.default_rng(4))
    with pytest.warns(UserWarning, match=r"source 2: the mouth gate treats \d+% .*lip_gate=false"):
        gated_tracks([clean, unlike], proj, "recording 1")


@pytest.mark.parametrize("sigmas", [5.0, 0.0])
def test_fit_gives_the_universal_model_its_gate_from_the_training_clips(tmp_path, sigmas):
    from test_training import synthetic_rows, tiny_config

    from pyro_avss.inference.training import fit

    rows = synthetic_rows(tmp_path)
    tracks = []
    for i, row in enumerate(rows):                    # 0.6 s clips: 15 video frames each
        track = mouth_track(15, seed=100 + i)
        track.save(tmp_path / f"{row['id']}.npz")
        row["lips"] = str(tmp_path / f"{row['id']}.npz")
        tracks.append(track)
    cfg = tiny_config("model.use_video=true", "lips.front_end=pca", "lips.dim=4", "lips.downsample=8",
                      "model.prior=standard", "train.epochs=1", f"lips.gate_sigmas={sigmas}")
    models = fit(cfg, tmp_path / "run", rows=rows, progress=False)
    train = [t for t, r in zip(tracks, rows) if r["split"] == "train"]
    expected = LipProjection(dim=4, downsample=8).fit((t.rois, t.face_found) for t in train)
    expected.fit_gate(((t.rois, t.face_found) for t in train), sigmas)
    assert models.lips.gated == (sigmas > 0)
    assert torch.allclose(models.lips.gate_threshold, expected.gate_threshold)
    saved = SpeechModels.load(tmp_path / "run" / "model.pt")
    assert torch.equal(saved.lips.gate_threshold, models.lips.gate_threshold)
