"""Settings of test-time separation: the ``separate`` section of a config.

:class:`SeparationSettings` holds every option of :func:`~pyro_avss.inference.separation.separate_recordings`
and :func:`~pyro_avss.inference.batch_fit.fit_batch`; its field defaults are the defaults (the
comments give what each key does and what it measured), and a value out of range is refused with
a :class:`~pyro_avss.errors.SettingError` naming its key when the settings are built, before any
work starts.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..errors import SettingError
from .base import Rule, Section, above, at_least, key, within
from .training import DEFAULT_STAY

if TYPE_CHECKING:
    from ..checkpoint import SpeechModels

SWITCH_PRIORS = ("iid", "markov", "utterance", "speaker")      # the names make_switch builds
GUIDE_INITS = ("encoder", "prior", "product")
GUIDES = ("meanfield", "markov")
GUIDE_ENCODERS = ("speech", "noisy")
GAINS = ("frame", "utterance", "faceless")
NOISE_STARTS = ("flat", "lips", "auto")
ENUMERATIONS = ("marginal", "pyro")
NOISE_UPDATES = ("adam", "mu")
#: the guide's restart step where ``separate.restart_at`` is auto and the model has p(z|v)
AUTO_RESTART_STEP = 20


@dataclass
class SeparationSettings(Section, name="separate"):
    """The ``separate`` section; the comments say what each key does."""

    switch_prior: str = key("auto", choices=("auto",) + SWITCH_PRIORS)
                                     # utterance (one component per source and chunk) | iid | markov
                                     # | speaker (one speaker per source and chunk, a sticky chain
                                     # over its decoders per frame: a twins bank's audio-visual and
                                     # audio-only ones; pyro_avss/models/speaker_switch.py)
                                     # | auto: utterance for a bank with lips, iid for an audio-only
                                     # one (switch_prior_for). Tuned splits, SI-SDRi: GRID (lips)
                                     # one / two talkers utterance 8.13 / 7.07, iid 7.95 / 5.68,
                                     # markov (τ = 30 s) 8.00 / 5.68; LibriSpeech (audio only, 10
                                     # speakers) utterance 3.06, iid 3.61, markov 3.57; the GRID
                                     # bank without its videos utterance 0.16, iid 0.53 dB
    # the Markov switch's stay probability ρ (per frame) comes from at most one of two keys:
    stay_prob: float | None = key(None, within(0, 1, "()"))
                                     # ρ itself, in (0, 1); null = 0.98 unless stay_seconds is set
    stay_seconds: float | None = key(None, Rule("> 0 (seconds)", lambda x: 0 < x < math.inf))
                                     # or a time constant τ (s): ρ = exp(-hop / τ), hop from the
                                     # model's STFT (τ = 0.8 s ~ 0.98 at a 16 ms hop); null = unused.
                                     # Tuned split (mean of one and two talkers): ρ 0.98 6.81, τ 0.1
                                     # / 0.5 / 2 / 30 / 600 s 6.76 / 6.80 / 6.82 / 6.84 / 6.78 dB
    learn_stay: bool = False         # true: ρ (started as above) is fitted per source and chunk by
                                     # SVI with the rest (its logit a pyro.param); markov, speaker.
                                     # From 0.98 it fell to 0.92 (one talker) / 0.88 (two): 6.77 dB
    audio_only_share: float = key(0.5, within(0, 1, "()"))
                                     # speaker switch: the prior share of a speaker's frames that
                                     # go to its audio-only decoders (twins), the rest to its
                                     # audio-visual ones; a speaker with one kind only ignores it
    noise_rank: int = key(8, at_least(1))
    noise_init_level: float = key(6.0, above(0))
                                     # initial E[noise variance] / mean mixture power (flat spectrum)
    noise_start: str = key("flat", choices=NOISE_STARTS)
                                     # flat (E[WH] = noise_init_level, every bin alike) | lips
                                     # (the same level shaped like the mixture over the frames
                                     # where every source's lips are closed; needs p(z|v) and
                                     # videos, else flat) | auto (lips where possible). Tuned
                                     # split: flat 8.13, lips 7.62 dB (one talker), 7.07 vs 6.61
                                     # (two talkers), so flat stays
    noise_smoothness: float = key(0.1, at_least(0))
                                     # σ of the log-activation random walk (nats/frame); 0 = free
                                     # H. Chosen on the tuned noises: 0 -> 7.46, 0.05 -> 7.78,
                                     # 0.1 -> 7.94, 0.3 -> 7.77 dB (GRID one talker, babble
                                     # 1.7 -> 3.2 dB)
    noise_spectral_smoothness: float = key(0.0, at_least(0))
                                     # σ_f of the NMF bases' log-spectrum random walk
                                     # over frequency (nats/bin); 0 = free bases. Tuned split,
                                     # one talker: 0 -> 8.13, 0.1 -> 8.92, 0.15 -> 8.97 dB
                                     # (babble 3.5 -> 6.0); held-out: 6.16 -> 5.99 (sheep and
                                     # hens, harmonic noises, lose 0.5-1 dB), so 0 stays
    noise_smooth_rank: int | None = None
                                     # how many of the learnt noise bases (those not from the
                                     # pauses) are spectrally smooth (the others are free);
                                     # null = all of them. Without pause bases, with σ_f 0.15
                                     # and 4 of 8: GRID tuned 8.53, held-out 6.59 (default 8.13
                                     # / 6.16), LibriSpeech 3.16 / 0.64 (default 3.10 / 1.24)
    noise_pause_rank: int = key(4, at_least(0))
                                     # how many of the noise_rank bases are learnt before the fit
                                     # from the pauses (the frames where every source's lips say
                                     # nobody speaks, inference.activity.pause_frames) and held
                                     # fixed; 0 = none. Needs a visual prior (else every basis
                                     # is learnt); a recording without video or pauses gets flat
                                     # ones (a white floor). GRID one talker, tuned split: 0 ->
                                     # 8.36, 4 -> 8.82, 8 (no learnt basis) -> 7.20 dB;
                                     # held-out 5.67 -> 7.12 (hens 3.7 -> 6.1, sheep 6.9 ->
                                     # 12.2); two talkers tuned 7.36 -> 7.16, held-out 6.51 -> 6.78
    noise_pause_smoothness: float | None = key(None, above(0))
                                     # σ of the pause bases' log-activation random walk (nats/
                                     # frame; null = noise_smoothness). GRID one talker, tuned
                                     # split: 0.02 -> 8.92, 0.05 -> 8.96, null (0.1) -> 8.82,
                                     # 0.2 -> 8.81 dB; but 0.05 lowers PESQ-WB (tuned 1.52 ->
                                     # 1.50, held-out 1.48 -> 1.46 for 7.12 -> 7.20 dB) and
                                     # loses 0.24 dB with corrupted lips, so null stays
    noise_pause_threshold: float = key(0.2, within(0, 1, "()"))
                                     # a pause frame's lips predict a speech level in the lowest
                                     # this share of the utterance's range. Against the clean
                                     # speech's silence (frames 20 dB under the loudest) on the
                                     # 17 tuned-on GRID targets, six models (two lip encoders,
                                     # three seeds each): 0.1 finds 29-51 % of the silent frames,
                                     # 0.2 62-73 %, at the same precision (93-95 %); 0.3 loses
                                     # precision. SI-SDRi, tuned split (0.1 -> 0.2): 8.89 -> 8.95
                                     # (one talker), 8.28 -> 8.37 (two), default models of seed 0
    noise_pause_margin: float = key(0.08, at_least(0))
                                     # ... and it is this many seconds from any frame that is not
                                     # silent (0.08 s = 5 frames at a 16 ms hop; 0 s: 8.64 dB)
    noise_pause_iterations: int = key(50, at_least(1))
                                     # multiplicative updates of the pauses' IS-NMF. GRID tuned
                                     # split, one / two talkers: 200 -> 8.98 / 8.30 dB, 100 ->
                                     # 8.97 / 8.31, 50 -> 8.96 / 8.28 (held-out 7.44 / 7.84 for
                                     # both 200 and 50); 50 takes 0.92x the separation time
                                     # of 200 (3-s clips, batches of 8 or one, 2 threads)
    steps: int = key(40, at_least(1))
                                     # SVI iteration cap; 100 or 200 steps without early stop give
                                     # 8.18 or 8.20 dB against 8.13 (tuned one talker): the
                                     # decaying rate has settled by then. 40 (with lr_decay 0.94
                                     # and harmonics_at 24) since 2026-12-07, at 0.81-0.85x the
                                     # time of 50 / 0.95 / 30: GRID one / two / three talkers
                                     # and LibriSpeech, tuned-on 8.89 / 8.28 / 6.23 / 4.24
                                     # against 8.94 / 8.28 / 6.22 / 4.14 dB; held-out 7.43 /
                                     # 7.76 / - / 2.74 against 7.41 / 7.78 / - / 2.83; 35 steps
                                     # (0.93, combs at 21) 8.77 one talker. Shorter fits want a
                                     # slower decay (one talker, tuned-on, against 8.74 for 40
                                     # steps, models of 2026-12-07; lr_decay, harmonics_at in
                                     # brackets): 20 (0.97, 12) 8.21, 16 (0.98, 10) 8.25, 12
                                     # (0.814 / 0.85 / 0.9, 7-8) 6.11 / 6.82 / 7.72, 10 (0.95, 6)
                                     # 7.98, 8 (1.0, 5) 7.79, 6 (1.0, 4) 7.32
    tol: float = key(1e-4, at_least(0))
                                     # stop when the relative change of the loss EMA is below this
    lr: float = key(0.4, above(0))   # Adam's first learning rate ...
    lr_decay: float = key(0.94, within(0, 1, "(]"))
                                     # ... multiplied by this after every step (0.4 -> 0.034 at 40)
    num_samples: int = key(8, at_least(1))       # z samples for the Wiener filter
    mask_smoothing: int = key(2, at_least(0))
                                     # each source's Wiener mask is averaged over this many
                                     # frames on each side (triangular weights) before the
                                     # inverse STFT, the noise taking the rest; 0 = none
                                     # (inference.separation.smoothed_masks). GRID one talker,
                                     # tuned split, SI-SDRi / PESQ-WB: 0 -> 8.96 / 1.52, 1 ->
                                     # 8.97 / 1.55, 2 -> 8.94 / 1.57, 3 -> 8.87 / 1.59, 5 ->
                                     # 8.64 / 1.58; two talkers 0 -> 2: 8.28 / 1.40 -> 8.28 /
                                     # 1.43; held-out 7.44 / 1.49 -> 7.41 / 1.52 and 7.84 / 1.35
                                     # -> 7.79 / 1.37 (STOI +0.003 to +0.007 everywhere);
                                     # LibriSpeech tuned 4.10 / 1.20 -> 4.21 / 1.26, held-out
                                     # 2.80 / 1.26 -> 2.83 / 1.33
    restart_at: int | None = key(None, at_least(0))
                                     # after this many steps, restart q(z) at its product with
                                     # the encoder's code of each source's own Wiener estimate,
                                     # Adam afresh for it (pyro_avss.inference.guide_restart);
                                     # 0 = never; null = auto: 20 for a model with a visual prior
                                     # p(z|v), else never (restart_step_for). Step 20 was chosen
                                     # on the GRID two-talker tuned-on split (15 / 20 / 25: 7.78 /
                                     # 7.83 / 7.56 dB; none 7.16; seed 1 7.78 against 7.24);
                                     # held-out 6.78 -> 6.94, three talkers 5.31 -> 5.54, the
                                     # target's face missing on 30 / 60 % of frames 4.71 / 3.37 ->
                                     # 4.84 / 3.55 (held-out 5.30 / 3.45 -> 5.57 / 3.26). Models
                                     # without p(z|v) lose with it (PCA lips and N(0, I) 1.01 ->
                                     # -1.19 dB, learned lips and N(0, I) 5.27 -> 5.23), hence auto
    restart_sources: int = key(2, at_least(1))
                                     # ... in fits of at least this many sources (and with the
                                     # model's own guide, not a make_guide's): one talker
                                     # 8.93 / 7.01 dB tuned-on / held-out against 8.82 / 7.12
    harmonics_at: int = key(24, at_least(0))
                                     # after this many steps, read each source's pitch in every
                                     # frame from its own Wiener estimate and multiply its
                                     # speech variance by the harmonic comb of that pitch for the
                                     # rest of the fit (pyro_avss.models.harmonics); 0 = never.
                                     # 30 chosen on the GRID tuned-on splits (one talker 20 / 30:
                                     # 9.34 / 9.28 dB against 8.82; two talkers 20 / 25 / 30 / 35:
                                     # 7.79 / 8.06 / 8.11 / 8.12 against 7.83; 8.07 / 8.29 at 20 /
                                     # 30 once each source's match lost half the others').
                                     # The default since the night of 2026-12-06, with the
                                     # speakers' ranges and the joint choice (docs/results.md of
                                     # that day's run has it off but in its combs table);
                                     # 24 since the fit became 40 steps (see steps)
    harmonics_range: str = key("speaker", choices=("speaker", "any"))
                                     # speaker: each source reads its pitch within the range of
                                     # the components its switch posterior holds (read from
                                     # their training clips by fit; none in older model files)
                                     # | any: every pitch. Two talkers, combs at 30 (one-off,
                                     # models of 2026-12-06): 7.90 -> 8.01 dB tuned-on, 7.26 ->
                                     # 7.49 held-out; seed-1 models 8.13 -> 8.19, 7.31 -> 7.53
    harmonics_choice: str = key("joint", choices=("joint", "each"))
                                     # joint: the sources' pitches chosen together, among each
                                     # one's 8 best, to explain the mixture's fine structure with
                                     # the noise (coordinate ascent) | each: every source's own
                                     # best. Two talkers, combs at 30, the speaker's ranges
                                     # (one-off, models of 2026-12-06): 8.01 -> 8.30 dB tuned-on,
                                     # 7.49 -> 7.84 held-out; one talker 8.82 -> 8.98, 7.33 ->
                                     # 7.44; three talkers 5.85 -> 6.19
    guide_init: str = key("auto", choices=("auto",) + GUIDE_INITS)
                                     # encoder (on the mixture) | prior (each source's visual
                                     # prior) | product (of the two; needs p(z|v)) | auto
                                     # (product when the model has a visual prior, else encoder)
    guide_encoder: str = key("auto", choices=("auto",) + GUIDE_ENCODERS)
                                     # which encoder reads the mixture for the guide's start:
                                     # speech (trained on clean speech) | noisy (distilled from it
                                     # with noise drawn from an NMF prior, train.mode=
                                     # noisy_encoder) | auto (noisy for one source with an
                                     # audio-visual model that has one, else speech)
    guide: str = key("auto", choices=("auto",) + GUIDES)
                                     # meanfield (q(z[t]) independent over frames) | markov (chained
                                     # over frames, one fitted correlation per source and latent
                                     # dimension) | auto (markov when the model has memory)
    gain: str = key("auto", choices=("auto",) + GAINS)
                                     # utterance (one gain per source and chunk) | frame (g_j[t])
                                     # | faceless (utterance where that source's face is
                                     # seen, a free gain per frame where it is missing)
                                     # | auto: faceless with a visual prior, else frame. GRID
                                     # two talkers: utterance +1.2 dB over frame with p(z|v) (a
                                     # small model without one could not carry the level and
                                     # lost 3 dB). Faceless equals utterance with every face
                                     # seen; tuned split with the target's face removed on 30 /
                                     # 60 % of frames: 1 talker 4.16 / 1.99 -> 4.68 / 2.47 dB,
                                     # 2 talkers 4.04 / 1.44 -> 4.62 / 2.05 dB (swaps 6 / 16 ->
                                     # 3 / 10 %); per-frame gains give 5.59 / 4.18 with one
                                     # talker but lose 0.6 dB with intact lips. Since
                                     # 2026-12-06 the faceless frames' gains are free, no longer
                                     # factors on the chunk's gain (which they then pulled):
                                     # 30 / 60 % missing, one talker 5.48 / 2.68 -> 6.59 / 5.06
                                     # dB, held-out 60 % 4.17 -> 5.12
    lip_gate: bool = True            # treat video frames whose mouth region is not mouth-like
                                     # as frames without a face (the model's mouth gate,
                                     # pyro_avss.nets.lips; no effect with a model without one).
                                     # GRID dev, 30 % of the target's mouths replaced by pixel
                                     # noise: 2.30 -> 5.48 dB (one talker), intact lips unchanged
    prior_weight: float = key(3.0, above(0))
                                     # weight of the z prior (KL) term at test time: how hard
                                     # the speech model pulls z back to speech; tuned noises 1 ->
                                     # 7.94, 3 -> 8.23, 10 -> 7.65 dB (with smoothness 0.1)
    enumeration: str = key("marginal", choices=ENUMERATIONS)
                                     # marginal (the switch summed out in the observation) | pyro (TraceEnum_ELBO)
    noise_updates: str = key("adam", choices=NOISE_UPDATES)
                                     # adam (SVI only) | mu (plus a multiplicative NMF update per step)
    prune_threshold: float = key(1.0e-3, within(0, 1, "[)"))
                                     # after prune_after steps, drop the decoders whose switch
    prune_after: int = key(10, at_least(1))
                                     # posterior is below this in every frame of every source;
                                     # 0 = never. GRID bank (K = 3), 3-s clips: 0.62x the time
                                     # with one talker, 0.60x with two; SI-SDRi unchanged (tuned
                                     # split 8.13 / 7.07 dB with and without, batches of 8). One
                                     # recording per fit: 7.77 against 7.99 without pruning or
                                     # with prune_after 25 (the true speaker dropped in a few
                                     # -5 dB mixtures); held-out 6.19 against 6.21: kept at 10
    max_joint_states: int = key(36, at_least(1))
                                     # J sources over K components make K^J joint switch states,
                                     # each a (T, F) mixture variance; above this many a short
                                     # one-source screening fit per source ranks the components
                                     # and the best floor(max^(1/J)) are kept, the switch summed
                                     # exactly over them (pyro_avss.inference.screening). 36: the
                                     # GRID banks (K <= 6 at J = 2, K = 3 at J = 3) are never
                                     # screened. K = 50, J = 2, pool dev mixtures: 128 (11 kept,
                                     # 10 screening steps) -1.55 dB, 36 (6 kept, 5 steps) -2.18 dB
                                     # at a third of the time
    screen_steps: int = key(5, at_least(1))
                                     # SVI steps of each screening fit
    chunk_seconds: float = key(20.0, above(0))
    overlap_seconds: float = 2.0     # in [0, chunk_seconds / 2]
    batch_size: int = key(8, at_least(1))
    seed: int = key(0, within(0, 2**32 - 1, shown="2**32 - 1"))
    # set by code, not by a config: restrict the switch to these components (one index: the
    # oracle / a fixed model); per source, the components its switch may use (an oracle for
    # J >= 2: each video's speaker)
    components: tuple[int, ...] | None = key(None, config=False)
    source_components: tuple[tuple[int, ...], ...] | None = key(None, config=False)

    def check(self) -> None:
        """The keys that depend on each other: the noise model's, the switch's, the chunks'."""
        if self.noise_pause_rank > self.noise_rank:
            raise SettingError("separate.noise_pause_rank", f"must be at most noise_rank = {self.noise_rank}, "
                                                            f"got {self.noise_pause_rank}")
        learnt = self.noise_rank - self.noise_pause_rank
        if self.noise_smooth_rank is not None and not 0 <= self.noise_smooth_rank <= learnt:
            raise SettingError("separate.noise_smooth_rank", f"must be in [0, noise_rank - noise_pause_rank "
                                                             f"= {learnt}] or null, got {self.noise_smooth_rank}")
        if self.noise_spectral_smoothness > 0 and self.noise_updates == "mu":
            raise SettingError("separate.noise_updates", "mu needs separate.noise_spectral_smoothness=0")
        if self.noise_smoothness > 0 and self.noise_updates == "mu":
            raise SettingError("separate.noise_updates", "mu needs separate.noise_smoothness=0 (the "
                                                         "multiplicative update knows no smoothness prior)")
        if self.stay_prob is not None and self.stay_seconds is not None:
            raise SettingError("separate.stay_seconds", f"and separate.stay_prob = {self.stay_prob} both set "
                                                        "the Markov switch's stay: give one of them")
        if self.learn_stay and self.switch_prior not in ("markov", "speaker"):
            raise SettingError("separate.learn_stay", f"learns the Markov switch's stay: needs "
                                                      f"separate.switch_prior=markov or speaker, got {self.switch_prior!r}")
        if self.switch_prior == "speaker" and self.enumeration == "pyro":
            raise SettingError("separate.enumeration", "pyro: the speaker switch has no enumerated form "
                                                       "(use marginal)")
        if not 0 <= self.overlap_seconds <= self.chunk_seconds / 2:
            raise SettingError("separate.overlap_seconds", f"must be in [0, chunk_seconds / 2 = "
                                                           f"{self.chunk_seconds / 2:g}], got {self.overlap_seconds}")

    def check_model(self, models: SpeechModels) -> "SeparationSettings":
        """Refuse, naming the key, what ``models`` cannot do with these settings (so that a
        batch stops before any work instead of failing every recording); returns self."""
        cfg = models.stft
        if int(self.chunk_seconds * cfg.sample_rate) < cfg.hop:
            raise SettingError("separate.chunk_seconds", f"must be at least one STFT hop "
                                                         f"({cfg.hop / cfg.sample_rate:g} s), got "
                                                         f"{self.chunk_seconds}")
        if self.noise_rank > cfg.num_bins:
            raise SettingError("separate.noise_rank", f"must be at most the model's {cfg.num_bins} "
                                                      "frequency bins (a larger rank describes no "
                                                      f"more), got {self.noise_rank}")
        needs_prior = "needs a model trained with a visual prior (model.prior=visual)"
        if self.guide_init not in ("auto", "encoder") and models.prior is None:
            raise SettingError("separate.guide_init", f"{self.guide_init!r} {needs_prior}")
        if self.guide_encoder == "noisy" and models.noisy_encoder is None:
            raise SettingError("separate.guide_encoder", "'noisy' needs a model with a noisy encoder "
                                                         "(made by `cli.py fit` with train.mode="
                                                         "noisy_encoder)")
        if self.noise_start == "lips" and models.prior is None:
            raise SettingError("separate.noise_start", f"'lips' {needs_prior}")
        return self

    def switch_prior_for(self, models: SpeechModels) -> str:
        """The switch prior separation builds for ``models``: ``switch_prior``, with ``auto``
        resolved to ``utterance`` where the bank reads lips and to ``iid`` where it is audio only.
        Chosen on the tuned-on splits (see the key's comment): with lips, one component per
        utterance is best (the lips already say who speaks); without them a per-frame switch
        lets frames the best decoder fits badly go to another one, and wins on both corpora."""
        if self.switch_prior != "auto":
            return self.switch_prior
        return "utterance" if models.uses_video else "iid"

    def restart_step_for(self, models: SpeechModels) -> int:
        """The SVI step at which separation restarts the guide of a fit of ``restart_sources`` or
        more sources for ``models`` (0: never): ``restart_at``, with ``None`` (auto) resolved to
        :data:`AUTO_RESTART_STEP` where the model has a visual prior ``p(z | v)`` and to 0 where it
        has not. The restart multiplies each source's visual prior into the re-encoded code (see
        :mod:`~pyro_avss.inference.guide_restart`); without one, the two-talker mixtures of the
        results run lost with it (see the key's comment)."""
        if self.restart_at is not None:
            return self.restart_at
        return AUTO_RESTART_STEP if models.prior is not None else 0

    def stay(self, hop_seconds: float) -> float:
        """The Markov switch's stay probability per frame (its start when learnt): ``stay_prob``,
        else ``exp(-hop / stay_seconds)`` (:func:`~pyro_avss.models.switch.stay_from_seconds`),
        else :data:`DEFAULT_STAY`."""
        from ..models.markov_switch import stay_from_seconds

        if self.stay_seconds is None:
            return DEFAULT_STAY if self.stay_prob is None else self.stay_prob
        stay = stay_from_seconds(self.stay_seconds, hop_seconds)
        if not 0 < stay < 1:
            raise SettingError("separate.stay_seconds", f"{self.stay_seconds} s at a hop of {hop_seconds:g} s "
                                                        f"gives a stay probability of {stay} (must be in (0, 1))")
        return stay
