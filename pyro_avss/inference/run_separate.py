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
* inputs are read and separated ``batch_size`` recordings at a time (batches cut in the order
  of the inputs; several processes, ``ranks``, share them out whole), and each recording's
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

import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path

from ..audio import load_audio
from ..checkpoint import SpeechModels
from ..errors import InputError, one_line, writable_folder
from .distributed import Ranks, gather
from .separation import SeparationSettings, separate_recordings
from .separation_jobs import (SeparationJob, _SharedDetector, jobs_from_inputs, load_track,
                              model_notices, safe_name)
from .separation_outputs import (NOTICES, _existing_outputs, _is_complete, output_names, write_atomically,
                                 write_outputs, write_separation_report)

# what cli.py separate and the Python API take from here: the batch and its inputs and outputs
__all__ = ["BatchOutcome", "NOTICES", "SeparationJob", "jobs_from_inputs", "load_track", "output_names",
           "run_jobs", "safe_name", "write_outputs"]


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


def run_jobs(models: SpeechModels, jobs: list[SeparationJob], out_dir: Path,
             settings: SeparationSettings, *, device, resample: bool, force: bool,
             detector: str, skip_existing: bool = False, progress: bool = True,
             echo=print, figure: bool = True, report: bool = False,
             ranks: Ranks | None = None) -> BatchOutcome:
    """Separate ``jobs`` ``settings.batch_size`` recordings at a time, writing each result as
    soon as its group is done (see the module docstring); ``echo`` receives one line per
    failure or notice. ``figure=False``: no ``separation.png`` (and matplotlib is never
    imported; the figure of a short clip takes longer than its separation). ``report``
    (off by default): write ``OUT/report.html`` over the recordings written or kept.
    ``ranks``: this process's share of the batches when several share them (:mod:`.distributed`;
    the returned outcome is then every rank's, and rank 0 writes the report).

    What costs time once per process (imports, the face detector) is paid once for the whole
    batch: one detector serves every video."""
    from tqdm import tqdm

    if force and skip_existing:
        raise InputError("--force/--skip-existing", "choose one: replace or keep existing outputs")
    writable_folder(out_dir)
    ranks = ranks or Ranks()
    outcome = BatchOutcome()
    own_folder = len(jobs) > 1 or any(j.listed for j in jobs)
    sr = models.stft.sample_rate
    shared = _SharedDetector(detector)

    def fail(job, message):
        outcome.failures.append((str(job.mixture), message))
        echo(f"error: {job.mixture}: {message}" if not message.startswith(str(job.mixture))
             else f"error: {message}")

    batches = _my_batches(jobs, ranks, settings.batch_size, lambda job: out_dir / job.name
                          if own_folder else out_dir)
    pending = _to_do(batches, own_folder, skip_existing, force, figure, outcome, fail)
    bar = tqdm(total=sum(map(len, pending)), desc="separating",
               disable=not progress or sum(map(len, pending)) < 2)
    try:
        for batch in pending:
            group = []
            for job, target in batch:
                try:
                    with warnings.catch_warnings(record=True) as caught:
                        warnings.simplefilter("always")
                        audio = load_audio(job.mixture, sr, resample=resample)
                        tracks = [load_track(v, shared, len(audio) / sr) if models.uses_video
                                  else None for v in job.videos]
                    notices = [str(w.message) for w in caught]
                    notices += model_notices(models, settings, str(job.mixture), job.videos)
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
    if ranks.world > 1:                 # every rank learns what all did; rank 0 reports it
        outcome = BatchOutcome(*([x for o in gather(outcome, ranks) for x in getattr(o, name)]
                                 for name in ("done", "skipped", "failures")))
    if report and ranks.main:
        _report(out_dir, jobs, outcome, own_folder)
    return outcome


def _to_do(batches: list[list], own_folder: bool, skip_existing: bool, force: bool, figure: bool,
           outcome: BatchOutcome, fail) -> list[list]:
    """The batches less the recordings whose outputs exist: kept (``skip_existing``, when
    complete: counted in ``outcome.skipped``), replaced (``force``) or failed."""
    pending = []
    for batch in batches:
        keep = []
        for job, target in batch:
            if _existing_outputs(target, own_folder):
                if skip_existing and _is_complete(target, len(job.videos), figure):
                    outcome.skipped.append(job.name)
                    continue
                if not force and not skip_existing:
                    fail(job, f"{target}: outputs exist (use --force to replace them or "
                              "--skip-existing to keep them)")
                    continue
            keep.append((job, target))
        pending += [keep] if keep else []
    return pending


def _my_batches(jobs: list[SeparationJob], ranks: Ranks, size: int, target) -> list[list]:
    """This rank's batches of ``(job, output folder)``: batches of ``size`` inputs are cut in the
    order of the inputs, before any is skipped (whatever already exists), and shared out whole
    between the ranks; a recording's batch mates, hence its result, never depend on the number
    of processes nor on what earlier runs left."""
    batches = [jobs[i:i + size] for i in range(0, len(jobs), size)]
    return [[(job, target(job)) for job in batch] for batch in ranks.shard(batches)]


def _report(out_dir: Path, jobs: list[SeparationJob], outcome: BatchOutcome, own_folder: bool) -> None:
    """``OUT/report.html`` over the recordings of ``jobs`` written or kept (none: no report)."""
    listed = [(j, out_dir / j.name if own_folder else out_dir) for j in jobs
              if j.name in outcome.done or j.name in outcome.skipped]
    if listed:
        write_separation_report(out_dir, listed)
