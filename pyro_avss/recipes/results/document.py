"""``docs/results.md``: the document of the results run, from its facts and evaluation summaries."""

from __future__ import annotations

import os
import platform
import shutil
from pathlib import Path

import torch

from pyro_avss.recipes.results.experiments import (ABLATION_MODELS, BABBLE_HELD, BABBLE_TUNED, LIPS_SPLITS,
                                                   MEMORY_MODEL, SEED_MODELS, SWITCH_SPLITS, TUNED_NOISES,
                                                   UNLABELLED_SPLITS)
from pyro_avss.recipes.results.tables import (_coverage_note, _f, _mcem_comparison, _noise_table,
                                              _one_talker_section, _system_table, lips_table, settings_table,
                                              quality_table, switch_table)


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
                     out_dir: Path, doc: Path, memory: dict | None = None, lips: dict | None = None,
                     unlabelled: dict | None = None, seeds: dict | None = None,
                     harmonics: dict | None = None) -> str:
    """Markdown for ``docs/results.md`` from the collected facts and evaluation summaries (the
    plots it shows are copied next to ``doc``)."""
    _copy_plots(out_dir, doc)
    s1 = evals["1spk"]
    L = _preamble(facts, command) + _training_section(facts) + _speaker_sections(evals, facts, noise_rows)
    L += _ablation_section(evals, ablation)
    if seeds:
        L += _seed_section(seeds)
    if memory:
        L += _memory_section(memory)
    L += _switch_section(s_switch)
    if harmonics:
        L += _harmonics_section(harmonics)
    if unlabelled:
        L += _unlabelled_section(unlabelled)
    if lips:
        L += _lips_section(lips)
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


def _copy_plots(out_dir: Path, doc: Path) -> None:
    plots = doc.parent / "results"
    plots.mkdir(parents=True, exist_ok=True)
    for src, name in ((out_dir / "eval_1spk" / "metrics_vs_snr.png", "metrics_vs_snr_1spk.png"),
                      (out_dir / "models" / "grid_universal" / "learning_curve.png", "learning_curve_grid_universal.png")):
        if src.exists():
            shutil.copy(src, plots / name)


def _preamble(facts: dict, command: str) -> list[str]:
    """The title, the command and machine, and what the tuned-on and held-out splits are."""
    found = facts.get("evaluations_found", 0)
    return ["# Results", "",
            f"Produced by `{command}` in {facts['total_wall_s'] / 60:.1f} minutes on: {_machine()}.",
            "Every number below comes from that run; nothing is edited by hand."
            + (f" Models trained earlier with the same configs were reused ({', '.join(facts['reused'])}); "
               "their training figures come from their logs." if facts.get("reused") else "")
            + (f" {found} of its {facts.get('evaluations', found)} evaluations were already in the "
               "output folder from an earlier invocation of the same command; each resumed where it "
               "had stopped (finished mixtures are not separated again), so the time above is "
               "this invocation's only." if found else ""), "",
            "**Tuned-on and held-out mixtures.** Every separation setting was chosen on the *tuned-on* "
            f"split: GRID dev targets (10 s1 clips, the 7 s4 clips) and the first dev utterance of each "
            f"LibriSpeech speaker, in the noises {', '.join(TUNED_NOISES)} and babble{BABBLE_TUNED} "
            f"({BABBLE_TUNED} LibriSpeech pool talkers). The *held-out* split was looked at by no "
            "choice: 10 other s1 dev clips (and the same 7 s4 clips, the only s4 dev clips there are), "
            "the other LibriSpeech dev utterances, the other real noises of the data and "
            f"babble{BABBLE_HELD} ({BABBLE_HELD} other pool talkers), other random draws (seeds). Each "
            "noise gets as many targets. Both splits are reported; the gap between them is the "
            "honest measure of how much the choices were fitted to the tuned-on data.", ""]


