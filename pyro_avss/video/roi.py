"""Mouth regions of interest normalised for position, scale and rotation.

A :class:`MouthGeometry` says where the mouth is in a frame (pixels): its centre (midpoint of
the two mouth corners), the angle of the mouth-corner line, and the side of the square region
to cut out. :func:`crop_roi` maps that square onto an ``S x S`` grayscale image in which the
mouth centre is the image centre and the mouth-corner line is horizontal.

Scale: the ROI side is ``ROI_SIDE_PER_EYE_DISTANCE`` times the distance between the outer eye
corners. On GRID s1/s4 (12 clips, face mesh) that distance jitters 0.3-0.6 % from frame to
frame and varies 0.5-1 % over a clip, against 0.9-1.7 % jitter and 1-4 % variation for the
mouth width, which also changes with what is said; the mouth width is 0.52-0.59 of the eye
distance, so the ROI side is about 1.8 mouth widths.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

ROI_SIDE_PER_EYE_DISTANCE = 1.0


@dataclass(frozen=True)
class MouthGeometry:
    """Where to cut a mouth ROI.

    :param cx, cy: mouth centre (pixels, x to the right, y down).
    :param angle: angle of the mouth-corner line (radians, from +x towards +y).
    :param side: side of the square region in source pixels.
    """

    cx: float
    cy: float
    angle: float
    side: float


def geometry_from_landmarks(left_corner, right_corner, left_eye, right_eye,
                            side_per_eye_distance: float = ROI_SIDE_PER_EYE_DISTANCE
                            ) -> MouthGeometry:
    """Geometry from the two mouth corners and the two outer eye corners (pixel ``(x, y)``).

    "left"/"right" are image left/right (the subject's right/left).
    """
    left, right = np.asarray(left_corner, float), np.asarray(right_corner, float)
    centre = (left + right) / 2.0
    dx, dy = right - left
    eye_distance = float(np.hypot(*(np.asarray(right_eye, float) - np.asarray(left_eye, float))))
    return MouthGeometry(float(centre[0]), float(centre[1]), math.atan2(dy, dx),
                         side_per_eye_distance * eye_distance)


def roi_affine(geometry: MouthGeometry, size: int) -> np.ndarray:
    """The ``(2, 3)`` affine matrix taking source pixels to ROI pixels.

    ``u = (size / side) * R(-angle) @ (p - centre) + (size - 1) / 2`` so the centre lands in the
    middle of the ROI and the mouth-corner line is horizontal.
    """
    scale = size / geometry.side
    c, s = math.cos(geometry.angle) * scale, math.sin(geometry.angle) * scale
    rotation = np.array([[c, s], [-s, c]])
    offset = (size - 1) / 2.0 - rotation @ np.array([geometry.cx, geometry.cy])
    return np.hstack([rotation, offset[:, None]])


def to_gray(rgb: np.ndarray) -> np.ndarray:
    """``(H, W, 3)`` uint8 RGB -> ``(H, W)`` uint8 grayscale."""
    return cv2.cvtColor(np.ascontiguousarray(rgb), cv2.COLOR_RGB2GRAY)


def crop_roi(gray: np.ndarray, geometry: MouthGeometry, size: int = 64) -> np.ndarray:
    """Cut the normalised ``(size, size)`` uint8 mouth ROI out of a grayscale frame.

    Large regions are first halved with a Gaussian pyramid so that bilinear resampling does not
    alias; pixels outside the frame repeat the border.
    """
    while geometry.side > 2.5 * size and min(gray.shape[:2]) > 2 * size:
        gray = cv2.pyrDown(gray)
        geometry = MouthGeometry(geometry.cx / 2, geometry.cy / 2, geometry.angle,
                                 geometry.side / 2)  # pyrDown: pixel j <- source 2j
    return cv2.warpAffine(gray, roi_affine(geometry, size), (size, size),
                          flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)


def resize_frame(gray: np.ndarray, size: int = 64) -> np.ndarray:
    """Resize a whole grayscale frame (already a mouth ROI) to ``(size, size)`` uint8."""
    shrink = gray.shape[0] > size or gray.shape[1] > size
    return cv2.resize(gray, (size, size), interpolation=cv2.INTER_AREA if shrink
                      else cv2.INTER_LINEAR)
