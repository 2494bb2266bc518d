"""One speaker per source and utterance, and a sticky chain over that speaker's decoders per frame.

A bank with audio-only twins (``model.audio_only_twins``) holds, for each speaker, an
audio-visual decoder and an audio-only one in the same latent space; a switch that can hand a
frame to the audio-only twin is what lets the frames whose lips are missing or misleading be
explained without them. The per-frame switches of :mod:`.switch` may also hand frames to another
*speaker*, which a source, being one person, never is; the per-utterance switch may not hand
frames to the twin at all. :class:`SpeakerSwitch` is the prior between the two. Its components
are grouped by speaker (``groups[k]``: the speaker of component ``k``, e.g. ``s1`` for both
``s1`` and ``s1-ao``). Source j draws its speaker once per utterance,

    c_j ~ Uniform(G groups),

and its component runs a sticky Markov chain over the members of group ``c_j``:
``m_j[0] ~ w`` and

    p(m_j[t] = k' | m_j[t-1] = k) = ρ_j [k' = k] + (1 - ρ_j) w[k']   for members k' of c_j,
                                    0                                outside the group,

i.e. with probability ``ρ_j`` the decoder is kept, else it is drawn again from the group's
weights ``w`` (``separate.audio_only_share`` for the audio-only members, the rest for the
audio-visual ones; equal by default), which start the chain too. ``ρ`` is fixed, set from a
time constant or learnt as for :class:`~.markov_switch.MarkovSwitch`; a group of one member
keeps it. For a group tuple ``γ = (c_1..c_J)`` and its within-group joint states ``σ`` the
evidence is

    p(x | z) = Σ_γ G^{-J} Z_γ,   Z_γ = Σ_{paths σ_0..σ_{T-1}} Π_t A_γ(σ_{t-1}, σ_t) exp ℓ[t, s(γ, σ_t)],

``ℓ[t, s]`` the frame log-likelihood of joint state ``s`` (:mod:`.switch`). The mixture is observed
as one site whose distribution is a ``MixtureSameFamily`` over ``γ`` of hidden Markov models
(:class:`~.markov_switch.ShiftedDiscreteHMM`), one per group tuple; posteriors are
``∂ log p(x | z) / ∂ ℓ`` (forward–backward by autograd), as for the Markov switch.

Why a chain per group tuple and not one chain with zero transitions between groups: Pyro's
parallel scan multiplies exponentiated log-matrices shifted by their row and column maxima, and
a product entry whose best path lies far below those maxima underflows (float32 ~87 nats,
float64 ~745). With a block-diagonal transition matrix the best path of one block routinely lies
thousands of nats below another's, and the posteriors (the gradients) then no longer sum to one:
per-frame sums fell to 0.003 in real one-talker fits with the GRID twins bank (float32; SI-SDRi
1.8 dB where this prior gives 7.5) and to 1e-206 in float64 on synthetic frame log-likelihoods
30 nats apart; a cross-group probability of e^-30 instead of 0 held in float64 only, and let
the speaker change. Within one group the chain is dense, and this does not happen.

Groups of unequal size (a pruned twin) are padded to the largest with states that are never
entered (their columns ``EXCLUDED``, as for the ``allowed`` restriction). The group tuples'
prior is uniform and not learnt: a per-utterance learnt prior would only echo the utterance's own
posterior, as for :class:`~.switch.UtteranceSwitch`. There is no enumerated form
(``separate.enumeration=pyro``).
"""

from __future__ import annotations

import itertools
import math

import pyro
import pyro.distributions as dist
import torch

from .likelihood import ObservedPower
from .markov_switch import DEFAULT_STAY, MarkovSwitch, ShiftedDiscreteHMM
from .switch_prior import EXCLUDED, state_log_mask, zero_padded_frames


