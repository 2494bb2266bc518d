"""The generative model of pyro_avss, for training and for separation — read this file first.

Notation (as in the README's "How it works"). STFT frames ``t``, bins ``f``, sources ``j = 1..J``, K
speech components (speaker-specific decoders, audio-only or audio-visual, or a universal one).

For every utterance b, frame t and source j::

    z_j[t]  ~ N(0, I_D)  or  p(z | v_j[t-c..t+c])         latent speech code (no lips, or
                                                          the visual prior of source j's lips)
              (with memory: the same means m and scales s chained over frames,
               z_j[t] = m[t] + a (z_j[t-1] - m[t-1]) + sqrt(1 - a²) s[t] ε, see .markov)
    m_j[t]  ~ switch prior                                which component speaks
    s_j[f,t] ~ CN(0, g_j[t] · σ²_{m_j[t]}(z_j[t], v_j[t])[f] · c_j[f,t])
    b[f,t]   ~ CN(0, (W H)[f,t])                           noise (NMF)
    x = Σ_j s_j + b   =>   x[f,t] | z, m ~ CN(0, Σ_j g_j σ²_{j,m_j} + (W H)[f,t])

``c_j[·,t]`` is 1, or, once a fit has read source j's pitch at frame t from its own estimate,
the harmonic comb of that pitch (:mod:`.harmonics`, ``separate.harmonics_at``).
``v_j[t]`` is source j's lip embedding at frame t (with ``present_j[t] = 0`` where no face was
found). ``σ²_k`` is decoder k of a :class:`~pyro_avss.nets.vae.DecoderBank`; all K decoders are
evaluated once per step as ``(..., J, K, F)``, the variance of every joint switch state is then
formed by summing variances (:mod:`.likelihood`), and the mixture power is observed as one
sample site ``"x"`` (``obs=``) whose distribution has the switch summed out exactly, or with the
switches as enumerated sites (:mod:`.switch`). The separation model returns a
:class:`MixtureExplanation` of what it computed, so masks and posteriors come from replaying it
at a draw of any guide. Switch priors: one component per source for the whole utterance (or
chunk) — the separation default, since a source is one person —, i.i.d. per frame with weights
``π_j``, or a sticky Markov chain; the last two let a source change component within an
utterance (e.g. an audio-only component for frames where its face is lost).

*Training* (``speech_model`` / ``speech_guide``) is the special case J = 1, no noise, g = 1, on
clean power spectrograms normalised per utterance; labels, where known, restrict the switch. The
guide is the amortised encoder ``q(z | s, v)``; the KL term is annealed by ``poutine.scale`` on
``z`` only (allowed because ``p(z)`` does not depend on the switch). With a visual prior
(:class:`~pyro_avss.nets.vae.VisualPrior`, the conditional-VAE construction) the KL is taken to
``p(z | v)`` instead of ``N(0, I)``; frames without a face keep ``N(0, I)``. With latent
dynamics (:class:`~pyro_avss.nets.vae.LatentDynamics`, the speech prior with memory) the KL is
taken to the Gauss–Markov chain of those priors over frames.

*Separation* (:class:`SeparationModel`) freezes the decoders and fits, per utterance, the gains
``g``, the noise ``W, H``, the switch weights ``π`` (i.i.d. prior) and a per-frame Gaussian
guide ``q(z_j[t])``. That guide starts from the encoder applied to the mixture and source j's
lips (``guide_init = "encoder"``), from source j's visual prior (``"prior"``: each source starts
from its own lips, not from a mixture they all share), or from their product (``"product"``:
the precision-weighted combination of the two Gaussians). With ``guide = "markov"`` the guide is
structured: the same per-frame means and scales, chained over frames by a fitted correlation
(:mod:`.markov`). The fit may restart that guide once from the encoder applied to each source's
own estimate (:meth:`SeparationModel.restarted_guide`, driven by
:mod:`pyro_avss.inference.guide_restart`). The gains are per frame
(``gain = "frame"``) or one per source and chunk (``"utterance"``: the decoders, trained on
per-utterance normalised speech, then carry the frame-to-frame level, so a source cannot take
over another's frames by raising its gain there), or (``"faceless"``) one per source and chunk
where its face is seen and a free one on each frame where that source's face is missing, where
the decoders have no lips to carry the level with.

Plate layout: ``plate("utt", B, dim=-2)`` outside ``plate("time", T, dim=-1)``; ``(J, D)`` is
the event shape of ``z``; ``max_plate_nesting = 2``; enumerated switches use dims -3, -4, ...
"""

