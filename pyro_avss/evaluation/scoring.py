"""Scoring a system's estimates of one mixture: a ``results.csv`` row per source (metrics of the
estimate and of the unprocessed mixture, SI-SDR improvement, real-time factor, switch posterior
on the true speaker, swaps), with the best source order for audio-only estimates."""

from __future__ import annotations

import itertools
import math

import numpy as np
import torch

from ..audio import stft
from ..checkpoint import SpeechModels
from ..data.mixtures import MixtureSpec
from ..models.switch import POSTERIOR_FLOOR, identified_components
from .metrics import compute_metrics, si_sdr
from .system_interface import EvalItem, SystemResult

SPEECH_RANGE_DB = 40.0
"""Frames of a clean source within this many dB of its loudest frame count as speech."""


def speech_frames(reference: np.ndarray, stft_cfg, range_db: float = SPEECH_RANGE_DB) -> np.ndarray:
    """``(T,)`` bool: STFT frames of a clean source within ``range_db`` of its loudest frame."""
    energy = stft(torch.as_tensor(np.asarray(reference, np.float32)), stft_cfg).abs().pow(2).sum(-1)
    return (energy >= energy.max() * 10.0 ** (-range_db / 10.0)).numpy()


def true_speaker_switch(posterior: np.ndarray, reference: np.ndarray, component: int,
                        stft_cfg) -> tuple[float, float]:
    """Over the speech frames of ``reference``: the mean ``posterior[t, component]`` (the mass on
    the true speaker) and 1.0 when ``component`` is the speaker the switch identifies, else 0.0;
    both NaN without speech frames.

    The identified speaker is :func:`~pyro_avss.models.switch_prior.identified_components` over
    the speech frames, ``argmax_k Σ_t log p(m[t] = k | x)``: the one component that best
    explains all of them together, the rule ``SeparationResult.best_components`` applies to a
    separated recording's frames.

    :param posterior: ``(T, K)`` switch posterior of one source.
    """
    speech = speech_frames(reference, stft_cfg)
    T = min(len(speech), posterior.shape[0])
    speech = speech[:T]
    if not speech.any():
        return math.nan, math.nan
    frames = posterior[:T][speech]
    return float(frames.mean(0)[component]), float(int(identified_components(frames)) == component)


def best_order(estimates: np.ndarray, references: np.ndarray) -> list[int]:
    """Permutation ``p`` maximising ``Σ_j SI-SDR(estimates[p[j]], references[j])``."""
    J = len(references)
    score = np.array([[si_sdr(estimates[a], references[b]) for b in range(J)] for a in range(J)])
    score = np.nan_to_num(score, nan=-1e9, neginf=-1e9)
    return list(max(itertools.permutations(range(J)), key=lambda p: sum(score[p[j], j] for j in range(J))))


def swapped(estimate: np.ndarray, references: np.ndarray, j: int, own: float) -> float:
    """1.0 when ``estimate`` (source j's, with SI-SDR ``own`` against its reference) is closer,
    in SI-SDR, to another source's reference than to its own — it holds the wrong talker —,
    else 0.0 (NaN when ``own`` could not be computed)."""
    if not math.isfinite(own):
        return math.nan
    other = max(si_sdr(estimate, references[i]) for i in range(len(references)) if i != j)
    return float(other > own)


def _base_row(spec: MixtureSpec, system: str, j: int, status: str, error: str = "") -> dict:
    return {"id": spec.id, "condition": spec.condition, "snr_db": spec.snr_db,
            "noise": spec.noise.name, "system": system, "source": j + 1,
            "target_speaker": spec.sources[j].speaker, "status": status, "error": error,
            "audio_s": spec.num_samples / spec.sample_rate}


def status_rows(spec: MixtureSpec, system: str, status: str, error: str) -> list[dict]:
    """Rows of a mixture a system skipped or failed on (one per source, no metrics)."""
    return [_base_row(spec, system, j, status, " ".join(str(error).split()))
            for j in range(spec.num_sources)]


class Scorer:
    """Scores estimates; the mixture's own metrics are computed once per (mixture, source)."""

    def __init__(self, models: SpeechModels | None, stft_cfg):
        self.models, self.stft_cfg = models, stft_cfg
        self._inputs: dict = {}

    def inputs(self, item: EvalItem, j: int) -> dict:
        key = (item.spec.id, j)
        if key not in self._inputs:
            m = compute_metrics(item.rendered.mixture, item.rendered.sources[j])
            self._inputs[key] = {f"input_{k}": v for k, v in m.items()}
        return self._inputs[key]

    def rows(self, item: EvalItem, system: str, result: SystemResult) -> list[dict]:
        refs, mixture = item.rendered.sources, item.rendered.mixture
        est, post = np.asarray(result.estimates, np.float32), result.posterior
        if est.shape != refs.shape:
            raise ValueError(f"{system} returned estimates of shape {est.shape}, expected {refs.shape}")
        if not result.ordered and len(refs) > 1:
            order = best_order(est, refs)
            est = est[order]
            post = post[:, order] if post is not None else None
        out = []
        for j in range(len(refs)):
            inputs = self.inputs(item, j)
            unprocessed = np.array_equal(est[j], mixture)
            if unprocessed:
                metrics = {k[len("input_"):]: v for k, v in inputs.items()}
            else:
                metrics = compute_metrics(est[j], refs[j])
            row = {**_base_row(item.spec, system, j, "ok"), **inputs, **metrics}
            row["si_sdri"] = metrics["si_sdr"] - inputs["input_si_sdr"]
            row["runtime_s"] = result.runtime_s
            row["rtf"] = result.runtime_s / row["audio_s"]
            row.update(result.info)
            row["switch_true_mass"], row["switch_identified"] = self._switch(post, j, item, refs[j],
                                                                             result.components)
            row["swapped"] = (swapped(est[j], refs, j, metrics["si_sdr"]) if len(refs) > 1 and not unprocessed
                              else math.nan)
            out.append(row)
        return out

    def _switch(self, post, j, item, reference, components) -> tuple[float, float]:
        """:func:`true_speaker_switch` of source j, NaN unless the system had a switch that could
        choose the true speaker's component."""
        if post is None or self.models is None or components is None:
            return math.nan, math.nan
        names = self.models.component_names
        speaker = str(item.spec.sources[j].speaker)
        if speaker not in names or names.index(speaker) not in components:
            return math.nan, math.nan
        return true_speaker_switch(post[:, j], reference, names.index(speaker), self.stft_cfg)


__all__ = ["POSTERIOR_FLOOR", "SPEECH_RANGE_DB", "speech_frames", "true_speaker_switch", "best_order", "swapped",
           "status_rows", "Scorer"]
