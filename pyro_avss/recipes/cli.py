"""The recipes' commands of the ``pyro-avss`` command line: ``bench``, ``demo`` and ``results``.

:mod:`pyro_avss.cli` loads this module only when one of them is named (``--help`` lists them
too), so the library's commands never import a recipe. The options and error handling are the
command line's own (:func:`pyro_avss.cli.fail`: one ``error:`` line, status 2).
"""

from __future__ import annotations

from pathlib import Path

import click

from pyro_avss.cli import FAILURES, fail, set_threads, threads_option


# ----------------------------------------------------------------------------------------------
@click.command()
@click.option("--out", required=True, type=click.Path(file_okay=False), help="output folder")
@click.option("--quick", is_flag=True, help="small grid")
@click.option("--device", default="auto", show_default=True, help="auto (cpu + cuda if present), cpu, cuda or a list")
@click.option("--long-minutes", type=float, default=None,
              help="also measure peak memory on one J=1 recording of this many minutes")
@click.option("--long-components", type=int, default=2, show_default=True, help="K of the long run")
@click.option("--threads", type=click.IntRange(min=1), default=None, help="torch CPU threads in each worker")
@click.option("--set", "overrides", multiple=True, help="override a separate.* setting (default: separate.tol=0)")
@click.option("--audio-only", is_flag=True, help="audio-only models (default: audio-visual)")
@click.option("--data", type=click.Path(file_okay=False), default=None,
              help="shared data folder with grid/ and noise/ (default: ../shared/data; synthetic audio if absent)")
@click.option("--quiet", is_flag=True, help="no progress bar")
def bench(out, quick, device, long_minutes, long_components, threads, overrides, audio_only, data, quiet):
    """Real-time factor and peak memory of separation versus length, K, J and batch size;
    writes OUT/bench.csv and OUT/bench.png (each configuration runs in its own process)."""
    from pyro_avss.recipes.bench import run_bench

    try:
        rows = run_bench(out, quick=quick, devices=device, long_minutes=long_minutes,
                         long_components=long_components, threads=threads, overrides=overrides,
                         audio_only=audio_only, data=data, progress=not quiet)
    except FAILURES as exc:
        fail(exc)
    failed = [r for r in rows if r.get("error")]
    for r in failed:
        click.echo(f"failed: {r['device']} L={r['length_s']} K={r['components']} J={r['sources']} "
                   f"B={r['batch']}: {r['error']}", err=True)
    click.echo(f"{len(rows) - len(failed)} of {len(rows)} configurations measured: {Path(out) / 'bench.csv'}")


# ----------------------------------------------------------------------------------------------
@click.command()
@click.option("--workdir", default="demo_run", show_default=True, type=click.Path(file_okay=False),
              help="where the demo writes everything")
@click.option("--small", is_flag=True, help="a reduced size (used by the tests)")
@click.option("--force", is_flag=True, help="start again in a non-empty --workdir")
@click.option("--device", default="auto", show_default=True, help="auto, cpu or cuda")
@click.option("--quiet", is_flag=True, help="no progress bars")
def demo(workdir, small, force, device, quiet):
    """Run the whole pipeline (prepare, fit, separate, evaluate) on a synthetic audio-visual
    corpus that the demo generates itself; prints a results table and where the outputs are."""
    from pyro_avss.recipes.demo.run import run_demo

    try:
        run_demo(workdir, small=small, force=force, device=device, progress=not quiet, echo=click.echo)
    except FAILURES as exc:
        fail(exc)


# ----------------------------------------------------------------------------------------------
@click.command()
@click.option("--out", default="runs/results", show_default=True, type=click.Path(file_okay=False))
@click.option("--data", "data_root", default="../shared/data", show_default=True,
              type=click.Path(file_okay=False), help="the real corpora (GRID, LibriSpeech, noise)")
@click.option("--doc", default="docs/results.md", show_default=True, type=click.Path(dir_okay=False))
@click.option("--device", default="cpu", show_default=True, help="auto, cpu or cuda")
@threads_option
def results(out, data_root, doc, device, threads):
    """Train everything from the real corpora, evaluate all systems (MCEM included) on
    deterministic GRID dev mixtures and write docs/results.md (about an hour on 2 CPU cores)."""
    from pyro_avss.recipes.results.run import run_results

    command = "python cli.py results" + "".join(
        f" {flag} {value}" for flag, value, default in (
            ("--out", out, "runs/results"), ("--data", data_root, "../shared/data"),
            ("--doc", doc, "docs/results.md"), ("--device", device, "cpu"),
            ("--threads", threads, None)) if value != default)
    try:
        set_threads(threads)
        run_results(out, data_root, doc, device=device, command=command, echo=click.echo)
    except FAILURES as exc:
        fail(exc)
