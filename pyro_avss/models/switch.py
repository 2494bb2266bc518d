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

import functools
import itertools
import math

import pyro
import pyro.distributions as dist
import torch
from pyro import poutine
from pyro.distributions import constraints
from pyro.distributions.hmm import _sequential_logmatmulexp
from pyro.ops.indexing import Vindex

from .likelihood import ObservedPower, frame_log_likelihood

#: log-likelihood added to states excluded by a known label (finite, so no NaN gradients)
EXCLUDED = -1.0e5

#: stay probability of the Markov switch when none is given (about 0.8 s at a 16 ms hop)
DEFAULT_STAY = 0.98

#: name of the learnt stay logit ``(B, J)`` in Pyro's param store
STAY_PARAM = "switch_stay_logit"


def stay_from_seconds(tau: float, hop_seconds: float) -> float:
    """Stay probability of a switch whose changes come at rate ``1/τ`` (a Poisson process):
    the chance of no change within one hop, ``ρ = exp(-hop / τ)``. The expected run of one
    component is then ``1 / (1 - ρ) ≈ τ / hop + 1/2`` frames, i.e. about ``τ`` seconds.

    :param tau: time constant ``τ`` in seconds (> 0).
    :param hop_seconds: frame hop in seconds (the STFT hop / sample rate).
    """
    if not tau > 0 or not hop_seconds > 0:
        raise ValueError(f"tau and hop_seconds must be > 0, got {tau} and {hop_seconds}")
    return math.exp(-hop_seconds / tau)


@functools.lru_cache(maxsize=64)
def joint_states(num_components: int, num_sources: int) -> torch.Tensor:
    """``(S, J)`` table of the component of each source in each joint state (row-major).

    Built once per ``(K, J)`` and shared (every SVI step asks for it several times, and building
    it from a Python list cost more than the step's arithmetic for small K); do not modify it."""
    return torch.tensor(list(itertools.product(range(num_components), repeat=num_sources)))


def state_log_mask(allowed: torch.Tensor) -> torch.Tensor:
    """``(J, K)`` bool -> ``(K^J,)``: 0 for joint states whose every source uses an allowed
    component, ``EXCLUDED`` otherwise (states in the order of :func:`joint_states`)."""
    allowed = torch.as_tensor(allowed)
    J, K = allowed.shape
    states = joint_states(K, J).to(allowed.device)                              # (S, J)
    ok = allowed[torch.arange(J, device=allowed.device), states].all(-1)         # (S,)
    return torch.where(ok, 0.0, EXCLUDED)


ENUM = {"enumerate": "parallel"}      # infer options of an enumerated switch site


def zero_padded_frames(log_var: torch.Tensor, power: torch.Tensor, mask: torch.Tensor):
    """``log v = 0`` and power 0 in padded frames (``mask`` False), where the log-density of
    :class:`~.likelihood.ObservedPower` is then exactly 0 in every state: a whole-utterance
    observation needs no mask. Unchanged (no copy) when no frame is padded."""
    if bool(mask.all()):
        return log_var, power
    return log_var.masked_fill(~mask[..., None, None], 0.0), power.masked_fill(~mask[..., None], 0.0)


class ShiftedDiscreteHMM(dist.DiscreteHMM):
    """``DiscreteHMM`` with the same density, computed stably in float32: each frame's largest
    emission log-density (over states) is subtracted before the forward recursion and the sum
    of them added back after. A frame's log-density is hundreds of nats (F bins) and their sum
    over an utterance ~10⁵, where float32 keeps ~0.01 nat; without the shift the gradients
    came out about 1 % off a float64 reference, with it ~10⁻⁶."""

    def expand(self, batch_shape, _instance=None):
        new = self._get_checked_instance(ShiftedDiscreteHMM, _instance)
        return super().expand(batch_shape, _instance=new)

    def log_prob(self, value):
        if self._validate_args:
            self._validate_sample(value)
        value = value.unsqueeze(-1 - self.observation_dist.event_dim)
        emission = self.observation_dist.log_prob(value)                              # (..., T, S)
        shift = emission.max(-1, keepdim=True).values.detach()
        chain = _sequential_logmatmulexp(self.transition_logits + (emission - shift).unsqueeze(-2))
        return (self.initial_logits + chain.logsumexp(-1)).logsumexp(-1) + shift[..., 0].sum(-1)


