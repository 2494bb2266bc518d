"""Shared fixtures: the real data folder and a small model fitted once per test session."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
import torch

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def data_root() -> Path:
    """``../shared/data``, or skip the calling test with the reason."""
    if not (DATA / "manifests" / "grid.csv").exists():
        pytest.skip(f"real data not found at {DATA} (tests on real clips need ../shared/data)")
    return DATA


def grid_rows(split: str | None = None, speaker: str | None = None, limit: int | None = None):
    """Rows of the shared GRID manifest as prepared-manifest dicts (audio only, no lips)."""
    root = data_root()
    rows = []
    with open(root / "manifests" / "grid.csv", newline="") as f:
        for r in csv.DictReader(f):
            if (split and r["split"] != split) or (speaker and r["speaker"] != speaker):
                continue
            rows.append({"id": r["clip_id"], "speaker": r["speaker"], "split": r["split"],
                         "audio": str(root / r["audio"]), "video": str(root / r["video"]),
                         "lips": ""})
    return rows[:limit] if limit else rows


@pytest.fixture(scope="session")
def small_grid_model(tmp_path_factory):
    """An audio-only universal model fitted on 40 GRID s1 training clips (a few seconds of CPU)."""
    from pyro_avss.config import load_config
    from pyro_avss.inference.training import fit

    rows = grid_rows("train", "s1", 40) + grid_rows("dev", "s1", 8)
    out = tmp_path_factory.mktemp("small_model")
    cfg = load_config(None, ["model.use_video=false", "train.epochs=15", "train.warmup_epochs=2",
                             "train.patience=15"])
    torch.manual_seed(0)
    return fit(cfg, out / "run", rows=rows, progress=False), out / "run"


@pytest.fixture(autouse=True, scope="session")
def _one_torch_thread():
    """The tensors in the tests are small: one thread is faster and immune to oversubscription
    when the machine is busy."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def _fuzz_profiles():
    """Hypothesis profiles: a quick one for the default suite, a long one on request
    (``PYRO_AVSS_FUZZ=long``); no deadline, as the shared machines are noisy."""
    import os

    from hypothesis import HealthCheck, settings

    quiet = [HealthCheck.too_slow]
    settings.register_profile("default", max_examples=FUZZ_EXAMPLES, deadline=None,
                              suppress_health_check=quiet)
    settings.register_profile("long", max_examples=FUZZ_EXAMPLES_LONG, deadline=None,
                              suppress_health_check=quiet)
    settings.load_profile(os.environ.get("PYRO_AVSS_FUZZ", "default"))


FUZZ_EXAMPLES, FUZZ_EXAMPLES_LONG = 150, 3000
_fuzz_profiles()

CLI_FUZZ = 30
"""Cases per property of the command-line fuzz tests (each runs a command end to end) in the
default suite; ``PYRO_AVSS_FUZZ=long`` multiplies them by ``FUZZ_LONG_FACTOR``."""
FUZZ_LONG_FACTOR = FUZZ_EXAMPLES_LONG // FUZZ_EXAMPLES


def fuzz_settings(examples: int):
    """Hypothesis settings of the current profile with ``examples`` cases (times
    ``FUZZ_LONG_FACTOR`` in the long profile): for properties whose cases cost more than the
    profile's count allows."""
    import os

    from hypothesis import settings

    long = os.environ.get("PYRO_AVSS_FUZZ", "default") == "long"
    return settings(max_examples=examples * (FUZZ_LONG_FACTOR if long else 1))
