"""Settings of test-time separation (the ``separate`` section of a config), checked on creation.

:class:`SeparationSettings` holds every option of :func:`~.separation.separate_recordings` and
:func:`~.batch_fit.fit_batch`; its defaults are those of ``separate`` in
:data:`pyro_avss.config.DEFAULTS`, and a value out of range is refused with an
:class:`~pyro_avss.errors.InputError` naming its key before any work starts.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from ..checkpoint import SpeechModels
from ..errors import InputError
from ..models.switch import DEFAULT_STAY, SWITCH_PRIORS, stay_from_seconds


NOISE_STARTS = ("flat", "lips", "auto")
ENUMERATIONS = ("marginal", "pyro")


@dataclass
class SeparationSettings:
    """See ``separate`` in :data:`pyro_avss.config.DEFAULTS` for the meaning of each field."""

    switch_prior: str = "utterance"
    stay_prob: float | None = None       # null: DEFAULT_STAY, or from stay_seconds (not both)
    stay_seconds: float | None = None
    learn_stay: bool = False
    noise_rank: int = 8
    noise_init_level: float = 6.0
    noise_start: str = "flat"
    noise_smoothness: float = 0.1
    noise_spectral_smoothness: float = 0.0
    noise_smooth_rank: int | None = None
    steps: int = 50
    tol: float = 1e-4
    lr: float = 0.4
    lr_decay: float = 0.95
    num_samples: int = 8
    guide_init: str = "auto"
    guide: str = "auto"
    gain: str = "auto"
    prior_weight: float = 3.0
    enumeration: str = "marginal"
    noise_updates: str = "adam"
    chunk_seconds: float = 20.0
    overlap_seconds: float = 2.0
    batch_size: int = 8
    seed: int = 0
    components: tuple[int, ...] | None = None   # restrict the switch to these components
                                                # (one index: the oracle / a fixed model)
    source_components: tuple[tuple[int, ...], ...] | None = None
    # per source, the components its switch may use (an oracle for J >= 2: each video's speaker)
    prune_threshold: float = 1e-3
    prune_after: int = 10

    def __post_init__(self):
        """Refuse values that would fail (or silently do nothing) later, with the config key."""
        if self.noise_updates not in ("mu", "adam"):
            raise InputError("separate.noise_updates", f"must be 'mu' or 'adam', got {self.noise_updates!r}")
        from ..models.generative import GAINS, GUIDE_INITS, GUIDES

        if self.guide_init not in ("auto",) + GUIDE_INITS:
            raise InputError("separate.guide_init", f"must be one of auto, {', '.join(GUIDE_INITS)}, "
                                                    f"got {self.guide_init!r}")
        if self.guide not in ("auto",) + GUIDES:
            raise InputError("separate.guide", f"must be one of auto, {', '.join(GUIDES)}, got {self.guide!r}")
        if self.gain not in ("auto",) + GAINS:
            raise InputError("separate.gain", f"must be one of auto, {', '.join(GAINS)}, got {self.gain!r}")
        if self.noise_start not in NOISE_STARTS:
            raise InputError("separate.noise_start", f"must be one of {', '.join(NOISE_STARTS)}, "
                                                     f"got {self.noise_start!r}")
        if not self.noise_spectral_smoothness >= 0:
            raise InputError("separate.noise_spectral_smoothness",
                             f"must be >= 0, got {self.noise_spectral_smoothness}")
        if self.noise_smooth_rank is not None and (not isinstance(self.noise_smooth_rank, int)
                                                   or isinstance(self.noise_smooth_rank, bool)):
            raise InputError("separate.noise_smooth_rank", f"must be an integer or null, got "
                                                           f"{self.noise_smooth_rank!r}")
        if self.noise_smooth_rank is not None and not 0 <= self.noise_smooth_rank <= self.noise_rank:
            raise InputError("separate.noise_smooth_rank", f"must be in [0, noise_rank = {self.noise_rank}] "
                                                           f"or null, got {self.noise_smooth_rank}")
        if self.noise_spectral_smoothness > 0 and self.noise_updates == "mu":
            raise InputError("separate.noise_updates", "mu needs separate.noise_spectral_smoothness=0")
        if not self.noise_smoothness >= 0:
            raise InputError("separate.noise_smoothness", f"must be >= 0, got {self.noise_smoothness}")
        if self.noise_smoothness > 0 and self.noise_updates == "mu":
            raise InputError("separate.noise_updates", "mu needs separate.noise_smoothness=0 (the "
                                                       "multiplicative update knows no smoothness prior)")
        if not self.prior_weight > 0:
            raise InputError("separate.prior_weight", f"must be > 0, got {self.prior_weight}")
        if not self.lr > 0:
            raise InputError("separate.lr", f"must be > 0, got {self.lr}")
        if not self.noise_init_level > 0:
            raise InputError("separate.noise_init_level", f"must be > 0, got {self.noise_init_level}")
        if not 0 < self.lr_decay <= 1:
            raise InputError("separate.lr_decay", f"must be in (0, 1], got {self.lr_decay}")
        if self.switch_prior not in SWITCH_PRIORS:
            raise InputError("separate.switch_prior", f"must be {', '.join(SWITCH_PRIORS[:-1])} or "
                                                      f"{SWITCH_PRIORS[-1]}, got {self.switch_prior!r}")
        self._check_stay()
        if self.noise_rank < 1:
            raise InputError("separate.noise_rank", f"must be >= 1, got {self.noise_rank}")
        if not self.tol >= 0:
            raise InputError("separate.tol", f"must be >= 0, got {self.tol}")
        if not self.chunk_seconds > 0:
            raise InputError("separate.chunk_seconds", f"must be > 0, got {self.chunk_seconds}")
        if not 0 <= self.overlap_seconds <= self.chunk_seconds / 2:
            raise InputError("separate.overlap_seconds", f"must be in [0, chunk_seconds / 2 = "
                                                         f"{self.chunk_seconds / 2:g}], got "
                                                         f"{self.overlap_seconds}")
        if self.batch_size < 1:
            raise InputError("separate.batch_size", f"must be >= 1, got {self.batch_size}")
        if not 0 <= self.prune_threshold < 1:
            raise InputError("separate.prune_threshold", f"must be in [0, 1), got {self.prune_threshold}")
        if self.prune_after < 1:
            raise InputError("separate.prune_after", f"must be >= 1, got {self.prune_after}")
        if self.steps < 1 or self.num_samples < 1:
            raise InputError("separate", f"steps and num_samples must be >= 1, got {self.steps} "
                                         f"and {self.num_samples}")
        if self.enumeration not in ENUMERATIONS:
            raise InputError("separate.enumeration", f"must be {' or '.join(ENUMERATIONS)}, got "
                                                     f"{self.enumeration!r}")
        if not 0 <= self.seed < 2**32:
            raise InputError("separate.seed", f"must be in [0, 2**32 - 1], got {self.seed}")

    def check_model(self, models: SpeechModels) -> "SeparationSettings":
        """Refuse, naming the key, what ``models`` cannot do with these settings (so that a
        batch stops before any work instead of failing every recording); returns self."""
        cfg = models.stft
        if int(self.chunk_seconds * cfg.sample_rate) < cfg.hop:
            raise InputError("separate.chunk_seconds", f"must be at least one STFT hop "
                                                       f"({cfg.hop / cfg.sample_rate:g} s), got "
                                                       f"{self.chunk_seconds}")
        if self.noise_rank > cfg.num_bins:
            raise InputError("separate.noise_rank", f"must be at most the model's {cfg.num_bins} "
                                                    "frequency bins (a larger rank describes no "
                                                    f"more), got {self.noise_rank}")
        needs_prior = "needs a model trained with a visual prior (model.prior=visual)"
        if self.guide_init not in ("auto", "encoder") and models.prior is None:
            raise InputError("separate.guide_init", f"{self.guide_init!r} {needs_prior}")
        if self.noise_start == "lips" and models.prior is None:
            raise InputError("separate.noise_start", f"'lips' {needs_prior}")
        return self

    def _check_stay(self) -> None:
        """The Markov switch's keys: ``stay_prob`` in (0, 1) or null, ``stay_seconds`` > 0 or
        null, not both set; ``learn_stay`` only with the Markov switch."""
        for key in ("stay_prob", "stay_seconds"):
            value = getattr(self, key)
            if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))):
                raise InputError(f"separate.{key}", f"must be a number or null, got {value!r}")
        if self.stay_prob is not None and not 0 < self.stay_prob < 1:
            raise InputError("separate.stay_prob", f"must be in (0, 1) or null, got {self.stay_prob}")
        if self.stay_seconds is not None and not 0 < self.stay_seconds < math.inf:
            raise InputError("separate.stay_seconds", f"must be > 0 (seconds) or null, got {self.stay_seconds}")
        if self.stay_prob is not None and self.stay_seconds is not None:
            raise InputError("separate.stay_seconds", f"and separate.stay_prob = {self.stay_prob} both set "
                                                      "the Markov switch's stay: give one of them")
        if self.learn_stay and self.switch_prior != "markov":
            raise InputError("separate.learn_stay", f"learns the Markov switch's stay: needs "
                                                    f"separate.switch_prior=markov, got {self.switch_prior!r}")

    def stay(self, hop_seconds: float) -> float:
        """The Markov switch's stay probability per frame (its start when learnt): ``stay_prob``,
        else ``exp(-hop / stay_seconds)`` (:func:`~pyro_avss.models.switch.stay_from_seconds`),
        else :data:`~pyro_avss.models.switch.DEFAULT_STAY`."""
        if self.stay_seconds is None:
            return DEFAULT_STAY if self.stay_prob is None else self.stay_prob
        stay = stay_from_seconds(self.stay_seconds, hop_seconds)
        if not 0 < stay < 1:
            raise InputError("separate.stay_seconds", f"{self.stay_seconds} s at a hop of {hop_seconds:g} s "
                                                      f"gives a stay probability of {stay} (must be in (0, 1))")
        return stay

    @classmethod
    def from_config(cls, section: dict, **changes) -> "SeparationSettings":
        return cls(**{**section, **changes})
