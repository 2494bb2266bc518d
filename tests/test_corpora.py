"""Corpus readers: GRID folders, GRID distribution, speaker folders, manifests, detection."""

from __future__ import annotations

import collections
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from pyro_avss.audio import load_audio, resample_audio
from pyro_avss.data.corpora import (hash_split, read_grid_distribution, read_grid_folders,
                                    read_manifest, read_speaker_folders, scan_corpus)
from pyro_avss.errors import InputError
from pyro_avss.video.decode import read_audio_track, read_video, write_video

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
needs_data = pytest.mark.skipif(not (DATA / "grid").is_dir() or not (DATA / "librispeech").is_dir(),
                                reason=f"shared data not found in {DATA}")


def touch_audio(path: Path, seconds: float = 0.1, rate: int = 16000) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, np.zeros(int(seconds * rate), np.float32), rate)
    return path


def touch_video(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    write_video(path, np.full((2, 16, 16, 3), 100, np.uint8))
    return path


def make_grid_distribution(root: Path, codes=("bbaf2n", "bbaf4p")) -> Path:
    """A tiny standard-layout GRID distribution muxed from shared clips: ``<root>/s1/<code>.mpg``
    with 44.1 kHz stereo MP2 audio inside, alignments under ``align/s1`` and ``s1/align``."""
    for k, code in enumerate(codes):
        video = read_video(DATA / "grid" / "s1" / "video" / f"{code}.mp4")
        audio = resample_audio(load_audio(DATA / "grid" / "s1" / "audio" / f"{code}.flac"),
                               16000, 44100)
        (root / "s1").mkdir(parents=True, exist_ok=True)
        write_video(root / "s1" / f"{code}.mpg", video.frames, 25, np.stack([audio, audio], 1),
                    44100)
        align = (root / "align" / "s1") if k == 0 else (root / "s1" / "align")
        align.mkdir(parents=True, exist_ok=True)
        (align / f"{code}.align").write_text(
            (DATA / "grid" / "s1" / "align" / f"{code}.align").read_text())
    return root


# --------------------------------------------------------------------------------------------
# GRID
# --------------------------------------------------------------------------------------------
@needs_data
def test_grid_folders_take_splits_from_the_manifest():
    problems = []
    clips = read_grid_folders(DATA / "grid", problems)
    assert len(clips) == 635 and problems == []
    counts = collections.Counter((c.speaker, c.split) for c in clips)
    assert counts == {("s1", "train"): 500, ("s1", "dev"): 100, ("s4", "train"): 28,
                      ("s4", "dev"): 7}
    by_id = {c.id: c for c in clips}
    clip = by_id["s1_bbaf2n"]
    assert clip.audio == DATA / "grid" / "s1" / "audio" / "bbaf2n.flac"
    assert clip.video == DATA / "grid" / "s1" / "video" / "bbaf2n.mp4"
    assert clip.align == DATA / "grid" / "s1" / "align" / "bbaf2n.align"
    assert sum(c.align is not None for c in clips if c.speaker == "s4") == 0
    assert all(c.video is not None for c in clips)
    assert clip.extra["transcript"] == "bin blue at f two now"
    assert "downscaled" in by_id["s4_bbaf2a"].extra["notes"]


def test_grid_folders_without_manifest_use_hash_split(tmp_path):
    root = tmp_path / "corpus" / "grid"
    touch_audio(root / "s9" / "audio" / "aaaa1a.flac")
    touch_video(root / "s9" / "video" / "aaaa1a.mp4")
    touch_video(root / "s9" / "video" / "orphan.mp4")  # no audio: reported
    touch_audio(root / "s9" / "audio" / "nvid0n.wav")  # no video: audio-only clip
    (root / "s9" / "align").mkdir()
    (root / "s9" / "align" / "aaaa1a.align").write_text("0 100 sil\n")
    problems = []
    clips = read_grid_folders(root, problems)
    assert [c.id for c in clips] == ["s9_aaaa1a", "s9_nvid0n"]
    assert [c.split for c in clips] == [hash_split("s9_aaaa1a"), hash_split("s9_nvid0n")]
    assert clips[0].align.name == "aaaa1a.align" and clips[1].video is None
    assert clips[1].extra["notes"] == "no video file"
    assert len(problems) == 1 and "orphan.mp4" in str(problems[0])
    assert "video without an audio file" in str(problems[0])
    assert scan_corpus(root)[0] == clips


def test_hash_split_is_deterministic_and_balanced():
    splits = [hash_split(f"spk_{i}") for i in range(4000)]
    assert splits == [hash_split(f"spk_{i}") for i in range(4000)]
    counts = collections.Counter(splits)
    assert abs(counts["train"] / 4000 - 0.8) < 0.03 and abs(counts["dev"] / 4000 - 0.1) < 0.02
    assert abs(counts["test"] / 4000 - 0.1) < 0.02


@needs_data
def test_grid_distribution_reader(tmp_path):
    root = make_grid_distribution(tmp_path / "GRID")
    clips, problems = scan_corpus(root)
    assert problems == [] and [c.id for c in clips] == ["s1_bbaf2n", "s1_bbaf4p"]
    assert all(c.audio == c.video and c.audio.suffix == ".mpg" for c in clips)
    assert clips[0].align == root / "align" / "s1" / "bbaf2n.align"
    assert clips[1].align == root / "s1" / "align" / "bbaf4p.align"
    assert read_grid_distribution(root) == clips
    # the audio inside the container comes back at 16 kHz, in sync with the original
    audio, offset = read_audio_track(clips[0].audio)
    reference = load_audio(DATA / "grid" / "s1" / "audio" / "bbaf2n.flac")
    assert abs(len(audio) - len(reference)) < 1600 and abs(offset) < 0.05
    n = min(len(audio), len(reference))
    lags = np.arange(-80, 81)
    corr = [np.dot(np.roll(audio[:n], -lag), reference[:n]) for lag in lags]
    assert abs(lags[int(np.argmax(corr))]) <= 16  # within 1 ms
    assert np.corrcoef(audio[:n], reference[:n])[0, 1] > 0.95


# --------------------------------------------------------------------------------------------
# speaker folders
# --------------------------------------------------------------------------------------------
@needs_data
def test_librispeech_speaker_folders():
    clips = read_speaker_folders(DATA / "librispeech")
    assert len(clips) == 200 and len({c.speaker for c in clips}) == 130
    assert collections.Counter(c.split for c in clips) == {"train": 180, "dev": 20}
    pool = [c for c in clips if "train-clean-100" in c.audio.parts]
    assert len(pool) == 120 and all(c.id.startswith(c.speaker + "-") for c in pool)
    assert all(c.video is None for c in clips)
    assert {c.extra["gender"] for c in clips} == {"F", "M"}
    assert scan_corpus(DATA / "librispeech")[0] == clips


def test_generic_speaker_folders(tmp_path):
    root = tmp_path / "voices"
    touch_audio(root / "alice" / "day1" / "001.wav")
    touch_audio(root / "bob" / "001.flac")
    touch_audio(root / "bob" / "bob_002.ogg")
    touch_audio(root / "stray.wav")
    (root / "bob" / "notes.txt").write_text("not audio")
    problems = []
    clips = read_speaker_folders(root, problems)
    assert [(c.id, c.speaker) for c in clips] == [("alice_001", "alice"), ("bob_001", "bob"),
                                                  ("bob_002", "bob")]
    assert all(c.split == hash_split(c.id) for c in clips)
    assert len(problems) == 1 and "outside a speaker folder" in problems[0].reason


# --------------------------------------------------------------------------------------------
# manifests
# --------------------------------------------------------------------------------------------
def test_manifest_bad_rows_are_reported_and_skipped(tmp_path):
    audio = touch_audio(tmp_path / "wav" / "a.wav")
    video = touch_video(tmp_path / "vid" / "a.mp4")
    absolute = touch_audio(tmp_path / "elsewhere" / "b.wav")
    lines = [
        "id,speaker,audio,video,split,align,gender",
        "ok1,s1,wav/a.wav,vid/a.mp4,train,,F",          # 1 good
        f"ok2,s2,{absolute},,VALID,missing.align,M",     # 2 good: absolute, alias, align dropped
        "bad1,s1,wav/none.wav,,train,,F",               # 3 missing audio
        "bad2,,wav/a.wav,,train,,F",                    # 4 empty speaker
        "bad3,s1,wav/a.wav,,train,,F,extra",            # 5 too many fields
        "bad4,s1,wav/a.wav",                            # 6 too few fields
        "bad5,s1,wav/a.wav,,holiday,,F",                # 7 unknown split
        "ok1,s1,wav/a.wav,,train,,F",                   # 8 duplicate id
        "bad6,s1,wav/a.wav,vid/none.mp4,train,,F",      # 9 missing video
        "ok3,s3,wav/a.wav,,,,",                         # 10 good, no split
    ]
    csv_path = tmp_path / "list.csv"
    csv_path.write_text("\n".join(lines) + "\n")
    clips, problems = read_manifest(csv_path)
    assert [c.id for c in clips] == ["ok1", "ok2", "ok3"]
    assert clips[0].audio == audio and clips[0].video == video and clips[0].split == "train"
    assert clips[0].extra == {"gender": "F"}
    assert clips[1].audio == absolute and clips[1].split == "dev" and clips[1].align is None
    assert "align file not found" in clips[1].extra["notes"]
    assert clips[2].split is None and clips[2].video is None
    reasons = {p.row: p.reason for p in problems}
    assert sorted(reasons) == [3, 4, 5, 6, 7, 8, 9]
    assert "audio file not found" in reasons[3] and "empty speaker" in reasons[4]
    assert "more than the header" in reasons[5] and "fewer fields" in reasons[6]
    assert "unknown split 'holiday'" in reasons[7] and "duplicate id ok1" in reasons[8]
    assert "video file not found" in reasons[9]
    assert str(problems[0]).startswith(f"{csv_path} row 3: ")
    assert scan_corpus(csv_path)[0] == clips


def test_manifest_that_cannot_be_read(tmp_path):
    with pytest.raises(InputError, match="manifest not found"):
        read_manifest(tmp_path / "none.csv")
    header = tmp_path / "header.csv"
    header.write_text("name,file\nx,y\n")
    with pytest.raises(InputError, match="lacks column"):
        read_manifest(header)
    binary = tmp_path / "binary.csv"
    binary.write_bytes(b"\xff\xfe\x00\x81" * 50)
    with pytest.raises(InputError, match="binary.csv"):
        read_manifest(binary)


@needs_data
def test_shared_manifests_resolve_paths_from_the_data_folder():
    grid, problems = scan_corpus(DATA / "manifests" / "grid.csv")
    assert len(grid) == 635 and problems == []
    assert grid[0].audio.is_file() and grid[0].video.is_file()
    assert grid[0].extra["transcript"]
    libri, problems = read_manifest(DATA / "manifests" / "librispeech.csv")
    assert len(libri) == 200 and problems == []


def test_scan_corpus_errors(tmp_path):
    with pytest.raises(InputError, match="corpus not found"):
        scan_corpus(tmp_path / "nothing")
    (tmp_path / "list.txt").write_text("x")
    with pytest.raises(InputError, match="folder or a .csv manifest"):
        scan_corpus(tmp_path / "list.txt")
    (tmp_path / "empty" / "sub").mkdir(parents=True)
    with pytest.raises(InputError, match="no clips found"):
        scan_corpus(tmp_path / "empty")
