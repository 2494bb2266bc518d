"""Corpus readers: turn a folder or a manifest into a list of :class:`~pyro_avss.data.clips.Clip`.

Layouts understood (:func:`scan_corpus` picks one):

* **GRID folders** (:func:`read_grid_folders`): ``<root>/<spk>/audio/<code>.(flac|wav|ogg)``,
  ``<root>/<spk>/video/<code>.<video>``, ``<root>/<spk>/align/<code>.align``; clip id
  ``<spk>_<code>``.
* **GRID distribution** (:func:`read_grid_distribution`): ``<root>/<spk>/**/<code>.mpg`` (video
  with the audio inside), alignments in ``<root>/<spk>/align/``, ``<root>/align/<spk>/`` or
  ``<root>/alignments/<spk>/``; ``Clip.audio`` is the container itself.
* **Speaker folders** (:func:`read_speaker_folders`): ``<root>/<speaker>/**/<utt>.(flac|wav|ogg)``,
  audio only (LibriSpeech and similar).
* **Manifest** (:func:`read_manifest`): a CSV file with columns ``id, speaker, audio`` and
  optionally ``video, split, align``.

**Splits.** A folder corpus takes its splits from ``<root>/../manifests/grid.csv`` (GRID) or
``<root>/../manifests/librispeech.csv`` (speaker folders) when that file exists and lists the
clip (``transcript``, ``gender`` and ``notes`` are then copied into ``Clip.extra``).
Otherwise the split is a deterministic function of the clip id (:func:`hash_split`):
``u = int(sha256("pyro_avss-split:" + id)[:16], 16) / 2**64``; ``train`` if ``u < 0.8``,
``dev`` if ``u < 0.9``, else ``test``. It does not depend on which other clips exist.

Readers that find something unusable (a video without audio, a bad manifest row, a duplicate
id) skip it and report it as a :class:`CorpusProblem`; only a corpus that cannot be read at all
raises :class:`~pyro_avss.errors.InputError`.
"""

from __future__ import annotations

import csv
import hashlib
import re
from dataclasses import dataclass
from pathlib import Path

from ..audio import AUDIO_SUFFIXES
from ..errors import InputError
from ..video.decode import VIDEO_SUFFIXES
from .clips import Clip

SPLITS = ("train", "dev", "test")
SPLIT_ALIASES = {"train": "train", "training": "train", "dev": "dev", "valid": "dev",
                 "validation": "dev", "val": "dev", "test": "test", "eval": "test"}
ID_COLUMNS = ("id", "clip_id", "utt_id")
LIBRISPEECH_NAME = re.compile(r"^(\d+)-\d+-\d+$")


@dataclass
class CorpusProblem:
    """Something a reader skipped: the file (or manifest), an optional row number (1 = the first
    data row after the header) and the reason."""

    path: str
    reason: str
    row: int | None = None
    id: str | None = None

    def __str__(self) -> str:
        where = f"{self.path} row {self.row}" if self.row is not None else self.path
        return f"{where}: {self.reason}"


def hash_split(clip_id: str) -> str:
    """Deterministic split of a clip id: 80 % train, 10 % dev, 10 % test (see module doc)."""
    digest = hashlib.sha256(f"pyro_avss-split:{clip_id}".encode()).hexdigest()
    u = int(digest[:16], 16) / 2.0 ** 64
    return "train" if u < 0.8 else "dev" if u < 0.9 else "test"


CARRIED_COLUMNS = ("transcript", "gender", "notes")
"""Columns of a corpus manifest next to a folder corpus that are copied into ``Clip.extra``."""


class _CorpusManifest:
    """The split (and a few descriptive columns) of each clip listed in a corpus manifest next
    to a folder corpus; clips it does not list get :func:`hash_split` and no extras."""

    def __init__(self, csv_path: Path):
        self.rows: dict[str, dict] = {}
        if not csv_path.is_file():
            return
        with open(csv_path, newline="", encoding="utf-8-sig") as handle:
            reader = csv.DictReader(handle)
            id_column = next((c for c in ID_COLUMNS if c in (reader.fieldnames or [])), None)
            if id_column is not None:
                self.rows = {row[id_column]: row for row in reader if row.get(id_column)}

    def split(self, clip_id: str) -> str:
        split = (self.rows.get(clip_id, {}).get("split") or "").strip().lower()
        return SPLIT_ALIASES.get(split) or hash_split(clip_id)

    def extra(self, clip_id: str) -> dict:
        row = self.rows.get(clip_id, {})
        return {key: row[key] for key in CARRIED_COLUMNS if row.get(key)}


