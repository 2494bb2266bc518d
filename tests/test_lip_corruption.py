"""Missing and corrupted lips for the robustness benchmark: frames, tracks, manifests."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from pyro_avss.data.clips import Clip
from pyro_avss.data.lip_corruption import (LipCorruption, corrupt_target_lips, corrupt_track,
                                           corrupted_frames, source_track)
from pyro_avss.data.mixture_builder import build_mixture_specs
from pyro_avss.data.mixture_manifest import manifest_columns, read_mixture_manifest, write_mixture_manifest
from pyro_avss.data.mixtures import render_mixture
from pyro_avss.errors import InputError
from pyro_avss.video.track import LipTrack

from test_mixtures import _write

SR = 16000


def _runs(mask: np.ndarray) -> list[tuple[int, int]]:
    """``(start, length)`` of every run of True."""
    edges = np.diff(np.concatenate([[0], mask.astype(int), [0]]))
    starts, ends = np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)
    return list(zip(starts, ends - starts))


@pytest.mark.parametrize("frames,fraction,block", [(75, 0.3, 12), (75, 0.6, 12), (200, 0.3, 12),
                                                   (40, 0.95, 12), (10, 0.5, 1)])
def test_corrupted_frames_have_the_fraction_in_separate_blocks(frames, fraction, block):
    for seed in range(5):
        mask = corrupted_frames(frames, fraction, block, np.random.default_rng(seed))
        assert mask.sum() == round(fraction * frames)
        runs = _runs(mask)
        clean = frames - mask.sum()
        assert len(runs) == min(-(-mask.sum() // block), clean + 1)       # ⌈n / block⌉ blocks
        lengths = [n for _, n in runs]
        assert max(lengths) - min(lengths) <= 1                          # of nearly equal length
    a = corrupted_frames(200, 0.3, 12, np.random.default_rng(1))
    assert np.array_equal(a, corrupted_frames(200, 0.3, 12, np.random.default_rng(1)))
    assert not np.array_equal(a, corrupted_frames(200, 0.3, 12, np.random.default_rng(2)))
    assert not corrupted_frames(50, 0.001, 12, np.random.default_rng(0)).any()


def _track(n=75, size=8, seed=0, found=None) -> LipTrack:
    rng = np.random.default_rng(seed)
    found = np.ones(n, bool) if found is None else found
    rois = rng.integers(60, 200, size=(n, size, size)).astype(np.uint8) * found[:, None, None]
    marks = rng.normal(size=(n, 4, 2)).astype(np.float32)
    marks[~found] = np.nan
    return LipTrack(rois, marks, np.arange(n) / 25.0, 25.0, found, "test")


def test_each_kind_changes_exactly_the_corrupted_frames_and_says_so_only_when_missing():
    track = _track()
    donor = _track(seed=3, found=np.arange(75) % 5 != 0)
    out = {kind: corrupt_track(track, LipCorruption(kind, 0.3), np.random.default_rng(7), donor)
           for kind in ("missing", "noise", "swap")}
    bad = ~out["missing"].face_found
    assert bad.sum() == round(0.3 * 75) and len(_runs(bad)) == 2          # blocks of 0.5 s at 25 fps
    assert np.all(out["missing"].rois[bad] == 0) and np.isnan(out["missing"].landmarks[bad]).all()
    for kind, t in out.items():                   # the same frames for every kind, the rest intact
        changed = np.any(t.rois != track.rois, axis=(1, 2))
        assert np.array_equal(changed, bad), kind
        assert t.check() is None and t.rois.dtype == np.uint8
        if kind != "missing":
            assert t.face_found.all()                                    # the model is not told
    faces = np.flatnonzero(donor.face_found)
    assert np.array_equal(out["swap"].rois[bad], donor.rois[faces[np.flatnonzero(bad) % len(faces)]])
    noisy = out["noise"].rois[bad].astype(float)
    assert abs(noisy.mean() - track.rois.mean()) < 5 and abs(noisy.std() - track.rois.std()) < 5
    assert np.array_equal(track.rois, _track().rois) and track.face_found.all()  # input untouched
    with pytest.raises(InputError, match="swap needs a donor"):
        corrupt_track(track, LipCorruption("swap", 0.3), np.random.default_rng(0))
    with pytest.raises(InputError, match="mouth ROIs"):
        corrupt_track(track, LipCorruption("swap", 0.3), np.random.default_rng(0), _track(size=6))


def test_corruption_text_is_checked():
    assert LipCorruption.parse("missing:0.6") == LipCorruption("missing", 0.6)
    assert str(LipCorruption.parse(" swap:0.30 ")) == "swap:0.3"
    assert LipCorruption.parse("") is None and LipCorruption.parse("intact") is None
    for bad in ("missing", "blur:0.3", "noise:0", "noise:1.5", "noise:lots"):
        with pytest.raises(ValueError, match="lip corruption"):
            LipCorruption.parse(bad)


@pytest.fixture
def av_specs(tmp_path):
    """One-talker specs of speakers a (3 clips) and b (1 clip) with (unread) videos, 2 SNRs."""
    t = np.arange(8000) / SR
    clips = [Clip(f"{spk}_{i}", spk, _write(tmp_path / f"{spk}_{i}.wav", 0.3 * np.sin(2 * np.pi * f * t)),
                  tmp_path / f"{spk}_{i}.mp4")
             for i, (spk, f) in enumerate([("a", 150), ("a", 160), ("a", 170), ("b", 220)])]
    noise = _write(tmp_path / "noise.wav", np.random.default_rng(0).standard_normal(20000) * 0.05)
    return build_mixture_specs(clips, [("n", noise)], [0.0, 5.0], seed=3), tmp_path


def test_target_lips_round_trip_through_the_manifest_and_leave_the_audio_alone(av_specs):
    specs, tmp = av_specs
    plain = write_mixture_manifest(specs, tmp / "plain.csv")
    assert plain.read_text().splitlines()[0].split(",") == manifest_columns(1)   # format unchanged
    swapped = corrupt_target_lips(specs[:6], "swap:0.3")
    for spec in swapped:
        donor = Path(spec.sources[0].lips_donor)
        assert donor.stem != spec.sources[0].id and donor.stem.startswith(spec.sources[0].speaker)
    assert swapped == corrupt_target_lips(specs[:6], "swap:0.3")                # deterministic
    path = write_mixture_manifest(swapped, tmp / "lists" / "swap.csv")
    back = read_mixture_manifest(path)
    assert [s.sources[0] for s in back] == [s.sources[0] for s in swapped]
    for a, b in zip(specs, back):                             # the reference is not touched
        ra, rb = render_mixture(a), render_mixture(b)
        assert np.array_equal(ra.mixture, rb.mixture) and np.array_equal(ra.sources, rb.sources)
    with pytest.raises(InputError, match="no other clip of speaker 'b'"):
        corrupt_target_lips(specs, "swap:0.3")
    assert corrupt_target_lips(swapped, "intact")[0].sources[0].lips == ""


def test_bad_lip_columns_name_the_row(av_specs):
    specs, tmp = av_specs
    path = write_mixture_manifest(corrupt_target_lips(specs, "missing:0.3"), tmp / "m.csv")
    text = path.read_text()
    for old, new, message in (("missing:0.3", "blur:0.3", "lip corruption 'blur:0.3'"),
                              ("missing:0.3", "swap:0.3", "lips_donor must be given")):
        broken = tmp / "broken.csv"
        broken.write_text(text.replace(old, new, 1))
        with pytest.raises(InputError, match=f"broken.csv row 2: .*{message}"):
            read_mixture_manifest(broken)


def test_harness_tracks_are_corrupted_per_clip_deterministically(av_specs):
    specs, _ = av_specs
    tracks = {spec.sources[0].video: _track(seed=i) for i, spec in enumerate(specs)}
    load = lambda video: None if video is None else tracks[video]            # noqa: E731
    missing = corrupt_target_lips(specs, "missing:0.6")
    noise = corrupt_target_lips(specs, "noise:0.6")
    first = source_track(missing[0], 0, load)
    assert first.face_found.mean() == pytest.approx(0.4, abs=0.01)
    assert np.array_equal(first.rois, source_track(missing[0], 0, load).rois)
    # the same clip at another SNR: the same frames; the noise kind: the same frames too
    assert missing[0].sources[0].id == missing[1].sources[0].id
    assert np.array_equal(source_track(missing[1], 0, load).face_found, first.face_found)
    changed = np.any(source_track(noise[0], 0, load).rois != tracks[specs[0].sources[0].video].rois, axis=(1, 2))
    assert np.array_equal(changed, ~first.face_found)
    # another clip, another draw; an intact source gets its track as loaded
    assert not np.array_equal(source_track(missing[2], 0, load).face_found, first.face_found)
    assert source_track(specs[0], 0, load) is tracks[specs[0].sources[0].video]
    assert source_track(replace(missing[0], sources=[replace(missing[0].sources[0], video=None)]), 0,
                        load) is None


def test_mix_command_writes_the_lips_column_or_says_why_not(tmp_path):
    from click.testing import CliRunner

    from pyro_avss.cli import main

    t = np.arange(8000) / SR
    for spk, f in (("a", 150), ("b", 220)):
        _write(tmp_path / "corpus" / spk / "u1.wav", 0.3 * np.sin(2 * np.pi * f * t))
    _write(tmp_path / "noise" / "hum.wav", np.random.default_rng(0).standard_normal(20000) * 0.05)
    base = ["mix", "--targets", str(tmp_path / "corpus"), "--noise", str(tmp_path / "noise"),
            "--split", "", "--snr", "0", "--force", "--out"]
    res = CliRunner().invoke(main, base + [str(tmp_path / "plain.csv")])
    assert res.exit_code == 0, res.output
    assert "source1_lips" not in (tmp_path / "plain.csv").read_text()
    res = CliRunner().invoke(main, base + [str(tmp_path / "bad.csv"), "--lips", "blur:0.3"])
    assert res.exit_code == 2 and "lip corruption 'blur:0.3'" in res.output
    res = CliRunner().invoke(main, base + [str(tmp_path / "audio.csv"), "--lips", "missing:0.3"])
    assert res.exit_code == 2 and "the target has no video" in res.output
