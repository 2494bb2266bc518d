"""Speech activity from the lips, and the noise spectrum of the frames where nobody speaks.

A model with a visual prior ``p(z | v)`` can say, from a source's lips alone, how loud the speech
it expects is: decoding the prior mean gives the expected speech spectrum
``σ²_k(μ_φ(v_j[t]), v_j[t])``, and its level

    ℓ_j[t] = mean_k log Σ_f σ²_k(μ_φ(v_j[t]), v_j[t])[f]

follows the clean speech energy closely (on 40 GRID dev clips: correlation 0.86 per clip, median;
frames in the lowest fifth of the clip's range of ``ℓ`` have a median clean energy 30 dB below the
loudest frame, and 5 % of them are within 20 dB of it). With ``ℓ`` rescaled to ``[0, 1]`` between
its 2nd and 98th percentile over the utterance (``r_j[t]``), frame t is *silent* when every
source's lips are seen and closed enough:

    silent[t] = Π_j [present_j[t] = 1 and r_j[t] < threshold]

Those frames hold noise only, so the mixture's mean spectrum over them is the shape of this
recording's noise: :func:`lip_noise_shape` returns it, normalised to mean one over the bins, as the
start of the NMF noise (:class:`~pyro_avss.models.noise.NMFNoise` ``start_shape``) instead of a
flat spectrum that the noise must first unlearn where the noise is quiet — and where the speech
model takes the noise for speech meanwhile. An utterance with too few silent frames, or whose
lips hardly change their expected level (someone who talks throughout), keeps the flat start.

*Pauses* (:func:`pause_frames`) are the silent frames, with a stricter threshold, at least
``margin`` frames away from any frame that is not silent: a closed mouth inside a word (the
/m/ of "me" is voiced behind closed lips) is not a pause, and neither are the edges of one,
where a word starts or ends. The noise bases learnt from them (:func:`pause_noise_bases`, an
Itakura–Saito NMF of the mixture there) hold this recording's noise and no speech; the NMF noise
keeps them fixed (:class:`~pyro_avss.models.noise.NMFNoise` ``pauses``).
"""

from __future__ import annotations

import torch


@torch.no_grad()
def lip_speech_level(prior, decoders, lips: torch.Tensor, present: torch.Tensor) -> torch.Tensor:
    """``ℓ (..., J)``: the log level of the speech the lips predict (module docstring) for
    ``lips (..., J, Dv)`` and ``present (..., J)``."""
    loc, _ = prior(lips, present)
    return decoders(loc, lips, present).logsumexp(-1).mean(-1)


@torch.no_grad()
def silent_frames(level: torch.Tensor, present: torch.Tensor, mask: torch.Tensor,
                  threshold: float = 0.2, min_range: float = 1.0) -> torch.Tensor:
    """``(B, T)`` bool: frames where every source's lips are seen and their predicted level
    ``level (B,T,J)`` is in the lowest ``threshold`` of its utterance's range (2nd–98th
    percentile over the valid frames of ``mask (B,T)``). A source whose range is under
    ``min_range`` nats (no clear open/closed contrast) makes no frame of its utterance silent."""
    filled = level.masked_fill(~mask[..., None], float("nan"))
    lo = torch.nanquantile(filled, 0.02, dim=1, keepdim=True)                     # (B,1,J)
    hi = torch.nanquantile(filled, 0.98, dim=1, keepdim=True)
    span = hi - lo
    rel = (level - lo) / span.clamp_min(1e-6)
    quiet = (rel < threshold) & (present > 0.5) & (span >= min_range)
    return quiet.all(-1) & mask


@torch.no_grad()
def lip_noise_shape(prior, decoders, power: torch.Tensor, lips: torch.Tensor, present: torch.Tensor,
                    mask: torch.Tensor, threshold: float = 0.2, min_frames: int = 8,
                    floor: float = 1e-3) -> torch.Tensor:
    """``(B, F)`` start shape of the noise spectrum, mean one over bins: the mixture's mean power
    ``power (B,T,F)`` over the :func:`silent_frames`, or flat (all ones) for an utterance with
    fewer than ``min_frames`` of them. Bins are floored at ``floor`` times the mean so that no
    bin starts without noise."""
    silent = silent_frames(lip_speech_level(prior, decoders, lips, present), present, mask, threshold)
    weight = silent.to(power.dtype)                                               # (B,T)
    count = weight.sum(1, keepdim=True)                                           # (B,1)
    spectrum = (weight[..., None] * power).sum(1) / count.clamp_min(1.0)          # (B,F)
    shape = spectrum / spectrum.mean(-1, keepdim=True).clamp_min(1e-12)
    shape = shape.clamp_min(floor)
    shape = shape / shape.mean(-1, keepdim=True)
    return torch.where(count >= min_frames, shape, torch.ones_like(shape))


@torch.no_grad()
def pause_frames(silent: torch.Tensor, mask: torch.Tensor, margin: int) -> torch.Tensor:
    """``(B, T)`` bool: the ``silent (B, T)`` frames at least ``margin`` frames from any valid
    frame that is not silent (an erosion of the silent runs by ``margin`` on each side; ``margin
    = 0`` keeps every valid silent frame)."""
    speaking = (mask & ~silent).to(torch.float32)[:, None]                       # (B,1,T)
    near = torch.nn.functional.max_pool1d(speaking, 2 * margin + 1, stride=1, padding=margin)[:, 0]
    return silent & mask & (near < 0.5)


@torch.no_grad()
def pause_noise_bases(power: torch.Tensor, pauses: torch.Tensor, rank: int, seed: int = 0,
                      min_frames: int = 8, iterations: int = 200) -> tuple[torch.Tensor, torch.Tensor]:
    """The pause bases of each utterance: an IS-NMF (:func:`~pyro_avss.models.noise.fit_is_nmf`)
    of ``power (B,T,F)`` over its ``pauses (B,T)``, as ``W (B, F, rank)`` and the mean activation
    of each basis ``(B, rank)``. An utterance with fewer than ``min_frames`` pause frames gets flat
    bases at a hundredth of its mean power (a white floor), so its learnt bases model its noise
    alone. Each utterance is fitted from the same seeded start, whatever its batch, by
    ``iterations`` multiplicative updates (``separate.noise_pause_iterations``)."""
    from ..models.noise import fit_is_nmf

    B, T, F = power.shape
    bases, levels = power.new_empty(B, F, rank), power.new_empty(B, rank)
    for b in range(B):
        frames = power[b][pauses[b]]                                              # (n, F)
        if frames.shape[0] < min_frames:
            bases[b], levels[b] = 1.0, 0.01 * float(power[b].mean()) / rank
            continue
        W, H = fit_is_nmf(frames.T, rank, seed, iterations)
        bases[b], levels[b] = W, H.mean(-1)
    return bases, levels
