"""The lip projection is fitted from clips read one at a time, on every face frame, in memory
that does not grow with the corpus (a scatter matrix accumulated clip by clip)."""

from __future__ import annotations

import gc
import weakref

import pytest
import torch

from pyro_avss.nets.lips import LipProjection


def clips(n: int, frames: int = 30, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    for _ in range(n):
        rois = torch.randint(0, 256, (frames, 16, 16), generator=gen, dtype=torch.uint8)
        present = torch.rand(frames, generator=gen) > 0.2
        yield rois, present


def test_the_fit_is_the_pca_of_all_face_frames():
    proj = LipProjection(dim=6, downsample=8).fit(clips(12))
    data = torch.cat([proj.centred_pixels(r, p)[p] for r, p in clips(12)]).double()
    _, svals, vt = torch.linalg.svd(data, full_matrices=False)
    overlap = (vt[:6].float() @ proj.components).abs().diagonal()       # the same axes, up to sign
    assert torch.allclose(overlap, torch.ones(6), atol=1e-4)
    assert torch.allclose(proj.scale, (svals[:6] / (data.shape[0] - 1) ** 0.5).float(), rtol=1e-4)
    biggest = proj.components.gather(0, proj.components.abs().argmax(0, keepdim=True))
    assert (biggest > 0).all()                                          # a fixed sign per component
    eager = LipProjection(dim=6, downsample=8).fit(list(clips(12)))     # a list or a generator: the same
    assert torch.equal(eager.components, proj.components) and torch.equal(eager.scale, proj.scale)


def test_clips_are_read_one_at_a_time():
    alive: list[weakref.ref] = []

    def tracked():
        for rois, present in clips(20):
            assert sum(r() is not None for r in alive) <= 1 + 1       # the one in use and this one
            alive.append(weakref.ref(rois))
            yield rois, present
            gc.collect()

    LipProjection(dim=4, downsample=8).fit(tracked())
    assert len(alive) == 20


def test_too_few_face_frames_are_refused():
    with pytest.raises(ValueError, match="fewer than 2 frames"):
        LipProjection(dim=4, downsample=8).fit([(torch.zeros(3, 16, 16, dtype=torch.uint8), torch.zeros(3, dtype=torch.bool))])