def _files(folder: Path, suffixes) -> dict[str, Path]:
    """``{stem: path}`` of the files in ``folder`` (not recursive) with one of ``suffixes``."""
    if not folder.is_dir():
        return {}
    return {p.stem: p for p in sorted(folder.iterdir())
            if p.is_file() and p.suffix.lower() in suffixes and not p.name.startswith(".")}


def _subfolders(root: Path) -> list[Path]:
    return [p for p in sorted(root.iterdir()) if p.is_dir() and not p.name.startswith(".")]


def _check_folder(root) -> Path:
    root = Path(root)
    if not root.is_dir():
        raise InputError(root, "corpus folder not found")
    return root


# --------------------------------------------------------------------------------------------
# GRID
# --------------------------------------------------------------------------------------------
def is_grid_folders(root: Path) -> bool:
    """Whether some ``<root>/<spk>/`` has ``audio/`` and ``video/`` subfolders."""
    return any((d / "audio").is_dir() and (d / "video").is_dir() for d in _subfolders(root))


def read_grid_folders(root, problems: list | None = None) -> list[Clip]:
    """Read the ``<root>/<spk>/{audio,video,align}/`` layout (that of ``shared/data/grid``).

    A clip needs an audio file; one without video is kept as an audio-only clip (noted in
    ``extra["notes"]``); a video without audio is skipped and reported in ``problems``.
    """
    root = _check_folder(root)
    problems = [] if problems is None else problems
    listed = _CorpusManifest(root.parent / "manifests" / "grid.csv")
    clips = []
    for spk_dir in _subfolders(root):
        audio = _files(spk_dir / "audio", AUDIO_SUFFIXES)
        video = _files(spk_dir / "video", VIDEO_SUFFIXES)
        align = _files(spk_dir / "align", (".align",))
        for code in sorted(set(video) - set(audio)):
            problems.append(CorpusProblem(str(video[code]), "video without an audio file",
                                          id=f"{spk_dir.name}_{code}"))
        for code, audio_path in audio.items():
            clip_id = f"{spk_dir.name}_{code}"
            extra = listed.extra(clip_id)
            if code not in video:
                extra["notes"] = "; ".join(filter(None, [extra.get("notes"), "no video file"]))
            clips.append(Clip(clip_id, spk_dir.name, audio_path, video.get(code),
                              listed.split(clip_id), align.get(code), extra))
    return clips


def _distribution_videos(spk_dir: Path) -> list[Path]:
    return sorted(p for p in spk_dir.rglob("*") if p.suffix.lower() in VIDEO_SUFFIXES
                  and p.is_file() and not p.name.startswith("."))


def is_grid_distribution(root: Path) -> bool:
    """Whether some ``<root>/<spk>/`` holds video containers (at any depth)."""
    return any(_distribution_videos(d) for d in _subfolders(root))


def _find_align(root: Path, speaker: str, code: str) -> Path | None:
    for folder in (root / speaker / "align", root / "align" / speaker,
                   root / "alignments" / speaker):
        path = folder / f"{code}.align"
        if path.is_file():
            return path
    return None


