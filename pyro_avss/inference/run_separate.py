"""Separation of files: inputs (a mixture and its videos) to output folders.

Used by ``cli.py separate``. For each input it writes into its own folder:
``source1.wav … sourceJ.wav``, ``noise.wav``, ``switch_posterior.csv`` (``time_s, source,
component, probability``, one row per STFT frame, source and component) and
``separation.png`` (mixture, estimates, switch posterior over time).
"""

from __future__ import annotations

import csv
import glob
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from ..audio import AUDIO_SUFFIXES, load_audio, save_audio, stft
from ..checkpoint import SpeechModels
from ..errors import InputError
from .separation import Separated, SeparationSettings, separate_recordings

VIDEO_SUFFIXES = (".mp4", ".mpg", ".avi", ".mov", ".mkv", ".webm")


@dataclass
class SeparationJob:
    """One input: a mixture, one video (or lip cache ``.npz``, or None) per source, a name."""

    mixture: Path
    videos: list = field(default_factory=list)
    name: str = ""


def load_track(path, detector: str):
    """A lip track from a video (extracted now) or from a prepared ``.npz`` cache."""
    from ..video.track import LipTrack, extract_lip_track

    if path is None:
        return None
    path = Path(path)
    if path.suffix == ".npz":
        return LipTrack.load(path)
    return extract_lip_track(path, detector=detector)


def jobs_from_inputs(inputs: list[str], videos: list[str], num_sources: int) -> tuple[list, list]:
    """Expand files, folders, globs and manifest CSVs into jobs; returns ``(jobs, problems)``.

    * one audio file: its videos are ``videos`` (J = their number, or ``num_sources`` without);
    * a folder or glob: every audio file in it; a video ``<stem>.mp4`` next to a file is used for
      one source; otherwise audio-only with ``num_sources`` sources;
    * a CSV: a mixture manifest from ``cli.py mix`` (rendered mixtures must be materialised:
      column ``mixture``) or any CSV with columns ``mixture`` and optional ``video1..videoJ``.
    """
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
                jobs.append(SeparationJob(f, vids or [None] * num_sources, f.stem))
        else:
            jobs.append(SeparationJob(p, list(videos) or [None] * num_sources, p.stem))
    names = [j.name for j in jobs]
    for j in jobs:                       # keep output folders distinct
        if names.count(j.name) > 1:
            j.name = f"{j.mixture.parent.name}_{j.name}"
    return jobs, problems


def _jobs_from_csv(path: Path, problems: list) -> list:
    if not path.exists():
        problems.append((str(path), "file not found"))
        return []
    out = []
    with open(path, newline="") as f:
        for i, row in enumerate(csv.DictReader(f), start=1):
            mix = row.get("mixture") or ""
            if not mix:
                problems.append((f"{path} row {i}", "no 'mixture' column/value"))
                continue
            vid_cols = sorted(k for k in row if k and (k.startswith("video") or
                                                       (k.startswith("source") and k.endswith("_video"))))
            vids = [_rel(path, row[k]) if row[k] else None for k in vid_cols]
            out.append(SeparationJob(_rel(path, mix), vids or [None], row.get("id") or Path(mix).stem))
    return out


def _rel(base: Path, value: str) -> Path:
    p = Path(value)
    return p if p.is_absolute() else base.parent / p


def write_outputs(out_dir: Path, result: Separated, mixture: np.ndarray, models: SpeechModels,
                  force: bool, plot: bool = True) -> None:
    """Write the wavs, the posterior CSV and the figure of one separated recording."""
    sr = models.stft.sample_rate
    out_dir.mkdir(parents=True, exist_ok=True)
    for j, s in enumerate(result.sources):
        save_audio(out_dir / f"source{j + 1}.wav", s, sr, overwrite=force)
    save_audio(out_dir / "noise.wav", result.noise, sr, overwrite=force)
    post_path = out_dir / "switch_posterior.csv"
    if post_path.exists() and not force:
        raise InputError(post_path, "output exists (use --force to replace it)")
    names = models.component_names
    times = models.stft.frame_times(result.posterior.shape[0])
    with open(post_path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["time_s", "source", "component", "probability"])
        T, J, K = result.posterior.shape
        for t in range(T):
            for j in range(J):
                for k in range(K):
                    w.writerow([f"{times[t]:.4f}", j + 1, names[k], f"{result.posterior[t, j, k]:.4f}"])
    if plot:
        from ..plots import separation_figure

        spec = lambda x: stft(torch.as_tensor(x), models.stft).abs().pow(2).numpy()  # noqa: E731
        separation_figure(out_dir / "separation.png", spec(mixture),
                          [spec(s) for s in result.sources], result.posterior, names,
                          models.stft.frame_rate, sr)


def run_jobs(models: SpeechModels, jobs: list[SeparationJob], out_dir: Path,
             settings: SeparationSettings, *, device, resample: bool, force: bool,
             detector: str, progress: bool = True) -> list[tuple[str, str]]:
    """Separate all jobs; returns ``(input, error)`` for the inputs that failed."""
    from tqdm import tqdm

    failures, ready = [], []
    sr = models.stft.sample_rate
    for job in tqdm(jobs, desc="reading inputs", disable=not progress or len(jobs) < 2, leave=False):
        try:
            target = out_dir / job.name if len(jobs) > 1 else out_dir
            if (target / "source1.wav").exists() and not force:
                raise InputError(target, "outputs exist (use --force to replace them)")
            audio = load_audio(job.mixture, sr, resample=resample)
            if any(v is not None for v in job.videos) and not models.uses_video:
                print(f"note: {job.mixture}: the model is audio-only; the videos only set the "
                      "number of sources", flush=True)
            tracks = [load_track(v, detector) if models.uses_video else None for v in job.videos]
            ready.append((job, target, audio, tracks))
        except InputError as exc:
            failures.append((str(job.mixture), str(exc)))
            print(f"error: {exc}", flush=True)
    if not ready:
        return failures
    bar = tqdm(total=None, desc="separating (chunks)", disable=not progress or len(ready) < 2)
    results = separate_recordings(models, [(a, t) for _, _, a, t in ready], settings, device,
                                  progress=bar.update)
    bar.close()
    for (job, target, audio, _), result in zip(ready, results):
        try:
            write_outputs(target, result, audio, models, force)
        except InputError as exc:
            failures.append((str(job.mixture), str(exc)))
            print(f"error: {exc}", flush=True)
    return failures
