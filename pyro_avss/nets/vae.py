"""The neural networks of the speech models (plain torch, no Pyro).

Shapes (``...`` is any number of leading dimensions — utterances, frames, sources, Pyro
enumeration and particle dimensions — and every network broadcasts over them):

* ``log_power`` ``(..., F)``: log of a (normalised) power spectrum frame;
* ``lips`` ``(..., Dv)``: lip embedding of the frame (zeros when missing);
* ``present`` ``(...)``: 1.0 where the lips are seen, 0.0 where they are missing;
* ``z`` ``(..., D)``: latent code.

The encoder ``q(z | s, v)`` returns ``(loc, scale)`` each ``(..., D)``. The decoder bank holds K
decoders ``p(s | z, v)`` with stacked weights and returns per-frequency log-variances
``(..., K, F)`` in **one** call. The visual input enters the first layer as a separate matrix
product ``v @ W_v`` added to ``z @ W_z`` (no concatenation), so ``z`` may carry extra enumeration
or particle dimensions that ``v`` does not have.
"""

from __future__ import annotations

import math

import torch
from torch import nn

LOGVAR_MIN, LOGVAR_MAX = -20.0, 15.0
TWIN_SUFFIX = "-ao"         # the name of an audio-only twin: its component's, plus this
UNIVERSAL = "universal"     # the name of the universal (speaker-independent) component


def _uniform_(tensor: torch.Tensor, fan_in: int) -> torch.Tensor:
    bound = 1.0 / math.sqrt(fan_in)
    with torch.no_grad():
        return tensor.uniform_(-bound, bound)


class SpeechEncoder(nn.Module):
    """``q(z | s, v) = N(loc, diag(scale²))`` from a log-power frame and its lips.

    log_power (F) -> Linear -> (+ Linear(lips)·present) -> tanh -> Linear -> tanh -> (loc, log σ)
    """

    def __init__(self, num_bins: int, latent_dim: int = 16, hidden: int = 128, lip_dim: int = 0):
        super().__init__()
        self.num_bins, self.latent_dim, self.hidden, self.lip_dim = num_bins, latent_dim, hidden, lip_dim
        self.audio_in = nn.Linear(num_bins, hidden)
        self.lips_in = nn.Linear(lip_dim, hidden, bias=False) if lip_dim else None
        self.body = nn.Linear(hidden, hidden)
        self.loc = nn.Linear(hidden, latent_dim)
        self.log_scale = nn.Linear(hidden, latent_dim)

    def forward(self, log_power, lips=None, present=None):
        h = self.audio_in(log_power)
        if self.lips_in is not None and lips is not None:
            h = h + self.lips_in(lips) * present.unsqueeze(-1)
        h = torch.tanh(self.body(torch.tanh(h)))
        return self.loc(h), self.log_scale(h).clamp(-8.0, 4.0).exp()


