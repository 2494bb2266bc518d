"""The built-in demo: the whole pipeline on a synthetic audio-visual corpus, no data needed.

Steps (each one is the real code path the corresponding command uses):

1. generate a small **synthetic** corpus (:mod:`pyro_avss.recipes.demo`: source-filter speech of a
   few speakers with different pitch and formants, and rendered mouth-region videos whose
   opening follows the sound) as real wav and mp4 files, plus synthetic noises;
2. ``prepare`` it (the videos are mouth-ROI videos, read with the ``roi`` detector);
3. ``fit`` a universal audio-visual model, then speaker decoders (encoder frozen) kept together
   with the universal decoder in one model file;
4. build deterministic test mixtures (one speaker + noise, two speakers + noise);
5. ``separate`` one two-speaker mixture with both videos (wavs, posterior CSV, figure);
6. ``evaluate`` the systems on all mixtures and print the results table.
"""

from __future__ import annotations

import time
from pathlib import Path

from pyro_avss.errors import InputError


def demo_sizes(small: bool) -> dict:
    """Corpus and training sizes of the demo (``small``: the reduced size used by the tests)."""
    if small:
        return {"speakers": 2, "utterances": 5, "dev": 2, "duration": 1.2, "noise_s": 6.0,
                "universal_epochs": 4, "speaker_epochs": 3, "snrs": [0.0], "steps": 20}
    return {"speakers": 3, "utterances": 20, "dev": 3, "duration": 2.0, "noise_s": 20.0,
            "universal_epochs": 200, "speaker_epochs": 100, "snrs": [0.0, 5.0], "steps": 50}


def run_demo(workdir: str | Path, *, small: bool = False, force: bool = False,
             device: str = "auto", progress: bool = True, echo=print) -> dict:
    """Run every step into ``workdir``; returns paths and the evaluation summary."""
    from pyro_avss.data.corpora import scan_corpus
    from pyro_avss.data.prepare import prepare_corpus, read_prepared_manifest
    from pyro_avss.evaluation.harness import evaluate
    from pyro_avss.inference.run_separate import SeparationJob, output_names, run_jobs
    from pyro_avss.inference.separation import SeparationSettings
    from pyro_avss.inference.training import resolve_device
    from pyro_avss.recipes.demo.corpus import generate_demo_corpus

    workdir = Path(workdir)
    if workdir.exists() and any(workdir.iterdir()) and not force:
        raise InputError(workdir, "demo folder is not empty (use --force to start it again)")
    sizes = demo_sizes(small)
    t0 = time.perf_counter()
    steps = 6

    def step(i, text):
        echo(f"[{i}/{steps}] {text}  ({time.perf_counter() - t0:.0f} s)")

    step(1, "generating the synthetic audio-visual corpus")
    corpus = generate_demo_corpus(workdir / "corpus", num_speakers=sizes["speakers"],
                                  utterances_per_speaker=sizes["utterances"],
                                  dev_per_speaker=sizes["dev"], duration_s=sizes["duration"],
                                  noise_seconds=sizes["noise_s"], progress=progress, overwrite=force)

    step(2, "prepare: lip features from the mouth-region videos")
    clips, problems = scan_corpus(corpus.manifest)
    report = prepare_corpus(clips, workdir / "prepared", detector="roi", workers=1,
                            progress=progress, problems=problems)
    if report.failures:
        raise InputError(workdir / "prepared" / "failures.csv", f"{len(report.failures)} clips failed")
    rows = read_prepared_manifest(report.manifest_path)

    step(3, "fit: universal audio-visual model, then speaker decoders")
    models = _fit_models(corpus, workdir, sizes, device, rows)
    model_path = workdir / "speakers" / "model.pt"

    step(4, "mixtures: one speaker + noise, and two speakers + noise")
    manifest, two = _write_mixtures([c for c in clips if c.split == "dev"], corpus.noises, sizes, workdir)

    step(5, "separate: a two-speaker mixture with both videos")
    settings = SeparationSettings(steps=sizes["steps"])
    job = SeparationJob(workdir / "example_mixture" / two.id / "mixture.wav",
                        [s.video for s in two.sources], two.id)
    outcome = run_jobs(models, [job], workdir / "separated", settings, device=resolve_device(device),
                       resample=False, force=True, detector="roi", progress=False)
    if outcome.failures:
        raise InputError(*outcome.failures[0])

    step(6, "evaluate: baselines, universal, oracle speaker and switching models")
    systems = "mixture,spectral-gating,universal,oracle-speaker,switching"
    summary = evaluate(manifest, model_path, workdir / "evaluation", systems, device=device,
                       overrides=[f"separate.steps={sizes['steps']}"], progress=progress,
                       models=models)
    table = (workdir / "evaluation" / "results.md").read_text()
    echo("")
    echo(table)
    echo(f"done in {time.perf_counter() - t0:.0f} s. Outputs in {workdir}:")
    echo(f"  corpus (synthetic)    {corpus.root}")
    echo(f"  model                 {model_path}  (components: {models.component_summary()})")
    echo(f"  learning curves       {workdir / 'universal' / 'learning_curve.png'}, "
         f"{workdir / 'speakers' / 'learning_curve.png'}")
    echo(f"  separated example     {workdir / 'separated'}  ({', '.join(output_names(len(two.sources)))})")
    echo(f"  evaluation            {workdir / 'evaluation'}  (results.csv, summary.json, results.md, plots)")
    return {"summary": summary, "model": model_path, "workdir": workdir}


