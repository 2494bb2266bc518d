"""Noise models: the variance of the non-speech part of the mixture.

A noise model is any object with ``log_variance(power, mask, plates) -> (..., B, T, F)`` that
may register ``pyro.param`` sites; ``plates`` are the separation model's ``(utt, time)`` plate
objects (dims -2 and -1), which a noise model with latent variables re-enters for its sample
sites and then also provides ``guide(power, mask, plates)``. :class:`NMFNoise` is the default.

NMF noise: ``b[f, t] ~ CN(0, (W H)[f, t])`` with ``W ≥ 0`` of shape ``(F, R)`` and ``H ≥ 0`` of
shape ``(R, T)`` per utterance, fitted at test time (the method never sees noise in training).
Initialisation: ``W ~ U(0, 2L/R)`` and ``H ~ U(0, 2)`` elementwise (seeded), so the noise starts
with a flat expected spectrum ``E[WH] = L`` times the mixture's mean power (the separation model
normalises the power to mean one). With a *start shape* ``c[f]`` (mean one over bins, e.g. the
mixture's mean spectrum over frames where the lips say nobody speaks, see
:mod:`pyro_avss.inference.activity`), ``W[f, r] ~ c[f] · U(0, 2L/R)`` instead: the same loud
level, spread over the bins like the noise of this recording (it lost 0.5 dB against the flat
start on the tuned GRID mixtures, so flat is the default). With ``L = 6`` the noise at first
explains every bin, and SVI lowers it wherever the speech model explains the mixture better.
Measured on the 51 GRID dev mixtures of ``cli.py results`` (80 SVI steps, lr 0.4 decaying by
0.97): L = 6 gave 9.0 dB SI-SDRi, L = 2 8.8, L = 0.6 and L = 20 8.4; a start shaped like a noise
floor (a low quantile of the mixture power per bin) 8.2-8.3; one shaped like the mixture's mean
spectrum 5.2, because the noise then absorbs the speech.

*Smooth activations* (``smoothness = σ > 0``). Unconstrained, ``H`` can follow the syllables of
the target, and the NMF then takes speech for noise. With a smoothness prior the activations
are a latent random walk in log space, MAP-fitted (a ``Delta`` guide)::

    u[r, t] = log H[r, t],    u[r, t] - u[r, t-1] ~ N(0, σ²)    (u[r, 0] flat)

so a noise component changes its level by about ``σ`` nats per frame; speech, whose frame-to-frame
level changes are several nats, is left to the speech model, while slowly varying noise
(traffic, a tap, babble of many talkers) is still tracked.

*Smooth spectra* (``spectral_smoothness = σ_f > 0``). Unconstrained, a basis ``W[:, r]`` can take
the harmonic comb of the target's voice, and a speech-like noise (babble) then takes the target
with it. With a smoothness prior over frequency the bases' log spectra are latent random walks
too (MAP-fitted)::

    w[r, f] = log W[f, r],    w[r, f] - w[r, f-1] ~ N(0, σ_f²)    (w[r, 0] flat)

A harmonic comb changes by several nats between neighbouring bins (31 Hz apart); the broad
spectra of most noises, and of babble, which blurs many voices' harmonics, change slowly. Noises
that are harmonic themselves (animals, machines with a pitch) need free bases, so only the first
``smooth_rank`` of the learnt bases are smooth and the others stay free.

*Bases from the pauses* (``pause_bases``, ``(B, F, R_p)``). Where the lips say that nobody speaks
(:func:`~pyro_avss.inference.activity.pause_frames`), the mixture is noise alone, so bases
learnt there by an Itakura–Saito NMF of the mixture (:func:`fit_is_nmf`) hold this recording's
noise spectra, fine structure included (the harmonics of hens or sheep), and no speech. They
are held fixed during the fit; only their activations are fitted, like the others'::

    W = [ W_pause | W_learnt ],    W_pause fixed,    H over all R_p + R_learnt bases

so the noise can still follow its level through the speech, but the spectra it can give are
those of the pauses plus the ``R_learnt = R - R_p`` learnt ones (which started loud and flat, as
above). With smooth activations the pause bases' walk may have its own step ``σ_p``
(``pause_smoothness``): a recording's background changes its level through a sentence more
slowly than a free basis may need to, and a slower walk keeps the pause bases from rising with
the syllables (GRID one talker: ``σ_p`` 0.05 against 0.1 gained 0.14 dB SI-SDRi on the tuned
split and 0.08 on the held-out one, but lost 0.02 PESQ-WB on both, so ``σ_p = σ`` by default).
An utterance with too few pause frames gets flat pause bases (a white floor), and its learnt
bases then model its noise alone.
"""