class SwitchPrior:
    """Common part of the switch priors.

    :param num_components: K.
    :param num_sources: J.
    :param learn_prior: make π a ``pyro.param`` (per utterance and source) instead of uniform.
    """

    def __init__(self, num_components: int, num_sources: int = 1, learn_prior: bool = True):
        self.K, self.J, self.learn_prior = num_components, num_sources, learn_prior

    @property
    def num_states(self) -> int:
        return self.K ** self.J

    def prior_probs(self, batch: int, device) -> torch.Tensor:
        """π as ``(B, J, K)`` (a ``pyro.param`` named ``switch_pi`` when learnt)."""
        uniform = torch.full((batch, self.J, self.K), 1.0 / self.K, device=device)
        if not self.learn_prior:
            return uniform
        return pyro.param("switch_pi", lambda: uniform, constraint=constraints.simplex)

    def joint_log_prior(self, pi: torch.Tensor) -> torch.Tensor:
        """``(B, J, K)`` -> ``(B, S)``: ``Σ_j log π_j[s_j]``."""
        states = joint_states(self.K, self.J).to(pi.device)          # (S, J)
        logp = pi.clamp_min(1e-30).log()
        return sum(logp[:, j, states[:, j]] for j in range(self.J))

    def state_log_prior(self, pi: torch.Tensor, allowed: torch.Tensor | None = None) -> torch.Tensor:
        """``(B, S)``: :meth:`joint_log_prior` plus ``EXCLUDED`` for the joint states that use a
        component some source may not use (``allowed (J, K)`` bool, None: all allowed)."""
        log_prior = self.joint_log_prior(pi)
        return log_prior if allowed is None else log_prior + state_log_mask(allowed).to(log_prior)

    def source_logits(self, pi: torch.Tensor, allowed: torch.Tensor | None = None) -> torch.Tensor:
        """``(B, J, K)``: each source's own ``log π_j``, ``EXCLUDED`` where not allowed (the
        per-source factors of :meth:`state_log_prior`, for the enumerated switch sites)."""
        logits = pi.clamp_min(1e-30).log()
        return logits if allowed is None else logits + torch.where(allowed.to(pi.device), 0.0, EXCLUDED)

    def state_table(self, log_var: torch.Tensor) -> torch.Tensor:
        """``(..., S, F)`` -> ``(..., K, ..., K, F)`` (J state axes), for indexing by the
        enumerated components of every source with ``Vindex``."""
        return log_var.reshape(log_var.shape[:-2] + (self.K,) * self.J + log_var.shape[-1:])

    def observe(self, loglik: torch.Tensor, mask: torch.Tensor, time_plate) -> None:
        """Add ``log p(x | z)`` with the switch summed out as a Pyro factor."""
        raise NotImplementedError

    def observe_mixture(self, log_var: torch.Tensor, power: torch.Tensor, mask: torch.Tensor, time_plate,
                        allowed: torch.Tensor | None = None) -> None:
        """Observe the mixture: ``power (B, T, F)`` is the observed value of a sample site ``"x"``
        whose distribution, given ``z``, is ``Σ_s p(s) ObservedPower(log_var[..., s, :])`` with the
        switch summed out (the prior's own way), or conditioned on enumerated switch sites.

        ``log_var (..., B, T, S, F)`` is the log variance of the mixture in every joint state;
        ``allowed (J, K)`` bool or None restricts the components of each source. Called inside
        ``plate("utt", dim=-2)``; ``time_plate`` is the model's time plate, re-entered where the
        observation is per frame. This default, for priors that define only :meth:`observe`,
        adds their factor over the per-state log-likelihoods; the priors of this module override
        it with an observed site."""
        loglik = frame_log_likelihood(power.unsqueeze(-2), log_var)
        if allowed is not None:
            loglik = loglik + state_log_mask(allowed).to(loglik)
        self.observe(loglik, mask, time_plate)

    def posterior(self, loglik: torch.Tensor, mask: torch.Tensor, pi: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def fitted_posterior(self, loglik: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """:meth:`posterior` with this prior's own parameters as fitted (read where it keeps
        them, so no caller needs to know their names): ``(..., B, T, S)``."""
        return self.posterior(loglik, mask, self.prior_probs(loglik.shape[-3], loglik.device))

    def source_marginals(self, joint: torch.Tensor) -> torch.Tensor:
        """``(..., S)`` joint posterior -> ``(..., J, K)`` per-source marginals."""
        states = joint_states(self.K, self.J).to(joint.device)
        onehot = torch.nn.functional.one_hot(states, self.K).to(joint.dtype)  # (S, J, K)
        return torch.einsum("...s,sjk->...jk", joint, onehot)


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
            logits = self.source_logits(pi, allowed)
            picks = [pyro.sample(f"m{j}", dist.Categorical(logits=logits[:, None, j, :]), infer=ENUM)
                     for j in range(self.J)]
            picked = Vindex(self.state_table(log_var))[(Ellipsis, *picks, slice(None))]
            pyro.sample("x", ObservedPower(picked).to_event(1), obs=power)

    def posterior(self, loglik, mask, pi):
        """``(..., B, T, S)`` -> exact ``p(m[t] = s | x, z)``; padded frames get the prior."""
        log_prior = self.joint_log_prior(pi)[:, None, :]
        logits = torch.where(mask[..., None], loglik + log_prior, log_prior.expand_as(loglik))
        return torch.softmax(logits, -1)


class MarkovSwitch(SwitchPrior):
    """Sticky Markov-chain switch, marginalised with ``DiscreteHMM`` (see module docstring).

    :param stay_prob: probability ``ρ`` that a source keeps its component from one frame to the
        next (with ``learn_stay``: its starting value).
    :param learn_stay: make the stay logit a ``pyro.param`` (``switch_stay_logit``, ``(B, J)``:
        one per utterance and source, a point estimate fitted by SVI); else ``ρ`` is fixed.
    """

    def __init__(self, num_components, num_sources=1, learn_prior=True, stay_prob=DEFAULT_STAY,
                 learn_stay=False, enumerate=False):
        super().__init__(num_components, num_sources, learn_prior)
        self.enumerate = enumerate
        if not 0.0 < stay_prob < 1.0 and num_components > 1:
            raise ValueError(f"stay_prob must be in (0, 1), got {stay_prob}")
        self.stay_prob, self.learn_stay = stay_prob, learn_stay

    def stay_logit(self, batch: int, device) -> torch.Tensor:
        """``(B, J)`` logit of ``ρ``: the fixed value, or the ``pyro.param`` started from it."""
        start = torch.full((batch, self.J), math.log(self.stay_prob / (1 - self.stay_prob)), device=device)
        if not self.learn_stay:
            return start
        return pyro.param(STAY_PARAM, lambda: start)

    def log_transition(self, device, batch: int | None = None) -> torch.Tensor:
        """``(S, S)`` log transition matrix of the joint chain (rows: from-state), or
        ``(B, S, S)``, one per utterance, when ``batch`` is given (required with a learnt stay):
        ``Σ_j log A_j[s_j, s'_j]`` with the sources' own :meth:`source_log_transition`."""
        S = self.num_states
        if self.K == 1:
            return torch.zeros((() if batch is None else (batch,)) + (S, S), device=device)
        if batch is None and self.learn_stay:
            raise ValueError("a learnt stay is per utterance: give log_transition the batch size")
        log_a = self.source_log_transition(device, 1 if batch is None else batch)     # (B,J,K,K)
        states = joint_states(self.K, self.J).to(device)
        joint = sum(log_a[:, j][:, states[:, None, j], states[None, :, j]] for j in range(self.J))
        return joint[0] if batch is None else joint

    def source_log_transition(self, device, batch: int) -> torch.Tensor:
        """``(B, J, K, K)``: each source's ``log A_j``, ``log ρ_j`` on the diagonal and
        ``log(1 - ρ_j) - log(K - 1)`` off it (rows: from-component)."""
        logit = self.stay_logit(batch, device)[..., None, None]                       # (B,J,1,1)
        same = torch.eye(self.K, dtype=torch.bool, device=device)
        off = torch.nn.functional.logsigmoid(-logit) - math.log(max(self.K - 1, 1))
        return torch.where(same, torch.nn.functional.logsigmoid(logit), off)

    def log_evidence(self, loglik: torch.Tensor, mask: torch.Tensor, pi: torch.Tensor) -> torch.Tensor:
        """``log Σ_paths p(path) Π_t exp ℓ[t, path_t]`` for ``loglik (..., B, T, S)`` -> ``(..., B)``.
        Padded frames get ``ℓ = 0``: the chain runs through them, and trailing ones add nothing
        (the rows of ``A`` sum to one), to the value nor to the gradient of a learnt stay."""
        return self._chain_log_z(loglik.masked_fill(~mask[..., None], 0.0), pi)

    def _chain_log_z(self, loglik: torch.Tensor, pi: torch.Tensor) -> torch.Tensor:
        """:meth:`log_evidence` of per-state log-likelihoods already zero in padded frames."""
        T, S = loglik.shape[-2:]
        B = pi.shape[0]
        hmm = ShiftedDiscreteHMM(loglik.new_zeros(S), self.chain_logits(pi, B, T), dist.Unit(loglik))
        return hmm.log_prob(loglik.new_empty(loglik.shape[:-1] + (0,)))

    def chain_logits(self, pi: torch.Tensor, batch: int, frames: int,
                     allowed: torch.Tensor | None = None) -> torch.Tensor:
        """``(B, T, S, S)`` transition logits of the joint chain over ``T`` frames from a flat
        state before the first: ``log π`` (each row) into frame 0, then ``log A``; with
        ``allowed``, ``EXCLUDED`` into the states a source may not use."""
        S = self.num_states
        column = 0.0 if allowed is None else state_log_mask(allowed).to(pi)
        first = self.state_log_prior(pi, allowed)[:, None, None, :].expand(batch, 1, S, S)
        trans = self.log_transition(pi.device, batch).expand(batch, S, S) + column
        return torch.cat([first, trans[:, None].expand(batch, frames - 1, S, S)], -3)

    def observe(self, loglik, mask, time_plate=None):
        """Add the evidence. Call inside ``plate("utt", dim=-2)`` only (the chain runs over time,
        so ``time_plate`` is not entered)."""
        B = loglik.shape[-3]
        pi = self.prior_probs(B, loglik.device)
        pyro.factor("x", self.log_evidence(loglik, mask, pi)[..., None])

    def observe_mixture(self, log_var, power, mask, time_plate=None, allowed=None):
        """Observe the whole utterance ``x (B, 1, T, F)`` as one site (inside the utt plate only):
        :class:`ShiftedDiscreteHMM` over the joint states with ``ObservedPower`` emissions, or with
        ``enumerate`` a ``pyro.markov`` chain of enumerated per-source sites ``m{j}_{t}`` and
        per-frame observations ``x_{t}`` (the reference formulation: exact, one site per frame,
        so much slower). Padded frames have ``log v = 0`` and power 0 (log-density exactly 0 in
        every state), so the chain runs through them and they add nothing."""
        B, T, S = log_var.shape[-4:-1]
        pi = self.prior_probs(B, log_var.device)
        log_var, power = zero_padded_frames(log_var, power, mask)
        if self.enumerate:
            return self._observe_enumerated(log_var, power, mask, pi, allowed)
        hmm = ShiftedDiscreteHMM(log_var.new_zeros(S), self.chain_logits(pi, B, T, allowed)[:, None],
                                 ObservedPower(log_var[..., None, :, :, :]).to_event(1))
        pyro.sample("x", hmm, obs=power[:, None])

    def _observe_enumerated(self, log_var, power, mask, pi, allowed):
        B, T = log_var.shape[-4:-2]
        first = self.source_logits(pi, allowed)                                     # (B,J,K)
        trans = self.source_log_transition(log_var.device, B)                       # (B,J,K,K)
        if allowed is not None:
            trans = trans + torch.where(allowed.to(trans.device), 0.0, EXCLUDED)[:, None, :]
        table = self.state_table(log_var)                                           # (..,B,T,K..K,F)
        picks = None
        for t in pyro.markov(range(T)):
            picks = [pyro.sample(f"m{j}_{t}", dist.Categorical(
                logits=first[:, None, j] if picks is None else Vindex(trans[:, None, j])[..., picks[j], :]),
                infer=ENUM) for j in range(self.J)]
            at_t = table.select(-2 - self.J, t).unsqueeze(-2 - self.J)                # (..,B,1,K..K,F)
            with poutine.mask(mask=mask[:, t, None]):
                pyro.sample(f"x_{t}", ObservedPower(Vindex(at_t)[(Ellipsis, *picks, slice(None))]).to_event(1),
                            obs=power[:, t, None])

    def posterior(self, loglik, mask, pi):
        """Smoothed marginals ``(..., B, T, S)`` as the gradient of log Z (forward–backward)."""
        with torch.enable_grad():
            ll = loglik.detach().masked_fill(~mask[..., None], 0.0).requires_grad_(True)
            log_z = self._chain_log_z(ll, pi.detach()).sum()       # padded frames: the chain's own
            (post,) = torch.autograd.grad(log_z, ll)
        return post


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
            logits = self.source_logits(pi, allowed)
            picks = [pyro.sample(f"m{j}", dist.Categorical(logits=logits[:, None, j, :]), infer=ENUM)
                     for j in range(self.J)]
            picked = Vindex(self.state_table(log_var))[(Ellipsis, *picks, slice(None))]
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


SWITCH_PRIORS = ("iid", "markov", "utterance")      # the names make_switch builds


def make_switch(prior: str, num_components: int, num_sources: int = 1, *, learn_prior=True,
                stay_prob=DEFAULT_STAY, enumerate=False, learn_stay=False) -> SwitchPrior:
    """Build a switch prior by name (``"iid"``, ``"markov"`` or ``"utterance"``; the utterance
    switch always has a uniform π; ``stay_prob`` and ``learn_stay`` are the Markov switch's)."""
    if prior == "iid":
        return IIDSwitch(num_components, num_sources, learn_prior, enumerate=enumerate)
    if prior == "markov":
        return MarkovSwitch(num_components, num_sources, learn_prior, stay_prob, learn_stay, enumerate)
    if prior == "utterance":
        return UtteranceSwitch(num_components, num_sources, enumerate=enumerate)
    raise ValueError(f"unknown switch prior {prior!r} (use 'iid', 'markov' or 'utterance')")
