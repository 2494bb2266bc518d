"""Test-time separation: SVI on the separation model with the switch marginalised exactly.

For a batch of (chunks of) mixtures the frozen speech models, the switch prior and the NMF noise
form :class:`~pyro_avss.models.generative.SeparationModel`. SVI (Adam) fits the gains, the noise,
the switch prior and the per-frame guide ``q(z)``, starting from the encoder's output, until the
relative change of the smoothed loss falls below ``tol`` or ``steps`` is reached. The learning
rate starts high and decays geometrically, ``lr_i = lr · lr_decay^i``: gains and NMF factors are
fitted in log space and must move by several nats within a few dozen steps (Adam moves a
parameter by at most about ``lr`` per step), while the decay lets ``q(z)`` settle. Then, with
``S`` samples ``z^(s) ~ q(z)``, the posterior-mean Wiener masks are

    M_j[t, f] = (1/S) Σ_s Σ_state γ_s[t, state] · g_j σ²_{j, state_j}(z^(s)) / V_state(z^(s))[t, f]
    M_noise   = (1/S) Σ_s Σ_state γ_s[t, state] · (W H)[t, f] / V_state(z^(s))[t, f]

where ``γ_s`` is the exact switch posterior given ``z^(s)`` and ``V`` the mixture variance of
the joint state; the masks sum to one, so sources plus noise give back the mixture.

Long recordings are cut into chunks of ``chunk_seconds`` with ``overlap_seconds`` of overlap;
chunks (of one or many recordings) are separated in batches and cross-faded back linearly.
Source j is tied to video j, so identities agree across chunks; audio-only sources are matched
between consecutive chunks by their correlation over the overlap.
"""

from __future__ import annotations

import contextlib
import itertools
import math
import warnings
from dataclasses import dataclass

import numpy as np
import pyro
import torch
from pyro import poutine
from pyro.distributions import constraints
from pyro.infer import SVI, Trace_ELBO, TraceEnum_ELBO

from ..audio import istft, stft
from ..checkpoint import SpeechModels
from ..errors import InputError
from ..models.generative import MAX_PLATE_NESTING, SeparationModel
from ..models.noise import NMFNoise
from ..models.switch import (DEFAULT_STAY, STAY_PARAM, SWITCH_PRIORS, joint_states, make_switch,
                             stay_from_seconds)
from .inputs import aligned_lips
from .pyro_state import isolated_pyro_state


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


@dataclass
class Separated:
    """Result for one recording."""

    sources: np.ndarray       # (J, N) estimates
    noise: np.ndarray         # (N,)
    posterior: np.ndarray     # (T, J, K) switch posterior per STFT frame
    steps: int                # SVI steps taken (largest over its chunks)
    switch_stay: np.ndarray | None = None   # (J,) fitted stay probability of a learnt Markov
                                            # switch (mean over chunks, by frames), else None


# ---------------------------------------------------------------------------------------------
# one batch of chunks
# ---------------------------------------------------------------------------------------------
def components_view(models: SpeechModels, components=None):
    """The decoder bank to separate with: all K components, or the listed subset (e.g. one
    component for an oracle run that is told the speaker)."""
    d = models.decoders
    if components is None or list(components) == list(range(d.num_components)):
        return d
    from ..nets.vae import DecoderBank

    for k in components:
        if not 0 <= k < d.num_components:
            raise ValueError(f"component {k} does not exist (the model has {d.num_components})")
    with torch.random.fork_rng(devices=[]):     # the new bank's random start is overwritten;
        bank = DecoderBank.from_components(     # drawing it must not move the separation's draws
            [d.component_state(k) for k in components], d.num_bins, d.latent_dim, d.hidden, d.lip_dim)
    return bank.requires_grad_(False).to(d.w_z.device)    # a view for fitting with, never trained


