"""pyro_avss command line (``pyro-avss``; ``python cli.py`` in a source checkout): prepare,
fit, separate, mix, evaluate; score and pitch-ranges (model files); compare-mcem, bench, demo,
results and speaker-pool (recipes).

Every command prints a one-line error naming the file and the problem when an input is unusable
(exit status 2); batch commands (separate, evaluate, prepare) report each failed input on one
line, go on with the rest and exit with status 1 when any input failed.

``fit`` and ``separate`` are thin layers over :func:`pyro_avss.api.fit` and
:class:`pyro_avss.api.Separator`'s pieces, the Python entry points. ``bench``, ``demo`` and
``results`` are the recipes' commands (:mod:`pyro_avss.recipes.cli`), ``score`` and ``pitch-ranges``
the model files' (:mod:`pyro_avss.model_commands`); both are loaded when named.
"""

from __future__ import annotations

import sys
from pathlib import Path

import click

from pyro_avss import quick_exit
from pyro_avss.errors import PyroAvssError, TrainingDiverged
from pyro_avss.inference.distributed import ranked
from pyro_avss.log import log_to_console

DETECTORS = ["auto", "mediapipe", "haar", "roi"]
SET_HELP = "override a config key, e.g. --set train.lr=1e-3 (repeatable)"
OUT_FOLDER = click.Path()
"""``--out`` of the commands that check it themselves (:func:`~pyro_avss.errors.writable_folder`):
a file or an unwritable folder there is one ``error:`` line, not click's usage text."""


def threads_option(f):
    """``--threads N``: torch CPU threads (on a busy machine, 1 avoids oversubscription)."""
    return click.option("--threads", type=click.IntRange(min=1), default=None,
                        help="torch CPU threads (default: torch's choice)")(f)


def set_threads(threads: int | None) -> None:
    if threads:
        import torch

        torch.set_num_threads(threads)


def _examples(value: str):
    """``--examples``: a count (>= 0) or ``all``."""
    if str(value).strip().lower() == "all":
        return "all"
    try:
        count = int(value)
    except ValueError:
        count = -1
    if count < 0:
        raise click.BadParameter(f"expected a number >= 0 or 'all', got {value!r}")
    return count


FAILURES = (PyroAvssError, OSError)
"""What a command reports in one line (status 2) instead of a traceback: our deliberate errors
and the system's (a folder that cannot be written, a full disk), which name their file."""


def fail(exc: Exception) -> None:
    """Say ``exc`` in one ``error:`` line on stderr; exit with status 2 (could not start), 1 for a diverged run."""
    click.echo(f"error: {' '.join(str(exc).split())}", err=True)
    sys.exit(1 if isinstance(exc, TrainingDiverged) else 2)


RECIPE_COMMANDS = ("bench", "compare-mcem", "demo", "results", "speaker-pool")
"""Commands of the recipes (:mod:`pyro_avss.recipes.cli`), imported only when named (or listed
by ``--help``): the library's own commands never load a recipe."""
MODEL_COMMANDS = ("pitch-ranges", "score")
"""Commands on model files (:mod:`pyro_avss.model_commands`), likewise imported when named."""


ARGV: list[str] = []              # the command's arguments, which --nproc starts N times


class _OneLineErrors(click.Group):
    """The command group, with click's own refusals (an unknown option, a value outside its
    choices) said in one ``error:`` line, status 2, like every other refusal of the commands,
    instead of click's usage text. Help (``--help``, or no command at all) is unchanged. The
    recipes' and the model files' commands (:data:`RECIPE_COMMANDS`, :data:`MODEL_COMMANDS`)
    are loaded on first use."""

    def list_commands(self, ctx):
        return sorted([*super().list_commands(ctx), *RECIPE_COMMANDS, *MODEL_COMMANDS])

    def get_command(self, ctx, name):
        if name in RECIPE_COMMANDS:
            from pyro_avss.recipes import cli as commands
        elif name in MODEL_COMMANDS:
            from pyro_avss import model_commands as commands
        else:
            return super().get_command(ctx, name)
        return getattr(commands, name.replace("-", "_"))

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):
        ARGV[:] = sys.argv[1:] if args is None else list(args)
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, False, **extra)
        try:
            status = super().main(args, prog_name, complete_var, False, **extra)
        except click.exceptions.NoArgsIsHelpError as exc:
            exc.show()
            sys.exit(exc.exit_code)
        except click.UsageError as exc:
            click.echo(f"error: {' '.join(exc.format_message().split())}", err=True)
            sys.exit(exc.exit_code)
        except click.ClickException as exc:
            exc.show()
            sys.exit(exc.exit_code)
        except click.Abort:
            click.echo("Aborted!", err=True)
            sys.exit(1)
        sys.exit(status if isinstance(status, int) else 0)


