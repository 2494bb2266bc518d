"""Alignment of per-video-frame features to STFT frames, by timestamp.

Both clocks start at the same instant: video timestamps are seconds from the start of the video
stream and audio sample 0 is at 0 s (true for the prepared corpora; see
:mod:`pyro_avss.video.decode`). STFT frame ``n`` of a signal is centred at ``n * hop / sr``.

**Trimming.** To use the audio from ``start_s`` on, pass
``frame_times = start_s + np.arange(T) * hop / sr``: the same shift then applies to the video,
so a trimmed excerpt still gets the lips that were filmed while it was spoken.

Video shorter than the audio: STFT frames beyond the last video frame (by more than half a
frame period) are marked invalid, never filled in. Video longer than the audio: the extra video
frames are simply not used.
"""

from __future__ import annotations

import numpy as np


def align_to_frames(video_times, frame_times, face_found, frame_period: float | None = None
                    ) -> tuple[np.ndarray, np.ndarray]:
    """Pick the nearest video frame for every STFT frame.

    :param video_times: video frame timestamps (s), shape ``(N,)`` (normally increasing).
    :param frame_times: STFT frame centre times (s), shape ``(T,)``.
    :param face_found: ``bool`` ``(N,)``: whether the video frame has a face.
    :param frame_period: video frame period (s); default the median timestamp step
        (1/25 s if there is a single frame).
    :returns: ``index`` int64 ``(T,)`` (nearest video frame; 0 where nothing is near) and
        ``valid`` bool ``(T,)``: False where the nearest frame has no face or the time lies
        more than half a frame period before the first or after the last video frame.
    """
    video_times = np.asarray(video_times, np.float64)
    frame_times = np.asarray(frame_times, np.float64)
    face_found = np.asarray(face_found, bool)
    if video_times.shape != face_found.shape:
        raise ValueError(f"video_times {video_times.shape} and face_found {face_found.shape} "
                         "must have the same shape")
    if video_times.size == 0:
        return np.zeros(frame_times.shape, np.int64), np.zeros(frame_times.shape, bool)
    order = np.argsort(video_times, kind="stable")  # tolerate out-of-order timestamps
    times = video_times[order]
    if frame_period is None:
        frame_period = float(np.median(np.diff(times))) if times.size > 1 else 0.04
    right = np.clip(np.searchsorted(times, frame_times), 1, max(times.size - 1, 1))
    left = right - 1
    if times.size == 1:
        nearest = np.zeros(frame_times.shape, np.int64)
    else:
        closer_left = frame_times - times[left] <= times[right] - frame_times
        nearest = np.where(closer_left, left, right)
    index = order[nearest].astype(np.int64)
    half = 0.5 * frame_period
    inside = (frame_times >= times[0] - half) & (frame_times <= times[-1] + half)
    return index, inside & face_found[index]


def align_features(values, index, valid) -> np.ndarray:
    """Gather per-video-frame ``values`` ``(N, ...)`` onto STFT frames: ``(T, ...)``.

    Rows where ``valid`` is False are zero.
    """
    values = np.asarray(values)
    index, valid = np.asarray(index), np.asarray(valid, bool)
    out = np.zeros((index.shape[0],) + values.shape[1:], dtype=values.dtype)
    out[valid] = values[index[valid]]
    return out
