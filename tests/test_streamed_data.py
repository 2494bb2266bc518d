"""The streamed training loader (issue 16, item 3): the memory path's segments and batches read
from the cache window by window, reproducible, and a training process whose memory does not grow
with the corpus."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from pyro_avss.inference.streamed_data import StreamedClips, plan_windows
from pyro_avss.inference.training import fit
from pyro_avss.inference.training_data import ClipReader, frame_set, load_frames

from test_training import synthetic_rows, tiny_config


class MadeUpClips:
    """Clip tensors made up from a row, no files: power, lips with frames lost, its label."""

    def __call__(self, row: dict):
        gen = torch.Generator().manual_seed(row["seed"])
        T = row["frames"]
        present = (torch.rand(T, generator=gen) > 0.2).float()
        lips = torch.randn(T, 3, generator=gen) * present[:, None]
        return torch.rand(T, 5, generator=gen), lips, present, torch.full((T,), row["label"])


def assert_the_memory_paths_rows(batches: list[dict], windows: list[dict], memory, L: int, c: int) -> list:
    """Every row of the streamed ``batches`` is the memory ``FrameSet``'s batch of the planned
    clip and offset (lips hidden where the plan drops them), labelled as its clip; returns the
    ``(clip, frame)`` pairs they cover."""
    got_rows = [{k: v[i] for k, v in b.items()} for b in batches for i in range(len(b["mask"]))]
    plan = [(w["clips"][int(s[0])], int(s[1]), int(s[2]), bool(k))
            for w in windows for s, k in zip(w["segments"], w["keep"])]
    assert len(got_rows) == len(plan)
    covered = []
    for got, (clip, lo, n, keep) in zip(got_rows, plan):
        want = memory.batch(torch.tensor([[memory.starts[clip] + lo, n]]), L, context=c)
        want = {k: v[0] * (1 if keep or k not in ("lips", "present") else 0) for k, v in want.items()}
        assert set(got) == {"power", "lips", "present", "labels", "mask"}
        for key in got:
            assert torch.equal(got[key], want[key]), key
        assert set(got["labels"][got["mask"]].tolist()) == {int(memory.labels[memory.starts[clip]])}
        covered += [(clip, lo + t) for t in range(n)]
    return covered


def test_streamed_batches_are_the_memory_paths_segments_of_the_right_clips():
    read = MadeUpClips()
    rows = [{"id": f"c{i}", "speaker": "s", "frames": n, "seed": i, "label": i % 3}
            for i, n in enumerate([5, 40, 17, 33, 64, 8, 21, 50])]
    memory = frame_set([read(r) for r in rows], rows)           # the memory path's frames
    stream = StreamedClips(rows, read, workers=0, window=2, skipped=[])
    L, B, c = 16, 4, 3
    steps, windows = plan_windows(stream.lengths, L, B, 2, torch.Generator().manual_seed(7), 0.5)
    batches = list(stream.epoch(L, B, torch.Generator().manual_seed(7), 0.5, context=c))
    segments = sum(len(w["keep"]) for w in windows)
    assert len(windows) > 2 and len(batches) == steps == math.ceil(segments / B)
    covered = assert_the_memory_paths_rows(batches, windows, memory, L, c)
    assert sorted(covered) == sorted((i, t) for i, r in enumerate(rows) for t in range(r["frames"]))
    assert any(not w["keep"].all() for w in windows)              # lips dropped, per mini-batch
    b = batches[0]
    assert b["power"].shape == (B, L, 5) and b["lips"].shape == (B, L + 2 * c, 3)
    assert b["present"].shape == (B, L + 2 * c) and b["labels"].shape == b["mask"].shape == (B, L)
    first = list(stream.epoch(L, B, torch.Generator().manual_seed(7), 0.5, context=c, max_batches=3))
    assert len(first) == 3 and all(torch.equal(a["power"], b["power"]) for a, b in zip(first, batches))


def with_lips(rows: list[dict], folder: Path) -> list[dict]:
    """The rows with lip tracks (faces lost in every third frame)."""
    from test_devices import track

    for i, row in enumerate(rows):
        track(0.6, seed=i, faces=False).save(folder / f"lips{i}.npz")
        row["lips"] = str(folder / f"lips{i}.npz")
    return rows


def test_streamed_clips_read_and_skip_as_the_memory_path(tmp_path):
    """Real clips and lips through a worker: the same lengths, skipped clips, normalised power,
    lips (with their context frames) and labels as the memory path's."""
    from pyro_avss.audio import StftConfig
    from pyro_avss.nets.lips import LipProjection

    from test_devices import track

    rows = with_lips(synthetic_rows(tmp_path, corrupt=True), tmp_path)
    projection = LipProjection(4, 8).fit([(track().rois, track().face_found)])
    read = ClipReader(projection, StftConfig(), {"a": 0, "b": 1}, True)
    assert read.projection is not projection           # a copy: the model's may move to a GPU
    skipped_memory, skipped_stream = [], []
    memory = load_frames(rows, projection, read.stft_cfg, read.label_of, True, skipped_memory)
    stream = StreamedClips(rows, read, workers=1, window=1, skipped=skipped_stream)
    assert stream.lengths == memory.lengths and stream.num_frames == memory.num_frames
    assert [r["id"] for r in stream.rows] == memory.clip_ids
    assert skipped_stream == skipped_memory and skipped_stream[0][0] == "broken"
    _, windows = plan_windows(stream.lengths, 16, 4, 1, torch.Generator().manual_seed(3), 0.3)
    batches = list(stream.epoch(16, 4, torch.Generator().manual_seed(3), 0.3, context=5))
    assert len(assert_the_memory_paths_rows(batches, windows, memory, 16, 5)) == memory.num_frames
    assert batches[0]["lips"].shape[-1] == 4 and 0 < float(batches[0]["present"].mean()) < 1