@click.group(cls=_OneLineErrors, context_settings={"help_option_names": ["-h", "--help"]})
def main():
    """Audio-visual speech separation with switching VAEs (Pyro)."""
    log_to_console()                # the library's progress (stdout) and notices (stderr)


# ----------------------------------------------------------------------------------------------
@main.command()
@click.argument("corpus")
@click.option("--out", required=True, type=click.Path(file_okay=False), help="output folder")
@click.option("--detector", default="auto", show_default=True,
              type=click.Choice(DETECTORS), help="lip detector")
@click.option("--workers", type=int, default=None, help="processes (default: all cores)")
@click.option("--roi-size", type=int, default=64, show_default=True)
def prepare(corpus, out, detector, workers, roi_size):
    """Scan CORPUS (GRID folders, GRID distribution, speaker folders or a manifest CSV), extract
    and cache lip features, write OUT/manifest.csv and OUT/failures.csv. Resumes: clips already
    cached are skipped."""
    from pyro_avss.data.corpora import scan_corpus
    from pyro_avss.data.prepare import prepare_corpus

    try:
        clips, problems = scan_corpus(corpus)
        for p in problems:
            click.echo(f"skipped: {p}", err=True)
        report = prepare_corpus(clips, out, detector=detector, workers=workers,
                                roi_size=roi_size, problems=problems)
    except FAILURES as exc:
        fail(exc)
    click.echo(report.summary())
    for f in report.failures:
        click.echo(f"failed: {f['id']}: {f['reason']}", err=True)
    if report.failures:
        sys.exit(1)


# ----------------------------------------------------------------------------------------------
@main.command()
@click.option("--config", "config_path", type=click.Path(dir_okay=False), metavar="NAME|FILE",
              help="YAML config file, or the name of a packaged one (grid_universal, grid_speakers, grid_speakers_av_ao, "
                   "grid_switching_unlabelled, grid_noisy_encoder, librispeech_universal, librispeech_speakers, librispeech_"
                   "switching_unlabelled, librispeech_noisy_encoder, librispeech_pool_speakers after `speaker-pool`); "
                   "paths inside it are relative to the current folder")
@click.option("--set", "overrides", multiple=True, help=SET_HELP)
@click.option("--out", required=True, type=OUT_FOLDER, help="output folder")
@click.option("--device", default="auto", show_default=True, help="auto, cpu or cuda")
@click.option("--seed", type=int, default=None, help="random seed (train.seed)")
@click.option("--resume", is_flag=True, help="continue an interrupted run in --out")
@threads_option
@ranked
def fit(config_path, overrides, out, device, seed, resume, threads):
    """Train a speech model (universal, speaker decoders, switching VAE or noisy encoder) as
    configured; --nproc N (or torchrun): N processes share each mini-batch (data parallel, gloo)."""
    from pyro_avss.api import fit as run_fit
    from pyro_avss.inference.distributed import Ranks, process_group, rank_threads

    try:
        ranks = Ranks.from_env()
        set_threads(rank_threads(threads, ranks))
        with process_group(ranks):
            models = run_fit(config_path, out, list(overrides), device, resume=resume, seed=seed)
    except FAILURES as exc:
        fail(exc)
    if ranks.main:
        click.echo(f"model: {Path(out) / 'model.pt'} ({models.decoders.num_components} components: "
                   f"{models.component_summary()})")


# ----------------------------------------------------------------------------------------------
@main.command()
@click.option("--model", required=True, type=click.Path(dir_okay=False), help="model file (.pt)")
@click.option("--mixture", "inputs", required=True, multiple=True,
              help="mixture file, folder, glob or CSV manifest (repeatable)")
@click.option("--video", "videos", multiple=True,
              help="video (or prepared lip cache .npz) of each source, in order (repeatable)")
@click.option("--sources", type=int, default=1, show_default=True,
              help="number of sources for inputs without video")
@click.option("--out", required=True, type=OUT_FOLDER, help="output folder")
@click.option("--set", "overrides", multiple=True, help="override a separate.* setting, e.g. --set separate.steps=300")
@click.option("--device", default="auto", show_default=True, help="auto, cpu or cuda")
@click.option("--resample", is_flag=True, help="resample inputs whose rate differs from the model's")
@click.option("--force", is_flag=True, help="replace existing outputs")
@click.option("--skip-existing", is_flag=True,
              help="keep complete existing outputs and separate the rest (resume a batch)")