from __future__ import annotations

import pyro
import pyro.distributions as dist
import torch
from pyro.distributions import constraints
from pyro.distributions.torch_distribution import TorchDistribution


def noise_floor(power: torch.Tensor, mask: torch.Tensor, quantile: float = 0.2) -> torch.Tensor:
    """``(B, T, F)`` power, ``(B, T)`` mask -> ``(B, F)`` per-bin quantile over valid frames."""
    filled = power.masked_fill(~mask[..., None], float("nan"))
    return torch.nanquantile(filled, quantile, dim=-2).clamp_min(1e-10)


def is_update(W: torch.Tensor, H: torch.Tensor, a: torch.Tensor, b: torch.Tensor):
    """One Itakura–Saito multiplicative update of ``W (..., F, R)`` then ``H (..., R, T)``
    (exponent ½), with ``a = E[|X|²/V²]`` and ``b = E[1/V]`` as ``(..., F, T)``::

        W ← W ⊙ [ (a Hᵀ) / (b Hᵀ) ]^½,    H ← H ⊙ [ (Wᵀ a) / (Wᵀ b) ]^½

    (for a plain NMF of ``V``, ``a = V / (WH)²`` and ``b = 1 / (WH)``)."""
    W = W * ((a @ H.transpose(-1, -2)) / (b @ H.transpose(-1, -2)).clamp_min(1e-30)).sqrt()
    H = H * ((W.transpose(-1, -2) @ a) / (W.transpose(-1, -2) @ b).clamp_min(1e-30)).sqrt()
    return W, H


@torch.no_grad()
def fit_is_nmf(V: torch.Tensor, rank: int, seed: int = 0, iterations: int = 200):
    """An Itakura–Saito NMF ``V ≈ W H`` of a power spectrogram ``V (F, n)`` (positive) by
    multiplicative updates (:func:`is_update`) from a seeded random start at ``V``'s mean level;
    returns ``W (F, rank)`` and ``H (rank, n)``."""
    V = V.clamp_min(1e-10)
    gen = torch.Generator().manual_seed(seed)
    W = (torch.rand(V.shape[0], rank, generator=gen) + 0.1).to(V)
    H = (torch.rand(rank, V.shape[1], generator=gen) + 0.1).to(V)
    W = W * (V.mean() / (W @ H).mean())
    for _ in range(iterations):
        A = W @ H
        W, H = is_update(W, H, V / A ** 2, 1 / A)
    return W.clamp_min(1e-10), H.clamp_min(1e-10)


class LogRandomWalk(TorchDistribution):
    """Gaussian random walk over the last axis with a flat (improper) first value:
    ``log p(u) = Σ_t m[t] log N(u[..., t] - u[..., t-1]; 0, σ²)`` with ``m[t]`` = 1 where frames
    ``t-1`` and ``t`` are both real (``mask``). Event shape: all of ``loc_shape``."""

    arg_constraints = {"scale": constraints.positive}
    support = constraints.independent(constraints.real, 1)

    def __init__(self, scale: float, shape, mask: torch.Tensor | None = None, validate_args=None):
        self.scale = torch.as_tensor(scale, dtype=torch.get_default_dtype())
        self.pair_mask = None if mask is None else (mask[..., 1:] & mask[..., :-1])
        super().__init__(torch.Size(), torch.Size(shape), validate_args=validate_args)
        self.support = constraints.independent(constraints.real, len(shape))

    def log_prob(self, value):
        step = dist.Normal(0.0, self.scale.to(value)).log_prob(value.diff(dim=-1))
        if self.pair_mask is not None:                 # (B, T) mask for a (B, R, T) walk
            step = step * self.pair_mask[:, None, :].to(step)
        return step.sum(tuple(range(-len(self.event_shape), 0)))

    def sample(self, sample_shape=torch.Size()):
        steps = torch.randn(sample_shape + self.event_shape) * self.scale
        steps[..., 0] = 0.0
        return steps.cumsum(-1)


