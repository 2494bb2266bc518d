"""Test-time separation: SVI on the separation model with the switch marginalised exactly.

For a batch of (chunks of) mixtures the frozen speech models, the switch prior and the NMF noise
form :class:`~pyro_avss.models.generative.SeparationModel`. SVI (Adam) fits the gains, the noise,
the switch prior and the per-frame guide ``q(z)``, starting from the encoder's output, until the
relative change of the smoothed loss falls below ``tol`` or ``steps`` is reached. The learning
rate starts high and decays geometrically, ``lr_i = lr · lr_decay^i``: gains and NMF factors are
fitted in log space and must move by several nats within a few dozen steps (Adam moves a
parameter by at most about ``lr`` per step), while the decay lets ``q(z)`` settle. Then, with
``S`` samples ``z^(s) ~ q(z)``, the posterior-mean Wiener masks are

    M_j[t, f] = (1/S) Σ_s Σ_state γ_s[t, state] · g_j σ²_{j, state_j}(z^(s)) / V_state(z^(s))[t, f]
    M_noise   = (1/S) Σ_s Σ_state γ_s[t, state] · (W H)[t, f] / V_state(z^(s))[t, f]

where ``γ_s`` is the exact switch posterior given ``z^(s)`` and ``V`` the mixture variance of
the joint state; the masks sum to one, so sources plus noise give back the mixture. The fit of
one batch is :mod:`.batch_fit`; this module cuts recordings into chunks and puts them back.

Each frame's ``z`` has its own posterior, so a source's mask moves from frame to frame faster
than the signal can: frames ``hop`` apart share three quarters of their window, yet an isolated
frame of a high gain in a noise-dominated bin is what is heard as musical noise. With
``mask_smoothing = h > 0`` each source's mask is averaged over ``2h + 1`` frames (within the
span of one window for ``h < n_fft / hop``), and the noise takes the rest::

    M̃_j[t, f] = Σ_{|d| ≤ h} w_d v[t+d] M_j[t+d, f] / Σ_{|d| ≤ h} w_d v[t+d],   w_d = h + 1 − |d|
    M̃_noise = 1 − Σ_j M̃_j

with ``v`` one on the recording's frames and zero on the batch's padding, so the average never
reaches past a recording's ends (:func:`smoothed_masks`).

Long recordings are cut into chunks of ``chunk_seconds`` with ``overlap_seconds`` of overlap;
chunks (of one or many recordings) are separated in batches and cross-faded back linearly.
Source j is tied to video j, so identities agree across chunks; audio-only sources are matched
between consecutive chunks by their correlation over the overlap.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np
import torch

from ..audio import istft, stft
from ..checkpoint import SpeechModels
from .batch_fit import BatchFit, components_view, explain_fit, fit_batch, fitted_stay, posterior_masks
from .inputs import aligned_lips, gated_tracks
from ..settings.separation import SeparationSettings

# the separation API in one place: the settings, the batch fit and the recordings around it
__all__ = ["BatchFit", "Separated", "SeparationSettings", "chunk_bounds", "components_view", "explain_fit",
           "fit_batch", "fitted_stay", "posterior_masks", "separate_recordings", "smoothed_masks"]


@dataclass
class Separated:
    """Result for one recording."""

    sources: np.ndarray       # (J, N) estimates
    noise: np.ndarray         # (N,)
    posterior: np.ndarray     # (T, J, K) switch posterior per STFT frame
    steps: int                # SVI steps taken (largest over its chunks)
    switch_stay: np.ndarray | None = None   # (J,) fitted stay probability of a learnt Markov
                                            # switch (mean over chunks, by frames), else None
    components_run: int = 0   # decoders its fit ran to the end, after pruning (most over chunks)


# ---------------------------------------------------------------------------------------------
# recordings -> chunks -> batches -> recordings
# ---------------------------------------------------------------------------------------------
@dataclass
class _Chunk:
    """Where a chunk lies; its tensors are computed only when its batch is fitted."""

    job: int
    index: int            # position in its recording
    start: int            # first sample
    length: int           # samples
    frames: int           # STFT frames


def _read_tracks(models: SpeechModels, tracks, lip_gate: bool, what: str) -> list:
    """One recording's lip tracks as its chunks read them: through the model's mouth gate, once
    per track (:func:`~.inputs.gated_tracks`), unless ``lip_gate`` (``separate.lip_gate``) is off."""
    return gated_tracks(tracks, models.lips, what) if lip_gate else list(tracks)


def _chunk_inputs(models: SpeechModels, audio, tracks, c: _Chunk):
    """``power (T,F)`` normalised to mean one, ``spec (T,F)`` complex, ``lips (T,J,Dv)`` and
    ``present (T,J)`` of one chunk (``tracks`` from :func:`_read_tracks`)."""
    cfg = models.stft
    spec = stft(torch.as_tensor(audio[c.start:c.start + c.length]), cfg)
    power = spec.abs().pow(2)
    power = power / power.mean().clamp_min(1e-12)
    times = c.start / cfg.sample_rate + cfg.frame_times(spec.shape[0])
    lp = [aligned_lips(t, models.lips, times, models.lip_encoder, gate=False) for t in tracks]
    return power, spec, torch.stack([x[0] for x in lp], 1), torch.stack([x[1] for x in lp], 1)


def smoothed_masks(masks: torch.Tensor, valid: torch.Tensor, half: int) -> torch.Tensor:
    """``masks (B, T, J+1, F)`` (sources, then the noise) with each source's mask averaged over
    ``half`` frames on each side by triangular weights, over the ``valid (B, T)`` frames only,
    and the noise's mask the rest (see the module docstring); unchanged for ``half = 0``."""
    if half <= 0:
        return masks
    B, T, J1, F = masks.shape
    weights = torch.cat([torch.arange(1.0, half + 2), torch.arange(float(half), 0.0, -1)])
    weights = weights.to(masks).view(1, 1, -1)
    v = valid.to(masks.dtype)
    sources = (masks[:, :, :-1] * v[..., None, None]).permute(0, 2, 3, 1).reshape(-1, 1, T)
    summed = torch.nn.functional.conv1d(sources, weights, padding=half).reshape(B, J1 - 1, F, T)
    norm = torch.nn.functional.conv1d(v[:, None], weights, padding=half)            # (B,1,T)
    smooth = (summed / norm[:, :, None].clamp_min(1e-12)).permute(0, 3, 1, 2)       # (B,T,J,F)
    noise = (1 - smooth.sum(2, keepdim=True)).clamp_min(0.0)
    return torch.cat([smooth, noise], 2)


