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
one dies, its clip is recorded as a failure and a new worker replaces it: :mod:`.prepare_workers`).
One clip's work is :func:`~.prepare_clip.prepare_clip`.
"""

from __future__ import annotations

import csv
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import InputError
from .clips import Clip
from .prepare_clip import attempt_clip, has_cache_files
from .prepare_workers import run_pool

MANIFEST_COLUMNS = ("id", "speaker", "split", "audio", "video", "lips", "num_samples",
                    "sample_rate", "duration_s", "video_frames", "fps", "face_ratio", "notes",
                    "align", "av_diff_s")
FAILURE_COLUMNS = ("id", "path", "reason")
PATH_COLUMNS = ("audio", "video", "lips", "align")


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
            result = attempt_clip(clip, out_dir, detector, roi_size, sample_rate,
                                  cached_only=True) if has_cache_files(clip, out_dir) else None
            if result is None:
                todo.append(i)
            else:
                on_result(i, result)
        workers = (os.cpu_count() or 1) if workers is None else workers
        workers = min(workers, len(todo))
        if workers > 1:
            run_pool([unique[i] for i in todo], out_dir, detector, roi_size, sample_rate,
                     workers, lambda k, result: on_result(todo[k], result))
        elif todo:
            from ..video.landmarks import make_detector

            videos = any(unique[i].video is not None for i in todo)
            det = make_detector(detector) if videos else None
            try:
                for i in todo:
                    on_result(i, attempt_clip(unique[i], out_dir, det or detector, roi_size,
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
