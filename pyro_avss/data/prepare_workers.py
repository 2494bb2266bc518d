"""The worker processes of ``prepare``: a few ``spawn`` processes, each fed one clip at a time over
its own pipe, so that a decoder crash costs exactly one clip (recorded as a failure; a fresh
worker takes over) and the native libraries' stderr chatter goes to a log file."""

from __future__ import annotations

import os
from multiprocessing import get_context
from pathlib import Path

from .clips import Clip
from .prepare_clip import attempt_clip

MAX_STARTUP_CRASHES = 3  # workers dying before any clip is done: a broken setup
WORKER_LOG = "prepare_workers.log"

_WORKER: dict = {}


def _init_worker(detector: str, log_path: str) -> None:
    """Process-pool initializer: one detector per worker, one thread per library, and the
    native libraries' stderr chatter (MediaPipe, FFmpeg) sent to ``log_path`` so that it does
    not break the progress bar."""
    import cv2
    import torch

    log = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.dup2(log, 2)
    os.close(log)
    cv2.setNumThreads(1)
    torch.set_num_threads(1)
    _WORKER.update(name=detector, detector=None)


def _worker_task(clip: Clip, out_dir: Path, roi_size: int, sample_rate: int) -> tuple:
    """Prepare one clip in a worker; the detector is built at the first clip with a video."""
    if clip.video is not None and _WORKER["detector"] is None:
        from ..video.landmarks import make_detector

        _WORKER["detector"] = make_detector(_WORKER["name"])
    return attempt_clip(clip, out_dir, _WORKER["detector"] or _WORKER["name"], roi_size,
                        sample_rate)


def _worker_loop(conn, detector: str, log_path: str) -> None:
    """Body of a worker process: prepare the clips sent over ``conn`` until told to stop."""
    _init_worker(detector, log_path)
    while True:
        try:
            job = conn.recv()
        except EOFError:
            return
        if job is None:
            return
        index, clip, out_dir, roi_size, sample_rate = job
        conn.send((index, _worker_task(clip, out_dir, roi_size, sample_rate)))


class _WorkerPool:
    """A few ``spawn`` worker processes, each fed one clip at a time over its own pipe, so that
    a worker that dies (a decoder crash) is known to have died on exactly one clip: that clip
    becomes a failure and a fresh worker takes over."""

    def __init__(self, detector: str, log_path: str):
        self._ctx = get_context("spawn")
        self._args = (detector, log_path)
        self.workers: dict = {}  # connection -> [process, clip index or None]

    def launch(self):
        parent, child = self._ctx.Pipe()
        process = self._ctx.Process(target=_worker_loop, args=(child, *self._args), daemon=True)
        process.start()
        child.close()
        self.workers[parent] = [process, None]
        return parent

    def send(self, conn, index: int | None, job) -> bool:
        """Give a worker a job (``None``: stop); False if it is already dead."""
        self.workers[conn][1] = index
        try:
            conn.send(job)
            return True
        except (BrokenPipeError, OSError):
            return False

    def retire(self, conn) -> None:
        process = self.workers.pop(conn)[0]
        conn.close()
        process.join(timeout=5)
        if process.is_alive():
            process.terminate()

    def close(self) -> None:
        for conn in list(self.workers):
            self.send(conn, None, None)
            self.retire(conn)


def run_pool(clips: list[Clip], out_dir: Path, detector: str, roi_size: int, sample_rate: int,
             workers: int, on_result) -> None:
    """Prepare ``clips`` in ``workers`` processes; ``on_result(k, result)`` for each clip."""
    from multiprocessing.connection import wait

    log_path = str(out_dir / WORKER_LOG)
    pool = _WorkerPool(detector, log_path)
    pending = list(range(len(clips)))[::-1]  # popped from the end
    done = crashed = 0

    def feed(conn) -> None:
        while pending:
            index = pending.pop()
            if pool.send(conn, index, (index, clips[index], out_dir, roi_size, sample_rate)):
                return
            pending.append(index)  # the worker died before taking it: not the clip's fault
            pool.retire(conn)
            conn = pool.launch()
        pool.send(conn, None, None)
        pool.retire(conn)

    try:
        for _ in range(min(workers, len(pending))):
            feed(pool.launch())
        while pool.workers:
            for conn in wait(list(pool.workers)):
                index = pool.workers[conn][1]
                try:
                    got, result = conn.recv()
                except (EOFError, OSError):  # the worker died while preparing clip `index`
                    pool.retire(conn)
                    crashed += 1
                    if done == 0 and crashed >= MAX_STARTUP_CRASHES:
                        raise RuntimeError(f"prepare workers die before finishing any clip; "
                                           f"see {log_path}") from None
                    if index is not None:
                        clip = clips[index]
                        on_result(index, ("fail", {"id": clip.id, "path": str(clip.video or
                                                                               clip.audio),
                                                   "reason": "worker process crashed on it"}))
                    if pending:
                        feed(pool.launch())
                    continue
                done += 1
                on_result(got, result)
                feed(conn)
    finally:
        pool.close()