def _log(folder: Path) -> list[tuple[float, float]]:
    state = torch.load(folder / "state.pt", weights_only=True)
    return [(r["train_loss"], r["dev_loss"]) for r in state["log"]]


def test_a_streamed_fit_learns_and_is_reproducible_and_resumable(tmp_path):
    rows = with_lips(synthetic_rows(tmp_path), tmp_path)             # and a temporal lip encoder
    stream = ("train.loader=stream", "train.stream_window=2", "train.patience=10", "model.use_video=true",
              "lips.dim=4", "lips.downsample=8", "lips.embed_dim=4")
    full = fit(tiny_config("train.epochs=4", "train.workers=2", *stream), tmp_path / "full", rows=rows,
               progress=False)
    assert full.uses_video and full.lip_encoder is not None
    log = _log(tmp_path / "full")
    assert log[-1][0] < log[0][0] - 30 and log[-1][1] < log[0][1]       # nats per frame
    fit(tiny_config("train.epochs=2", "train.workers=0", *stream), tmp_path / "half", rows=rows, progress=False)
    resumed = fit(tiny_config("train.epochs=4", "train.workers=1", *stream), tmp_path / "half", rows=rows,
                  progress=False, resume=True)
    assert _log(tmp_path / "half") == log           # whatever the workers, interrupted or not
    assert torch.equal(full.decoders.w3, resumed.decoders.w3)


PROBE = """
import json, resource, sys
sys.path.insert(0, {tests!r})
from test_training import tiny_config
from pyro_avss.inference.training import fit
rows = json.load(open({rows!r}))
fit(tiny_config("train.epochs=1", "train.batch_size=64", "train.loader={loader}", "train.workers=1",
                "train.stream_window=2"),  # N clips are several windows already
    {out!r}, rows=rows, progress=False)           # one whole epoch: every clip read in a window
status = dict(line.split(":", 1) for line in open("/proc/self/status"))
children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
print(json.dumps({{"main_mb": int(status["VmHWM"].split()[0]) / 1024, "worker_mb": children / 1024}}))
"""


def peak_rss(tmp_path: Path, rows: list[dict], loader: str, name: str) -> dict:
    """Peak resident memory of a training process (a few steps) on ``rows``, in MB: the
    training process's and its largest loader worker's."""
    (tmp_path / f"{name}.json").write_text(json.dumps(rows))
    code = PROBE.format(tests=str(Path(__file__).parent), rows=str(tmp_path / f"{name}.json"),
                        loader=loader, out=str(tmp_path / name))
    env = dict(os.environ, OMP_NUM_THREADS="1")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def corpus(folder: Path, clips: int, repeat: int) -> list[dict]:
    """``clips`` training clips of 3 s (and two dev clips), the training rows ``repeat`` times."""
    rows = synthetic_rows(folder, speakers=("a",), per_speaker=clips + 1, seconds=3.0)
    train = [r for r in rows if r["split"] == "train"]
    dev = [r for r in rows if r["split"] == "dev"]
    return [dict(r, id=f"{r['id']}_{k}") for k in range(repeat) for r in train] + dev


@pytest.mark.parametrize("loader", ["stream", "memory"])
def test_streamed_training_memory_does_not_grow_with_the_corpus(tmp_path, loader):
    """Peak RSS of a training process on N clips of 3 s and on the same clips 10 times: flat with
    the streamed loader (its worker's too); the memory loader's grows with the spectrograms."""
    small = peak_rss(tmp_path, corpus(tmp_path, 20, 1), loader, "small")
    large = peak_rss(tmp_path, corpus(tmp_path, 20, 10), loader, "large")
    print(f"peak RSS, {loader} loader: {small} with N clips, {large} with 10 N")
    flat = large["main_mb"] < 1.15 * small["main_mb"]
    assert flat == (loader == "stream"), (small, large)        # the probe sees the memory path grow
    assert large["worker_mb"] < 1.15 * max(small["worker_mb"], 1.0)