def chunk_bounds(num_samples: int, chunk: int, overlap: int, hop: int) -> list[tuple[int, int]]:
    """``(start, length)`` of chunks of at most ``chunk`` samples overlapping by ``overlap``;
    starts are multiples of ``hop``; a single chunk when the signal is short enough."""
    if num_samples <= chunk:
        return [(0, num_samples)]
    step = max(hop, (chunk - overlap) // hop * hop)
    starts = list(range(0, max(num_samples - overlap, 1), step))
    return [(s, min(chunk, num_samples - s)) for s in starts if s < num_samples]


def separate_recordings(models: SpeechModels, jobs: list[tuple[np.ndarray, list]],
                        settings: SeparationSettings, device=torch.device("cpu"),
                        progress=None, make_noise=None, make_switch_prior=None,
                        make_guide=None) -> list[Separated]:
    """Separate many recordings. ``jobs``: ``(audio (N,), tracks)`` with one entry per source in
    ``tracks`` (a :class:`~pyro_avss.video.track.LipTrack` or None). Returns one
    :class:`Separated` per job, in order. ``progress(n)`` is called after each batch;
    ``make_noise``, ``make_switch_prior`` and ``make_guide`` are passed to :func:`fit_batch`.

    Memory is streamed: a chunk's spectra exist only while its batch is fitted, and its
    estimate is cross-faded into its recording's output right after, so a long recording holds
    its waveform buffers and one batch of chunks (not every chunk's masks and spectra)."""
    cfg = models.stft
    settings.check_model(models)
    models.to(device)
    chunk = int(settings.chunk_seconds * cfg.sample_rate)
    overlap = int(settings.overlap_seconds * cfg.sample_rate)
    chunks: list[_Chunk] = []
    assemblers = []
    read = []                                       # (audio, tracks) as the chunks read them
    for j, (audio, tracks) in enumerate(jobs):
        read.append((audio, _read_tracks(models, tracks, settings.lip_gate, f"recording {j + 1}")))
        bounds = chunk_bounds(len(audio), chunk, overlap, cfg.hop)
        chunks += [_Chunk(j, i, start, length, cfg.num_frames(length))
                   for i, (start, length) in enumerate(bounds)]
        assemblers.append(_Assembler(cfg, len(audio), bounds, len(tracks),
                                     align=not any(t is not None for t in tracks) and len(tracks) > 1))
    order = sorted(range(len(chunks)), key=lambda i: chunks[i].frames)
    for b in range(0, len(order), settings.batch_size):
        group = [chunks[i] for i in order[b:b + settings.batch_size]]
        inputs = [_chunk_inputs(models, *read[c.job], c) for c in group]
        T = max(x[0].shape[0] for x in inputs)
        pad = lambda xs: torch.stack([torch.nn.functional.pad(  # noqa: E731
            x, (0, 0) * (x.dim() - 1) + (0, T - x.shape[0])) for x in xs]).to(device)
        mask = torch.stack([torch.arange(T) < x[0].shape[0] for x in inputs]).to(device)
        fit = fit_batch(models, pad([x[0] for x in inputs]), pad([x[2] for x in inputs]),
                        pad([x[3] for x in inputs]), mask, settings, make_noise, make_switch_prior,
                        make_guide)
        masks, post, steps = fit
        masks = smoothed_masks(masks, mask, settings.mask_smoothing)
        stay = fitted_stay(fit.params)
        for k, (c, x) in enumerate(zip(group, inputs)):
            n = x[0].shape[0]
            est = istft(masks[k, :n].cpu().permute(1, 0, 2) * x[1], c.length, cfg).numpy()  # (J+1, n)
            assemblers[c.job].add(c.index, est, post[k, :n].cpu().numpy(), steps,
                                  None if stay is None else stay[k], len(fit.kept))
        del fit, masks, post, inputs
        if progress is not None:
            progress(len(group))
    return [a.result() for a in assemblers]


class _Assembler:
    """One recording's output, built from its chunk estimates as they arrive: each is
    cross-faded into place (in time order: a chunk that arrives early waits for the one before
    it, to which its sources are aligned when the sources have no video)."""

    def __init__(self, cfg, num_samples: int, bounds: list[tuple[int, int]], num_sources: int,
                 align: bool):
        self.cfg, self.bounds, self.align = cfg, bounds, align
        self.out = np.zeros((num_sources + 1, num_samples), dtype=np.float32)
        self.post = self.post_w = None
        self.waiting, self.next, self.prev, self.steps, self.kept = {}, 0, None, 0, 0
        self.stay, self.stay_frames = None, 0

    def add(self, index: int, est: np.ndarray, posterior: np.ndarray, steps: int,
            stay: np.ndarray | None = None, kept: int = 0) -> None:
        """A chunk's estimates ``(J+1, n)``, posterior ``(T, J, K)``, SVI steps, fitted stay
        ``(J,)`` (None: not learnt) and components run; placed when its turn comes."""
        self.waiting[index] = (est, posterior, stay)
        self.steps, self.kept = max(self.steps, steps), max(self.kept, kept)
        while self.next in self.waiting:
            self._place(self.next, *self.waiting.pop(self.next))
            self.next += 1

    def _place(self, index: int, est: np.ndarray, posterior: np.ndarray, stay) -> None:
        start, length = self.bounds[index]
        J = self.out.shape[0] - 1
        if self.post is None:
            self.post = np.zeros((self.cfg.num_frames(self.out.shape[1]),) + posterior.shape[1:])
            self.post_w = np.zeros(self.post.shape[0])
        if self.align and self.prev is not None:
            perm = _best_permutation(self.prev, est, start)
            est[:J], posterior = est[perm], posterior[:, perm]
            stay = None if stay is None else stay[perm]
        if stay is not None:                                  # a mean over chunks, by frames
            self.stay = (0 if self.stay is None else self.stay) + stay * posterior.shape[0]
            self.stay_frames += posterior.shape[0]
        w = _crossfade_weights(length, start, self.bounds)
        self.out[:, start:start + length] += est * w      # the fades of two chunks sum to one
        t0 = start // self.cfg.hop
        tw = w[np.minimum(np.arange(posterior.shape[0]) * self.cfg.hop, length - 1)]
        self.post[t0:t0 + posterior.shape[0]] += posterior * tw[:, None, None]
        self.post_w[t0:t0 + posterior.shape[0]] += tw
        self.prev = (start, est)

    def result(self) -> Separated:
        out = self.out
        post = self.post / np.maximum(self.post_w, 1e-12)[:, None, None]
        J = out.shape[0] - 1
        stay = None if self.stay is None else self.stay / self.stay_frames
        return Separated(out[:J], out[J], post.astype(np.float32), self.steps, stay, self.kept)


def _crossfade_weights(length: int, start: int, bounds: list[tuple[int, int]]) -> np.ndarray:
    """Linear fade-in over the overlap with the previous chunk and fade-out over the next; the
    two fades over an overlap of ``n`` samples are ``(i + ½)/n`` and ``(n - i - ½)/n``, which sum
    to one, so the cross-faded signal needs no normalisation (nor a buffer of weights)."""
    w = np.ones(length, dtype=np.float32)
    for o_start, o_length in bounds:
        if o_start < start < o_start + o_length:                      # previous chunk overlaps
            n = o_start + o_length - start
            w[:n] = np.minimum(w[:n], (np.arange(n) + 0.5) / n)
        if start < o_start < start + length:                          # next chunk overlaps
            n = start + length - o_start
            w[length - n:] = np.minimum(w[length - n:], (n - np.arange(n) - 0.5) / n)
    return w


def _best_permutation(prev, est: np.ndarray, start: int) -> list[int]:
    """Order of ``est``'s sources that best matches the previous chunk over their overlap."""
    p_start, p_est = prev
    J = est.shape[0] - 1
    lo, hi = start, min(p_start + p_est.shape[1], start + est.shape[1])
    if hi <= lo:
        return list(range(J))
    a = p_est[:J, lo - p_start:hi - p_start]
    b = est[:J, :hi - lo]
    best, best_score = list(range(J)), -np.inf
    for perm in itertools.permutations(range(J)):
        score = sum(float(np.dot(a[j], b[perm[j]])) for j in range(J))
        if score > best_score:
            best, best_score = list(perm), score
    return best
