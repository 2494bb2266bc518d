"""The results run (:mod:`pyro_avss.recipes.results`): prepare, train, score, build the dev
mixtures, evaluate every system and setting on them, and write ``docs/results.md``.

Finished models (their folder marked :data:`FINISHED` once ``fit`` returned) are reused, and
every evaluation resumes where it stopped (:func:`~pyro_avss.evaluation.harness.evaluate`), so
an interrupted run picks up its work again.
"""

from __future__ import annotations

import json
import shutil
import time
from functools import partial
from pathlib import Path

import numpy as np

from pyro_avss.checkpoint import SpeechModels
from pyro_avss.recipes.results.dev_mixtures import dev_mixtures
from pyro_avss.recipes.results.document import results_document
from pyro_avss.recipes.results.evaluations import Evaluator, Planner, is_finished, plan_lines, run_jobs, select_jobs
from pyro_avss.recipes.results.experiments import (ABLATION_MODELS, ABLATION_SETTINGS, HARMONIC_ROWS,
                                                   MCEM_BUDGETS, MEMORY_MODEL, MEMORY_ROWS, MEMORY_SPLITS,
                                                   MULTI_TALKER_SYSTEMS, NOISE_SETTINGS, NOISY_ENCODER_ROW,
                                                   ONE_TALKER_SYSTEMS, SEED_MODELS, SEED_ROWS, SWITCH_ROWS,
                                                   SWITCH_SPLITS)
from pyro_avss.recipes.results.rows import (corpus_bank, lips_rows, setting_rows, slug, twins_model, twins_path,
                                            unlabelled_rows)


#: written into a model's folder once its fit has returned: a folder without it holds a fit that
#: was stopped (training saves ``model.pt`` and ``log.csv`` after every epoch), trained again
FINISHED = "finished"


def _fit(config: str, out: Path, overrides: list[str], rows, log: dict, name: str, device: str):
    from pyro_avss.config import load_config
    from pyro_avss.inference.training import fit

    if (out / FINISHED).exists():
        models = SpeechModels.load(out / "model.pt")            # reuse a finished run
        log.setdefault("reused", []).append(name)
    else:
        if out.exists():
            shutil.rmtree(out)
        t0 = time.perf_counter()
        models = fit(load_config(config, overrides), out, device=device, rows=rows, progress=False)
        log[name + "_wall_s"] = time.perf_counter() - t0
        (out / FINISHED).write_text("fit finished\n")
    import csv

    epochs = list(csv.DictReader(open(out / "log.csv")))
    log[name] = {"epochs": len(epochs), "best_dev_loss": models.info.get("dev_loss"),
                 "frames_per_s": float(np.median([float(e["frames_per_s"]) for e in epochs])),
                 "components": models.component_names, "noisy_encoder": models.info.get("noisy_encoder")}
    return models


def _evaluation_folders(out_dir: Path) -> list[Path]:
    """The evaluation folders of ``out_dir`` that hold results (finished or not)."""
    return [p.parent for p in out_dir.glob("eval_*/results.csv")]