@click.option("--detector", default=None, type=click.Choice(DETECTORS),
              help="lip detector (default: the one the model was trained with)")
@click.option("--figure/--no-figure", default=True, show_default=True,
              help="write separation.png (for a short clip it takes longer than the separation)")
@click.option("--report", is_flag=True,
              help="also write OUT/report.html, a listening page with players and figures of every input")
@click.option("--quiet", is_flag=True, help="no progress bars")
@threads_option
@ranked
def separate(model, inputs, videos, sources, out, overrides, device, resample, force, skip_existing,
             detector, figure, report, quiet, threads):
    """Separate each mixture into source1..J.wav, noise.wav, switch_posterior.csv and, unless
    --no-figure, separation.png; with --report also OUT/report.html (a listening page for all
    inputs).

    With several inputs each gets its folder OUT/<id or file stem>, written as soon as it is
    done; a failed input is reported on one line and the others go on (exit status 1). With
    --nproc N (or under torchrun) N processes share the batches: the outputs are those of one
    process."""
    quick_exit.allow()              # every output is written and closed when it returns
    from pyro_avss.api import MAX_SOURCES, Separator, separation_settings
    from pyro_avss.checkpoint import SpeechModels
    from pyro_avss.inference.distributed import Ranks, process_group, rank_device, rank_threads
    from pyro_avss.inference.run_separate import jobs_from_inputs, run_jobs

    try:
        # `--set` here has always accepted any known key (only separate.* ones matter); every
        # value is checked before the model is even read
        settings = separation_settings(overrides, strict=False, source="--set")
        ranks = Ranks.from_env()
        set_threads(rank_threads(threads, ranks))
        models = SpeechModels.load(model)
        sep = Separator(models, settings, device, detector)
        if not 1 <= (len(videos) or sources) <= MAX_SOURCES:
            raise PyroAvssError(f"--sources/--video: 1 to {MAX_SOURCES} sources are supported")
        jobs, problems = jobs_from_inputs(list(inputs), list(videos), sources)
    except FAILURES as exc:
        fail(exc)
    for where, why in problems if ranks.main else ():
        click.echo(f"error: {where}: {why}", err=True)
    try:
        with process_group(ranks):
            outcome = run_jobs(models, jobs, Path(out), sep.settings,
                               device=rank_device(sep.device, ranks), resample=resample, force=force,
                               skip_existing=skip_existing, detector=sep.detector,
                               progress=not quiet and ranks.main,
                               echo=lambda line: click.echo(line, err=True), figure=figure,
                               report=report, ranks=ranks)
    except FAILURES as exc:
        fail(exc)
    total = len(jobs) + len(problems)
    if not ranks.main:
        sys.exit(1 if outcome.failures or problems else 0)
    click.echo(f"separated {len(outcome.done)} of {total} input(s) into {out}"
               + (f" ({len(outcome.skipped)} kept from an earlier run)" if outcome.skipped else "")
               + (f"; {len(outcome.failures) + len(problems)} failed" if outcome.failures or problems else ""))
    if outcome.failures or problems:
        sys.exit(1)

# ----------------------------------------------------------------------------------------------
@main.command()
@click.option("--systems", required=True,
              help="comma-separated: mixture, spectral-gating, log-mmse, rnnoise, deepfilternet, "
                   "nmf, universal, oracle-speaker, switching, mcem, mcem-oracle, mcem-universal "
                   "(rnnoise and deepfilternet need pip install pyro_avss[enhancers])")
@click.option("--mixtures", required=True, type=click.Path(dir_okay=False), help="mixture manifest CSV")
@click.option("--model", type=click.Path(dir_okay=False), help="model file (.pt)")
@click.option("--out", required=True, type=OUT_FOLDER, help="output folder (resumable)")
@click.option("--limit", type=int, default=None, help="only the first N mixtures")
@click.option("--device", default="auto", show_default=True, help="auto, cpu or cuda")
@click.option("--set", "overrides", multiple=True,
              help="override a setting: separate.k=v, mcem.k=v or data.k=v (repeatable)")
@click.option("--examples", default="1", show_default=True, callback=lambda ctx, p, v: _examples(v),
              help="mixtures per condition (talkers x SNR x noise) whose audio and figures "
                   "report.html keeps; 'all' keeps every mixture")
@click.option("--interleave", is_flag=True,
              help="the systems take turns every batch of mixtures instead of one after the other "
                   "(their run times then see the same load on a shared machine)")
