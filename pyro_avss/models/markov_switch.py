"""The sticky Markov switch: a chain over each source's component, summed out as an HMM.

See :mod:`.switch` for the model; here :class:`MarkovSwitch` (fixed, time-constant or learnt
stay probability) and :class:`ShiftedDiscreteHMM`, Pyro's ``DiscreteHMM`` with a float32-stable
log-density.
"""

from __future__ import annotations

import math

import pyro
import pyro.distributions as dist
import torch
from pyro import poutine
from pyro.distributions.hmm import _sequential_logmatmulexp
from pyro.ops.indexing import Vindex

from ..settings.training import DEFAULT_STAY    # re-exported: the Markov switch's default stay
from .likelihood import ObservedPower
from .switch_prior import (ENUM, SwitchPrior, joint_states, source_log_mask, state_log_mask,
                           zero_padded_frames)


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


class ShiftedDiscreteHMM(dist.DiscreteHMM):
    """``DiscreteHMM`` with the same density, computed so that its gradients (the switch
    posteriors) hold for sticky chains of several sources.

    Each frame's largest emission log-density (over states) is subtracted before the forward
    recursion and the sum of them added back after: a frame's log-density is hundreds of nats (F
    bins) and their sum over an utterance ~10⁵, where float32 keeps ~0.01 nat (without the shift
    the gradients came out about 1 % off a float64 reference). The recursion itself (Pyro's
    parallel scan, which multiplies exponentiated log-matrices shifted by their row and column
    maxima) runs in float64: a product entry whose best path lies more than ~87 nats below those
    maxima underflows in float32, and with two sources and a sticky chain (two changes at once
    cost 2 log(1 - ρ), e.g. -15 nats at τ = 30 s) and frame log-likelihoods hundreds of nats
    apart it does — the posteriors then summed to 0.0–0.07 instead of 1 (K = 3 or 6, J = 2,
    τ = 30 s; measured 2026-12-06). In float64 they sum to 1 up to τ = 3000 s (tested); the
    recursion is a small part of a step (it is over states, not bins)."""

    def expand(self, batch_shape, _instance=None):
        new = self._get_checked_instance(ShiftedDiscreteHMM, _instance)
        return super().expand(batch_shape, _instance=new)

    def log_prob(self, value):
        if self._validate_args:
            self._validate_sample(value)
        value = value.unsqueeze(-1 - self.observation_dist.event_dim)
        emission = self.observation_dist.log_prob(value)                              # (..., T, S)
        shift = emission.max(-1, keepdim=True).values.detach()
        steps = self.transition_logits.double() + (emission - shift).double().unsqueeze(-2)
        chain = _sequential_logmatmulexp(steps)
        log_z = (self.initial_logits.double() + chain.logsumexp(-1)).logsumexp(-1)
        return (log_z + shift[..., 0].double().sum(-1)).to(emission.dtype)


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
            trans = trans + source_log_mask(allowed).to(trans)[:, None, :]          # into allowed
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