from __future__ import annotations

import functools

import pyro
import pyro.distributions as dist
import torch
from pyro import poutine
from pyro.distributions import constraints

from ..settings.separation import GAINS, GUIDE_INITS, GUIDES
from .likelihood import frame_log_likelihood, joint_log_variance, mixture_log_likelihood
from .markov import GaussMarkovChain
from .noise import NMFNoise
from .protocols import DecoderBankLike, LatentCorrelation, LatentPrior, NoiseModel, SwitchModel, check_piece
from .switch import EXCLUDED, SwitchPrior, state_log_mask

MAX_PLATE_NESTING = 2


def log_power_features(power: torch.Tensor) -> torch.Tensor:
    """Encoder input: ``log(|X|² + 1e-8)`` of a per-utterance normalised power spectrogram."""
    return torch.log(power + 1e-8)


def gaussian_product(loc_a, scale_a, loc_b, scale_b):
    """The normalised product of two diagonal Gaussians, ``N(μ, σ²)`` with
    ``σ⁻² = σ_a⁻² + σ_b⁻²`` and ``μ = σ² (μ_a σ_a⁻² + μ_b σ_b⁻²)``: ``(loc, scale)``."""
    w_a, w_b = scale_a.pow(-2), scale_b.pow(-2)
    return (loc_a * w_a + loc_b * w_b) / (w_a + w_b), (w_a + w_b).rsqrt()


def label_log_mask(labels: torch.Tensor, num_components: int) -> torch.Tensor:
    """``(B, T)`` labels (``-1`` = unknown) -> ``(B, T, K)`` additive mask (0 allowed, EXCLUDED not)."""
    allowed = torch.nn.functional.one_hot(labels.clamp_min(0), num_components).bool()
    allowed = allowed | (labels < 0)[..., None]
    return torch.where(allowed, 0.0, EXCLUDED).to(torch.float32)


# ---------------------------------------------------------------------------------------------
# training: clean speech, one source, no noise
# ---------------------------------------------------------------------------------------------
def latent_prior(prior, lips, present, shape, dynamics=None) -> dist.Distribution:
    """The prior of ``z`` with event shape ``shape[-2:]`` (sources, latent dim): ``N(0, I)`` when
    ``prior`` is None, else the visual prior of each source's lips (``lips (..., J, Dv)``);
    ``prior(lips, present) -> (loc, scale)``.

    With ``dynamics`` (a :class:`~pyro_avss.nets.vae.LatentDynamics`), the speech prior with
    memory: the same per-frame means and scales, chained over the time plate by the
    :class:`~.markov.GaussMarkovChain` with ``dynamics()`` as the frame-to-frame correlation."""
    if dynamics is None:
        if prior is None:
            return dist.Normal(lips.new_zeros(()), 1.0).expand(shape).to_event(2)
        loc, scale = prior(lips, present)
        return dist.Normal(loc, scale).to_event(2)
    if prior is None:
        loc = lips.new_zeros(lips.shape[:-1] + (shape[-1],))
        scale = torch.ones_like(loc)
    else:
        loc, scale = prior(lips, present)
    return GaussMarkovChain(loc, scale, dynamics())


def speech_model(batch: dict, decoders, switch: SwitchPrior, beta: float = 1.0, prior=None,
                 dynamics=None) -> None:
    """Model of a mini-batch of clean segments.

    ``batch``: ``power (B,T,F)``, ``lips (B,T,Dv)``, ``present (B,T)``, ``labels (B,T)`` long,
    ``mask (B,T)`` bool. ``prior``: a :class:`~pyro_avss.nets.vae.VisualPrior` or None (``N(0, I)``);
    ``dynamics``: a :class:`~pyro_avss.nets.vae.LatentDynamics` for the prior with memory, or None.
    """
    power, mask = batch["power"], batch["mask"]
    B, T, _ = power.shape
    time = pyro.plate("time", T, dim=-1)
    with pyro.plate("utt", B, dim=-2):
        with time, poutine.mask(mask=mask), poutine.scale(scale=beta):
            z = pyro.sample("z", latent_prior(prior, batch["lips"][..., None, :], batch["present"][..., None],
                                              [1, decoders.latent_dim], dynamics))
        lips, present = batch["lips"][..., None, :], batch["present"][..., None]
        speaker = utterance_labels(batch["labels"], mask)
        if speaker is not None and hasattr(decoders, "selected") and decoders.num_components > 1:
            # each utterance's own decoder only; the others are excluded by the labels anyway
            own = mixture_log_likelihood(power, decoders.selected(z, lips, present, speaker), None)
            loglik = own.new_zeros(own.shape[:-1] + (decoders.num_components,))
            loglik = loglik.scatter(-1, speaker[:, None, None].expand(own.shape), own)
        else:
            loglik = mixture_log_likelihood(power, decoders(z, lips, present), None)   # (B,T,K)
        switch.observe(loglik + label_log_mask(batch["labels"], decoders.num_components), mask, time)