class DecoderBank(nn.Module):
    """K decoders ``p(s | z, v)`` evaluated together.

    For component k: ``h1 = tanh(z W_z[k] + present·uses_video[k]·(v W_v[k]) + b1[k])``,
    ``h2 = tanh(h1 W_2[k] + b2[k])``, ``log σ²_k = h2 W_3[k] + b3[k]`` (clamped to
    [LOGVAR_MIN, LOGVAR_MAX]).

    :param uses_video: one bool per component; audio-only components ignore the lips.
    :param names: one name per component (a speaker, or ``"universal"``).
    """

    def __init__(self, num_components: int, num_bins: int, latent_dim: int = 16, hidden: int = 128,
                 lip_dim: int = 0, uses_video=None, names=None):
        super().__init__()
        K, H = num_components, hidden
        self.num_components, self.num_bins, self.latent_dim = K, num_bins, latent_dim
        self.hidden, self.lip_dim = hidden, lip_dim
        self.names = list(names) if names is not None else [f"component{k}" for k in range(K)]
        uses = torch.as_tensor(uses_video if uses_video is not None else [lip_dim > 0] * K)
        self.register_buffer("uses_video", uses.float())
        self.w_z = nn.Parameter(_uniform_(torch.empty(latent_dim, K * H), latent_dim))
        self.w_v = nn.Parameter(_uniform_(torch.empty(max(lip_dim, 1), K * H), max(lip_dim, 1)))
        self.b1 = nn.Parameter(_uniform_(torch.empty(K, H), latent_dim))
        self.w2 = nn.Parameter(_uniform_(torch.empty(K, H, H), H))
        self.b2 = nn.Parameter(_uniform_(torch.empty(K, H), H))
        self.w3 = nn.Parameter(_uniform_(torch.empty(K, H, num_bins), H))
        self.b3 = nn.Parameter(torch.zeros(K, num_bins))

    def forward(self, z, lips=None, present=None):
        """``z (..., D)``, ``lips (..., Dv)``, ``present (...)`` -> log-variances ``(..., K, F)``."""
        K, H = self.num_components, self.hidden
        h = (z @ self.w_z).unflatten(-1, (K, H))
        if self.lip_dim and lips is not None:
            hv = (lips @ self.w_v).unflatten(-1, (K, H))
            h = h + hv * (present[..., None, None] * self.uses_video[:, None])
        h = torch.tanh(h + self.b1)
        h = torch.tanh(torch.einsum("...kh,kho->...ko", h, self.w2) + self.b2)
        out = torch.einsum("...kh,kho->...ko", h, self.w3) + self.b3
        return out.clamp(LOGVAR_MIN, LOGVAR_MAX)

    def selected(self, z, lips, present, index):
        """Component ``index[b]`` alone for each utterance b: ``z (..., B, T, J, D)``, ``lips
        (B, T, J, Dv)``, ``present (B, T, J)``, ``index (B,)`` long -> ``(..., B, T, J, 1, F)``,
        equal to ``self(z, lips, present)[..., index[b]:index[b]+1, :]`` per b. Training with
        observed labels needs only the labelled speaker's decoder, so this costs one
        component's work instead of K."""
        K, H = self.num_components, self.hidden

        def rows(weight):                                  # weight (K, ...) -> (B, 1, 1, ...)
            picked = weight[index]
            return picked.reshape(picked.shape[:1] + (1, 1) + picked.shape[1:])

        h = torch.einsum("...btjd,btjdh->...btjh", z, rows(self.w_z.unflatten(-1, (K, H)).transpose(0, 1)))
        if self.lip_dim and lips is not None:
            hv = torch.einsum("btjv,btjvh->btjh", lips, rows(self.w_v.unflatten(-1, (K, H)).transpose(0, 1)))
            h = h + hv * (present * self.uses_video[index][:, None, None])[..., None]
        h = torch.tanh(h + rows(self.b1))
        h = torch.tanh(torch.einsum("...btjh,btjho->...btjo", h, rows(self.w2)) + rows(self.b2))
        out = torch.einsum("...btjh,btjho->...btjo", h, rows(self.w3)) + rows(self.b3)
        return out.clamp(LOGVAR_MIN, LOGVAR_MAX).unsqueeze(-2)

    # ---- building banks from other banks ------------------------------------------------
    def component_state(self, k: int) -> dict:
        """The weights of component k alone (used to assemble new banks)."""
        K, H = self.num_components, self.hidden
        return {
            "w_z": self.w_z.detach().unflatten(-1, (K, H))[:, k],
            "w_v": self.w_v.detach().unflatten(-1, (K, H))[:, k],
            "b1": self.b1.detach()[k], "w2": self.w2.detach()[k], "b2": self.b2.detach()[k],
            "w3": self.w3.detach()[k], "b3": self.b3.detach()[k],
            "uses_video": bool(self.uses_video[k] > 0), "name": self.names[k],
        }

    def speakers(self) -> list[str]:
        """The speaker of each component: its name, less the audio-only twin's suffix (a twin
        models the same person as the component it copies)."""
        return [n[:-len(TWIN_SUFFIX)] if n.endswith(TWIN_SUFFIX) else n for n in self.names]

    def with_audio_only_twins(self) -> "DecoderBank":
        """This bank plus an audio-only twin of every audio-visual component: the same weights
        with the lips ignored (``uses_video`` False), named ``<name>-ao``. A component trained
        with lip dropout has learnt to model its speaker from ``z`` alone too, so its twin is an
        audio-only model of the same speaker in the same latent space — the component a
        per-frame switch can hand the frames whose lips are missing or wrong."""
        parts = [self.component_state(k) for k in range(self.num_components)]
        twins = [dict(p, uses_video=False, name=p["name"] + TWIN_SUFFIX) for p in parts if p["uses_video"]]
        bank = DecoderBank.from_components(parts + twins, self.num_bins, self.latent_dim, self.hidden,
                                           self.lip_dim)
        return bank.to(self.w_z.device)

    @classmethod
    def from_components(cls, parts: list[dict], num_bins: int, latent_dim: int, hidden: int,
                        lip_dim: int, perturb: float = 0.0, generator=None) -> "DecoderBank":
        """A bank whose component k copies ``parts[k]`` (from :meth:`component_state`), with
        optional multiplicative noise ``1 + perturb·ε`` on every weight to break symmetry."""
        bank = cls(len(parts), num_bins, latent_dim, hidden, lip_dim,
                   uses_video=[p["uses_video"] for p in parts], names=[p["name"] for p in parts])

        def noisy(t):
            if perturb <= 0:
                return t
            return t * (1 + perturb * torch.randn(t.shape, generator=generator))

        with torch.no_grad():
            bank.w_z.copy_(torch.stack([noisy(p["w_z"]) for p in parts], 1).flatten(1))
            bank.w_v.copy_(torch.stack([noisy(p["w_v"]) for p in parts], 1).flatten(1))
            for name in ("b1", "w2", "b2", "w3", "b3"):
                getattr(bank, name).copy_(torch.stack([noisy(p[name]) for p in parts]))
        return bank


