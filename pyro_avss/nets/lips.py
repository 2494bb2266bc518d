"""Lip embedding: a fitted linear projection of mouth regions of interest.

A mouth ROI sequence ``rois`` of shape ``(N, S, S)`` (uint8, one per video frame) becomes a
``(N, dim)`` embedding in three steps:

1. area-downsample to ``d × d`` pixels and scale to [0, 1];
2. subtract the clip's mean ROI over frames with a face, so that what remains is lip *motion*
   rather than identity, lighting or skin colour;
3. project on the first ``dim`` principal components of step 2 over the training clips, each
   component divided by its standard deviation (unit variance on the training data).

The projection is fitted, not learned by back-propagation: it is deterministic, needs no GPU and
no lip-reading weights, and is stored as buffers in the model file.

**The mouth gate.** A face detector can return a region that is no mouth (a hand over it, motion
blur, a corrupted frame): its embedding is then confidently wrong. Mouth images of the training
clips lie close to the projection's subspace; such a region does not. For every face frame the
gate measures the energy left off the subspace,

    r[t] = log ‖x[t] − P Pᵀ x[t]‖²,

with ``x[t]`` the downsampled pixels centred on the clip's *median* face frame (robust to the
odd frames themselves) and ``P`` the orthonormal components, and calls the frame mouth-like when
``r[t] < μ + k·σ``, ``μ, σ`` the mean and standard deviation of ``r`` over the training clips'
face frames and ``k`` the gate's width (``lips.gate_sigmas``, 5 by default: fitted on the GRID
training clips, it lets through all but 12 of the 47 556 face frames of GRID's train, dev and
test clips and stops every mouth region replaced by pixel noise).
Frames that are not mouth-like are treated as frames without a face (``present = 0``). The gate
cannot see a real mouth saying something else (another clip's lips); only the audio can.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


class LipProjection(nn.Module):
    """PCA projection of downsampled, clip-centred mouth ROIs.

    :param dim: embedding size ``Dv``.
    :param downsample: side ``d`` of the downsampled ROI.
    """

    def __init__(self, dim: int = 24, downsample: int = 32):
        super().__init__()
        self.dim = dim
        self.downsample = downsample
        pixels = downsample * downsample
        self.register_buffer("components", torch.zeros(pixels, dim))
        self.register_buffer("scale", torch.ones(dim))
        self.register_buffer("fitted", torch.tensor(False))
        # the mouth gate's threshold on log residual energy (module docstring); +inf: no gate
        self.register_buffer("gate_threshold", torch.tensor(math.inf))

    def downsampled(self, rois: torch.Tensor) -> torch.Tensor:
        """``(N, S, S)`` uint8/float ROIs -> ``(N, d*d)`` area-downsampled pixels in [0, 1]."""
        x = torch.as_tensor(rois).float().div(255.0)
        return F.adaptive_avg_pool2d(x.unsqueeze(1), self.downsample).flatten(1)

    def centred_pixels(self, rois: torch.Tensor, present: torch.Tensor) -> torch.Tensor:
        """``(N, S, S)`` uint8/float ROIs and ``(N,)`` bool -> ``(N, d*d)`` clip-centred pixels
        (rows of frames without a face are zero)."""
        x = self.downsampled(rois)
        present = torch.as_tensor(present, dtype=torch.bool)
        if present.any():
            x = x - x[present].mean(0, keepdim=True)
        return x * present.unsqueeze(-1)

    @torch.no_grad()
    def fit(self, clips) -> "LipProjection":
        """Fit the principal components on the face frames of ``clips``: an iterable of
        ``(rois, present)``, one per training clip, read once (a generator keeps one clip in
        memory at a time). The components are the leading eigenvectors of the scatter matrix
        ``Σ x xᵀ`` of the clip-centred pixels ``x`` over every face frame (the right singular
        vectors of the stacked frames), accumulated clip by clip in float64, so the fit uses all
        frames in memory of ``d⁴`` numbers whatever the size of the corpus. Each component's
        sign is fixed (its largest entry positive) and its scale is the standard deviation of
        the frames along it."""
        pixels = self.downsample ** 2
        scatter = torch.zeros(pixels, pixels, dtype=torch.float64)
        count = 0
        for rois, present in clips:
            x = self.centred_pixels(rois, present)[torch.as_tensor(present, dtype=torch.bool)].double()
            scatter += x.T @ x
            count += x.shape[0]
        if count < 2:
            raise ValueError("cannot fit the lip projection: fewer than 2 frames with a face")
        values, vectors = torch.linalg.eigh(scatter)                  # ascending
        k = min(self.dim, count, pixels)
        top = vectors[:, -k:].flip(-1)
        top = top * torch.sign(top.gather(0, top.abs().argmax(0, keepdim=True)))
        comps = torch.zeros(pixels, self.dim, dtype=torch.float64)
        comps[:, :k] = top
        std = torch.ones(self.dim, dtype=torch.float64)
        std[:k] = (values.flip(-1)[:k].clamp_min(0.0) / (count - 1)).sqrt().clamp_min(1e-6)
        self.components.copy_(comps.float())
        self.scale.copy_(std.float())
        self.fitted.fill_(True)
        return self

    def log_residual(self, rois: torch.Tensor, present: torch.Tensor) -> torch.Tensor:
        """``(N,)`` log energy of each frame off the components' subspace, the frame centred on
        the clip's median face frame (module docstring; meaningless where ``present`` is 0)."""
        x = self.downsampled(rois)
        present = torch.as_tensor(present, dtype=torch.bool)
        if present.any():
            x = x - x[present].median(0).values
        inside = (x @ self.components).pow(2).sum(-1)
        return torch.log((x.pow(2).sum(-1) - inside).clamp_min(1e-12))

    @torch.no_grad()
    def fit_gate(self, clips, sigmas: float) -> "LipProjection":
        """Set the mouth gate from the face frames of ``clips`` (an iterable of ``(rois,
        present)``, read once) after :meth:`fit`: threshold ``μ + sigmas·σ`` on the log residual
        energy; ``sigmas = 0`` removes the gate."""
        if not bool(self.fitted):
            raise RuntimeError("LipProjection.fit must be called before fit_gate")
        if sigmas <= 0:
            self.gate_threshold.fill_(math.inf)
            return self
        values = [self.log_residual(r, p)[torch.as_tensor(p, dtype=torch.bool)] for r, p in clips]
        values = torch.cat(values).double() if values else torch.zeros(0, dtype=torch.float64)
        if values.numel() < 2:
            raise ValueError("cannot fit the mouth gate: fewer than 2 frames with a face")
        self.gate_threshold.fill_(float(values.mean() + sigmas * values.std()))
        return self

    @property
    def gated(self) -> bool:
        """Whether this projection has a mouth gate (:meth:`fit_gate`)."""
        return bool(torch.isfinite(self.gate_threshold))

    def mouth_like(self, rois: torch.Tensor, present: torch.Tensor) -> torch.Tensor:
        """``(N,)`` bool: ``present`` and, when the projection has a gate, the frame passes it."""
        present = torch.as_tensor(present, dtype=torch.bool)
        if not self.gated or not bool(present.any()):
            return present
        rois = torch.as_tensor(rois).to(self.components.device)
        passed = self.log_residual(rois, present.to(rois.device)) < self.gate_threshold
        return present & passed.cpu()

    def forward(self, rois: torch.Tensor, present: torch.Tensor) -> torch.Tensor:
        """``(N, S, S)`` ROIs of one clip, ``(N,)`` face flags -> ``(N, dim)`` embedding."""
        if not bool(self.fitted):
            raise RuntimeError("LipProjection.fit must be called before use")
        return self.centred_pixels(rois, present) @ self.components / self.scale