@threads_option
@click.option("--quiet", is_flag=True, help="no progress bar")
def evaluate(systems, mixtures, model, out, limit, device, overrides, examples, interleave, threads, quiet):
    """Run SYSTEMS on the mixtures of a manifest; write OUT/results.csv (per utterance),
    summary.json, results.md, plots and the listening report report.html. Re-running continues
    where it stopped."""
    from pyro_avss.evaluation.harness import evaluate as run_evaluation

    try:
        set_threads(threads)
        summary = run_evaluation(mixtures, model, out, systems, limit=limit, device=device,
                                 overrides=overrides, examples=examples, progress=not quiet,
                                 echo=lambda line: click.echo(line, err=True), interleave=interleave)
    except FAILURES as exc:
        fail(exc)
    for name, s in summary["systems"].items():
        click.echo(f"{name}: {s['ok']} ok, {s['skipped']} skipped, {s['failed']} failed")
    for J, group in summary["like_for_like"]["groups"].items():
        means = ", ".join(f"{n} {group['all']['mean'][n]['si_sdri']:.2f}" for n in group["systems"]
                          if group["all"]["mean"][n]["si_sdri"] is not None)
        click.echo(f"SI-SDRi (dB), {J} talker(s), {group['common']} mixtures common to all "
                   f"systems: {means or 'n/a'}")
    click.echo(f"results: {Path(out) / 'results.md'}, {Path(out) / 'report.html'}")
    if any(s["failed"] for s in summary["systems"].values()):
        sys.exit(1)


# ----------------------------------------------------------------------------------------------
def _csv_list(text, cast=str):
    return [cast(x) for x in text.split(",") if x.strip()] if text else None


@main.command()
@click.option("--targets", required=True, help="corpus of target utterances (any layout prepare reads)")
@click.option("--noise", "noise_path", required=True, help="folder of noise recordings or a CSV (name, audio)")
@click.option("--out", required=True, type=click.Path(dir_okay=False), help="mixture manifest CSV to write")
@click.option("--split", default="dev", show_default=True, help="split of the targets")
@click.option("--speakers", default=None, help="comma-separated target speakers (default: all)")
@click.option("--per-speaker", type=int, default=None, help="at most this many targets per speaker")
@click.option("--snr", default="-5,0,5", show_default=True, help="comma-separated SNRs (dB)")
@click.option("--num-interferers", type=int, default=0, show_default=True, help="competing speakers per mixture")
@click.option("--interferers", default=None, help="corpus of competing speakers (default: --targets)")
@click.option("--sir", type=float, default=0.0, show_default=True, help="target-to-interferer ratio (dB)")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--lips", default="intact", show_default=True,
              help="corrupt the target's lips when separating: missing:F, noise:F or swap:F (a fraction "
                   "F of the video frames, in blocks; swap: lips of another clip of the speaker)")
@click.option("--materialise", type=click.Path(file_okay=False), help="also write the mixtures as wav files here")
@click.option("--force", is_flag=True, help="overwrite an existing manifest")
def mix(targets, noise_path, out, split, speakers, per_speaker, snr, num_interferers, interferers, sir,
        seed, lips, materialise, force):
    """Build a deterministic mixture manifest (targets + optional competing speakers + noise at
    the given SNRs); the references are kept for scoring with `evaluate`."""
    from pyro_avss.data.corpora import scan_corpus
    from pyro_avss.data.lip_corruption import corrupt_target_lips
    from pyro_avss.data.mixture_builder import build_mixture_specs
    from pyro_avss.data.mixture_manifest import write_mixture_manifest
    from pyro_avss.data.mixtures import materialise as write_wavs
    from pyro_avss.data.selection import read_noises, select_clips

    try:
        clips, _ = scan_corpus(targets)
        chosen = select_clips(clips, split, _csv_list(speakers), per_speaker)
        if not chosen:
            raise PyroAvssError(f"{targets}: no clips in split {split!r} for those speakers")
        pool = select_clips(scan_corpus(interferers)[0], split) if interferers else select_clips(clips, split)
        specs = build_mixture_specs(chosen, read_noises(noise_path), _csv_list(snr, float),
                                    interferers=pool, num_interferers=num_interferers, sir_db=sir, seed=seed)
        specs = corrupt_target_lips(specs, lips, donors=select_clips(clips, split))
        write_mixture_manifest(specs, out, overwrite=force)
        if materialise:
            write_wavs(specs, materialise, overwrite=force)
    except FAILURES as exc:
        fail(exc)
    click.echo(f"{len(specs)} mixtures written to {out}")


if __name__ == "__main__":
    main()
