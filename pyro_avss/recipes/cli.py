"""The recipes' commands of the ``pyro-avss`` command line: ``bench``, ``compare-mcem``, ``demo``,
``results`` and ``speaker-pool``.

:mod:`pyro_avss.cli` loads this module only when one of them is named (``--help`` lists them
too), so the library's commands never import a recipe. The options and error handling are the
command line's own (:func:`pyro_avss.cli.fail`: one ``error:`` line, status 2).
"""

from __future__ import annotations

from pathlib import Path

import click

from pyro_avss.cli import FAILURES, OUT_FOLDER, _csv_list, fail, set_threads, threads_option


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
@click.option("--banks", is_flag=True, help="instead of the grid: audio-only banks of K = 2, 11, 50 speakers "
                                            "with J = 1 and 2 sources (3-s clips)")
@click.option("--point", "points", multiple=True, metavar="FACTOR=VALUE,...",
              help="instead of the grid: this configuration (repeatable), e.g. components=4,sources=2; "
                   "factors not named take the base values (length_s=3, components=2, sources=1, batch=1)")
@click.option("--quiet", is_flag=True, help="no progress bar")
def bench(out, quick, device, long_minutes, long_components, threads, overrides, audio_only, data, banks,
          points, quiet):
    """Real-time factor and peak memory of separation versus length, K, J and batch size;
    writes OUT/bench.csv and OUT/bench.png (each configuration runs in its own process)."""
    from pyro_avss.recipes.bench import parse_point, run_bench

    try:
        rows = run_bench(out, quick=quick, devices=device, long_minutes=long_minutes,
                         long_components=long_components, threads=threads, overrides=overrides,
                         audio_only=audio_only, data=data, banks=banks, progress=not quiet,
                         points=[parse_point(p) for p in points])
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
@click.option("--workers", type=click.IntRange(min=1), default=1, show_default=True,
              help="processes that run the evaluations side by side (the models are trained first, in one)")
@click.option("--threads", type=click.IntRange(min=1), default=None,
              help="torch CPU threads in each process (default: torch's choice)")
@click.option("--only", multiple=True, metavar="PATTERN",
              help="run only the evaluations whose folder matches this shell pattern, e.g. 'eval_libri*' "
                   "(repeatable; the models are still all trained); the document is written once every "
                   "evaluation of the run is finished")
@click.option("--plan", is_flag=True,
              help="list every evaluation of the run and how far it is, then stop (trains and runs nothing)")
def results(out, data_root, doc, device, workers, threads, only, plan):
    """Train everything from the real corpora, evaluate all systems (MCEM included) on
    deterministic GRID and LibriSpeech dev mixtures and write docs/results.md. From scratch on 2
    CPU cores it takes about ten hours: about five to train the 23 models, five for the 231
    evaluations with --workers 2 --threads 1. A second invocation resumes where the first stopped
    (finished models and evaluations are reused). With --workers N the evaluations run N at a
    time, each process with --threads torch threads."""
    from pyro_avss.recipes.results.run import run_results

    command = "python cli.py results" + "".join(
        f" {flag} {value}" for flag, value, default in (
            ("--out", out, "runs/results"), ("--data", data_root, "../shared/data"),
            ("--doc", doc, "docs/results.md"), ("--device", device, "cpu"), ("--workers", workers, 1),
            ("--threads", threads, None)) if value != default)
    try:
        set_threads(threads)
        run_results(out, data_root, doc, device=device, workers=workers, threads=threads, only=only, plan=plan,
                    command=command, echo=click.echo)
    except FAILURES as exc:
        fail(exc)


# ----------------------------------------------------------------------------------------------
@click.command("compare-mcem")
@click.option("--model", required=True, type=click.Path(dir_okay=False), help="model file (.pt)")
@click.option("--mixtures", "manifests", required=True, multiple=True,
              help="one-talker mixture manifest, as CSV or LABEL=CSV (repeatable); MCEM's best "
                   "budget is chosen on the first, the others run that budget only")
