"""SVI on one padded batch of (chunks of) mixtures: the fit, pruning, masks and posteriors.

:func:`fit_batch` builds the :class:`~pyro_avss.models.generative.SeparationModel` for the
settings, runs SVI in a param store and random streams of its own, drops the decoders no source
needs after a few steps, and returns the posterior-mean Wiener masks and the exact switch
posterior (:func:`posterior_masks`), computed by replaying the model at draws of the guide
(:func:`explain_fit`). The recordings-level pipeline around it is :mod:`.separation`.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, replace

import numpy as np
import pyro
import torch
from pyro import poutine
from pyro.distributions import constraints
from pyro.infer import SVI, Trace_ELBO, TraceEnum_ELBO
from pyro.poutine.util import site_is_subsample

from ..checkpoint import SpeechModels
from ..errors import InputError, SeparationDiverged
from ..models.generative import MAX_PLATE_NESTING, SeparationModel
from ..models.harmonics import HarmonicCombs
from ..models.noise import NMFNoise
from ..models.switch import STAY_PARAM, joint_states, make_switch
from .guide_restart import restart_guide, source_power_estimates
from .optim import DecayingAdam, forget_parameter, frozen
from .harmonics import read_combs, source_combs
from .pyro_state import forked_rng, isolated_pyro_state
from .screening import frame_scores, kept_components, kept_count, needs_screening, same_inputs, screening_settings
from .subnormals import subnormals_flushed
from ..settings.separation import SeparationSettings


SETTLE_STEPS = 20       # no early stop before this many steps (nor within half of it after a restart)


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
    the model's own sites (``z``, and a noise model's latent ones); a guide of your own is not
    restarted (``separate.restart_at``)."""
    settings.check_model(models)
    J = lips.shape[-2]
    used = (list(settings.components) if settings.components is not None
            else list(range(models.decoders.num_components)))
    enumerate_ = settings.enumeration == "pyro"

    def build_switch(components: list[int]):
        if make_switch_prior is not None:
            return make_switch_prior(len(components), J)
        speakers, share = models.decoders.speakers(), settings.audio_only_share
        weights = [share if models.decoders.uses_video[c] < 0.5 else 1.0 - share for c in components]
        return make_switch(settings.switch_prior_for(models), len(components), J, enumerate=enumerate_,
                           learn_stay=settings.learn_stay, speakers=[speakers[c] for c in components],
                           weights=weights, stay_prob=settings.stay(models.stft.hop / models.stft.sample_rate))

    noise = (make_noise() if make_noise is not None else
             NMFNoise(settings.noise_rank, settings.seed, settings.noise_init_level,
                      settings.noise_smoothness,
                      noise_start_shape(models, settings, power, lips, present, mask),
                      settings.noise_spectral_smoothness, settings.noise_smooth_rank,
                      noise_pauses(models, settings, power, lips, present, mask),
                      settings.noise_pause_smoothness))

    def build(components: list[int]) -> SeparationModel:
        sep = separation_model(models, settings, components, build_switch(components), noise, J)
        if make_guide is not None:
            sep.guide = make_guide(sep)
        return sep

    nets = [n for n in (models.encoder, models.decoders, models.prior, models.dynamics) if n is not None]
    with frozen(*nets):
        if settings.source_components is not None:     # no source may use the others
            used = [k for k in used if any(k in own for own in settings.source_components)]
        if needs_screening(settings, len(used), J):
            used = screened_components(models, power, lips, present, mask, settings, used, make_noise)
        restart = make_guide is None and J >= settings.restart_sources   # the model's own guide only
        combs = source_combs(models, settings, power)
        return _fit(build, used, models.decoders.num_components, power, lips, present, mask,
                    replace(settings, restart_at=settings.restart_step_for(models) if restart else 0), combs)


def screened_components(models: SpeechModels, power, lips, present, mask, settings: SeparationSettings,
                        used: list[int], make_noise=None) -> list[int]:
    """The components kept for a fit of J sources over too many joint states: one short
    one-source screening fit per distinct source (:mod:`.screening`), then the round-robin of
    their rankings, ``⌊max_joint_states^(1/J)⌋`` components in all."""
    J = lips.shape[-2]
    screen = screening_settings(settings, used)
    scores: list[torch.Tensor] = []
    for j in range(J):
        twin = next((i for i in range(j) if same_inputs(lips, present, j, i)), None)
        if twin is not None:
            scores.append(scores[twin])
            continue
        fit = fit_batch(models, power, lips[..., j:j + 1, :], present[..., j:j + 1], mask, screen,
                        make_noise=make_noise)
        scores.append(frame_scores(fit.posterior, mask))
    return kept_components(scores, used, kept_count(settings.max_joint_states, J))


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
    return SeparationModel(guide_encoder(models, settings, num_sources), components_view(models, components), switch, noise,
                           allowed=allowed_components(settings, num_sources, components),
                           prior=models.prior, guide_init=guide_init, gain=gain,
                           prior_weight=settings.prior_weight, dynamics=models.dynamics, guide=guide)