def utterance_labels(labels: torch.Tensor, mask: torch.Tensor) -> torch.Tensor | None:
    """``(B,)`` the label of each utterance when every valid frame of it has the same known label
    (``labels (B, T)``, ``mask (B, T)``; an utterance without valid frames takes label 0), else
    None."""
    first = torch.where(mask, labels, labels.new_full((), -1)).amax(-1).clamp_min(0)     # (B,)
    if bool(((labels == first[:, None]) | ~mask).all()):
        return first
    return None


def speech_guide(batch: dict, encoder, switch=None, beta: float = 1.0) -> None:
    """Amortised guide ``q(z | s, v)`` for :func:`speech_model`."""
    power, mask = batch["power"], batch["mask"]
    B, T, _ = power.shape
    loc, scale = encoder(log_power_features(power), batch["lips"], batch["present"])
    with pyro.plate("utt", B, dim=-2):
        with pyro.plate("time", T, dim=-1), poutine.mask(mask=mask), poutine.scale(scale=beta):
            pyro.sample("z", dist.Normal(loc[..., None, :], scale[..., None, :]).to_event(2))


# ---------------------------------------------------------------------------------------------
# separation: J sources, K components each, NMF noise, fitted per utterance
# ---------------------------------------------------------------------------------------------
class MixtureExplanation:
    """What :meth:`SeparationModel.model` computed for one value of its latent variables — all
    that Wiener masks and switch posteriors need — returned by the model, so a trace of it
    replayed at a guide's draw gives them without knowing any parameter's name.

    ``log_speech (..., B, T, J, K, F)``: ``log(g_j σ²_{j,k})``; ``log_noise (..., B, T, F)``;
    ``log_var (..., B, T, S, F)``: the log mixture variance of every joint switch state;
    ``loglik (..., B, T, S)``: the per-frame log-likelihood of every joint state (``EXCLUDED``
    added for states a source may not use), computed on first use (SVI never asks for it)."""

    def __init__(self, log_speech, log_noise, log_var, power, state_log_mask=None):
        self.log_speech, self.log_noise, self.log_var = log_speech, log_noise, log_var
        self._power, self._state_log_mask = power, state_log_mask

    @functools.cached_property
    def loglik(self) -> torch.Tensor:
        loglik = frame_log_likelihood(self._power.unsqueeze(-2), self.log_var)
        return loglik if self._state_log_mask is None else loglik + self._state_log_mask.to(loglik)


