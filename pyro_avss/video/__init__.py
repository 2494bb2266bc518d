"""Visual front end: video decoding, face/lip landmarks, mouth ROIs, alignment to STFT frames.

* :mod:`.decode`: PyAV decoding with real timestamps (:func:`read_video`, :class:`VideoReader`,
  :func:`read_audio_track` for audio inside a container).
* :mod:`.landmarks`: face/lip detectors (MediaPipe face mesh, Haar cascade, whole-frame ROI).
* :mod:`.roi`: mouth ROIs normalised for position, scale and rotation.
* :mod:`.track`: :class:`LipTrack` (ROIs + landmarks per frame, ``.npz`` cache),
  :func:`extract_lip_track`, :func:`mouth_opening`.
* :mod:`.align`: per-video-frame values onto STFT frames (:func:`align_to_frames`,
  :func:`align_features`).

The names below are imported on first use (PEP 562): importing one submodule, e.g.
:mod:`.align` on an audio-only path, must not pull in OpenCV, PyAV and MediaPipe with the rest.
"""

from importlib import import_module

_WHERE = {"align_features": "align", "align_to_frames": "align", "VideoFrames": "decode",
          "VideoReader": "decode", "read_audio_track": "decode", "read_video": "decode",
          "LipTrack": "track", "extract_lip_track": "track", "mouth_opening": "track"}

__all__ = ["VideoFrames", "VideoReader", "read_video", "read_audio_track", "LipTrack",
           "extract_lip_track", "mouth_opening", "align_to_frames", "align_features"]


def __getattr__(name: str):
    if name not in _WHERE:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(import_module(f".{_WHERE[name]}", __name__), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(list(globals()) + __all__)