def fit_batch(models: SpeechModels, power, lips, present, mask, settings: SeparationSettings,
              make_noise=None, make_switch_prior=None, make_guide=None) -> BatchFit:
    """SVI on a padded batch. ``power (B,T,F)``, ``lips (B,T,J,Dv)``, ``present (B,T,J)``,
    ``mask (B,T)``. Returns a :class:`BatchFit` (it unpacks as ``masks, posterior, steps``).

    ``make_noise()`` and ``make_switch_prior(K, J)`` replace the NMF noise and the configured
    switch prior with pieces of your own, and ``make_guide(sep)`` the guide of the
    :class:`SeparationModel` ``sep`` with any callable of the model's signature (see
    ``docs/extending.md``): masks and posteriors come from replaying the model at the guide's
    draws (:func:`explain_fit`), so neither needs particular parameter or site names beyond
    the model's own sites (``z``, and a noise model's latent ones)."""
    settings.check_model(models)
    J = lips.shape[-2]
    used = (list(settings.components) if settings.components is not None
            else list(range(models.decoders.num_components)))
    enumerate_ = settings.enumeration == "pyro"

    def build_switch(K: int):
        if make_switch_prior is not None:
            return make_switch_prior(K, J)
        return make_switch(settings.switch_prior, K, J, enumerate=enumerate_, learn_stay=settings.learn_stay,
                           stay_prob=settings.stay(models.stft.hop / models.stft.sample_rate))

    noise = (make_noise() if make_noise is not None else
             NMFNoise(settings.noise_rank, settings.seed, settings.noise_init_level,
                      settings.noise_smoothness,
                      noise_start_shape(models, settings, power, lips, present, mask),
                      settings.noise_spectral_smoothness, settings.noise_smooth_rank))

    def build(components: list[int]) -> SeparationModel:
        sep = separation_model(models, settings, components, build_switch(len(components)), noise, J)
        if make_guide is not None:
            sep.guide = make_guide(sep)
        return sep

    nets = [n for n in (models.encoder, models.decoders, models.prior, models.dynamics) if n is not None]
    with frozen(*nets):
        return _fit(build, used, models.decoders.num_components, power, lips, present, mask, settings)


def separation_model(models: SpeechModels, settings: SeparationSettings, components: list[int], switch,
                     noise, num_sources: int) -> SeparationModel:
    """The :class:`SeparationModel` over the decoders ``components`` (indices into the model's
    bank), with the ``auto`` choices of ``settings`` resolved for this model."""
    guide_init = settings.guide_init
    if guide_init == "auto":               # the lip-specific start wherever the model can give it
        guide_init = "product" if models.prior is not None else "encoder"
    gain = settings.gain
    if gain == "auto":                     # see `separate.gain` in pyro_avss.config
        gain = "faceless" if models.prior is not None else "frame"
    guide = settings.guide
    if guide == "auto":                    # a guide with memory for a prior with memory
        guide = "markov" if models.dynamics is not None else "meanfield"
    return SeparationModel(models.encoder, components_view(models, components), switch, noise,
                           allowed=allowed_components(settings, num_sources, components),
                           prior=models.prior, guide_init=guide_init, gain=gain,
                           prior_weight=settings.prior_weight, dynamics=models.dynamics, guide=guide)


def noise_start_shape(models: SpeechModels, settings: SeparationSettings, power, lips, present, mask):
    """The NMF noise's start shape ``(B, F)`` for ``separate.noise_start`` (None: flat). ``lips``
    gives the mixture's spectrum over the frames where every source's lips are closed, as the
    decoders in use (``settings.components``) predict them
    (:func:`~pyro_avss.inference.activity.lip_noise_shape`); it needs a visual prior and videos,
    which ``auto`` checks and ``lips`` demands."""
    start = settings.noise_start
    usable = models.prior is not None and bool((present > 0.5).any())
    if start == "flat" or (start == "auto" and not usable):
        return None
    from .activity import lip_noise_shape

    return lip_noise_shape(models.prior, components_view(models, settings.components), power, lips,
                           present, mask)


def allowed_components(settings: SeparationSettings, J: int, used: list[int]):
    """``(J, K')`` bool over the components in use (``used``, indices into the model's bank)
    from ``settings.source_components``, or None when every source may use every component."""
    if settings.source_components is None:
        return None
    if len(settings.source_components) != J:
        raise InputError("separate.source_components", f"gives {len(settings.source_components)} "
                                                       f"sources but the mixture has {J}")
    allowed = torch.tensor([[k in per_source for k in used] for per_source in settings.source_components])
    empty = [j + 1 for j in range(J) if not allowed[j].any()]
    if empty:
        raise InputError("separate.source_components", f"source {empty[0]} has no component in use")
    return allowed


