"""Choosing clips and noise recordings for test mixtures."""

from __future__ import annotations

import csv
from pathlib import Path

from ..audio import AUDIO_SUFFIXES
from ..errors import InputError
from .clips import Clip


def read_noises(path: str | Path) -> list[tuple[str, Path]]:
    """``(name, path)`` of noise recordings: every audio file of a folder (name = file stem), or
    the rows of a CSV with columns ``name, audio`` (paths relative to the CSV; a CSV in a
    ``manifests/`` folder may also be relative to its parent, as in ``../shared/data``)."""
    path = Path(path)
    if not path.exists():
        raise InputError(path, "noise folder or CSV not found")
    if path.is_dir():
        noises = [(p.stem, p) for p in sorted(path.iterdir()) if p.suffix.lower() in AUDIO_SUFFIXES]
    else:
        noises = []
        with open(path, newline="") as f:
            for i, row in enumerate(csv.DictReader(f), start=2):
                if not row.get("name") or not row.get("audio"):
                    raise InputError(path, f"row {i}: needs 'name' and 'audio'")
                audio = Path(row["audio"])
                if not audio.is_absolute():
                    here, above = path.parent / audio, path.parent.parent / audio
                    audio = here if here.exists() or not above.exists() else above
                noises.append((row["name"], audio))
    if not noises:
        raise InputError(path, "no noise recordings found")
    return noises


def select_clips(clips: list[Clip], split: str | None = None, speakers=None,
                 per_speaker: int | None = None) -> list[Clip]:
    """Clips of ``split`` and ``speakers`` (all when None), at most ``per_speaker`` each, in id
    order so that the choice is deterministic."""
    wanted = {str(s) for s in speakers} if speakers else None
    out, count = [], {}
    for clip in sorted(clips, key=lambda c: c.id):
        if (split and clip.split != split) or (wanted and str(clip.speaker) not in wanted):
            continue
        if per_speaker and count.get(clip.speaker, 0) >= per_speaker:
            continue
        count[clip.speaker] = count.get(clip.speaker, 0) + 1
        out.append(clip)
    return out
