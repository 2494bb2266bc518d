"""The record every corpus reader produces and every consumer reads."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class Clip:
    """One utterance of one speaker.

    :param id: unique clip identifier (``<speaker>_<code>`` for GRID, the utterance id otherwise).
    :param speaker: speaker name.
    :param audio: path of the audio file (wav/flac/ogg, or a video container with an audio track).
    :param video: path of the face video, or None for audio-only clips.
    :param split: ``train``, ``dev``, ``test`` or None when the corpus does not say.
    :param align: path of a word-alignment file, or None.
    :param extra: any further columns a reader found (kept through manifests).
    """

    id: str
    speaker: str
    audio: Path
    video: Path | None = None
    split: str | None = None
    align: Path | None = None
    extra: dict = field(default_factory=dict)
