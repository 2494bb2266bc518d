"""The synthetic demo corpus: layout, decodable files, determinism, speaker and lip cues."""

from __future__ import annotations

import csv
import math
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

from pyro_avss.audio import load_audio
from pyro_avss.recipes.demo.corpus import DemoCorpus, generate_demo_corpus
from pyro_avss.errors import InputError

SR, FPS, ROI = 16000, 25, 64
DURATION = 1.23  # not a whole number of frames: the video must round up to 31 frames
SPEAKERS = 3
UTTERANCES = 3


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> DemoCorpus:
    return generate_demo_corpus(tmp_path_factory.mktemp("demo"), num_speakers=SPEAKERS,
                                utterances_per_speaker=UTTERANCES, dev_per_speaker=1,
                                duration_s=DURATION, noise_seconds=3.0, seed=7, progress=False)


def _rows(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def _decode(path: Path) -> tuple[list[Fraction], np.ndarray, av.video.stream.VideoStream]:
    """Frame times (exact fractions) and ``(T, H, W)`` grey frames of a video."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        times, grey = [], []
        for frame in container.decode(stream):
            times.append(frame.pts * frame.time_base)
            grey.append(frame.to_ndarray(format="gray"))
        return times, np.stack(grey), stream


def _median_f0(x: np.ndarray, sr: int = SR) -> float:
    """Median autocorrelation pitch (Hz) over the loud 40 ms frames of ``x``."""
    size, hop = int(0.04 * sr), int(0.02 * sr)
    frames = np.stack([x[i:i + size] for i in range(0, len(x) - size, hop)])
    energy = (frames ** 2).mean(axis=1)
    frames = frames[energy > 0.1 * energy.max()]
    frames = frames - frames.mean(axis=1, keepdims=True)
    ac = np.fft.irfft(np.abs(np.fft.rfft(frames, 2 * size)) ** 2)[:, :size]
    low, high = sr // 400, sr // 60
    lags = low + np.argmax(ac[:, low:high], axis=1)
    return float(np.median(sr / lags))


def test_layout_manifest_and_readme(corpus):
    rows = _rows(corpus.manifest)
    assert list(rows[0]) == ["id", "speaker", "split", "audio", "video"]
    assert len(rows) == SPEAKERS * UTTERANCES == len(corpus.clips)
    assert sorted({r["speaker"] for r in rows}) == corpus.speakers == ["spk1", "spk2", "spk3"]
    for speaker in corpus.speakers:
        splits = [r["split"] for r in rows if r["speaker"] == speaker]
        assert splits == ["train"] * (UTTERANCES - 1) + ["dev"]
    assert len({r["id"] for r in rows}) == len(rows)
    for row in rows:
        assert not Path(row["audio"]).is_absolute()
        assert (corpus.root / row["audio"]).is_file() and row["audio"].endswith(".wav")
        assert (corpus.root / row["video"]).is_file() and row["video"].endswith(".mp4")
    noise_rows = _rows(corpus.noise_csv)
    assert [r["name"] for r in noise_rows] == [n for n, _ in corpus.noises]
    assert 2 <= len(noise_rows) <= 3
    assert all((corpus.root / r["audio"]).is_file() for r in noise_rows)
    assert "SYNTHETIC" in (corpus.root / "README.txt").read_text()


def test_audio_loads_with_the_right_length_and_level(corpus):
    for clip in corpus.clips:
        x = load_audio(clip.audio, SR)
        assert x.shape == (round(DURATION * SR),)
        peak_db = 20 * np.log10(np.max(np.abs(x)))
        assert -7.0 < peak_db < -0.4, (clip.id, peak_db)
    for name, path in corpus.noises:
        noise = load_audio(path, SR)
        assert noise.shape == (3 * SR,) and np.std(noise) > 1e-3, name


def test_video_frames_are_timed_exactly(corpus):
    expected = math.ceil(DURATION * FPS)
    for clip in corpus.clips[:: UTTERANCES]:
        times, grey, stream = _decode(clip.video)
        assert stream.codec_context.name == "h264"
        assert stream.codec_context.pix_fmt == "yuv420p"
        assert grey.shape == (expected, ROI, ROI)
        assert times == [Fraction(i, FPS) for i in range(expected)]
        assert grey.std(axis=(1, 2)).min() > 5  # a picture, not a blank frame


def test_same_seed_same_files_other_seed_other_files(tmp_path):
    def make(folder, seed):
        c = generate_demo_corpus(tmp_path / folder, num_speakers=1, utterances_per_speaker=2,
                                 dev_per_speaker=1, duration_s=1.0, noise_seconds=1.0,
                                 seed=seed, progress=False)
        audio = [load_audio(p.audio) for p in c.clips] + [load_audio(p) for _, p in c.noises]
        return audio, [_decode(p.video)[1] for p in c.clips]

    (audio, video), (audio_again, video_again), (audio_other, video_other) = (
        make("a", 3), make("b", 3), make("c", 4))
    assert all(np.array_equal(x, y) for x, y in zip(audio, audio_again))
    assert all(np.array_equal(x, y) for x, y in zip(video, video_again))
    assert not any(np.array_equal(x, y) for x, y in zip(audio, audio_other))
    assert not any(np.array_equal(x, y) for x, y in zip(video, video_other))


def test_speakers_are_separated_by_pitch(corpus):
    medians = {s: [_median_f0(load_audio(c.audio)) for c in corpus.clips if c.speaker == s]
               for s in corpus.speakers}
    ordered = [medians[s] for s in corpus.speakers]  # spk1 < spk2 < spk3 by construction
    for low, high in zip(ordered, ordered[1:]):
        assert max(low) * 1.1 < min(high), medians
    for values, nominal in zip(ordered, (105.0, 170.0, 230.0)):
        assert all(abs(v / nominal - 1) < 0.2 for v in values), medians


def test_mouth_opening_follows_the_sound(corpus):
    samples_per_frame = SR // FPS
    for clip in corpus.clips:
        x = load_audio(clip.audio)
        _, grey, _ = _decode(clip.video)
        dark = (grey < 60).sum(axis=(1, 2)).astype(float)
        rms = np.array([np.sqrt(np.mean(x[i * samples_per_frame:(i + 1) * samples_per_frame] ** 2))
                        for i in range(len(dark))])
        r = np.corrcoef(dark, rms)[0, 1]
        assert r > 0.5, (clip.id, r)
        assert dark.max() > 4 * max(dark.min(), 1.0)  # the mouth really opens and closes


def test_clatter_is_non_stationary_and_fan_is_not(corpus):
    def frame_level_spread(name):
        x = load_audio(dict(corpus.noises)[name])
        power = np.mean(x[: len(x) // 640 * 640].reshape(-1, 640) ** 2, axis=1)  # 40 ms
        level = 10 * np.log10(power + 1e-12)
        return np.percentile(level, 95) - np.percentile(level, 5)

    assert frame_level_spread("fan") < 3.0
    assert frame_level_spread("babble") > frame_level_spread("fan")
    assert frame_level_spread("clatter") > 12.0


def test_existing_corpus_is_not_overwritten_silently(tmp_path):
    kwargs = dict(num_speakers=1, utterances_per_speaker=1, dev_per_speaker=0, duration_s=1.0,
                  noise_seconds=1.0, progress=False)
    generate_demo_corpus(tmp_path, **kwargs)
    with pytest.raises(InputError, match="manifest.csv"):
        generate_demo_corpus(tmp_path, **kwargs)
    again = generate_demo_corpus(tmp_path, overwrite=True, **kwargs)
    assert len(_rows(again.manifest)) == 1


@pytest.mark.parametrize("bad", [dict(num_speakers=0), dict(num_speakers=99),
                                 dict(utterances_per_speaker=3, dev_per_speaker=3),
                                 dict(roi_size=63), dict(duration_s=0.1), dict(fps=0)])
def test_bad_arguments_are_refused(tmp_path, bad):
    with pytest.raises(ValueError):
        generate_demo_corpus(tmp_path, progress=False, **bad)
    assert not (tmp_path / "manifest.csv").exists()
