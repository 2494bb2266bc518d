"""Audio input/output and the short-time Fourier transform.

Conventions used throughout pyro_avss:

* waveforms are mono ``float32`` arrays/tensors of shape ``(..., N)`` in the range [-1, 1];
* spectrograms are complex tensors of shape ``(..., T, F)``: **time before frequency**, so that
  STFT frames line up with Pyro's ``time`` plate and frequency is the event dimension;
* power spectrograms are ``|X|**2`` with the same shape.

The default STFT (16 kHz, 1024-sample sine window, hop 256, ``center=True``) gives F = 513 bins
and 62.5 frames per second. Frame ``t`` is centred at ``t * hop / sample_rate`` seconds.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import soundfile as sf
import torch

from .errors import InputError, first_line
from .settings.training import StftSettings

AUDIO_SUFFIXES = (".wav", ".flac", ".ogg")


# --------------------------------------------------------------------------------------------
# file I/O
# --------------------------------------------------------------------------------------------
MIN_RATE, MAX_RATE = 4000, 384000       # sample rates load_audio accepts for resampling (Hz)


def load_audio(path: str | Path, sample_rate: int = 16000, *, resample: bool = False,
               allow_multichannel: bool = True) -> np.ndarray:
    """Read an audio file as a mono ``float32`` array of shape ``(N,)``.

    :param path: a wav, flac or ogg file (anything libsndfile reads).
    :param sample_rate: the rate the caller works at (Hz).
    :param resample: if the file has another rate, resample it (torchaudio's band-limited sinc
        resampler) instead of raising.
    :param allow_multichannel: average the channels of a multichannel file (documented
        behaviour); if False a multichannel file is an error.
    :raises InputError: missing, unreadable, empty or truncated file, wrong rate.
    """
    path = Path(path)
    if not path.exists():
        raise InputError(path, "file not found")
    try:
        data, file_rate = sf.read(str(path), dtype="float32", always_2d=True)
    except Exception as exc:  # libsndfile reports corrupt or truncated files here
        raise InputError(path, f"cannot decode audio ({first_line(exc)})") from None
    if data.shape[1] > 1 and data.shape[0]:
        if not allow_multichannel:
            raise InputError(path, f"expected mono audio, found {data.shape[1]} channels")
        data = data.mean(axis=1, keepdims=True)
    audio = np.ascontiguousarray(data[:, 0])
    missing = wav_missing_bytes(path)
    if missing and len(audio):
        warnings.warn(f"{path}: truncated file, {missing} bytes of audio its header announces are "
                      f"missing (read {len(audio) / file_rate:.2f} s)", stacklevel=2)
    return conform_audio(audio, file_rate, sample_rate, path, resample=resample)


def conform_audio(audio: np.ndarray, rate: int, sample_rate: int, name, *,
                  resample: bool = False) -> np.ndarray:
    """A decoded mono waveform ``(N,)`` at ``rate`` Hz, checked (not empty, finite) and at
    ``sample_rate``: resampled when ``resample``, else a rate mismatch is refused. The one rule
    for audio files (:func:`load_audio`) and arrays handed to the Python API.

    :raises InputError: naming ``name``."""
    if audio.size == 0:
        raise InputError(name, "audio is empty (0 samples)")
    if not np.all(np.isfinite(audio)):
        raise InputError(name, "audio contains NaN or infinite samples")
    if rate != sample_rate:
        if not MIN_RATE <= rate <= MAX_RATE:           # a corrupt header, or nothing to resample
            raise InputError(name, f"sample rate {rate} Hz is outside {MIN_RATE}-{MAX_RATE} Hz")
        if not resample:
            raise InputError(name, f"sample rate is {rate} Hz but {sample_rate} Hz is "
                                   "expected (pass resample=True / --resample to convert)")
        audio = resample_audio(audio, int(rate), sample_rate)
    return np.ascontiguousarray(audio, dtype=np.float32)


def wav_missing_bytes(path: Path) -> int:
    """For a RIFF/WAVE file, how many bytes of its ``data`` chunk the file lacks (0 when complete
    or not a WAV file): libsndfile reads a cut-short WAV without complaint."""
    try:
        with open(path, "rb") as f:
            if f.read(4) != b"RIFF" or (f.read(4), f.read(4))[1] != b"WAVE":
                return 0
            size = path.stat().st_size
            while True:
                head = f.read(8)
                if len(head) < 8:
                    return 0
                name, length = head[:4], int.from_bytes(head[4:], "little")
                if name == b"data":
                    left = size - f.tell()
                    # 0 and 0xFFFFFFFF mark streamed WAVs whose length was never filled in
                    return 0 if length in (0, 0xFFFFFFFF) else max(0, length - left)
                f.seek(length + (length & 1), 1)
    except OSError:
        return 0


def resample_audio(audio: np.ndarray, orig_rate: int, new_rate: int) -> np.ndarray:
    """Band-limited resampling of a 1-D array with torchaudio."""
    import torchaudio.functional as AF

    out = AF.resample(torch.from_numpy(np.asarray(audio, dtype=np.float32)), orig_rate, new_rate)
    return out.numpy()


def scaled_note(gain: float) -> str:
    """How :func:`save_audio` says that it scaled a signal by ``gain`` (< 1) to avoid clipping."""
    return f"scaled by {gain:.3f} ({20 * math.log10(gain):.1f} dB) to avoid clipping"


def save_audio(path: str | Path, audio, sample_rate: int, *, overwrite: bool = False,
               subtype: str = "PCM_16") -> float:
    """Write a mono waveform, never clipping it.

    If the peak magnitude exceeds 0.999 the whole signal is scaled down to that peak and a
    warning names the gain; the applied gain is returned (1.0 when unchanged).

    :raises InputError: the file exists and ``overwrite`` is False.
    """
    path = Path(path)
    if path.exists() and not overwrite:
        raise InputError(path, "output exists (use --force / overwrite=True to replace it)")
    if isinstance(audio, torch.Tensor):
        audio = audio.detach().cpu().numpy()
    audio = np.asarray(audio, dtype=np.float32).reshape(-1)
    peak = float(np.max(np.abs(audio))) if audio.size else 0.0
    gain = 1.0
    if peak > 0.999:
        gain = 0.999 / peak
        audio = audio * gain
        warnings.warn(f"{path}: {scaled_note(gain)}", stacklevel=2)
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), audio, sample_rate, subtype=subtype)
    return gain


# --------------------------------------------------------------------------------------------
# STFT
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class StftConfig:
    """Settings of the short-time Fourier transform.

    :param sample_rate: Hz.
    :param n_fft: window and FFT length in samples (F = n_fft // 2 + 1 bins).
    :param hop: hop size in samples.
    :param window: ``"sine"`` (w[n] = sin(pi (n + 1/2) / n_fft)) or ``"hann"``.
    """

    sample_rate: int = StftSettings.sample_rate     # the defaults are the config's (``stft``)
    n_fft: int = StftSettings.n_fft
    hop: int = StftSettings.hop
    window: str = StftSettings.window

    @property
    def num_bins(self) -> int:
        return self.n_fft // 2 + 1

    @property
    def frame_rate(self) -> float:
        return self.sample_rate / self.hop

    def num_frames(self, num_samples: int) -> int:
        """Frames produced for a signal of ``num_samples`` samples (``center=True``)."""
        return num_samples // self.hop + 1

    def frame_times(self, num_frames: int) -> np.ndarray:
        """Centre time (s) of each STFT frame."""
        return np.arange(num_frames) * (self.hop / self.sample_rate)

    def to_dict(self) -> dict:
        return asdict(self)


def make_window(cfg: StftConfig, device=None, dtype=torch.float32) -> torch.Tensor:
    n = torch.arange(cfg.n_fft, device=device, dtype=torch.float64)
    if cfg.window == "sine":
        w = torch.sin(math.pi * (n + 0.5) / cfg.n_fft)
    elif cfg.window == "hann":
        w = torch.hann_window(cfg.n_fft, periodic=True, dtype=torch.float64, device=device)
    else:
        raise ValueError(f"unknown STFT window {cfg.window!r} (use 'sine' or 'hann')")
    return w.to(dtype)


def stft(audio, cfg: StftConfig = StftConfig()) -> torch.Tensor:
    """Complex STFT of ``audio`` ``(..., N)`` as ``(..., T, F)`` with T = N // hop + 1."""
    x = torch.as_tensor(audio)
    if not x.is_floating_point():
        x = x.float()
    lead = x.shape[:-1]
    window = make_window(cfg, x.device, x.dtype)
    spec = torch.stft(x.reshape(-1, x.shape[-1]), cfg.n_fft, cfg.hop, window=window,
                      center=True, pad_mode="constant", return_complex=True)
    return spec.transpose(-1, -2).reshape(*lead, spec.shape[-1], spec.shape[-2])


def istft(spec: torch.Tensor, length: int, cfg: StftConfig = StftConfig()) -> torch.Tensor:
    """Inverse of :func:`stft`; returns exactly ``length`` samples ``(..., length)``."""
    lead = spec.shape[:-2]
    window = make_window(cfg, spec.device, spec.real.dtype)
    flat = spec.reshape(-1, *spec.shape[-2:]).transpose(-1, -2)
    out = torch.istft(flat, cfg.n_fft, cfg.hop, window=window, center=True, length=length)
    return out.reshape(*lead, length)
