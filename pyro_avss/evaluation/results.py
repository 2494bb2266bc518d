"""The reproducible results run behind ``docs/results.md`` (``cli.py results``).

From the real corpora in ``data_root`` (the layout of ``../shared/data``) it

1. prepares GRID (lip features) and LibriSpeech, and trains: the GRID universal audio-visual
   model (learned temporal lip encoder and visual prior ``p(z | v)``), GRID speaker decoders
   (+ the universal one), the GRID switching VAE without labels, three GRID ablation models
   (PCA lips and/or the ``N(0, I)`` prior), the LibriSpeech universal audio-only model and
   LibriSpeech speaker decoders;
2. scores every speaker decoder on every dev speaker, and the unlabelled switch's clusters
   (balanced accuracy and NMI);
3. builds deterministic dev mixtures (:func:`dev_mixtures`): a tuned-on split, whose noises
   and clips every setting was chosen on, and a held-out split (other noises, other clips,
   other seeds), each noise with as many targets; GRID with one, two and three talkers and
   LibriSpeech with one; evaluates every system on them, MCEM included, the ablation rows,
   and MCEM and our SVI at equal iteration counts;
4. writes ``docs/results.md`` with the tables, the exact command and the machine, and copies
   the plots next to it.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import time
from pathlib import Path

import numpy as np
import torch

from ..checkpoint import SpeechModels


def _fit(config: str, out: Path, overrides: list[str], rows, log: dict, name: str, device: str):
    from ..config import load_config
    from ..inference.training import fit

    if (out / "model.pt").exists() and (out / "log.csv").exists():
        models = SpeechModels.load(out / "model.pt")            # reuse a finished run
        log.setdefault("reused", []).append(name)
    else:
        if out.exists():
            shutil.rmtree(out)
        t0 = time.perf_counter()
        models = fit(load_config(config, overrides), out, device=device, rows=rows, progress=False)
        log[name + "_wall_s"] = time.perf_counter() - t0
    import csv

    epochs = list(csv.DictReader(open(out / "log.csv")))
    log[name] = {"epochs": len(epochs), "best_dev_loss": models.info.get("dev_loss"),
                 "frames_per_s": float(np.median([float(e["frames_per_s"]) for e in epochs])),
                 "components": models.component_names}
    return models


def _evaluate(manifest, model, out, systems, device, overrides=(), limit=None):
    from .harness import evaluate

    return evaluate(manifest, model, out, systems, device=device, overrides=list(overrides),
                    limit=limit, progress=False)


#: GRID dev noises that settings are chosen on; the other noises of the data are held out
TUNED_NOISES = ("doing_the_dishes", "dude_miaowing", "exercise_bike", "running_tap")

#: babble densities (talkers) built from the LibriSpeech pool speakers: the first joins the
#: tuned-on noises (a speech-like noise to choose settings on), the second is held out
BABBLE_TUNED, BABBLE_HELD = 3, 8

#: (name, model overrides, label): GRID models trained besides the default (learned temporal
#: lips and the visual prior p(z | v), configs/grid_universal.yaml) for the ablation table
ABLATION_MODELS = (
    ("grid_pca_standard", ["lips.front_end=pca", "model.prior=standard"], "PCA lips, N(0, I) prior"),
    ("grid_pca_visual", ["lips.front_end=pca"], "PCA lips, visual prior"),
    ("grid_temporal_standard", ["model.prior=standard"], "learned lips, N(0, I) prior"),
)

#: the GRID model with the speech prior with memory (universal + speaker decoders), trained besides
#: the default for the frame-wise vs temporal prior rows
MEMORY_MODEL = ("grid_memory", ["model.memory=markov"])

#: (label, model: "memory" or None for the default, separation overrides): the prior-with-memory
#: rows, on both splits of one and two talkers (the first is the default system itself)
MEMORY_ROWS = (
    ("frame-wise prior, mean-field guide (default)", None, None),
    ("frame-wise prior, Markov guide", None, ["separate.guide=markov"]),
    ("prior with memory, Markov guide", "memory", []),
    ("prior with memory, mean-field guide", "memory", ["separate.guide=meanfield"]),
)
MEMORY_SPLITS = ("1spk", "1spk_held", "2spk", "2spk_held")

#: (label, model name or None for the default model, separation overrides): other ablation rows
ABLATION_SETTINGS = (
    ("default model, encoder-on-mixture start", None, ["separate.guide_init=encoder"]),
    ("default model, visual-prior start only", None, ["separate.guide_init=prior"]),
    ("default model, per-frame gains", None, ["separate.gain=frame"]),
    ("default model, encoder start and per-frame gains", None,
     ["separate.guide_init=encoder", "separate.gain=frame"]),
    ("PCA lips, N(0, I) prior, per-frame gains (the previous system)", "grid_pca_standard",
     ["separate.gain=frame"]),
)


#: systems run on every one-talker split (MCEM joins on the GRID tuned-on split; NMF, whose bases
#: come from the model's training clips, on GRID only)
ONE_TALKER_SYSTEMS = ("mixture,spectral-gating,log-mmse,rnnoise,deepfilternet,nmf,universal,"
                      "oracle-speaker,switching,oracle-noise,oracle-latent")

#: systems run on every multi-talker split (oracle-noise: the switching system told the noise,
#: the bound a better noise model could reach with these speech models; oracle-latent: no
#: inference, each source decoded from its clean signal's code, the speech models' ceiling)
MULTI_TALKER_SYSTEMS = "mixture,universal,oracle-speaker,switching,oracle-noise,oracle-latent"

#: (label, model: None for the default, separation overrides: None for the default system itself):
#: the switch priors side by side, on both splits of one and two talkers. The Markov setting was
#: chosen on the tuned-on split (mean SI-SDRi of one and two talkers) among the stay probability
#: 0.98 (6.81 dB), the time constants τ = 0.1 (6.76), 0.5 (6.80), 2 (6.82), 30 (6.84) and 600 s
#: (6.78) and a learnt stay (6.77): all within 0.1 dB, every one below the per-utterance switch
MARKOV_SWITCH = ["separate.switch_prior=markov", "separate.stay_seconds=30"]
SWITCH_ROWS = (
    ("one component per utterance (default)", None, None),
    ("i.i.d. per frame", None, ["separate.switch_prior=iid"]),
    ("sticky Markov per frame, τ = 30 s", None, MARKOV_SWITCH),
)
SWITCH_SPLITS = ("1spk", "2spk", "1spk_held", "2spk_held")

#: corruptions of the target's lips (:mod:`~pyro_avss.data.lip_corruption`) in the lips-robustness
#: table, besides intact lips, on the tuned-on splits of one and two talkers
LIP_CORRUPTIONS = ("missing:0.3", "missing:0.6", "noise:0.3", "swap:0.3")
LIPS_SPLITS = ("1spk", "2spk")
LIPS_ROWS = tuple((label, "switching", changes) for label, _, changes in SWITCH_ROWS) + (
    ("one component per utterance, per-frame gains", "switching", ["separate.gain=frame"]),
    ("universal model", "universal", None))

#: (label, separation overrides, splits): the noise-model rows, each against the default
#: (``separate.noise_smoothness=0.1``, ``separate.prior_weight=3``) on tuned-on and held-out data
_ALL_ONE_TALKER = ("1spk", "1spk_held", "libri", "libri_held")
NOISE_SETTINGS = (
    ("free NMF activations, prior weight 1 (the previous defaults)",
     ["separate.noise_smoothness=0", "separate.prior_weight=1"], _ALL_ONE_TALKER),
    ("smooth activations, prior weight 1", ["separate.prior_weight=1"], _ALL_ONE_TALKER),
    ("free activations, prior weight 3", ["separate.noise_smoothness=0"], _ALL_ONE_TALKER),
    ("noise started from the frames where the lips are closed",
     ["separate.noise_start=lips"], ("1spk", "1spk_held")),
    ("spectrally smooth noise bases (σ_f = 0.15 nats per bin)",
     ["separate.noise_spectral_smoothness=0.15"], _ALL_ONE_TALKER),
    ("4 of the 8 noise bases spectrally smooth (σ_f = 0.15), 4 free",
     ["separate.noise_spectral_smoothness=0.15", "separate.noise_smooth_rank=4"], _ALL_ONE_TALKER),
    ("default, 4× the steps, no early stop", ["separate.steps=200", "separate.tol=0"],
     ("1spk", "1spk_held")),
    ("default, 4× the steps, no early stop, slow rate decay (0.99)",
     ["separate.steps=200", "separate.tol=0", "separate.lr_decay=0.99"], ("1spk", "1spk_held")),
)


def _slug(label: str) -> str:
    return "".join(c if c.isalnum() else "_" for c in label).strip("_")


def dev_noises(data_root: Path, folder: Path) -> tuple[list, list]:
    """``(tuned, held)`` noise lists ``(name, path)``: the :data:`TUNED_NOISES` and
    ``babble3`` against the other real noises and ``babble8``; the babbles are written to
    ``folder`` from the LibriSpeech pool speakers (:mod:`~pyro_avss.data.babble`)."""
    from ..data.babble import write_babble_noises
    from ..data.corpora import scan_corpus
    from ..data.selection import read_noises

    noises = read_noises(data_root / "manifests" / "noise.csv")
    libri, _ = scan_corpus(data_root / "librispeech")
    pool = [c for c in libri if "train-clean-100" in Path(c.audio).parts]
    babble_tuned, babble_held = write_babble_noises(pool, [BABBLE_TUNED, BABBLE_HELD], folder)
    tuned = [n for n in noises if n[0] in TUNED_NOISES] + [babble_tuned]
    held = [n for n in noises if n[0] not in TUNED_NOISES] + [babble_held]
    return tuned, held


def dev_mixtures(data_root: Path, noise_folder: Path) -> dict:
    """The deterministic dev mixture sets of the results run.

    Tuned-on split (every setting was chosen on these): the first 10 s1 dev clips and the 7 s4
    dev clips as targets, the tuned noises of :func:`dev_noises`; one talker at −5/0/5 dB (seed
    0), two talkers (the other speaker's dev clip at SIR 0 dB) at 0/5 dB (seed 1), three talkers
    (s1 + s4 + a second s1 clip, SIR 0 dB) at 5 dB (seed 4); LibriSpeech (audio only): the first
    dev utterance of each of the 10 speakers at −5/0/5 dB (seed 5). Held-out split (no choice
    looked at it): the next 10 s1 dev clips and the same s4 targets (GRID has only 7 s4 dev
    clips), the other LibriSpeech dev utterances, the held-out noises, other seeds (3, 2, 6)."""
    from ..data.corpora import scan_corpus
    from ..data.mixtures import build_mixture_specs
    from ..data.selection import select_clips

    clips, _ = scan_corpus(data_root / "grid")
    libri, _ = scan_corpus(data_root / "librispeech")
    tuned, held = dev_noises(data_root, noise_folder)
    s1, s4 = select_clips(clips, "dev", ["s1"]), select_clips(clips, "dev", ["s4"])
    pool = select_clips(clips, "dev")
    targets, targets_held = s1[:10] + s4, s1[10:20] + s4
    libri_dev = select_clips(libri, "dev")
    first = {}
    for c in libri_dev:
        first.setdefault(c.speaker, c)
    libri_tuned = list(first.values())
    libri_held = [c for c in libri_dev if first[c.speaker] is not c]
    two = dict(interferers=pool, num_interferers=1, sir_db=0.0, cycle_noises=True)
    snrs, cycle = [-5.0, 0.0, 5.0], dict(cycle_noises=True)
    return {
        "1spk": build_mixture_specs(targets, tuned, snrs, seed=0, **cycle),
        "1spk_held": build_mixture_specs(targets_held, held, snrs, seed=3, **cycle),
        "libri": build_mixture_specs(libri_tuned, tuned, snrs, seed=5, **cycle),
        "libri_held": build_mixture_specs(libri_held, held, snrs, seed=6, **cycle),
        "2spk": build_mixture_specs(targets, tuned, [0.0, 5.0], seed=1, **two),
        "2spk_held": build_mixture_specs(targets_held, held, [0.0, 5.0], seed=2, **two),
        "3spk": build_mixture_specs(targets, tuned, [5.0], interferers=pool, num_interferers=2,
                                    sir_db=0.0, seed=4, reuse_speakers=True, **cycle),
    }


def run_results(out_dir: str | Path = "runs/results", data_root: str | Path = "../shared/data",
                doc: str | Path = "docs/results.md", *, device: str = "cpu",
                command: str = "python cli.py results", echo=print) -> Path:
    """Run everything (see the module docstring); returns the path of the written document."""
    from ..data.mixtures import write_mixture_manifest
    from ..data.prepared import prepared_rows
    from .speaker_models import component_scores, format_speaker_table, speaker_table, switch_clusters

    t_start = time.perf_counter()
    out_dir, data_root, doc = Path(out_dir), Path(data_root), Path(doc)
    out_dir.mkdir(parents=True, exist_ok=True)
    grid, libri = data_root / "grid", data_root / "librispeech"
    cache = str(out_dir / "cache")
    facts: dict = {}

    def say(text):
        echo(f"[{time.perf_counter() - t_start:6.0f} s] {text}")

    say("prepare GRID and LibriSpeech")
    t0 = time.perf_counter()
    grid_rows = prepared_rows([str(grid)], cache, "auto", progress=False)
    libri_rows = prepared_rows([str(libri)], cache, "auto", progress=False)
    facts["prepare_wall_s"] = time.perf_counter() - t0
    cache_set = [f"data.cache={cache}"]

    say("fit GRID universal, speaker decoders, unlabelled switching VAE")
    m = out_dir / "models"
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

    say("score speaker decoders and the unlabelled switch")
    grid_dev = [r for r in grid_rows if r["split"] == "dev"]
    libri_dev = [r for r in libri_rows if r["split"] == "dev" and r["speaker"] in lspk.component_names]
    facts["grid_table"] = speaker_table(spk, component_scores(spk, grid_dev))
    facts["libri_table"] = speaker_table(lspk, component_scores(lspk, libri_dev))
    facts["clusters_train"] = switch_clusters(sw, [r for r in grid_rows if r["split"] == "train"])
    facts["clusters_dev"] = switch_clusters(sw, grid_dev)

    say("fit the GRID visual-pathway ablation models (universal + speaker decoders each)")
    ablation_models = {}
    for name, changes, _ in ABLATION_MODELS:
        u = _fit("configs/grid_universal.yaml", m / f"{name}_universal", cache_set + changes, grid_rows,
                 facts, f"{name}_universal", device)
        ablation_models[name] = m / f"{name}_speakers" / "model.pt"
        _fit("configs/grid_speakers.yaml", m / f"{name}_speakers",
             cache_set + changes + [f"train.init={m / f'{name}_universal' / 'model.pt'}"], grid_rows,
             facts, f"{name}_speakers", device)
        del u
    mem_name, mem_changes = MEMORY_MODEL
    _fit("configs/grid_universal.yaml", m / f"{mem_name}_universal", cache_set + mem_changes, grid_rows,
         facts, f"{mem_name}_universal", device)
    _fit("configs/grid_speakers.yaml", m / f"{mem_name}_speakers",
         cache_set + [f"train.init={m / f'{mem_name}_universal' / 'model.pt'}"], grid_rows, facts,
         f"{mem_name}_speakers", device)

    say("build the GRID dev mixtures (tuned-on and held-out splits)")
    specs = dev_mixtures(data_root, out_dir / "noise")
    manifests = {}
    for key, sp in specs.items():
        manifests[key] = out_dir / f"mixtures_{key}.csv"
        write_mixture_manifest(sp, manifests[key], overwrite=True)
        facts[f"mixtures_{key}"] = len(sp)

    spk_model = str(m / "grid_speakers" / "model.pt")
    libri_model = str(m / "libri_speakers" / "model.pt")
    one_csv, two_csv = manifests["1spk"], manifests["2spk"]
    say(f"evaluate {len(specs['1spk'])} + {len(specs['1spk_held'])} one-speaker GRID mixtures "
        "(MCEM included on the tuned-on split: about 6 minutes)")
    s1 = _evaluate(one_csv, spk_model, out_dir / "eval_1spk", ONE_TALKER_SYSTEMS + ",mcem", device)
    s1h = _evaluate(manifests["1spk_held"], spk_model, out_dir / "eval_1spk_held", ONE_TALKER_SYSTEMS,
                    device)
    say(f"evaluate {len(specs['libri'])} + {len(specs['libri_held'])} one-speaker LibriSpeech mixtures")
    libri_systems = ONE_TALKER_SYSTEMS.replace(",nmf", "")
    sl = _evaluate(manifests["libri"], libri_model, out_dir / "eval_libri", libri_systems, device)
    slh = _evaluate(manifests["libri_held"], libri_model, out_dir / "eval_libri_held", libri_systems,
                    device)
    say(f"evaluate {len(specs['2spk'])} + {len(specs['2spk_held'])} two-speaker and "
        f"{len(specs['3spk'])} three-speaker mixtures")
    s2 = _evaluate(two_csv, spk_model, out_dir / "eval_2spk",
                   MULTI_TALKER_SYSTEMS, device)
    s2h = _evaluate(manifests["2spk_held"], spk_model, out_dir / "eval_2spk_held",
                    MULTI_TALKER_SYSTEMS, device)
    s3 = _evaluate(manifests["3spk"], spk_model, out_dir / "eval_3spk",
                   MULTI_TALKER_SYSTEMS, device)
    say("noise model and test-time prior weight (switching system, both splits)")
    one_talker = {"1spk": s1, "1spk_held": s1h, "libri": sl, "libri_held": slh}
    noise_rows = {"**default**": one_talker}
    for label, changes, splits in NOISE_SETTINGS:
        noise_rows[label] = {
            n: _evaluate(manifests[n], libri_model if n.startswith("libri") else spk_model,
                         out_dir / f"eval_{n}_{_slug(label)}", "switching", device, changes)
            for n in splits}
    say("visual-pathway ablation (models and separation settings)")
    ablation = {}
    for name, _, label in ABLATION_MODELS:
        ablation[label] = {n: _evaluate(manifests[n], ablation_models[name], out_dir / f"eval_{n}_{name}",
                                        "switching", device, ["separate.gain=utterance"])
                           for n in ("1spk", "2spk")}
    for label, name, changes in ABLATION_SETTINGS:
        model = ablation_models[name] if name else spk_model
        ablation[label] = {n: _evaluate(manifests[n], model, out_dir / f"eval_{n}_{_slug(label)}",
                                        "switching", device, changes) for n in ("1spk", "2spk")}
    say("speech prior with memory against the frame-wise prior (both splits)")
    evals = {**one_talker, "2spk": s2, "2spk_held": s2h, "3spk": s3}
    memory = setting_rows(MEMORY_ROWS, MEMORY_SPLITS, manifests, evals,
                          {None: spk_model, "memory": m / f"{mem_name}_speakers" / "model.pt"}, out_dir, device)
    say("switch prior: per frame (i.i.d. or sticky Markov) instead of one component per utterance")
    s_switch = setting_rows(SWITCH_ROWS, SWITCH_SPLITS, manifests, evals, {None: spk_model}, out_dir, device)
    say("lips robustness: the target's lips missing or corrupted in part")
    lips = lips_rows(manifests, spk_model, out_dir, device)
    iters = 100
    say(f"SVI at {iters} steps (equal iterations with MCEM)")
    s_eq = _evaluate(one_csv, spk_model, out_dir / "eval_equal_iterations", "switching", device,
                     overrides=[f"separate.steps={iters}", "separate.tol=0"])
    s_mcem = {iters: s1}
    for n in MCEM_BUDGETS:
        say(f"MCEM with {n} EM iterations (quality against cost)")
        s_mcem[n] = _evaluate(one_csv, spk_model, out_dir / f"eval_mcem_{n}", "mcem", device,
                              overrides=[f"mcem.em_iterations={n}"])
    facts["total_wall_s"] = time.perf_counter() - t_start
    say("write the document")
    text = results_document(facts, evals, ablation, noise_rows, s_switch, s_eq, s_mcem, iters, command,
                            out_dir, doc, memory, lips)
    doc.parent.mkdir(parents=True, exist_ok=True)
    from .mcem_comparison import carry_section     # that section comes from cli.py compare-mcem

    doc.write_text(carry_section(doc, text))
    (out_dir / "facts.json").write_text(json.dumps(facts, indent=2, default=str))
    say(f"wrote {doc}")
    return doc


def setting_rows(rows, splits, manifests: dict, evals: dict, models: dict, out_dir: Path,
                 device: str) -> dict:
    """The switching system of every ``(label, model, overrides)`` row (:data:`MEMORY_ROWS`,
    :data:`SWITCH_ROWS`) on ``splits``: ``{label: {split: summary}}``. ``model`` is a key of
    ``models`` (None: the default model); overrides None: the default system itself, whose
    summaries ``evals`` already holds (not run again)."""
    out = {}
    for label, which, changes in rows:
        if changes is None:
            out[label] = {n: evals[n] for n in splits}
            continue
        out[label] = {n: _evaluate(manifests[n], models[which], out_dir / f"eval_{n}_{_slug(label)}",
                                   "switching", device, changes) for n in splits}
    return out


def _split_table(rows: dict, splits, head: list[str], cells) -> list[str]:
    """Markdown: one row per label of ``rows`` (``{label: {split: summary}}``) whose switching
    system processed mixtures of every split, ``cells({split: summary entry})`` after the
    label; then :func:`_coverage_note`."""
    L = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    shown: list = []
    for label, per_split in rows.items():
        sw = {n: per_split[n]["systems"].get("switching") for n in splits}
        if not all(v and v["ok"] for v in sw.values()):
            continue
        shown += [(f"{label} on {n}", sw[n]) for n in splits]
        L.append("| " + " | ".join([label] + cells(sw)) + " |")
    return L + _coverage_note(shown)


def memory_table(memory: dict) -> list[str]:
    """Markdown: one row per prior/guide pair; SI-SDRi on each split, PESQ-WB and STOI on the
    one-talker held-out split, the two-talker swap rates, RTF on one talker."""
    head = ["prior / guide"] + [f"{n}: SI-SDRi" for n in MEMORY_SPLITS] + \
        ["1spk_held: PESQ-WB / STOI", "2spk / 2spk_held: swap rate", "RTF (1spk)"]
    return _split_table(memory, MEMORY_SPLITS, head, lambda sw: [_f(sw[n]["mean"]["si_sdri"]) for n in MEMORY_SPLITS] + [
        f"{_f(sw['1spk_held']['mean']['pesq_wb'])} / {_f(sw['1spk_held']['mean']['stoi'], 3)}",
        f"{_f(sw['2spk']['mean']['swapped'], 3)} / {_f(sw['2spk_held']['mean']['swapped'], 3)}",
        _f(sw["1spk"]["mean"]["rtf"], 3)])


def switch_table(switch: dict) -> list[str]:
    """Markdown: one row per switch prior; SI-SDRi and true-speaker posterior mass on each split
    of :data:`SWITCH_SPLITS`, the two-talker swap rates, RTF on one talker."""
    head = ["switch prior"] + [f"{n}: SI-SDRi / p(true)" for n in SWITCH_SPLITS] + \
        ["2spk / 2spk_held: swap rate", "RTF (1spk)"]
    return _split_table(switch, SWITCH_SPLITS, head, lambda sw: [
        f"{_f(sw[n]['mean']['si_sdri'])} / {_f(sw[n]['mean']['switch_true_mass'], 3)}" for n in SWITCH_SPLITS] + [
        f"{_f(sw['2spk']['mean']['swapped'], 3)} / {_f(sw['2spk_held']['mean']['swapped'], 3)}",
        _f(sw["1spk"]["mean"]["rtf"], 3)])


def lips_rows(manifests: dict, model: str | Path, out_dir: Path, device: str) -> dict:
    """Every :data:`LIPS_ROWS` system with the target's lips intact and corrupted by each of
    :data:`LIP_CORRUPTIONS` on :data:`LIPS_SPLITS`: ``{split: {label: {condition: entry}}}``,
    each entry the summary of the *target* source's rows (:func:`target_entry`). Intact lips
    are read from the runs of the main tables and :data:`SWITCH_ROWS` where they exist (not run
    again); each corruption gets a manifest ``mixtures_<split>_lips_<kind>_<fraction>.csv``."""
    from ..data.lip_corruption import corrupt_target_lips
    from ..data.mixtures import read_mixture_manifest, write_mixture_manifest

    out: dict = {}
    for n in LIPS_SPLITS:
        out[n] = {label: {} for label, _, _ in LIPS_ROWS}
        for condition in ("intact",) + LIP_CORRUPTIONS:
            manifest = manifests[n] if condition == "intact" else out_dir / f"mixtures_{n}_lips_{_slug(condition)}.csv"
            if condition != "intact":
                write_mixture_manifest(corrupt_target_lips(read_mixture_manifest(manifests[n]), condition),
                                       manifest, overwrite=True)
            for label, system, changes in LIPS_ROWS:
                base = f"eval_{n}" if changes is None else f"eval_{n}_{_slug(label)}"
                folder = out_dir / (base if condition == "intact" else f"{base}_lips_{_slug(condition)}")
                if condition != "intact" or not (folder / "results.csv").exists():
                    _evaluate(manifest, model, folder, system, device, changes or ())
                out[n][label][condition] = target_entry(folder, system)
    return out


def target_entry(folder: Path, system: str) -> dict | None:
    """``system``'s summary entry (:func:`~.report.summarise`) over the rows of its *target*
    source (source 1, the one whose lips the lips-robustness table corrupts) in ``folder``."""
    from .report import read_results, summarise

    rows = [r for r in read_results(folder / "results.csv") if r["system"] == system and r["source"] == 1]
    return summarise(rows)["systems"].get(system)


def lips_table(rows: dict) -> list[str]:
    """Markdown: one row per system (``{label: {condition: entry}}`` of :func:`lips_rows`), one
    column per lips condition: the target's SI-SDRi / p(true), and the swap rate with two
    talkers; then :func:`_coverage_note`."""
    conditions = list(dict.fromkeys(c for per in rows.values() for c in per))
    two = any((e or {}).get("mean", {}).get("swapped") is not None for per in rows.values() for e in per.values())
    head = ["system"] + [c.replace(":", " ") for c in conditions]
    L = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    shown: list = []
    for label, per in rows.items():
        cells = []
        for c in conditions:
            e = per.get(c)
            if not (e and e["ok"]):
                cells.append("–")
                continue
            shown.append((f"{label}, {c}", e))
            m = e["mean"]
            cells.append(f"{_f(m['si_sdri'])} / {_f(m['switch_true_mass'], 3)}"
                         + (f" / {_f(m['swapped'], 3)}" if two else ""))
        L.append("| " + " | ".join([label] + cells) + " |")
    return L + _coverage_note(shown)


# ---------------------------------------------------------------------------------------------
# the document
# ---------------------------------------------------------------------------------------------
#: smaller MCEM budgets (EM iterations) run besides the published 100, to compare at equal quality
MCEM_BUDGETS = (20, 50)


def _f(v, d=2):
    return "–" if v is None or (isinstance(v, float) and not np.isfinite(v)) else f"{v:.{d}f}"


def _machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            names = [line.split(":", 1)[1].strip() for line in f if line.startswith("model name")]
        cpu = names[0] if names else cpu
    except OSError:
        pass
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none"
    return (f"{os.cpu_count()} CPU cores ({cpu}), GPU: {gpu}; Python {platform.python_version()}, "
            f"torch {torch.__version__}, {platform.system()} {platform.release()}")


def results_document(facts, evals, ablation, noise_rows, s_switch, s_eq, s_mcem, iters, command,
                     out_dir: Path, doc: Path, memory: dict | None = None, lips: dict | None = None) -> str:
    """Markdown for ``docs/results.md`` from the collected facts and evaluation summaries."""
    from .report import talker_title
    from .speaker_models import format_speaker_table

    s1, s2 = evals["1spk"], evals["2spk"]
    plots = doc.parent / "results"
    plots.mkdir(parents=True, exist_ok=True)
    for src, name in ((out_dir / "eval_1spk" / "metrics_vs_snr.png", "metrics_vs_snr_1spk.png"),
                      (out_dir / "models" / "grid_universal" / "learning_curve.png", "learning_curve_grid_universal.png")):
        if src.exists():
            shutil.copy(src, plots / name)
    L = ["# Results", "",
         f"Produced by `{command}` in {facts['total_wall_s'] / 60:.1f} minutes on: {_machine()}.",
         "Every number below comes from that run; nothing is edited by hand."
         + (f" Models trained earlier with the same configs were reused ({', '.join(facts['reused'])}); "
            "their training figures come from their logs." if facts.get("reused") else ""), "",
         "**Tuned-on and held-out mixtures.** Every separation setting was chosen on the *tuned-on* "
         f"split: GRID dev targets (10 s1 clips, the 7 s4 clips) and the first dev utterance of each "
         f"LibriSpeech speaker, in the noises {', '.join(TUNED_NOISES)} and babble{BABBLE_TUNED} "
         f"({BABBLE_TUNED} LibriSpeech pool talkers). The *held-out* split was looked at by no "
         "choice: 10 other s1 dev clips (and the same 7 s4 clips, the only s4 dev clips there are), "
         "the other LibriSpeech dev utterances, the other real noises of the data and "
         f"babble{BABBLE_HELD} ({BABBLE_HELD} other pool talkers), other random draws (seeds). Each "
         "noise gets as many targets. Both splits are reported; the gap between them is the "
         "honest measure of how much the choices were fitted to the tuned-on data.", "",
         "## Training", "",
         "| model | epochs | best dev loss (nats/frame) | training throughput (frames/s) | components |",
         "|---|---|---|---|---|"]
    names = ["grid_universal", "grid_speakers", "grid_switching", "libri_universal", "libri_speakers"]
    names += [f"{n}_{part}" for n, _, _ in ABLATION_MODELS for part in ("universal", "speakers")]
    names += [f"{MEMORY_MODEL[0]}_{part}" for part in ("universal", "speakers")]
    for key in names:
        f = facts[key]
        L.append(f"| {key} | {f['epochs']} | {_f(f['best_dev_loss'], 1)} | {f['frames_per_s']:.0f} | "
                 f"{', '.join(f['components'])} |")
    L += ["", "The default GRID models (`grid_*`) use the learned temporal lip encoder and the visual "
          "prior p(z | v) (`configs/grid_universal.yaml`); the ablation models differ only in "
          "`lips.front_end` and `model.prior`.", "",
          "### Speaker decoders: negative ELBO per frame on each dev speaker (lower is better)", "",
          "GRID (audio-visual):", "", format_speaker_table(facts["grid_table"]), "",
          f"Own decoder best on its speaker: {facts['grid_table']['own_component_best']}", "",
          "LibriSpeech (audio only):", "", format_speaker_table(facts["libri_table"]), "",
          f"Own decoder best on its speaker: {facts['libri_table']['own_component_best']}", ""]
    for split in ("train", "dev"):
        p = facts[f"clusters_{split}"]
        L.append(f"- Unlabelled switching VAE (K = 2, pooled GRID s1 + s4), {split} clips: balanced "
                 f"accuracy **{p['balanced_accuracy']:.1%}**, NMI **{p['nmi']:.3f}** over {p['clips']} "
                 "clips; recall per speaker " + ", ".join(f"{k} {v:.1%}" for k, v in p["recall"].items())
                 + f"; mapping {p['mapping']}.")
    L += ["", "## One speaker + real noise (GRID dev, s1 or s4 target)", "",
          "Every table compares its systems on the same mixtures (those all of them processed; the "
          "line above each table says how many, n in the headers). SI-SDRi in dB; `p(true)`: mean "
          "switch posterior on the true speaker's component over speech frames; RTF = processing "
          "time / audio duration (batched). "
          "log-MMSE, RNNoise and DeepFilterNet3 are the single-talker enhancers users would pick "
          "instead (the last two pretrained on large noisy-speech corpora).", ""]
    L += _one_talker_section(evals, "1spk", facts)
    L += ["", "## One speaker + real noise (LibriSpeech dev, audio only)", "",
          "The LibriSpeech speaker decoders (no video); same noises and SNRs as above.", ""]
    L += _one_talker_section(evals, "libri", facts)
    L += ["", "## Noise model and test-time prior weight (switching system)", "",
          "SI-SDRi (dB) and PESQ-WB. The default NMF noise has a log-space random walk prior on its "
          "activations (`separate.noise_smoothness=0.1` nats per frame, free activations with 0) and "
          "weights the speech prior 3× at test time (`separate.prior_weight=3`); both were chosen on "
          "the tuned-on noises. The 4×-step rows check that quality does not hang on stopping early.",
          ""]
    L += _noise_table(noise_rows)
    L += ["", "![metrics vs SNR](results/metrics_vs_snr_1spk.png)", "",
          "## Two speakers + noise (s1 + s4, each with its own video, SNR 0 and 5 dB, SIR 0 dB)", "",
          "Every target with a dev clip of the other speaker at equal level; both sources scored "
          "(n = sources). Swap rate: share of sources whose estimate is closer (SI-SDR) to the other "
          "talker than to its own.", "", "Tuned-on split:", ""]
    L += _system_table(s2, by_snr=False)
    L += ["", "Held-out split:", ""]
    L += _system_table(evals["2spk_held"], by_snr=False)
    L += ["", "## Three speakers + noise (s1 + s4 + a second s1 clip, each with its video, SNR 5 dB, "
          "SIR 0 dB)", ""]
    L += _system_table(evals["3spk"], by_snr=False)
    L += ["", "## Visual pathway ablation (tuned-on split, switching system)", "",
          "Learned lips: the temporal lip encoder (`lips.front_end=temporal`) instead of the per-frame "
          "PCA projection; visual prior: `model.prior=visual` instead of N(0, I). The model rows are "
          "separated with `guide_init=auto` (the product of the encoder-on-mixture and the "
          "visual-prior Gaussians where the model has a visual prior, else the encoder alone) and "
          "one gain per source and chunk (`gain=utterance`).", "",
          "| model / separation | 1 speaker: SI-SDRi | 2 speakers: SI-SDRi | 2 speakers: swap rate | "
          "2 speakers: p(true) | 2 speakers: RTF |", "|---|---|---|---|---|---|"]
    rows = [("**default: learned lips, visual prior, lip-specific start, per-utterance gain**",
             {"1spk": s1, "2spk": s2})] + list(ablation.items())
    shown = []
    for label, pair in rows:
        a, b = pair["1spk"]["systems"].get("switching"), pair["2spk"]["systems"].get("switching")
        if a and b:
            L.append(f"| {label} | {_f(a['mean']['si_sdri'])} | {_f(b['mean']['si_sdri'])} | "
                     f"{_f(b['mean']['swapped'], 3)} | {_f(b['mean']['switch_true_mass'], 3)} | "
                     f"{_f(b['mean']['rtf'], 3)} |")
            shown += [(f"{label} on 1spk", a), (f"{label} on 2spk", b)]
    L += _coverage_note(shown)
    if memory:
        L += ["", "## Speech prior with memory (switching system, tuned-on and held-out splits)", "",
              "The frame-wise prior draws every frame's `z` independently from the visual prior; the "
              "prior with memory (`model.memory=markov`, trained as the default GRID models otherwise) "
              "chains the same per-frame means and scales over frames with a learnt correlation per "
              "latent dimension. The Markov guide (`separate.guide=markov`) chains the test-time "
              "`q(z)` likewise, with one fitted correlation per source and dimension.", ""]
        L += memory_table(memory)
    L += ["", "## Switch prior: one component per utterance (default), i.i.d. per frame or a sticky "
          "Markov chain per frame", "",
          "The switching system with each switch prior, on both splits. `p(true)`: mean switch posterior "
          "on the true speaker's component over speech frames. The Markov chain keeps its component "
          "from one frame to the next with probability ρ = exp(−hop / τ) (`separate.stay_seconds=τ`); "
          "its setting was chosen on the tuned-on split among ρ = 0.98 (`separate.stay_prob`), "
          "τ = 0.1, 0.5, 2, 30 and 600 s and ρ learnt per source and chunk (`separate.learn_stay=true`).", ""]
    L += switch_table(s_switch)
    if lips:
        L += ["", "## Lips robustness (GRID dev, tuned-on split): the target's lips missing or corrupted", "",
              "The target's video (source 1) loses its face in blocks of 0.5 s covering 30 % or 60 % of "
              "its frames (`missing`: the model is told, `present = 0`), or, for 30 % of its frames, "
              "its mouth regions are replaced by pixel noise (`noise`) or by those of another clip of "
              "the same speaker (`swap`), with `present = 1` (the model is not told); the audio and the "
              "references are unchanged (`cli.py mix --lips`, `pyro_avss.data.lip_corruption`). Every "
              "switching row uses the audio-visual speaker bank (s1, s4; no audio-only component "
              "exists yet); the universal row is the universal audio-visual model alone. The "
              "per-frame-gains row (`separate.gain=frame`) checks how much of the loss comes from "
              "the default gain, one per source and chunk, which leaves the speech level from frame "
              "to frame to the lips. Cells: the target's SI-SDRi (dB) / p(true), with two talkers "
              "also / its swap rate.", ""]
        for n in LIPS_SPLITS:
            L += [f"{talker_title(1 if n == '1spk' else 2).capitalize()} (target rows only):", ""]
            L += lips_table(lips[n]) + [""]
    L += ["", "## MCEM (the published algorithm) against our SVI, same models, same mixtures", ""]
    L += _mcem_comparison(s1["systems"].get("switching"), s_eq["systems"].get("switching"),
                          {n: r["systems"].get("mcem") for n, r in sorted(s_mcem.items())}, iters)
    L += ["", "MCEM keeps its published N(0, I) latent prior (its Metropolis–Hastings target does not "
          "use the visual prior).", "",
          "## How to reproduce", "", f"```bash\n{command}\n```", "",
          "It trains every model it needs from `../shared/data`, writes everything under "
          f"`{out_dir}` and rewrites this file. Per-utterance CSVs, summaries and plots are in "
          f"`{out_dir}/eval_*`.", ""]
    return "\n".join(L)


def _mcem_comparison(sw, eq, mcem: dict, iters: int) -> list[str]:
    """Markdown comparing SVI (default and ``iters`` steps) with MCEM at each EM budget:
    quality per SNR, RTF, and how much faster SVI is, saying whether at equal-or-better quality."""
    mcem = {n: m for n, m in mcem.items() if m and m["ok"] and m["mean"]["rtf"]}
    if not (sw and eq and mcem and sw["mean"]["rtf"] and eq["mean"]["rtf"]):
        return ["(not run)"]
    snrs = list(sw["by_snr"])

    def row(label, s, ratio):
        by = [_f(s["by_snr"].get(k, {}).get("mean", {}).get("si_sdri")) for k in snrs]
        return (f"| {label} | {_f(s['mean']['si_sdri'])} | {' / '.join(by)} | {_f(s['mean']['pesq_wb'])} | "
                f"{_f(s['mean']['stoi'], 3)} | {_f(s['mean']['rtf'], 3)} | {ratio} |")

    L = [f"All {sw['ok']} one-speaker mixtures above. MCEM at its published budget ({iters} EM "
         "iterations of 40 Metropolis–Hastings steps, the `mcem` row of the first table) and at "
         "smaller budgets; SVI at its default and at " + f"{iters} steps (equal iterations). The last "
         "column is MCEM's RTF divided by the RTF of the SVI default.", "",
         f"| system | SI-SDRi | SI-SDRi at {' / '.join(snrs)} dB | PESQ-WB | STOI | RTF | SVI default faster by |",
         "|---|---|---|---|---|---|---|",
         row("SVI, default settings", sw, "–"), row(f"SVI, {iters} steps", eq, "–")]
    for n, m in mcem.items():
        L.append(row(f"MCEM, {n} EM iterations", m, f"{m['mean']['rtf'] / sw['mean']['rtf']:.1f}×"))
    L += _coverage_note([("SVI default", sw), (f"SVI {iters} steps", eq)]
                        + [(f"MCEM {n} iterations", m) for n, m in mcem.items()])
    ours = sw["mean"]["si_sdri"]
    beaten = [n for n, m in mcem.items() if m["mean"]["si_sdri"] <= ours]
    best = max(mcem, key=lambda n: mcem[n]["mean"]["si_sdri"])
    L.append("")
    if iters in mcem:
        m = mcem[iters]
        L.append(f"- Equal iterations ({iters} SVI steps vs {iters} EM iterations): SVI "
                 f"**{m['mean']['rtf'] / eq['mean']['rtf']:.1f}× faster**, SI-SDRi "
                 f"{_f(eq['mean']['si_sdri'])} vs {_f(m['mean']['si_sdri'])} dB.")
    if best in beaten:
        L.append(f"- Equal or better quality: the SVI default ({_f(ours)} dB) is at least as good as MCEM "
                 f"at every budget tried, including its best ({best} EM iterations, "
                 f"{_f(mcem[best]['mean']['si_sdri'])} dB), and "
                 f"**{mcem[best]['mean']['rtf'] / sw['mean']['rtf']:.1f}× faster** than that run.")
    else:
        better = min(n for n in mcem if n not in beaten)
        L.append(f"- Equal or better quality is not reached: MCEM with {better} EM iterations gives "
                 f"{_f(mcem[better]['mean']['si_sdri'])} dB against the SVI default's {_f(ours)} dB; "
                 f"SVI is {mcem[better]['mean']['rtf'] / sw['mean']['rtf']:.1f}× faster than that run.")
    return L


def _one_talker_section(evals: dict, key: str, facts: dict) -> list[str]:
    """Tables for one one-talker set: both splits by SNR, SI-SDRi by noise, the tuned/held gap
    (every mean like for like: within a split, all systems over the same mixtures)."""
    tuned, held = evals[key], evals[f"{key}_held"]
    L = [f"Tuned-on split ({facts[f'mixtures_{key}']} mixtures):", ""] + _system_table(tuned, by_snr=True)
    L += ["", f"Held-out split ({facts[f'mixtures_{key}_held']} mixtures):", ""]
    L += _system_table(held, by_snr=True)
    L += ["", "SI-SDRi (dB) by noise, tuned-on noises then held-out noises (n = mixtures of that "
          "noise every system of the split processed):", ""]
    L += _noise_breakdown(tuned, held)
    L += [""] + _gap_lines(tuned, held)
    return L


def _groups(summary: dict) -> list[dict]:
    """The like-for-like groups (one per number of talkers) of an evaluation's summary: the
    means of every system over the same mixtures (:func:`~.report.compare`, ``summary.json``'s
    ``like_for_like``), never each system over its own."""
    if "like_for_like" not in summary:
        raise ValueError("an evaluation summary without like_for_like means (evaluate() returns "
                         "them; older summary.json files lack them: rerun evaluate on that folder)")
    return list(summary["like_for_like"]["groups"].values())


def _noise_breakdown(tuned, held) -> list[str]:
    """Markdown: one row per system, one column per noise of either split; each split's cells
    over the mixtures of that noise that every system of the split processed."""
    cols = [(g, n) for s in (tuned, held) for g in _groups(s) for n in g["by_noise"]]
    head = ["system"] + [f"{n} (n={g['by_noise'][n]['mixtures']})" for g, n in cols]
    rows = []
    for name in dict.fromkeys(n for g in _groups(tuned) for n in g["systems"]):
        cells = [_f(g["by_noise"][n]["mean"].get(name, {}).get("si_sdri")) for g, n in cols]
        rows.append([name] + cells)
    return ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)] + \
        ["| " + " | ".join(r) + " |" for r in rows]


def _gap_lines(tuned, held) -> list[str]:
    """One line per system run on both splits: its tuned-on and held-out means (each the
    like-for-like mean of the tables above) and the difference."""
    out = []
    for a in _groups(tuned):
        b = next((g for g in _groups(held) if g["talkers"] == a["talkers"]), None)
        if not (a["common"] and b and b["common"]):
            continue
        for name in a["systems"]:
            if name in b["systems"] and name != "mixture":
                x, y = a["all"]["mean"][name]["si_sdri"], b["all"]["mean"][name]["si_sdri"]
                if x is not None and y is not None:
                    out.append(f"- {name}: tuned-on {_f(x)} dB, held-out {_f(y)} dB (gap {_f(x - y)} dB; "
                               f"n = {a['common']} / {b['common']} mixtures)")
    return out


def _coverage_note(entries) -> list[str]:
    """For tables whose rows come from separate runs of one system on one manifest (settings
    side by side): such rows compare the same mixtures exactly when no run skipped or failed
    any, which is what this line says, or else which runs lack how many (mixture, source) rows.
    ``entries``: ``[(label, per-system summary entry or None)]`` of the printed cells."""
    if not entries:
        return []
    short = {}
    for label, e in entries:
        missing = (e or {}).get("skipped", 0) + (e or {}).get("failed", 0)
        if missing:
            short[label] = f"{label} ({missing} of {missing + e.get('ok', 0)} rows)"
    if not short:
        return ["", "Each run behind this table processed every mixture of its split, so its rows "
                "compare the same mixtures."]
    return ["", "**Not like for like**: these runs lack rows (skipped or failed), so their means are "
            "over fewer mixtures than the others: " + ", ".join(short.values()) + "."]


def _noise_table(noise_rows: dict) -> list[str]:
    """Markdown: one row per noise-model setting, SI-SDRi / PESQ-WB on each one-talker split."""
    splits = list(dict.fromkeys(n for r in noise_rows.values() for n in r))
    head = ["setting"] + [f"{n}: SI-SDRi / PESQ-WB" for n in splits] + ["RTF (1spk)"]
    L = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    shown: list = []
    for label, per_split in noise_rows.items():
        cells = []
        for n in splits:
            sw = per_split.get(n, {}).get("systems", {}).get("switching") if per_split.get(n) else None
            cells.append(f"{_f(sw['mean']['si_sdri'])} / {_f(sw['mean']['pesq_wb'])}" if sw and sw["ok"]
                         else "–")
        one = per_split.get("1spk", {}).get("systems", {}).get("switching")
        cells.append(_f(one["mean"]["rtf"], 3) if one and one["ok"] else "–")
        L.append("| " + " | ".join([label] + cells) + " |")
        shown += [(f"{label} on {n}", (per_split.get(n) or {}).get("systems", {}).get("switching"))
                  for n in splits if per_split.get(n)]
    return L + _coverage_note(shown)


def _system_table(summary, by_snr: bool) -> list[str]:
    """Markdown: a row per system, every mean over the same mixtures for all systems (the
    like-for-like group of :func:`~.report.compare`; a table per number of talkers), under a
    line that says which mixtures (how many of how many, who shrank the set, who is left out).
    ``n``: (mixture, source) pairs (by SNR: mixtures at that SNR)."""
    from .report import comparison_caption, talker_title

    groups = _groups(summary)
    L: list[str] = []
    for group in groups:
        if L:
            L.append("")
        if len(groups) > 1:
            L += [f"{talker_title(group['talkers']).capitalize()}:", ""]
        L += [comparison_caption(group), ""]
        if not group["systems"] or not group["common"]:
            L.append("No mixture was processed by every system.")
            continue
        L += _group_table(group, by_snr)
    return L


def _group_table(group: dict, by_snr: bool) -> list[str]:
    mean = group["all"]["mean"]
    if by_snr:
        snrs = list(group["by_snr"])
        head = ["system"] + [h for k in snrs for h in
                             (f"SI-SDRi @ {k} dB (n={group['by_snr'][k]['mixtures']})",
                              f"PESQ-WB @ {k} dB", f"STOI @ {k} dB")] + ["p(true)", "RTF"]
        rows = []
        for name in group["systems"]:
            cells = []
            for k in snrs:
                m = group["by_snr"][k]["mean"][name]
                cells += [_f(m.get("si_sdri")), _f(m.get("pesq_wb")), _f(m.get("stoi"), 3)]
            rows.append([name] + cells + [_f(mean[name].get("switch_true_mass"), 3),
                                          _f(mean[name].get("rtf"), 3)])
    else:
        head = ["system", "n", "SI-SDRi", "SDR", "PESQ-WB", "STOI", "ESTOI", "swap rate", "p(true)", "RTF"]
        n = str(group["all"]["pairs"])
        rows = [[name, n] + [_f(mean[name].get(k), d) for k, d in
                             (("si_sdri", 2), ("sdr", 2), ("pesq_wb", 2), ("stoi", 3), ("estoi", 3),
                              ("swapped", 3), ("switch_true_mass", 3), ("rtf", 3))]
                for name in group["systems"]]
    return ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)] + \
        ["| " + " | ".join(r) + " |" for r in rows]
