"""The speech models' own ceiling: Wiener filtering with each source's variance decoded from the
latent code of its *clean* signal.

For a mixture ``x = Σ_j s_j + b`` with the references known, source j's variance is what its
speaker's decoder ``k_j`` gives for the encoder's mean code of the clean source, at the source's
own level, and the noise variance is the true noise power:

    P_j = |STFT s_j|²,   m_j = mean_{t,f} P_j,
    z_j[t] = μ_enc(log(P_j / m_j + 1e-8), v_j)[t]                (lips v_j of source j's video)
    V_j[t, f] = m_j · σ²_{k_j}(z_j[t], v_j[t])[f],      V_b = |STFT b|²
    ŝ_j = iSTFT( V_j / (Σ_i V_i + V_b) · X ).

No inference happens at all, so the figure bounds what better inference (or a better noise model)
could get from these speech models: the gap between this and the ideal Wiener filter (``V_j =
P_j``) is what the decoders cannot express. It is not a strict bound: the encoder's mean is a
good code for the clean source, not the best one.
"""

from __future__ import annotations

import numpy as np
import torch

from ..audio import istft, stft
from ..checkpoint import SpeechModels
from ..inference.inputs import aligned_lips
from ..models.generative import log_power_features


@torch.no_grad()
def decoded_source_variance(models: SpeechModels, source: np.ndarray, track, component: int) -> torch.Tensor:
    """``V_j (T, F)``: the variance that decoder ``component`` gives for the encoder's mean code
    of the clean ``source`` with the lips of ``track`` (None: audio only), at the source's level."""
    cfg = models.stft
    power = stft(torch.as_tensor(np.ascontiguousarray(source, dtype=np.float32)), cfg).abs().pow(2)
    level = power.mean().clamp_min(1e-12)
    lips, present = aligned_lips(track, models.lips, cfg.frame_times(power.shape[0]), models.lip_encoder)
    device = next(models.encoder.parameters()).device
    lips, present = lips.to(device), present.to(device)
    loc, _ = models.encoder(log_power_features((power / level).to(device)), lips, present)
    return models.decoders(loc, lips, present)[:, component].exp().cpu() * level


def oracle_latent_estimates(models: SpeechModels, mixture: np.ndarray, sources: np.ndarray, noise: np.ndarray,
                            tracks: list, components: list[int]) -> np.ndarray:
    """``(J, N)`` estimates of the module docstring; ``components[j]`` is source j's decoder."""
    cfg = models.stft
    spec = stft(torch.as_tensor(np.asarray(mixture, dtype=np.float32)), cfg)
    variances = [decoded_source_variance(models, s, t, k) for s, t, k in zip(sources, tracks, components)]
    noise_power = stft(torch.as_tensor(np.asarray(noise, dtype=np.float32)), cfg).abs().pow(2)
    total = sum(variances) + noise_power
    return np.stack([istft(spec * (v / total.clamp_min(1e-20)), len(mixture), cfg).numpy() for v in variances])
