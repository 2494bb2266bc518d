"""Visual front end: video decoding, face/lip landmarks, mouth ROIs, alignment to STFT frames.

* :mod:`.decode`: PyAV decoding with real timestamps (:func:`read_video`, :class:`VideoReader`,
  :func:`read_audio_track` for audio inside a container).
* :mod:`.landmarks`: face/lip detectors (MediaPipe face mesh, Haar cascade, whole-frame ROI).
* :mod:`.roi`: mouth ROIs normalised for position, scale and rotation.
* :mod:`.track`: :class:`LipTrack` (ROIs + landmarks per frame, ``.npz`` cache),
  :func:`extract_lip_track`, :func:`mouth_opening`.
* :mod:`.align`: per-video-frame values onto STFT frames (:func:`align_to_frames`,
  :func:`align_features`).
"""

from .align import align_features, align_to_frames
from .decode import VideoFrames, VideoReader, read_audio_track, read_video
from .track import LipTrack, extract_lip_track, mouth_opening

__all__ = ["VideoFrames", "VideoReader", "read_video", "read_audio_track", "LipTrack",
           "extract_lip_track", "mouth_opening", "align_to_frames", "align_features"]
