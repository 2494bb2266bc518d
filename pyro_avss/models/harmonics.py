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

over ``f0`` from 70 to 400 Hz. With several sources, each one's estimate still holds some of the
others' voices, and the louder voice's harmonics often match best in every estimate: two talkers'
estimates took the other talker's pitch in 19 % of their loud voiced frames, and were within 5 %
of the pitch the same match reads from the clean source in 57 % (the 34 two-talker tuned-on
mixtures, combs read after 30 steps, one-off). So source ``j`` keeps the
comb that matches its own estimate better than the others' on average::

    f0_j = argmax_{f0} M_j(f0) − λ · mean_{k ≠ j} M_k(f0),     λ = 0.5,

``M_j(f0)`` the match above (19 % → 9 % of the frames on the other talker's pitch, 62 % right;
two-talker tuned-on split 8.11 → 8.29 dB, λ = 1 7.60; held-out 7.14 → 7.42, three talkers 5.65
→ 5.72; one talker is unchanged). A Viterbi track of the pitch over frames on top of it (a cost
per Hz of change, a fixed cost per jump) read 65 % right and gave 8.32: too little for what it
adds. The pitch is still the limit: combs at the clean sources' pitch give 9.22 dB there against
7.88 (one mixture per fit; one talker 9.69 against 9.22).

The match is not normalised by each comb's spread (larger for lower pitches, whose bumps cover
more of the band): normalised, it finds a clean synthetic voice's pitch where this may take half
of it, but the two-talker tuned-on split lost 0.14 dB with it (7.65 against 7.79 dB, combs read
at step 20, before the others' match was subtracted). A frame that no comb matches (best match
≤ 0: no fine structure at all) keeps ``c = 1``; keeping it also where the match, normalised, fell
below 0.3 lost 0.18 dB there (7.61). The pitch is a point estimate, read once like the noise
bases of the pauses (:func:`~.noise.pause_noise_bases`), not a sample site: the model stays a
function of ``z``, the gains, the noise and the switch, with the combs as fixed factors.

**Each speaker's pitch range.** A speaker model knows more of its voice than its envelope: ``fit``
reads, with the same match, the pitch of every loud frame (within 20 dB of its clip's loudest) of
up to 100 training clips of each component, and keeps its 5th to 95th percentile as that
component's range (:meth:`HarmonicCombs.pitch_range`, :mod:`pyro_avss.inference.harmonics`; GRID
s1 78–212 Hz, s4 116–261 Hz).
When the combs are read, each source searches only the pitches inside the range of the components
that hold at least half of its switch posterior (:meth:`HarmonicCombs.allowed_pitches`), so a
source the switch has bound to a low voice cannot take the high voice leaking into its estimate::

    f0_j ∈ {f0 : Σ_k q_j(k) · 1[lo_k ≤ f0 ≤ hi_k] ≥ 1/2},   q_j(k) source j's mean switch posterior

Two GRID talkers, combs at step 30 (one-off, 2026-12-06, models retrained that day): loud voiced
frames on the other talker's pitch 12.1 % → 5.6 %, SI-SDRi 7.90 → 8.01 dB on the tuned-on split
and 7.26 → 7.49 on the held-out one (models trained with seed 1: 8.13 → 8.19, 7.31 → 7.53); the
2nd–98th percentile gave 7.88, the 10th–90th 7.98 (choice made on the tuned-on split). Models
trained before the ranges existed have none and search every pitch.

