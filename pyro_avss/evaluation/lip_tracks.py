"""The lip tracks of an evaluation's videos, extracted once and cached in its output folder."""

from __future__ import annotations

import hashlib
from pathlib import Path

from ..errors import InputError


class TrackCache:
    """Lip tracks of videos, extracted once with ``detector`` and cached in ``folder``."""

    def __init__(self, folder: Path, detector: str):
        self.folder, self.detector = Path(folder), detector
        self._detector_obj = None

    def path(self, video: Path) -> Path:
        digest = hashlib.sha1(str(Path(video).resolve()).encode()).hexdigest()[:10]
        return self.folder / f"{Path(video).stem}-{digest}.npz"

    def get(self, video):
        """The track of ``video`` (None for None). :raises InputError: unreadable video."""
        from ..video.track import LipTrack, extract_lip_track

        if video is None:
            return None
        cached = self.path(video)
        if cached.exists():
            try:
                return LipTrack.load(cached)
            except InputError:
                cached.unlink()                 # corrupt cache: extract again
        track = extract_lip_track(video, detector=self.detector)
        track.save(cached)
        return track


__all__ = ["TrackCache"]
