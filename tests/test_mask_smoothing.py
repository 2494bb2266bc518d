"""The Wiener masks averaged over neighbouring frames before the inverse STFT
(``separate.mask_smoothing``): still masks that sum to one, never reaching past a recording's
ends, and an isolated frame of high gain (musical noise) brought down."""

from __future__ import annotations

import numpy as np
import torch

from pyro_avss.inference.separation import SeparationSettings, separate_recordings, smoothed_masks
from test_separation import noisy, random_models


def _masks(B=2, T=12, J=2, F=5, seed=0):
    g = torch.Generator().manual_seed(seed)
    raw = torch.rand(B, T, J + 1, F, generator=g)
    return raw / raw.sum(2, keepdim=True)


def test_smoothed_masks_are_masks_and_zero_smoothing_changes_nothing():
    masks, valid = _masks(), torch.ones(2, 12, dtype=torch.bool)
    assert torch.equal(smoothed_masks(masks, valid, 0), masks)
    out = smoothed_masks(masks, valid, 2)
    assert out.shape == masks.shape and (out >= 0).all()
    assert torch.allclose(out.sum(2), torch.ones(2, 12, 5), atol=1e-6)
    # the sources' masks are triangular averages (weights 1 2 3 2 1) away from the ends
    w = torch.tensor([1.0, 2, 3, 2, 1])
    expected = (masks[0, 3:8, 0, 1] * w).sum() / w.sum()
    assert torch.isclose(out[0, 5, 0, 1], expected, atol=1e-6)


def test_an_isolated_high_gain_is_brought_down_and_a_steady_one_kept():
    masks = torch.zeros(1, 20, 2, 3)
    masks[..., 1] = 1.0                                    # noise everywhere ...
    masks[0, 10, 0, 0], masks[0, 10, 1, 0] = 1.0, 0.0      # ... but one frame of one bin
    masks[0, :, 0, 2], masks[0, :, 1, 2] = 0.7, 0.3        # a steady gain in another bin
    out = smoothed_masks(masks, torch.ones(1, 20, dtype=torch.bool), 2)
    assert out[0, 10, 0, 0] < 0.35 and torch.allclose(out[0, :, 0, 2], torch.full((20,), 0.7))


def test_padding_takes_no_part():
    masks, valid = _masks(B=1, T=12), torch.arange(12)[None] < 8
    a = smoothed_masks(masks, valid, 2)
    masks[0, 8:] = torch.rand(4, 3, 5)                     # other values in the padding
    b = smoothed_masks(masks, valid, 2)
    assert torch.allclose(a[0, :8], b[0, :8])
    # the last real frame averages the real frames before it only
    w = torch.tensor([1.0, 2, 3])
    assert torch.isclose(a[0, 7, 0, 0], (masks[0, 5:8, 0, 0] * w).sum() / w.sum(), atol=1e-6)


def test_separation_with_smoothed_masks_still_sums_to_the_mixture():
    x = noisy()
    for half in (0, 2):
        out = separate_recordings(random_models(), [(x, [None, None])],
                                  SeparationSettings(steps=5, num_samples=1, mask_smoothing=half))[0]
        assert np.abs(out.sources.sum(0) + out.noise - x).max() < 1e-4
