"""The model-file commands of the ``pyro-avss`` command line: ``score`` (how well each component
of a model explains each speaker's clips, and how a switch trained without labels clusters them)
and ``pitch-ranges`` (read the components' pitch ranges into a model file written before ``fit``
kept them).

:mod:`pyro_avss.cli` loads this module when one of them is named; the options and the error
handling are the command line's own (:func:`pyro_avss.cli.fail`: one ``error:`` line, status 2).
"""

from __future__ import annotations

from pathlib import Path

import click

from pyro_avss.cli import FAILURES, fail
from pyro_avss.errors import PyroAvssError

SET_DATA_HELP = ("override a data.* setting of the model's fit, e.g. --set data.corpora=[../shared/data/grid] "
                 "where its corpora now live elsewhere (repeatable)")


# ----------------------------------------------------------------------------------------------
@click.command()
@click.option("--model", required=True, type=click.Path(dir_okay=False), help="model file (.pt)")
@click.option("--corpus", "corpora", multiple=True,
              help="corpus to score (default: the corpora the model was trained on)")
@click.option("--split", default="dev", show_default=True, help="split to score")
@click.option("--clusters", "--purity", "clusters", is_flag=True,
              help="also score the switch's clustering of clips (balanced accuracy and NMI; for "
                   "switching models trained without labels)")
@click.option("--cache", default="cache", show_default=True, help="prepared-corpus cache folder")
@click.option("--out", type=click.Path(dir_okay=False), help="write the results as JSON here")
@click.option("--force", is_flag=True, help="replace an existing --out file")
def score(model, corpora, split, clusters, cache, out, force):
    """Per-frame negative ELBO of every component on every speaker of a split (lower is better);
    with --clusters, how well a switch trained without labels separates the speakers."""
    import json

    from pyro_avss.checkpoint import SpeechModels
    from pyro_avss.data.prepared import prepared_rows
    from pyro_avss.evaluation.speaker_models import (component_scores, format_speaker_table,
                                                     speaker_table, switch_clusters)

    try:
        if out and Path(out).exists() and not force:
            raise PyroAvssError(f"{out}: output exists (use --force to replace it)")
        models = SpeechModels.load(model)
        data = models.config.get("data", {})
        rows = prepared_rows(list(corpora) or data.get("corpora", []), cache,
                             data.get("detector", "auto"))
        rows = [r for r in rows if r.get("split") == split]
        if not rows:
            raise PyroAvssError(f"no clips in split {split!r}")
        result = speaker_table(models, component_scores(models, rows))
        click.echo(format_speaker_table(result))
        if clusters:
            result["clusters"] = p = switch_clusters(models, rows)
            click.echo(f"switch clusters over {p['clips']} clips: balanced accuracy "
                       f"{p['balanced_accuracy']:.1%}, NMI {p['nmi']:.3f}; recall per speaker "
                       + ", ".join(f"{k} {v:.1%}" for k, v in p["recall"].items())
                       + f"; mapping {p['mapping']}")
    except FAILURES as exc:
        fail(exc)
    if out:
        Path(out).write_text(json.dumps(result, indent=2))


# ----------------------------------------------------------------------------------------------
@click.command("pitch-ranges")
@click.option("--model", required=True, type=click.Path(dir_okay=False), help="model file (.pt)")
@click.option("--out", required=True, type=click.Path(dir_okay=False),
              help="model file to write (the --model file itself to update it in place)")
@click.option("--set", "overrides", multiple=True, help=SET_DATA_HELP)
@click.option("--quiet", is_flag=True, help="no progress bar")
def pitch_ranges(model, out, overrides, quiet):
    """Read each component's pitch range from the clips the model was fitted on (the training
    split of its data settings) and write the model with them: a model file written before
    ``fit`` kept the ranges lets every source's harmonic comb search every pitch."""
    from pyro_avss.api import add_pitch_ranges

    try:
        models = add_pitch_ranges(model, out, overrides, progress=not quiet)
    except FAILURES as exc:
        fail(exc)
    ranges = models.info["pitch_ranges"]
    missing = [n for n in models.component_names if n not in ranges]
    click.echo(f"model: {out} ({models.component_summary()})")
    if missing:
        click.echo(f"no pitch range for {', '.join(missing)} (too few voiced frames in its clips, or "
                   "no clips of a speaker of that name): its combs search every pitch")
