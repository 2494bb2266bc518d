"""Separation of files: inputs (a mixture and its videos) to output folders.

Used by ``cli.py separate``. For each input it writes into its own folder ``OUT/<name>`` (``OUT``
itself for a single mixture file given alone): ``source1.wav … sourceJ.wav``, ``noise.wav``, ``switch_posterior.csv``
(``time_s, source, component, probability``, one row per STFT frame, source and component) and,
unless ``figure=False`` (``cli.py separate --no-figure``), ``separation.png`` (mixture,
estimates, switch posterior over time). With ``report=True`` (``--report``), ``OUT/report.html``
lists every recording of the batch with players for the input, the sources and the noise and
its figure (:mod:`pyro_avss.html_report`; the input is linked where it lies).

Batches never lose a finished result and never write outside ``OUT``:

* names come from manifest ids or file stems and must be one plain folder name (no separator,
  no ``..``, no control character); duplicated names are refused before any work starts;
* inputs are read and separated ``batch_size`` recordings at a time, and each recording's
  outputs are written as soon as its group is done: into a hidden temporary folder, which is
  then renamed to ``OUT/<name>`` (all files of a recording or none; a stale ``noise.wav`` never
  sits next to a new ``source1.wav``);
* a recording that fails (unreadable input, a numerical failure, a write error) is reported on
  one line and the batch goes on; ``skip_existing`` resumes an interrupted batch;
* what degrades a result without failing it (a truncated WAV, a video without a face or
  shorter than the audio, videos given to an audio-only model) is a notice: one line on the
  console and in ``notices.txt`` next to the outputs.
"""

from __future__ import annotations

