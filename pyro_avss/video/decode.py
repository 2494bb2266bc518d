"""Video (and container audio) decoding with PyAV, keeping the real presentation timestamps.

Timestamps are **seconds relative to the start of the video stream**: ``(pts - start) * time_base``
where ``start`` is the stream's ``start_time`` (or the first frame's pts when the container does
not give one). For a file whose streams start together, sample 0 of the audio and a video
timestamp of 0 s are the same instant; :func:`read_audio_track` shifts container audio so that
this holds for every file it reads.

Damaged files: decoding stops at the first error and whatever decoded up to there is returned
(``VideoReader.truncated`` holds the reason); a file with no decodable frame is an
:class:`~pyro_avss.errors.InputError`.
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Iterator

import numpy as np

from ..errors import InputError

VIDEO_SUFFIXES = (".mp4", ".mpg", ".mpeg", ".avi", ".mov", ".mkv", ".webm", ".m4v")


@dataclass
class VideoFrames:
    """A decoded video.

    :param frames: ``uint8`` RGB frames, shape ``(N, H, W, 3)``.
    :param timestamps: ``float64`` presentation times (s) from the frames' pts, shape ``(N,)``.
    :param fps: average frame rate of the stream (frames/s).
    """

    frames: np.ndarray
    timestamps: np.ndarray
    fps: float

    @property
    def num_frames(self) -> int:
        return int(self.frames.shape[0])

    @property
    def duration(self) -> float:
        """End of the last frame (s): its timestamp plus one frame period."""
        return float(self.timestamps[-1] + 1.0 / self.fps) if self.num_frames else 0.0


def _error_text(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


class VideoReader:
    """Iterate over the frames of a video file as ``(timestamp_s, rgb)`` pairs.

    Use as a context manager. ``fps``, ``width`` and ``height`` are known after opening;
    ``frames_read`` and ``truncated`` (``None`` or the decoder's complaint) after iterating.

    :raises InputError: missing file, unreadable container, or no video stream.
    """

    def __init__(self, path: str | Path):
        import av
        from av.video.reformatter import VideoReformatter

        self.path = Path(path)
        if not self.path.exists():
            raise InputError(self.path, "file not found")
        try:
            self._container = av.open(str(self.path))
        except Exception as exc:  # PyAV raises several error types for garbage input
            raise InputError(self.path, f"cannot open video ({_error_text(exc)})") from None
        if not self._container.streams.video:
            self._container.close()
            raise InputError(self.path, "no video stream")
        self._stream = self._container.streams.video[0]
        self._stream.thread_type = "AUTO"
        self.width = int(self._stream.codec_context.width)
        self.height = int(self._stream.codec_context.height)
        self.fps = _stream_rate(self._stream)
        # one converter to RGB for every frame: ``frame.to_ndarray(format=...)`` sets up a new
        # one per frame, which took 2-3 ms of a 360x288 frame's 0.1 ms conversion
        self._to_rgb = VideoReformatter()
        self.frames_read = 0
        self.truncated: str | None = None

    def __enter__(self) -> "VideoReader":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        self._container.close()

    def __iter__(self) -> Iterator[tuple[float, np.ndarray]]:
        time_base = self._stream.time_base or Fraction(1, 90000)
        start = self._stream.start_time
        previous = None
        decoder = self._container.decode(self._stream)
        while True:
            try:
                frame = next(decoder)
            except StopIteration:
                break
            except Exception as exc:  # corrupt or truncated data: keep what decoded
                self.truncated = _error_text(exc)
                break
            if frame.pts is None:  # no pts: continue at the nominal rate
                t = 0.0 if previous is None else previous + 1.0 / self.fps
            else:
                if start is None:
                    start = frame.pts
                t = float((frame.pts - start) * time_base)
            previous = t
            self.frames_read += 1
            yield t, self._to_rgb.reformat(frame, format="rgb24").to_ndarray()


def _stream_rate(stream) -> float:
    """Average frame rate of a PyAV video stream (falls back to the guessed rate, then 25)."""
    for rate in (stream.average_rate, stream.guessed_rate, stream.base_rate):
        if rate is not None and float(rate) > 0:
            return float(rate)
    return 25.0


def no_frames_error(path, reason: str | None) -> InputError:
    """The error for a video of which no frame could be decoded."""
    return InputError(path, "no decodable video frame" + (f" ({reason})" if reason else ""))


def read_video(path: str | Path) -> VideoFrames:
    """Decode all frames of a video file.

    :returns: :class:`VideoFrames` with RGB frames ``(N, H, W, 3)``, timestamps ``(N,)`` (s).
    :raises InputError: missing file, not a video, or no decodable frame.
    """
    frames, times = [], []
    with VideoReader(path) as reader:
        for t, rgb in reader:
            times.append(t)
            frames.append(rgb)
        fps, reason = reader.fps, reader.truncated
    if not frames:
        raise no_frames_error(path, reason)
    return VideoFrames(np.stack(frames), np.asarray(times, dtype=np.float64), fps)


def read_audio_track(path: str | Path, sample_rate: int = 16000) -> tuple[np.ndarray, float]:
    """Decode the audio stream of a container (e.g. a GRID ``.mpg``) as 16 kHz mono.

    The channels are averaged and the signal resampled with
    :func:`pyro_avss.audio.resample_audio`. The result is placed on the video clock: sample 0 is
    the start of the video stream (audio that starts later is preceded by zeros, audio that
    starts earlier is cut), so it lines up with :func:`read_video` timestamps.

    :returns: ``(audio (N,) float32, offset_s)`` where ``offset_s`` is the audio start minus the
        video start (0 without a video stream).
    :raises InputError: missing file, no audio stream, no decodable audio.
    """
    import av

    from ..audio import resample_audio

    path = Path(path)
    if not path.exists():
        raise InputError(path, "file not found")
    try:
        container = av.open(str(path))
    except Exception as exc:
        raise InputError(path, f"cannot open container ({_error_text(exc)})") from None
    try:
        if not container.streams.audio:
            raise InputError(path, "no audio stream")
        stream = container.streams.audio[0]
        chunks, first_time = _decode_audio_chunks(container, stream)
        video_start = _video_start_time(container)
    finally:
        container.close()
    if not chunks:
        raise InputError(path, "no decodable audio")
    audio = np.concatenate(chunks, axis=1).mean(axis=0).astype(np.float32)
    rate = int(stream.codec_context.sample_rate or stream.rate)
    if rate != sample_rate:
        audio = resample_audio(audio, rate, sample_rate)
    offset = 0.0 if video_start is None or first_time is None else first_time - video_start
    return _shift(audio, offset, sample_rate), offset


def _decode_audio_chunks(container, stream) -> tuple[list[np.ndarray], float | None]:
    """Float planar ``(channels, n)`` chunks of an audio stream and its first timestamp (s)."""
    import av

    resampler = av.AudioResampler(format="fltp")
    chunks, first_time = [], None
    decoder = container.decode(stream)
    while True:
        try:
            frame = next(decoder)
        except StopIteration:
            break
        except Exception:  # truncated or corrupt audio: keep what decoded
            break
        if first_time is None and frame.pts is not None and frame.time_base is not None:
            first_time = float(frame.pts * frame.time_base)
        for out in resampler.resample(frame):
            chunks.append(out.to_ndarray().astype(np.float32))
    return chunks, first_time


def _video_start_time(container) -> float | None:
    if not container.streams.video:
        return None
    stream = container.streams.video[0]
    if stream.start_time is None or stream.time_base is None:
        return None
    return float(stream.start_time * stream.time_base)


def _shift(audio: np.ndarray, offset_s: float, sample_rate: int) -> np.ndarray:
    """Pad (offset > 0) or cut (offset < 0) the start so that sample 0 is time 0."""
    n = int(round(offset_s * sample_rate))
    if n > 0:
        return np.concatenate([np.zeros(n, dtype=np.float32), audio])
    return audio[-n:] if n < 0 else audio


# --------------------------------------------------------------------------------------------
# writing (synthetic test videos, demo corpora, re-muxing)
# --------------------------------------------------------------------------------------------
_CODECS = {".mp4": ("libx264", "aac"), ".mkv": ("libx264", "flac"), ".mpg": ("mpeg1video", "mp2"),
           ".mpeg": ("mpeg1video", "mp2"), ".avi": ("mpeg4", "mp2"), ".mov": ("libx264", "aac")}


def write_video(path: str | Path, frames: np.ndarray, fps: float = 25.0, audio=None,
                sample_rate: int = 16000) -> None:
    """Encode frames (and optionally an audio track) into a container chosen by the suffix.

    :param frames: ``uint8`` ``(N, H, W, 3)`` RGB or ``(N, H, W)`` grayscale; H and W even.
    :param fps: frame rate; frame ``i`` gets the timestamp ``i / fps``.
    :param audio: optional float waveform ``(n,)`` or ``(n, channels)`` in [-1, 1].
    :param sample_rate: rate of ``audio`` (Hz; mp2 needs 16/22.05/24/32/44.1/48 kHz).
    """
    import av

    path = Path(path)
    video_codec, audio_codec = _CODECS.get(path.suffix.lower(), ("libx264", "aac"))
    frames = np.asarray(frames, dtype=np.uint8)
    if frames.ndim == 3:
        frames = np.repeat(frames[..., None], 3, axis=-1)
    rate = Fraction(fps).limit_denominator(1001)
    with av.open(str(path), "w") as container:
        vstream = container.add_stream(video_codec, rate=rate)
        vstream.width, vstream.height = frames.shape[2], frames.shape[1]
        vstream.pix_fmt = "yuv420p"
        astream = None
        if audio is not None:
            audio = np.asarray(audio, dtype=np.float32)
            audio = audio[:, None] if audio.ndim == 1 else audio
            astream = container.add_stream(audio_codec, rate=sample_rate)
            astream.layout = "mono" if audio.shape[1] == 1 else "stereo"
        for i, rgb in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24")
            frame.pts = i
            container.mux(vstream.encode(frame))
        container.mux(vstream.encode())
        if astream is not None:
            _encode_audio(container, astream, audio, sample_rate)


def _encode_audio(container, stream, audio: np.ndarray, sample_rate: int) -> None:
    """Encode ``audio`` ``(n, channels)`` in codec-sized frames (16-bit or float planar)."""
    import av

    size = stream.codec_context.frame_size or 1024
    planar_float = stream.codec_context.format.name == "fltp"
    for start in range(0, len(audio), size):
        chunk = audio[start:start + size]
        chunk = np.pad(chunk, ((0, size - len(chunk)), (0, 0)))
        data = chunk.T if planar_float else (np.clip(chunk.T, -1, 1) * 32767).astype(np.int16)
        fmt = "fltp" if planar_float else "s16p"
        frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(data), format=fmt,
                                           layout=stream.layout.name)
        frame.sample_rate, frame.pts = sample_rate, start
        container.mux(stream.encode(frame))
    container.mux(stream.encode())
