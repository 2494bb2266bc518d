"""``prepare`` for one clip: validate (and if needed decode, resample and cache) its audio,
extract or reuse the cached lip track of its video, and compare the two durations; the result is
the clip's row of the prepared manifest (:mod:`.prepare`)."""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np
import soundfile as sf

from ..audio import AUDIO_SUFFIXES, load_audio, save_audio
from ..errors import InputError
from ..video.decode import read_audio_track
from ..video.track import LipTrack, extract_lip_track
from .clips import Clip
from .corpora import hash_split

LOW_FACE_RATIO = 0.95
"""A video whose face is found on fewer frames than this gets a note in the manifest."""


def _rel(path: Path, out_dir: Path) -> str:
    """``path`` relative to ``out_dir`` if inside it, else absolute (POSIX separators)."""
    try:
        return path.relative_to(out_dir).as_posix()
    except ValueError:
        return Path(path).absolute().as_posix()


def lips_path(out_dir: Path, clip: Clip) -> Path:
    """Where the lip track of a clip is cached."""
    return Path(out_dir) / "lips" / clip.speaker / f"{clip.id}.npz"


def audio_cache_path(out_dir: Path, clip: Clip) -> Path:
    """Where decoded or resampled audio of a clip is cached."""
    return Path(out_dir) / "audio" / clip.speaker / f"{clip.id}.wav"


def _cached_audio(path: Path, sample_rate: int) -> np.ndarray | None:
    if not path.is_file():
        return None
    try:
        return load_audio(path, sample_rate)
    except InputError:
        return None


def _write_wav(path: Path, audio: np.ndarray, sample_rate: int, notes: list[str]) -> None:
    """Cache ``audio`` as a 16-bit wav, atomically; a peak-normalising gain goes to ``notes``."""
    tmp = path.with_name(f"{path.stem}.tmp{os.getpid()}.wav")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        gain = save_audio(tmp, audio, sample_rate, overwrite=True)
    os.replace(tmp, path)
    if gain != 1.0:
        notes.append(f"cached audio scaled by {gain:.3f} to avoid clipping")


def prepare_audio(clip: Clip, out_dir: Path, sample_rate: int = 16000
                  ) -> tuple[Path, int, list[str]]:
    """Validate (and if needed decode/resample and cache) the audio of a clip.

    :returns: ``(path of a sample_rate mono file, num_samples, notes)``.
    :raises InputError: unreadable or empty audio.
    """
    source = Path(clip.audio)
    cache = audio_cache_path(out_dir, clip)
    notes: list[str] = []
    if source.suffix.lower() in AUDIO_SUFFIXES:
        if not source.is_file():
            raise InputError(source, "file not found")
        try:
            rate = sf.info(str(source)).samplerate
        except Exception as exc:
            raise InputError(source, f"cannot decode audio ({exc})") from None
        if rate == sample_rate:
            return source, len(load_audio(source, sample_rate)), notes
        notes.append(f"resampled from {rate} Hz")
        audio = _cached_audio(cache, sample_rate)
        if audio is None:
            audio = load_audio(source, sample_rate, resample=True)
            cache.parent.mkdir(parents=True, exist_ok=True)
            _write_wav(cache, audio, sample_rate, notes)
        return cache, len(audio), notes
    audio = _cached_audio(cache, sample_rate)
    if audio is None:
        audio, offset = read_audio_track(source, sample_rate)
        if len(audio) == 0:
            raise InputError(source, "audio track is empty")
        if abs(offset) > 0.5 / sample_rate:
            notes.append(f"audio starts {offset * 1000:+.1f} ms after the video (compensated)")
        cache.parent.mkdir(parents=True, exist_ok=True)
        _write_wav(cache, audio, sample_rate, notes)
    notes.append("audio decoded from the container")
    return cache, len(audio), notes


def _cached_track(path: Path, detector: str, roi_size: int) -> LipTrack | None:
    """A cached track usable for this run, or None (missing, corrupt, other settings)."""
    if not path.is_file():
        return None
    try:
        track = LipTrack.load(path)
    except InputError:
        return None
    if track.rois.shape[1] != roi_size or detector not in ("auto", track.detector):
        return None
    return track