@dataclass
class BatchFit:
    """What :func:`fit_batch` returns for a batch: Wiener masks ``(B,T,J+1,F)`` (sources then
    noise), the switch posterior ``(B,T,J,K)`` on all K components, the SVI steps taken and the
    fitted parameters (constrained values, detached, by name: the fit's own param store, which
    is gone once the fit returns)."""

    masks: torch.Tensor
    posterior: torch.Tensor
    steps: int
    params: dict

    def __iter__(self):           # masks, posterior, steps = fit_batch(...)
        return iter((self.masks, self.posterior, self.steps))


def _fit(build, used: list[int], num_components: int, power, lips, present, mask,
         settings: SeparationSettings) -> BatchFit:
    """The SVI loop and the posterior of :func:`fit_batch`, in a param store and random streams
    of its own (:func:`~.pyro_state.isolated_pyro_state`: the caller's are left as they were)
    and without Pyro's argument checks (a bad value shows up as a non-finite loss, which stops
    the fit; the checks of every distribution at every step cost a third of a short fit).
    ``build(components)`` makes the :class:`SeparationModel` over those decoders (indices into
    the model's bank of ``num_components``); ``used`` are the ones to start with. With
    ``prune_threshold > 0`` the components that no source needs are dropped after
    ``prune_after`` steps (:func:`components_to_keep`) and SVI goes on with the smaller model."""
    with isolated_pyro_state(settings.seed, power.device) as store, pyro.validation_enabled(False):
        sep = build(used)
        optim = pyro.optim.PyroOptim(DecayingAdam, {"lr": settings.lr, "lrd": settings.lr_decay})
        svi = _svi(sep, optim)
        frames = float(mask.sum())
        ema, steps = None, 0
        for steps in range(1, settings.steps + 1):
            with warnings.catch_warnings():            # a NaN loss is the FloatingPointError below
                warnings.filterwarnings("ignore", message="Encountered NaN", category=UserWarning)
                loss = svi.step(power, lips, present, mask) / frames
            if settings.noise_updates == "mu" and hasattr(sep.noise, "multiplicative_update"):
                noise_mu_step(sep, power, lips, present, mask)
            if not math.isfinite(loss):
                raise FloatingPointError(f"separation loss became {loss} at step {steps}")
            if steps == settings.prune_after and settings.prune_threshold > 0 and len(used) > 1:
                keep = components_to_keep(sep, power, lips, present, mask, settings.prune_threshold)
                if len(keep) < len(used):
                    restrict_switch_prior(optim, keep)
                    used = [used[k] for k in keep]
                    sep = build(used)
                    svi = _svi(sep, optim)
            if ema is None:
                ema = loss
                continue
            new = 0.8 * ema + 0.2 * loss
            if steps >= 20 and abs(new - ema) <= settings.tol * abs(ema):
                break
            ema = new
        masks, post = posterior_masks(sep, power, lips, present, mask, settings.num_samples)
        params = {name: value.detach() for name, value in store.items()}
    if len(used) < num_components:                    # report the posterior on all K components
        full = post.new_zeros(post.shape[:-1] + (num_components,))
        full[..., used] = post
        post = full
    return BatchFit(masks, post, steps, params)


def _svi(sep: SeparationModel, optim) -> SVI:
    elbo = TraceEnum_ELBO if getattr(sep.switch, "enumerate", False) else Trace_ELBO
    return SVI(sep.model, sep.guide, optim, elbo(max_plate_nesting=MAX_PLATE_NESTING))


@torch.no_grad()
def components_to_keep(sep: SeparationModel, power, lips, present, mask, threshold: float) -> list[int]:
    """Positions (in ``sep``'s bank) of the components some source still needs: those whose
    switch posterior, at one draw of the guide, exceeds ``threshold`` in some valid frame of some
    source and utterance, plus every source's most probable component. The draw does not advance
    the random streams, so the fit goes on as it would have without this look."""
    devices = [power.device.index or 0] if power.is_cuda else []
    with torch.random.fork_rng(devices=devices):
        _, post = posterior_masks(sep, power, lips, present, mask, num_samples=1)
    post = post.masked_fill(~mask[..., None, None], 0.0)                        # (B,T,J,K)
    needed = post.amax((0, 1, 2)) > threshold
    best = post.sum(1).argmax(-1)                                               # (B,J)
    needed[best.flatten()] = True
    return needed.nonzero().flatten().tolist()


