"""What the results run compares: the noises it tunes on, the models it trains besides the
default ones, the systems of each split and the setting rows of every table (each constant says
how it was chosen or what it checks)."""

from ...settings.separation import SeparationSettings

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
    ("grid_temporal_narrow", ["lips.dilations=[]"],
     "learned lips over ±190 ms (`lips.dilations=[]`, the default before 2026-12-07), visual prior"),
)

#: the GRID model with the speech prior with memory (universal + speaker decoders), trained besides
#: the default for the frame-wise vs temporal prior rows
MEMORY_MODEL = ("grid_memory", ["model.memory=markov"])

#: the GRID models (universal + speaker decoders) trained again with seeds no setting was chosen
#: with (the default models use ``train.seed=0``): how much of the default's figures is seed 0's
#: (one training moves a figure by up to 0.8 dB, docs/findings.md, "Lips over ±450 ms"). Seeds 1
#: and 2 took part in choices (the lip window's and the networks' width were chosen on means over
#: seeds 0-2), so the seeds held out are 3 and 4
HELD_OUT_SEEDS = (3, 4)
SEED_MODELS = tuple((f"grid_seed{s}", [f"train.seed={s}"]) for s in HELD_OUT_SEEDS)

#: the guide's restart (``separate.restart_at``; auto: at step 20 in fits of two sources or more
#: with a model that has p(z | v), chosen on the two-talker tuned-on split among 15, 20 and 25);
#: the rows below that turn it off show what it changes
NO_RESTART = ["separate.restart_at=0"]
#: (label, model: "memory" or None for the default, separation overrides): the prior-with-memory
#: rows and the guide's restart (off, and extended to one talker), on both splits of one and two
#: talkers (the first is the default system itself)
MEMORY_ROWS = (
    ("frame-wise prior, mean-field guide (default)", None, None),
    ("frame-wise prior, Markov guide", None, ["separate.guide=markov"]),
    ("prior with memory, Markov guide", "memory", []),
    ("prior with memory, mean-field guide", "memory", ["separate.guide=meanfield"]),
    ("frame-wise prior, mean-field guide, no restart (the default before 2026-12-06)", None, NO_RESTART),
    ("frame-wise prior, mean-field guide, restarted with one talker too (`separate.restart_sources=1`)", None,
     ["separate.restart_sources=1"]),
)
MEMORY_SPLITS = ("1spk", "1spk_held", "2spk", "2spk_held")

#: (label, model: one of :data:`SEED_MODELS`' names or None for the default, separation overrides):
#: the default system with each held-out training seed, and with another seed of its own
#: randomness (the guide's draws, the noise's start), on both splits of one and two talkers
SEED_ROWS = (
    ("default: models of seed 0, separation seed 0 (every setting was chosen with these)", None, None),
    *((f"models trained with seed {s} (held out)", name, []) for s, (name, _) in zip(HELD_OUT_SEEDS, SEED_MODELS)),
    ("models of seed 0, separation seed 1 (`separate.seed=1`: the guide's draws, the noise's start)", None,
     ["separate.seed=1"]),
)

