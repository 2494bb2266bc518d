"""Several processes working as one command: ``--nproc N`` or ``torchrun``.

A command started by ``torchrun --nproc_per_node=N cli.py <command> ...`` finds its rank in the
environment (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, and ``MASTER_ADDR``/``MASTER_PORT`` for
the process group); ``cli.py <command> --nproc N`` starts those N processes itself
(:func:`launch`: the same command line without ``--nproc``, on this machine, with the
environment torchrun would give them; the first rank to fail stops the others, as torchrun's
agent does), so both ways run the same code. Processes talk through a
``gloo`` process group (CPU tensors: it works with CUDA models as well, and needs no GPU).

* ``separate`` shares its batches between the ranks (:meth:`Ranks.shard`): every batch of
  recordings is separated whole by one rank, with the settings' seed, so each recording's
  result is the one a single process gives; the outcomes are gathered (:func:`gather`) and
  rank 0 writes the report and the summary.
* ``fit`` trains one model with data parallelism (:mod:`.distributed_training`).

Each process takes ``cores / N`` torch threads unless ``--threads`` says otherwise, and with
``--device cuda`` on a machine with several GPUs rank r uses GPU ``LOCAL_RANK mod count``.
"""

from __future__ import annotations

import contextlib
import functools
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from ..errors import InputError


