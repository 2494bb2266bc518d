"""Missing or corrupted lips, for measuring how separation copes with an unreliable video.

A mixture source may carry a *lip corruption* ``KIND:FRACTION`` (manifest column
``source<j>_lips``, e.g. ``missing:0.3``); it changes the lip track separation reads for that
source, never the audio nor the clean reference. ``FRACTION`` of the video frames, in contiguous
blocks of about :data:`BLOCK_SECONDS` (a hand or a turned head hides the mouth for a while, not
for scattered frames), are

* ``missing``: the face is removed, as if the detector had found none (ROI all zero,
  ``face_found = False``): the model *is told* (``present = 0`` there);
* ``noise``: the mouth ROI is replaced by Gaussian pixel noise with the mean and standard
  deviation of the track's own ROI pixels, ``face_found = True``: the model is *not* told;
* ``swap``: the mouth ROI is replaced by the ROI of another clip of the same speaker (its
  ``face_found`` frames in order, frame ``t`` taking the donor's ``t``-th, cycling), the donor
  video given in the manifest column ``source<j>_lips_donor``; ``face_found = True``: plausible
  lips of the right person saying something else, and the model is not told.

**Deterministic.** The random generator of source ``j`` is seeded with ``(mixture seed,
hash(source clip id), j)`` (:func:`corruption_rng`): the same clip gets the same corrupted
frames in every mixture of a manifest (each SNR, each condition), and the three kinds at equal
fraction corrupt the same frames (the block layout is drawn first). Blocks are laid out by
:func:`corrupted_frames`: ``n = round(fraction · N)`` frames in ``⌈n / block⌉`` blocks of nearly
equal length, at random positions, never touching each other (so the blocks are exactly what
was asked for), with random gaps before, between and after them.

:func:`corrupt_target_lips` gives every mixture of a list the same corruption on its target
(source 1); :func:`source_track` is what the evaluation harness calls to get a source's track.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from ..errors import InputError

KINDS = ("missing", "noise", "swap")
"""Lip corruption kinds (module docstring)."""

BLOCK_SECONDS = 0.5
"""Length of one block of corrupted video frames (s)."""


@dataclass(frozen=True)
class LipCorruption:
    """``kind`` (one of :data:`KINDS`) on a ``fraction`` in (0, 1] of the video frames."""

    kind: str
    fraction: float

    @classmethod
    def parse(cls, text: str | None) -> "LipCorruption | None":
        """``"missing:0.3"`` -> a corruption; ``""``, ``"intact"`` or None -> None.

        :raises ValueError: unknown kind or a fraction outside (0, 1] (the message says which).
        """
        text = (text or "").strip()
        if text in ("", "intact"):
            return None
        kind, sep, value = text.partition(":")
        if kind not in KINDS or not sep:
            raise ValueError(f"lip corruption {text!r}: expected KIND:FRACTION with KIND one of "
                             f"{', '.join(KINDS)} (or 'intact')")
        try:
            fraction = float(value)
        except ValueError:
            fraction = math.nan
        if not 0 < fraction <= 1:
            raise ValueError(f"lip corruption {text!r}: the fraction must be in (0, 1]")
        return cls(kind, fraction)

    def __str__(self) -> str:
        return f"{self.kind}:{self.fraction:g}"


def corrupted_frames(num_frames: int, fraction: float, block: int, rng: np.random.Generator) -> np.ndarray:
    """``(N,)`` bool: ``n = round(fraction · N)`` frames in ``b = ⌈n / block⌉`` separate blocks.

    The block lengths differ by at most one frame and sum to ``n``; the ``N - n`` other frames
    form ``b + 1`` gaps (before, between, after), those between at least one frame long (fewer
    blocks when there are not enough clean frames to separate them), the rest of the clean
    frames spread over the gaps at random."""
    n = int(round(fraction * num_frames))
    mask = np.zeros(num_frames, dtype=bool)
    if n == 0:
        return mask
    clean = num_frames - n
    blocks = min(max(1, math.ceil(n / max(1, block))), clean + 1)
    lengths = np.full(blocks, n // blocks) + (np.arange(blocks) < n % blocks)
    spare = clean - (blocks - 1)
    cuts = np.sort(rng.integers(0, spare + 1, size=blocks))
    gaps = np.diff(np.concatenate([[0], cuts, [spare]]))
    gaps[1:-1] += 1
    start = gaps[0]
    for length, gap in zip(lengths, gaps[1:]):
        mask[start:start + length] = True
        start += length + gap
    return mask


def corrupt_track(track, corruption: LipCorruption, rng: np.random.Generator, donor=None):
    """A copy of the :class:`~pyro_avss.video.track.LipTrack` ``track`` with ``corruption``
    applied (module docstring); ``donor``: the other clip's track, for ``swap``.

    :raises InputError: ``swap`` without a donor with a face, or with ROIs of another size.
    """
    block = max(1, int(round(BLOCK_SECONDS * track.fps)))
    bad = corrupted_frames(track.num_frames, corruption.fraction, block, rng)
    rois, found, marks = track.rois.copy(), track.face_found.copy(), track.landmarks.copy()
    if corruption.kind == "missing":
        rois[bad], found[bad], marks[bad] = 0, False, np.nan
    elif corruption.kind == "noise":
        pixels = track.rois[track.face_found].astype(np.float64)
        mean, std = (pixels.mean(), pixels.std()) if pixels.size else (127.5, 50.0)
        noise = rng.normal(mean, std, size=(int(bad.sum()),) + rois.shape[1:])
        rois[bad], found[bad] = np.clip(np.round(noise), 0, 255).astype(np.uint8), True
    else:
        if donor is None or not donor.face_found.any():
            raise InputError("lips", "swap needs a donor video with a face (source<j>_lips_donor)")
        if donor.rois.shape[1:] != rois.shape[1:]:
            raise InputError("lips", f"the donor's mouth ROIs are {donor.rois.shape[1:]}, the "
                                     f"target's {rois.shape[1:]}")
        faces = np.flatnonzero(donor.face_found)
        take = faces[np.flatnonzero(bad) % len(faces)]
        rois[bad], found[bad], marks[bad] = donor.rois[take], True, donor.landmarks[take]
    return replace(track, rois=rois, face_found=found, landmarks=marks)


def corruption_rng(spec, j: int, stream: str = "lips") -> np.random.Generator:
    """The generator of source ``j``'s corruption: seeded with ``(spec.seed, hash(clip id), j)``
    (``stream="donor"``: another stream, for :func:`corrupt_target_lips`' choice of donor)."""
    from .mixtures import stable_hash

    return np.random.default_rng([spec.seed, stable_hash(f"{stream}:{spec.sources[j].id}"), j])


def source_track(spec, j: int, load: Callable):
    """Source ``j``'s lip track as separation sees it: ``load(video)`` (a
    :class:`~pyro_avss.video.track.LipTrack`, or None without a video), corrupted as
    ``spec.sources[j].lips`` says (its donor loaded the same way)."""
    source = spec.sources[j]
    track = load(source.video)
    corruption = LipCorruption.parse(source.lips)
    if track is None or corruption is None:
        return track
    donor = load(source.lips_donor) if source.lips_donor is not None else None
    return corrupt_track(track, corruption, corruption_rng(spec, j), donor)


def corrupt_target_lips(specs: Sequence, corruption: str, donors: Sequence | None = None) -> list:
    """``specs`` with ``corruption`` (``KIND:FRACTION``, or ``intact``) on every target's lips.

    For ``swap`` each target gets a donor clip: one of ``donors`` (objects with ``id``,
    ``speaker`` and ``video``, e.g. :class:`~pyro_avss.data.clips.Clip`; default: every source
    of ``specs``) of the same speaker, with a video, not the target clip itself, drawn from the
    target's corruption generator stream (deterministic).

    :raises InputError: a bad corruption, a target without video, or no donor for a swap.
    """
    try:
        parsed = LipCorruption.parse(corruption)
    except ValueError as exc:
        raise InputError("lips", str(exc)) from None
    pool = donors if donors is not None else [s for spec in specs for s in spec.sources]
    out = []
    for spec in specs:
        target = spec.sources[0]
        if parsed is None:
            out.append(replace(spec, sources=[replace(target, lips="", lips_donor=None), *spec.sources[1:]]))
            continue
        if target.video is None:
            raise InputError(spec.id, "the target has no video whose lips could be corrupted")
        donor = None
        if parsed.kind == "swap":
            same = {str(d.id): Path(d.video) for d in pool
                    if str(d.speaker) == str(target.speaker) and d.video and str(d.id) != str(target.id)}
            if not same:
                raise InputError(spec.id, f"no other clip of speaker {target.speaker!r} with a video "
                                          "to take the swapped lips from")
            ids = sorted(same)
            donor = same[ids[int(corruption_rng(spec, 0, "donor").integers(len(ids)))]]
        out.append(replace(spec, sources=[replace(target, lips=str(parsed), lips_donor=donor),
                                          *spec.sources[1:]]))
    return out


__all__ = ["KINDS", "BLOCK_SECONDS", "LipCorruption", "corrupted_frames", "corrupt_track",
           "corruption_rng", "source_track", "corrupt_target_lips"]
