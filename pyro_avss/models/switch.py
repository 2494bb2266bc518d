"""Priors over the per-frame speaker switch, with exact marginalisation and exact posteriors.

Each of the J sources has a switch ``m_j[t] ∈ {0..K-1}``; the joint state of a frame is
``(m_1[t], ..., m_J[t])``, S = K^J states. Given the per-frame, per-state log-likelihood
``ℓ[b, t, s] = log p(x[b, t] | z, m[t] = s)`` (computed once for all states), a switch prior
adds a Pyro factor equal to the log evidence with the switch summed out, and returns the exact
posterior ``p(m[t] = s | x, z)``.

* :class:`IIDSwitch`: ``m_j[t] ~ Categorical(π_j)`` independently per frame. The evidence is
  ``Σ_t log Σ_s π(s) exp ℓ[t, s]``. It is marginalised either by Pyro's parallel enumeration
  (``TraceEnum_ELBO``: one enumerated ``Categorical`` site per source, the log-likelihood picked
  with ``Vindex``) or by the equivalent hand-written ``logsumexp`` factor (any ELBO); both give
  the same value (tested).
* :class:`MarkovSwitch`: ``m_j`` is a sticky Markov chain, ``A_j[k, k'] = ρ_j`` if ``k = k'``
  and ``(1 - ρ_j)/(K - 1)`` otherwise, first frame ``π_j``; the joint chain has transition
  ``Π_j A_j[s_j, s'_j]``. The evidence is computed by ``pyro.distributions.DiscreteHMM`` over the
  per-state log-likelihoods (a parallel scan); posteriors are ``∂ log Z / ∂ ℓ`` by autograd
  (forward–backward). Per-frame maxima are subtracted first for float32 precision. The stay
  probability ``ρ`` is fixed, set from a time constant ``τ`` (:func:`stay_from_seconds`:
  ``ρ = exp(-hop / τ)``), or learnt: with ``learn_stay`` its logit ``log ρ - log(1 - ρ)`` is a
  ``pyro.param`` (``switch_stay_logit``, one per utterance and source) fitted with the rest.

* :class:`UtteranceSwitch`: one component per source for the whole (chunk of the) recording,
  ``m_j[t] = m_j ~ Categorical(π_j)`` (the limit ``stay → 1`` of the Markov chain). The evidence
  is ``log Σ_s π(s) exp Σ_t ℓ[t, s]``; the posterior of every frame is the utterance posterior
  ``softmax_s(log π(s) + Σ_t ℓ[t, s])``, so weak per-frame evidence adds up over the utterance.

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
from pyro.distributions import constraints
from pyro.ops.indexing import Vindex

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

    def observe(self, loglik: torch.Tensor, mask: torch.Tensor, time_plate) -> None:
        """Add ``log p(x | z)`` with the switch summed out as a Pyro factor."""
        raise NotImplementedError

    def posterior(self, loglik: torch.Tensor, mask: torch.Tensor, pi: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

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
                 learn_stay=False):
        super().__init__(num_components, num_sources, learn_prior)
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
        ``Σ_j log A_j[s_j, s'_j]`` with ``log A_j = log ρ_j`` on the diagonal and
        ``log(1 - ρ_j) - log(K - 1)`` off it."""
        S = self.num_states
        if self.K == 1:
            return torch.zeros((() if batch is None else (batch,)) + (S, S), device=device)
        if batch is None and self.learn_stay:
            raise ValueError("a learnt stay is per utterance: give log_transition the batch size")
        logit = self.stay_logit(1 if batch is None else batch, device)[:, None, None, :]   # (B,1,1,J)
        states = joint_states(self.K, self.J).to(device)
        same = states[:, None, :] == states[None, :, :]                                 # (S,S,J)
        log_a = torch.where(same, torch.nn.functional.logsigmoid(logit),
                            torch.nn.functional.logsigmoid(-logit) - math.log(self.K - 1)).sum(-1)
        return log_a[0] if batch is None else log_a

    def log_evidence(self, loglik: torch.Tensor, mask: torch.Tensor, pi: torch.Tensor) -> torch.Tensor:
        """``log Σ_paths p(path) Π_t exp ℓ[t, path_t]`` for ``loglik (..., B, T, S)`` -> ``(..., B)``.
        Padded frames get ``ℓ = 0``: the chain runs through them, and trailing ones add nothing
        (the rows of ``A`` sum to one), to the value nor to the gradient of a learnt stay."""
        T, S = loglik.shape[-2:]
        B = pi.shape[0]
        loglik = loglik.masked_fill(~mask[..., None], 0.0)
        shift = loglik.max(-1, keepdim=True).values.detach()          # float32 precision fix
        log_trans = self.log_transition(loglik.device, B)                  # (B, S, S) or (S, S)
        first = self.joint_log_prior(pi)[:, None, None, :].expand(B, 1, S, S)
        rest = log_trans.unsqueeze(-3).expand(B, T - 1, S, S)
        hmm = dist.DiscreteHMM(torch.zeros(S, device=loglik.device),
                               torch.cat([first, rest], -3), dist.Unit(loglik - shift))
        return hmm.log_prob(loglik.new_empty(loglik.shape[:-1] + (0,))) + shift[..., 0].sum(-1)

    def observe(self, loglik, mask, time_plate=None):
        """Add the evidence. Call inside ``plate("utt", dim=-2)`` only (the chain runs over time,
        so ``time_plate`` is not entered)."""
        B = loglik.shape[-3]
        pi = self.prior_probs(B, loglik.device)
        pyro.factor("x", self.log_evidence(loglik, mask, pi)[..., None])

    def posterior(self, loglik, mask, pi):
        """Smoothed marginals ``(..., B, T, S)`` as the gradient of log Z (forward–backward)."""
        with torch.enable_grad():
            ll = loglik.detach().requires_grad_(True)
            log_z = self.log_evidence(ll, mask, pi.detach()).sum()
            (post,) = torch.autograd.grad(log_z, ll)
        return post


class UtteranceSwitch(SwitchPrior):
    """One component per source and utterance (see module docstring). π is uniform unless
    ``learn_prior``: a per-utterance learnt π would only echo the utterance's own posterior."""

    def __init__(self, num_components, num_sources=1, learn_prior=False):
        super().__init__(num_components, num_sources, learn_prior)

    def utterance_logits(self, loglik: torch.Tensor, mask: torch.Tensor, pi: torch.Tensor) -> torch.Tensor:
        """``(..., B, T, S)`` -> ``(..., B, S)``: ``log π(s) + Σ_t ℓ[t, s]`` over valid frames."""
        return (loglik * mask[..., None]).sum(-2) + self.joint_log_prior(pi)

    def observe(self, loglik, mask, time_plate=None):
        """Add the evidence. Call inside ``plate("utt", dim=-2)`` only."""
        pi = self.prior_probs(loglik.shape[-3], loglik.device)
        pyro.factor("x", torch.logsumexp(self.utterance_logits(loglik, mask, pi), -1)[..., None])

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
        return MarkovSwitch(num_components, num_sources, learn_prior, stay_prob, learn_stay)
    if prior == "utterance":
        return UtteranceSwitch(num_components, num_sources)
    raise ValueError(f"unknown switch prior {prior!r} (use 'iid', 'markov' or 'utterance')")