def read_grid_distribution(root, problems: list | None = None) -> list[Clip]:
    """Read the standard GRID distribution: ``<root>/<spk>/**/<code>.mpg`` with the audio in
    the container. ``Clip.audio`` and ``Clip.video`` both point at the container (its audio is
    decoded and cached as a 16 kHz wav by :func:`pyro_avss.data.prepare.prepare_corpus`).
    Folders named ``align``/``alignments`` are not speakers.
    """
    root = _check_folder(root)
    problems = [] if problems is None else problems
    listed = _CorpusManifest(root.parent / "manifests" / "grid.csv")
    clips, seen = [], {}
    for spk_dir in _subfolders(root):
        if spk_dir.name in ("align", "alignments"):
            continue
        for path in _distribution_videos(spk_dir):
            clip_id = f"{spk_dir.name}_{path.stem}"
            if clip_id in seen:
                problems.append(CorpusProblem(str(path), f"duplicate clip id {clip_id} "
                                              f"(also {seen[clip_id]})", id=clip_id))
                continue
            seen[clip_id] = path
            clips.append(Clip(clip_id, spk_dir.name, path, path, listed.split(clip_id),
                              _find_align(root, spk_dir.name, path.stem),
                              listed.extra(clip_id)))
    return clips


# --------------------------------------------------------------------------------------------
# speaker folders (LibriSpeech-like)
# --------------------------------------------------------------------------------------------
def _speaker_and_id(root: Path, path: Path) -> tuple[str, str]:
    """Speaker and clip id of an audio file in a speaker-folder corpus.

    LibriSpeech names (``<spk>-<chapter>-<utt>``) give the speaker and are the id; otherwise the
    speaker is the first folder below ``root`` and the id is ``<speaker>_<stem>`` unless the stem
    already starts with the speaker name.
    """
    match = LIBRISPEECH_NAME.match(path.stem)
    if match:
        return match.group(1), path.stem
    speaker = path.relative_to(root).parts[0]
    return speaker, path.stem if path.stem.startswith(speaker) else f"{speaker}_{path.stem}"


def read_speaker_folders(root, problems: list | None = None) -> list[Clip]:
    """Read ``<root>/<speaker>/**/<utt>.(flac|wav|ogg)`` (audio only); see
    :func:`_speaker_and_id` for how speakers and ids are named. Files directly in ``root`` and
    duplicate ids are skipped and reported.
    """
    root = _check_folder(root)
    problems = [] if problems is None else problems
    listed = _CorpusManifest(root.parent / "manifests" / "librispeech.csv")
    clips, seen = [], {}
    for path in sorted(root.rglob("*")):
        if path.suffix.lower() not in AUDIO_SUFFIXES or not path.is_file() or \
                any(part.startswith(".") for part in path.relative_to(root).parts):
            continue
        if path.parent == root and not LIBRISPEECH_NAME.match(path.stem):
            problems.append(CorpusProblem(str(path), "audio file outside a speaker folder"))
            continue
        speaker, clip_id = _speaker_and_id(root, path)
        if clip_id in seen:
            problems.append(CorpusProblem(str(path), f"duplicate clip id {clip_id} "
                                          f"(also {seen[clip_id]})", id=clip_id))
            continue
        seen[clip_id] = path
        clips.append(Clip(clip_id, speaker, path, None, listed.split(clip_id),
                          extra=listed.extra(clip_id)))
    return clips


# --------------------------------------------------------------------------------------------
# manifests
# --------------------------------------------------------------------------------------------
def _manifest_bases(csv_path: Path) -> list[Path]:
    """Folders relative paths of a manifest may start from: the CSV's folder and, for a CSV
    inside a folder named ``manifests`` (the ``shared/data`` layout), that folder's parent."""
    bases = [csv_path.parent]
    if csv_path.parent.name == "manifests":
        bases.append(csv_path.parent.parent)
    return bases


def _resolve(bases: list[Path], value: str | None) -> Path | None:
    """Absolute path of a manifest entry: the first base where it exists, else the first."""
    if value is None or not value.strip():
        return None
    path = Path(value.strip()).expanduser()
    if path.is_absolute():
        return path
    return next((b / path for b in bases if (b / path).exists()), bases[0] / path)


