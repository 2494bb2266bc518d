"""The rows of the results run's side-by-side tables: for each row (a label, a model, settings)
and split, one evaluation of the switching system into a folder named after the label; the
lips-robustness rows besides on mixtures whose target's lips are corrupted."""

from __future__ import annotations

from pathlib import Path

from pyro_avss.recipes.results.experiments import (LIP_CORRUPTIONS, LIPS_ROWS, LIPS_SPLITS, SWITCH_ROWS,
                                                   UNLABELLED_ROWS, UNLABELLED_SPLITS)


def slug(label: str) -> str:
    """``label`` as a folder name: every character but letters and digits becomes ``_``."""
    return "".join(c if c.isalnum() else "_" for c in label).strip("_")


def corpus_bank(models: dict, split: str, variant: str = ""):
    """The model of ``models`` for ``split``'s corpus: ``models["libri" + variant]`` for a
    LibriSpeech split (its audio-only bank), else ``models["grid" + variant]``."""
    return models[("libri" if split.startswith("libri") else "grid") + variant]


def setting_rows(rows, splits, manifests: dict, evals: dict, models_for, out_dir: Path,
                 evaluate) -> dict:
    """The switching system of every ``(label, model, overrides)`` row (:data:`MEMORY_ROWS`,
    :data:`SEED_ROWS`, :data:`SWITCH_ROWS`, :data:`HARMONIC_ROWS`, :data:`UNLABELLED_ROWS`) on
    ``splits``: ``{label: {split: summary}}``. ``model`` is a key of ``models_for(split)``
    (None: the split's default model); overrides None: the default system itself, whose
    summaries ``evals`` already holds (not run again)."""
    out = {}
    for label, which, changes in rows:
        out[label] = {n: evals[n] if changes is None else
                      evaluate(manifests[n], models_for(n)[which], out_dir / f"eval_{n}_{slug(label)}",
                               "switching", changes) for n in splits}
    return out


def unlabelled_rows(manifests: dict, evals: dict, models: dict, out_dir: Path, evaluate) -> dict:
    """:data:`UNLABELLED_ROWS` on :data:`UNLABELLED_SPLITS`, each split with its corpus's banks
    (``models["grid"]`` / ``["grid_switching"]``, or the ``libri`` ones for LibriSpeech splits):
    ``{label: {split: summary}}``."""
    return setting_rows(UNLABELLED_ROWS, UNLABELLED_SPLITS, manifests, evals,
                        lambda n: {None: corpus_bank(models, n), "switching": corpus_bank(models, n, "_switching")},
                        out_dir, evaluate)


def twins_model(model: str | Path) -> Path:
    """The speaker bank ``model`` with an audio-only twin of each audio-visual decoder
    (:meth:`~pyro_avss.nets.vae.DecoderBank.with_audio_only_twins`, what ``fit`` saves with
    ``model.audio_only_twins``; training is deterministic, so the same as training it so), saved
    as ``<model's folder>_av_ao/model.pt`` next to it."""
    from pyro_avss.checkpoint import SpeechModels

    models = SpeechModels.load(model)
    models.decoders = models.decoders.with_audio_only_twins()
    out = twins_path(model)
    out.parent.mkdir(parents=True, exist_ok=True)
    models.save(out)
    return out


def twins_path(model: str | Path) -> Path:
    """Where :func:`twins_model` saves the twins of ``model``."""
    return Path(model).parent.with_name(Path(model).parent.name + "_av_ao") / "model.pt"


def lips_rows(manifests: dict, models: dict, out_dir: Path, evaluate) -> dict:
    """Every :data:`LIPS_ROWS` system (its model from ``models``, by the row's key) with the target's lips intact and corrupted by each of
    :data:`LIP_CORRUPTIONS` on :data:`LIPS_SPLITS`: ``{split: {label: {condition: entry}}}``,
    each entry the summary of the *target* source's rows (:func:`target_entry`). The intact
    lips of the rows that the main tables or :data:`SWITCH_ROWS` run (a row without changes, or
    one of their labels) are read from those runs, not run again; each corruption gets a
    manifest ``mixtures_<split>_lips_<kind>_<fraction>.csv``."""
    from pyro_avss.data.lip_corruption import corrupt_target_lips
    from pyro_avss.data.mixture_manifest import read_mixture_manifest, write_mixture_manifest

    run_elsewhere = {label for label, _, _ in SWITCH_ROWS}
    out: dict = {}
    for n in LIPS_SPLITS:
        out[n] = {label: {} for label, _, _, _ in LIPS_ROWS}
        for condition in ("intact",) + LIP_CORRUPTIONS:
            manifest = manifests[n] if condition == "intact" else out_dir / f"mixtures_{n}_lips_{slug(condition)}.csv"
            if condition != "intact":
                write_mixture_manifest(corrupt_target_lips(read_mixture_manifest(manifests[n]), condition),
                                       manifest, overwrite=True)
            for label, which, system, changes in LIPS_ROWS:
                base = f"eval_{n}" if changes is None else f"eval_{n}_{slug(label)}"
                folder = out_dir / (base if condition == "intact" else f"{base}_lips_{slug(condition)}")
                if condition != "intact" or not (changes is None or label in run_elsewhere):
                    evaluate(manifest, models[which], folder, system, changes or ())
                out[n][label][condition] = target_entry(folder, system)
    return out


def target_entry(folder: Path, system: str) -> dict | None:
    """``system``'s summary entry (:func:`~pyro_avss.evaluation.summary.summarise`) over the rows of its *target*
    source (source 1, the one whose lips the lips-robustness table corrupts) in ``folder``."""
    from pyro_avss.evaluation.results_csv import read_results
    from pyro_avss.evaluation.summary import summarise

    rows = [r for r in read_results(folder / "results.csv") if r["system"] == system and r["source"] == 1]
    return summarise(rows)["systems"].get(system)
