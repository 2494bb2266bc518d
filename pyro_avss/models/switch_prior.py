"""The common part of the switch priors: joint states, restrictions and the base class.

:class:`SwitchPrior` is what a switch prior of :mod:`.switch` (or your own) builds on: the
learnt or uniform ``π``, the joint log-prior of the ``S = K^J`` joint states, the generic
observation through :meth:`SwitchPrior.observe`, and the fitted posterior. See :mod:`.switch`
for the model and the priors themselves.
"""

from __future__ import annotations

import functools
import itertools

import numpy as np
import pyro
import pyro.distributions as dist
import torch
from pyro.distributions import constraints
from pyro.ops.indexing import Vindex

from .likelihood import frame_log_likelihood

#: log-likelihood added to states excluded by a known label (finite, so no NaN gradients)
EXCLUDED = -1.0e5

#: floor of a posterior before its log in :func:`identified_components` (float32 posteriors
#: underflow to 0 for components far behind the best in a frame; the floor keeps such a frame's
#: vote finite)
POSTERIOR_FLOOR = 1e-30


def identified_components(posterior, frames=None):
    """The component that best explains all the (selected) frames together, per leading index:
    ``argmax_k Σ_t log p(m[t] = k | x)`` for ``posterior (..., T, K)`` (numpy or torch), over the
    frames where ``frames (T,)`` (bool) is true, or over every frame. Returns an int array
    ``(...)``, or -1 where no frame is selected.

    This is the utterance-level decision at the fitted model. For a per-frame switch it equals
    ``argmax_k Σ_t ℓ[t, k] + T log π_k`` (the per-frame normalisers are common to every k); for
    the per-utterance switch it is its own posterior's argmax. The component that wins most
    frames (the argmax of the mean posterior) is a worse decision: it lets a component that is
    all but ruled out in some frames win on the others. Among 50 LibriSpeech pool speakers (one
    talker at 5 dB, per-frame switch, the same fits) the mean posterior named 60 % of the
    speakers where this rule named 78 % / 72 % on their dev / test parts (2026-12-06); on 50
    dev parts separated again on 2026-12-07, 41 of 50 over all frames as over the clean
    reference's speech frames, against 34 by the mean posterior (``docs/findings.md``, banks of
    many speakers).
    """
    post = np.asarray(posterior.detach().cpu() if torch.is_tensor(posterior) else posterior, dtype=np.float64)
    if frames is not None:
        post = post[..., np.asarray(frames, dtype=bool)[: post.shape[-2]], :]
    if post.shape[-2] == 0:
        return np.full(post.shape[:-2], -1, dtype=np.int64)
    return np.log(np.maximum(post, POSTERIOR_FLOOR)).sum(-2).argmax(-1)


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


def source_log_mask(allowed: torch.Tensor) -> torch.Tensor:
    """``(J, K)`` bool -> ``(J, K)``: 0 for the components each source may use, ``EXCLUDED``
    for the others (the per-source factors of :func:`state_log_mask`)."""
    return torch.where(torch.as_tensor(allowed), 0.0, EXCLUDED)


ENUM = {"enumerate": "parallel"}      # infer options of an enumerated switch site


def zero_padded_frames(log_var: torch.Tensor, power: torch.Tensor, mask: torch.Tensor):
    """``log v = 0`` and power 0 in padded frames (``mask`` False), where the log-density of
    :class:`~.likelihood.ObservedPower` is then exactly 0 in every state: a whole-utterance
    observation needs no mask. Unchanged (no copy) when no frame is padded."""
    if bool(mask.all()):
        return log_var, power
    return log_var.masked_fill(~mask[..., None, None], 0.0), power.masked_fill(~mask[..., None], 0.0)


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
        return logits if allowed is None else logits + source_log_mask(allowed).to(logits)

    def enumerated_log_var(self, log_var: torch.Tensor, pi: torch.Tensor,
                           allowed: torch.Tensor | None = None) -> torch.Tensor:
        """One enumerated ``Categorical`` site ``m{j}`` per source (in the caller's plates: per
        frame inside the time plate, per utterance outside it) and the log variance of the joint
        state they pick, ``(..., B, T, F)`` with the enumeration dims on the left."""
        logits = self.source_logits(pi, allowed)
        picks = [pyro.sample(f"m{j}", dist.Categorical(logits=logits[:, None, j, :]), infer=ENUM)
                 for j in range(self.J)]
        return Vindex(self.state_table(log_var))[(Ellipsis, *picks, slice(None))]

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