def restrict_switch_prior(optim, keep: list[int]) -> None:
    """Keep only the components ``keep`` in a learnt switch prior ``switch_pi (B,J,K)`` (renormalised)
    and in its optimiser's moments, so SVI continues where it was."""
    store = pyro.get_param_store()
    if "switch_pi" not in store:
        return
    old = store["switch_pi"]
    pi = old.detach()[..., keep]
    adam = optim.optim_objs.pop(old.unconstrained(), None)
    optim.grad_clip.pop(old.unconstrained(), None)
    state = None if adam is None else adam.state_dict()
    del store["switch_pi"]
    store.setdefault("switch_pi", pi / pi.sum(-1, keepdim=True), constraint=constraints.simplex)
    if state is not None:
        moments = {k: (v[..., keep].clone() if torch.is_tensor(v) and v.dim() else v)
                   for k, v in state["state"].items()}
        optim.set_state({"switch_pi": {"lr": state["lr"], "state": moments}})


class DecayingAdam:
    """Adam whose rate decays geometrically, ``lr_i = lr · lrd^i`` (the first step already at
    ``lr · lrd``): the update of ``pyro.optim.ClippedAdam`` without clipping, operation for
    operation, so separation gives the same numbers.

    Not a ``torch.optim.Optimizer``: constructing one of those imports ``torch._dynamo``
    (``add_param_group`` is wrapped by ``torch._disable_dynamo``, which imports it on its first
    call), about 2 s, more than the 50 SVI steps of a short clip. ``pyro.optim.PyroOptim``
    needs only ``step``, ``state_dict`` and ``load_state_dict`` of it, for one parameter.
    """

    def __init__(self, params, lr: float, lrd: float = 1.0, betas=(0.9, 0.999), eps: float = 1e-8):
        (self.param,) = params
        self.lr, self.lrd, self.betas, self.eps = lr, lrd, betas, eps
        self.state: dict = {}

    @torch.no_grad()
    def step(self, closure=None):
        self.lr *= self.lrd
        p = self.param
        if p.grad is None:
            return None
        grad = p.grad
        if not self.state:
            self.state = {"step": 0, "exp_avg": torch.zeros_like(grad),
                          "exp_avg_sq": torch.zeros_like(grad)}
        beta1, beta2 = self.betas
        exp_avg, exp_avg_sq = self.state["exp_avg"], self.state["exp_avg_sq"]
        self.state["step"] += 1
        exp_avg.mul_(beta1).add_(grad, alpha=1 - beta1)
        exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
        denom = exp_avg_sq.sqrt().add_(self.eps)
        step = self.state["step"]
        step_size = self.lr * math.sqrt(1 - beta2 ** step) / (1 - beta1 ** step)
        p.addcdiv_(exp_avg, denom, value=-step_size)
        return None

    def state_dict(self) -> dict:
        return {"lr": self.lr, "state": dict(self.state)}

    def load_state_dict(self, state: dict) -> None:
        self.lr, self.state = state["lr"], dict(state["state"])


@contextlib.contextmanager
def frozen(*modules: torch.nn.Module):
    """Turn off the gradients of ``modules``' weights meanwhile (and restore them after): SVI at
    test time fits only its own parameters, and back-propagating into the networks' weights too
    made every step about 15 % slower."""
    params = [p for m in modules for p in m.parameters()]
    flags = [p.requires_grad for p in params]
    for p in params:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p, flag in zip(params, flags):
            p.requires_grad_(flag)


def fitted_stay(params: dict) -> np.ndarray | None:
    """``(B, J)`` stay probabilities ``sigmoid(switch_stay_logit)`` among a fit's ``params``
    (:attr:`BatchFit.params`), or None when its switch learnt none."""
    return torch.sigmoid(params[STAY_PARAM]).cpu().numpy() if STAY_PARAM in params else None


