"""Objective quality metrics of a speech estimate against its clean reference.

All functions take ``(estimate, reference, ...)`` in that order, as 1-D waveforms of equal length
(``numpy`` arrays, torch tensors or lists; computed in float64 where the metric is ours).

* :func:`si_sdr` / :func:`si_sdr_improvement`: scale-invariant SDR (own code, definition below).
* :func:`sdr`: BSS-Eval v3 SDR through ``mir_eval.separation.bss_eval_sources``.
* :func:`pesq_wb` (ITU-T P.862.2 wide-band, at 16 kHz) and :func:`pesq_nb` (P.862 narrow-band, at
  8 kHz after explicit resampling) through the ``pesq`` package.
* :func:`stoi` and :func:`estoi` through ``pystoi``.

A metric that cannot be computed for an utterance raises :class:`MetricError` (one line, with the
reason); :func:`compute_metrics` turns that into ``nan`` plus a ``<metric>_error`` entry, so a
failure is recorded with its reason and never silently dropped or averaged as a number.
"""

from __future__ import annotations

import math
import warnings
from typing import Callable, Iterable

import numpy as np

from ..audio import resample_audio
from ..errors import PyroAvssError

SILENCE_RMS = 1e-10
"""A signal whose RMS (after mean removal where stated) is at most this is treated as silent."""

ALL_METRICS = ("si_sdr", "sdr", "pesq_wb", "pesq_nb", "stoi", "estoi")


class MetricError(PyroAvssError, ValueError):
    """A metric cannot be computed for this utterance; the message says why (one line)."""

    def __init__(self, metric: str, problem: str):
        self.metric = metric
        self.problem = " ".join(str(problem).split())
        super().__init__(f"{metric}: {self.problem}")


# --------------------------------------------------------------------------------------------
# argument checks
# --------------------------------------------------------------------------------------------
def _as_array(x) -> np.ndarray:
    if hasattr(x, "detach"):  # torch tensor
        x = x.detach().cpu().numpy()
    return np.asarray(x, dtype=np.float64)


def _pair(metric: str, estimate, reference) -> tuple[np.ndarray, np.ndarray]:
    """Both signals as 1-D float64 arrays of equal, non-zero length with finite samples."""
    est, ref = _as_array(estimate), _as_array(reference)
    if est.ndim != 1 or ref.ndim != 1:
        raise MetricError(metric, f"expected 1-D signals, got shapes {est.shape} and {ref.shape}")
    if est.shape != ref.shape:
        raise MetricError(metric, f"estimate has {est.size} samples but reference has {ref.size}")
    if est.size == 0:
        raise MetricError(metric, "signals are empty")
    if not (np.all(np.isfinite(est)) and np.all(np.isfinite(ref))):
        raise MetricError(metric, "signals contain NaN or infinite samples")
    return est, ref


def _is_silent(x: np.ndarray) -> bool:
    return bool(np.sqrt(np.mean(np.square(x))) <= SILENCE_RMS)


def _check_audible(metric: str, est: np.ndarray, ref: np.ndarray) -> None:
    if _is_silent(ref):
        raise MetricError(metric, "reference is silent")
    if _is_silent(est):
        raise MetricError(metric, "estimate is silent")


# --------------------------------------------------------------------------------------------
# SI-SDR
# --------------------------------------------------------------------------------------------
def si_sdr(estimate, reference) -> float:
    """Scale-invariant signal-to-distortion ratio (dB) of ``estimate`` ``(N,)`` vs ``reference``.

    Both signals are made zero-mean, then (Le Roux et al., "SDR - half-baked or well done?",
    ICASSP 2019)::

        alpha  = <est, ref> / ||ref||^2
        SI-SDR = 10 log10( ||alpha ref||^2 / ||est - alpha ref||^2 )

    The error energy is floored at machine epsilon times ``||alpha ref||^2`` so that identical
    signals give a finite value (about 156.5 dB) while the measure stays exactly scale-invariant.

    :returns: the value in dB, or ``nan`` when the reference or the estimate is silent (RMS after
        mean removal at most :data:`SILENCE_RMS`): the ratio is undefined then.
    :raises MetricError: shapes differ, empty or non-finite input.
    """
    est, ref = _pair("si_sdr", estimate, reference)
    est = est - est.mean()
    ref = ref - ref.mean()
    if _is_silent(ref) or _is_silent(est):
        return math.nan
    alpha = np.dot(est, ref) / np.dot(ref, ref)
    target = alpha * ref
    target_energy = float(np.dot(target, target))
    if target_energy == 0.0:  # estimate exactly orthogonal to the reference
        return -math.inf
    error = est - target
    error_energy = max(float(np.dot(error, error)), np.finfo(np.float64).eps * target_energy)
    return 10.0 * math.log10(target_energy / error_energy)