class LipTemporalEncoder(nn.Module):
    """A learned lip embedding over time: ``v[t] = E(u[t-c..t+c])`` from the per-frame projected
    ROIs ``u`` (:class:`LipProjection`) at the STFT frame rate.

    Lip motion, not lip shape, carries speech: opening and closing take tens to hundreds of
    milliseconds and lead the sound by tens of milliseconds, and a syllable's mouth gesture
    spans several of them, so one frame of pixels says little about the spectrum under it. Two
    1-D convolutions over time (kernel 9, the second dilated by 2), then one residual
    convolution per entry ``d`` of ``dilations`` (kernel 9, dilated by ``d``), and a linear
    read-out:

        h1 = tanh(Conv_9([u·present, present]))        (the presence flag is an input channel,
        h2 = tanh(Conv_9,dil2(h1))                      so a frame next to a lost face knows it)
        h  ← h + tanh(Conv_9,dil d(h))                  for d in dilations (h starts at h2)
        v  = (h W + b) · present

    The window reaches ``c = 4 + 4·(2 + Σ dilations)`` STFT frames on each side: ``±12``
    (``±190 ms`` at hop 256 / 16 kHz) without residual layers, ``±28`` (``±450 ms``) with
    ``dilations = (4,)``, the default of ``lips.dilations``. Frames without a face get ``v = 0``
    (their ``present`` stays 0 downstream: decoders and the visual prior switch their visual
    term off there). Trained jointly with the speech VAE (``train.mode = universal``) and frozen
    afterwards, like the encoder.

    Shapes: ``u (..., T, Din)``, ``present (..., T)`` -> ``(..., T, Dout)``; time is the
    second-to-last axis of ``u`` and any leading axes are batch axes.
    """

    kernel = 9

    def __init__(self, in_dim: int, out_dim: int = 32, hidden: int = 64, dilations=()):
        super().__init__()
        self.in_dim, self.out_dim, self.hidden = in_dim, out_dim, hidden
        self.dilations = tuple(int(d) for d in dilations)
        k = self.kernel
        self.conv1 = nn.Conv1d(in_dim + 1, hidden, k, padding=k // 2)
        self.conv2 = nn.Conv1d(hidden, hidden, k, padding=2 * (k // 2), dilation=2)
        self.wider = nn.ModuleList(nn.Conv1d(hidden, hidden, k, padding=d * (k // 2), dilation=d)
                                   for d in self.dilations)
        self.out = nn.Linear(hidden, out_dim)

    @property
    def context(self) -> int:
        """Frames of context on each side that the output at one frame depends on."""
        return (self.kernel // 2) * (1 + 2 + sum(self.dilations))     # dilations 1, 2, then these

    def forward(self, lips: torch.Tensor, present: torch.Tensor) -> torch.Tensor:
        lead = lips.shape[:-2]
        T = lips.shape[-2]
        p = present.reshape(-1, 1, T).to(lips.dtype)
        x = torch.cat([lips.reshape(-1, T, lips.shape[-1]).transpose(1, 2) * p, p], 1)  # (N,Din+1,T)
        h = torch.tanh(self.conv2(torch.tanh(self.conv1(x))))                           # (N,H,T)
        for conv in self.wider:
            h = h + torch.tanh(conv(h))
        v = self.out(h.transpose(1, 2)) * p.transpose(1, 2)
        return v.reshape(lead + (T, self.out_dim))
