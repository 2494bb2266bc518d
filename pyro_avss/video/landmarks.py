"""Face and lip detectors: one frame in, lip landmarks and a mouth geometry out.

Every detector has ``name``, ``num_landmarks`` (L), ``reset()`` (call at the start of each
video: forgets tracking state), ``observe(rgb, gray) -> FaceObservation | None`` (``None``: no
face in this frame) and ``close()``. :func:`make_detector` builds one by name:

* ``"mediapipe"``: MediaPipe face mesh (legacy ``solutions.face_mesh``, tracking mode, 468
  points); lip landmarks are the 40 lip points listed in :data:`LIP_MESH_INDICES`, the ROI is
  placed from the mouth corners and the outer eye corners.
* ``"haar"``: OpenCV's Haar frontal-face cascade; the mouth is placed at a fixed position in the
  lower-middle part of the face box; no landmarks (L = 0).
* ``"roi"``: the frame already is a mouth ROI (corpora that ship lip crops, the demo corpus);
  a frame counts as a face unless it is essentially constant; no landmarks.
* ``"auto"``: ``mediapipe`` if it can be imported, otherwise ``haar``.
"""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
from dataclasses import dataclass

import cv2
import numpy as np

from .face_mesh_import import face_mesh_module
from .roi import ROI_SIDE_PER_EYE_DISTANCE, MouthGeometry, geometry_from_landmarks

# MediaPipe's native logging (glog/absl, TensorFlow Lite) prints several informational lines per
# detector; keep warnings and errors only, unless the user chose a level.
os.environ.setdefault("GLOG_minloglevel", "2")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

# Face-mesh lip contours, each from image-left to image-right. The lower contours leave out the
# corners they share with the upper ones, so every point appears once (40 points in all).
OUTER_UPPER = (61, 185, 40, 39, 37, 0, 267, 269, 270, 409, 291)
OUTER_LOWER = (146, 91, 181, 84, 17, 314, 405, 321, 375)
INNER_UPPER = (78, 191, 80, 81, 82, 13, 312, 311, 310, 415, 308)
INNER_LOWER = (95, 88, 178, 87, 14, 317, 402, 318, 324)
LIP_MESH_INDICES = OUTER_UPPER + OUTER_LOWER + INNER_UPPER + INNER_LOWER
"""Face-mesh indices of the lip landmarks, in the order they are stored in a ``LipTrack``."""

EYE_OUTER_CORNERS = (33, 263)  # image-left, image-right outer eye corners of the face mesh


def lip_position(mesh_index: int) -> int:
    """Position in :data:`LIP_MESH_INDICES` (and in ``LipTrack.landmarks``) of a mesh point."""
    return LIP_MESH_INDICES.index(mesh_index)


MOUTH_CORNERS = (lip_position(61), lip_position(291))
"""Positions of the image-left and image-right mouth corners in the lip landmarks."""
INNER_LIP_PAIRS = tuple((lip_position(a), lip_position(b)) for a, b in ((82, 87), (13, 14),
                                                                          (312, 317)))
"""Positions of (upper, lower) inner-lip points facing each other around the mouth centre."""

# Haar face box -> mouth, measured against face-mesh landmarks on 240 GRID s1/s4 frames: the
# mouth centre lies at (0.514, 0.821) of the box (sd 0.007, 0.010) and the outer-eye distance
# is 0.489 box widths (sd 0.014).
HAAR_MOUTH_X, HAAR_MOUTH_Y, HAAR_EYE_DISTANCE = 0.514, 0.821, 0.489


@dataclass
class FaceObservation:
    """What a detector found in one frame.

    :param lips: ``(L, 2)`` float32 lip landmarks in image pixels (``L = 0`` without landmarks).
    :param geometry: where to cut the mouth ROI, or ``None`` when the whole frame is the ROI.
    """

    lips: np.ndarray
    geometry: MouthGeometry | None


def _no_landmarks() -> np.ndarray:
    return np.zeros((0, 2), dtype=np.float32)


def _downscale(image: np.ndarray, max_side: int) -> np.ndarray:
    """Shrink ``image`` (area averaging) so that its longer side is at most ``max_side``."""
    h, w = image.shape[:2]
    factor = max_side / max(h, w)
    if factor >= 1.0:
        return image
    return cv2.resize(image, (max(1, round(w * factor)), max(1, round(h * factor))),
                      interpolation=cv2.INTER_AREA)


#: What MediaPipe's native code prints on stderr whenever it builds a face-mesh graph or one of its
#: TensorFlow Lite models, before any logging level applies. The last one is a note about the
#: face-mesh graph's own internal wiring, which the Python solution API does not expose.
NATIVE_CHATTER = ("inference_feedback_manager", "TensorFlow Lite XNNPACK delegate",
                  "absl::InitializeLog", "landmark_projection_calculator")