def _manifest_row(base: list[Path], row: dict, id_column: str) -> Clip:
    """One manifest row as a Clip; raises ``ValueError(reason)`` when the row is unusable."""
    if None in row:
        raise ValueError(f"{len(row) - 1 + len(row[None])} fields, more than the header")
    if any(value is None for value in row.values()):
        raise ValueError("fewer fields than the header")
    clip_id, speaker = row[id_column].strip(), row["speaker"].strip()
    if not clip_id or not speaker:
        raise ValueError("empty " + ("id" if not clip_id else "speaker"))
    audio = _resolve(base, row["audio"])
    if audio is None:
        raise ValueError("empty audio path")
    if not audio.is_file():
        raise ValueError(f"audio file not found ({audio})")
    video = _resolve(base, row.get("video"))
    if video is not None and not video.is_file():
        raise ValueError(f"video file not found ({video})")
    split = (row.get("split") or "").strip().lower() or None
    if split is not None and split not in SPLIT_ALIASES:
        raise ValueError(f"unknown split {split!r} (use {', '.join(SPLITS)})")
    align = _resolve(base, row.get("align"))
    extra = {k: v for k, v in row.items() if k not in (id_column, "speaker", "audio", "video",
                                                        "split", "align")}
    if align is not None and not align.is_file():
        extra["notes"] = f"align file not found ({align})"
        align = None
    return Clip(clip_id, speaker, audio, video, SPLIT_ALIASES.get(split), align, extra)


def read_manifest(csv_path) -> tuple[list[Clip], list[CorpusProblem]]:
    """Read a CSV manifest: columns ``id`` (or ``clip_id``/``utt_id``), ``speaker``, ``audio``;
    optional ``video``, ``split``, ``align``; other columns go to ``Clip.extra``. Relative paths
    are relative to the CSV's folder.

    Unusable rows (missing file, empty field, wrong number of fields, unknown split, duplicate
    id) are skipped and returned as problems. A missing ``align`` file only drops the alignment
    (noted in ``extra["notes"]``).

    :raises InputError: the file is missing, not CSV text, or lacks a required column.
    """
    csv_path = Path(csv_path)
    if not csv_path.is_file():
        raise InputError(csv_path, "manifest not found")
    try:
        with open(csv_path, newline="", encoding="utf-8-sig") as handle:
            reader = csv.DictReader(handle)
            header = reader.fieldnames or []
            id_column = next((c for c in ID_COLUMNS if c in header), None)
            missing = [c for c in ("speaker", "audio") if c not in header]
            if id_column is None or missing:
                needed = (["id"] if id_column is None else []) + missing
                raise InputError(csv_path, f"manifest lacks column(s) {', '.join(needed)} "
                                           f"(header: {', '.join(header) or 'empty'})")
            rows = list(reader)
    except (UnicodeDecodeError, csv.Error) as exc:
        raise InputError(csv_path, f"not a readable CSV file ({exc})") from None
    clips, problems, seen = [], [], {}
    for number, row in enumerate(rows, start=1):
        try:
            clip = _manifest_row(_manifest_bases(csv_path), row, id_column)
            if clip.id in seen:
                raise ValueError(f"duplicate id {clip.id} (also row {seen[clip.id]})")
        except ValueError as exc:
            problems.append(CorpusProblem(str(csv_path), str(exc), number,
                                          (row.get(id_column) or "").strip() or None))
            continue
        seen[clip.id] = number
        clips.append(clip)
    return clips, problems


# --------------------------------------------------------------------------------------------
# detection
# --------------------------------------------------------------------------------------------
def scan_corpus(path) -> tuple[list[Clip], list[CorpusProblem]]:
    """Read a corpus from a manifest (``.csv``) or a folder, detecting the folder layout:
    GRID folders, then GRID distribution, then speaker folders.

    :raises InputError: missing path, unknown file type, or a folder in none of the layouts.
    """
    path = Path(path)
    if not path.exists():
        raise InputError(path, "corpus not found")
    if path.is_file():
        if path.suffix.lower() != ".csv":
            raise InputError(path, "a corpus is a folder or a .csv manifest")
        return read_manifest(path)
    problems: list[CorpusProblem] = []
    if is_grid_folders(path):
        clips = read_grid_folders(path, problems)
    elif is_grid_distribution(path):
        clips = read_grid_distribution(path, problems)
    else:
        clips = read_speaker_folders(path, problems)
    if not clips:
        raise InputError(path, "no clips found: expected GRID folders (<spk>/audio, <spk>/video), "
                               "a GRID distribution (<spk>/*.mpg), speaker folders "
                               "(<speaker>/**/*.flac|wav|ogg) or a .csv manifest")
    return clips, problems
