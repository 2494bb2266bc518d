"""The inputs of ``cli.py separate``: recordings, their videos and their names, checked up front.

A :class:`SeparationJob` is one mixture with one video (or None) per source and the folder name
its outputs get (:func:`safe_name`); :func:`jobs_from_inputs` builds them from files, folders,
globs and CSV manifests and refuses duplicated or unsafe names before any work starts;
:func:`load_track` reads a video's lip track (or a cached one) for the separation;
:func:`model_notices` says what the model and the settings will degrade in every input's result.
"""

from __future__ import annotations

import csv
import glob
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..audio import AUDIO_SUFFIXES
from ..errors import InputError

VIDEO_SUFFIXES = (".mp4", ".mpg", ".avi", ".mov", ".mkv", ".webm")


@dataclass
class SeparationJob:
    """One input: a mixture, one video (or lip cache ``.npz``, or None) per source, a name."""

    mixture: Path
    videos: list = field(default_factory=list)
    name: str = ""
    from_file: bool = True        # the name is the file's stem (not a manifest id)
    listed: bool = False          # from a manifest, folder or glob: always its own OUT/<name>


def load_track(path, get_detector, audio_seconds: float | None = None):
    """A lip track from a video (extracted now with the detector ``get_detector()`` returns,
    called only when a video is decoded) or from a prepared ``.npz`` cache. A video with no
    face, or shorter than ``audio_seconds``, is a warning: those frames get no lip input. The video
    stack (PyAV, OpenCV, MediaPipe's face mesh: about 0.15 s to import) is imported only here,
    when there is a video."""
    if path is None:
        return None
    from ..video.track import LipTrack, extract_lip_track

    path = Path(path)
    if path.suffix == ".npz":
        track = LipTrack.load(path)
    else:
        track = extract_lip_track(path, detector=get_detector())
    covered = float(track.timestamps[-1]) + 1.0 / track.fps if len(track.timestamps) else 0.0
    if not np.any(track.face_found):
        warnings.warn(f"{path}: no face found in any frame; this source is separated without lips",
                      stacklevel=2)
    elif audio_seconds is not None and covered < audio_seconds - 0.5:
        warnings.warn(f"{path}: the video covers {covered:.2f} s of the {audio_seconds:.2f} s of "
                      "audio; the rest of this source is separated without lips", stacklevel=2)
    return track


def model_notices(models, settings, name: str, videos) -> list[str]:
    """The notices of an input ``name`` with ``videos`` (one per source, None where it has none)
    that the model file ``models`` and the separation ``settings`` cause: videos given to an
    audio-only model; harmonic combs searched within each speaker's pitch range
    (``separate.harmonics_range=speaker``, with the combs on) by a model file written before
    ``fit`` kept the ranges, whose combs then search every pitch."""
    from .harmonics import has_pitch_ranges

    found = []
    if any(v is not None for v in videos) and not models.uses_video:
        found.append(f"{name}: the model is audio-only; the videos only set the number of sources")
    if settings.harmonics_at and settings.harmonics_range == "speaker" and not has_pitch_ranges(models):
        found.append(f"{name}: the model has no pitch ranges (a model file written before fit kept "
                     "them, or a model fit did not make), so each source's harmonic comb searches "
                     "every pitch; `pyro-avss pitch-ranges` adds them to a model file")
    return found


def safe_name(name: str, where) -> str:
    """``name`` if it can be used as one folder inside the output folder, else an InputError."""
    bad = (not name or name in (".", "..") or name != name.strip() or name.startswith(".")
           or any(c in name for c in "/\\:") or any(ord(c) < 32 or ord(c) == 127 for c in name)
           or Path(name).is_absolute() or len(name.encode()) > 200)
    if bad:
        raise InputError(where, f"id {name!r} cannot name an output folder (use a plain name: no "
                                "path separator, no leading dot or '..', no control character)")
    return name