def _training_section(facts: dict) -> list[str]:
    """Every model's training figures, the speaker decoders' scores and the unlabelled switch's
    clusters."""
    from pyro_avss.evaluation.speaker_models import format_speaker_table

    L = ["## Training", "",
         "| model | epochs | best dev loss (nats/frame) | training throughput (frames/s) | components |",
         "|---|---|---|---|---|"]
    names = ["grid_universal", "grid_speakers", "grid_switching", "libri_universal", "libri_speakers"]
    names += [f"{n}_{part}" for n, _, _ in ABLATION_MODELS for part in ("universal", "speakers")]
    names += [f"{name}_{part}" for name, _ in (MEMORY_MODEL, *SEED_MODELS) for part in ("universal", "speakers")]
    for key in names:
        f = facts[key]
        L.append(f"| {key} | {f['epochs']} | {_f(f['best_dev_loss'], 1)} | {f['frames_per_s']:.0f} | "
                 f"{', '.join(f['components'])} |")
    noisy = [(key, facts[key]["noisy_encoder"]) for key in ("grid_noisy", "libri_noisy")
             if facts.get(key, {}).get("noisy_encoder")]
    L += [""] if noisy else []
    for key, d in noisy:
        L.append(f"- {key}: the speaker bank plus a noisy encoder distilled in {d['epochs']} epochs "
                 f"(kept: epoch {d['epoch']}, KL to the speech encoder's code of the clean clip "
                 f"{d['dev_kl']:.2f} nats per frame on the dev clips, "
                 f"{facts[key]['frames_per_s']:.0f} frames/s)")
    L += ["", "The default GRID models (`grid_*`) use the learned temporal lip encoder and the visual "
          "prior p(z | v) (`configs/grid_universal.yaml`); the ablation models differ only in "
          "`lips.front_end` and `model.prior`.", "",
          "### Speaker decoders: negative ELBO per frame on each dev speaker (lower is better)", "",
          "GRID (audio-visual):", "", format_speaker_table(facts["grid_table"]), "",
          f"Own decoder best on its speaker: {facts['grid_table']['own_component_best']}", "",
          "LibriSpeech (audio only):", "", format_speaker_table(facts["libri_table"]), "",
          f"Own decoder best on its speaker: {facts['libri_table']['own_component_best']}", ""]
    clusters = [("clusters_train", "K = 2, pooled GRID s1 + s4), train"),
                ("clusters_dev", "K = 2, pooled GRID s1 + s4), dev"),
                ("clusters_libri_dev", "K = 10, the LibriSpeech speakers), dev")]
    for key, what in clusters:
        if key not in facts:               # a run from before the LibriSpeech clusters
            continue
        p = facts[key]
        L.append(f"- Unlabelled switching VAE (clips clustered first, {what} clips: balanced "
                 f"accuracy **{p['balanced_accuracy']:.1%}**, NMI **{p['nmi']:.3f}** over {p['clips']} "
                 "clips; recall per speaker " + ", ".join(f"{k} {v:.1%}" for k, v in p["recall"].items())
                 + f"; mapping {p['mapping']}.")
    return L


def _speaker_sections(evals: dict, facts: dict, noise_rows: dict) -> list[str]:
    """One talker (GRID, LibriSpeech, the noise-model rows), two and three talkers."""
    L = ["", "## One speaker + real noise (GRID dev, s1 or s4 target)", "",
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
          "weights the speech prior 3× at test time (`separate.prior_weight=3`); where the bank reads "
          "lips, 4 of its 8 bases are learnt before the fit from the pauses — the frames where the lips "
          "say nobody speaks — and held fixed (`separate.noise_pause_rank=4`); all were chosen on "
          "the tuned-on noises. The 4×-step rows check that quality does not hang on stopping early. "
          "The noisy-encoder row separates with the same speaker banks plus an encoder distilled from "
          "the speech encoder on their clean training clips with noise drawn from an NMF prior "
          "(`train.mode=noisy_encoder`; no noise recording, no real mixture), which starts the guide.",
          ""]
    L += _noise_table(noise_rows)
    L += ["", "![metrics vs SNR](results/metrics_vs_snr_1spk.png)", "",
          "## Two speakers + noise (s1 + s4, each with its own video, SNR 0 and 5 dB, SIR 0 dB)", "",
          "Every target with a dev clip of the other speaker at equal level; both sources scored "
          "(n = sources). Swap rate: share of sources whose estimate is closer (SI-SDR) to the other "
          "talker than to its own.", "", "Tuned-on split:", ""]
    L += _system_table(evals["2spk"], by_snr=False)
    L += ["", "Held-out split:", ""]
    L += _system_table(evals["2spk_held"], by_snr=False)
    L += ["", "## Three speakers + noise (s1 + s4 + a second s1 clip, each with its video, SNR 5 dB, "
          "SIR 0 dB)", ""]
    L += _system_table(evals["3spk"], by_snr=False)
    if "2spk_same" in evals:                 # runs written before this split existed have none
        L += _one_voice_section(evals)
    return L


def _one_voice_section(evals: dict) -> list[str]:
    """Two talkers of one speaker: both splits."""
    L = ["", "## Two talkers of one speaker + noise (s1 + another s1 clip, each with its video, SNR 0 "
         "and 5 dB, SIR 0 dB)", "",
         "Both sources are the same person, so the speaker decoders, the switch and the pitch ranges "
         "cannot tell them apart: only each source's lips bind its voice to it. No setting was "
         "chosen on either split. `oracle-latent` (each source decoded from its clean signal's code) "
         "is the ceiling of envelope-only speech models here.", "", "Tuned-on noises:", ""]
    L += _system_table(evals["2spk_same"], by_snr=False)
    L += ["", "Held-out noises:", ""]
    return L + _system_table(evals["2spk_same_held"], by_snr=False)


