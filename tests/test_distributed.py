"""Several processes as one command: ``separate --nproc N`` (or under torchrun) and the ranks."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from pyro_avss.errors import InputError
from pyro_avss.inference.distributed import Ranks, run_ranks, without_nproc

from test_devices import SR, tiny_models, track, voice

ROOT = Path(__file__).resolve().parents[1]


def cli(*args, env=None):
    return subprocess.run([sys.executable, str(ROOT / "cli.py"), *map(str, args)], capture_output=True,
                          text=True, cwd=ROOT, env={**os.environ, "OMP_NUM_THREADS": "1", **(env or {})})


def test_a_failed_rank_stops_the_others_at_once(tmp_path):
    """A rank that fails must not leave the others waiting for it (in gloo: 30 minutes); ranks
    that succeed leave the others running to the end."""
    import time

    waiter = [sys.executable, "-c", "import time; time.sleep(60)"]
    failing = [sys.executable, "-c", "import sys, time; time.sleep(0.5); sys.exit(3)"]
    start = time.monotonic()
    assert run_ranks([waiter, failing], [dict(os.environ)] * 2, grace_s=5) == 3
    assert time.monotonic() - start < 20
    stubborn = [sys.executable, "-c", "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
                                      "print('ready', flush=True); time.sleep(60)"]
    start = time.monotonic()
    assert run_ranks([stubborn, failing], [dict(os.environ)] * 2, grace_s=1) == 3   # killed after the grace
    assert time.monotonic() - start < 20
    killed = [sys.executable, "-c", "import os, signal, time; time.sleep(0.5); os.kill(os.getpid(), signal.SIGKILL)"]
    assert run_ranks([[sys.executable, "-c", "pass"], killed], [dict(os.environ)] * 2) == 128 + 9   # not 0
    done = tmp_path / "done"
    slow_ok = [sys.executable, "-c", f"import time; time.sleep(1); open({str(done)!r}, 'w').write('1')"]
    quick_ok = [sys.executable, "-c", "pass"]
    assert run_ranks([slow_ok, quick_ok], [dict(os.environ)] * 2) == 0 and done.exists()


def test_ranks_come_from_torchruns_environment(monkeypatch):
    for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(key, raising=False)
    assert Ranks.from_env() == Ranks(0, 1, 0) and Ranks.from_env().main
    monkeypatch.setenv("RANK", "2")
    monkeypatch.setenv("WORLD_SIZE", "3")
    ranks = Ranks.from_env()
    assert ranks == Ranks(2, 3, 2) and not ranks.main
    assert ranks.shard(list(range(8))) == [2, 5]
    monkeypatch.setenv("RANK", "3")
    with pytest.raises(InputError, match="rank 3 of 3"):
        Ranks.from_env()
    assert without_nproc(["separate", "--nproc", "2", "--out", "o", "--nproc=3"]) == ["separate", "--out", "o"]


def test_two_processes_separate_a_batch_exactly_as_one(tmp_path):
    """Seven recordings (audio-visual and one without its video), batches of two: the union of
    two ranks' outputs is the one-process output, byte for byte, and rank 0's report lists all."""
    models = tiny_models()
    models.save(tmp_path / "model.pt")
    folder = tmp_path / "in"
    folder.mkdir()
    for i in range(7):
        sf.write(folder / f"m{i}.wav", voice(0.3 + 0.05 * i, i % 3) + voice(0.3 + 0.05 * i, 2), SR)
        if i != 4:
            track(0.3 + 0.05 * i, i).save(folder / f"m{i}.npz")
    common = ["separate", "--model", tmp_path / "model.pt", "--mixture", folder, "--no-figure",
              "--quiet", "--set", "separate.steps=4", "--set", "separate.batch_size=2", "--device", "cpu"]
    one = cli(*common, "--out", tmp_path / "one", "--threads", "1")
    assert one.returncode == 0, one.stderr
    two = cli(*common, "--out", tmp_path / "two", "--nproc", "2", "--report")
    assert two.returncode == 0, two.stderr
    assert "separated 7 of 7 input(s)" in two.stdout and two.stdout.count("separated") == 1
    files = sorted(p.relative_to(tmp_path / "one") for p in (tmp_path / "one").rglob("*") if p.is_file())
    assert len(files) == 7 * 4          # source1, noise, switch posterior, speakers per recording
    for f in files:
        assert (tmp_path / "two" / f).read_bytes() == (tmp_path / "one" / f).read_bytes(), f
    assert (tmp_path / "two" / "report.html").exists()           # rank 0 lists every recording
    assert all(f"m{i}/source1.wav" in (tmp_path / "two" / "report.html").read_text() for i in range(7))


def test_nproc_inside_torchrun_is_refused(tmp_path):
    res = cli("separate", "--model", tmp_path / "m.pt", "--mixture", tmp_path, "--out", tmp_path / "o",
              "--nproc", "2", env={"RANK": "0", "WORLD_SIZE": "2"})
    assert res.returncode == 2 and "use --nproc or torchrun, not both" in res.stderr


def test_one_rank_of_a_batch_separates_only_its_batches(tmp_path, monkeypatch):
    """What a torchrun rank does, without the others: its batches (every other pair), no more."""
    from pyro_avss.inference.run_separate import jobs_from_inputs, run_jobs
    from pyro_avss.inference.separation import SeparationSettings

    models = tiny_models(lip_dim=0)
    for i in range(5):
        sf.write(tmp_path / f"m{i}.wav", voice(0.3, i), SR)
    jobs, _ = jobs_from_inputs([str(tmp_path / "*.wav")], [], 1)
    monkeypatch.setattr("pyro_avss.inference.run_separate.gather", lambda outcome, ranks: [outcome])
    outcome = run_jobs(models, jobs, tmp_path / "out", SeparationSettings(steps=2, batch_size=2),
                       device=torch.device("cpu"), resample=False, force=False, detector="roi",
                       progress=False, figure=False, ranks=Ranks(1, 2, 1))
    assert outcome.done == ["m2", "m3"] and sorted(p.name for p in (tmp_path / "out").iterdir()) == ["m2", "m3"]
    assert np.isfinite(sf.read(tmp_path / "out" / "m2" / "source1.wav")[0]).all()


FIT = ["model.use_video=false", "model.hidden=16", "model.latent_dim=4", "train.batch_size=8",
       "train.segment_frames=16", "train.warmup_epochs=1", "train.epochs=3", "train.lr=3e-3"]


def _fit_rank(rank: int, world: int, port: int, folder: str, rows: list, extra: list, loader: list) -> None:
    """One rank of a data-parallel fit (a spawned process)."""
    import torch.distributed as dist

    from pyro_avss.config import load_config
    from pyro_avss.inference.training import fit

    torch.set_num_threads(1)
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank),
                      WORLD_SIZE=str(world), LOCAL_RANK=str(rank))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        fit(load_config(None, FIT + loader + extra), Path(folder), rows=rows, progress=False, device="cpu")
        if extra:      # then resumed for one more epoch
            fit(load_config(None, FIT + loader + ["train.epochs=4"]), Path(folder), rows=rows, progress=False,
                device="cpu", resume=True)
    finally:
        dist.destroy_process_group()


# the streamed loader reads in the rank (workers=0): the ranks mp.spawn starts would start their
# loader workers by spawning too, seconds each (fit --nproc and torchrun ranks fork them)
@pytest.mark.parametrize("loader", [[], ["train.loader=stream", "train.workers=0", "train.stream_window=1"]],
                         ids=["memory", "stream"])
def test_two_gloo_processes_train_the_one_process_model(tmp_path, loader):
    """Data-parallel fit on two CPU processes with the global batch of one: the same losses per
    epoch (train and dev, hence the same early stopping) and the same weights, up to float sums;
    rank 0 alone writes; --resume continues it. With either loader (streamed: every rank reads
    every window)."""
    import csv

    import torch.multiprocessing as mp

    from pyro_avss.checkpoint import SpeechModels
    from pyro_avss.config import load_config
    from pyro_avss.inference.distributed import free_port
    from pyro_avss.inference.training import fit

    from test_training import synthetic_rows

    rows = synthetic_rows(tmp_path, per_speaker=4, seconds=0.7)
    fit(load_config(None, FIT + loader), tmp_path / "one", rows=rows, progress=False, device="cpu")
    fit(load_config(None, FIT + loader + ["train.epochs=4"]), tmp_path / "one", rows=rows, progress=False,
        device="cpu", resume=True)
    mp.spawn(_fit_rank, args=(2, free_port(), str(tmp_path / "two"), rows, ["train.epochs=3"], loader), nprocs=2)
    logs = {}
    for run in ("one", "two"):
        with open(tmp_path / run / "log.csv", newline="") as fh:
            logs[run] = [{k: float(r[k]) for k in ("train_loss", "dev_loss")} for r in csv.DictReader(fh)]
    assert len(logs["one"]) == len(logs["two"]) == 4
    for a, b in zip(logs["one"], logs["two"]):
        assert b["train_loss"] == pytest.approx(a["train_loss"], rel=1e-4)
        assert b["dev_loss"] == pytest.approx(a["dev_loss"], rel=1e-4)
    one, two = (SpeechModels.load(tmp_path / run / "model.pt") for run in ("one", "two"))
    for (name, a), b in zip(one.decoders.state_dict().items(), two.decoders.state_dict().values()):
        torch.testing.assert_close(b, a, atol=1e-4, rtol=1e-4, msg=name)
    for a, b in zip(one.encoder.state_dict().values(), two.encoder.state_dict().values()):
        torch.testing.assert_close(b, a, atol=1e-4, rtol=1e-4)


def _ordered_rank(rank: int, world: int, port: int, folder: str) -> None:
    """One rank of the main-rank-first test (a spawned process): rank 0's work is slow and
    writes the cache; every other rank's work must find it there."""
    import time

    import torch.distributed as dist

    from pyro_avss.inference.distributed_training import current_ranks, main_rank_first

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    cache = Path(folder) / "cache.txt"

    def work():
        if rank == 0:
            time.sleep(0.5)
            cache.write_text("prepared")
        assert cache.read_text() == "prepared", "a rank ran before the cache was written"
        return rank

    try:
        assert main_rank_first(work, current_ranks()) == rank
        (Path(folder) / f"done{rank}").touch()
    finally:
        dist.destroy_process_group()


def test_the_corpus_is_prepared_by_rank_zero_before_the_others_read_it(tmp_path):
    import torch.multiprocessing as mp

    from pyro_avss.inference.distributed import free_port

    mp.spawn(_ordered_rank, args=(2, free_port(), str(tmp_path)), nprocs=2)
    assert (tmp_path / "done0").exists() and (tmp_path / "done1").exists()