def run_results(out_dir: str | Path = "runs/results", data_root: str | Path = "../shared/data",
                doc: str | Path = "docs/results.md", *, device: str = "cpu", workers: int = 1,
                threads: int | None = None, only: tuple[str, ...] = (), plan: bool = False,
                command: str = "python cli.py results", echo=print) -> Path | None:
    """Run everything (see :mod:`pyro_avss.recipes.results`); returns the path of the written
    document. With ``workers`` > 1 the evaluations run in that many processes of ``threads``
    torch threads each (:mod:`.evaluations`; the models are trained here first); with one, here,
    in the order of the document.

    :param only: shell patterns of evaluation folder names (``eval_libri*``): after the models,
        only the evaluations whose folder matches one are run, and the document is written only
        if that leaves every evaluation of the run finished (else None is returned).
    :param plan: say every evaluation of the run and how far it is (:func:`.evaluations.job_state`)
        and return None, without preparing, training or separating anything.
    :raises InputError: a pattern of ``only`` that names no evaluation of the run.
    """
    from pyro_avss.data.prepared import prepared_rows

    t_start = time.perf_counter()
    out_dir, data_root, doc = Path(out_dir), Path(data_root), Path(doc)
    out_dir.mkdir(parents=True, exist_ok=True)
    cache = str(out_dir / "cache")
    facts: dict = {"evaluations_found": len(_evaluation_folders(out_dir))}

    def say(text):
        echo(f"[{time.perf_counter() - t_start:6.0f} s] {text}")

    if plan:
        manifests = _write_manifests(dev_mixtures(data_root, out_dir / "noise"), out_dir, facts)
        planner = Planner()
        _all_evaluations(manifests, model_paths(out_dir / "models"), facts, out_dir, planner, lambda text: None)
        for line in plan_lines(planner.jobs):
            echo(line)
        return None
    say("prepare GRID and LibriSpeech")
    t0 = time.perf_counter()
    grid_rows = prepared_rows([str(data_root / "grid")], cache, "auto", progress=False)
    libri_rows = prepared_rows([str(data_root / "librispeech")], cache, "auto", progress=False)
    facts["prepare_wall_s"] = time.perf_counter() - t0
    models = _train_and_score(out_dir / "models", [f"data.cache={cache}"], grid_rows, libri_rows, facts,
                              device, say)

    say("build the GRID dev mixtures (tuned-on and held-out splits)")
    manifests = _write_manifests(dev_mixtures(data_root, out_dir / "noise"), out_dir, facts)
    evaluations = partial(_all_evaluations, manifests, models, facts, out_dir)
    if workers > 1 or only:
        planner = Planner()
        evaluations(planner, lambda text: None)
        jobs = select_jobs(planner.jobs, only) if only else planner.jobs
        say(f"run {len(jobs)} of the run's {len(planner.jobs)} evaluations, {workers} at a time")
        run_jobs(jobs, workers, device, threads, say)
        left = sum(not is_finished(job) for job in planner.jobs)
        if left:
            say(f"{left} of the run's {len(planner.jobs)} evaluations are not finished; {doc} is written "
                "once they are (run again without --only)")
            return None
    evals, rows, s_eq, s_mcem, iters = evaluations(Evaluator(device), say)
    facts["total_wall_s"] = time.perf_counter() - t_start
    facts["evaluations"] = len(_evaluation_folders(out_dir))
    say("write the document")
    text = results_document(facts, evals, rows["ablation"], rows["noise"], rows["switch"], s_eq, s_mcem,
                            iters, command, out_dir, doc, rows["memory"], rows["lips"], rows["unlabelled"],
                            rows["seeds"], rows["harmonics"])
    doc.parent.mkdir(parents=True, exist_ok=True)
    from pyro_avss.recipes.mcem_comparison import carry_section     # from cli.py compare-mcem

    doc.write_text(carry_section(doc, text))
    (out_dir / "facts.json").write_text(json.dumps(facts, indent=2, default=str))
    say(f"wrote {doc}")
    return doc