def explain_fit(sep: SeparationModel, power, lips, present, mask, at_mean: bool = False):
    """The model's :class:`~pyro_avss.models.generative.MixtureExplanation` at one draw of the
    guide (or at its mean, ``at_mean``): the guide is traced, then the model replayed at that
    trace, so every latent variable — ``z``, a noise model's own — takes the guide's value and
    every parameter its fitted value, whatever they are called.

    Sites a caller has fixed (``poutine.condition`` around this call, e.g. a noise model at its
    point estimate) are observed in the guide's trace; they are dropped from it, so the
    condition holds in the model too instead of ``replay`` refusing an observed site. Sites
    of the model the guide does not have (an enumerated switch) are drawn from their prior,
    on a forked random stream, and not used."""
    args = (power, lips, present, mask)
    guide_trace = poutine.trace(sep.guide).get_trace(*args)
    for name, site in list(guide_trace.nodes.items()):
        if site["type"] != "sample":
            continue
        if site["is_observed"]:
            guide_trace.remove_node(name)
        elif at_mean:
            site["value"] = site["fn"].mean
    devices = [power.device.index or 0] if power.is_cuda else []
    with torch.random.fork_rng(devices=devices):     # sites left to draw (an enumerated switch)
        model = poutine.replay(sep.model, trace=guide_trace)   # must not move the guide's draws
        return poutine.trace(model).get_trace(*args).nodes["_RETURN"]["value"]


@torch.no_grad()
def noise_mu_step(sep: SeparationModel, power, lips, present, mask) -> None:
    """A multiplicative update of the noise at the guide mean of ``z``, with the expectations
    over the exact switch posterior (see :meth:`NMFNoise.multiplicative_update`)."""
    explained = explain_fit(sep, power, lips, present, mask, at_mean=True)
    gamma = sep.switch.fitted_posterior(explained.loglik, mask)
    inv_var = torch.exp(-explained.log_var)                                     # (B,T,S,F)
    gamma = gamma[..., None] * mask[:, :, None, None]
    sep.noise.multiplicative_update((gamma * inv_var).sum(2),
                                    (gamma * power[:, :, None] * inv_var ** 2).sum(2))


@torch.no_grad()
def posterior_masks(sep: SeparationModel, power, lips, present, mask, num_samples: int):
    """Wiener masks ``(B,T,J+1,F)`` (sources then noise) and switch marginals ``(B,T,J,K)``,
    averaged over ``num_samples`` draws of the guide (:func:`explain_fit`)."""
    J, K = lips.shape[-2], sep.decoders.num_components
    states = joint_states(K, J).to(power.device)                                 # (S,J)
    masks = power.new_zeros(power.shape[:2] + (J + 1,) + power.shape[-1:])
    post = power.new_zeros(power.shape[:2] + (J, K))
    for _ in range(num_samples):
        explained = explain_fit(sep, power, lips, present, mask)
        gamma = sep.switch.fitted_posterior(explained.loglik, mask)[..., None]   # (B,T,S,1)
        flat_var = explained.log_var
        for j in range(J):
            ls = explained.log_speech[:, :, j][:, :, states[:, j]]               # (B,T,S,F)
            masks[:, :, j] += (gamma * torch.exp(ls - flat_var)).sum(2)
        masks[:, :, J] += (gamma * torch.exp(explained.log_noise[:, :, None] - flat_var)).sum(2)
        post += sep.switch.source_marginals(gamma[..., 0])
    masks /= num_samples
    post /= num_samples
    return masks, post


# ---------------------------------------------------------------------------------------------
# recordings -> chunks -> batches -> recordings
# ---------------------------------------------------------------------------------------------
@dataclass
class _Chunk:
    """Where a chunk lies; its tensors are computed only when its batch is fitted."""

    job: int
    index: int            # position in its recording
    start: int            # first sample
    length: int           # samples
    frames: int           # STFT frames


