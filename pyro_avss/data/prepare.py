"""``prepare``: check every clip of a corpus once and cache what training needs.

For each clip :func:`prepare_corpus`

1. validates the audio by loading it. Audio inside a video container (GRID distribution) or at
   another sample rate is decoded/resampled once and cached as ``<out>/audio/<speaker>/<id>.wav``
   (16 kHz mono), so the prepared manifest always points at 16 kHz audio files;
2. extracts the :class:`~pyro_avss.video.track.LipTrack` of the video (if any) into
   ``<out>/lips/<speaker>/<id>.npz``. A cache that exists and loads (same ROI size, same detector
   unless ``"auto"``) is reused, so an interrupted run resumes where it stopped;
3. compares the durations (``av_diff_s`` = video end - audio end; more than one video frame
   either way is allowed but written in ``notes``).

Outputs (rewritten on every run, they are derived data):

* ``<out>/manifest.csv``, one row per usable clip, columns :data:`MANIFEST_COLUMNS`. Paths of
  files inside ``out_dir`` (lips, cached audio) are relative to ``out_dir``; source files are
  absolute. :func:`read_prepared_manifest` returns them all as absolute paths.
* ``<out>/failures.csv`` (``id, path, reason``), one row per unusable clip or corpus problem.

One bad file never stops the run: errors become failure rows; with several workers even a
crashing decoder only costs its own clip (each worker process takes one clip at a time; when
one dies, its clip is recorded as a failure and a new worker replaces it).
"""

from __future__ import annotations

import csv
import os
import time
import warnings
from dataclasses import dataclass, field
from multiprocessing import get_context
from pathlib import Path

import numpy as np
import soundfile as sf

from ..audio import AUDIO_SUFFIXES, load_audio, save_audio
from ..errors import InputError
from ..video.decode import read_audio_track
from ..video.track import LipTrack, extract_lip_track
from .clips import Clip
from .corpora import hash_split

MANIFEST_COLUMNS = ("id", "speaker", "split", "audio", "video", "lips", "num_samples",
                    "sample_rate", "duration_s", "video_frames", "fps", "face_ratio", "notes",
                    "align", "av_diff_s")
FAILURE_COLUMNS = ("id", "path", "reason")
PATH_COLUMNS = ("audio", "video", "lips", "align")
LOW_FACE_RATIO = 0.95
MAX_STARTUP_CRASHES = 3  # workers dying before any clip is done: a broken setup
WORKER_LOG = "prepare_workers.log"


@dataclass
class PrepareReport:
    """What :func:`prepare_corpus` did.

    :param rows: manifest rows (as written) of the usable clips.
    :param failures: ``{id, path, reason}`` of the unusable ones.
    :param cached: clips whose lip track was already cached (not extracted again).
    :param wall_s: wall-clock time of the run (s).
    """

    out_dir: Path
    manifest_path: Path
    failures_path: Path
    rows: list[dict] = field(default_factory=list)
    failures: list[dict] = field(default_factory=list)
    cached: int = 0
    wall_s: float = 0.0

    def face_ratio_by_speaker(self) -> dict[str, float]:
        """Fraction of video frames with a face, per speaker (clips with video only)."""
        found, total = {}, {}
        for row in self.rows:
            if row["video_frames"] != "":
                n, spk = int(row["video_frames"]), row["speaker"]
                found[spk] = found.get(spk, 0.0) + float(row["face_ratio"]) * n
                total[spk] = total.get(spk, 0) + n
        return {spk: found[spk] / total[spk] for spk in sorted(total) if total[spk]}

    def summary(self) -> str:
        """A few lines for the terminal."""
        lines = [f"prepared {len(self.rows)} clips ({self.cached} lip tracks from cache), "
                 f"{len(self.failures)} failures, {self.wall_s:.1f} s",
                 f"manifest: {self.manifest_path}", f"failures: {self.failures_path}"]
        ratios = self.face_ratio_by_speaker()
        if ratios:
            lines.append("faces found: " + ", ".join(f"{s} {r:.1%}" for s, r in ratios.items()))
        return "\n".join(lines)


# --------------------------------------------------------------------------------------------
# one clip
# --------------------------------------------------------------------------------------------
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


def _has_cache_files(clip: Clip, out_dir: Path) -> bool:
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