def jobs_from_inputs(inputs: list[str], videos: list[str], num_sources: int) -> tuple[list, list]:
    """Expand files, folders, globs and manifest CSVs into jobs; returns ``(jobs, problems)``.

    * one audio file: its videos are ``videos`` (J = their number, or ``num_sources`` without);
    * a folder or glob: every audio file in it; a video ``<stem>.mp4`` next to a file is used for
      one source; otherwise audio-only with ``num_sources`` sources;
    * a CSV: a mixture manifest from ``cli.py mix`` (rendered mixtures must be materialised:
      column ``mixture``) or any CSV with columns ``mixture`` and optional ``video1..videoJ``.

    Names that cannot be folder names (:func:`safe_name`) and names shared by several inputs
    are problems: those inputs are not separated.
    """
    for v in videos:
        if Path(v).is_dir() or any(ch in v for ch in "*?["):
            raise InputError("--video", f"{v}: give one video file per source, not a folder or "
                                        "glob (folders of mixtures find <stem>.mp4 next to each)")
    jobs, problems = [], []
    for item in inputs:
        p = Path(item)
        if p.suffix.lower() == ".csv":
            jobs.extend(_jobs_from_csv(p, problems))
        elif p.is_dir() or any(ch in item for ch in "*?["):
            files = sorted(q for q in (p.rglob("*") if p.is_dir() else map(Path, glob.glob(item)))
                           if q.suffix.lower() in AUDIO_SUFFIXES)
            if not files:
                problems.append((item, "no audio files found"))
            for f in files:
                vids = [v for v in (f.with_suffix(s) for s in VIDEO_SUFFIXES) if v.exists()][:1]
                jobs.append(SeparationJob(f, vids or [None] * num_sources, f.stem, listed=True))
        else:
            jobs.append(SeparationJob(p, list(videos) or [None] * num_sources, p.stem))
    stems = [j.name for j in jobs]
    for j in jobs:                       # files with one stem in different folders
        if stems.count(j.name) > 1 and j.from_file:
            j.name = f"{j.mixture.parent.name}_{j.name}"
    kept = []
    for j in jobs:
        try:
            safe_name(j.name, j.mixture)
            kept.append(j)
        except InputError as exc:
            problems.append((exc.source, exc.problem))
    names = [j.name for j in kept]
    for j in [j for j in kept if names.count(j.name) > 1]:
        problems.append((str(j.mixture), f"output name {j.name!r} is used by {names.count(j.name)} "
                                         "inputs; none of them is separated (make the ids unique)"))
    problems = [(e.source, e.problem) for e in (InputError(where, why) for where, why in problems)]
    return [j for j in kept if names.count(j.name) == 1], problems


def _jobs_from_csv(path: Path, problems: list) -> list:
    if not path.exists():
        problems.append((str(path), "file not found"))
        return []
    out = []
    try:
        with open(path, newline="") as f:
            for i, row in enumerate(csv.DictReader(f), start=1):
                mix = row.get("mixture") or ""
                if not mix:
                    problems.append((f"{path} row {i}", "no 'mixture' column/value"))
                    continue
                vid_cols = sorted(k for k in row if k and (k.startswith("video") or
                                                           (k.startswith("source") and k.endswith("_video"))))
                vids = [_rel(path, row[k]) if row[k] else None for k in vid_cols]
                name = row.get("id") or Path(mix).stem
                out.append(SeparationJob(_rel(path, mix), vids or [None], name, from_file=False,
                                         listed=True))
    except (UnicodeDecodeError, csv.Error) as exc:
        problems.append((str(path), f"not a readable CSV manifest ({type(exc).__name__})"))
        return []
    return out


def _rel(base: Path, value: str) -> Path:
    p = Path(value)
    return p if p.is_absolute() else base.parent / p


class _SharedDetector:
    """The face detector ``name``, built when the first video needs one and then reused for
    every video of the batch (``extract_lip_track`` resets it for each), closed at the end."""

    def __init__(self, name: str):
        self.name, self.detector = name, None

    def __call__(self):
        if self.detector is None:
            from ..video.landmarks import make_detector, native_stderr_filtered

            with native_stderr_filtered():          # building a face mesh is chatty
                self.detector = make_detector(self.name)
        return self.detector

    def close(self) -> None:
        if self.detector is not None:
            self.detector.close()
            self.detector = None