def _chunk_inputs(models: SpeechModels, audio, tracks, c: _Chunk):
    """``power (T,F)`` normalised to mean one, ``spec (T,F)`` complex, ``lips (T,J,Dv)`` and
    ``present (T,J)`` of one chunk."""
    cfg = models.stft
    spec = stft(torch.as_tensor(audio[c.start:c.start + c.length]), cfg)
    power = spec.abs().pow(2)
    power = power / power.mean().clamp_min(1e-12)
    times = c.start / cfg.sample_rate + cfg.frame_times(spec.shape[0])
    lp = [aligned_lips(t, models.lips, times, models.lip_encoder) for t in tracks]
    return power, spec, torch.stack([x[0] for x in lp], 1), torch.stack([x[1] for x in lp], 1)


def chunk_bounds(num_samples: int, chunk: int, overlap: int, hop: int) -> list[tuple[int, int]]:
    """``(start, length)`` of chunks of at most ``chunk`` samples overlapping by ``overlap``;
    starts are multiples of ``hop``; a single chunk when the signal is short enough."""
    if num_samples <= chunk:
        return [(0, num_samples)]
    step = max(hop, (chunk - overlap) // hop * hop)
    starts = list(range(0, max(num_samples - overlap, 1), step))
    return [(s, min(chunk, num_samples - s)) for s in starts if s < num_samples]


def separate_recordings(models: SpeechModels, jobs: list[tuple[np.ndarray, list]],
                        settings: SeparationSettings, device=torch.device("cpu"),
                        progress=None, make_noise=None, make_switch_prior=None,
                        make_guide=None) -> list[Separated]:
    """Separate many recordings. ``jobs``: ``(audio (N,), tracks)`` with one entry per source in
    ``tracks`` (a :class:`~pyro_avss.video.track.LipTrack` or None). Returns one
    :class:`Separated` per job, in order. ``progress(n)`` is called after each batch;
    ``make_noise``, ``make_switch_prior`` and ``make_guide`` are passed to :func:`fit_batch`.

    Memory is streamed: a chunk's spectra exist only while its batch is fitted, and its
    estimate is cross-faded into its recording's output right after, so a long recording holds
    its waveform buffers and one batch of chunks (not every chunk's masks and spectra)."""
    cfg = models.stft
    settings.check_model(models)
    models.to(device)
    chunk = int(settings.chunk_seconds * cfg.sample_rate)
    overlap = int(settings.overlap_seconds * cfg.sample_rate)
    chunks: list[_Chunk] = []
    assemblers = []
    for j, (audio, tracks) in enumerate(jobs):
        bounds = chunk_bounds(len(audio), chunk, overlap, cfg.hop)
        chunks += [_Chunk(j, i, start, length, cfg.num_frames(length))
                   for i, (start, length) in enumerate(bounds)]
        assemblers.append(_Assembler(cfg, len(audio), bounds, len(tracks),
                                     align=not any(t is not None for t in tracks) and len(tracks) > 1))
    order = sorted(range(len(chunks)), key=lambda i: chunks[i].frames)
    for b in range(0, len(order), settings.batch_size):
        group = [chunks[i] for i in order[b:b + settings.batch_size]]
        inputs = [_chunk_inputs(models, *jobs[c.job], c) for c in group]
        T = max(x[0].shape[0] for x in inputs)
        pad = lambda xs: torch.stack([torch.nn.functional.pad(  # noqa: E731
            x, (0, 0) * (x.dim() - 1) + (0, T - x.shape[0])) for x in xs]).to(device)
        mask = torch.stack([torch.arange(T) < x[0].shape[0] for x in inputs]).to(device)
        fit = fit_batch(models, pad([x[0] for x in inputs]), pad([x[2] for x in inputs]),
                        pad([x[3] for x in inputs]), mask, settings, make_noise, make_switch_prior,
                        make_guide)
        masks, post, steps = fit
        stay = fitted_stay(fit.params)
        for k, (c, x) in enumerate(zip(group, inputs)):
            n = x[0].shape[0]
            est = istft(masks[k, :n].cpu().permute(1, 0, 2) * x[1], c.length, cfg).numpy()  # (J+1, n)
            assemblers[c.job].add(c.index, est, post[k, :n].cpu().numpy(), steps,
                                  None if stay is None else stay[k])
        del fit, masks, post, inputs
        if progress is not None:
            progress(len(group))
    return [a.result() for a in assemblers]


class _Assembler:
    """One recording's output, built from its chunk estimates as they arrive: each is
    cross-faded into place (in time order: a chunk that arrives early waits for the one before
    it, to which its sources are aligned when the sources have no video)."""

    def __init__(self, cfg, num_samples: int, bounds: list[tuple[int, int]], num_sources: int,
                 align: bool):
        self.cfg, self.bounds, self.align = cfg, bounds, align
        self.out = np.zeros((num_sources + 1, num_samples), dtype=np.float32)
        self.post = self.post_w = None
        self.waiting, self.next, self.prev, self.steps = {}, 0, None, 0
        self.stay, self.stay_frames = None, 0

    def add(self, index: int, est: np.ndarray, posterior: np.ndarray, steps: int,
            stay: np.ndarray | None = None) -> None:
        """A chunk's estimates ``(J+1, n)``, posterior ``(T, J, K)``, SVI steps and fitted stay
        ``(J,)`` (None: not learnt); placed when its turn comes."""
        self.waiting[index] = (est, posterior, stay)
        self.steps = max(self.steps, steps)
        while self.next in self.waiting:
            self._place(self.next, *self.waiting.pop(self.next))
            self.next += 1

    def _place(self, index: int, est: np.ndarray, posterior: np.ndarray, stay) -> None:
        start, length = self.bounds[index]
        J = self.out.shape[0] - 1
        if self.post is None:
            self.post = np.zeros((self.cfg.num_frames(self.out.shape[1]),) + posterior.shape[1:])
            self.post_w = np.zeros(self.post.shape[0])
        if self.align and self.prev is not None:
            perm = _best_permutation(self.prev, est, start)
            est[:J], posterior = est[perm], posterior[:, perm]
            stay = None if stay is None else stay[perm]
        if stay is not None:                                  # a mean over chunks, by frames
            self.stay = (0 if self.stay is None else self.stay) + stay * posterior.shape[0]
            self.stay_frames += posterior.shape[0]
        w = _crossfade_weights(length, start, self.bounds)
        self.out[:, start:start + length] += est * w      # the fades of two chunks sum to one
        t0 = start // self.cfg.hop
        tw = w[np.minimum(np.arange(posterior.shape[0]) * self.cfg.hop, length - 1)]
        self.post[t0:t0 + posterior.shape[0]] += posterior * tw[:, None, None]
        self.post_w[t0:t0 + posterior.shape[0]] += tw
        self.prev = (start, est)

    def result(self) -> Separated:
        out = self.out
        post = self.post / np.maximum(self.post_w, 1e-12)[:, None, None]
        J = out.shape[0] - 1
        stay = None if self.stay is None else self.stay / self.stay_frames
        return Separated(out[:J], out[J], post.astype(np.float32), self.steps, stay)


def _crossfade_weights(length: int, start: int, bounds: list[tuple[int, int]]) -> np.ndarray:
    """Linear fade-in over the overlap with the previous chunk and fade-out over the next; the
    two fades over an overlap of ``n`` samples are ``(i + ½)/n`` and ``(n - i - ½)/n``, which sum
    to one, so the cross-faded signal needs no normalisation (nor a buffer of weights)."""
    w = np.ones(length, dtype=np.float32)
    for o_start, o_length in bounds:
        if o_start < start < o_start + o_length:                      # previous chunk overlaps
            n = o_start + o_length - start
            w[:n] = np.minimum(w[:n], (np.arange(n) + 0.5) / n)
        if start < o_start < start + length:                          # next chunk overlaps
            n = start + length - o_start
            w[length - n:] = np.minimum(w[length - n:], (n - np.arange(n) - 0.5) / n)
    return w


def _best_permutation(prev, est: np.ndarray, start: int) -> list[int]:
    """Order of ``est``'s sources that best matches the previous chunk over their overlap."""
    p_start, p_est = prev
    J = est.shape[0] - 1
    lo, hi = start, min(p_start + p_est.shape[1], start + est.shape[1])
    if hi <= lo:
        return list(range(J))
    a = p_est[:J, lo - p_start:hi - p_start]
    b = est[:J, :hi - lo]
    best, best_score = list(range(J)), -np.inf
    for perm in itertools.permutations(range(J)):
        score = sum(float(np.dot(a[j], b[perm[j]])) for j in range(J))
        if score > best_score:
            best, best_score = list(perm), score
    return best