@click.option("--out", required=True, type=OUT_FOLDER, help="output folder (one resumable evaluation per run)")
@click.option("--budgets", default="20,50,100", show_default=True, help="MCEM EM iteration budgets")
@click.option("--switches", default="iid,utterance", show_default=True,
              help="switch priors, each the same on both sides")
@click.option("--limit", type=click.IntRange(min=1), default=None, help="only the first N mixtures of each manifest")
@click.option("--device", default="cpu", show_default=True, help="auto, cpu or cuda")
@click.option("--set", "overrides", multiple=True,
              help="a further separate.k=v or mcem.k=v setting of every run (repeatable)")
@click.option("--doc", type=click.Path(dir_okay=False), default=None,
              help="also write the table as the 'MCEM like for like' section of this markdown file "
                   "(e.g. docs/results.md; the rest of the file is kept)")
@threads_option
@click.option("--quiet", is_flag=True, help="no progress bars")
def compare_mcem(model, manifests, out, budgets, switches, limit, device, overrides, doc, threads, quiet):
    """MCEM against our SVI like for like: the same switch prior on both sides, MCEM at several
    budgets, both systems in one run for each; prints the markdown table (also OUT/comparison.md)."""
    import shlex

    from pyro_avss.errors import InputError
    from pyro_avss.recipes.mcem_comparison import comparison_table, run_comparison, write_section

    try:
        set_threads(threads)
        try:
            budget_list = _csv_list(budgets, int)
        except ValueError:
            raise InputError("--budgets", f"expected comma-separated integers, got {budgets!r}") from None
        labelled = {}
        for item in manifests:
            label, _, path = item.rpartition("=")
            label = label or Path(path).stem
            if label in labelled:
                raise InputError("--mixtures", f"the label {label!r} is given twice (use LABEL=CSV)")
            labelled[label] = path
        results = run_comparison(model, labelled, out, budgets=budget_list or [],
                                 switches=_csv_list(switches) or [], limit=limit, device=device,
                                 overrides=overrides, progress=not quiet,
                                 echo=lambda line: click.echo(line, err=True))
        table = comparison_table(results)
        (Path(out) / "comparison.md").write_text(table + "\n")
        if doc:
            args = ["compare-mcem", "--model", model, *(a for m in manifests for a in ("--mixtures", m)),
                    "--out", out, *(a for s in overrides for a in ("--set", s))]
            for flag, value, default in (("--budgets", budgets, "20,50,100"), ("--limit", limit, None),
                                         ("--switches", switches, "iid,utterance"),
                                         ("--device", device, "cpu"), ("--threads", threads, None),
                                         ("--doc", doc, None)):
                args += [flag, str(value)] if value != default else []
            write_section(doc, results, "python cli.py " + shlex.join(args), overrides)
    except FAILURES as exc:
        fail(exc)
    click.echo(table)


# ----------------------------------------------------------------------------------------------
@click.command("speaker-pool")
@click.option("--out", default="runs/speaker_pool", show_default=True, type=click.Path(file_okay=False),
              help="where the corpus and the test mixtures go")
@click.option("--data", "data_root", default="../shared/data", show_default=True,
              type=click.Path(file_okay=False), help="the shared data (librispeech/train-clean-100, noise)")
@click.option("--speakers", type=click.IntRange(min=2), default=50, show_default=True,
              help="how many pool speakers")
@click.option("--snr", type=float, default=5.0, show_default=True, help="SNR of the test mixtures (dB)")
def speaker_pool(out, data_root, speakers, snr):
    """A corpus of many speakers from the LibriSpeech pool (each utterance cut into train / dev /
    test parts) and its test mixtures: identification (one talker) and two talkers."""
    from pyro_avss.recipes.speaker_pool import write_pool_corpus, write_test_mixtures

    try:
        corpus = write_pool_corpus(Path(data_root), Path(out), num_speakers=speakers)
        paths = write_test_mixtures(corpus, Path(data_root), Path(out), snr_db=snr)
    except FAILURES as exc:
        fail(exc)
    click.echo(f"corpus: {corpus} ({speakers} speakers)")
    for name, path in paths.items():
        click.echo(f"{name} mixtures: {path}")
