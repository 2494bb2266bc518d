"""Streamed training data (``train.loader: stream``): clips read from the prepared cache while
training goes, so that memory does not grow with the corpus.

The in-memory :class:`~.training_data.FrameSet` holds every clip's normalised spectrogram (about
460 MB per hour of audio at F = 513). :class:`StreamedClips` keeps only each clip's manifest row
and length. Each epoch is planned in the training process from the epoch's seeded generator, as
the memory path's is, and a :class:`torch.utils.data.DataLoader` with ``train.workers`` worker
processes reads the clips of one *window* of the plan at a time and cuts its mini-batches:

1. the clips in a random order, each cut into segments as the memory path cuts it
   (:func:`~.training_data.clip_segments`: every frame once, from a random offset);
2. those segments in windows of ``train.stream_window`` mini-batches, shuffled within their
   window (the memory path shuffles over the whole corpus; a window mixes the segments of
   about ``stream_window · batch_size · segment_frames`` frames' worth of clips);
3. lip dropout drawn per mini-batch, as the memory path draws it.

A window's clips are read by :class:`~.training_data.ClipReader` into a small ``FrameSet`` whose
:meth:`~.training_data.FrameSet.batch` gathers the segments: the same per-clip normalisation,
lip context frames, padding and labels as the memory path. The plan holds all the randomness and
the loader hands the windows back in order, so a run is the same whatever ``train.workers`` is,
and ``--resume`` continues it exactly. The dev split streams the same way (a fixed plan).

Before the first epoch every clip is read once, by the same workers, for its length; a clip that
cannot be read is skipped then, as the memory path skips it. A data-parallel fit plans the same
epochs on every rank, and every rank reads every window (the global batch, of which it fits its
rows): the result is the one-process result, the reading is done once per rank.
"""

from __future__ import annotations

import math

import torch
from torch.utils.data import DataLoader, Dataset

from ..errors import InputError
from .training_data import UNREADABLE, Batches, ClipReader, clip_segments, frame_set, load_frames


def _one_thread(_worker: int) -> None:          # the workers share the cores with training
    torch.set_num_threads(1)


def _loader(dataset: Dataset, workers: int) -> DataLoader:
    """Items in order, one at a time; the seeded generator keeps the caller's random stream
    untouched (a loader draws its workers' base seed from it)."""
    return DataLoader(dataset, batch_size=None, shuffle=False, num_workers=workers,
                      worker_init_fn=_one_thread, generator=torch.Generator().manual_seed(0))


class _Lengths(Dataset):
    """Item i: the frames of clip i, or why it cannot be read."""

    def __init__(self, rows: list[dict], read: ClipReader):
        self.rows, self.read = rows, read

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> int | str:
        try:
            return int(self.read(self.rows[i])[0].shape[0])
        except UNREADABLE as exc:
            return str(exc)


class _Windows(Dataset):
    """Item w: the mini-batches of window w of a plan (:func:`plan_windows`)."""

    def __init__(self, rows: list[dict], read: ClipReader, windows: list[dict], length: int, context: int):
        self.rows, self.read, self.windows = rows, read, windows
        self.length, self.context = length, context

    def __len__(self) -> int:
        return len(self.windows)

    def __getitem__(self, w: int) -> list[dict]:
        win = self.windows[w]
        rows = [self.rows[c] for c in win["clips"]]
        data = frame_set([self.read(r) for r in rows], rows)
        segs = win["segments"]
        starts = torch.tensor(data.starts, dtype=torch.long)[segs[:, 0]] + segs[:, 1]
        batch = data.batch(torch.stack([starts, segs[:, 2]], 1), self.length, context=self.context)
        keep = win["keep"].to(batch["present"].dtype)
        batch["present"] = batch["present"] * keep[:, None]
        batch["lips"] = batch["lips"] * keep[:, None, None]
        edges = win["edges"]
        return [{k: v[a:b] for k, v in batch.items()} for a, b in zip(edges[:-1], edges[1:])]


def plan_windows(lengths: list[int], length: int, batch_size: int, window: int,
                 generator: torch.Generator, lip_dropout: float = 0.0,
                 max_batches: int | None = None) -> tuple[int, list[dict]]:
    """The mini-batches of one epoch over clips of ``lengths`` frames, in windows: returns the
    number of mini-batches and, per window, ``clips`` (the clip indices it reads),
    ``segments`` (``(S, 3)``: index into ``clips``, first frame, valid length), ``keep``
    (``(S,)`` lips kept) and ``edges`` (where its mini-batches start, and its end)."""
    order = torch.randperm(len(lengths), generator=generator).tolist()
    segs = torch.tensor([(c, lo, n) for c in order for lo, n in clip_segments(lengths[c], length, generator)],
                        dtype=torch.long)
    steps = math.ceil(len(segs) / batch_size)
    steps = min(steps, max_batches) if max_batches else steps
    span, windows, planned = window * batch_size, [], 0
    for first in range(0, len(segs), span):
        if planned == steps:
            break
        chunk = segs[first:first + span]
        chunk = chunk[torch.randperm(len(chunk), generator=generator)]
        edges = list(range(0, len(chunk), batch_size))[:steps - planned] + [len(chunk)]
        chunk = chunk[:min(edges[-1], edges[-2] + batch_size)]
        edges[-1] = len(chunk)
        keep = torch.ones(len(chunk), dtype=torch.bool)
        if lip_dropout > 0:
            for a, b in zip(edges[:-1], edges[1:]):
                keep[a:b] = torch.rand(b - a, generator=generator) >= lip_dropout
        clips, local = torch.unique(chunk[:, 0], return_inverse=True)
        windows.append({"clips": clips.tolist(), "segments": torch.cat([local[:, None], chunk[:, 1:]], 1),
                        "keep": keep, "edges": edges})
        planned += len(edges) - 1
    return steps, windows


class StreamedClips:
    """Training clips read from the prepared cache as they are needed (see the module docstring);
    offers :meth:`epoch` and :attr:`num_frames` as :class:`~.training_data.FrameSet` does."""

    def __init__(self, rows: list[dict], read: ClipReader, workers: int, window: int, skipped: list):
        self.read, self.workers, self.window = read, workers, window
        self.rows, self.lengths = [], []
        for row, n in zip(rows, _loader(_Lengths(rows, read), workers)):
            if isinstance(n, str):
                skipped.append((row.get("id", "?"), n))
            else:
                self.rows.append(row)
                self.lengths.append(n)
        if not self.rows:
            raise InputError("training data", "no usable clips")

    @property
    def num_frames(self) -> int:
        return int(sum(self.lengths))

    def epoch(self, length: int, batch_size: int, generator: torch.Generator, lip_dropout: float = 0.0,
              context: int = 0, max_batches: int | None = None) -> Batches:
        steps, windows = plan_windows(self.lengths, length, batch_size, self.window, generator,
                                      lip_dropout, max_batches)
        loader = _loader(_Windows(self.rows, self.read, windows, length, context), self.workers)
        return Batches(steps, (b for batches in loader for b in batches))


def training_sets(tr, train_rows: list[dict], dev_rows: list[dict], read: ClipReader, skipped: list):
    """The train and dev data of ``train.loader`` (``tr``: the train settings); dev is None
    without dev rows."""
    def load(rows):
        if tr.loader == "stream":
            return StreamedClips(rows, read, tr.workers, tr.stream_window, skipped)
        return load_frames(rows, read.projection, read.stft_cfg, read.label_of, read.use_video, skipped)

    return load(train_rows), (load(dev_rows) if dev_rows else None)
