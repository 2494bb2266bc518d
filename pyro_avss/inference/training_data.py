"""Training data: clean clips as frames (power spectra and lips), the splits and the cap per speaker.

:func:`load_frames` turns manifest rows into a :class:`FrameSet` of normalised power spectrogram
segments with their lip embeddings and speaker labels; :func:`select_rows` picks the train and
dev rows a config asks for.
"""

from __future__ import annotations

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
        out = []
        for start, n in zip(self.starts, self.lengths):
            offset = int(torch.randint(0, length, (), generator=generator)) if n > length else 0
            first = offset - length if offset > 0 else 0
            for s in range(first, n, length):
                lo, hi = max(s, 0), min(s + length, n)
                out.append((start + lo, hi - lo))
        seg = torch.tensor(out, dtype=torch.long)
        return seg[torch.randperm(len(seg), generator=generator)]

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

def load_frames(rows: list[dict], projection: LipProjection, stft_cfg: StftConfig,
                label_of: dict[str, int] | None, use_video: bool, skipped: list) -> FrameSet:
    """Read the clips of a prepared manifest into a :class:`FrameSet`.

    A clip that cannot be read is appended to ``skipped`` as ``(id, reason)`` and left out.
    """
    powers, lips, present, labels = [], [], [], []
    starts, lengths, clip_ids, speakers = [], [], [], []
    pos = 0
    for row in rows:
        try:
            x = row_inputs(row, projection, stft_cfg, use_video)
        except (InputError, OSError, ValueError) as exc:
            skipped.append((row.get("id", "?"), str(exc)))
            continue
        T = x.power.shape[0]
        powers.append(x.power)
        lips.append(x.lips)
        present.append(x.present)
        label = -1 if label_of is None else label_of.get(row["speaker"], -1)
        labels.append(torch.full((T,), label, dtype=torch.long))
        starts.append(pos)
        lengths.append(T)
        clip_ids.append(row["id"])
        speakers.append(row["speaker"])
        pos += T
    if not powers:
        raise InputError("training data", "no usable clips")
    def with_pad_row(xs):                     # one all-zero row that padding indices point at
        return torch.cat(xs + [torch.zeros((1,) + xs[0].shape[1:])])

    return FrameSet(with_pad_row(powers), with_pad_row(lips), with_pad_row(present),
                    torch.cat(labels + [torch.full((1,), -1, dtype=torch.long)]),
                    starts, lengths, clip_ids, speakers)


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
