"""``evaluate`` streams: each mixture's rows are written as soon as it is scored and its
estimates are dropped then, so memory does not grow with the manifest and an interrupted run
keeps what it scored; failures are said on stderr, one line each."""

from __future__ import annotations

import weakref

import pytest
from click.testing import CliRunner

from pyro_avss.data.mixtures import render_mixture
from pyro_avss.evaluation import harness, scoring, systems
from pyro_avss.evaluation.harness import evaluate
from pyro_avss.evaluation.results_csv import read_results

from test_harness import FAST, setup  # noqa: F401 - the tiny synthetic manifest and model

BATCH_OF_THREE = FAST + ["separate.batch_size=3"]


@pytest.fixture(autouse=True)
def si_sdr_only(monkeypatch):
    """These tests are about when rows are written, not what they say: SI-SDR only (PESQ,
    STOI and BSS-Eval would take most of their time)."""
    from pyro_avss.evaluation.metrics import compute_metrics

    monkeypatch.setattr(scoring, "compute_metrics",
                        lambda estimate, reference: compute_metrics(estimate, reference, metrics=["si_sdr"]))


def ok_rows(path, system: str) -> int:
    return sum(1 for r in read_results(path) if r["system"] == system and r["status"] == "ok")


def test_each_mixture_is_written_before_the_next_is_separated(setup, tmp_path, monkeypatch):  # noqa: F811
    root, specs = setup
    real = systems.SVISystem.run
    written = []

    def one_at_a_time(self, items):
        written.append(ok_rows(tmp_path / "results.csv", "universal"))
        return real(self, items)

    monkeypatch.setattr(systems.SVISystem, "run", one_at_a_time)
    evaluate(root / "mix.csv", root / "model.pt", tmp_path, "universal", progress=False,
             overrides=FAST + ["separate.batch_size=1"], examples=0)
    # 3 one-talker mixtures (1 row each), then the two-talker one: every earlier row is there
    assert written == [0, 1, 2, 3]
    assert ok_rows(tmp_path / "results.csv", "universal") == 5


def test_estimates_are_dropped_as_soon_as_their_mixture_is_scored(setup, tmp_path, monkeypatch):  # noqa: F811
    """A batch of three is separated together; while its mixtures are scored one by one, the
    estimates of those already scored are gone (3, 2, 1 alive, never more)."""
    root, _ = setup
    real_run, real_rows = systems.SVISystem.run, scoring.Scorer.rows
    alive: set = set()
    seen = []

    def tracked(self, items):
        results = real_run(self, items)
        for r in results:
            alive.add(id(r.estimates))
            weakref.finalize(r.estimates, alive.discard, id(r.estimates))
        return results

    def counting(self, item, system, result):
        seen.append(len(alive))
        return real_rows(self, item, system, result)

    monkeypatch.setattr(systems.SVISystem, "run", tracked)
    monkeypatch.setattr(scoring.Scorer, "rows", counting)
    evaluate(root / "mix.csv", root / "model.pt", tmp_path, "universal", progress=False,
             overrides=BATCH_OF_THREE, examples=0)
    assert seen == [3, 2, 1, 1] and not alive           # the two-talker mixture is a batch alone


def test_an_interrupted_evaluation_keeps_the_mixtures_scored(setup, tmp_path, monkeypatch):  # noqa: F811
    root, specs = setup
    real_rows = scoring.Scorer.rows
    calls = []

    def interrupted(self, item, system, result):
        calls.append(item.spec.id)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real_rows(self, item, system, result)

    monkeypatch.setattr(scoring.Scorer, "rows", interrupted)
    with pytest.raises(KeyboardInterrupt):
        evaluate(root / "mix.csv", root / "model.pt", tmp_path, "universal", progress=False,
                 overrides=BATCH_OF_THREE, examples=0)
    kept = read_results(tmp_path / "results.csv")
    assert [r["id"] for r in kept] == calls[:2] and all(r["status"] == "ok" for r in kept)
    monkeypatch.setattr(scoring.Scorer, "rows", real_rows)
    separated = []
    real_run = systems.SVISystem.run
    monkeypatch.setattr(systems.SVISystem, "run",
                        lambda self, items: separated.extend(i.spec.id for i in items) or real_run(self, items))
    evaluate(root / "mix.csv", root / "model.pt", tmp_path, "universal", progress=False,
             overrides=BATCH_OF_THREE, examples=0)
    assert sorted(separated) == sorted(sp.id for sp in specs if sp.id not in calls[:2])
    assert ok_rows(tmp_path / "results.csv", "universal") == 5


def test_only_noise_recordings_stay_in_the_render_cache(setup):  # noqa: F811
    """Speech clips are read for each mixture; a cache of them would grow with the manifest."""
    _, specs = setup
    cache: dict = {}
    for spec in specs:
        render_mixture(spec, audio_cache=cache)
    assert {path for path, _ in cache} == {str(sp.noise.audio) for sp in specs}


def test_failed_mixtures_are_one_line_each_on_stderr(setup, tmp_path, monkeypatch):  # noqa: F811
    from pyro_avss.cli import main

    root, specs = setup
    real = systems.SVISystem.run

    def fragile(self, items):
        if any(i.spec.id == specs[1].id for i in items):
            raise FloatingPointError("separation loss became nan at step 2\nTrace Shapes: ...")
        return real(self, items)

    monkeypatch.setattr(systems.SVISystem, "run", fragile)
    args = ["evaluate", "--mixtures", str(root / "mix.csv"), "--model", str(root / "model.pt"),
            "--systems", "mixture,universal", "--out", str(tmp_path), "--quiet", "--examples", "0"]
    res = CliRunner().invoke(main, args + [a for s in FAST for a in ("--set", s)])
    assert res.exit_code == 1, res.output
    assert res.stderr == (f"error: {specs[1].id}: universal: FloatingPointError: separation loss "
                          "became nan at step 2\n")
    assert "universal: 4 ok, 0 skipped, 1 failed" in res.stdout


@pytest.mark.parametrize("limit", [0, -1])
def test_a_limit_below_one_is_refused(setup, tmp_path, limit):  # noqa: F811
    root, _ = setup
    with pytest.raises(harness.InputError, match=f"--limit: must be >= 1, got {limit}"):
        evaluate(root / "mix.csv", None, tmp_path / "out", "mixture", limit=limit, progress=False)
    assert not (tmp_path / "out").exists()
