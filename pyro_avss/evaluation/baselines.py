"""Classical unsupervised baselines: spectral gating (Wiener filter) and NMF separation.

Both take a mixture waveform ``(N,)`` and return ``(speech, noise)``, two float32 waveforms of
exactly ``N`` samples obtained with complementary real masks on the complex STFT
(:func:`pyro_avss.audio.stft`, spectrograms ``(T, F)``), so ``speech + noise`` equals the mixture
up to the STFT round-trip error (about 1e-7).

They need no training on noise and no video, which makes them the reference points of the
evaluation protocol (docs/results.md): :func:`spectral_gating` needs nothing at all,
:func:`nmf_separation` needs a speech dictionary learned with :func:`learn_speech_bases` on the
same clean training speech as the VAEs.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
from scipy import ndimage
from scipy.special import gammaincinv

from ..audio import StftConfig, istft, make_window, stft
from ..errors import InputError


# --------------------------------------------------------------------------------------------
# shared helpers
# --------------------------------------------------------------------------------------------
def _as_tensor(x) -> torch.Tensor:
    """A CPU tensor from a tensor, array or list."""
    return x.detach().cpu() if isinstance(x, torch.Tensor) else torch.as_tensor(np.asarray(x))


def _mixture_stft(mixture, cfg: StftConfig) -> tuple[torch.Tensor, int]:
    """Complex STFT ``(T, F)`` (float64 precision) of a 1-D mixture, and its length."""
    x = _as_tensor(mixture).to(torch.float64)
    if x.ndim != 1 or x.numel() == 0:
        raise InputError("mixture", "expected a non-empty 1-D waveform, got shape "
                                    f"{tuple(x.shape)}")
    if not torch.isfinite(x).all():
        raise InputError("mixture", "contains NaN or infinite samples")
    return stft(x, cfg), x.numel()


def _apply_mask(spec: torch.Tensor, mask: np.ndarray, length: int,
                cfg: StftConfig) -> tuple[np.ndarray, np.ndarray]:
    """Speech = iSTFT(mask X), noise = iSTFT((1 - mask) X), both float32 ``(length,)``."""
    m = torch.as_tensor(mask, dtype=spec.real.dtype)
    speech = istft(spec * m, length, cfg)
    noise = istft(spec * (1.0 - m), length, cfg)
    return speech.numpy().astype(np.float32), noise.numpy().astype(np.float32)


# --------------------------------------------------------------------------------------------
# spectral gating
# --------------------------------------------------------------------------------------------
def _effective_dof(cfg: StftConfig, frames: int) -> float:
    """Degrees of freedom of a ``frames``-frame moving average of a white-noise periodogram.

    Frames overlap, so their periodograms are correlated: for lag ``k`` hops the correlation is
    ``rho_k = (sum_n w[n] w[n + k hop])^2 / (sum_n w[n]^2)^2``. The average of M frames of an
    exponential (chi-square, 2 dof) variable then has the variance of a Gamma variable with
    ``M_eff = M / (1 + 2 sum_{k=1}^{M-1} (1 - k/M) rho_k)`` unit shapes.
    """
    w = make_window(cfg, dtype=torch.float64).numpy()
    norm = float(np.dot(w, w)) ** 2
    acc = 0.0
    for k in range(1, frames):
        lag = k * cfg.hop
        rho = float(np.dot(w[:-lag], w[lag:])) ** 2 / norm if lag < len(w) else 0.0
        acc += (1.0 - k / frames) * rho
    return frames / (1.0 + 2.0 * acc)


def estimate_noise_psd(power: np.ndarray, cfg: StftConfig = StftConfig(), *,
                       percentile: float = 10.0, smooth_frames: int = 5,
                       window_s: float | None = 5.0) -> np.ndarray:
    """Noise power per STFT bin ``(T, F)`` from the mixture power ``(T, F)`` (minimum statistics).

    1. Smooth the periodogram over time: ``S = moving average of |X|^2 over smooth_frames``.
    2. Per frequency take a low ``percentile`` of ``S`` over time, over a sliding window of
       ``window_s`` seconds (or over the whole signal when it is shorter or ``window_s`` is None):
       speech is sparse in time-frequency, so low percentiles see mostly noise.
    3. Correct the bias of that order statistic: for noise alone ``S / lambda`` is about
       ``Gamma(M_eff, 1 / M_eff)`` (see :func:`_effective_dof`), whose ``percentile`` quantile is
       ``q = P^-1(M_eff, percentile / 100) / M_eff``; the estimate is divided by ``q``.
    """
    smooth_frames = max(1, int(smooth_frames))
    s = ndimage.uniform_filter1d(power, size=smooth_frames, axis=0, mode="nearest")
    frames = s.shape[0]
    win = frames if window_s is None else max(1, int(round(window_s * cfg.frame_rate)))
    if win >= frames:
        floor = np.broadcast_to(np.percentile(s, percentile, axis=0), s.shape)
    else:
        floor = ndimage.percentile_filter(s, percentile, size=(win, 1), mode="nearest")
    m_eff = _effective_dof(cfg, smooth_frames)
    quantile = gammaincinv(m_eff, percentile / 100.0) / m_eff
    return np.asarray(floor / quantile)


def spectral_gating(mixture, stft_cfg: StftConfig = StftConfig(), *, dd_alpha: float = 0.98,
                    min_prior_snr_db: float = -20.0, percentile: float = 10.0,
                    smooth_frames: int = 5, noise_window_s: float | None = 5.0
                    ) -> tuple[np.ndarray, np.ndarray]:
    """Single-channel Wiener filtering with a minimum-statistics noise estimate.

    With ``X[t, f]`` the mixture STFT, ``P = |X|^2`` and ``lambda[t, f]`` the noise power from
    :func:`estimate_noise_psd`:

    * a-posteriori SNR ``gamma[t] = P[t] / lambda[t]``;
    * a-priori SNR by the decision-directed rule (Ephraim & Malah 1984)
      ``xi[t] = max(dd_alpha * G[t-1]^2 P[t-1] / lambda[t] + (1 - dd_alpha) max(gamma[t] - 1, 0),
      xi_min)`` with ``xi_min = 10^(min_prior_snr_db / 10)``;
      the recursion smooths the gain over time, which suppresses musical noise;
    * Wiener gain ``G[t] = xi[t] / (1 + xi[t])`` (so ``G >= xi_min / (1 + xi_min)``).

    Speech = iSTFT(G X), noise = iSTFT((1 - G) X).

    :param mixture: ``(N,)`` waveform at ``stft_cfg.sample_rate``.
    :returns: ``(speech (N,), noise (N,))`` float32.
    """
    spec, length = _mixture_stft(mixture, stft_cfg)
    power = spec.abs().square().numpy()
    tiny = 1e-12 * max(float(power.mean()), np.finfo(np.float64).tiny)
    noise = np.maximum(estimate_noise_psd(power, stft_cfg, percentile=percentile,
                                          smooth_frames=smooth_frames, window_s=noise_window_s),
                       tiny)
    gamma = power / noise
    xi_min = 10.0 ** (min_prior_snr_db / 10.0)
    gain = np.empty_like(power)
    previous = np.zeros(power.shape[1])  # G[t-1]^2 P[t-1]: the previous speech power estimate
    for t in range(power.shape[0]):
        xi = dd_alpha * previous / noise[t] + (1.0 - dd_alpha) * np.maximum(gamma[t] - 1.0, 0.0)
        xi = np.maximum(xi, xi_min)
        gain[t] = xi / (1.0 + xi)
        previous = gain[t] ** 2 * power[t]
    return _apply_mask(spec, gain, length, stft_cfg)


# --------------------------------------------------------------------------------------------
# NMF (torch, float32: several times faster than float64 on CPU; the power is normalised to mean 1
# first, which changes nothing for IS or KL fits but keeps Vh^-2 well inside float32's range)
# --------------------------------------------------------------------------------------------
_BETA = {"is": 0.0, "kl": 1.0}
_DTYPE = torch.float32
_TINY = 1e-12  # floor of W H and of the updated factors (the data have mean 1)


def _beta(divergence: str) -> float:
    try:
        return _BETA[divergence.lower()]
    except KeyError:
        raise InputError("divergence", f"unknown NMF divergence {divergence!r} "
                                       "(use 'is' or 'kl')") from None


def _normalised_power(power: torch.Tensor, what: str) -> torch.Tensor:
    """``(F, T)`` power divided by its mean, plus a 1e-9 floor so that no bin is exactly 0."""
    power = power.to(torch.float64)
    mean = float(power.mean())
    if not mean > 0.0:
        raise InputError(what, "is silent")
    return (power / mean + 1e-9).to(_DTYPE)


def _normalise_columns(w: torch.Tensor, h: torch.Tensor, cols: slice) -> None:
    """Scale ``w[:, cols]`` to unit column sums, moving the scale into ``h[cols]`` (in place)."""
    scale = w[:, cols].sum(dim=0).clamp_min(_TINY)
    w[:, cols] /= scale
    h[cols] *= scale[:, None]


def _divergence_terms(v: torch.Tensor, vh: torch.Tensor, beta: float):
    """``(V * Vh^(beta-2), Vh^(beta-1))`` for beta in {0, 1}, without slow general powers."""
    inv = 1.0 / vh
    if beta == 0.0:
        return v * inv * inv, inv
    return v * inv, torch.ones_like(vh)


def _beta_nmf(v: torch.Tensor, w: torch.Tensor, h: torch.Tensor, beta: float, iterations: int,
              free: slice) -> None:
    """Multiplicative updates for ``V ~ W H`` under the beta-divergence (0 = IS, 1 = KL).

    ``v`` is ``(F, T)``, ``w`` ``(F, R)``, ``h`` ``(R, T)``; ``h`` and the columns ``free`` of ``w``
    are updated in place (Fevotte & Idier 2011)::

        H <- H * (W^T (V * Vh^(beta-2))) / (W^T Vh^(beta-1))
        W <- W * ((V * Vh^(beta-2)) H^T) / (Vh^(beta-1) H^T)        (free columns only)

    Free columns are renormalised to unit sum after each update.
    """
    update_w = free.start != free.stop
    for _ in range(iterations):
        num, den = _divergence_terms(v, (w @ h).clamp_min_(_TINY), beta)
        h.mul_((w.T @ num) / (w.T @ den).clamp_min_(_TINY)).clamp_min_(_TINY)
        if update_w:
            num, den = _divergence_terms(v, (w @ h).clamp_min_(_TINY), beta)
            hf = h[free]
            w[:, free] *= (num @ hf.T) / (den @ hf.T).clamp_min_(_TINY)
            w[:, free] = w[:, free].clamp_min(_TINY)
            _normalise_columns(w, h, free)


def _init_activations(gen: torch.Generator, v: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """Positive random activations at the level that makes ``W H`` match ``V`` on average."""
    level = float(v.mean()) / max(float(w.sum(dim=1).mean()), _TINY)
    return (0.5 + torch.rand(w.shape[1], v.shape[1], generator=gen, dtype=_DTYPE)) * level


def learn_speech_bases(power_spectrograms: Sequence | np.ndarray | torch.Tensor, rank: int = 32,
                       *, iterations: int = 200, divergence: str = "is",
                       max_frames: int | None = 20000, min_energy_db: float = -40.0,
                       seed: int = 0) -> np.ndarray:
    """Learn a speech dictionary ``W_s`` ``(F, rank)`` from clean power spectrograms.

    :param power_spectrograms: one ``(T, F)`` array/tensor or a list of them (``|STFT|^2`` of
        clean training utterances, :func:`pyro_avss.audio.stft`).
    :param rank: number of bases.
    :param iterations: multiplicative-update iterations.
    :param divergence: ``"is"`` (Itakura-Saito, the complex-Gaussian likelihood of the STFT) or
        ``"kl"`` (Kullback-Leibler).
    :param max_frames: a random subset of at most this many frames is used (speed).
    :param min_energy_db: frames more than this far below the loudest frame of their utterance
        are dropped: silence would otherwise take dictionary entries (the IS divergence weights
        quiet frames as much as loud ones).
    :param seed: seeds the frame subset and the initialisation.
    :returns: float32 ``(F, rank)`` array with unit column sums.
    """
    beta = _beta(divergence)
    single = isinstance(power_spectrograms, (np.ndarray, torch.Tensor)) \
        and power_spectrograms.ndim == 2
    frames = []
    for p in ([power_spectrograms] if single else list(power_spectrograms)):
        p = _as_tensor(p).to(torch.float64)
        if p.ndim != 2:
            raise InputError("power_spectrograms", f"expected (T, F) arrays, got {tuple(p.shape)}")
        energy = p.sum(dim=1)
        frames.append(p[energy >= energy.max() * 10.0 ** (min_energy_db / 10.0)])
    if not frames or len({f.shape[1] for f in frames}) != 1:
        raise InputError("power_spectrograms", "need at least one spectrogram, all with the same F")
    v = torch.cat(frames, dim=0)
    if v.shape[0] < rank:
        raise InputError("power_spectrograms", f"only {v.shape[0]} non-silent frames for "
                                               f"{rank} bases")
    gen = torch.Generator().manual_seed(seed)
    if max_frames is not None and v.shape[0] > max_frames:
        keep = torch.randperm(v.shape[0], generator=gen)[:max_frames].sort().values
        v = v[keep]
    v = _normalised_power(v.T.contiguous(), "power_spectrograms")
    w = 0.5 + torch.rand(v.shape[0], rank, generator=gen, dtype=_DTYPE)
    h = _init_activations(gen, v, w)
    _normalise_columns(w, h, slice(0, rank))
    _beta_nmf(v, w, h, beta, iterations, slice(0, rank))
    return w.numpy()


def nmf_separation(mixture, speech_bases: np.ndarray | torch.Tensor, rank_noise: int = 8,
                   iterations: int = 100, stft_cfg: StftConfig = StftConfig(), *,
                   divergence: str = "is", seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Semi-supervised NMF: a fixed speech dictionary plus a free noise NMF, then a Wiener mask.

    The mixture power ``V = |X|^2`` (as ``(F, T)``) is modelled as
    ``V ~ W_s H_s + W_n H_n`` with the speech bases ``W_s`` fixed, and ``H_s``, ``H_n``, ``W_n``
    fitted by multiplicative updates minimising the chosen divergence (IS: the maximum-likelihood
    fit of ``X ~ CN(0, W H)``, the noise model of the VAE-NMF systems). The speech estimate is
    ``iSTFT(M X)`` with ``M = W_s H_s / (W_s H_s + W_n H_n)``, the noise ``iSTFT((1 - M) X)``.

    :param mixture: ``(N,)`` waveform at ``stft_cfg.sample_rate``.
    :param speech_bases: ``(F, R_s)`` from :func:`learn_speech_bases` (same STFT settings).
    :param rank_noise: number of noise bases ``R_n`` (>= 1).
    :param iterations: multiplicative-update iterations.
    :param divergence: ``"is"`` or ``"kl"``; use the one the bases were learned with.
    :param seed: seeds the initialisation of ``W_n`` and ``H``.
    :returns: ``(speech (N,), noise (N,))`` float32.
    """
    beta = _beta(divergence)
    spec, length = _mixture_stft(mixture, stft_cfg)
    ws = _as_tensor(speech_bases).to(_DTYPE)
    if ws.ndim != 2 or ws.shape[0] != stft_cfg.num_bins or bool((ws < 0).any()) \
            or not bool(torch.isfinite(ws).all()):
        raise InputError("speech_bases", f"expected non-negative finite (F={stft_cfg.num_bins}, "
                                         f"R) bases, got shape {tuple(ws.shape)}")
    if rank_noise < 1:
        raise InputError("rank_noise", f"must be at least 1, got {rank_noise}")
    rs = ws.shape[1]
    gen = torch.Generator().manual_seed(seed)
    v = _normalised_power(spec.abs().square().T, "mixture")
    w = torch.cat([ws / ws.sum(dim=0).clamp_min(_TINY),
                   0.5 + torch.rand(v.shape[0], rank_noise, generator=gen, dtype=_DTYPE)], dim=1)
    h = _init_activations(gen, v, w)
    _normalise_columns(w, h, slice(rs, rs + rank_noise))
    _beta_nmf(v, w, h, beta, iterations, slice(rs, rs + rank_noise))
    speech_power = (w[:, :rs] @ h[:rs]).double()
    noise_power = (w[:, rs:] @ h[rs:]).double()
    mask = speech_power / (speech_power + noise_power).clamp_min(_TINY)
    return _apply_mask(spec, mask.T.numpy(), length, stft_cfg)


__all__ = ["estimate_noise_psd", "spectral_gating", "learn_speech_bases", "nmf_separation"]