#: (label, model name or None for the default model, separation overrides): other ablation rows
ABLATION_SETTINGS = (
    ("default model, encoder-on-mixture start", None, ["separate.guide_init=encoder"]),
    ("default model, visual-prior start only", None, ["separate.guide_init=prior"]),
    ("default model, per-frame gains", None, ["separate.gain=frame"]),
    ("default model, encoder start and per-frame gains", None,
     ["separate.guide_init=encoder", "separate.gain=frame"]),
    ("PCA lips, N(0, I) prior, per-frame gains (the previous system)", "grid_pca_standard",
     ["separate.gain=frame"]),
    ("noisy encoder start for every source (one talker: its default)", "grid_noisy",
     ["separate.guide_encoder=noisy"]),
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
#: The default (``separate.switch_prior=auto``) is the first row for the GRID bank, which reads
#: lips, and the second for the audio-only LibriSpeech bank, so every row names its prior.
SWITCH_ROWS = (
    ("one component per utterance", None, ["separate.switch_prior=utterance"]),
    ("i.i.d. per frame", None, ["separate.switch_prior=iid"]),
    ("sticky Markov per frame, τ = 30 s", None, MARKOV_SWITCH),
)
#: (label, model: None for the split's speaker bank, overrides): the harmonic combs read from each
#: source's own estimate (``separate.harmonics_at``; 30 of 50 steps chosen on the tuned-on splits of
#: GRID one and two talkers among 20, 25, 30 and 35, 24 of 40 since the fit was shortened), each
#: source's pitch searched within its speakers' ranges and the sources' pitches chosen together
#: (``separate.harmonics_range``, ``separate.harmonics_choice``, both chosen on the two-talker
#: tuned-on split), against no combs and the first combs, on every split of :data:`SWITCH_SPLITS`
HARMONIC_ROWS = (
    ("read after 24 steps, within the speakers' ranges, chosen together (default)", None, None),
    ("none (`separate.harmonics_at=0`; the default before the combs)", None, ["separate.harmonics_at=0"]),
    ("read after 24 steps, every pitch, each source its own (`separate.harmonics_range=any`, "
     "`separate.harmonics_choice=each`)", None,
     ["separate.harmonics_range=any", "separate.harmonics_choice=each"]),
)
#: (label, model: None for the labelled speaker bank of the split's corpus or "switching" for the
#: bank trained on the speakers found without labels, overrides): the unlabelled banks in
#: separation, against the labelled ones, on one talker of each corpus
UNLABELLED_ROWS = (
    ("speaker labels (the default banks)", None, None),
    ("speakers found without labels (`train.labels: clustered`)", "switching", []),
)
UNLABELLED_SPLITS = ("1spk", "1spk_held", "libri", "libri_held")
#: the switch-prior table's splits; the LibriSpeech ones are separated with the audio-only
#: LibriSpeech speaker bank (10 speakers), the others with the GRID audio-visual one
SWITCH_SPLITS = ("1spk", "2spk", "1spk_held", "2spk_held", "libri", "libri_held")

#: corruptions of the target's lips (:mod:`~pyro_avss.data.lip_corruption`) in the lips-robustness
#: table, besides intact lips, on the tuned-on splits of one and two talkers
LIP_CORRUPTIONS = ("missing:0.3", "missing:0.6", "noise:0.3", "swap:0.3")
LIPS_SPLITS = ("1spk", "2spk")
#: (label, model: None for the GRID speaker bank or "twins" for it with audio-only twins
#: (``model.audio_only_twins``), system, overrides): the rows of the lips-robustness table
LIPS_ROWS = (("one component per utterance (default)", None, "switching", None),
             ("one component per utterance, no mouth gate", None, "switching", ["separate.lip_gate=false"]),
             ) + tuple(
    (label, None, "switching", changes) for label, _, changes in SWITCH_ROWS[1:]) + (
    ("one component per utterance, per-frame gains", None, "switching", ["separate.gain=frame"]),
    ("one component per utterance, no guide restart (the default before 2026-12-06)", None, "switching",
     NO_RESTART),
    ("audio-only twins, one component per utterance", "twins", "switching", []),
    ("audio-only twins, sticky Markov per frame, τ = 30 s", "twins", "switching", MARKOV_SWITCH),
    ("audio-only twins, one speaker per utterance, sticky chain over its two decoders, τ = 30 s", "twins",
     "switching", ["separate.switch_prior=speaker", "separate.stay_seconds=30"]),
    ("audio-only twins, one speaker per utterance, sticky chain over its two decoders, τ = 30 s, "
     "no mouth gate", "twins", "switching",
     ["separate.switch_prior=speaker", "separate.stay_seconds=30", "separate.lip_gate=false"]),
    ("universal model", None, "universal", None))

#: the step-count check of the noise table: 4× the default steps (whatever the default is)
_FOUR_TIMES_THE_STEPS = f"separate.steps={4 * SeparationSettings().steps}"

#: (label, separation overrides, splits): the noise-model rows, each against the default
#: (``separate.noise_smoothness=0.1``, ``separate.prior_weight=3``, 4 of the 8 bases from the
#: pauses where the bank reads lips) on tuned-on and held-out data
_ALL_ONE_TALKER = ("1spk", "1spk_held", "libri", "libri_held")
NOISE_SETTINGS = (
    ("free NMF activations, prior weight 1 (the previous defaults)",
     ["separate.noise_smoothness=0", "separate.prior_weight=1"], _ALL_ONE_TALKER),
    ("smooth activations, prior weight 1", ["separate.prior_weight=1"], _ALL_ONE_TALKER),
    ("free activations, prior weight 3", ["separate.noise_smoothness=0"], _ALL_ONE_TALKER),
    ("noise started from the frames where the lips are closed",
     ["separate.noise_start=lips"], ("1spk", "1spk_held")),
    ("no noise bases from the pauses (all 8 learnt; the previous default)",
     ["separate.noise_pause_rank=0"], ("1spk", "1spk_held")),
    ("pause bases' activations slower than the learnt ones' (σ 0.05 nats per frame, not 0.1)",
     ["separate.noise_pause_smoothness=0.05"], ("1spk", "1spk_held")),
    ("learnt noise bases spectrally smooth (σ_f = 0.15 nats per bin; the pause bases keep their own)",
     ["separate.noise_spectral_smoothness=0.15"], _ALL_ONE_TALKER),
    ("no pause bases, 4 of the 8 noise bases spectrally smooth (σ_f = 0.15), 4 free",
     ["separate.noise_spectral_smoothness=0.15", "separate.noise_smooth_rank=4", "separate.noise_pause_rank=0"],
     _ALL_ONE_TALKER),
    ("default, 4× the steps, no early stop", [_FOUR_TIMES_THE_STEPS, "separate.tol=0"],
     ("1spk", "1spk_held")),
    ("default, 4× the steps, no early stop, slow rate decay (0.99)",
     [_FOUR_TIMES_THE_STEPS, "separate.tol=0", "separate.lr_decay=0.99"], ("1spk", "1spk_held")),
)

#: the noise-model table's row for the speaker banks with a noisy encoder (train.mode=noisy_encoder,
#: configs/*_noisy_encoder.yaml) starting the one-talker guide (`separate.guide_encoder=noisy`; its
#: `auto` uses it with audio-visual banks only); its noise prior and SNR range were set once,
#: before any mixture was separated with it
NOISY_ENCODER_ROW = ("guide started by the noisy encoder (distilled with noise from an NMF prior)",
                     ["separate.guide_encoder=noisy"], _ALL_ONE_TALKER)


#: smaller MCEM budgets (EM iterations) run besides the published 100, to compare at equal quality
MCEM_BUDGETS = (20, 50)