def _attempt(clip: Clip, out_dir: Path, detector, roi_size: int, sample_rate: int,
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


# --------------------------------------------------------------------------------------------
# worker processes
# --------------------------------------------------------------------------------------------
_WORKER: dict = {}


def _init_worker(detector: str, log_path: str) -> None:
    """Process-pool initializer: one detector per worker, one thread per library, and the
    native libraries' stderr chatter (MediaPipe, FFmpeg) sent to ``log_path`` so that it does
    not break the progress bar."""
    import cv2
    import torch

    log = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.dup2(log, 2)
    os.close(log)
    cv2.setNumThreads(1)
    torch.set_num_threads(1)
    _WORKER.update(name=detector, detector=None)


def _worker_task(clip: Clip, out_dir: Path, roi_size: int, sample_rate: int) -> tuple:
    """Prepare one clip in a worker; the detector is built at the first clip with a video."""
    if clip.video is not None and _WORKER["detector"] is None:
        from ..video.landmarks import make_detector

        _WORKER["detector"] = make_detector(_WORKER["name"])
    return _attempt(clip, out_dir, _WORKER["detector"] or _WORKER["name"], roi_size,
                    sample_rate)


def _worker_loop(conn, detector: str, log_path: str) -> None:
    """Body of a worker process: prepare the clips sent over ``conn`` until told to stop."""
    _init_worker(detector, log_path)
    while True:
        try:
            job = conn.recv()
        except EOFError:
            return
        if job is None:
            return
        index, clip, out_dir, roi_size, sample_rate = job
        conn.send((index, _worker_task(clip, out_dir, roi_size, sample_rate)))


class _WorkerPool:
    """A few ``spawn`` worker processes, each fed one clip at a time over its own pipe, so that
    a worker that dies (a decoder crash) is known to have died on exactly one clip: that clip
    becomes a failure and a fresh worker takes over."""

    def __init__(self, detector: str, log_path: str):
        self._ctx = get_context("spawn")
        self._args = (detector, log_path)
        self.workers: dict = {}  # connection -> [process, clip index or None]

    def launch(self):
        parent, child = self._ctx.Pipe()
        process = self._ctx.Process(target=_worker_loop, args=(child, *self._args), daemon=True)
        process.start()
        child.close()
        self.workers[parent] = [process, None]
        return parent

    def send(self, conn, index: int | None, job) -> bool:
        """Give a worker a job (``None``: stop); False if it is already dead."""
        self.workers[conn][1] = index
        try:
            conn.send(job)
            return True
        except (BrokenPipeError, OSError):
            return False

    def retire(self, conn) -> None:
        process = self.workers.pop(conn)[0]
        conn.close()
        process.join(timeout=5)
        if process.is_alive():
            process.terminate()

    def close(self) -> None:
        for conn in list(self.workers):
            self.send(conn, None, None)
            self.retire(conn)


def _run_pool(clips: list[Clip], out_dir: Path, detector: str, roi_size: int, sample_rate: int,
              workers: int, on_result) -> None:
    """Prepare ``clips`` in ``workers`` processes; ``on_result(k, result)`` for each clip."""
    from multiprocessing.connection import wait

    log_path = str(out_dir / WORKER_LOG)
    pool = _WorkerPool(detector, log_path)
    pending = list(range(len(clips)))[::-1]  # popped from the end
    done = crashed = 0

    def feed(conn) -> None:
        while pending:
            index = pending.pop()
            if pool.send(conn, index, (index, clips[index], out_dir, roi_size, sample_rate)):
                return
            pending.append(index)  # the worker died before taking it: not the clip's fault
            pool.retire(conn)
            conn = pool.launch()
        pool.send(conn, None, None)
        pool.retire(conn)

    try:
        for _ in range(min(workers, len(pending))):
            feed(pool.launch())
        while pool.workers:
            for conn in wait(list(pool.workers)):
                index = pool.workers[conn][1]
                try:
                    got, result = conn.recv()
                except (EOFError, OSError):  # the worker died while preparing clip `index`
                    pool.retire(conn)
                    crashed += 1
                    if done == 0 and crashed >= MAX_STARTUP_CRASHES:
                        raise RuntimeError(f"prepare workers die before finishing any clip; "
                                           f"see {log_path}") from None
                    if index is not None:
                        clip = clips[index]
                        on_result(index, ("fail", {"id": clip.id, "path": str(clip.video or
                                                                               clip.audio),
                                                   "reason": "worker process crashed on it"}))
                    if pending:
                        feed(pool.launch())
                    continue
                done += 1
                on_result(got, result)
                feed(conn)
    finally:
        pool.close()


# --------------------------------------------------------------------------------------------
# the corpus
# --------------------------------------------------------------------------------------------
def _write_csv(path: Path, columns, rows: list[dict]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(columns), extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    os.replace(tmp, path)


def _problem_rows(problems) -> list[dict]:
    return [{"id": getattr(p, "id", None) or "", "path": str(p.path) + (
        f" row {p.row}" if getattr(p, "row", None) is not None else ""), "reason": p.reason}
        for p in problems or []]


def prepare_corpus(clips: list[Clip], out_dir, detector: str = "auto", workers: int | None = None,
                   progress: bool = True, roi_size: int = 64, *, sample_rate: int = 16000,
                   problems=None) -> PrepareReport:
    """Prepare every clip (see module doc) and write ``manifest.csv`` and ``failures.csv``.

    :param clips: e.g. from :func:`pyro_avss.data.corpora.scan_corpus`.
    :param out_dir: output folder (created).
    :param detector: lip detector name (``auto``, ``mediapipe``, ``haar``, ``roi``).
    :param workers: processes; ``None`` = ``os.cpu_count()``; 1 runs in this process.
    :param progress: show a tqdm progress bar.
    :param roi_size: side of the mouth ROIs (pixels).
    :param sample_rate: rate of the prepared audio (Hz).
    :param problems: corpus problems from the scan (``CorpusProblem``), copied into
        ``failures.csv``.

    Worker processes are started with ``spawn``: a script calling this with ``workers > 1``
    must do so under ``if __name__ == "__main__":``. Clips without a split get
    :func:`~pyro_avss.data.corpora.hash_split`.
    """
    from tqdm.auto import tqdm

    start = time.perf_counter()
    out_dir = Path(out_dir).absolute()
    out_dir.mkdir(parents=True, exist_ok=True)
    report = PrepareReport(out_dir, out_dir / "manifest.csv", out_dir / "failures.csv")
    report.failures.extend(_problem_rows(problems))
    unique, seen = [], set()
    for clip in clips:
        if clip.id in seen:
            report.failures.append({"id": clip.id, "path": str(clip.audio),
                                    "reason": "duplicate clip id"})
        else:
            seen.add(clip.id)
            unique.append(clip)
    results: list = [None] * len(unique)
    bar = tqdm(total=len(unique), desc="prepare", unit="clip", disable=not progress)

    def on_result(i: int, result: tuple) -> None:
        results[i] = result
        bar.update(1)

    try:
        # Clips with usable caches are done here; only the rest need workers and detectors.
        todo = []
        for i, clip in enumerate(unique):
            result = _attempt(clip, out_dir, detector, roi_size, sample_rate, cached_only=True) \
                if _has_cache_files(clip, out_dir) else None
            if result is None:
                todo.append(i)
            else:
                on_result(i, result)
        workers = (os.cpu_count() or 1) if workers is None else workers
        workers = min(workers, len(todo))
        if workers > 1:
            _run_pool([unique[i] for i in todo], out_dir, detector, roi_size, sample_rate,
                      workers, lambda k, result: on_result(todo[k], result))
        elif todo:
            from ..video.landmarks import make_detector

            videos = any(unique[i].video is not None for i in todo)
            det = make_detector(detector) if videos else None
            try:
                for i in todo:
                    on_result(i, _attempt(unique[i], out_dir, det or detector, roi_size,
                                          sample_rate))
            finally:
                if det is not None:
                    det.close()
    finally:
        bar.close()
    for result in results:
        if result[0] == "ok":
            report.rows.append(result[1])
            report.cached += bool(result[2])
        else:
            report.failures.append(result[1])
    _write_csv(report.manifest_path, MANIFEST_COLUMNS, report.rows)
    _write_csv(report.failures_path, FAILURE_COLUMNS, report.failures)
    report.wall_s = time.perf_counter() - start
    return report


def read_prepared_manifest(path) -> list[dict]:
    """Read ``manifest.csv`` written by :func:`prepare_corpus`.

    Path columns (``audio, video, lips, align``) become absolute :class:`~pathlib.Path` objects
    (``None`` when empty); ``num_samples, sample_rate, video_frames`` become int, ``duration_s,
    fps, face_ratio, av_diff_s`` float (``None`` when empty).

    :raises InputError: missing file or missing columns.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(path, "prepared manifest not found (run `prepare` first)")
    with open(path, newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        missing = [c for c in MANIFEST_COLUMNS[:13] if c not in (reader.fieldnames or [])]
        if missing:
            raise InputError(path, f"not a prepared manifest (missing {', '.join(missing)})")
        rows = list(reader)
    base = path.parent.absolute()
    converters = {"num_samples": int, "sample_rate": int, "video_frames": int,
                  "duration_s": float, "fps": float, "face_ratio": float, "av_diff_s": float}
    for row in rows:
        for column in PATH_COLUMNS:
            value = row.get(column) or ""
            row[column] = (base / value) if value else None
        for column, convert in converters.items():
            value = row.get(column) or ""
            row[column] = convert(value) if value else None
    return rows