def si_sdr_improvement(estimate, reference, mixture) -> float:
    """SI-SDRi (dB): ``si_sdr(estimate, reference) - si_sdr(mixture, reference)``."""
    return si_sdr(estimate, reference) - si_sdr(mixture, reference)


# --------------------------------------------------------------------------------------------
# BSS-Eval SDR
# --------------------------------------------------------------------------------------------
def sdr(estimates, references) -> np.ndarray | float:
    """BSS-Eval v3 SDR (dB) via ``mir_eval.separation.bss_eval_sources``.

    Sources are compared in the given order (``compute_permutation=False``): in audio-visual
    separation each estimate belongs to the face it was conditioned on. BSS-Eval allows a
    512-tap time-invariant filter of the reference, so it is not scale- or filter-sensitive.

    :param estimates: ``(J, N)`` or ``(N,)``.
    :param references: same shape.
    :returns: ``(J,)`` array of SDRs, or a float for 1-D input.
    :raises MetricError: shapes differ, or a reference or estimate is silent (mir_eval refuses).
    """
    est, ref = _as_array(estimates), _as_array(references)
    single = est.ndim == 1
    est, ref = np.atleast_2d(est), np.atleast_2d(ref)
    if est.ndim != 2 or est.shape != ref.shape:
        raise MetricError("sdr", f"estimates {est.shape} and references {ref.shape} must both "
                                 "be (J, N)")
    for j in range(est.shape[0]):
        _pair("sdr", est[j], ref[j])
        _check_audible("sdr", est[j], ref[j])
    from mir_eval.separation import bss_eval_sources

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=FutureWarning, module=r"mir_eval")
        warnings.filterwarnings("ignore", message=r".*mir_eval.*", category=FutureWarning)
        try:
            values = bss_eval_sources(ref, est, compute_permutation=False)[0]
        except ValueError as exc:
            raise MetricError("sdr", f"ValueError: {exc}") from None
    return float(values[0]) if single else np.asarray(values, dtype=np.float64)


# --------------------------------------------------------------------------------------------
# PESQ
# --------------------------------------------------------------------------------------------
def _pesq(metric: str, mode: str, rate: int, estimate, reference, sample_rate: int) -> float:
    """Validate everything the ``pesq`` wrapper would reject (it prints its docstring to stdout
    before raising), resample to ``rate`` explicitly, then call it."""
    est, ref = _pair(metric, estimate, reference)
    if int(sample_rate) != sample_rate or sample_rate < rate:
        raise MetricError(metric, f"needs audio at {rate} Hz or more, got {sample_rate} Hz")
    _check_audible(metric, est, ref)
    if sample_rate != rate:
        est = resample_audio(est.astype(np.float32), int(sample_rate), rate)
        ref = resample_audio(ref.astype(np.float32), int(sample_rate), rate)
    from pesq import PesqError, pesq

    try:
        return float(pesq(rate, ref, est, mode))
    except (PesqError, ValueError) as exc:
        text = exc.args[0] if exc.args else ""
        if isinstance(text, bytes):  # the C extension's messages are bytes
            text = text.decode("utf-8", "replace")
        raise MetricError(metric, f"{type(exc).__name__}: {text}") from None


def pesq_wb(estimate, reference, sample_rate: int = 16000) -> float:
    """Wide-band PESQ (ITU-T P.862.2, MOS-LQO, about 1.0-4.64) at 16 kHz.

    Signals at a higher rate are resampled to 16 kHz with :func:`pyro_avss.audio.resample_audio`.

    :raises MetricError: rate below 16 kHz, silent signal, too short (< 0.25 s), or any other
        failure of the ``pesq`` library (its exception name and message are kept).
    """
    return _pesq("pesq_wb", "wb", 16000, estimate, reference, sample_rate)


def pesq_nb(estimate, reference, sample_rate: int = 16000) -> float:
    """Narrow-band PESQ (ITU-T P.862, MOS-LQO) after explicit resampling to 8 kHz.

    :raises MetricError: as :func:`pesq_wb` (rate below 8 kHz refused).
    """
    return _pesq("pesq_nb", "nb", 8000, estimate, reference, sample_rate)