def _train_and_score(m: Path, cache_set: list[str], grid_rows, libri_rows, facts: dict, device: str,
                     say) -> dict:
    """Fit (or reuse) every model of the run under ``m`` and score, into ``facts``, the speaker
    decoders on every dev speaker and the unlabelled switch's clusters. Returns the model files
    the evaluations use: ``"grid"`` and ``"libri"`` (the speaker decoders), ``"grid_switching"`` and
    ``"libri_switching"`` (the banks of speakers found without labels), ``"memory"`` (the
    prior with memory), one per :data:`SEED_MODELS` name (the default GRID models of a held-out
    training seed), one per :data:`ABLATION_MODELS` name and ``"twins"`` (:func:`model_paths`)."""
    from pyro_avss.evaluation.speaker_models import component_scores, speaker_table, switch_clusters

    say("fit GRID universal, speaker decoders, unlabelled switching VAE")
    _fit("configs/grid_universal.yaml", m / "grid_universal", cache_set, grid_rows, facts, "grid_universal", device)
    uni = str(m / "grid_universal" / "model.pt")
    spk = _fit("configs/grid_speakers.yaml", m / "grid_speakers", cache_set + [f"train.init={uni}"],
               grid_rows, facts, "grid_speakers", device)
    sw = _fit("configs/grid_switching_unlabelled.yaml", m / "grid_switching", cache_set + [f"train.init={uni}"],
              grid_rows, facts, "grid_switching", device)
    say("fit LibriSpeech universal and speaker decoders (audio only)")
    _fit("configs/librispeech_universal.yaml", m / "libri_universal", cache_set, libri_rows, facts,
         "libri_universal", device)
    lspk = _fit("configs/librispeech_speakers.yaml", m / "libri_speakers",
                cache_set + [f"train.init={m / 'libri_universal' / 'model.pt'}"], libri_rows, facts,
                "libri_speakers", device)

    lsw = _fit("configs/librispeech_switching_unlabelled.yaml", m / "libri_switching",
               cache_set + [f"train.init={m / 'libri_universal' / 'model.pt'}"], libri_rows, facts,
               "libri_switching", device)

    say("distil the noisy encoders of the GRID and LibriSpeech speaker banks")
    for name, config, bank, rows in (("grid_noisy", "grid_noisy_encoder", "grid_speakers", grid_rows),
                                     ("libri_noisy", "librispeech_noisy_encoder", "libri_speakers", libri_rows)):
        _fit(f"configs/{config}.yaml", m / name, cache_set + [f"train.init={m / bank / 'model.pt'}"],
             rows, facts, name, device)

    say("score speaker decoders and the unlabelled switch")
    grid_dev = [r for r in grid_rows if r["split"] == "dev"]
    libri_dev = [r for r in libri_rows if r["split"] == "dev" and r["speaker"] in lspk.component_names]
    facts["grid_table"] = speaker_table(spk, component_scores(spk, grid_dev))
    facts["libri_table"] = speaker_table(lspk, component_scores(lspk, libri_dev))
    facts["clusters_train"] = switch_clusters(sw, [r for r in grid_rows if r["split"] == "train"])
    facts["clusters_dev"] = switch_clusters(sw, grid_dev)
    facts["clusters_libri_dev"] = switch_clusters(lsw, libri_dev)

    say("fit the GRID visual-pathway ablation models (universal + speaker decoders each)")

    def grid_pair(name: str, universal_changes: list[str], speaker_changes: list[str]) -> None:
        """A GRID universal model and its speaker decoders, by the packaged configs with these
        changes (the bank goes to ``m / f"{name}_speakers"``)."""
        _fit("configs/grid_universal.yaml", m / f"{name}_universal", cache_set + universal_changes,
             grid_rows, facts, f"{name}_universal", device)
        _fit("configs/grid_speakers.yaml", m / f"{name}_speakers",
             cache_set + speaker_changes + [f"train.init={m / f'{name}_universal' / 'model.pt'}"],
             grid_rows, facts, f"{name}_speakers", device)

    for name, changes, _ in ABLATION_MODELS:
        grid_pair(name, changes, changes)
    grid_pair(MEMORY_MODEL[0], MEMORY_MODEL[1], [])   # memory comes with the init
    say("fit the GRID models again with the held-out training seeds")
    for name, changes in SEED_MODELS:
        grid_pair(name, changes, changes)
    paths = model_paths(m)
    twins_model(paths["grid"])
    return paths


def model_paths(m: Path) -> dict:
    """Where :func:`_train_and_score` puts each model the evaluations use, trained or not (the
    keys it names, and ``"twins"``: the GRID speaker bank with audio-only twins,
    :func:`twins_model`)."""
    paths = {key: m / folder / "model.pt" for key, folder in (
        ("grid", "grid_speakers"), ("libri", "libri_speakers"), ("grid_noisy", "grid_noisy"),
        ("libri_noisy", "libri_noisy"), ("grid_switching", "grid_switching"), ("libri_switching", "libri_switching"))}
    for name in (*(name for name, _, _ in ABLATION_MODELS), *(name for name, _ in SEED_MODELS)):
        paths[name] = m / f"{name}_speakers" / "model.pt"
    paths["memory"] = m / f"{MEMORY_MODEL[0]}_speakers" / "model.pt"
    paths["twins"] = twins_path(paths["grid"])
    return paths


