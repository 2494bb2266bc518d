"""Training data: clean clips as frames (power spectra and lips), the splits and the cap per speaker.

:func:`load_frames` turns manifest rows into a :class:`FrameSet` of normalised power spectrogram
segments with their lip embeddings and speaker labels; :func:`select_rows` picks the train and
dev rows a config asks for.
"""

from __future__ import annotations

import copy
import itertools
import math
from collections.abc import Iterator
from dataclasses import dataclass, field

import torch

from ..audio import StftConfig
from ..errors import InputError
from ..nets.lips import LipProjection
from ..settings.training import DataSettings
from .inputs import row_inputs


@dataclass
class FrameSet:
    """Frames of many clips stored end to end, with clip boundaries and labels."""

    power: torch.Tensor                 # (N + 1, F); the last row is an all-zero pad frame
    lips: torch.Tensor                  # (N + 1, Dv)
    present: torch.Tensor               # (N + 1,)
    labels: torch.Tensor                # (N + 1,) long, -1 unknown
    starts: list[int] = field(default_factory=list)
    lengths: list[int] = field(default_factory=list)
    clip_ids: list[str] = field(default_factory=list)
    speakers: list[str] = field(default_factory=list)
    clip_first: torch.Tensor = field(init=False)    # (N + 1,) first frame of each frame's clip
    clip_length: torch.Tensor = field(init=False)   # (N + 1,) its length (the pad row: itself, 1)

    def __post_init__(self):
        pad_row = self.power.shape[0] - 1
        self.clip_first = torch.full((pad_row + 1,), pad_row, dtype=torch.long)
        self.clip_length = torch.ones(pad_row + 1, dtype=torch.long)
        for start, n in zip(self.starts, self.lengths):
            self.clip_first[start:start + n], self.clip_length[start:start + n] = start, n

    @property
    def num_frames(self) -> int:
        return int(sum(self.lengths))

    def segments(self, length: int, generator: torch.Generator) -> torch.Tensor:
        """``(S, 2)`` (start, valid length) of segments covering every clip once, with a random
        offset per clip, in random order."""
        out = [(start + lo, n) for start, frames in zip(self.starts, self.lengths)
               for lo, n in clip_segments(frames, length, generator)]
        seg = torch.tensor(out, dtype=torch.long)
        return seg[torch.randperm(len(seg), generator=generator)]

    def epoch(self, length: int, batch_size: int, generator: torch.Generator, lip_dropout: float = 0.0,
              context: int = 0, max_batches: int | None = None) -> "Batches":
        """The mini-batches of one pass (:meth:`segments` in batches of ``batch_size``, the first
        ``max_batches`` of them), gathered one at a time as they are iterated."""
        segs = self.segments(length, generator)
        steps = math.ceil(len(segs) / batch_size)
        steps = min(steps, max_batches) if max_batches else steps
        return Batches(steps, (self.batch(segs[i * batch_size:(i + 1) * batch_size], length, lip_dropout,
                                          generator, context=context) for i in range(steps)))

    def batch(self, segments: torch.Tensor, length: int, lip_dropout: float = 0.0,
              generator: torch.Generator | None = None, context: int = 0) -> dict:
        """Gather ``(B, length)`` frames of the given segments; padding points at the pad row.

        With ``context`` > 0 the lips (and their presence) come with ``context`` extra frames on
        each side, ``(B, length + 2·context, Dv)``, taken from the same clip where it has them
        (missing beyond its ends), for a temporal lip encoder to see around the segment."""
        steps = torch.arange(length)
        mask = steps[None, :] < segments[:, 1:2]
        pad_row = self.power.shape[0] - 1
        index = torch.where(mask, segments[:, :1] + steps, pad_row)
        wide = torch.arange(-context, length + context)
        lip_index = segments[:, :1] + wide
        first = self.clip_first[segments[:, 0]][:, None]
        inside = (lip_index >= first) & (lip_index < first + self.clip_length[segments[:, 0]][:, None])
        inside &= (wide[None, :] < segments[:, 1:2] + context)
        lip_index = torch.where(inside, lip_index, pad_row)
        present = self.present[lip_index]
        if lip_dropout > 0:
            keep = torch.rand(len(segments), 1, generator=generator) >= lip_dropout
            present = present * keep
        return {"power": self.power[index], "lips": self.lips[lip_index] * present[..., None],
                "present": present, "labels": self.labels[index], "mask": mask}

@dataclass
class Batches:
    """The mini-batches of one epoch: their number, and an iterator that makes them in turn."""

    steps: int
    items: Iterator[dict]

    def __len__(self) -> int:
        return self.steps

    def __iter__(self) -> Iterator[dict]:
        return iter(self.items)