def guide_encoder(models: SpeechModels, settings: SeparationSettings, num_sources: int = 1):
    """The encoder that reads the mixture for the guide's start (``separate.guide_encoder``): the
    model's noisy encoder where ``noisy`` asks for it, or ``auto`` with one source and a model
    that has one and a visual prior (its start is then the product of the two); else its speech
    encoder. Chosen on the tuned-on splits: with several talkers the noisy encoder reads their
    sum as one voice (two GRID talkers: 6.81 dB against 7.07), and alone, without lips to temper
    it, it lost on LibriSpeech (audio only: 3.23 against 3.61 dB with the per-frame switch, 2.14
    against 3.06 with the per-utterance one)."""
    wanted = settings.guide_encoder
    auto = (wanted == "auto" and num_sources == 1 and models.noisy_encoder is not None
            and models.prior is not None)
    if wanted == "noisy" or auto:
        return models.noisy_encoder
    return models.encoder


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


def noise_pauses(models: SpeechModels, settings: SeparationSettings, power, lips, present, mask):
    """The NMF noise's pause bases and their levels (``separate.noise_pause_rank`` of them, learnt
    from the frames where the lips say nobody speaks, :mod:`.activity`), or None where the model
    has no visual prior or the setting is 0. A recording without video, or without pauses, gets
    flat bases (:func:`~.activity.pause_noise_bases`), so that a bank that reads lips gives every
    recording the same number of learnt bases, alike alone or in any batch."""
    rank = settings.noise_pause_rank
    if rank == 0 or models.prior is None:
        return None
    from .activity import lip_speech_level, pause_frames, pause_noise_bases, silent_frames

    level = lip_speech_level(models.prior, components_view(models, settings.components), lips, present)
    silent = silent_frames(level, present, mask, settings.noise_pause_threshold)
    margin = round(settings.noise_pause_margin * models.stft.sample_rate / models.stft.hop)
    return pause_noise_bases(power, pause_frames(silent, mask, margin), rank, settings.seed,
                             iterations=settings.noise_pause_iterations)


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
    noise), the switch posterior ``(B,T,J,K)`` on all K components, the SVI steps taken, the
    fitted parameters (constrained values, detached, by name: the fit's own param store) and
    the components (bank indices) the fit ran to its end, those pruning dropped left out."""

    masks: torch.Tensor
    posterior: torch.Tensor
    steps: int
    params: dict
    kept: list[int]

    def __iter__(self):           # masks, posterior, steps = fit_batch(...)
        return iter((self.masks, self.posterior, self.steps))


def _fit(build, used: list[int], num_components: int, power, lips, present, mask,
         settings: SeparationSettings, combs: HarmonicCombs | None = None) -> BatchFit:
    """The SVI loop and the posterior of :func:`fit_batch`, in a param store and random streams
    of its own (:func:`~.pyro_state.isolated_pyro_state`: the caller's are left as they were)
    and without Pyro's argument checks (a bad value shows up as a non-finite loss, which stops
    the fit; the checks of every distribution at every step cost a third of a short fit), with
    subnormal floats flushed to zero (:mod:`.subnormals`).
    ``build(components)`` makes the :class:`SeparationModel` over those decoders (indices into
    the model's bank of ``num_components``); ``used`` are the ones to start with. With
    ``prune_threshold > 0`` the components that no source needs are dropped after
    ``prune_after`` steps (:func:`components_to_keep`) and SVI goes on with the smaller model.
    With ``restart_at > 0`` (``fit_batch`` resolves it with
    :meth:`~pyro_avss.settings.separation.SeparationSettings.restart_step_for` and sets it to 0
    for fits of fewer than ``restart_sources`` sources and for guides of the caller's own) the
    guide is restarted once, after that many steps, from each source's own estimate
    (:mod:`.guide_restart`); with ``harmonics_at > 0``, after that many steps each source's
    speech variance takes the harmonic comb ``combs`` reads from its own estimate
    (:mod:`~pyro_avss.models.harmonics`). The loss is not tested for convergence in the
    :data:`SETTLE_STEPS` steps after either."""
    with isolated_pyro_state(settings.seed, power.device) as store, pyro.validation_enabled(False), \
            subnormals_flushed():
        sep = build(used)
        optim = pyro.optim.PyroOptim(DecayingAdam, {"lr": settings.lr, "lrd": settings.lr_decay})
        svi = _svi(sep, optim)
        frames = float(mask.sum())
        ema, steps = None, 0
        settle = max(SETTLE_STEPS, max(settings.restart_at, settings.harmonics_at) + SETTLE_STEPS // 2)
        for steps in range(1, settings.steps + 1):
            with warnings.catch_warnings():            # a NaN loss is the SeparationDiverged below
                warnings.filterwarnings("ignore", message="Encountered NaN", category=UserWarning)
                loss = svi.step(power, lips, present, mask) / frames
            if settings.noise_updates == "mu" and hasattr(sep.noise, "multiplicative_update"):
                noise_mu_step(sep, power, lips, present, mask)
            if not math.isfinite(loss):
                raise SeparationDiverged(f"separation loss became {loss} at step {steps}")
            if steps == settings.prune_after and settings.prune_threshold > 0 and len(used) > 1:
                keep = components_to_keep(sep, power, lips, present, mask, settings.prune_threshold)
                if len(keep) < len(used):
                    restrict_switch_prior(optim, keep)
                    used = [used[k] for k in keep]
                    combed, sep = sep.log_harmonics, build(used)
                    sep.log_harmonics = combed              # pitches read before the pruning
                    svi = _svi(sep, optim)
            if steps in (settings.restart_at, settings.harmonics_at):
                masks, post = posterior_masks(sep, power, lips, present, mask, settings.num_samples)
                sources = source_power_estimates(masks, power)
                if steps == settings.harmonics_at:
                    sep.log_harmonics = read_combs(combs, settings, sources, masks[:, :, -1] * power, post, mask, used)
                if steps == settings.restart_at:
                    restart_guide(sep, optim, lips, present, sources)
                ema = None                              # the loss starts a new descent
            if ema is None:
                ema = loss
                continue
            new = 0.8 * ema + 0.2 * loss
            if steps >= settle and abs(new - ema) <= settings.tol * abs(ema):
                break
            ema = new
        masks, post = posterior_masks(sep, power, lips, present, mask, settings.num_samples)
        params = {name: value.detach() for name, value in store.items()}
    if len(used) < num_components:                    # report the posterior on all K components
        full = post.new_zeros(post.shape[:-1] + (num_components,))
        full[..., used] = post
        post = full
    return BatchFit(masks, post, steps, params, list(used))


def _svi(sep: SeparationModel, optim) -> SVI:
    elbo = TraceEnum_ELBO if getattr(sep.switch, "enumerate", False) else Trace_ELBO
    return SVI(sep.model, sep.guide, optim, elbo(max_plate_nesting=MAX_PLATE_NESTING))


@torch.no_grad()
def components_to_keep(sep: SeparationModel, power, lips, present, mask, threshold: float) -> list[int]:
    """Positions (in ``sep``'s bank) of the components some source still needs: those whose
    switch posterior, at one draw of the guide, exceeds ``threshold`` in some valid frame of some
    source and utterance, plus every source's most probable component. The draw does not advance
    the random streams, so the fit goes on as it would have without this look."""
    with forked_rng(power.device):
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
    adam = forget_parameter(optim, old.unconstrained())
    state = None if adam is None else adam.state_dict()
    del store["switch_pi"]
    store.setdefault("switch_pi", pi / pi.sum(-1, keepdim=True), constraint=constraints.simplex)
    if state is not None:
        moments = {k: (v[..., keep].clone() if torch.is_tensor(v) and v.dim() else v)
                   for k, v in state["state"].items()}
        optim.set_state({"switch_pi": {"lr": state["lr"], "state": moments}})


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
        if site["type"] != "sample" or site_is_subsample(site):     # a plate's own site has no mean
            continue
        if site["is_observed"]:
            guide_trace.remove_node(name)
        elif at_mean:
            site["value"] = site["fn"].mean
    with forked_rng(power.device):                    # sites left to draw (an enumerated switch)
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