class SeparationModel:
    """Test-time model and guide for a batch of mixtures.

    Call arguments of :meth:`model` and :meth:`guide`: ``power (B,T,F)`` mixture power
    (normalised per utterance), ``lips (B,T,J,Dv)``, ``present (B,T,J)`` float, ``mask (B,T)``
    bool. Parameters (``pyro.param``): ``gain (B,T,J)``, ``noise_W``, ``noise_H`` (from the
    noise model), ``switch_pi (B,J,K)``, ``z_loc``/``z_scale (B,T,J,D)``.

    :param encoder: frozen :class:`~pyro_avss.nets.vae.SpeechEncoder` (initialises the guide).
    :param decoders: frozen :class:`~pyro_avss.nets.vae.DecoderBank` with K components.
    :param switch: a :class:`~pyro_avss.models.switch.SwitchPrior` for J sources.
    :param noise: a noise model with ``log_variance(power, mask, plates)`` (default
        :class:`NMFNoise`) and, if it has latent variables, ``guide(power, mask, plates)``;
        ``plates`` are the model's ``(utt, time)`` plate objects, to be re-entered.
    :param prior: optional :class:`~pyro_avss.nets.vae.VisualPrior` (frozen): each source's
        ``z`` prior is then ``p(z | v_j)`` of its own lips, else ``N(0, I)``.
    :param guide_init: ``encoder``, ``prior`` or ``product`` (module docstring).
    :param dynamics: optional :class:`~pyro_avss.nets.vae.LatentDynamics` (frozen): the ``z``
        prior is then the Gauss–Markov chain over frames (:mod:`.markov`).
    :param guide: ``meanfield`` (``q(z_j[t])`` independent over frames) or ``markov`` (the
        structured guide: a :class:`~.markov.GaussMarkovChain` with per-frame ``z_loc``,
        ``z_scale`` and one fitted correlation ``z_corr (B,1,J,D)`` per source and dimension,
        started at the prior's correlation, or 0 without dynamics — the mean-field start).
    :param gain: ``frame`` (``gain (B,T,J)``) or ``utterance`` (``gain (B,1,J)``).
    :param allowed: optional ``(J, K)`` bool; ``allowed[j, k] = False`` removes component k from
        source j's switch (an oracle told who speaks in each video). The joint states that use
        a removed component get log-likelihood ``EXCLUDED``, so the switch sums them out to ~0.
    """

    def __init__(self, encoder, decoders, switch: SwitchPrior, noise=None, allowed=None,
                 prior=None, guide_init: str = "encoder", gain: str = "frame", prior_weight: float = 1.0,
                 dynamics=None, guide: str = "meanfield"):
        if guide_init not in GUIDE_INITS:
            raise ValueError(f"guide_init must be one of {', '.join(GUIDE_INITS)}, got {guide_init!r}")
        if guide not in GUIDES:
            raise ValueError(f"guide must be one of {', '.join(GUIDES)}, got {guide!r}")
        if gain not in GAINS:
            raise ValueError(f"gain must be one of {', '.join(GAINS)}, got {gain!r}")
        if guide_init != "encoder" and prior is None:
            raise ValueError(f"guide_init={guide_init!r} needs a model with a visual prior")
        noise = noise if noise is not None else NMFNoise()
        check_piece("decoder bank", decoders, DecoderBankLike)
        check_piece("switch prior", switch, SwitchModel)
        check_piece("noise model", noise, NoiseModel)
        check_piece("visual prior", prior, LatentPrior, optional=True)
        check_piece("latent dynamics", dynamics, LatentCorrelation, optional=True)
        self.encoder, self.decoders, self.switch, self.noise = encoder, decoders, switch, noise
        self.allowed = None if allowed is None else torch.as_tensor(allowed, dtype=torch.bool)
        self.state_log_mask = None if allowed is None else state_log_mask(self.allowed)
        self.prior, self.guide_init, self.gain = prior, guide_init, gain
        self.prior_weight = prior_weight
        self.dynamics, self.guide_kind = dynamics, guide
        self._prior_memo = None
        #: ``(B,T,J,F)`` log harmonic comb of each source's pitch, or None (every comb 1): set by
        #: the fit once it has read the pitches (:mod:`.harmonics`, ``separate.harmonics_at``)
        self.log_harmonics = None

    def visual_prior(self, lips, present):
        """``(loc, scale)`` ``(B,T,J,D)`` of the frozen visual prior for these lips, computed once
        and reused by every SVI step and the guide's start (the lips do not change while one
        batch is fitted)."""
        memo = self._prior_memo
        if memo is None or memo[0] is not lips or memo[1] is not present:
            with torch.no_grad():
                memo = self._prior_memo = (lips, present, *self.prior(lips, present))
        return memo[2], memo[3]

    def speech_log_variance(self, z, lips, present, gain):
        """``log(g_j σ²_{j,k} c_j)`` as ``(..., B, T, J, K, F)`` (``c_j``: source j's harmonic
        comb where :attr:`log_harmonics` is set, else 1)."""
        log_speech = gain.log()[..., None, None] + self.decoders(z, lips, present)
        if self.log_harmonics is not None:
            log_speech = log_speech + self.log_harmonics[..., None, :]
        return log_speech

    def explain(self, z, power, lips, present, log_noise, gain) -> MixtureExplanation:
        """For one value of ``z``, the gains and the noise: the :class:`MixtureExplanation`."""
        J = lips.shape[-2]
        log_speech = self.speech_log_variance(z, lips, present, gain)
        log_var = joint_log_variance(log_speech, log_noise).flatten(-1 - J, -2)   # (...,B,T,S,F)
        return MixtureExplanation(log_speech, log_noise, log_var, power, self.state_log_mask)

    def plates(self, power):
        """The ``utt`` and ``time`` plates, created once per trace and handed to the pieces."""
        B, T, _ = power.shape
        return pyro.plate("utt", B, dim=-2), pyro.plate("time", T, dim=-1)

    def model(self, power, lips, present, mask):
        B, T, _ = power.shape
        J = lips.shape[-2]
        utt, time = self.plates(power)
        log_noise = self.noise.log_variance(power, mask, (utt, time))             # (..., B,T,F)
        gain = self.fitted_gain(power, present)
        with utt:
            with time, poutine.mask(mask=mask), poutine.scale(scale=self.prior_weight):
                prior = None if self.prior is None else self.visual_prior
                z = pyro.sample("z", latent_prior(prior, lips, present, [J, self.decoders.latent_dim],
                                                  self.dynamics))
            explanation = self.explain(z, power, lips, present, log_noise, gain)
            self.switch.observe_mixture(explanation.log_var, power, mask, time, self.allowed)
        return explanation

    def fitted_gain(self, power, present):
        """The gains ``g (B, T or 1, J)`` (``pyro.param``): one per source and chunk, one per frame,
        or (``"faceless"``) one per source and chunk where that source's face is seen and a free
        one on each frame where it is missing, ``g_j[t] = present_j[t] ? G_j : h_j[t]``: the
        decoders carry the level where the lips are seen and cannot where they are not.

        The faceless frames' gains are parameters of their own, not factors on ``G_j``: as
        factors (``G_j · h_j[t]``), every faceless frame also pulled the one gain the seen frames
        share, and the target lost 2.4 dB with its face missing on 60 % of the frames (GRID
        dev, one talker: 2.68 against 5.06 dB)."""
        B, T, _ = power.shape
        J = present.shape[-1]
        frames = T if self.gain == "frame" else 1
        start = 1.0 / (J + 1)
        gain = pyro.param("gain", lambda: power.new_full((B, frames, J), start),
                          constraint=constraints.positive)
        if self.gain != "faceless":
            return gain
        own = pyro.param("gain_faceless", lambda: power.new_full((B, T, J), start),
                         constraint=constraints.positive)
        return torch.where(present > 0.5, gain.expand_as(own), own)

    def initial_guide(self, power, lips, present):
        """Starting ``(loc, scale)`` ``(B,T,J,D)`` of ``q(z)`` (``guide_init``): the encoder on
        the mixture and each source's lips, each source's visual prior, or their product
        (:meth:`encoded_start`)."""
        with torch.no_grad():
            if self.guide_init == "prior":
                return self.visual_prior(lips, present)
            features = log_power_features(power)[..., None, :].expand(*lips.shape[:-1], -1)
            return self.encoded_start(features, lips, present, self.guide_init == "product")

    def restarted_guide(self, sources, lips, present):
        """``(loc, scale)`` ``(B,T,J,D)`` of ``q(z)`` restarted from ``sources (B,T,J,F)``, power
        spectrograms of each source's estimate: source j's encoder reads its own estimate instead
        of the mixture all sources share, times the visual prior where the model has one
        (:mod:`pyro_avss.inference.guide_restart`)."""
        with torch.no_grad():
            return self.encoded_start(log_power_features(sources), lips, present, self.prior is not None)

    def encoded_start(self, features, lips, present, times_prior: bool):
        """The encoder's Gaussian for ``features (B,T,J,F)`` and each source's lips, or with
        ``times_prior`` its product with the visual prior (:func:`gaussian_product`)."""
        loc, scale = self.encoder(features, lips, present)
        if not times_prior:
            return loc, scale
        return gaussian_product(loc, scale, *self.visual_prior(lips, present))

    def guide(self, power, lips, present, mask):
        B, T, _ = power.shape
        init = None

        def lazy(i):
            nonlocal init
            if init is None:
                init = self.initial_guide(power, lips, present)
            return init[i]

        z_loc = pyro.param("z_loc", lambda: lazy(0))
        z_scale = pyro.param("z_scale", lambda: lazy(1), constraint=constraints.positive)
        utt, time = self.plates(power)
        if hasattr(self.noise, "guide"):          # noise models with latent variables
            self.noise.guide(power, mask, (utt, time))
        if self.guide_kind == "markov":
            q = GaussMarkovChain(z_loc, z_scale, pyro.param("z_corr", lambda: self.initial_corr(z_loc),
                                                            constraint=constraints.interval(-0.99, 0.99)))
        else:
            q = dist.Normal(z_loc, z_scale).to_event(2)
        with utt, time, poutine.mask(mask=mask), poutine.scale(scale=self.prior_weight):
            pyro.sample("z", q)

    def initial_corr(self, z_loc):
        """Start of the structured guide's ``z_corr (B,1,J,D)``: the prior's correlation."""
        with torch.no_grad():
            start = self.dynamics() if self.dynamics is not None else z_loc.new_zeros(z_loc.shape[-1])
            return start.to(z_loc).expand(z_loc.shape[:-3] + (1,) + z_loc.shape[-2:]).clone()
