"""The rows of an evaluation: ``results.csv``, its columns, reading and writing.

``results.csv`` has one row per (mixture, system, source), columns :data:`CSV_COLUMNS`:

* ``id, condition, snr_db, noise``: the mixture (manifest fields); ``source`` (1..J) and
  ``target_speaker`` (the speaker of that source, whose clean signal is the reference);
* ``system``; ``status``: ``ok``, ``skipped`` (the system cannot handle this mixture, e.g. a
  baseline on J ≥ 2, or the model lacks the component) or ``failed``; ``error``: the reason;
* ``input_<m>`` (the unprocessed mixture) and ``<m>`` (the estimate) for every metric of
  :data:`~pyro_avss.evaluation.metrics.ALL_METRICS`, ``si_sdri = si_sdr - input_si_sdr``; a
  metric that could not be computed is empty (NaN) and its reason is in ``<m>_error`` /
  ``input_<m>_error``;
* ``runtime_s``: processing time attributed to the mixture (s; for systems run in batches, the
  batch's time × this mixture's share of the batch's audio), ``audio_s``: mixture duration,
  ``rtf = runtime_s / audio_s``. All rows of one mixture and system carry the same runtime;
* ``switch_true_mass``: mean posterior probability of the component named like
  ``target_speaker`` over the speech frames of that source (frames whose clean energy is within
  40 dB of its loudest frame); empty when the system has no switch or no such component;
* ``switch_identified``: 1 when, over the same frames, the true speaker's component has the
  largest summed log posterior of all K (the one component that best explains them all: the
  switch identifies the speaker; :func:`~.scoring.true_speaker_switch`), else 0; empty as above;
* ``swapped`` (J ≥ 2): 1 when the estimate of a source has a higher SI-SDR against another
  source's reference than against its own (it holds the wrong talker), else 0; its mean is the
  swap rate;
* ``steps`` (SVI steps or EM iterations) and ``acceptance`` (MCEM's MH acceptance rate).
"""

from __future__ import annotations

import csv
import io
import math
import os
from pathlib import Path

from ..errors import InputError
from .metrics import ALL_METRICS

METRICS = ("si_sdr", "si_sdri", "sdr", "pesq_wb", "pesq_nb", "stoi", "estoi")
"""Metrics summarised per system (``si_sdri`` derived, the others computed)."""

ERROR_COLUMNS = tuple(f"{m}_error" for m in ALL_METRICS) + tuple(f"input_{m}_error" for m in ALL_METRICS)
CSV_COLUMNS = (("id", "condition", "snr_db", "noise", "system", "source", "target_speaker",
                "status", "error")
               + tuple(f"input_{m}" for m in ALL_METRICS) + METRICS + ERROR_COLUMNS
               + ("runtime_s", "audio_s", "rtf", "switch_true_mass", "switch_identified", "swapped", "steps",
                  "acceptance"))
NUMERIC = {c for c in CSV_COLUMNS if c.startswith("input_") and not c.endswith("_error")} \
    | set(METRICS) | {"snr_db", "runtime_s", "audio_s", "rtf", "switch_true_mass",
                      "switch_identified", "swapped", "steps", "acceptance", "source"}


def _cell(value) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        if math.isnan(value):
            return ""
        return str(int(value)) if value.is_integer() and abs(value) < 1e15 else repr(value)
    return str(value)


def read_results(path: str | Path) -> list[dict]:
    """Rows of a results CSV, numbers as floats (NaN where empty). A file of an older version,
    whose columns are some of :data:`CSV_COLUMNS` (a column added since), is read with the
    missing columns empty. A last line without its end (a write cut short, see
    :func:`write_results`) is not a row.

    :raises InputError: the file has columns that :data:`CSV_COLUMNS` lacks, or lacks ``id``,
        ``system``, ``source`` or ``status``.
    """
    path = Path(path)
    if not path.exists():
        return []
    with open(path, newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(_whole_lines(fh.read()))
        columns = set(reader.fieldnames or ())
        if not columns <= set(CSV_COLUMNS) or not {"id", "system", "source", "status"} <= columns:
            raise InputError(path, "was written with other columns (another pyro_avss version?); "
                                   "use a new --out folder")
        rows = list(reader)
    missing = set(CSV_COLUMNS) - columns
    for row in rows:
        row.update(dict.fromkeys(missing, ""))
        for key in NUMERIC:
            text = row.get(key) or ""
            row[key] = float(text) if text else math.nan
    return rows


def write_results(path: str | Path, rows: list[dict], append: bool = True) -> None:
    """Append ``rows`` (or rewrite the file with them when ``append`` is False). A file of an
    older version (fewer columns) is first rewritten with today's columns.

    An interrupted run must leave nothing a resumed one misreads, so the rows go out in one
    write of whole lines (a process stopped at any moment has written all of them or none, short
    of the machine itself failing), a rewrite replaces the file at once, and a line cut short by
    such a failure is cut off before more rows are appended after it."""
    path = Path(path)
    if append and path.exists() and _header(path) != CSV_COLUMNS:
        rows, append = read_results(path) + list(rows), False
    new = not append or not path.exists()
    text = io.StringIO(newline="")
    writer = csv.DictWriter(text, fieldnames=CSV_COLUMNS, restval="", extrasaction="ignore")
    if new:
        writer.writeheader()
    for row in rows:
        writer.writerow({k: _cell(row.get(k)) for k in CSV_COLUMNS})
    data = text.getvalue().encode("utf-8")
    if new:
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_bytes(data)
        os.replace(tmp, path)
        return
    _cut_torn_line(path)
    with open(path, "ab", buffering=0) as fh:
        view = memoryview(data)
        while view:                         # a raw write may take fewer bytes than offered
            view = view[fh.write(view):]


def _whole_lines(text: str) -> io.StringIO:
    """``text`` up to its last line end (a last line without its end was cut short), as a file
    for :mod:`csv`."""
    return io.StringIO(text[:text.rfind("\n") + 1], newline="")


def _cut_torn_line(path: Path) -> None:
    """Truncate ``path`` after its last line end, dropping a line cut short (the file is read
    whole only when its last byte says a line was cut: every append passes here)."""
    with open(path, "rb+") as fh:
        if fh.seek(0, os.SEEK_END) == 0:
            return
        fh.seek(-1, os.SEEK_END)
        if fh.read(1) != b"\n":
            fh.seek(0)
            fh.truncate(fh.read().rfind(b"\n") + 1)


def _header(path: Path) -> tuple:
    with open(path, newline="", encoding="utf-8") as fh:
        return tuple(next(csv.reader(fh), ()))


__all__ = ["METRICS", "CSV_COLUMNS", "read_results", "write_results"]
