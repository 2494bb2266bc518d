"""Benchmark of separate_recordings: grid, isolated workers, CSV and plot (tiny grid)."""

from __future__ import annotations

import csv
import math

import numpy as np
import pytest

from pyro_avss.errors import InputError
from pyro_avss.recipes.bench import (BASE, COLUMNS, FULL_GRID, BenchConfig, grid_configs,
                                        make_mixtures, parse_point, run_bench)

FAST = ("separate.steps=2", "separate.num_samples=1")


def test_full_grid_varies_one_factor_at_a_time():
    configs = grid_configs(FULL_GRID, ["cpu", "cuda"])
    per_device = [c for c in configs if c.device == "cpu"]
    assert len(per_device) == 4 + 4 + 3 + 3 - 3            # the base point appears once
    assert len(configs) == 2 * len(per_device)
    for c in per_device:
        changed = [k for k in BASE if getattr(c, k) != BASE[k]]
        assert len(changed) <= 1


def test_mixtures_have_the_requested_shape_without_data(tmp_path):
    cfg = BenchConfig(1.5, 2, 3, 4, data=str(tmp_path / "missing"))
    mixtures, audio = make_mixtures(cfg)
    assert audio == "synthetic" and len(mixtures) == 4
    assert all(m.shape == (24000,) and m.dtype == np.float32 for m in mixtures)
    assert 0.4 < np.abs(mixtures[0]).max() <= 0.5 and not np.array_equal(mixtures[0], mixtures[1])


def test_bench_writes_csv_and_plot(tmp_path):
    grid = {"components": (1, 2)}
    rows = run_bench(tmp_path, devices="cpu", grid=grid, long_minutes=0.05, threads=1,
                     overrides=FAST, audio_only=False, progress=False, timeout_s=120)
    assert len(rows) == 3 and [r["kind"] for r in rows] == ["grid", "grid", "long"]
    for r in rows:
        assert r["error"] == "", r["error"]
        assert r["steps"] == 2 and r["threads"] == 1 and 1 <= r["kept"] <= r["components"]
        assert r["wall_s"] > 0 and math.isclose(r["rtf"], r["wall_s"] / r["audio_s"])
        assert r["peak_rss_mb"] >= r["rss_before_mb"] > 50      # each worker measures itself
    assert rows[2]["length_s"] == pytest.approx(3.0)
    with open(tmp_path / "bench.csv", newline="") as fh:
        reader = csv.DictReader(fh)
        assert tuple(reader.fieldnames) == COLUMNS and len(list(reader)) == 3
    assert (tmp_path / "bench.png").stat().st_size > 1000


def test_a_failing_configuration_is_recorded(tmp_path):
    rows = run_bench(tmp_path, devices="cpu", grid={"components": (1,)},
                     overrides=("separate.nope=1",), progress=False, timeout_s=120)
    assert len(rows) == 1 and "worker failed" in rows[0]["error"] and "nope" in rows[0]["error"]


def test_points_name_configurations_the_one_factor_grid_lacks():
    assert parse_point("components=4,sources=2") == {**BASE, "components": 4, "sources": 2}
    assert parse_point("length_s=1.5") == {**BASE, "length_s": 1.5}
    assert parse_point("") == BASE
    for bad in ("K=4", "components=0", "components=two", "sources"):
        with pytest.raises(InputError, match="--point"):
            parse_point(bad)
    one_factor = grid_configs(FULL_GRID, ["cpu"])
    assert not any(c.components == 4 and c.sources == 2 for c in one_factor)


def test_bench_measures_the_points_asked_for(tmp_path):
    rows = run_bench(tmp_path, devices="cpu", points=[parse_point("components=3,sources=2,length_s=1")],
                     threads=1, overrides=FAST, progress=False, timeout_s=120)
    assert len(rows) == 1 and rows[0]["error"] == ""
    assert (rows[0]["components"], rows[0]["sources"], rows[0]["length_s"]) == (3, 2, 1.0)
    with pytest.raises(InputError, match="--banks"):
        run_bench(tmp_path, devices="cpu", points=[BASE], banks=True, progress=False)