def _write_manifests(specs: dict, out_dir: Path, facts: dict) -> dict:
    """Write each mixture set ``{split: specs}`` as ``out_dir/mixtures_<split>.csv`` (its size
    into ``facts``); returns ``{split: manifest path}``."""
    from pyro_avss.data.mixture_manifest import write_mixture_manifest

    manifests = {}
    for key, sp in specs.items():
        manifests[key] = out_dir / f"mixtures_{key}.csv"
        write_mixture_manifest(sp, manifests[key], overwrite=True)
        facts[f"mixtures_{key}"] = len(sp)
    return manifests


def _all_evaluations(manifests: dict, models: dict, facts: dict, out_dir: Path, evaluate, say) -> tuple:
    """Every evaluation of the run, through ``evaluate`` (:mod:`.evaluations`), in the order of
    the document: ``(main summaries, setting rows, SVI at MCEM's iterations, {MCEM budget:
    summary}, those iterations)``."""
    evals = _main_evaluations(manifests, models, facts, out_dir, evaluate, say)
    rows = _setting_evaluations(manifests, models, evals, out_dir, evaluate, say)
    one_csv, spk_model = manifests["1spk"], models["grid"]
    iters = 100
    say(f"SVI at {iters} steps (equal iterations with MCEM)")
    s_eq = evaluate(one_csv, spk_model, out_dir / "eval_equal_iterations", "switching",
                    [f"separate.steps={iters}", "separate.tol=0"])
    s_mcem = {iters: evals["1spk"]}
    for n in MCEM_BUDGETS:
        say(f"MCEM with {n} EM iterations (quality against cost)")
        s_mcem[n] = evaluate(one_csv, spk_model, out_dir / f"eval_mcem_{n}", "mcem", [f"mcem.em_iterations={n}"])
    return evals, rows, s_eq, s_mcem, iters


def _main_evaluations(manifests: dict, models: dict, facts: dict, out_dir: Path, evaluate,
                      say) -> dict:
    """Every system of the main tables on every split: ``{split: summary}`` (MCEM joins on the
    GRID one-talker tuned-on split)."""
    spk_model, libri_model = models["grid"], models["libri"]
    n = {key[len("mixtures_"):]: v for key, v in facts.items() if key.startswith("mixtures_")}
    say(f"evaluate {n['1spk']} + {n['1spk_held']} one-speaker GRID mixtures "
        "(MCEM included on the tuned-on split: about 6 minutes)")
    s1 = evaluate(manifests["1spk"], spk_model, out_dir / "eval_1spk", ONE_TALKER_SYSTEMS + ",mcem")
    s1h = evaluate(manifests["1spk_held"], spk_model, out_dir / "eval_1spk_held", ONE_TALKER_SYSTEMS)
    say(f"evaluate the {n['1spk_noise_held']} tuned-on one-speaker GRID targets in the held-out noises")
    s1n = evaluate(manifests["1spk_noise_held"], spk_model, out_dir / "eval_1spk_noise_held",
                   ONE_TALKER_SYSTEMS)
    say(f"evaluate {n['libri']} + {n['libri_held']} one-speaker LibriSpeech mixtures")
    libri_systems = ONE_TALKER_SYSTEMS.replace(",nmf", "")
    sl = evaluate(manifests["libri"], libri_model, out_dir / "eval_libri", libri_systems)
    slh = evaluate(manifests["libri_held"], libri_model, out_dir / "eval_libri_held", libri_systems)
    say(f"evaluate {n['2spk']} + {n['2spk_held']} two-speaker and {n['3spk']} three-speaker mixtures")
    s2 = evaluate(manifests["2spk"], spk_model, out_dir / "eval_2spk", MULTI_TALKER_SYSTEMS)
    s2h = evaluate(manifests["2spk_held"], spk_model, out_dir / "eval_2spk_held",
                   MULTI_TALKER_SYSTEMS)
    s3 = evaluate(manifests["3spk"], spk_model, out_dir / "eval_3spk", MULTI_TALKER_SYSTEMS)
    say(f"evaluate {n['2spk_same']} + {n['2spk_same_held']} two-talker mixtures of one speaker (s1 + s1)")
    same = {key: evaluate(manifests[key], spk_model, out_dir / f"eval_{key}", MULTI_TALKER_SYSTEMS)
            for key in ("2spk_same", "2spk_same_held")}
    return {"1spk": s1, "1spk_held": s1h, "1spk_noise_held": s1n, "libri": sl, "libri_held": slh,
            "2spk": s2, "2spk_held": s2h, "3spk": s3, **same}