import csv
import glob
import os
import shutil
import tempfile
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from ..audio import AUDIO_SUFFIXES, load_audio, save_audio, scaled_note, stft
from ..checkpoint import SpeechModels
from ..errors import InputError, one_line, writable_folder
from .separation import Separated, SeparationSettings, separate_recordings

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
    face, or shorter than ``audio_seconds``, is a warning: those frames get no lip input. The video stack (PyAV, OpenCV, MediaPipe: about a second to
    import) is imported only here, when there is a video."""
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


NOTICES = "notices.txt"          # one line per degradation noticed while reading the inputs


def output_names(num_sources: int, plot: bool = True) -> list[str]:
    """The files one separated recording consists of."""
    return ([f"source{j + 1}.wav" for j in range(num_sources)] + ["noise.wav", "switch_posterior.csv"]
            + (["separation.png"] if plot else []))


def write_outputs(out_dir: Path, result: Separated, mixture: np.ndarray, models: SpeechModels,
                  plot: bool = True, notices: list[str] = ()) -> list[str]:
    """Write the wavs, the posterior CSV and the figure of one separated recording into the
    (new, empty) folder ``out_dir``, and ``notices`` (if any) into ``notices.txt``.

    A wav that would clip is scaled down (:func:`~pyro_avss.audio.save_audio`); instead of a
    warning naming ``out_dir`` (a temporary folder when written atomically) this returns one
    note per scaled file, ``"<file name>: scaled by …"``, also added to ``notices.txt``."""
    sr = models.stft.sample_rate
    out_dir.mkdir(parents=True, exist_ok=True)
    signals = {f"source{j + 1}.wav": s for j, s in enumerate(result.sources)}
    signals["noise.wav"] = result.noise
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")              # said by the notes returned instead
        gains = {name: save_audio(out_dir / name, s, sr) for name, s in signals.items()}
    scaled = [f"{name}: {scaled_note(gain)}" for name, gain in gains.items() if gain != 1.0]
    if notices or scaled:
        (out_dir / NOTICES).write_text("".join(f"{n}\n" for n in [*notices, *scaled]))
    names = models.component_names
    times = models.stft.frame_times(result.posterior.shape[0])
    with open(out_dir / "switch_posterior.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["time_s", "source", "component", "probability"])
        T, J, K = result.posterior.shape
        for t in range(T):
            for j in range(J):
                for k in range(K):
                    w.writerow([f"{times[t]:.4f}", j + 1, names[k], f"{result.posterior[t, j, k]:.4f}"])
    if plot:
        from ..plots import separation_figure

        cfg = models.stft
        factor = max(1, -(-result.posterior.shape[0] // FIGURE_FRAMES))
        spec = lambda x: display_power(x, cfg, factor)                     # noqa: E731
        separation_figure(out_dir / "separation.png", spec(mixture),
                          [spec(s) for s in result.sources], _pool(result.posterior, factor), names,
                          cfg.frame_rate / factor, sr)
    return scaled


FIGURE_FRAMES = 4000      # time columns of separation.png at most (a long recording is pooled)


def _pool(x: np.ndarray, factor: int) -> np.ndarray:
    """Means over consecutive blocks of ``factor`` rows (the last block may be shorter)."""
    if factor == 1:
        return x
    T = x.shape[0]
    pad = -T % factor
    full = np.concatenate([x, np.repeat(x[-1:], pad, 0)]) if pad else x
    return full.reshape((-1, factor) + x.shape[1:]).mean(1)


def display_power(audio: np.ndarray, cfg, factor: int, seconds: float = 60.0) -> np.ndarray:
    """Power spectrogram ``(T / factor, F)`` for display, pooled over ``factor`` frames and
    computed a minute at a time, so that an hour of audio never holds its full STFT."""
    step = max(1, int(seconds * cfg.frame_rate) // factor * factor) * cfg.hop
    parts = []
    for start in range(0, len(audio), step):
        piece = torch.as_tensor(np.ascontiguousarray(audio[start:start + step]))
        power = stft(piece, cfg).abs().pow(2).numpy()
        parts.append(_pool(power[:step // cfg.hop] if start + step < len(audio) else power, factor))
    return np.concatenate(parts)


REPORT_HTML = "report.html"
PLAYABLE = (".wav", ".flac", ".ogg", ".mp3", ".m4a", ".opus")     # what browsers play


def write_separation_report(out_dir: Path, done: list[tuple[SeparationJob, Path]]) -> Path:
    """``out_dir/report.html`` for the separated recordings ``[(job, output folder)]``: the input
    (linked where it lies, when a browser can play its format), every source, the noise, the
    figure (spectrograms, switch posterior) and the notices."""
    from ..html_report import Item, write_report

    items = []
    for job, target in done:
        players = [("input mixture", job.mixture)] if job.mixture.suffix.lower() in PLAYABLE else []
        sources = sorted(target.glob("source*.wav"), key=lambda p: (len(p.stem), p.stem))
        players += [(f"source {p.stem[6:]}", p) for p in sources]
        players += [("noise", target / "noise.wav")] if (target / "noise.wav").exists() else []
        images = [("separation", target / "separation.png")] if (target / "separation.png").exists() else []
        notices = target / NOTICES
        note = f"input: {job.mixture}"
        if notices.exists():
            note += ". Notices: " + " ".join(notices.read_text().split("\n"))
        items.append(Item(job.name, players, images, [], {"sources": len(sources)}, note))
    return write_report(out_dir / REPORT_HTML, "Separation report", items,
                        filters={"sources": "sources"} if len({i.attrs["sources"] for i in items}) > 1 else None)


def _partial_prefix(target: Path) -> str:
    return f".{target.name}.partial-"


def _existing_outputs(target: Path, own_folder: bool) -> list[Path]:
    """Output files of an earlier run at ``target`` (any ``source*.wav`` counts)."""
    if not target.is_dir():
        return []
    if own_folder:
        return sorted(target.iterdir())
    return sorted(p for p in target.iterdir() if p.name in ("noise.wav", "switch_posterior.csv",
                                                            "separation.png", NOTICES)
                  or (p.name.startswith("source") and p.suffix == ".wav"))


def _is_complete(target: Path, num_sources: int, figure: bool = True) -> bool:
    return all((target / n).is_file() for n in output_names(num_sources, figure))


def write_atomically(target: Path, own_folder: bool, write):
    """``write(folder)`` fills a fresh hidden folder next to ``target``, which then replaces it;
    returns what ``write`` returned.

    ``own_folder``: ``target`` holds one recording's outputs only (``OUT/<name>``), so the new
    folder is renamed onto it, the old one being moved aside first; otherwise (``OUT`` itself
    for a single input) the old output files are removed and the new ones moved in one by one.
    An interrupted write leaves only the hidden ``.<name>.partial-*`` folder, which the next run
    removes.
    """
    parent = target.parent if own_folder else target
    parent.mkdir(parents=True, exist_ok=True)
    for stale in parent.glob(_partial_prefix(target) + "*"):
        shutil.rmtree(stale, ignore_errors=True)
    tmp = Path(tempfile.mkdtemp(prefix=_partial_prefix(target), dir=parent))
    try:
        written = write(tmp)
        if own_folder:
            old = None
            if target.exists():
                old = Path(tempfile.mkdtemp(prefix=_partial_prefix(target), dir=parent))
                os.replace(target, old / "old")
            os.replace(tmp, target)
            if old is not None:
                shutil.rmtree(old, ignore_errors=True)
        else:
            for p in _existing_outputs(target, own_folder=False):
                p.unlink()
            for p in sorted(tmp.iterdir()):
                os.replace(p, target / p.name)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return written


@dataclass
class BatchOutcome:
    """What :func:`run_jobs` did: names written, names skipped, ``(input, error)`` failures."""

    done: list = field(default_factory=list)
    skipped: list = field(default_factory=list)
    failures: list = field(default_factory=list)


def _separate_group(models, group, settings, device):
    """Separate a group together; if that fails, each recording alone, so that one bad
    recording only fails itself. Yields a :class:`Separated` or the exception, per recording."""
    try:
        yield from separate_recordings(models, [(item[2], item[3]) for item in group], settings,
                                       device)
        return
    except Exception as exc:                  # noqa: BLE001 - reported per recording below
        if len(group) == 1:
            yield exc
            return
    for item in group:
        yield from _separate_group(models, [item], settings, device)


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


def run_jobs(models: SpeechModels, jobs: list[SeparationJob], out_dir: Path,
             settings: SeparationSettings, *, device, resample: bool, force: bool,
             detector: str, skip_existing: bool = False, progress: bool = True,
             echo=print, figure: bool = True, report: bool = False) -> BatchOutcome:
    """Separate ``jobs`` ``settings.batch_size`` recordings at a time, writing each result as
    soon as its group is done (see the module docstring); ``echo`` receives one line per
    failure or notice. ``figure=False``: no ``separation.png`` (and matplotlib is never
    imported; the figure of a short clip takes longer than its separation). ``report``
    (off by default): write ``OUT/report.html`` over the recordings written or kept.

    What costs time once per process (imports, the face detector) is paid once for the whole
    batch: one detector serves every video."""
    from tqdm import tqdm

    if force and skip_existing:
        raise InputError("--force/--skip-existing", "choose one: replace or keep existing outputs")
    writable_folder(out_dir)
    outcome = BatchOutcome()
    own_folder = len(jobs) > 1 or any(j.listed for j in jobs)
    sr = models.stft.sample_rate
    shared = _SharedDetector(detector)

    def fail(job, message):
        outcome.failures.append((str(job.mixture), message))
        echo(f"error: {job.mixture}: {message}" if not message.startswith(str(job.mixture))
             else f"error: {message}")

    pending = []
    for job in jobs:
        target = out_dir / job.name if own_folder else out_dir
        if _existing_outputs(target, own_folder):
            if skip_existing and _is_complete(target, len(job.videos), figure):
                outcome.skipped.append(job.name)
                continue
            if not force and not skip_existing:
                fail(job, f"{target}: outputs exist (use --force to replace them or "
                          "--skip-existing to keep them)")
                continue
        pending.append((job, target))
    bar = tqdm(total=len(pending), desc="separating", disable=not progress or len(pending) < 2)
    try:
        for first in range(0, len(pending), settings.batch_size):
            batch, group = pending[first:first + settings.batch_size], []
            for job, target in batch:
                try:
                    with warnings.catch_warnings(record=True) as caught:
                        warnings.simplefilter("always")
                        audio = load_audio(job.mixture, sr, resample=resample)
                        tracks = [load_track(v, shared, len(audio) / sr) if models.uses_video
                                  else None for v in job.videos]
                    notices = [str(w.message) for w in caught]
                    if any(v is not None for v in job.videos) and not models.uses_video:
                        notices.append(f"{job.mixture}: the model is audio-only; the videos only "
                                       "set the number of sources")
                    for n in notices:
                        echo(f"notice: {n}")
                    group.append((job, target, audio, tracks, notices))
                except Exception as exc:      # noqa: BLE001 - one line per input, batch goes on
                    fail(job, one_line(exc))
            for (job, target, audio, _, notices), result in zip(
                    group, _separate_group(models, group, settings, device)):
                try:
                    if isinstance(result, Exception):
                        raise result
                    scaled = write_atomically(target, own_folder, lambda folder: write_outputs(
                        folder, result, audio, models, plot=figure, notices=notices))
                    for note in scaled:
                        echo(f"notice: {target}{os.sep}{note}")
                    outcome.done.append(job.name)
                except Exception as exc:      # noqa: BLE001
                    fail(job, one_line(exc))
            bar.update(len(batch))
    finally:
        shared.close()
        bar.close()
    if report:
        listed = [(j, out_dir / j.name if own_folder else out_dir) for j in jobs
                  if j.name in outcome.done or j.name in outcome.skipped]
        if listed:
            write_separation_report(out_dir, listed)
    return outcome
