"""Screening a large bank before a fit with several sources: which components to keep.

With J sources over K components the switch has ``K^J`` joint states, and the separation model
forms a ``(B, T, K^J, F)`` mixture variance for them: K = 50 speakers and J = 2 talkers make
2,500 states, about 1 GB per 3-s batch in float32 before any gradient. When ``K^J`` exceeds
``separate.max_joint_states`` (S), the components are screened first:

1. For each source j, a short fit of the *one-source* model over all K components with the
   i.i.d. per-frame switch (``screen_steps`` SVI steps, the source's own lips, the same noise
   model) gives the per-frame posterior ``r_j[b, t, k]``; the score of component k for source j
   is its expected number of frames ``Σ_{b,t} r_j[b, t, k]``. The per-frame switch lets every
   talker of the mixture claim the frames it dominates, so the second voice scores too. Sources
   with identical inputs (no lips: every audio-only source) share one screening fit.
2. The kept set is filled in rounds — each source's best component not yet kept, then each
   source's second best, ... — up to ``M = ⌊S^(1/J)⌋`` components, so ``M^J ≤ S``.
3. The separation itself then runs on those M components for every source, with the switch
   summed out *exactly* over their ``M^J`` joint states.

What is approximated: a component left out by the screening gets posterior 0 in every frame;
nothing else changes. The screening costs J (or 1) fits of K states each instead of one of
``K^J``.
"""

from __future__ import annotations

from dataclasses import replace

import torch

from ..settings.separation import SeparationSettings


def kept_count(max_joint_states: int, num_sources: int) -> int:
    """``M = ⌊S^(1/J)⌋`` (at least 1): the most components whose ``M^J`` joint states fit in S."""
    count = 1
    while (count + 1) ** num_sources <= max_joint_states:      # integers: no float root to round
        count += 1
    return count


def needs_screening(settings: SeparationSettings, num_components: int, num_sources: int) -> bool:
    """Whether ``num_components`` for ``num_sources`` exceed ``separate.max_joint_states``."""
    return num_sources > 1 and num_components ** num_sources > settings.max_joint_states


def screening_settings(settings: SeparationSettings, used: list[int]) -> SeparationSettings:
    """The settings of one source's screening fit: the i.i.d. switch over ``used``, ``screen_steps``
    steps without early stop, pruning or the guide's restart, one ``z`` draw for the posterior."""
    return replace(settings, switch_prior="iid", learn_stay=False, enumeration="marginal",
                   steps=settings.screen_steps, tol=0.0, prune_threshold=0.0, restart_at=0, num_samples=1,
                   components=tuple(used), source_components=None)


def frame_scores(posterior: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``(K,)`` expected frames of each component, ``Σ_{b,t} r[b, t, k]`` over valid frames, from
    a one-source posterior ``(B, T, 1, K)``."""
    return (posterior[..., 0, :] * mask[..., None]).sum((0, 1))


def kept_components(scores: list[torch.Tensor], used: list[int], count: int) -> list[int]:
    """The ``count`` components (indices into the model's bank, among ``used``) kept by round-robin
    over the sources' rankings (``scores``: one ``(K,)`` per source, on the whole bank), sorted."""
    usable = set(used)
    rankings = [[k for k in torch.argsort(score, descending=True, stable=True).tolist() if k in usable]
                for score in scores]
    kept: list[int] = []
    for candidates in zip(*rankings):                 # every source's best, then second best, ...
        for k in candidates:
            if len(kept) < count and k not in kept:
                kept.append(k)
    return sorted(kept)


def same_inputs(lips: torch.Tensor, present: torch.Tensor, j: int, i: int) -> bool:
    """Whether sources j and i have the same lips and presence (their screening fits coincide)."""
    return torch.equal(lips[..., j, :], lips[..., i, :]) and torch.equal(present[..., j], present[..., i])
