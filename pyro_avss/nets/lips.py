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
"""

from __future__ import annotations

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

    def centred_pixels(self, rois: torch.Tensor, present: torch.Tensor) -> torch.Tensor:
        """``(N, S, S)`` uint8/float ROIs and ``(N,)`` bool -> ``(N, d*d)`` clip-centred pixels
        (rows of frames without a face are zero)."""
        x = torch.as_tensor(rois).float().div(255.0)
        x = F.adaptive_avg_pool2d(x.unsqueeze(1), self.downsample).flatten(1)
        present = torch.as_tensor(present, dtype=torch.bool)
        if present.any():
            x = x - x[present].mean(0, keepdim=True)
        return x * present.unsqueeze(-1)

    @torch.no_grad()
    def fit(self, clips: list[tuple[torch.Tensor, torch.Tensor]], max_frames: int = 50000,
            seed: int = 0) -> "LipProjection":
        """Fit the principal components on ``[(rois, present), ...]`` of training clips."""
        rows = [self.centred_pixels(r, p)[torch.as_tensor(p, dtype=torch.bool)] for r, p in clips]
        data = torch.cat(rows) if rows else torch.zeros(0, self.downsample ** 2)
        if data.shape[0] < 2:
            raise ValueError("cannot fit the lip projection: fewer than 2 frames with a face")
        if data.shape[0] > max_frames:
            gen = torch.Generator().manual_seed(seed)
            data = data[torch.randperm(data.shape[0], generator=gen)[:max_frames]]
        data = data.double()
        _, svals, vt = torch.linalg.svd(data, full_matrices=False)
        k = min(self.dim, vt.shape[0])
        comps = torch.zeros(data.shape[1], self.dim, dtype=torch.float64)
        comps[:, :k] = vt[:k].T
        std = torch.ones(self.dim, dtype=torch.float64)
        std[:k] = (svals[:k] / (data.shape[0] - 1) ** 0.5).clamp_min(1e-6)
        self.components.copy_(comps.float())
        self.scale.copy_(std.float())
        self.fitted.fill_(True)
        return self

    def forward(self, rois: torch.Tensor, present: torch.Tensor) -> torch.Tensor:
        """``(N, S, S)`` ROIs of one clip, ``(N,)`` face flags -> ``(N, dim)`` embedding."""
        if not bool(self.fitted):
            raise RuntimeError("LipProjection.fit must be called before use")
        return self.centred_pixels(rois, present) @ self.components / self.scale
