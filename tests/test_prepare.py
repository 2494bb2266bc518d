"""The prepare pipeline: validation, lip-track caching, failures, resume, manifests."""

from __future__ import annotations

import csv
import os
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from pyro_avss.audio import load_audio
from pyro_avss.data.clips import Clip
from pyro_avss.data.corpora import CorpusProblem, scan_corpus
from pyro_avss.data.prepare import MANIFEST_COLUMNS, prepare_corpus, read_prepared_manifest
from pyro_avss.errors import InputError
from pyro_avss.video.decode import write_video
from pyro_avss.video.track import LipTrack

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
GRID = DATA / "grid"
needs_grid = pytest.mark.skipif(not (GRID / "s1").is_dir() or not (GRID / "s4").is_dir(),
                                reason=f"GRID clips not found in {GRID}")


def grid_clip(speaker: str, code: str) -> Clip:
    return Clip(f"{speaker}_{code}", speaker, GRID / speaker / "audio" / f"{code}.flac",
                GRID / speaker / "video" / f"{code}.mp4", "train")


def read_csv(path: Path) -> list[dict]:
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def synthetic_clips(root: Path) -> list[Clip]:
    """Clips that go wrong in different ways (all files generated here)."""
    rng = np.random.default_rng(0)
    root.mkdir(parents=True, exist_ok=True)
    audio = root / "one_second.wav"
    sf.write(audio, 0.1 * rng.standard_normal(16000).astype(np.float32), 16000)
    short = root / "short.mp4"  # 0.4 s of a flat picture: no face, shorter than the audio
    write_video(short, np.full((10, 64, 64, 3), 120, np.uint8))
    long = root / "long.mp4"  # 2 s of a flat picture: longer than the audio
    write_video(long, np.full((50, 64, 64, 3), 120, np.uint8))
    corrupt_video = root / "corrupt.mp4"
    corrupt_video.write_bytes(rng.integers(0, 256, 4000, dtype=np.uint8).tobytes())
    corrupt_audio = root / "corrupt.flac"
    corrupt_audio.write_bytes(b"fLaC" + rng.integers(0, 256, 500, dtype=np.uint8).tobytes())
    return [Clip("x_short", "x", audio, short), Clip("x_long", "x", audio, long),
            Clip("x_badvideo", "x", audio, corrupt_video),
            Clip("x_badaudio", "x", corrupt_audio, None),
            Clip("x_noaudio", "x", root / "missing.wav", None)]


@needs_grid
def test_prepare_caches_lips_reports_failures_and_resumes(tmp_path):
    good = [grid_clip("s1", "bbaf2n"), grid_clip("s1", "lrae3s"), grid_clip("s4", "bbaf2a")]
    libri = sorted((DATA / "librispeech" / "367").glob("*.flac"))[0]
    audio_only = Clip(libri.stem, "367", libri, None, None)
    clips = good[:2] + synthetic_clips(tmp_path / "src") + [good[2], audio_only]
    out = tmp_path / "prepared"
    problem = CorpusProblem("/some/list.csv", "audio file not found (z.wav)", 7, "z1")

    report = prepare_corpus(clips, out, detector="mediapipe", workers=1, progress=False,
                            problems=[problem])
    rows = {r["id"]: r for r in read_csv(out / "manifest.csv")}
    assert list(read_csv(out / "manifest.csv")[0]) == list(MANIFEST_COLUMNS)
    assert list(rows) == ["s1_bbaf2n", "s1_lrae3s", "x_short", "x_long", "s4_bbaf2a",
                          libri.stem]  # input order, bad clips left out
    failures = {f["id"]: f for f in read_csv(out / "failures.csv")}
    assert set(failures) == {"z1", "x_badvideo", "x_badaudio", "x_noaudio"}
    assert failures["x_badvideo"]["path"].endswith("corrupt.mp4")
    assert "file not found" in failures["x_noaudio"]["reason"]
    assert failures["z1"]["path"] == "/some/list.csv row 7"
    assert report.cached == 0 and len(report.rows) == 6 and len(report.failures) == 4

    for clip in good:
        row = rows[clip.id]
        assert float(row["face_ratio"]) >= 0.95 and int(row["num_samples"]) > 40000
        assert row["lips"] == f"lips/{clip.speaker}/{clip.id}.npz"
        track = LipTrack.load(out / row["lips"])
        assert track.num_frames == int(row["video_frames"]) and track.rois.shape[1:] == (64, 64)
    assert rows["s1_bbaf2n"]["split"] == "train" and rows["s1_bbaf2n"]["notes"] == ""
    assert rows["s1_bbaf2n"]["av_diff_s"] == "0.0220"
    assert rows["s1_lrae3s"]["video_frames"] == "74"  # one frame short: allowed, not noted
    assert "before the audio" in rows["x_short"]["notes"]
    assert "no face found" in rows["x_short"]["notes"] and rows["x_short"]["face_ratio"] == "0.0000"
    assert "longer than the audio" in rows["x_long"]["notes"]
    assert rows[libri.stem]["lips"] == "" and rows[libri.stem]["split"] in ("train", "dev", "test")
    assert report.face_ratio_by_speaker()["s1"] >= 0.95

    # resume: everything with a cache is skipped ...
    stamps = {p: p.stat().st_mtime_ns for p in (out / "lips").rglob("*.npz")}
    start = time.perf_counter()
    again = prepare_corpus(clips, out, detector="mediapipe", workers=1, progress=False)
    elapsed = time.perf_counter() - start
    assert again.cached == 5 and len(again.rows) == 6 and len(again.failures) == 3
    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps
    assert elapsed < 0.5 * report.wall_s
    assert read_csv(out / "manifest.csv") == list(rows.values())
    # ... and a damaged cache file is extracted again
    (out / "lips" / "s4" / "s4_bbaf2a.npz").write_bytes(b"broken")
    third = prepare_corpus(clips, out, detector="mediapipe", workers=1, progress=False)
    assert third.cached == 4
    assert LipTrack.load(out / "lips" / "s4" / "s4_bbaf2a.npz").face_ratio >= 0.95


