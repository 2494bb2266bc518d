"""Priors over the per-frame speaker switch: the mixture observed with the switch summed out.

Each of the J sources has a switch ``m_j[t] ∈ {0..K-1}``; the joint state of a frame is
``(m_1[t], ..., m_J[t])``, S = K^J states. Given ``z``, the gains and the noise, the mixture's
power in joint state ``s`` is ``|x[f,t]|² ~ ObservedPower(log v[t, s, f])`` (exponential with
mean ``v``, :mod:`.likelihood`), ``ℓ[t, s]`` its log-density summed over bins. The model
observes the mixture as one Pyro sample site ``"x"`` (``obs=power``) through
:meth:`SwitchPrior.observe_mixture`, in one of two exact ways:

* **marginal** (default): the site's distribution has the switch summed out — a
  ``MixtureSameFamily`` over the joint states (per frame, or one state for all frames of an
  utterance) or a hidden Markov model over them — so any ELBO handles it;
* **enumerated** (``enumerate=True``, ``TraceEnum_ELBO``): the switches are ``Categorical``
  sample sites (``m{j}``, or ``m{j}_{t}`` in a ``pyro.markov`` chain) that Pyro enumerates, and
  ``x`` is observed at the enumerated state (picked with ``Vindex``).

Both give the same ELBO and gradients (tested, with padded frames, against each other and
against the hand-written factor of :meth:`SwitchPrior.observe`), and ``Predictive`` can draw
mixtures from either (``poutine.uncondition``). Exact posteriors ``p(m[t] = s | x, z)`` come
from closed forms (:meth:`SwitchPrior.posterior`), tested equal to Pyro's
``TraceEnum_ELBO.compute_marginals`` on the enumerated model.

* :class:`IIDSwitch`: ``m_j[t] ~ Categorical(π_j)`` independently per frame. The evidence is
  ``Σ_t log Σ_s π(s) exp ℓ[t, s]``; the posterior ``softmax_s(log π(s) + ℓ[t, s])``.
* :class:`MarkovSwitch`: ``m_j`` is a sticky Markov chain, ``A_j[k, k'] = ρ_j`` if ``k = k'``
  and ``(1 - ρ_j)/(K - 1)`` otherwise, first frame ``π_j``; the joint chain has transition
  ``Π_j A_j[s_j, s'_j]``. The evidence is a ``DiscreteHMM`` over the joint states (a parallel
  scan), with each frame's largest log-density subtracted first and added back for float32
  precision (:class:`ShiftedDiscreteHMM`); posteriors are ``∂ log Z / ∂ ℓ`` by autograd
  (forward–backward). The stay probability ``ρ`` is fixed, set from a time constant ``τ``
  (:func:`stay_from_seconds`: ``ρ = exp(-hop / τ)``), or learnt: with ``learn_stay`` its logit
  ``log ρ - log(1 - ρ)`` is a ``pyro.param`` (``switch_stay_logit``, one per utterance and
  source) fitted with the rest.
* :class:`UtteranceSwitch`: one component per source for the whole (chunk of the) recording,
  ``m_j[t] = m_j ~ Categorical(π_j)`` (the limit ``stay → 1`` of the Markov chain). The evidence
  is ``log Σ_s π(s) exp Σ_t ℓ[t, s]``; the posterior of every frame is the utterance posterior
  ``softmax_s(log π(s) + Σ_t ℓ[t, s])``, so weak per-frame evidence adds up over the utterance.

A source restricted to some components (``allowed``, an oracle told who speaks) has its prior
renormalised over them: ``EXCLUDED`` (a large finite negative log-probability) for the others.
Padded frames (``mask`` False) contribute nothing and have the prior as posterior (iid), only
propagate the chain (Markov) or get the utterance posterior (utterance).
"""

from __future__ import annotations

import pyro
import pyro.distributions as dist
import torch
from pyro import poutine
from pyro.ops.indexing import Vindex