**Choosing the pitches together.** Each source's estimate is a poor witness of its own pitch where
the other voice leaks into it; the mixture is not. Its fine structure ``φ_X`` (of ``X = Σ_j P̂_j +
N̂``, the noise's estimate ``N̂``) should look like the log of the sources' combs, each weighted by
that source's share of the envelope, plus the noise's share without a comb::

    m[f] = log(Σ_j w_j[f] c_{f0_j}(f) + w_N[f]),     w_j = Ē_j / (Σ_k Ē_k + Ē_N),  w_N likewise

So each source keeps its :data:`CANDIDATES` best pitches by the score above (within its range),
and the pitches are chosen together to maximise the correlation of ``m`` with ``φ_X`` over the band
below ``f_top``: coordinate ascent from each source's best, each source in turn taking the
candidate that fits best with the others' kept, :data:`SWEEPS` times over the sources
(:meth:`HarmonicCombs.joint_choice`). One source is chosen the same way, against the noise alone.
Combs at step 30 with the speakers' ranges (one-off, the models above): two talkers 8.01 → 8.30
dB tuned-on and 7.49 → 7.84 held-out (seed-1 models 8.19 → 8.52, 7.53 → 7.87), the frames within
5 % of the clean source's pitch 56.3 → 63.3 %; one talker 8.82 → 8.98 and 7.33 → 7.44; three
talkers 5.85 → 6.19; LibriSpeech (one talker, audio only) 4.04 → 4.10 and 2.79 → 2.80 with the
ranges as well. Every pair of 4 / 8 / 16 candidates gave 8.26 / 8.33 / 8.34 on the two-talker
tuned-on split (the choice of 8), coordinate ascent 8.30.
"""

from __future__ import annotations

import torch

#: pitch candidates (Hz): 70 to 400 Hz, 1 Hz apart
PITCH_RANGE = (70.0, 400.0, 1.0)
#: width of each harmonic's bump (Hz), floor between harmonics, top of the combed band (Hz)
WIDTH_HZ, FLOOR, TOP_HZ = 7.0, 0.1, 4000.0
#: half-width (bins) of the moving average that gives a power estimate's envelope
ENVELOPE_BINS = 8
#: λ: how much of the other sources' mean match each source's own match loses
OTHERS_WEIGHT = 0.5
#: the joint choice: each source's best pitches it chooses among, sweeps of coordinate ascent
CANDIDATES, SWEEPS = 8, 2
#: a speaker's pitch range: these percentiles of its pitch in its training clips' loud frames ...
RANGE_PERCENTILES = (5.0, 95.0)
#: ... the frames within this many dB of their clip's loudest, a range needing this many of them
LOUD_DB, RANGE_MIN_FRAMES = 20.0, 50


class HarmonicCombs:
    """The log combs ``log c_{f0}`` of every pitch of :data:`PITCH_RANGE` (module docstring) on
    the ``num_bins`` bins of an ``n_fft``-point STFT at ``sample_rate``; calling it on the power
    estimates ``(..., J, F)`` of J sources in each frame gives the log comb of each source's pitch
    there ``(..., J, F)``."""

    def __init__(self, num_bins: int, sample_rate: int, n_fft: int, device=None,
                 ranges: torch.Tensor | None = None):
        #: ``(K, 2)`` the pitch range (Hz) of each component of the bank, NaN where it has none
        self.ranges = ranges
        freqs = torch.arange(num_bins, dtype=torch.float32, device=device) * (sample_rate / n_fft)
        f0 = self.pitches = torch.arange(*PITCH_RANGE, dtype=torch.float32, device=device)
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

    def fine_structure(self, power: torch.Tensor) -> torch.Tensor:
        """``(..., F_band)`` the centred ``φ = log(P / Ē)`` of ``power (..., F)`` below
        :data:`TOP_HZ` (module docstring)."""
        fine = torch.log(power[..., self.band] / envelope(power)[..., self.band].clamp_min(1e-12) + 1e-6)
        return fine - fine.mean(-1, keepdim=True)

    def match(self, power: torch.Tensor) -> torch.Tensor:
        """``(..., P)`` how well each comb matches each frame's fine structure in ``power (..., F)``
        (module docstring)."""
        fine = self.fine_structure(power)
        return torch.einsum("...f,pf->...p", fine, self._shapes.to(fine))

    def choose(self, power: torch.Tensor, allowed: torch.Tensor | None = None,
               noise: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """``(indices, matches)``, each ``(..., J)``: the comb each source's estimate in ``power
        (..., J, F)`` keeps (its own match less λ times the others' mean, module docstring) and
        that comb's own match (≤ 0: no fine structure, no comb); with ``allowed`` (a boolean
        ``(..., J, P)`` broadcastable to the matches, from :meth:`allowed_pitches`), among the
        allowed pitches only; with the noise's power estimate ``noise (..., F)``, jointly among
        each source's :data:`CANDIDATES` best (:meth:`joint_choice`)."""
        match = self.match(power)
        sources = match.shape[-2]
        score = match
        if sources > 1:
            others = (match.sum(-2, keepdim=True) - match) / (sources - 1)
            score = match - OTHERS_WEIGHT * others
        if allowed is not None:
            score = score.masked_fill(~allowed, float("-inf"))
        if noise is None:
            chosen = score.argmax(-1)
        else:
            chosen = self.joint_choice(power, noise, *score.topk(min(CANDIDATES, score.shape[-1]), -1))
        return chosen, match.gather(-1, chosen[..., None])[..., 0]

    def joint_choice(self, power: torch.Tensor, noise: torch.Tensor, scores: torch.Tensor,
                     candidates: torch.Tensor) -> torch.Tensor:
        """``(..., J)`` the pitch indices that, among each source's ``candidates (..., J, C)``
        (indices, best ``scores`` first; a score of −∞ is not allowed), explain the fine structure
        of the mixture ``Σ_j power_j + noise`` best together: coordinate ascent from each source's
        first candidate, :data:`SWEEPS` times over the sources (module docstring)."""
        J = power.shape[-2]
        fine = self.fine_structure(power.sum(-2) + noise)                          # (..., Fb)
        shares = envelope(torch.cat([power, noise[..., None, :]], -2))[..., self.band]
        shares = shares / shares.sum(-2, keepdim=True).clamp_min(1e-12)            # (..., J+1, Fb)
        combs = self.log_combs[:, self.band].exp().to(power)                       # (P, Fb)
        pick = torch.zeros_like(candidates[..., 0])                                # (..., J)
        for _ in range(SWEEPS):
            for j in range(J):
                kept = combs[candidates.gather(-1, pick[..., None])[..., 0]] * shares[..., :J, :]
                others = kept.sum(-2) - kept[..., j, :] + shares[..., J, :]       # (..., Fb)
                model = torch.log(combs[candidates[..., j, :]] * shares[..., j, None, :]
                                  + others[..., None, :] + 1e-6)                   # (..., C, Fb)
                model = model - model.mean(-1, keepdim=True)
                fit = (model * fine[..., None, :]).sum(-1) / model.norm(dim=-1).clamp_min(1e-12)
                pick[..., j] = fit.masked_fill(scores[..., j, :].isneginf(), float("-inf")).argmax(-1)
        return candidates.gather(-1, pick[..., None])[..., 0]

    def pitch(self, power: torch.Tensor, allowed: torch.Tensor | None = None,
              noise: torch.Tensor | None = None) -> torch.Tensor:
        """``(..., J)`` each source's pitch (Hz) in ``power (..., J, F)``, NaN where no comb is kept."""
        chosen, own = self.choose(power, allowed, noise)
        f0 = self.pitches.to(power)[chosen]
        return torch.where(own > 0, f0, torch.full_like(f0, float("nan")))

    def __call__(self, power: torch.Tensor, allowed: torch.Tensor | None = None,
                 noise: torch.Tensor | None = None) -> torch.Tensor:
        chosen, own = self.choose(power, allowed, noise)
        combs = self.log_combs.to(power)[chosen]
        return torch.where(own[..., None] > 0, combs, torch.zeros_like(combs))

    def allowed_pitches(self, posterior: torch.Tensor, mask: torch.Tensor, components: list[int]
                        ) -> torch.Tensor | None:
        """``(B, 1, J, P)`` the pitches each source may take (module docstring), None without
        :attr:`ranges`: those inside the ranges of the components (``components``, indices into
        the bank) holding at least half of its switch posterior ``(B, T, J, K)`` over the valid
        frames of ``mask (B, T)``. A source left with no pitch keeps them all."""
        if self.ranges is None:
            return None
        valid = mask.to(posterior)[:, :, None, None]
        share = (posterior * valid).sum(1, keepdim=True) / valid.sum(1, keepdim=True).clamp_min(1.0)
        low, high = self.ranges[components].to(posterior).unbind(-1)
        f0 = self.pitches.to(posterior)
        inside = ((f0 >= low[:, None]) & (f0 <= high[:, None])) | low.isnan()[:, None]    # (K, P)
        allowed = share @ inside.to(share) >= 0.5
        return allowed | ~allowed.any(-1, keepdim=True)

    def pitch_range(self, clips) -> tuple[float, float] | None:
        """A speaker's pitch range (Hz, module docstring) from the powers ``(T, F)`` of its
        clean clips: :data:`RANGE_PERCENTILES` of its pitch in their frames within
        :data:`LOUD_DB` of each clip's loudest; None with fewer than :data:`RANGE_MIN_FRAMES`
        such frames holding a comb."""
        found = []
        for power in clips:
            energy = power.sum(-1)
            loud = energy >= energy.max() * 10 ** (-LOUD_DB / 10)
            f0 = self.pitch(power[loud][:, None, :])[:, 0]
            found.append(f0[~f0.isnan()])
        f0 = torch.cat(found) if found else torch.zeros(0)
        if len(f0) < RANGE_MIN_FRAMES:
            return None
        low, high = torch.quantile(f0.double(), torch.tensor(RANGE_PERCENTILES, dtype=torch.float64) / 100)
        return float(low), float(high)


def envelope(power: torch.Tensor, half: int = ENVELOPE_BINS) -> torch.Tensor:
    """``power (..., F)`` averaged over bins ``f − half … f + half`` (edges repeated)."""
    shape = power.shape
    flat = torch.nn.functional.pad(power.reshape(-1, 1, shape[-1]), (half, half), mode="replicate")
    kernel = power.new_full((1, 1, 2 * half + 1), 1.0 / (2 * half + 1))
    return torch.nn.functional.conv1d(flat, kernel).reshape(shape)
