"""Harmonic combs: the fine structure of voiced speech that the speech decoders leave out.

A decoder gives each frame's spectral envelope ``σ²(z)[f]``; voiced speech puts its energy on the
harmonics of its pitch ``f0[t]`` and little between them. With the true powers of two talkers, the
ideal Wiener filter gives 14.75 dB SI-SDRi; the same powers smoothed over ±8 bins (±125 Hz, an
envelope) 8.65 dB, and that envelope times a comb at the clean source's pitch 12.13 dB (GRID,
the first 20 two-talker mixtures of ``cli.py results``, one-off diagnostic of 2026-12-06). The
decoders' own ceiling, ``oracle-latent``, rises from 9.12 to 11.10 dB with the comb at the clean
pitch. So separation may multiply each source's speech variance by a comb at a pitch read from
that source's own estimate part-way through the fit (``separate.harmonics_at``):

    s_j[f, t] ~ CN(0, g_j σ²(z_j[t])[f] · c_{f0_j[t]}(f))

The comb of pitch ``f0`` (a bump of width ``w`` on every harmonic, a floor ``ρ`` between them)::

    c_{f0}(f) ∝ ρ + (1 − ρ) · exp(−(f − h f0)² / 2w²)      for f < f_top, h the harmonic nearest f,

normalised to mean 1 over ``f < f_top``, and ``c = 1`` above ``f_top`` (high harmonics drift off a
grid of pitches spaced 1 Hz apart), so the comb moves power from between the harmonics onto them
and keeps the envelope's level. Source j's pitch at frame t is the comb whose log best matches
the fine structure of its power estimate ``P̂_j`` (its envelope divided out)::

    φ[f] = log(P̂[f] / Ē[f]),    Ē = P̂ averaged over ±8 bins,
    f0 = argmax_{f0} Σ_{f < f_top} (φ[f] − mean φ) (log c_{f0}(f) − mean log c_{f0}),

over ``f0`` from 70 to 400 Hz. The match is not normalised by each comb's spread (larger for
lower pitches, whose bumps cover more of the band): normalised, it finds a clean synthetic voice's
pitch where this may take half of it, but the two-talker tuned-on split lost 0.14 dB with it
(7.65 against 7.79 dB, combs read at step 20). A frame that no comb matches (best match ≤ 0: no
fine structure at all) keeps ``c = 1``; keeping it also where the match, normalised, fell below
0.3 lost 0.18 dB there (7.61). The pitch is a point estimate, read once like the noise bases of the pauses
(:func:`~.noise.pause_noise_bases`), not a sample site: the model stays a function of ``z``, the
gains, the noise and the switch, with the combs as fixed factors.
"""

from __future__ import annotations

import torch

#: pitch candidates (Hz): 70 to 400 Hz, 1 Hz apart
PITCH_RANGE = (70.0, 400.0, 1.0)
#: width of each harmonic's bump (Hz), floor between harmonics, top of the combed band (Hz)
WIDTH_HZ, FLOOR, TOP_HZ = 7.0, 0.1, 4000.0
#: half-width (bins) of the moving average that gives a power estimate's envelope
ENVELOPE_BINS = 8


class HarmonicCombs:
    """The log combs ``log c_{f0}`` of every pitch of :data:`PITCH_RANGE` (module docstring) on
    the ``num_bins`` bins of an ``n_fft``-point STFT at ``sample_rate``; calling it on power
    estimates ``(..., F)`` gives the log comb of each frame's pitch ``(..., F)``."""

    def __init__(self, num_bins: int, sample_rate: int, n_fft: int, device=None):
        freqs = torch.arange(num_bins, dtype=torch.float32, device=device) * (sample_rate / n_fft)
        f0 = torch.arange(*PITCH_RANGE, dtype=torch.float32, device=device)
        # the nearest harmonic's bump only: any other is at least 35 Hz away, its bump below 1e-5
        nearest = (freqs / f0[:, None]).round().clamp_min(1.0) * f0[:, None]          # (P, F)
        bumps = torch.exp(-0.5 * ((freqs - nearest) / WIDTH_HZ) ** 2)
        self.band = freqs < TOP_HZ                                                  # combed bins
        comb = FLOOR + (1 - FLOOR) * bumps
        comb = comb / comb[:, self.band].mean(1, keepdim=True)
        comb[:, ~self.band] = 1.0
        self.log_combs = comb.log()                                                 # (P, F)
        shapes = self.log_combs[:, self.band]
        self._shapes = shapes - shapes.mean(-1, keepdim=True)

    def match(self, power: torch.Tensor) -> torch.Tensor:
        """``(..., P)`` how well each comb matches each frame's fine structure in ``power (..., F)``
        (module docstring)."""
        fine = torch.log(power[..., self.band] / envelope(power)[..., self.band].clamp_min(1e-12) + 1e-6)
        return torch.einsum("...f,pf->...p", fine - fine.mean(-1, keepdim=True), self._shapes.to(fine))

    def pitch(self, power: torch.Tensor) -> torch.Tensor:
        """``(...)`` each frame's pitch (Hz) in ``power (..., F)``, NaN where no comb matches."""
        best = self.match(power).max(-1)
        f0 = PITCH_RANGE[0] + PITCH_RANGE[2] * best.indices.to(power.dtype)
        return torch.where(best.values > 0, f0, torch.full_like(f0, float("nan")))

    def __call__(self, power: torch.Tensor) -> torch.Tensor:
        best = self.match(power).max(-1)
        combs = self.log_combs.to(power)[best.indices]
        return torch.where(best.values[..., None] > 0, combs, torch.zeros_like(combs))


def envelope(power: torch.Tensor, half: int = ENVELOPE_BINS) -> torch.Tensor:
    """``power (..., F)`` averaged over bins ``f − half … f + half`` (edges repeated)."""
    shape = power.shape
    flat = torch.nn.functional.pad(power.reshape(-1, 1, shape[-1]), (half, half), mode="replicate")
    kernel = power.new_full((1, 1, 2 * half + 1), 1.0 / (2 * half + 1))
    return torch.nn.functional.conv1d(flat, kernel).reshape(shape)