class SpeakerSwitch(MarkovSwitch):
    """One speaker per source and utterance, a sticky chain over its decoders (module docstring).

    :param groups: the speaker (any hashable) of each of the K components, in bank order.
    :param num_sources: J.
    :param stay_prob: ``ρ``, the probability of keeping the same decoder from one frame to the
        next (with ``learn_stay``: its start).
    :param learn_stay: fit the stay logit per utterance and source (``switch_stay_logit``).
    :param weights: each component's prior weight ``w`` within its speaker (positive; normalised
        per speaker): where the chain starts and what it redraws from. Default: equal.
    """

    def __init__(self, groups, num_sources=1, stay_prob=DEFAULT_STAY, learn_stay=False, weights=None):
        groups = list(groups)
        super().__init__(len(groups), num_sources, learn_prior=False, stay_prob=stay_prob,
                         learn_stay=learn_stay)
        names = list(dict.fromkeys(groups))
        self.members = [[k for k, g in enumerate(groups) if g == name] for name in names]
        width = max(len(m) for m in self.members)
        J, K = num_sources, self.K
        # group tuples γ (Γ, J) and within-group joint states σ (N, J)
        self.tuples = torch.tensor(list(itertools.product(range(len(names)), repeat=J)))
        self.within = torch.tensor(list(itertools.product(range(width), repeat=J)))
        table = torch.full((len(names), width), -1, dtype=torch.long)
        for g, m in enumerate(self.members):
            table[g, :len(m)] = torch.tensor(m)
        member = table[self.tuples[:, None, :], self.within[None, :, :]]             # (Γ, N, J)
        self.valid = (member >= 0).all(-1)                                           # (Γ, N)
        place = K ** torch.arange(J - 1, -1, -1)
        self.state = (member.clamp_min(0) * place).sum(-1)                           # (Γ, N) into S
        self.table, self.width = table, width
        self.weights = torch.ones(len(groups)) if weights is None else torch.as_tensor(weights, dtype=torch.float32)
        if self.weights.shape != (len(groups),) or not bool((self.weights > 0).all()):
            raise ValueError(f"weights must be {len(groups)} positive numbers, one per component")

    def member_log_weights(self, device) -> torch.Tensor:
        """``(G, n)``: ``log w`` of each group's members (normalised within the group),
        ``EXCLUDED`` for padding."""
        w = self.weights.to(device)[self.table.clamp_min(0).to(device)].masked_fill(self.table.to(device) < 0, 0.0)
        w = w / w.sum(-1, keepdim=True)
        return torch.where(w > 0, w.clamp_min(1e-30).log(), EXCLUDED)

    def member_log_transition(self, device, batch: int) -> torch.Tensor:
        """``(B, J, G, n, n)``: within each group, keep the decoder with probability ``ρ_j``, else
        redraw it from the group's weights: ``log(ρ_j δ + (1 - ρ_j) w)``, ``EXCLUDED`` into padding."""
        logit = self.stay_logit(batch, device)[:, :, None, None, None]               # (B,J,1,1,1)
        log_w = self.member_log_weights(device)[:, None, :]                          # (G,1,n)
        redraw = torch.nn.functional.logsigmoid(-logit) + log_w                      # (B,J,G,1,n)
        eye = torch.eye(self.width, dtype=torch.bool, device=device)
        keep = torch.logaddexp(torch.nn.functional.logsigmoid(logit), redraw)
        return torch.where(eye, keep, redraw).masked_fill(log_w <= EXCLUDED, EXCLUDED)

    def tuple_chain_logits(self, batch: int, frames: int, device, allowed=None) -> torch.Tensor:
        """``(B, Γ, T, N, N)`` transition logits of each group tuple's chain, from a flat state
        before frame 0: the members' weights first, then ``Σ_j log A_j``; padding and
        components a source may not use are never entered (the HMM normalises each row)."""
        log_a = self.member_log_transition(device, batch)                            # (B,J,G,n,n)
        log_w = self.member_log_weights(device)                                      # (G,n)
        tuples, within = self.tuples.to(device), self.within.to(device)
        step = sum(log_a[:, j][:, tuples[:, j]][:, :, within[:, j][:, None], within[:, j][None, :]]
                   for j in range(self.J))                                           # (B,Γ,N,N)
        start = sum(log_w[tuples[:, j]][:, within[:, j]] for j in range(self.J))    # (Γ,N)
        column = torch.where(self.valid.to(device), 0.0, EXCLUDED)                   # (Γ, N)
        if allowed is not None:
            column = column + state_log_mask(allowed).to(device)[self.state.to(device)]
        N = column.shape[-1]
        first = (start + column)[None, :, None, :].expand(batch, -1, N, -1)          # (B,Γ,N,N)
        rest = (step + column[None, :, None, :])[:, :, None]
        return torch.cat([first[:, :, None], rest.expand(-1, -1, frames - 1, -1, -1)], 2)

    def tuple_logits(self, device, allowed=None) -> torch.Tensor:
        """``(Γ,)``: the uniform prior over group tuples, ``EXCLUDED`` for a tuple of which no
        state is allowed."""
        ok = self.valid.to(device)
        if allowed is not None:
            ok = ok & (state_log_mask(allowed).to(device)[self.state.to(device)] == 0)
        return torch.where(ok.any(-1), -self.J * math.log(len(self.members)), EXCLUDED)

    def tuple_hmms(self, emission, batch: int, frames: int, device, allowed=None,
                   utt_dim: bool = False) -> ShiftedDiscreteHMM:
        """One :class:`ShiftedDiscreteHMM` per group tuple (batch dims ``B``, the utt plate's
        singleton dim with ``utt_dim``, then Γ), ``emission`` over each tuple's states."""
        chain = self.tuple_chain_logits(batch, frames, device, allowed)
        return ShiftedDiscreteHMM(chain.new_zeros(chain.shape[-1]), chain[:, None] if utt_dim else chain,
                                  emission)

    def _chain_log_z(self, loglik: torch.Tensor, pi=None) -> torch.Tensor:
        """``log p(x | z)`` for per-state log-likelihoods ``(..., B, T, S)`` already zero in
        padded frames -> ``(..., B)``."""
        B, T = loglik.shape[-3:-1]
        per_tuple = loglik[..., self.state.to(loglik.device)]                         # (..,B,T,Γ,N)
        per_tuple = per_tuple.masked_fill(~self.valid.to(loglik.device), 0.0).movedim(-3, -2)
        hmm = self.tuple_hmms(dist.Unit(per_tuple), B, T, loglik.device)
        log_z = hmm.log_prob(per_tuple.new_empty(per_tuple.shape[:-1] + (0,)))       # (..,B,Γ)
        # the sum over tuples in float64: its gradient, exp(log Z_γ - log Z), would otherwise
        # carry log Z's float32 rounding (~0.001 nat at 10⁴ nats) and the posteriors sum to 1 - 2e-4
        total = (log_z.double() + self.tuple_logits(loglik.device).double()).logsumexp(-1)
        return total.to(loglik.dtype)

    def observe_mixture(self, log_var, power, mask, time_plate=None, allowed=None):
        """Observe the utterance ``x (B, 1, T, F)`` as one site (inside the utt plate only): a
        ``MixtureSameFamily`` over the group tuples of :class:`ShiftedDiscreteHMM` s with
        ``ObservedPower`` emissions (padded frames: log-density exactly 0 in every state)."""
        B, T = log_var.shape[-4:-2]
        log_var, power = zero_padded_frames(log_var, power, mask)
        per_tuple = log_var[..., self.state.to(log_var.device), :].movedim(-4, -3)   # (..,B,Γ,T,N,F)
        hmm = self.tuple_hmms(ObservedPower(per_tuple[..., None, :, :, :, :]).to_event(1), B, T,
                              log_var.device, allowed, utt_dim=True)
        logits = self.tuple_logits(log_var.device, allowed).expand(B, 1, -1)
        pyro.sample("x", dist.MixtureSameFamily(dist.Categorical(logits=logits), hmm), obs=power[:, None])