@needs_grid
def test_prepare_decodes_container_audio(tmp_path):
    from test_corpora import make_grid_distribution

    root = make_grid_distribution(tmp_path / "GRID", codes=("bbaf2n",))
    clips, problems = scan_corpus(root)
    report = prepare_corpus(clips, tmp_path / "out", workers=1, progress=False)
    assert report.failures == []
    rows = read_prepared_manifest(report.manifest_path)
    row = rows[0]
    assert row["audio"] == tmp_path / "out" / "audio" / "s1" / "s1_bbaf2n.wav"
    assert row["video"] == root / "s1" / "bbaf2n.mpg" and row["lips"].is_file()
    assert row["align"] == root / "align" / "s1" / "bbaf2n.align"
    assert "audio decoded from the container" in row["notes"]
    assert abs(row["num_samples"] - 47648) < 1600 and row["sample_rate"] == 16000
    assert row["face_ratio"] >= 0.95 and row["video_frames"] == 75 and row["fps"] == 25.0
    cached = load_audio(row["audio"])
    reference = load_audio(GRID / "s1" / "audio" / "bbaf2n.flac")
    n = min(len(cached), len(reference))
    assert np.corrcoef(cached[:n], reference[:n])[0, 1] > 0.95


def test_prepare_resamples_audio_at_another_rate(tmp_path):
    path = tmp_path / "src" / "a" / "u1.wav"
    path.parent.mkdir(parents=True)
    t = np.arange(22050) / 22050
    sf.write(path, 0.5 * np.sin(2 * np.pi * 440 * t).astype(np.float32), 22050)
    report = prepare_corpus([Clip("a_u1", "a", path)], tmp_path / "out", workers=1,
                            progress=False)
    row = read_prepared_manifest(report.manifest_path)[0]
    assert row["audio"] == tmp_path / "out" / "audio" / "a" / "a_u1.wav"
    assert row["num_samples"] == 16000 and "resampled from 22050 Hz" in row["notes"]
    assert row["video"] is None and row["face_ratio"] is None
    assert sf.info(row["audio"]).samplerate == 16000


class KillsTheWorker:
    """Unpickling this in a worker process ends that process at once, as a decoder crash
    would."""

    def __reduce__(self):
        return os._exit, (3,)


@needs_grid
def test_prepare_with_worker_processes(tmp_path):
    """Two workers; a corrupt video fails, a clip that kills its worker fails alone."""
    src = synthetic_clips(tmp_path / "src")
    killer = Clip("x_killer", "x", src[0].audio, None, extra={"payload": KillsTheWorker()})
    clips = [grid_clip("s1", "bbaf2n"), killer, src[2], grid_clip("s4", "bbaf2a"),
             grid_clip("s1", "bbaf4p")]
    report = prepare_corpus(clips, tmp_path / "out", detector="mediapipe", workers=2,
                            progress=False)
    assert [r["id"] for r in report.rows] == ["s1_bbaf2n", "s4_bbaf2a", "s1_bbaf4p"]
    failures = {f["id"]: f["reason"] for f in report.failures}
    assert failures == {"x_killer": "worker process crashed on it",
                        "x_badvideo": failures["x_badvideo"]}
    assert "cannot open video" in failures["x_badvideo"]
    assert all(float(r["face_ratio"]) >= 0.95 for r in report.rows)
    assert (tmp_path / "out" / "lips" / "s4" / "s4_bbaf2a.npz").is_file()


def test_duplicate_ids_and_bad_prepared_manifest(tmp_path):
    path = tmp_path / "a.wav"
    sf.write(path, np.zeros(1600, np.float32), 16000)
    report = prepare_corpus([Clip("same", "a", path), Clip("same", "a", path)], tmp_path / "out",
                            workers=1, progress=False)
    assert len(report.rows) == 1 and report.failures[0]["reason"] == "duplicate clip id"
    with pytest.raises(InputError, match="run `prepare` first"):
        read_prepared_manifest(tmp_path / "none.csv")
    (tmp_path / "other.csv").write_text("id,speaker\nx,y\n")
    with pytest.raises(InputError, match="not a prepared manifest"):
        read_prepared_manifest(tmp_path / "other.csv")