def _setting_evaluations(manifests: dict, models: dict, evals: dict, out_dir: Path, evaluate,
                         say) -> dict:
    """The switching system with the settings of every side-by-side table: ``{"noise",
    "ablation", "memory", "seeds", "switch": {label: {split: summary}}, "lips": see lips_rows}``."""
    spk_model = models["grid"]

    def bank(split: str, variant: str = ""):
        return corpus_bank(models, split, variant)

    say("noise model and test-time prior weight (switching system, both splits)")
    noise_rows = {"**default**": {n: evals[n] for n in ("1spk", "1spk_held", "libri", "libri_held")}}
    for label, changes, splits in NOISE_SETTINGS:
        noise_rows[label] = {n: evaluate(manifests[n], bank(n), out_dir / f"eval_{n}_{slug(label)}",
                                         "switching", changes) for n in splits}
    label, changes, splits = NOISY_ENCODER_ROW
    noise_rows[label] = {n: evaluate(manifests[n], bank(n, "_noisy"), out_dir / f"eval_{n}_noisy_encoder",
                                     "switching", changes) for n in splits}
    say("visual-pathway ablation (models and separation settings)")
    ablation = {}
    for name, _, label in ABLATION_MODELS:             # two talkers of one speaker too: only lips
        ablation[label] = {n: evaluate(manifests[n], models[name], out_dir / f"eval_{n}_{name}",
                                       "switching", ["separate.gain=utterance"])
                           for n in ("1spk", "2spk", "2spk_same")}
    for label, name, changes in ABLATION_SETTINGS:
        model = models[name] if name else spk_model
        ablation[label] = {n: evaluate(manifests[n], model, out_dir / f"eval_{n}_{slug(label)}",
                                       "switching", changes) for n in ("1spk", "2spk")}
    say("speech prior with memory against the frame-wise prior (both splits)")
    memory = setting_rows(MEMORY_ROWS, MEMORY_SPLITS, manifests, evals,
                          lambda n: {None: spk_model, "memory": models["memory"]}, out_dir, evaluate)
    say("the default system with the held-out training seeds and another separation seed")
    seeds = setting_rows(SEED_ROWS, MEMORY_SPLITS, manifests, evals,
                         lambda n: {None: spk_model, **{name: models[name] for name, _ in SEED_MODELS}},
                         out_dir, evaluate)
    say("switch prior: per frame (i.i.d. or sticky Markov) instead of one component per utterance")
    s_switch = setting_rows(SWITCH_ROWS, SWITCH_SPLITS, manifests, evals, lambda n: {None: bank(n)},
                            out_dir, evaluate)
    say("harmonic combs read from each source's own estimate part-way through the fit")
    harmonics = setting_rows(HARMONIC_ROWS, SWITCH_SPLITS, manifests, evals, lambda n: {None: bank(n)},
                             out_dir, evaluate)
    say("the banks of speakers found without labels, in separation (one talker)")
    unlabelled = unlabelled_rows(manifests, evals, models, out_dir, evaluate)
    say("lips robustness: the target's lips missing or corrupted in part")
    lips = lips_rows(manifests, {None: spk_model, "twins": models["twins"]}, out_dir, evaluate)
    return {"noise": noise_rows, "ablation": ablation, "memory": memory, "switch": s_switch, "lips": lips,
            "unlabelled": unlabelled, "seeds": seeds, "harmonics": harmonics}