def _fit_models(corpus, workdir: Path, sizes: dict, device: str, rows: list[dict]):
    """A universal audio-visual model (``workdir/universal``), then speaker decoders kept with
    the universal one in one model file (``workdir/speakers``); returns the latter."""
    from pyro_avss.config import load_config
    from pyro_avss.inference.training import fit

    common = [f"data.corpora=[{corpus.manifest}]", f"data.cache={workdir / 'cache'}",
              "data.detector=roi", "train.segment_frames=32", "train.batch_size=32",
              "train.patience=40",
              # the per-frame PCA lips and the N(0, I) prior: on this small synthetic corpus the
              # learned temporal lips overfit (the dev loss runs away after epoch ~15) and, with
              # the visual prior, separate worse than the mixture (see the README limits)
              "lips.front_end=pca", "model.prior=standard"]
    fit(load_config(None, common + [f"train.epochs={sizes['universal_epochs']}",
                                    "train.warmup_epochs=3", "train.lr=3e-3"]),
        workdir / "universal", device=device, progress=False, rows=rows)
    return fit(load_config(None, common + [
        "train.mode=speakers", f"train.init={workdir / 'universal' / 'model.pt'}",
        "train.include_universal=true", f"train.epochs={sizes['speaker_epochs']}",
        "train.warmup_epochs=0"]), workdir / "speakers", device=device, progress=False, rows=rows)


def _write_mixtures(dev: list, noises: list, sizes: dict, workdir: Path):
    """The evaluation manifest ``workdir/mixtures.csv`` (each dev clip + noise, every other one
    with a second speaker too), and the first two-speaker mixture written as wav files in
    ``workdir/example_mixture``; returns ``(manifest, that mixture's spec)``."""
    from pyro_avss.data.mixture_builder import build_mixture_specs
    from pyro_avss.data.mixture_manifest import write_mixture_manifest
    from pyro_avss.data.mixtures import materialise

    specs = build_mixture_specs(dev, noises, sizes["snrs"], seed=0)
    specs += build_mixture_specs(dev[::2], noises, sizes["snrs"][:1], num_interferers=1, seed=1)
    manifest = workdir / "mixtures.csv"
    write_mixture_manifest(specs, manifest, overwrite=True)
    two = [s for s in specs if s.num_sources == 2][0]
    materialise([two], workdir / "example_mixture", overwrite=True)
    return manifest, two
