"""Mixture manifests: one CSV row per :class:`~.mixtures.MixtureSpec`, enough to rebuild the
mixture bit for bit (gains written with full float precision, paths relative to the manifest)."""

from __future__ import annotations

import csv
import math
import os
import re
from pathlib import Path
from typing import Sequence

from ..errors import InputError, first_line
from .mixtures import MixtureSpec, NoiseRef, SourceRef, abs_path

_HEAD_COLUMNS = ("id", "split", "condition", "sample_rate", "num_samples", "seed", "snr_db",
                 "sir_db")
_SOURCE_FIELDS = ("id", "audio", "video", "speaker")
_LIPS_FIELDS = ("lips", "lips_donor")     # written only when some source's lips are corrupted
_NOISE_COLUMNS = ("noise_name", "noise_audio", "noise_start", "noise_gain")
_SOURCE_ID = re.compile(r"source(\d+)_id")


def manifest_columns(num_sources: int, lips: bool = False) -> list[str]:
    """Columns of a mixture manifest whose widest mixture has ``num_sources`` sources.

    ``id, split, condition, sample_rate, num_samples, seed, snr_db, sir_db``, then per source j
    ``source<j>_id, source<j>_audio, source<j>_video, source<j>_speaker, gain<j>`` (with
    ``lips``, also ``source<j>_lips, source<j>_lips_donor``: the lip corruption of
    :mod:`.lip_corruption`), then ``noise_name, noise_audio, noise_start, noise_gain``. Paths
    are relative to the manifest's folder where possible; gains are written with full float
    precision; ``sir_db`` and the columns of absent sources are empty.
    """
    fields = _SOURCE_FIELDS + (_LIPS_FIELDS if lips else ())
    cols = list(_HEAD_COLUMNS)
    for j in range(1, num_sources + 1):
        cols += [f"source{j}_{f}" for f in fields] + [f"gain{j}"]
    return cols + list(_NOISE_COLUMNS)


def write_mixture_manifest(specs: Sequence[MixtureSpec], path: str | Path, *,
                           overwrite: bool = False) -> Path:
    """Write ``specs`` as a manifest CSV (columns: :func:`manifest_columns`).

    :raises InputError: the file exists and ``overwrite`` is False, or ids are not unique.
    """
    path = Path(path)
    if path.exists() and not overwrite:
        raise InputError(path, "output exists (use overwrite=True to replace it)")
    ids = [s.id for s in specs]
    if len(set(ids)) != len(ids):
        raise InputError(path, "mixture ids are not unique")
    base = abs_path(path.parent)
    width = max((s.num_sources for s in specs), default=1)
    lips = any(src.lips for s in specs for src in s.sources)
    path.parent.mkdir(parents=True, exist_ok=True)
    # written next to it, then put in its place at once: a process reading the manifest meanwhile
    # (an evaluation of a results run while `cli.py results --plan` writes the run's manifests
    # again) reads the old file or the new one, never a half-written one
    part = path.with_name(f".{path.name}.{os.getpid()}.part")
    try:
        with open(part, "w", newline="", encoding="utf-8") as fh:
            writer = csv.DictWriter(fh, fieldnames=manifest_columns(width, lips), restval="",
                                    extrasaction="ignore")
            writer.writeheader()
            for spec in specs:
                writer.writerow(_spec_to_row(spec, base))
        os.replace(part, path)
    finally:
        part.unlink(missing_ok=True)
    return path


def _rel(p: Path | None, base: Path) -> str:
    if p is None:
        return ""
    try:
        return Path(os.path.relpath(abs_path(p), base)).as_posix()
    except ValueError:  # another drive on Windows
        return str(abs_path(p))


def _spec_to_row(spec: MixtureSpec, base: Path) -> dict:
    row = {"id": spec.id, "split": spec.split or "", "condition": spec.condition,
           "sample_rate": spec.sample_rate, "num_samples": spec.num_samples, "seed": spec.seed,
           "snr_db": repr(float(spec.snr_db)),
           "sir_db": "" if spec.sir_db is None else repr(float(spec.sir_db)),
           "noise_name": spec.noise.name, "noise_audio": _rel(spec.noise.audio, base),
           "noise_start": spec.noise.start, "noise_gain": repr(float(spec.noise_gain))}
    for j, (src, gain) in enumerate(zip(spec.sources, spec.source_gains), start=1):
        row.update({f"source{j}_id": src.id, f"source{j}_audio": _rel(src.audio, base),
                    f"source{j}_video": _rel(src.video, base), f"source{j}_speaker": src.speaker,
                    f"gain{j}": repr(float(gain)), f"source{j}_lips": src.lips,
                    f"source{j}_lips_donor": _rel(src.lips_donor, base)})
    return row