class VisualPrior(nn.Module):
    """The visual prior ``p(z | v) = N(μ(v), diag σ²(v))`` of the conditional VAE.

    ``h = tanh(W_2 tanh(W_1 v + b_1) + b_2)``, ``μ = present · (W_μ h + b_μ)``,
    ``log σ = present · clamp(W_σ h + b_σ)``: a network of one source's lip embedding (usually the
    temporal :class:`~pyro_avss.nets.lips.LipTemporalEncoder`, which already sees ±450 ms).
    Where no face is seen (``present = 0``) it falls back to the standard normal ``N(0, I)``, the
    prior of the audio-only model, so a lost face never pushes ``z`` anywhere.

    In training the KL term is taken to this prior; in separation each source's ``z`` prior is
    conditioned on that source's own lips, which is what ties a voice to a face before any
    decoder runs.
    """

    def __init__(self, lip_dim: int, latent_dim: int = 16, hidden: int = 128):
        super().__init__()
        self.lip_dim, self.latent_dim, self.hidden = lip_dim, latent_dim, hidden
        self.body = nn.Sequential(nn.Linear(lip_dim, hidden), nn.Tanh(), nn.Linear(hidden, hidden), nn.Tanh())
        self.loc = nn.Linear(hidden, latent_dim)
        self.log_scale = nn.Linear(hidden, latent_dim)

    def forward(self, lips: torch.Tensor, present: torch.Tensor):
        """``lips (..., Dv)``, ``present (...)`` -> ``(loc, scale)`` each ``(..., D)``."""
        h = self.body(lips)
        p = present.unsqueeze(-1).to(h.dtype)
        return self.loc(h) * p, (self.log_scale(h).clamp(-6.0, 2.0) * p).exp()


class LatentDynamics(nn.Module):
    """The memory of the latent speech prior: one correlation ``a_d ∈ (0, 0.99)`` per latent
    dimension between consecutive frames' deviations from the prior mean
    (:class:`~pyro_avss.models.markov.GaussMarkovChain`), ``a = 0.99 · sigmoid(θ)``.

    It does not depend on the switch (so the KL warm-up may scale ``z`` alone) nor on the lips
    (they enter through the prior's mean and scale). Learnt with the universal model and frozen
    afterwards, like the encoder and the visual prior.
    """

    max_corr = 0.99

    def __init__(self, latent_dim: int, init: float = 0.5):
        super().__init__()
        self.latent_dim = latent_dim
        self.logit = nn.Parameter(torch.full((latent_dim,), math.log(init / (self.max_corr - init))))

    def forward(self) -> torch.Tensor:
        """``(D,)`` correlations."""
        return self.max_corr * torch.sigmoid(self.logit)