from ..settings.separation import SWITCH_PRIORS    # the names make_switch builds
from .likelihood import ObservedPower
from .markov_switch import (DEFAULT_STAY, STAY_PARAM, MarkovSwitch, ShiftedDiscreteHMM,
                            stay_from_seconds)
from .speaker_switch import SpeakerSwitch
from .switch_prior import (EXCLUDED, POSTERIOR_FLOOR, SwitchPrior, identified_components, joint_states,
                           state_log_mask, zero_padded_frames)

# the switch priors' names in one place (several modules import them from here)
__all__ = ["DEFAULT_STAY", "EXCLUDED", "IIDSwitch", "MarkovSwitch", "POSTERIOR_FLOOR", "STAY_PARAM",
           "SWITCH_PRIORS", "ShiftedDiscreteHMM", "SpeakerSwitch", "SwitchPrior", "UtteranceSwitch",
           "identified_components", "joint_states", "make_switch", "state_log_mask", "stay_from_seconds",
           "zero_padded_frames"]


class IIDSwitch(SwitchPrior):
    """Independent per-frame switch (see module docstring).

    :param enumerate: use Pyro's parallel enumeration (requires ``TraceEnum_ELBO`` with
        ``max_plate_nesting=2``) instead of the hand-written ``logsumexp`` factor.
    """

    def __init__(self, num_components, num_sources=1, learn_prior=True, enumerate=False):
        super().__init__(num_components, num_sources, learn_prior)
        self.enumerate = enumerate

    def observe(self, loglik, mask, time_plate):
        """Add the evidence. Call inside ``plate("utt", dim=-2)``; ``loglik`` is ``(B, T, S)``;
        ``time_plate`` is the model's ``plate("time", T, dim=-1)`` object (re-entered here)."""
        B = loglik.shape[-3]
        pi = self.prior_probs(B, loglik.device)
        with time_plate, pyro.poutine.mask(mask=mask):
            if not self.enumerate:
                log_prior = self.joint_log_prior(pi)[:, None, :]             # (B, 1, S)
                pyro.factor("x", torch.logsumexp(loglik + log_prior, -1))
                return
            picks = [pyro.sample(f"m{j}", dist.Categorical(pi[:, None, j, :]),
                                 infer={"enumerate": "parallel"}) for j in range(self.J)]
            table = loglik.reshape(loglik.shape[:-1] + (self.K,) * self.J)
            pyro.factor("x", Vindex(table)[(Ellipsis, *picks)])

    def observe_mixture(self, log_var, power, mask, time_plate, allowed=None):
        """Observe ``x`` per frame (inside the time plate): a mixture over the joint states,
        ``MixtureSameFamily(Categorical(π), ObservedPower(log_var))``, or with ``enumerate`` one
        ``Categorical`` site per source and ``ObservedPower`` at the enumerated state."""
        pi = self.prior_probs(log_var.shape[-4], log_var.device)
        with time_plate, poutine.mask(mask=mask):
            if not self.enumerate:
                logits = self.state_log_prior(pi, allowed)[:, None, :].expand(log_var.shape[:-1])
                pyro.sample("x", dist.MixtureSameFamily(dist.Categorical(logits=logits),
                                                        ObservedPower(log_var).to_event(1)), obs=power)
                return
            picked = self.enumerated_log_var(log_var, pi, allowed)
            pyro.sample("x", ObservedPower(picked).to_event(1), obs=power)

    def posterior(self, loglik, mask, pi):
        """``(..., B, T, S)`` -> exact ``p(m[t] = s | x, z)``; padded frames get the prior."""
        log_prior = self.joint_log_prior(pi)[:, None, :]
        logits = torch.where(mask[..., None], loglik + log_prior, log_prior.expand_as(loglik))
        return torch.softmax(logits, -1)