def _section(title: str, intro: str, body: list[str]) -> list[str]:
    """A ``##`` section of the document: its title, a paragraph, then ``body``."""
    return ["", f"## {title}", "", intro, ""] + body


def _ablation_section(evals: dict, ablation: dict) -> list[str]:
    """The visual-pathway models and separation settings against the default, on one and two
    talkers."""
    s1, s2 = evals["1spk"], evals["2spk"]
    L = _section(
        "Visual pathway ablation (tuned-on split, switching system)",
        "Learned lips: the temporal lip encoder (`lips.front_end=temporal`) instead of the per-frame "
        "PCA projection; visual prior: `model.prior=visual` instead of N(0, I). The model rows are "
        "separated with `guide_init=auto` (the product of the encoder-on-mixture and the "
        "visual-prior Gaussians where the model has a visual prior, else the encoder alone) and "
        "one gain per source and chunk (`gain=utterance`). The model rows also separate the two "
        "talkers of one speaker (s1 + s1), where only the lips tell the sources apart.",
        ["| model / separation | 1 speaker: SI-SDRi | 2 speakers: SI-SDRi | 2 speakers: swap rate | "
         "2 speakers: p(true) | 2 speakers: RTF | 2 talkers of one speaker: SI-SDRi / swap rate |",
         "|---|---|---|---|---|---|---|"])
    rows = [("**default: learned lips, visual prior, lip-specific start, per-utterance gain**",
             {"1spk": s1, "2spk": s2, "2spk_same": evals.get("2spk_same")})] + list(ablation.items())
    shown = []
    for label, pair in rows:
        a, b = pair["1spk"]["systems"].get("switching"), pair["2spk"]["systems"].get("switching")
        c = pair["2spk_same"]["systems"].get("switching") if pair.get("2spk_same") else None
        if a and b:
            same = f"{_f(c['mean']['si_sdri'])} / {_f(c['mean']['swapped'], 3)}" if c else "–"
            L.append(f"| {label} | {_f(a['mean']['si_sdri'])} | {_f(b['mean']['si_sdri'])} | "
                     f"{_f(b['mean']['swapped'], 3)} | {_f(b['mean']['switch_true_mass'], 3)} | "
                     f"{_f(b['mean']['rtf'], 3)} | {same} |")
            shown += [(f"{label} on {n}", e) for n, e in (("1spk", a), ("2spk", b), ("2spk_same", c)) if e]
    L += _coverage_note(shown)
    return L


def _seed_section(seeds: dict) -> list[str]:
    return _section(
        "Held-out seeds (switching system, tuned-on and held-out splits)",
        "Every setting was chosen with the models trained with seed 0 and separated with "
        "`separate.seed=0`. The GRID universal model and speaker decoders trained again by the "
        "same configs with "
        + " and ".join(f"`{c[0]}` (`{n}_*` in the training table)" for n, c in SEED_MODELS)
        + " were used by no choice; the separation seed sets the guide's draws and the noise's random "
        "start. The spread between the rows is how far a figure of the other tables may move for "
        "reasons no setting controls.",
        settings_table(seeds, "models / separation"))


def _memory_section(memory: dict) -> list[str]:
    return _section(
        "Speech prior with memory, and the guide's restart (switching system, tuned-on and "
        "held-out splits)",
        "The frame-wise prior draws every frame's `z` independently from the visual prior; the "
        "prior with memory (`model.memory=markov`, trained as the default GRID models otherwise) "
        "chains the same per-frame means and scales over frames with a learnt correlation per "
        "latent dimension. The Markov guide (`separate.guide=markov`) chains the test-time "
        "`q(z)` likewise, with one fitted correlation per source and dimension. By "
        "default (`separate.restart_at`, auto) the guide of a fit of two sources or more is "
        "restarted after 20 SVI steps: multiplied by the encoder's code of each source's own "
        "Wiener estimate (with its lips, times the visual prior), where it started from the "
        "mixture all sources share, and Adam starts again for it. The no-restart row turns that "
        "off (equal to the default with one talker); `separate.restart_sources=1` extends it to "
        "one talker.",
        settings_table(memory, "prior / guide"))