def has_cache_files(clip: Clip, out_dir: Path) -> bool:
    """Whether a clip has cached work to reuse: its lip track (video clips) or its decoded
    audio (audio-only clips). Plain audio-only clips have none: they are validated anew."""
    if clip.video is not None:
        return lips_path(out_dir, clip).is_file()
    return audio_cache_path(out_dir, clip).is_file()


def _duration_notes(track: LipTrack, audio_s: float) -> list[str]:
    diff, period = track.duration - audio_s, 1.0 / track.fps
    notes = []
    if diff < -period:
        notes.append(f"video ends {-diff:.3f} s before the audio "
                     f"({-diff / period:.1f} frames missing)")
    elif diff > period:
        notes.append(f"video {diff:.3f} s longer than the audio (extra frames unused)")
    if track.face_ratio == 0:
        notes.append("no face found in any frame")
    elif track.face_ratio < LOW_FACE_RATIO:
        notes.append(f"face found on {track.face_ratio:.1%} of frames")
    return notes


def prepare_clip(clip: Clip, out_dir: Path, detector="auto", roi_size: int = 64,
                 sample_rate: int = 16000, cached_only: bool = False) -> tuple[dict, bool] | None:
    """Prepare one clip (see module doc).

    :param detector: detector name, or a detector object to reuse (its name is used for the
        cache check).
    :param cached_only: return ``None`` instead of extracting a lip track that is not cached.
    :returns: ``(manifest row, lips_from_cache)``.
    :raises InputError: unusable audio or video.
    """
    out_dir = Path(out_dir)
    lips = lips_path(out_dir, clip)
    name = detector if isinstance(detector, str) else detector.name
    track = _cached_track(lips, name, roi_size) if clip.video is not None else None
    if cached_only and clip.video is not None and track is None:
        return None
    audio_path, num_samples, notes = prepare_audio(clip, out_dir, sample_rate)
    audio_s = num_samples / sample_rate
    row = {"id": clip.id, "speaker": clip.speaker, "split": clip.split or hash_split(clip.id),
           "audio": _rel(audio_path, out_dir), "video": "", "lips": "",
           "num_samples": num_samples, "sample_rate": sample_rate,
           "duration_s": f"{audio_s:.4f}", "video_frames": "", "fps": "", "face_ratio": "",
           "notes": "", "align": _rel(Path(clip.align), out_dir) if clip.align else "",
           "av_diff_s": ""}
    from_cache = track is not None
    if clip.video is not None:
        if track is None:
            track = extract_lip_track(clip.video, detector, roi_size)
            track.save(lips)
        notes += _duration_notes(track, audio_s)
        row.update(video=_rel(Path(clip.video), out_dir), lips=_rel(lips, out_dir),
                   video_frames=track.num_frames, fps=f"{track.fps:g}",
                   face_ratio=f"{track.face_ratio:.4f}",
                   av_diff_s=f"{track.duration - audio_s:.4f}")
    source_notes = str(clip.extra.get("notes", "") or "").strip()
    row["notes"] = "; ".join(([source_notes] if source_notes else []) + notes)
    return row, from_cache


def attempt_clip(clip: Clip, out_dir: Path, detector, roi_size: int, sample_rate: int,
                 cached_only: bool = False) -> tuple | None:
    """Run :func:`prepare_clip`: ``("ok", row, from_cache)``, ``("fail", failure row)`` for any
    error, or ``None`` (``cached_only`` and nothing cached)."""
    try:
        result = prepare_clip(clip, out_dir, detector, roi_size, sample_rate, cached_only)
        return None if result is None else ("ok", *result)
    except InputError as exc:
        return "fail", {"id": clip.id, "path": exc.source, "reason": exc.problem}
    except Exception as exc:  # an unexpected library error must not stop the batch
        text = " ".join(str(exc).split()) or type(exc).__name__
        return "fail", {"id": clip.id, "path": str(clip.video or clip.audio),
                        "reason": f"{type(exc).__name__}: {text}"}