@dataclass(frozen=True)
class Ranks:
    """This process's place among the processes of one command."""

    rank: int = 0
    world: int = 1
    local: int = 0

    @classmethod
    def from_env(cls) -> "Ranks":
        """From torchrun's environment (one process: rank 0 of 1)."""
        try:
            world = int(os.environ.get("WORLD_SIZE", "1"))
            rank = int(os.environ.get("RANK", "0"))
            local = int(os.environ.get("LOCAL_RANK", str(rank)))
        except ValueError:
            raise InputError("RANK/WORLD_SIZE", "must be whole numbers (as torchrun sets them)") from None
        if not (world >= 1 and 0 <= rank < world):
            raise InputError("RANK/WORLD_SIZE", f"rank {rank} of {world} processes is impossible")
        return cls(rank, world, local)

    @property
    def main(self) -> bool:
        return self.rank == 0

    def shard(self, items: list) -> list:
        """This rank's share of ``items``: every ``world``-th one from its rank on."""
        return items[self.rank::self.world]


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch(nproc: int, argv: list[str]) -> int:
    """Run ``python -m pyro_avss argv`` (``argv`` without ``--nproc``) as ``nproc`` ranks on this
    machine; returns 0 or the first failed rank's exit status (:func:`run_ranks`: a failed rank
    stops the others, Ctrl-C stops every rank)."""
    if nproc < 1:
        raise InputError("--nproc", f"must be >= 1, got {nproc}")
    if "RANK" in os.environ and "WORLD_SIZE" in os.environ:
        raise InputError("--nproc", "this process is already one of several (torchrun sets RANK "
                                    "and WORLD_SIZE): use --nproc or torchrun, not both")
    root = str(Path(__file__).resolve().parents[2])          # where pyro_avss can be imported
    base = {**os.environ, "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(free_port()),
            "WORLD_SIZE": str(nproc),
            "PYTHONPATH": os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH")) if p)}
    command = [sys.executable, "-m", "pyro_avss", *argv]
    return run_ranks([command] * nproc, [{**base, "RANK": str(r), "LOCAL_RANK": str(r)}
                                         for r in range(nproc)])


def run_ranks(commands: list[list[str]], envs: list[dict], poll_s: float = 0.2,
              grace_s: float = 10.0) -> int:
    """Start one process per command and wait for all; returns 0, or the exit status of the
    first rank seen failing (a rank killed by signal N counts as 128 + N, as in a shell).

    A rank that fails (non-zero status) stops the others at once (SIGTERM, SIGKILL after
    ``grace_s``): they would otherwise wait for it in the process group until gloo's timeout
    (30 minutes). Ctrl-C sends SIGINT to every rank and returns 130."""
    procs = [subprocess.Popen(c, env=e) for c, e in zip(commands, envs)]
    try:
        while True:
            codes = [p.poll() for p in procs]
            failed = [c for c in codes if c not in (None, 0)]
            if failed or all(c is not None for c in codes):
                break
            time.sleep(poll_s)
    except KeyboardInterrupt:
        for p in procs:
            p.send_signal(signal.SIGINT)
        for p in procs:
            p.wait()
        return 130
    _stop(procs, grace_s)
    if not failed:
        return 0
    return failed[0] if failed[0] > 0 else 128 - failed[0]


def _stop(procs: list[subprocess.Popen], grace_s: float) -> None:
    """Terminate the processes still running, then kill those that outlive ``grace_s``."""
    for p in procs:
        if p.poll() is None:
            p.terminate()
    deadline = time.monotonic() + grace_s
    for p in procs:
        try:
            p.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


def ranked(command):
    """``--nproc N`` for a click command: the command line again as N processes (:func:`launch`),
    then exit with the largest of their statuses; the command itself reads its rank."""
    import click

    @functools.wraps(command)
    def run(*args, nproc: int, **kwargs):
        if nproc > 1:
            from .. import cli

            try:
                sys.exit(launch(nproc, without_nproc(cli.ARGV)))
            except cli.FAILURES as exc:
                cli.fail(exc)
        return command(*args, **kwargs)
    return click.option("--nproc", type=click.IntRange(min=1), default=1, show_default=True,
                        help="processes to share the work (or start it with torchrun)")(run)


def without_nproc(argv: list[str]) -> list[str]:
    """``argv`` less its ``--nproc N`` (or ``--nproc=N``)."""
    out, skip = [], False
    for a in argv:
        if skip:
            skip = False
        elif a == "--nproc":
            skip = True
        elif not a.startswith("--nproc="):
            out.append(a)
    return out


@contextlib.contextmanager
def process_group(ranks: Ranks):
    """The ``gloo`` process group of ``ranks`` for the body (nothing with one process)."""
    import torch.distributed as dist

    if ranks.world == 1 or dist.is_initialized():
        yield
        return
    missing = [k for k in ("MASTER_ADDR", "MASTER_PORT") if k not in os.environ]
    if missing:
        raise InputError(", ".join(missing), "not set: start the processes with torchrun or --nproc")
    dist.init_process_group("gloo", rank=ranks.rank, world_size=ranks.world)
    try:
        yield
    finally:
        dist.destroy_process_group()


def gather(obj, ranks: Ranks) -> list:
    """Every rank's ``obj``, in rank order, on every rank (``[obj]`` for one process)."""
    if ranks.world == 1:
        return [obj]
    import torch.distributed as dist

    out = [None] * ranks.world
    dist.all_gather_object(out, obj)
    return out


def resolve_device(device: str):
    """``auto`` -> CUDA when available, else CPU; ``cuda`` without a GPU is an error (a
    ``torch.device``)."""
    import torch

    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except RuntimeError:
        raise InputError("--device", f"expected auto, cpu, cuda or cuda:N, got {device!r}") from None
    if resolved.type not in ("cpu", "cuda"):
        raise InputError("--device", f"expected auto, cpu, cuda or cuda:N, got {device!r}")
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise InputError("--device", "CUDA was requested but no GPU is available")
    return resolved


def rank_device(device, ranks: Ranks):
    """``cuda`` without an index: GPU ``LOCAL_RANK mod count`` (every rank on its own GPU when
    there are enough); any other device as given."""
    import torch

    if device.type == "cuda" and device.index is None and ranks.world > 1:
        return torch.device("cuda", ranks.local % max(torch.cuda.device_count(), 1))
    return device


def rank_threads(threads: int | None, ranks: Ranks) -> int | None:
    """Torch threads of one rank: ``threads`` if given, else the cores shared out (one process:
    None, torch's choice)."""
    if threads or ranks.world == 1:
        return threads
    return max(1, (os.cpu_count() or 1) // ranks.world)