def read_mixture_manifest(path: str | Path) -> list[MixtureSpec]:
    """Read a manifest written by :func:`write_mixture_manifest`.

    Relative paths are taken relative to the manifest's folder.

    :raises InputError: missing file or columns, or a bad row; the message names the file and
        the row (spreadsheet numbering: the header is row 1).
    """
    path = Path(path)
    if not path.exists():
        raise InputError(path, "file not found")
    base = abs_path(path.parent)
    specs = []
    with open(path, newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        header = reader.fieldnames or []
        missing = [c for c in manifest_columns(1) if c not in header]
        if missing:
            raise InputError(path, "not a mixture manifest: missing column(s) "
                                   + ", ".join(missing))
        seen: set[str] = set()
        for row in reader:
            where = f"{path} row {reader.line_num}"
            try:
                spec = _row_to_spec(row, base)
            except (ValueError, TypeError, KeyError) as exc:
                raise InputError(where, first_line(exc)) from None
            if spec.id in seen:
                raise InputError(where, f"duplicate mixture id {spec.id!r}")
            seen.add(spec.id)
            specs.append(spec)
    return specs


def _field(row: dict, key: str) -> str:
    value = row.get(key)
    return "" if value is None else value.strip()


def _number(row: dict, key: str, *, integer: bool = False, allow_inf: bool = False):
    text = _field(row, key)
    if not text:
        raise ValueError(f"{key} is empty")
    try:
        value = int(text) if integer else float(text)
    except ValueError:
        kind = "an integer" if integer else "a number"
        raise ValueError(f"{key} is not {kind}: {text!r}") from None
    if not integer and (math.isnan(value) or (math.isinf(value) and not allow_inf)):
        raise ValueError(f"{key} must be finite, got {text!r}")
    return value


def _path(row: dict, key: str, base: Path, *, required: bool = True) -> Path | None:
    text = _field(row, key)
    if not text:
        if required:
            raise ValueError(f"{key} is empty")
        return None
    return Path(os.path.normpath(base / text))


def _lips(row: dict, j: int, base: Path) -> tuple[str, Path | None]:
    """``(lips, lips_donor)`` of source ``j`` (``""``, None where the columns are absent),
    checked: a known corruption on a source with a video, a donor exactly for ``swap``."""
    from .lip_corruption import LipCorruption

    corruption = LipCorruption.parse(_field(row, f"source{j}_lips"))
    donor = _path(row, f"source{j}_lips_donor", base, required=False)
    if corruption is not None and not _field(row, f"source{j}_video"):
        raise ValueError(f"source{j}_lips is set but source{j}_video is empty")
    if (corruption is not None and corruption.kind == "swap") != (donor is not None):
        raise ValueError(f"source{j}_lips_donor must be given exactly when source{j}_lips is swap")
    return ("" if corruption is None else str(corruption)), donor


def _row_to_spec(row: dict, base: Path) -> MixtureSpec:
    if None in row:  # csv puts surplus cells under the key None
        raise ValueError("row has more cells than the header")
    mix_id = _field(row, "id")
    if not mix_id:
        raise ValueError("id is empty")
    sources, gains = [], []
    j = 1
    while f"source{j}_id" in row and _field(row, f"source{j}_id"):
        speaker = _field(row, f"source{j}_speaker")
        sources.append(SourceRef(_field(row, f"source{j}_id"), _path(row, f"source{j}_audio", base),
                                 _path(row, f"source{j}_video", base, required=False), speaker,
                                 *_lips(row, j, base)))
        gains.append(_number(row, f"gain{j}"))
        j += 1
    if not sources:
        raise ValueError("source1_id is empty")
    later = [k for k in row if k and (m := _SOURCE_ID.fullmatch(k)) and int(m.group(1)) > j
             and _field(row, k)]
    if later:
        raise ValueError(f"{later[0]} is set but source{j}_id is empty")
    noise_gain = _number(row, "noise_gain")
    if any(g <= 0 for g in gains) or noise_gain < 0:
        raise ValueError("gains must be positive (noise_gain may be 0)")
    num_samples = _number(row, "num_samples", integer=True)
    sample_rate = _number(row, "sample_rate", integer=True)
    start = _number(row, "noise_start", integer=True)
    seed = _number(row, "seed", integer=True)
    if num_samples <= 0 or sample_rate <= 0 or start < 0 or seed < 0:
        raise ValueError("num_samples and sample_rate must be positive, noise_start and seed >= 0")
    snr = _number(row, "snr_db", allow_inf=True)
    if snr == -math.inf:
        raise ValueError("snr_db cannot be -inf")
    sir = None
    if len(sources) > 1 or _field(row, "sir_db"):
        sir = _number(row, "sir_db")
    noise_name = _field(row, "noise_name")
    if not noise_name:
        raise ValueError("noise_name is empty")
    return MixtureSpec(
        id=mix_id, sample_rate=sample_rate, sources=sources,
        noise=NoiseRef(noise_name, _path(row, "noise_audio", base), start),
        snr_db=snr, sir_db=sir, gains=tuple(gains + [noise_gain]), num_samples=num_samples,
        seed=seed, split=_field(row, "split") or None, condition=_field(row, "condition"))


__all__ = ["manifest_columns", "write_mixture_manifest", "read_mixture_manifest"]