def lip_context(lip_encoder) -> int:
    """Frames of lips a batch needs on each side of a segment: the temporal lip encoder's reach,
    0 without one."""
    return lip_encoder.context if lip_encoder is not None else 0


def segment_lips(lip_encoder, lips: torch.Tensor, present: torch.Tensor):
    """The lips of a batch (:meth:`FrameSet.batch` with :func:`lip_context` extra frames) as the
    networks see them: through the temporal lip encoder, then cut to the segment's frames."""
    if lip_encoder is not None:
        lips = lip_encoder(lips, present)
    c = lip_context(lip_encoder)
    return (lips[:, c:-c], present[:, c:-c]) if c else (lips, present)


def clip_segments(frames: int, length: int, generator: torch.Generator) -> list[tuple[int, int]]:
    """``(first frame, valid length)`` of the segments that cover a clip of ``frames`` frames
    once, the first one cut short at a random offset (one draw from ``generator`` when the clip
    is longer than a segment)."""
    offset = int(torch.randint(0, length, (), generator=generator)) if frames > length else 0
    first = offset - length if offset > 0 else 0
    return [(max(s, 0), min(s + length, frames) - max(s, 0)) for s in range(first, frames, length)]


@dataclass
class ClipReader:
    """Reads one prepared-manifest row as the tensors of a clip (normalised power, lips,
    presence, labels of its speaker); picklable, for loader workers."""

    projection: LipProjection
    stft_cfg: StftConfig
    label_of: dict[str, int] | None
    use_video: bool

    def __post_init__(self):      # its own CPU copy: the model's moves to the training device
        self.projection = copy.deepcopy(self.projection).cpu()

    def __call__(self, row: dict) -> tuple[torch.Tensor, ...]:
        x = row_inputs(row, self.projection, self.stft_cfg, self.use_video)
        label = -1 if self.label_of is None else self.label_of.get(row["speaker"], -1)
        return x.power, x.lips, x.present, torch.full((x.power.shape[0],), label, dtype=torch.long)


#: what an unreadable clip raises (it is then skipped, with its reason)
UNREADABLE = (InputError, OSError, ValueError)


def frame_set(clips: list[tuple[torch.Tensor, ...]], rows: list[dict]) -> FrameSet:
    """A :class:`FrameSet` of clips read by :class:`ClipReader` (of ``rows``, in order)."""
    if not clips:
        raise InputError("training data", "no usable clips")
    lengths = [c[0].shape[0] for c in clips]
    starts = [0, *itertools.accumulate(lengths)][:-1]

    def with_pad_row(i, pad):                 # one row that padding indices point at
        xs = [c[i] for c in clips]
        return torch.cat(xs + [torch.full((1,) + xs[0].shape[1:], pad, dtype=xs[0].dtype)])

    return FrameSet(with_pad_row(0, 0), with_pad_row(1, 0), with_pad_row(2, 0), with_pad_row(3, -1),
                    starts, lengths, [r["id"] for r in rows], [r["speaker"] for r in rows])


def load_frames(rows: list[dict], projection: LipProjection, stft_cfg: StftConfig,
                label_of: dict[str, int] | None, use_video: bool, skipped: list) -> FrameSet:
    """Read the clips of a prepared manifest into a :class:`FrameSet`.

    A clip that cannot be read is appended to ``skipped`` as ``(id, reason)`` and left out.
    """
    read = ClipReader(projection, stft_cfg, label_of, use_video)
    clips, kept = [], []
    for row in rows:
        try:
            clips.append(read(row))
        except UNREADABLE as exc:
            skipped.append((row.get("id", "?"), str(exc)))
            continue
        kept.append(row)
    return frame_set(clips, kept)


def select_rows(rows: list[dict], data: DataSettings) -> tuple[list[dict], list[dict]]:
    """Train and dev rows after the speaker filter and the per-speaker cap of ``data``."""
    if data.speakers:
        wanted = {str(s) for s in data.speakers}
        rows = [r for r in rows if str(r["speaker"]) in wanted]
    train = [r for r in rows if r.get("split") == data.train_split]
    dev = [r for r in rows if r.get("split") == data.dev_split]
    cap = data.max_clips_per_speaker
    if cap:
        def capped(rs, n):
            seen: dict[str, int] = {}
            out = []
            for r in rs:
                if seen.get(r["speaker"], 0) < n:
                    seen[r["speaker"]] = seen.get(r["speaker"], 0) + 1
                    out.append(r)
            return out
        train, dev = capped(train, cap), capped(dev, max(1, cap // 4))
    return train, dev
