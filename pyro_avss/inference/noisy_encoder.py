"""A noise-robust encoder for the guide's start, distilled from the speech encoder with noise drawn
from an NMF prior: no noise recording and no real mixture is ever seen.

Separation starts each source's ``q(z)`` from the encoder applied to the *mixture*, but the speech
encoder ``q(z | s, v)`` was trained on clean speech only, so in noise its code is far from the
clean source's (on GRID with the noises of the results run, starting from the clean source's code
instead would gain about 2 dB). The noisy encoder ``q_n(z | x, v)`` has the speech encoder's
architecture and starts from its weights; it is trained so that, for a clean segment ``s`` with
lips ``v`` and a noise ``b`` drawn from the prior below,

    x = s + b · (mean s / mean b) · 10^(-snr / 10),   snr ~ U(snr_low, snr_high) dB,
    loss = KL( q(z | s / mean s, v) ‖ q_n(z | x / mean x, v) ),  per valid frame, summed over D,

each input normalised to mean power 1, as separation normalises a mixture and training a clean
segment. The speech encoder (the teacher) and every other network stay frozen, so the latent space
and the decoders are those of the model: only the guide's start changes.

The noise prior is an NMF with random bases and activations, the family the separation's noise
model fits, drawn independently for every segment:

    R = 6 bases, base r kept with probability 1/2 (base 0 always),
    log W[r, f] = a_r · f / F + Σ_{f' ≤ f} σ_r ε[r, f'] + 0.3 η[r, f],
        a_r ~ N(0, 3²) (spectral tilt), σ_r ~ U(0.02, 0.4) (spectral roughness),
    log H[r, t] = 1.5 ξ_r + Σ_{t' ≤ t} ρ_r ζ[r, t'],   ρ_r ~ U(0, 0.3) nats per frame,
    |b[t, f]|² = (Σ_r W[r, f] H[r, t]) · e[t, f],   e ~ Exponential(1) (a Gaussian periodogram),

with ε, η, ξ, ζ standard normal. None of these numbers was tuned on any mixture; they were set once
to cover flat to steeply tilted, smooth to rough, steady to quickly changing noise.
"""

from __future__ import annotations

import copy
import math
import time
from dataclasses import dataclass

import torch

from torch.distributions import Normal, kl_divergence

from ..models.generative import log_power_features
from .training_data import lip_context, segment_lips

NOISE_BASES = 6


@dataclass(frozen=True)
class NoisePrior:
    """The random NMF noise of the module docstring and the SNR range it is mixed at."""

    bases: int = NOISE_BASES
    keep: float = 0.5
    tilt: float = 3.0
    roughness: tuple[float, float] = (0.02, 0.4)
    jitter: float = 0.3
    level: float = 1.5
    drift: tuple[float, float] = (0.0, 0.3)
    snr_db: tuple[float, float] = (-10.0, 15.0)

    def draw(self, batch: int, frames: int, bins: int, generator: torch.Generator) -> torch.Tensor:
        """``(batch, frames, bins)`` noise power spectrograms, one noise per row."""
        R, g = self.bases, generator

        def uniform(lo_hi):
            return torch.empty(batch, R, 1).uniform_(*lo_hi, generator=g)

        freq = torch.linspace(0.0, 1.0, bins)
        log_w = (torch.randn(batch, R, 1, generator=g) * self.tilt * freq
                 + (torch.randn(batch, R, bins, generator=g) * uniform(self.roughness)).cumsum(-1)
                 + torch.randn(batch, R, bins, generator=g) * self.jitter)
        log_h = (torch.randn(batch, R, 1, generator=g) * self.level
                 + (torch.randn(batch, R, frames, generator=g) * uniform(self.drift)).cumsum(-1))
        kept = torch.rand(batch, R, 1, generator=g) < self.keep
        kept[:, 0] = True
        variance = torch.einsum("brf,brt->btf", log_w.exp() * kept, log_h.exp())
        return variance * torch.empty(batch, frames, bins).exponential_(generator=g)

    def noisy(self, power: torch.Tensor, mask: torch.Tensor, generator: torch.Generator):
        """``(noisy, clean)`` normalised power ``(B, T, F)`` for clean segments ``power`` with
        valid frames ``mask (B, T)``: each row mixed with its own noise at its own SNR."""
        B, T, F = power.shape
        valid = mask[..., None].to(power.dtype)
        frames = valid.sum((1, 2), keepdim=True).clamp_min(1.0) * F
        clean = power * valid
        noise = self.draw(B, T, F, generator).to(power) * valid
        snr = torch.empty(B, 1, 1).uniform_(*self.snr_db, generator=generator).to(power)
        ratio = clean.sum((1, 2), keepdim=True) / noise.sum((1, 2), keepdim=True).clamp_min(1e-12)
        mixture = clean + noise * ratio * 10.0 ** (-snr / 10.0)
        return (mixture / (mixture.sum((1, 2), keepdim=True) / frames).clamp_min(1e-12),
                clean / (clean.sum((1, 2), keepdim=True) / frames).clamp_min(1e-12))