class UtteranceSwitch(SwitchPrior):
    """One component per source and utterance (see module docstring). π is uniform unless
    ``learn_prior``: a per-utterance learnt π would only echo the utterance's own posterior."""

    def __init__(self, num_components, num_sources=1, learn_prior=False, enumerate=False):
        super().__init__(num_components, num_sources, learn_prior)
        self.enumerate = enumerate

    def utterance_logits(self, loglik: torch.Tensor, mask: torch.Tensor, pi: torch.Tensor) -> torch.Tensor:
        """``(..., B, T, S)`` -> ``(..., B, S)``: ``log π(s) + Σ_t ℓ[t, s]`` over valid frames."""
        return (loglik * mask[..., None]).sum(-2) + self.joint_log_prior(pi)

    def observe(self, loglik, mask, time_plate=None):
        """Add the evidence. Call inside ``plate("utt", dim=-2)`` only."""
        pi = self.prior_probs(loglik.shape[-3], loglik.device)
        pyro.factor("x", torch.logsumexp(self.utterance_logits(loglik, mask, pi), -1)[..., None])

    def observe_mixture(self, log_var, power, mask, time_plate, allowed=None):
        """Observe the utterance ``x (B, 1, T, F)`` as one site (inside the utt plate only):
        ``MixtureSameFamily(Categorical(π), ObservedPower(log_var).to_event(2))``, one joint state
        for all its frames (padded frames: ``log v = 0``, power 0, log-density exactly 0); or
        with ``enumerate`` one ``Categorical`` site per source outside the time plate and the
        frames observed per frame inside it at the enumerated state."""
        pi = self.prior_probs(log_var.shape[-4], log_var.device)
        if self.enumerate:
            picked = self.enumerated_log_var(log_var, pi, allowed)     # one pick per utterance
            with time_plate, poutine.mask(mask=mask):
                pyro.sample("x", ObservedPower(picked).to_event(1), obs=power)
            return
        log_var, power = zero_padded_frames(log_var, power, mask)
        per_state = log_var.movedim(-2, -3)[..., None, :, :, :]                      # (..,B,1,S,T,F)
        logits = self.state_log_prior(pi, allowed)[:, None, :]                       # (B,1,S)
        pyro.sample("x", dist.MixtureSameFamily(dist.Categorical(logits=logits),
                                                ObservedPower(per_state).to_event(2)), obs=power[:, None])

    def posterior(self, loglik, mask, pi):
        """The utterance posterior ``(..., B, S)`` repeated on every frame: ``(..., B, T, S)``."""
        post = torch.softmax(self.utterance_logits(loglik, mask, pi), -1)
        return post[..., None, :].expand_as(loglik)


def make_switch(prior: str, num_components: int, num_sources: int = 1, *, learn_prior=True,
                stay_prob=DEFAULT_STAY, enumerate=False, learn_stay=False, speakers=None,
                weights=None) -> SwitchPrior:
    """Build a switch prior by name (``"iid"``, ``"markov"``, ``"utterance"`` or ``"speaker"``;
    the utterance and speaker switches always have a uniform π; ``stay_prob`` and ``learn_stay``
    are the Markov and speaker switches'; ``speakers``, the speaker of each component, the
    speaker switch's groups: by default each component is a speaker of its own; ``weights``,
    each component's prior weight within its speaker: by default equal)."""
    if prior == "iid":
        return IIDSwitch(num_components, num_sources, learn_prior, enumerate=enumerate)
    if prior == "markov":
        return MarkovSwitch(num_components, num_sources, learn_prior, stay_prob, learn_stay, enumerate)
    if prior == "utterance":
        return UtteranceSwitch(num_components, num_sources, enumerate=enumerate)
    if prior == "speaker":
        speakers = list(range(num_components)) if speakers is None else list(speakers)
        if len(speakers) != num_components:
            raise ValueError(f"{len(speakers)} speakers given for {num_components} components")
        if enumerate:
            raise ValueError("the speaker switch has no enumerated form: use separate.enumeration=marginal")
        return SpeakerSwitch(speakers, num_sources, stay_prob, learn_stay, weights)
    raise ValueError(f"unknown switch prior {prior!r} (use one of {', '.join(map(repr, SWITCH_PRIORS))})")