def _switch_section(s_switch: dict) -> list[str]:
    return _section(
        "Switch prior: one component per utterance, i.i.d. per frame or a sticky Markov chain "
        "per frame",
        "The switching system with each switch prior, on both splits: GRID with its audio-visual "
        "speaker bank (s1, s4) and LibriSpeech (`libri` columns) with its audio-only bank of 10 "
        "speakers. The default (`separate.switch_prior=auto`) is one component per utterance for "
        "a bank that reads lips and i.i.d. per frame for an audio-only one: each chosen on the "
        "tuned-on splits of its corpus. `p(true)`: mean switch posterior "
        "on the true speaker's component over speech frames. The Markov chain keeps its component "
        "from one frame to the next with probability ρ = exp(−hop / τ) (`separate.stay_seconds=τ`); "
        "its setting was chosen on the tuned-on split among ρ = 0.98 (`separate.stay_prob`), "
        "τ = 0.1, 0.5, 2, 30 and 600 s and ρ learnt per source and chunk (`separate.learn_stay=true`).",
        switch_table(s_switch))


def _harmonics_section(rows: dict) -> list[str]:
    return _section(
        "Harmonic combs from each source's own estimate (switching system, every split)",
        "With `separate.harmonics_at=n`, after n SVI steps each source's pitch in every frame is "
        "read from its own Wiener estimate and its speech variance is multiplied by the harmonic "
        "comb of that pitch for the rest of the fit (`pyro_avss/models/harmonics.py`); the "
        "decoders give only the envelope. Each source searches its pitch within the ranges of the "
        "components its switch posterior holds (read by `fit` from their training clips) and the "
        "sources' pitches are chosen together, among each one's 8 best, to explain the mixture's "
        "fine structure. The step (30 of 50) was chosen on the tuned-on splits of GRID one and two "
        "talkers among 20, 25, 30 and 35 and became 24 of 40 when the fit was shortened, the "
        "ranges and the joint choice on the two-talker tuned-on split (the figures of those "
        "choices are in the comments of `separate.harmonics_at`, `harmonics_range` and "
        "`harmonics_choice`). The combs are the default: every other table of this page has them.",
        quality_table(rows, SWITCH_SPLITS, "harmonic combs"))


def _unlabelled_section(rows: dict) -> list[str]:
    return _section(
        "Speakers found without labels, in separation (switching system, one talker)",
        "The banks trained on the speakers `train.labels: clustered` finds (the unlabelled "
        "switching VAEs of the training section: GRID s1 + s4, the 10 LibriSpeech speakers), "
        "separating the same mixtures as the banks trained with speaker labels, with the same "
        "separation settings.",
        quality_table(rows, UNLABELLED_SPLITS, "speaker bank"))


def _lips_section(lips: dict) -> list[str]:
    from pyro_avss.evaluation.report import talker_title

    body = []
    for n in LIPS_SPLITS:
        body += [f"{talker_title(1 if n == '1spk' else 2).capitalize()} (target rows only):", ""]
        body += lips_table(lips[n]) + [""]
    return _section(
        "Lips robustness (GRID dev, tuned-on split): the target's lips missing or corrupted",
        "The target's video (source 1) loses its face in blocks of 0.5 s covering 30 % or 60 % of "
        "its frames (`missing`: the model is told, `present = 0`), or, for 30 % of its frames, "
        "its mouth regions are replaced by pixel noise (`noise`) or by those of another clip of "
        "the same speaker (`swap`), with `present = 1` (the model is not told); the audio and the "
        "references are unchanged (`cli.py mix --lips`, `pyro_avss.data.lip_corruption`). Every "
        "row reads the video through the model's mouth gate (`separate.lip_gate`, on by "
        "default), which treats a frame whose mouth region lies far off the subspace of the "
        "training mouths as a frame without a face: it catches every pixel-noise frame here and "
        "none of the swapped ones (real mouths); the no-gate rows show what it changes. The "
        "switching rows use the audio-visual speaker bank (s1, s4), the twins rows that bank "
        "with an audio-only twin of each speaker's decoder in the same latent space "
        "(`model.audio_only_twins`), to which the switch can hand the frames whose lips mislead "
        "(the speaker-switch row, `separate.switch_prior=speaker`, keeps one speaker per source "
        "and utterance and lets only its decoder and its twin take turns from frame to frame); "
        "the universal row is the universal audio-visual model alone. The "
        "per-frame-gains row (`separate.gain=frame`) checks how much of the loss comes from "
        "the default gain, one per source and chunk, which leaves the speech level from frame "
        "to frame to the lips; the no-restart row, how much the guide's restart (default with "
        "two talkers) changes. Cells: the target's SI-SDRi (dB) / p(true), with two talkers "
        "also / its swap rate.",
        body)