class Distillation:
    """The loss of the module docstring for one mini-batch of the training data (``FrameSet``
    batches: ``power``, ``lips``, ``present``, ``mask``, lips with the temporal encoder's context)."""

    def __init__(self, models, prior: NoisePrior = NoisePrior()):
        self.teacher, self.lip_encoder, self.prior = models.encoder, models.lip_encoder, prior
        self.context = lip_context(self.lip_encoder)

    def __call__(self, student, batch: dict, generator: torch.Generator) -> torch.Tensor:
        device = next(self.teacher.parameters()).device
        batch = {k: v.to(device) for k, v in batch.items()}
        mask = batch["mask"]
        with torch.no_grad():
            noisy, clean = self.prior.noisy(batch["power"], mask, generator)
            lips, present = segment_lips(self.lip_encoder, batch["lips"], batch["present"])
            target = Normal(*self.teacher(log_power_features(clean), lips, present))
        kl = kl_divergence(target, Normal(*student(log_power_features(noisy), lips, present))).sum(-1)
        valid = mask.to(kl.dtype)
        return (kl * valid).sum() / valid.sum().clamp_min(1.0)


def distil_noisy_encoder(models, train_set, dev_set, *, epochs: int, batch_size: int, segment_frames: int,
                         lr: float, patience: int, seed: int, lip_dropout: float = 0.0,
                         max_batches: int | None = None, prior: NoisePrior = NoisePrior(), progress=None):
    """Train the noisy encoder (module docstring) on the clean ``train_set``; keep the epoch with
    the lowest loss on ``dev_set`` (or on the training data without one) and stop after
    ``patience`` epochs without improvement; an epoch is one pass over the training data, or its
    first ``max_batches`` mini-batches. Returns ``(encoder, log)``, one log row per epoch.
    ``progress(row)``, if given, is called after every epoch."""
    for net in (models.encoder, models.lip_encoder):
        if net is not None:
            net.requires_grad_(False).eval()
    loss_of = Distillation(models, prior)
    student = copy.deepcopy(models.encoder).requires_grad_(True).train()
    optim = torch.optim.Adam(student.parameters(), lr=lr)
    best, best_state, bad, log = math.inf, copy.deepcopy(student.state_dict()), 0, []
    for epoch in range(epochs):
        gen = torch.Generator().manual_seed(seed * 100003 + epoch)
        t0, total, frames = time.perf_counter(), 0.0, 0
        for batch in train_set.epoch(segment_frames, batch_size, gen, lip_dropout, loss_of.context,
                                     max_batches):
            loss = loss_of(student, batch, gen)
            optim.zero_grad()
            loss.backward()
            optim.step()
            n = int(batch["mask"].sum())
            total, frames = total + float(loss.detach()) * n, frames + n
        train_loss = total / max(frames, 1)
        dev_loss = _mean_loss(loss_of, student, dev_set, segment_frames) if dev_set is not None else train_loss
        seconds = time.perf_counter() - t0
        log.append({"epoch": epoch + 1, "train_kl": train_loss, "dev_kl": dev_loss, "seconds": seconds,
                    "frames_per_s": frames / max(seconds, 1e-9)})
        if progress is not None:
            progress(log[-1])
        if dev_loss < best:
            best, best_state, bad = dev_loss, copy.deepcopy(student.state_dict()), 0
        else:
            bad += 1
            if bad >= patience:
                break
    student.load_state_dict(best_state)
    return student.requires_grad_(False).eval(), log


@torch.no_grad()
def _mean_loss(loss_of: Distillation, student, data, segment_frames: int) -> float:
    """Mean loss per frame over ``data``, with fixed segments and noises (comparable epochs)."""
    gen = torch.Generator().manual_seed(12345)
    total, frames = 0.0, 0
    for batch in data.epoch(segment_frames, 256, torch.Generator().manual_seed(0), context=loss_of.context):
        n = int(batch["mask"].sum())
        total, frames = total + float(loss_of(student, batch, gen)) * n, frames + n
    return total / max(frames, 1)
