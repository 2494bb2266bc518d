"""The results run's evaluations in worker processes: the planner lists each evaluation once, the
pool runs them to the same results as one process, skips finished ones and passes errors on."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from pyro_avss.data.clips import Clip
from pyro_avss.data.mixture_builder import build_mixture_specs
from pyro_avss.data.mixture_manifest import write_mixture_manifest
from pyro_avss.errors import InputError, SettingError
from pyro_avss.evaluation.results_csv import read_results
from pyro_avss.recipes.results import evaluations
from pyro_avss.recipes.results.evaluations import EvaluationJob, Evaluator, Planner, run_jobs

SR = 16000
SYSTEMS = "mixture,spectral-gating"           # model-free: the workers need no model file


@pytest.fixture(scope="module")
def manifest(tmp_path_factory):
    root = tmp_path_factory.mktemp("workers")
    t = np.arange(SR) / SR
    clips = []
    for i, f0 in enumerate((130.0, 210.0)):
        voice = sum(np.sin(2 * np.pi * f0 * h * t) / h for h in range(1, 6)) * (0.5 + 0.5 * np.sin(6 * np.pi * t))
        sf.write(root / f"v{i}.wav", (0.1 * voice).astype(np.float32), SR)
        clips.append(Clip(f"v{i}", f"spk{i}", root / f"v{i}.wav", None, "dev"))
    sf.write(root / "noise.wav", (0.05 * np.random.default_rng(0).normal(size=2 * SR)).astype(np.float32), SR)
    specs = build_mixture_specs(clips, [("white", root / "noise.wav")], [0.0, 5.0], seed=0)
    return write_mixture_manifest(specs, root / "mix.csv")


def test_the_planner_lists_each_folder_once_in_order_and_refuses_two_uses_of_one(tmp_path):
    """A folder asked for again is one job (its systems merged); other mixtures, model or
    settings in one folder are refused."""
    planner = Planner()
    assert planner("m.csv", "a.pt", tmp_path / "eval_1", "switching", ["separate.steps=4"]) is None
    planner("m.csv", None, tmp_path / "eval_2", "mixture")
    planner("m.csv", "a.pt", tmp_path / "eval_1", "switching", ("separate.steps=4",))   # asked again
    assert [job.out for job in planner.jobs] == [str(tmp_path / "eval_1"), str(tmp_path / "eval_2")]
    assert planner.jobs[0] == EvaluationJob("m.csv", "a.pt", str(tmp_path / "eval_1"), "switching",
                                            ("separate.steps=4",))
    planner("m.csv", "a.pt", tmp_path / "eval_1", "universal,switching", ["separate.steps=4"])
    assert planner.jobs[0].systems == "switching,universal"       # one folder: one job runs both
    with pytest.raises(ValueError, match="eval_1"):
        planner("m.csv", "a.pt", tmp_path / "eval_1", "switching", ["separate.steps=8"])
    with pytest.raises(ValueError, match="eval_1"):
        planner("other.csv", "a.pt", tmp_path / "eval_1", "switching", ["separate.steps=4"])
    assert not (tmp_path / "eval_1").exists()                     # nothing was run


def test_two_workers_give_the_results_of_one_process(manifest, tmp_path):
    jobs = [EvaluationJob(str(manifest), None, str(tmp_path / f"pool_{i}"), SYSTEMS, ()) for i in range(3)]
    said = []
    run_jobs(jobs, 2, "cpu", 1, said.append)
    assert said[0] == "3 of 3 evaluations to run, 2 at a time" and len(said) == 4
    here = Evaluator("cpu")(manifest, None, tmp_path / "here", SYSTEMS)
    assert set(here["systems"]) == set(SYSTEMS.split(","))
    expected = read_results(tmp_path / "here" / "results.csv")
    assert len(expected) == 4 * 2                   # 2 clips x 2 SNRs, 2 systems
    for i in range(3):
        rows = read_results(tmp_path / f"pool_{i}" / "results.csv")
        assert [(r["id"], r["system"]) for r in rows] == [(r["id"], r["system"]) for r in expected]
        for a, b in zip(rows, expected):
            assert a["status"] == "ok" and a["si_sdri"] == pytest.approx(b["si_sdri"], abs=1e-6)


def test_finished_evaluations_are_not_handed_to_a_worker(manifest, tmp_path, monkeypatch):
    job = EvaluationJob(str(manifest), None, str(tmp_path / "done"), "mixture", ())
    Evaluator("cpu")(job.manifest, None, job.out, job.systems)

    def no_pool(*args, **kwargs):
        raise AssertionError("a pool was started for finished evaluations")

    monkeypatch.setattr(evaluations, "ProcessPoolExecutor", no_pool)
    said = []
    run_jobs([job], 2, "cpu", 1, said.append)
    assert said == ["0 of 1 evaluations to run, 2 at a time"]


def test_each_evaluation_is_reported_when_it_finishes_not_when_all_have(tmp_path, monkeypatch):
    """The second job waits until the first one's end has been said: a pool that reported only
    once all jobs were done would leave it waiting (threads stand in for processes here)."""
    import threading
    from concurrent.futures import ThreadPoolExecutor

    first_said = threading.Event()

    def fake_run(job, device):
        if job.out.endswith("second") and not first_said.wait(timeout=20):
            raise AssertionError("the first evaluation's end was not reported while the second ran")
        return job.out

    def thread_pool(max_workers, mp_context, initializer, initargs):
        return ThreadPoolExecutor(max_workers=max_workers, initializer=initializer, initargs=initargs)

    monkeypatch.setattr(evaluations, "_run_in_worker", fake_run)
    monkeypatch.setattr(evaluations, "ProcessPoolExecutor", thread_pool)
    said = []

    def say(text):
        said.append(text)
        if text.endswith(": first"):
            first_said.set()

    jobs = [EvaluationJob("m.csv", None, str(tmp_path / name), "mixture", ()) for name in ("first", "second")]
    run_jobs(jobs, 2, "cpu", None, say)
    assert said[1:] == ["evaluation 1 of 2 done: first", "evaluation 2 of 2 done: second"]


def test_a_worker_s_error_reaches_the_caller_as_it_was_raised(manifest, tmp_path):
    bad = EvaluationJob(str(tmp_path / "missing.csv"), None, str(tmp_path / "bad"), "mixture", ())
    with pytest.raises(InputError, match="missing.csv"):
        run_jobs([bad], 2, "cpu", 1, lambda text: None)
    with pytest.raises(ValueError, match="workers"):
        run_jobs([bad], 0, "cpu", 1, lambda text: None)


def test_input_errors_survive_pickling_with_their_parts():
    for error in (InputError("a.csv", "no such file"), SettingError("separate.lr", "must be > 0, got -1")):
        copy = pickle.loads(pickle.dumps(error))
        assert type(copy) is type(error) and str(copy) == str(error) and copy.source == error.source


SPLITS = ("1spk", "1spk_held", "1spk_noise_held", "libri", "libri_held", "2spk", "2spk_held", "3spk",
          "2spk_same", "2spk_same_held")


def _tiny_specs(tmp_path):
    """Four quarter-second GRID-like clips in one noise at 0 dB: a mixture set for every split."""
    t = np.arange(SR // 4) / SR
    clips = []
    for i, speaker in enumerate(["s1", "s1", "s4", "s4"]):
        sf.write(tmp_path / f"{i}.wav", (0.3 * np.sin(2 * np.pi * (150 + 20 * i) * t)).astype(np.float32), SR)
        clips.append(Clip(f"{speaker}_{i}", speaker, tmp_path / f"{i}.wav", tmp_path / f"{i}.mp4"))
    return build_mixture_specs(clips, [("n", tmp_path / "0.wav")], [0.0])


def test_the_whole_run_is_planned_without_running_anything(tmp_path):
    """The run's own table functions under a planner: every evaluation once (the intact-lips rows
    read the folders of the main and switch tables), the main tables first, MCEM's last; no
    evaluation folder is made, and every model it names is one of :func:`run.model_paths`."""
    from pyro_avss.recipes.results import run
    from pyro_avss.recipes.results.experiments import (LIP_CORRUPTIONS, LIPS_ROWS, LIPS_SPLITS,
                                                       MULTI_TALKER_SYSTEMS, ONE_TALKER_SYSTEMS)

    specs = _tiny_specs(tmp_path)
    manifests = {n: write_mixture_manifest(specs, tmp_path / f"mixtures_{n}.csv") for n in SPLITS}
    models = run.model_paths(tmp_path / "models")
    facts = {f"mixtures_{n}": len(specs) for n in SPLITS}
    planner = Planner()
    run._all_evaluations(manifests, models, facts, tmp_path / "out", planner, lambda text: None)
    jobs = planner.jobs
    assert not list((tmp_path / "out").glob("eval_*"))            # only the lips manifests were written
    grid = str(tmp_path / "models" / "grid_speakers" / "model.pt")
    assert jobs[0] == EvaluationJob(str(manifests["1spk"]), grid, str(tmp_path / "out" / "eval_1spk"),
                                    ONE_TALKER_SYSTEMS + ",mcem", ())
    assert jobs[5].systems == MULTI_TALKER_SYSTEMS and jobs[5].out.endswith("eval_2spk")
    assert [job.out.rsplit("/", 1)[1] for job in jobs[-3:]] == ["eval_equal_iterations", "eval_mcem_20",
                                                               "eval_mcem_50"]
    lips = [job for job in jobs if "_lips_" in job.manifest]       # the universal row shares the default's folder
    assert len(lips) == (len(LIPS_ROWS) - 1) * len(LIP_CORRUPTIONS) * len(LIPS_SPLITS)
    assert {job.systems for job in lips if "eval_1spk_lips_" in job.out} == {"switching,universal"}
    assert sum(job.out.endswith("eval_1spk") for job in jobs) == 1
    assert {job.model for job in jobs} <= {str(path) for path in models.values()} | {None}
    assert str(models["twins"]) in {job.model for job in lips}     # the audio-only twins' rows


def test_only_runs_the_evaluations_it_names_and_writes_no_document_while_others_are_left(tmp_path, monkeypatch):
    """``cli.py results --only``: the models are trained as always, only the matching evaluations
    run, and the document waits for the rest; a pattern that matches nothing is refused before
    anything is run."""
    import pyro_avss.data.prepared as prepared
    from pyro_avss.recipes.results import run

    specs = _tiny_specs(tmp_path)
    monkeypatch.setattr(prepared, "prepared_rows", lambda *a, **k: [])
    monkeypatch.setattr(run, "_train_and_score", lambda m, *a: run.model_paths(m))
    monkeypatch.setattr(run, "dev_mixtures", lambda data_root, noise: {n: specs for n in SPLITS})
    ran = []
    monkeypatch.setattr(run, "run_jobs", lambda jobs, *a: ran.extend(Path(job.out).name for job in jobs))
    said = []
    doc = tmp_path / "results.md"
    assert run.run_results(tmp_path / "out", tmp_path, doc, only=("eval_libri*", "eval_3spk"), echo=said.append) is None
    assert all(name.startswith("eval_libri") or name == "eval_3spk" for name in ran)
    assert {"eval_libri", "eval_libri_held", "eval_3spk"} <= set(ran) and not doc.exists()
    assert "evaluations are not finished" in said[-1] and "without --only" in said[-1]
    ran.clear()
    with pytest.raises(InputError, match="eval_lbri"):
        run.run_results(tmp_path / "out", tmp_path, doc, only=("eval_lbri*",), echo=said.append)
    assert not ran


def test_plan_says_how_far_each_evaluation_is(tmp_path):
    from pyro_avss.evaluation.results_csv import write_results
    from pyro_avss.recipes.results.evaluations import job_state, plan_lines, select_jobs

    jobs = [EvaluationJob("m.csv", None, str(tmp_path / name), "mixture", ())
            for name in ("eval_done", "eval_stopped", "eval_new")]
    rows = [{"id": f"mix{i}", "system": "mixture", "source": 1.0, "status": "ok"} for i in range(3)]
    for name, n in (("eval_done", 3), ("eval_stopped", 2)):
        (tmp_path / name).mkdir()
        write_results(tmp_path / name / "results.csv", rows[:n])
    (tmp_path / "eval_done" / "summary.json").write_text("{}")      # written after its results: returned
    assert [job_state(job) for job in jobs] == ["finished", "begun, 2 result rows", "not begun"]
    lines = plan_lines(jobs)
    assert lines[0].split() == ["finished", "eval_done"] and lines[2].split() == ["not", "begun", "eval_new"]
    assert lines[-1] == "1 of 3 evaluations finished, 1 begun (running, or stopped: they resume), 1 not begun"
    assert [Path(job.out).name for job in select_jobs(jobs, ["eval_new", "*stop*"])] == ["eval_stopped", "eval_new"]


def test_one_worker_runs_the_evaluations_here_without_a_pool(manifest, tmp_path, monkeypatch):
    def no_pool(*args, **kwargs):
        raise AssertionError("a pool was started for one worker")

    monkeypatch.setattr(evaluations, "ProcessPoolExecutor", no_pool)
    said = []
    run_jobs([EvaluationJob(str(manifest), None, str(tmp_path / "one"), "mixture", ())], 1, "cpu", None, said.append)
    assert said == ["1 of 1 evaluations to run, 1 at a time", "evaluation 1 of 1 done: one"]
    assert len(read_results(tmp_path / "one" / "results.csv")) == 4
