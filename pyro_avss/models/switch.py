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
* :class:`MarkovSwitch`: ``m_j`` is a sticky Markov chain, ``A[k, k'] = stay`` if ``k = k'``
  and ``(1 - stay)/(K - 1)`` otherwise, first frame ``π_j``; the joint chain has transition
  ``Π_j A[s_j, s'_j]``. The evidence is computed by ``pyro.distributions.DiscreteHMM`` over the
  per-state log-likelihoods (a parallel scan); posteriors are ``∂ log Z / ∂ ℓ`` by autograd
  (forward–backward). Per-frame maxima are subtracted first for float32 precision.

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

import pyro
import pyro.distributions as dist
import torch
from pyro.distributions import constraints
from pyro.ops.indexing import Vindex

#: log-likelihood added to states excluded by a known label (finite, so no NaN gradients)
EXCLUDED = -1.0e5


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

    :param stay_prob: probability that a source keeps its component from one frame to the next.
    """

    def __init__(self, num_components, num_sources=1, learn_prior=True, stay_prob=0.98):
        super().__init__(num_components, num_sources, learn_prior)
        if not 0.0 < stay_prob < 1.0 and num_components > 1:
            raise ValueError(f"stay_prob must be in (0, 1), got {stay_prob}")
        self.stay_prob = stay_prob

    def log_transition(self, device) -> torch.Tensor:
        """``(S, S)`` log transition matrix of the joint chain (rows: from-state)."""
        K = self.K
        if K == 1:
            A = torch.ones(1, 1, device=device)
        else:
            A = torch.full((K, K), (1 - self.stay_prob) / (K - 1), device=device)
            A.fill_diagonal_(self.stay_prob)
        states = joint_states(K, self.J).to(device)
        logA = A.log()
        return sum(logA[states[:, None, j], states[None, :, j]] for j in range(self.J))

    def log_evidence(self, loglik: torch.Tensor, mask: torch.Tensor, pi: torch.Tensor) -> torch.Tensor:
        """``log Σ_paths p(path) Π_t exp ℓ[t, path_t]`` for ``loglik (..., B, T, S)`` -> ``(..., B)``."""
        T, S = loglik.shape[-2:]
        loglik = loglik.masked_fill(~mask[..., None], 0.0)
        shift = loglik.max(-1, keepdim=True).values.detach()          # float32 precision fix
        log_trans = self.log_transition(loglik.device)
        first = self.joint_log_prior(pi)[:, None, None, :].expand(pi.shape[0], 1, S, S)
        rest = log_trans.expand(pi.shape[0], T - 1, S, S)
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
                stay_prob=0.98, enumerate=False) -> SwitchPrior:
    """Build a switch prior by name (``"iid"``, ``"markov"`` or ``"utterance"``; the utterance
    switch always has a uniform π)."""
    if prior == "iid":
        return IIDSwitch(num_components, num_sources, learn_prior, enumerate=enumerate)
    if prior == "markov":
        return MarkovSwitch(num_components, num_sources, learn_prior, stay_prob=stay_prob)
    if prior == "utterance":
        return UtteranceSwitch(num_components, num_sources)
    raise ValueError(f"unknown switch prior {prior!r} (use 'iid', 'markov' or 'utterance')")