class NMFNoise:
    """Non-negative matrix factorisation noise variance ``W H`` of rank ``rank``; with
    ``smoothness > 0`` the log activations are a latent random walk, with ``pauses = (bases,
    level)`` (``(B, F, R_p)`` and ``(B, R_p)``: :func:`fit_is_nmf` of each utterance's pause
    frames and their mean activations) the first ``R_p`` of the ``rank`` bases are those, held
    fixed, and their activations start at ``level``; with ``smoothness > 0`` their walk steps by
    ``pause_smoothness`` (None: ``smoothness``; unused when the activations are free) (module
    docstring)."""

    def __init__(self, rank: int = 8, seed: int = 0, init_level: float = 6.0, smoothness: float = 0.0,
                 start_shape: torch.Tensor | None = None, spectral_smoothness: float = 0.0,
                 smooth_rank: int | None = None, pauses: tuple | None = None,
                 pause_smoothness: float | None = None):
        if pause_smoothness is not None and not (pause_smoothness > 0 or smoothness == 0):
            raise ValueError(f"the pause bases' smoothness must be > 0, got {pause_smoothness}")
        if rank < 1 or not init_level > 0 or not smoothness >= 0 or not spectral_smoothness >= 0:
            raise ValueError(f"NMF noise needs rank >= 1, init_level > 0 and smoothnesses >= 0, got "
                             f"{rank}, {init_level}, {smoothness} and {spectral_smoothness}")
        if start_shape is not None and not bool((start_shape > 0).all()):
            raise ValueError("the noise start shape must be positive")
        self.pauses = pauses
        self.pause_rank = 0 if pauses is None else pauses[0].shape[-1]
        if not 0 <= self.pause_rank <= rank:
            raise ValueError(f"{self.pause_rank} pause bases for a noise of rank {rank}")
        self.rank, self.seed, self.init_level, self.smoothness = rank, seed, init_level, smoothness
        self.learnt = rank - self.pause_rank                   # the bases fitted by SVI
        self.pause_smoothness = smoothness if pause_smoothness is None else pause_smoothness
        self._step_scales = torch.tensor([self.pause_smoothness] * self.pause_rank
                                         + [smoothness] * self.learnt)[:, None]
        self.start_shape = start_shape
        self.spectral_smoothness = spectral_smoothness
        smooth_rank = self.learnt if smooth_rank is None else smooth_rank
        if not 0 <= smooth_rank <= self.learnt:
            raise ValueError(f"smooth_rank must be in [0, {self.learnt}] (the learnt bases), got {smooth_rank}")
        self.smooth_rank = smooth_rank if spectral_smoothness > 0 else 0   # the first ones are smooth
        if smoothness > 0 or self.smooth_rank > 0:
            self.guide = self._smooth_guide          # the noise then has latent variables

    def init_params(self, power, mask):
        """Random learnt bases ``W (B,F,R_learnt)`` and activations ``H (B,R,T)`` with ``E[W H] =
        init_level`` over the learnt bases (module docstring); the pause bases' activations start
        at their level.

        Every utterance gets the same draw, taken frame by frame, so an utterance's start does not
        depend on its batch neighbours nor on how far the batch pads it: a clip separated in a
        batch starts where it starts alone."""
        B, T, F = power.shape
        R = self.learnt
        gen = torch.Generator().manual_seed(self.seed)
        W = torch.rand(F, R, generator=gen) * (2 * self.init_level / max(R, 1))
        H = torch.rand(T, R, generator=gen).T * 2                     # frame-major: prefix-stable
        W, H = W.to(power).expand(B, F, R), H.to(power).expand(B, R, T)
        if self.start_shape is not None:                              # (B, F), mean one over F
            W = W * self.start_shape.to(power)[..., None]
        if self.pauses is not None:
            H = torch.cat([self.pauses[1].to(power)[..., None].expand(B, self.pause_rank, T), H], -2)
        return W.clamp_min(1e-6), H.clamp_min(1e-6)

    def bases(self, power: torch.Tensor, lazy) -> torch.Tensor:
        """``W (B, F, R)``: the pause bases (fixed), then the learnt ones — the spectrally smooth
        (``noise_log_W``, a latent random walk) and the free (``noise_W``, a parameter)."""
        B, _, F = power.shape
        Rs = self.smooth_rank
        parts = [] if self.pauses is None else [self.pauses[0].to(power)]
        if Rs:
            parts.append(pyro.sample("noise_log_W", LogRandomWalk(self.spectral_smoothness,
                                                                  (B, Rs, F))).exp().transpose(-1, -2))
        if Rs < self.learnt:
            parts.append(pyro.param("noise_W", lambda: lazy(0)[..., Rs:], constraint=constraints.positive))
        return torch.cat(parts, -1) if len(parts) > 1 else parts[0]

    def log_variance(self, power: torch.Tensor, mask: torch.Tensor, plates=None) -> torch.Tensor:
        """Register the learnt bases (:meth:`bases`) and ``noise_H (B,R,T)``; return ``log(WH)ᵀ
        (B,T,F)``."""
        init = None

        def lazy(i):
            nonlocal init
            if init is None:
                init = self.init_params(power, mask)
            return init[i]

        W = self.bases(power, lazy)
        if self.smoothness > 0:
            H = pyro.sample("noise_log_H", LogRandomWalk(self.step_scales(), (power.shape[0], self.rank,
                                                                           power.shape[1]), mask)).exp()
        else:
            H = pyro.param("noise_H", lambda: lazy(1), constraint=constraints.positive)
        return (W @ H).clamp_min(1e-12).log().transpose(-1, -2)

    def step_scales(self) -> torch.Tensor:
        """``(R, 1)``: the random walk's step σ of each basis's log activation (pause bases
        first), built once with the noise model rather than at every SVI step."""
        return self._step_scales

    def _smooth_guide(self, power, mask, plates=None):
        """MAP guide of the smooth factors: ``Delta`` at the parameters ``noise_log_H_map`` and
        ``noise_log_W_map`` (``(B, R, F)``, the bases' log spectra) for those that are latent."""
        init = None

        def lazy(i):
            nonlocal init
            if init is None:
                init = self.init_params(power, mask)
            return init[i].log()

        if self.smooth_rank > 0:
            log_W = pyro.param("noise_log_W_map",
                               lambda: lazy(0)[..., :self.smooth_rank].transpose(-1, -2).contiguous())
            pyro.sample("noise_log_W", dist.Delta(log_W, event_dim=3))
        if self.smoothness > 0:
            log_H = pyro.param("noise_log_H_map", lambda: lazy(1))
            pyro.sample("noise_log_H", dist.Delta(log_H, event_dim=3))

    @torch.no_grad()
    def multiplicative_update(self, inv_var: torch.Tensor, power_inv_var2: torch.Tensor) -> None:
        """One Itakura–Saito multiplicative update of ``W`` then ``H`` (exponent ½), in place (the
        pause bases, if any, are held).

        With ``E[1/V]`` = ``inv_var`` and ``E[|X|²/V²]`` = ``power_inv_var2`` (both ``(B,T,F)``,
        expectations over the switch posterior, zero on padded frames) and ``V = speech + WH``:

            W ← W ⊙ [ (E[|X|²/V²]ᵀ Hᵀ) / (E[1/V]ᵀ Hᵀ) ]^½,   H ← H ⊙ [ (Wᵀ E[|X|²/V²]ᵀ) / (Wᵀ E[1/V]ᵀ) ]^½
        """
        if self.smoothness > 0 or self.smooth_rank > 0:
            raise ValueError("multiplicative NMF updates need smoothness = 0 and no smooth bases")
        W = pyro.param("noise_W") if self.pauses is None else torch.cat([self.pauses[0], pyro.param("noise_W")], -1)
        W, H = is_update(W, pyro.param("noise_H"), power_inv_var2.transpose(-1, -2),
                         inv_var.transpose(-1, -2))                                  # (B,F,T)
        W = W[..., self.pause_rank:]                             # the pause bases stay as they are
        pyro.param("noise_W").unconstrained().data.copy_(W.clamp_min(1e-12).log())
        pyro.param("noise_H").unconstrained().data.copy_(H.clamp_min(1e-12).log())


class KnownNoise:
    """A noise whose variance is given: ``log_variance`` returns ``log power`` for a ``(B, T, F)``
    noise power spectrogram in the units of the mixture power the model sees (normalised per
    utterance). With the true noise's power this is an oracle — the separation told the noise —
    which bounds what any noise model could give with these speech models."""

    def __init__(self, power: torch.Tensor, floor: float = 1e-8):
        self.power, self.floor = power, floor

    def log_variance(self, power: torch.Tensor, mask: torch.Tensor, plates=None) -> torch.Tensor:
        if self.power.shape != power.shape:
            raise ValueError(f"known noise of shape {tuple(self.power.shape)} for a mixture of "
                             f"shape {tuple(power.shape)}")
        return self.power.to(power).clamp_min(self.floor).log()
