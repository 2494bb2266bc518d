"""The results run's evaluations in worker processes: the planner lists each evaluation once, the
pool runs them to the same results as one process, skips finished ones and passes errors on."""

from __future__ import annotations

import pickle

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


def test_the_whole_run_is_planned_without_running_anything(tmp_path, monkeypatch):
    """The run's own table functions under a planner: every evaluation once (the intact-lips rows
    read the folders of the main and switch tables), the main tables first, MCEM's last; no
    evaluation folder is made."""
    from pyro_avss.recipes.results import run
    from pyro_avss.recipes.results.experiments import (ABLATION_MODELS, LIP_CORRUPTIONS, LIPS_ROWS,
                                                       MULTI_TALKER_SYSTEMS, ONE_TALKER_SYSTEMS, SEED_MODELS)

    t = np.arange(SR // 4) / SR
    clips = []
    for i, speaker in enumerate(["s1", "s1", "s4", "s4"]):
        sf.write(tmp_path / f"{i}.wav", (0.3 * np.sin(2 * np.pi * (150 + 20 * i) * t)).astype(np.float32), SR)
        clips.append(Clip(f"{speaker}_{i}", speaker, tmp_path / f"{i}.wav", tmp_path / f"{i}.mp4"))
    specs = build_mixture_specs(clips, [("n", tmp_path / "0.wav")], [0.0])
    splits = ("1spk", "1spk_held", "1spk_noise_held", "libri", "libri_held", "2spk", "2spk_held", "3spk",
              "2spk_same", "2spk_same_held")
    manifests = {n: write_mixture_manifest(specs, tmp_path / f"mixtures_{n}.csv") for n in splits}
    names = ["grid", "libri", "grid_noisy", "libri_noisy", "grid_switching", "libri_switching", "memory",
             *(name for name, _, _ in ABLATION_MODELS), *(name for name, _ in SEED_MODELS)]
    models = {name: f"{name}.pt" for name in names}
    monkeypatch.setattr(run, "twins_model", lambda model: "twins.pt")
    facts = {f"mixtures_{n}": len(specs) for n in splits}
    planner = Planner()
    run._all_evaluations(manifests, models, facts, tmp_path / "out", planner, lambda text: None)
    jobs = planner.jobs
    assert not list((tmp_path / "out").glob("eval_*"))            # only the lips manifests were written
    assert jobs[0] == EvaluationJob(str(manifests["1spk"]), "grid.pt", str(tmp_path / "out" / "eval_1spk"),
                                    ONE_TALKER_SYSTEMS + ",mcem", ())
    assert jobs[5].systems == MULTI_TALKER_SYSTEMS and jobs[5].out.endswith("eval_2spk")
    assert [job.out.rsplit("/", 1)[1] for job in jobs[-3:]] == ["eval_equal_iterations", "eval_mcem_20",
                                                               "eval_mcem_50"]
    lips = [job for job in jobs if "_lips_" in job.manifest]       # the universal row shares the default's folder
    assert len(lips) == (len(LIPS_ROWS) - 1) * len(LIP_CORRUPTIONS) * len(run.LIPS_SPLITS)
    assert {job.systems for job in lips if "eval_1spk_lips_" in job.out} == {"switching,universal"}
    assert sum(job.out.endswith("eval_1spk") for job in jobs) == 1
