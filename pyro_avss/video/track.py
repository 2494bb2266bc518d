"""Lip tracks: per-frame mouth ROIs and lip landmarks of a video, and their cache files.

A :class:`LipTrack` is what the visual front end extracts once per clip (see
:func:`extract_lip_track`) and what training and separation read back (``LipTrack.load``).
Frames where no face was found keep an all-zero ROI, NaN landmarks and ``face_found = False``:
nothing is interpolated or invented.
"""

from __future__ import annotations

import os
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import InputError
from .decode import VideoReader, no_frames_error
from .landmarks import INNER_LIP_PAIRS, MOUTH_CORNERS, make_detector, native_stderr_filtered
from .roi import crop_roi, resize_frame, to_gray

TRACK_KEYS = ("rois", "landmarks", "timestamps", "fps", "face_found", "detector")


@dataclass
class LipTrack:
    """Mouth ROIs and lip landmarks of one video.

    :param rois: ``uint8`` grayscale mouth ROIs ``(N, S, S)``; all zero where no face was found.
    :param landmarks: ``float32`` lip landmarks ``(N, L, 2)`` in pixels of the original frame
        (x right, y down; order of :data:`pyro_avss.video.landmarks.LIP_MESH_INDICES`); NaN
        where no face was found; ``L = 0`` for detectors without landmarks.
    :param timestamps: ``float64`` frame presentation times (s) ``(N,)``.
    :param fps: average frame rate of the video.
    :param face_found: ``bool`` ``(N,)``.
    :param detector: name of the detector that produced the track.
    """

    rois: np.ndarray
    landmarks: np.ndarray
    timestamps: np.ndarray
    fps: float
    face_found: np.ndarray
    detector: str

    @property
    def num_frames(self) -> int:
        return int(self.rois.shape[0])

    @property
    def face_ratio(self) -> float:
        """Fraction of frames with a face (0 for an empty track)."""
        return float(self.face_found.mean()) if self.num_frames else 0.0

    @property
    def duration(self) -> float:
        """End of the last frame (s): its timestamp plus one frame period."""
        return float(self.timestamps[-1] + 1.0 / self.fps) if self.num_frames else 0.0

    def save(self, path: str | Path) -> None:
        """Write a compressed ``.npz`` (atomically: a temporary file renamed into place)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + f".tmp{os.getpid()}")
        with open(tmp, "wb") as handle:
            np.savez_compressed(handle, rois=self.rois, landmarks=self.landmarks,
                                timestamps=self.timestamps, fps=np.float64(self.fps),
                                face_found=self.face_found, detector=np.str_(self.detector))
        os.replace(tmp, path)

    @classmethod
    def load(cls, path: str | Path) -> "LipTrack":
        """Read a track written by :meth:`save`.

        :raises InputError: missing, unreadable or inconsistent file.
        """
        path = Path(path)
        if not path.exists():
            raise InputError(path, "lip track not found")
        try:
            with np.load(path, allow_pickle=False) as data:
                missing = [key for key in TRACK_KEYS if key not in data.files]
                if missing:
                    raise InputError(path, f"corrupt lip track (missing {', '.join(missing)})")
                arrays = {key: data[key] for key in TRACK_KEYS}
        except InputError:
            raise
        except (OSError, ValueError, EOFError, zipfile.BadZipFile, KeyError,
                zlib.error) as exc:
            raise InputError(path, f"corrupt lip track ({type(exc).__name__}: {exc})") from None
        track = cls(rois=arrays["rois"], landmarks=arrays["landmarks"],
                    timestamps=arrays["timestamps"], fps=float(arrays["fps"]),
                    face_found=arrays["face_found"], detector=str(arrays["detector"]))
        problem = track.check()
        if problem:
            raise InputError(path, f"corrupt lip track ({problem})")
        return track

    def check(self) -> str | None:
        """Describe the first inconsistency of shapes/dtypes, or ``None`` if the track is sound."""
        n = self.rois.shape[0] if self.rois.ndim else -1
        if self.rois.dtype != np.uint8 or self.rois.ndim != 3 or \
                self.rois.shape[1] != self.rois.shape[2]:
            return f"rois must be uint8 (N, S, S), got {self.rois.dtype} {self.rois.shape}"
        if self.landmarks.ndim != 3 or self.landmarks.shape[0] != n or \
                self.landmarks.shape[2] != 2:
            return f"landmarks must be (N, L, 2) with N = {n}, got {self.landmarks.shape}"
        if self.timestamps.shape != (n,) or self.face_found.shape != (n,):
            return f"timestamps and face_found must have shape ({n},)"
        if self.face_found.dtype != np.bool_:
            return "face_found must be boolean"
        if not np.isfinite(self.fps) or self.fps <= 0:
            return f"fps must be positive, got {self.fps}"
        return None


def extract_lip_track(video_path: str | Path, detector="mediapipe", roi_size: int = 64
                      ) -> LipTrack:
    """Decode a video and extract its mouth ROIs and lip landmarks frame by frame.

    :param video_path: any video PyAV can decode.
    :param detector: a name (``"mediapipe"``, ``"haar"``, ``"roi"``, ``"auto"``; see
        :mod:`pyro_avss.video.landmarks`) or a detector object to reuse (it is reset first).
    :param roi_size: side S of the ROIs (pixels).
    :raises InputError: missing file, not a video, or no decodable frame.
    """
    with native_stderr_filtered():          # MediaPipe's informational lines, not the rest
        return _extract(video_path, detector, roi_size)


def _extract(video_path, detector, roi_size: int) -> LipTrack:
    owned = isinstance(detector, str)
    det = make_detector(detector) if owned else detector
    try:
        det.reset()
        rois, lips, times, found = [], [], [], []
        empty_lips = np.full((det.num_landmarks, 2), np.nan, np.float32)
        with VideoReader(video_path) as reader:
            for t, rgb in reader:
                gray = to_gray(rgb)
                obs = det.observe(rgb, gray)
                times.append(t)
                found.append(obs is not None)
                if obs is None:
                    rois.append(np.zeros((roi_size, roi_size), np.uint8))
                    lips.append(empty_lips)
                    continue
                rois.append(resize_frame(gray, roi_size) if obs.geometry is None
                            else crop_roi(gray, obs.geometry, roi_size))
                lips.append(obs.lips.astype(np.float32) if len(obs.lips) else empty_lips)
            fps, reason = reader.fps, reader.truncated
    finally:
        if owned:
            det.close()
    if not times:
        raise no_frames_error(video_path, reason)
    return LipTrack(rois=np.stack(rois), landmarks=np.stack(lips),
                    timestamps=np.asarray(times, np.float64), fps=float(fps),
                    face_found=np.asarray(found, bool), detector=det.name)


def mouth_opening(track: LipTrack) -> np.ndarray:
    """Inner-lip vertical opening divided by the mouth width, per frame ``(N,)`` float64.

    The opening is the mean distance of three facing inner-lip point pairs around the mouth
    centre; the width is the distance between the mouth corners. NaN where no face was found.

    :raises ValueError: the track has no landmarks (e.g. from the ``haar`` or ``roi`` detector).
    """
    if track.landmarks.shape[1] == 0:
        raise ValueError(f"lip track from detector {track.detector!r} has no landmarks; "
                         "mouth opening needs the 'mediapipe' detector")
    lm = track.landmarks.astype(np.float64)
    opening = np.mean([np.linalg.norm(lm[:, a] - lm[:, b], axis=-1) for a, b in INNER_LIP_PAIRS],
                      axis=0)
    width = np.linalg.norm(lm[:, MOUTH_CORNERS[1]] - lm[:, MOUTH_CORNERS[0]], axis=-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        ratio = opening / width
    ratio[~track.face_found] = np.nan
    return ratio