@contextlib.contextmanager
def native_stderr_filtered(drop=NATIVE_CHATTER):
    """Collect what is written to file descriptor 2 meanwhile (by native libraries, which write
    there directly, and by Python) and write it back afterwards without the lines that contain
    one of ``drop``; everything else, warnings included, still reaches stderr."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as buffer:
        try:
            os.dup2(buffer.fileno(), 2)
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            buffer.seek(0)
            kept = [line for line in buffer.read().decode(errors="replace").splitlines(keepends=True)
                    if not any(d in line for d in drop)]
            if kept:
                sys.stderr.write("".join(kept))
                sys.stderr.flush()


class MediapipeLipDetector:
    """MediaPipe face mesh (tracking mode) on frames shrunk to ``max_side`` pixels at most;
    landmarks are mapped back to the original pixel grid."""

    name = "mediapipe"
    num_landmarks = len(LIP_MESH_INDICES)

    def __init__(self, max_side: int = 640, min_detection_confidence: float = 0.5,
                 min_tracking_confidence: float = 0.5):
        os.environ.setdefault("GLOG_minloglevel", "2")  # keep MediaPipe's C++ logging quiet
        face_mesh = face_mesh_module()

        self._factory = lambda: face_mesh.FaceMesh(
            static_image_mode=False, max_num_faces=1, refine_landmarks=False,
            min_detection_confidence=min_detection_confidence,
            min_tracking_confidence=min_tracking_confidence)
        self.max_side = max_side
        self._mesh = None

    def reset(self) -> None:
        self.close()            # the next frame builds a fresh face mesh (no tracking state)

    def close(self) -> None:
        if self._mesh is not None:
            self._mesh.close()
            self._mesh = None

    def observe(self, rgb: np.ndarray, gray: np.ndarray) -> FaceObservation | None:
        if self._mesh is None:
            self._mesh = self._factory()
        result = self._mesh.process(np.ascontiguousarray(_downscale(rgb, self.max_side)))
        if not result.multi_face_landmarks:
            return None
        points = result.multi_face_landmarks[0].landmark
        h, w = rgb.shape[:2]

        def pixels(indices) -> np.ndarray:
            return np.array([(points[i].x * w, points[i].y * h) for i in indices], np.float32)

        lips = pixels(LIP_MESH_INDICES)
        eyes = pixels(EYE_OUTER_CORNERS)
        geometry = geometry_from_landmarks(lips[MOUTH_CORNERS[0]], lips[MOUTH_CORNERS[1]],
                                           eyes[0], eyes[1])
        return FaceObservation(lips, geometry)


class HaarMouthDetector:
    """OpenCV Haar frontal-face cascade; the largest face gives the mouth position."""

    name = "haar"
    num_landmarks = 0

    def __init__(self, max_side: int = 320, min_face_fraction: float = 0.15):
        path = os.path.join(cv2.data.haarcascades, "haarcascade_frontalface_default.xml")
        self._cascade = cv2.CascadeClassifier(path)
        if self._cascade.empty():
            raise RuntimeError(f"{path}: cannot load the Haar face cascade")
        self.max_side = max_side
        self.min_face_fraction = min_face_fraction

    def reset(self) -> None:
        pass

    def close(self) -> None:
        pass

    def observe(self, rgb: np.ndarray, gray: np.ndarray) -> FaceObservation | None:
        small = _downscale(gray, self.max_side)
        factor = gray.shape[1] / small.shape[1]
        min_side = max(20, int(self.min_face_fraction * min(small.shape[:2])))
        boxes = self._cascade.detectMultiScale(small, scaleFactor=1.1, minNeighbors=5,
                                               minSize=(min_side, min_side))
        if len(boxes) == 0:
            return None
        x, y, w, h = (float(v) * factor for v in max(boxes, key=lambda b: b[2] * b[3]))
        geometry = MouthGeometry(x + HAAR_MOUTH_X * w, y + HAAR_MOUTH_Y * h, 0.0,
                                 ROI_SIDE_PER_EYE_DISTANCE * HAAR_EYE_DISTANCE * w)
        return FaceObservation(_no_landmarks(), geometry)


class WholeFrameRoi:
    """For videos that already are mouth ROIs: every non-constant frame is a face."""

    name = "roi"
    num_landmarks = 0

    def __init__(self, min_std: float = 1.0):
        self.min_std = min_std

    def reset(self) -> None:
        pass

    def close(self) -> None:
        pass

    def observe(self, rgb: np.ndarray, gray: np.ndarray) -> FaceObservation | None:
        if float(gray.std()) < self.min_std:
            return None
        return FaceObservation(_no_landmarks(), None)


DETECTORS = ("auto", "mediapipe", "haar", "roi")


def mediapipe_available() -> bool:
    """Whether the MediaPipe face mesh can be imported."""
    try:
        face_mesh_module()
    except Exception:
        return False
    return True


def make_detector(name: str = "auto"):
    """Build a detector by name (one of :data:`DETECTORS`)."""
    if name == "auto":
        name = "mediapipe" if mediapipe_available() else "haar"
    if name == "mediapipe":
        return MediapipeLipDetector()
    if name == "haar":
        return HaarMouthDetector()
    if name == "roi":
        return WholeFrameRoi()
    raise ValueError(f"unknown detector {name!r} (use one of {', '.join(DETECTORS)})")