# --------------------------------------------------------------------------------------------
# STOI
# --------------------------------------------------------------------------------------------
def _stoi(metric: str, extended: bool, estimate, reference, sample_rate: int) -> float:
    est, ref = _pair(metric, estimate, reference)
    _check_audible(metric, est, ref)
    from pystoi import stoi as pystoi_stoi

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", RuntimeWarning)
        value = float(pystoi_stoi(ref, est, int(sample_rate), extended=extended))
    for w in caught:  # pystoi warns and returns 1e-5 when too few speech frames remain
        if issubclass(w.category, RuntimeWarning):
            raise MetricError(metric, f"too little speech after silent-frame removal ({w.message})")
    if not math.isfinite(value):
        raise MetricError(metric, f"pystoi returned {value}")
    return value


def stoi(estimate, reference, sample_rate: int = 16000) -> float:
    """Short-time objective intelligibility (Taal et al. 2011), 0-1, via pystoi.

    :raises MetricError: length mismatch, silent signal, or too little speech for pystoi's
        30-frame analysis after its silent-frame removal (pystoi itself would return 1e-5).
    """
    return _stoi("stoi", False, estimate, reference, sample_rate)


def estoi(estimate, reference, sample_rate: int = 16000) -> float:
    """Extended STOI (Jensen & Taal 2016) via pystoi; errors as :func:`stoi`."""
    return _stoi("estoi", True, estimate, reference, sample_rate)


# --------------------------------------------------------------------------------------------
# all at once, recording failures
# --------------------------------------------------------------------------------------------
def _si_sdr_checked(estimate, reference, sample_rate: int) -> float:
    value = si_sdr(estimate, reference)
    if math.isnan(value):
        ref = _as_array(reference)
        which = "reference" if _is_silent(ref - ref.mean()) else "estimate"
        raise MetricError("si_sdr", f"{which} is silent")
    return value


_METRIC_FUNCTIONS: dict[str, Callable[[object, object, int], float]] = {
    "si_sdr": _si_sdr_checked,
    "sdr": lambda e, r, sr: sdr(e, r),
    "pesq_wb": pesq_wb,
    "pesq_nb": pesq_nb,
    "stoi": stoi,
    "estoi": estoi,
}


def compute_metrics(estimate, reference, mixture=None, sample_rate: int = 16000,
                    metrics: Iterable[str] = ALL_METRICS) -> dict:
    """Every requested metric of ``estimate`` ``(N,)`` against ``reference`` ``(N,)``.

    :param mixture: the unprocessed input ``(N,)``; when given, each metric is also computed for
        it as ``input_<m>``, and ``si_sdri = si_sdr - input_si_sdr`` is added.
    :param metrics: names among :data:`ALL_METRICS`.
    :returns: ``{m: value}`` for every metric (``nan`` on failure); for each failure also
        ``{"<m>_error": "<reason>"}`` (``input_<m>_error`` for the mixture's). Keys without
        ``_error`` are always present, so rows of many utterances share their value columns.
    :raises ValueError: an unknown metric name (a caller mistake, not an utterance failure).
    """
    names = list(metrics)
    unknown = [m for m in names if m not in _METRIC_FUNCTIONS]
    if unknown:
        raise ValueError(f"unknown metric(s) {unknown}; choose from {list(ALL_METRICS)}")
    signals = [("", estimate)] + ([("input_", mixture)] if mixture is not None else [])
    result: dict = {}
    for prefix, signal in signals:
        for name in names:
            key = prefix + name
            try:
                result[key] = float(_METRIC_FUNCTIONS[name](signal, reference, sample_rate))
            except MetricError as exc:
                result[key] = math.nan
                result[key + "_error"] = exc.problem
            except Exception as exc:  # unexpected library failure: still recorded, never dropped
                result[key] = math.nan
                result[key + "_error"] = f"{type(exc).__name__}: {' '.join(str(exc).split())}"

    if mixture is not None and "si_sdr" in names:
        result["si_sdri"] = result["si_sdr"] - result["input_si_sdr"]
    return result


__all__ = ["ALL_METRICS", "SILENCE_RMS", "MetricError", "si_sdr", "si_sdr_improvement", "sdr",
           "pesq_wb", "pesq_nb", "stoi", "estoi", "compute_metrics"]
