"""The evaluations of the results run, done in this process or by a pool of worker processes
(``cli.py results --workers N``).

The table functions of :mod:`.run` call an evaluator once for every (mixture set, model,
systems, settings) they need, each into its own folder, and tabulate the summaries it returns.
With several workers the run calls them twice. First with a :class:`Planner`, which only
records each call, so that the list of evaluations and its order are the tables' own and are
written down nowhere else; a pool of processes then runs every recorded evaluation into its
folder. Then with the ordinary :class:`Evaluator`: every evaluation is resumable
(:func:`~pyro_avss.evaluation.harness.evaluate` skips the mixtures its folder has results for),
so each call finds its folder finished and only reads it back. The figures are those of one
process: each evaluation is the same computation wherever it runs.
"""

from __future__ import annotations

import fnmatch
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from dataclasses import dataclass, replace
from multiprocessing import get_context
from pathlib import Path


@dataclass(frozen=True)
class EvaluationJob:
    """One evaluation: ``systems`` with ``overrides`` on the mixtures of ``manifest``, the
    results written into the folder ``out``."""

    manifest: str
    model: str | None
    out: str
    systems: str
    overrides: tuple[str, ...]


class Evaluator:
    """Runs one evaluation of the results run here and now and returns its summary."""

    def __init__(self, device: str):
        self.device = device

    def __call__(self, manifest, model, out, systems: str, overrides=()) -> dict | None:
        return run_job(_job(manifest, model, out, systems, overrides), self.device)


class Planner:
    """Records every evaluation it is asked for (:attr:`jobs`, in the order asked) instead of
    running it, and returns None for each. One folder is one job: asked for again with other
    systems on the same mixtures, model and settings (the lips table runs the switching and the
    universal systems into one folder, one after the other), the job runs them all; asked for
    with another mixture set, model or settings, it is an error, since both would write their
    rows into it."""

    def __init__(self):
        self._jobs: dict[str, EvaluationJob] = {}

    @property
    def jobs(self) -> list[EvaluationJob]:
        return list(self._jobs.values())

    def __call__(self, manifest, model, out, systems: str, overrides=()) -> None:
        job = _job(manifest, model, out, systems, overrides)
        known = self._jobs.setdefault(job.out, job)
        if replace(known, systems=job.systems) != job:
            raise ValueError(f"two evaluations of the results run write into {job.out}: {known} and {job}")
        more = [name for name in job.systems.split(",") if name not in known.systems.split(",")]
        if more:
            self._jobs[job.out] = replace(known, systems=",".join([known.systems, *more]))
        return None


def _job(manifest, model, out, systems, overrides) -> EvaluationJob:
    return EvaluationJob(str(manifest), None if model is None else str(model), str(out), systems,
                         tuple(overrides or ()))


def run_job(job: EvaluationJob, device: str) -> dict:
    """Run (or resume) ``job`` on ``device``; returns its summary."""
    from pyro_avss.evaluation.harness import evaluate

    return evaluate(job.manifest, job.model, job.out, job.systems, device=device,
                    overrides=list(job.overrides), progress=False)


def _start_worker(threads: int | None) -> None:
    if threads:
        import torch

        torch.set_num_threads(threads)


def _run_in_worker(job: EvaluationJob, device: str) -> str:
    run_job(job, device)
    return job.out


def run_jobs(jobs: list[EvaluationJob], workers: int, device: str, threads: int | None, say=print) -> None:
    """Run ``jobs`` in a pool of ``workers`` processes (spawned, ``threads`` torch threads each;
    None: torch's choice), handed out in their order as workers free up; with one worker, one
    after the other in this process. A job that raises stops
    the pool: the jobs not started are dropped, those running finish (each keeps its finished
    mixtures, like an interrupted run) and the error is raised again here.

    :raises ValueError: ``workers`` < 1.
    """
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    todo = [job for job in jobs if not is_finished(job)]
    say(f"{len(todo)} of {len(jobs)} evaluations to run, {workers} at a time")
    if not todo:
        return
    if workers == 1:                             # here, with this process's threads
        for k, job in enumerate(todo, 1):
            run_job(job, device)
            say(f"evaluation {k} of {len(todo)} done: {Path(job.out).name}")
        return
    pool = ProcessPoolExecutor(max_workers=workers, mp_context=get_context("spawn"),
                               initializer=_start_worker, initargs=(threads,))
    try:
        pending = {pool.submit(_run_in_worker, job, device) for job in todo}
        finished = 0
        while pending:
            done, pending = wait(pending, return_when=FIRST_COMPLETED)
            for future in done:
                out = future.result()            # raises the job's error
                finished += 1
                say(f"evaluation {finished} of {len(todo)} done: {Path(out).name}")
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def select_jobs(jobs: list[EvaluationJob], patterns) -> list[EvaluationJob]:
    """The ``jobs`` whose folder's name matches one of the shell-style ``patterns``
    (``eval_libri*``, :mod:`fnmatch`), in their order.

    :raises InputError: a pattern that matches no job's folder.
    """
    from pyro_avss.errors import InputError

    names = [Path(job.out).name for job in jobs]
    for pattern in patterns:
        if not fnmatch.filter(names, pattern):
            raise InputError("--only", f"{pattern!r} matches none of the run's {len(names)} evaluation folders "
                                       "(cli.py results --plan lists them)")
    return [job for job, name in zip(jobs, names) if any(fnmatch.fnmatch(name, p) for p in patterns)]


def job_state(job: EvaluationJob) -> str:
    """How far ``job`` is: ``"finished"``, ``"begun, N result rows"`` (running, or stopped: it
    resumes from there) or ``"not begun"``."""
    if is_finished(job):
        return "finished"
    results = Path(job.out) / "results.csv"
    if not results.exists():
        return "not begun"
    from pyro_avss.evaluation.results_csv import read_results

    return f"begun, {len(read_results(results))} result rows"


def plan_lines(jobs: list[EvaluationJob]) -> list[str]:
    """One line per job, its :func:`job_state` and its folder's name, and a last line that
    counts them."""
    states = [job_state(job) for job in jobs]
    width = max((len(state) for state in states), default=0)
    lines = [f"{state:<{width}}  {Path(job.out).name}" for job, state in zip(jobs, states)]
    begun = sum(state.startswith("begun") for state in states)
    return lines + [f"{states.count('finished')} of {len(jobs)} evaluations finished, {begun} begun (running, "
                    f"or stopped: they resume), {states.count('not begun')} not begun"]


def is_finished(job: EvaluationJob) -> bool:
    """Whether ``job``'s folder holds a summary written after its last results: an evaluation
    that returned (a stopped one is run again, and resumes)."""
    out = Path(job.out)
    summary, results = out / "summary.json", out / "results.csv"
    return summary.exists() and results.exists() and summary.stat().st_mtime >= results.stat().st_mtime
