"""Monte-Carlo EM (MCEM): the published VAE–NMF inference algorithm, run on our speech models.

This is the reference the SVI of :mod:`.separation` is compared with (the VAE–NMF speech
enhancement of Sadeghi et al., TASLP 2020), with the paper's settings as defaults. One source
(J = 1) plus NMF noise; for one utterance with normalised mixture power ``X (T, F)``::

    x[f,t] | z_t, m_t = k  ~  CN(0, V_k[t, f]),   V_k = g_t σ²_k(z_t, v_t)[f] + (W H)[f, t]
    ℓ_tk(z_t) = log p(x_t | z_t, m_t = k) = -Σ_f (log V_k[t, f] + X[t, f] / V_k[t, f])  (+ const)

with ``z_t ~ N(0, I)`` and a uniform switch prior ``π_k = 1/K``. The switch ``m`` is either per
frame (``switch="iid"``, the default: ``m_t ~ Categorical(π)`` independently, as published for
K = 1 and extended to K decoders by summing the switch out frame by frame) or one component for
the whole utterance (``switch="utterance"``: ``m_t = m ~ Categorical(π)``, the default switch
of our SVI, :class:`~pyro_avss.models.switch.UtteranceSwitch`), so the two algorithms can be
compared with the same switch prior.

* **initialisation**: ``z_t`` = encoder mean on the *noisy* power (+ lips), ``W (F, R)`` and
  ``H (R, T)`` ~ U(0, 1) floored at machine epsilon (seeded), ``g = 1``;
* **E-step, per-frame switch**: random-walk Metropolis–Hastings on ``z_t`` — all T frames'
  chains run in parallel as tensors. Proposal ``z' = z + ε``, ``ε ~ N(0, proposal_var · I)``;
  target ``p(z_t | x_t) ∝ N(z_t; 0, I) · Σ_k π_k exp ℓ_tk(z_t)`` (the switch marginalised; for
  K = 1 this is the paper's target exactly). ``mh_steps`` steps per EM iteration, the last
  ``mh_steps - burn_in`` states are kept as samples ``z^(r)``; their switch posterior is
  ``γ_rk[t] = p(m_t = k | x_t, z^(r)_t) = softmax_k(log π_k + ℓ_tk(z^(r)_t))``;
* **E-step, per-utterance switch**: with one ``m`` for all frames the ``z_t`` are no longer
  independent a posteriori (they share ``m``), so the chain is a Gibbs sampler over ``(m, z)``.
  Each step first draws the component from its conditional, which needs no decoder pass (all K
  decoders are evaluated at the current ``z`` anyway)::

        m | z, x  ~  Categorical(softmax_k(log π_k + Σ_t ℓ_tk(z_t)))

  then makes one random-walk MH move of every ``z_t`` (in parallel; given ``m`` the frames are
  independent) with target ``N(z_t; 0, I) · exp ℓ_tm(z_t)``. Both moves leave
  ``p(m, z | x)`` invariant, so the kept ``z^(r)`` are draws of its ``z``-marginal, and the
  switch posterior of each sample is Rao–Blackwellised (its exact conditional, not the drawn
  ``m``)::

        γ_rk[t] = γ_rk = p(m = k | x, z^(r)) = softmax_k(log π_k + Σ_t ℓ_tk(z^(r)_t))

  the same on every frame. When one decoder explains the utterance far better, this
  conditional is almost one-hot and the chain rarely changes ``m`` (the usual slow mixing of
  Gibbs between well-separated modes); ``γ`` then says which mode it is in. For K = 1 both
  switches are the same model and run the same code (no draw of ``m``);
* **M-step** (either switch): Févotte multiplicative updates (exponent ½) of W, then H, then g,
  each with the mixture variance recomputed, averaging over the samples r and the switch
  posterior ``γ`` (for K = 1, γ = 1 and these are the paper's formulas)::

        A = Σ_rk γ V_rk^-2,  B = Σ_rk γ V_rk^-1                          (F, T)
        W ← W ⊙ [((X ⊙ A) Hᵀ) / (B Hᵀ)]^½,   H ← H ⊙ [(Wᵀ (X ⊙ A)) / (Wᵀ B)]^½
        g_t ← g_t [Σ_f X Σ_rk γ σ²_rk V_rk^-2 / Σ_f Σ_rk γ σ²_rk V_rk^-1]^½

  With the samples fixed, this is EM over the switch: ``γ`` at the current parameters makes
  ``Σ_rk γ (-log p(x | z^(r), k))`` a majoriser of the cost below, which the updates decrease,
  so the cost does not increase (tested for both switches);
* **stopping**: at most ``em_iterations``; stop when the relative change of the cost falls below
  ``tol``. The cost is the Monte-Carlo estimate of ``-log p(x | z)`` per time-frequency bin with
  the switch summed out, evaluated after each M-step::

        per frame:       -(1/(R T F)) Σ_r Σ_t log Σ_k π_k exp ℓ_tk(z^(r)_t)
        per utterance:   -(1/(R T F)) Σ_r log Σ_k π_k exp Σ_t ℓ_tk(z^(r)_t)

* **estimate**: a fresh MH (or Gibbs) run of ``final_steps`` steps (continuing the chains),
  keeping the last ``final_steps - final_burn_in``; the Wiener masks ``E[Σ_k γ_k g σ²_k / V_k]``
  and ``E[Σ_k γ_k (WH) / V_k]`` sum to one, so speech + noise = mixture up to the STFT round
  trip.

Inputs are prepared exactly as for our SVI (:func:`~.inputs.utterance_inputs`: power divided
by its mean — the models were trained that way; the paper peak-normalises instead), so both
algorithms see the same data; the U(0, 1) NMF initialisation is on that scale. The cost is
rarely flat to 1e-5 under Monte-Carlo noise, so in practice all ``em_iterations`` run.

The switch posterior reported is the average of ``γ`` over the final samples (per utterance:
one distribution, repeated on every frame). Everything is torch and device-agnostic; only
``(T, ...)``-shaped tensors, no Python loop over frames. A decoder pass per MH step is still
many more passes than SVI needs (40 × EM iterations + 100); the per-utterance switch costs the
same passes as the per-frame one.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch

from ..audio import istft, stft
from ..checkpoint import SpeechModels
from ..errors import InputError, SeparationDiverged
from ..models.generative import log_power_features
from ..settings.mcem import MCEM_SWITCHES, MCEMSettings
from .inputs import utterance_inputs
from .separation import Separated, components_view
from .subnormals import subnormals_flushed

EPS = float(np.finfo(np.float32).eps)

@dataclass
class MCEMSeparated(Separated):
    """:class:`~.separation.Separated` plus the diagnostics of the run (``steps`` = EM iterations).

    :param acceptance: MH acceptance rate over all frames and steps (E-steps and final run).
    :param history: per EM iteration ``{"cost", "acceptance"}`` (cost: see the module docstring).
    :param decoder_passes: number of decoder evaluations on all T frames.
    """

    acceptance: float = math.nan
    history: list[dict] = field(default_factory=list)
    decoder_passes: int = 0


# ---------------------------------------------------------------------------------------------
# the pieces of one utterance's MCEM
# ---------------------------------------------------------------------------------------------
class _Problem:
    """Tensors of one utterance and the current parameters (all on one device).

    ``power (T, F)``, ``lips (T, Dv)``, ``present (T,)``; parameters ``W (F, R)``, ``H (R, T)``,
    ``gain (T,)``; ``log_prior_k`` the uniform switch prior ``-log K``; ``utterance``: one
    component for the whole utterance (``settings.switch``, with K > 1; for K = 1 the two
    switches are the same model and take the per-frame code path).
    """

    def __init__(self, decoders, power, lips, present, settings: MCEMSettings, gen: torch.Generator):
        self.decoders, self.power, self.lips, self.present = decoders, power, lips, present
        T, F = power.shape
        dev = power.device
        u = lambda *shape: torch.rand(*shape, generator=gen, device=dev).clamp_min(EPS)  # noqa: E731
        self.W, self.H = u(F, settings.noise_rank), u(settings.noise_rank, T)
        self.gain = torch.ones(T, device=dev)
        self.log_prior_k = -math.log(decoders.num_components)
        self.utterance = settings.switch == "utterance" and decoders.num_components > 1
        self.passes = 0
        self.refresh()

    def refresh(self) -> None:
        """Recompute the cached noise variance ``(W H)ᵀ (T, F)`` after W or H changed."""
        self.noise = (self.W @ self.H).T.clamp_min(EPS)

    def log_speech(self, z: torch.Tensor) -> torch.Tensor:
        """``log σ²_k(z)`` ``(..., T, K, F)`` for ``z (..., T, D)`` (one decoder pass)."""
        self.passes += 1
        return self.decoders(z, self.lips, self.present)

    def component_loglik(self, log_speech: torch.Tensor) -> torch.Tensor:
        """``log p(x_t | z, k)`` up to a constant, ``(..., T, K)``."""
        var = self.gain[:, None, None] * log_speech.exp() + self.noise[:, None, :]
        return -(var.log() + self.power[:, None, :] / var).sum(-1)

    def marginal(self, comp_ll: torch.Tensor) -> torch.Tensor:
        """``log Σ_k π_k p(x_t | z, k)`` ``(..., T)``."""
        return torch.logsumexp(comp_ll + self.log_prior_k, -1)

    def utterance_logits(self, comp_ll: torch.Tensor) -> torch.Tensor:
        """``log π_k + Σ_t log p(x_t | z_t, k)`` ``(..., K)``: the utterance switch's log posterior
        given ``z``, up to a constant."""
        return comp_ll.sum(-2) + self.log_prior_k

    def evidence(self, comp_ll: torch.Tensor) -> torch.Tensor:
        """``log p(x | z)`` with the switch summed out: per frame ``(..., T)`` for the per-frame
        switch, per utterance ``(...,)`` for the utterance switch (their sums are the same
        quantity, ``Σ`` over everything but the samples)."""
        if self.utterance:
            return torch.logsumexp(self.utterance_logits(comp_ll), -1)
        return self.marginal(comp_ll)

    def draw_switch(self, comp_ll: torch.Tensor, gen: torch.Generator):
        """The Gibbs move of the utterance switch: ``m ~ p(m | x, z)`` as a ``(1,)`` index
        tensor (no host sync), from the current state's ``comp_ll (T, K)``; None for the
        per-frame switch (summed out, nothing to draw, no random number used)."""
        if not self.utterance:
            return None
        cdf = torch.softmax(self.utterance_logits(comp_ll), -1).cumsum(-1)
        u = torch.rand((), generator=gen, device=comp_ll.device)
        return (cdf < u).sum().clamp_max(cdf.shape[-1] - 1).view(1)

    def frame_target(self, comp_ll: torch.Tensor, m) -> torch.Tensor:
        """``log p(x_t | z_t)`` in the MH target ``(..., T)``: the switch summed out per frame
        (``m`` None), or component ``m`` (the utterance switch, given its Gibbs draw)."""
        if m is None:
            return self.marginal(comp_ll)
        return comp_ll.index_select(-1, m).squeeze(-1)


def _metropolis(problem: _Problem, z: torch.Tensor, steps: int, burn_in: int, scale: float,
                gen: torch.Generator):
    """Random-walk MH on every frame's chain at once; with the utterance switch, each step is a
    Gibbs sweep: draw ``m`` given ``z``, then the MH move of every ``z_t`` given ``m``.

    :returns: ``(z, kept_log_speech (R, T, K, F), kept_comp_ll (R, T, K), accepted, proposed)``
        with R = steps - burn_in; the kept states are the chain states after each step.
    """
    ls = problem.log_speech(z)
    cll = problem.component_loglik(ls)
    log_target = problem.marginal(cll) - 0.5 * z.pow(2).sum(-1)                  # (T,)
    kept_ls, kept_cll = [], []
    accepted = torch.zeros((), dtype=torch.long, device=z.device)
    for step in range(steps):
        m = problem.draw_switch(cll, gen)                     # None: per-frame switch, summed out
        if m is not None:                                     # the target of z given this m
            log_target = problem.frame_target(cll, m) - 0.5 * z.pow(2).sum(-1)
        prop = z + scale * torch.randn(z.shape, generator=gen, device=z.device)
        ls_p = problem.log_speech(prop)
        cll_p = problem.component_loglik(ls_p)
        target_p = problem.frame_target(cll_p, m) - 0.5 * prop.pow(2).sum(-1)
        u = torch.rand(log_target.shape, generator=gen, device=z.device).clamp_min(1e-30)
        accept = u.log() < target_p - log_target                                  # (T,)
        accepted += accept.sum()
        z = torch.where(accept[:, None], prop, z)
        ls = torch.where(accept[:, None, None], ls_p, ls)
        cll = torch.where(accept[:, None], cll_p, cll)
        log_target = torch.where(accept, target_p, log_target)
        if step >= burn_in:
            kept_ls.append(ls)
            kept_cll.append(cll)
    return z, torch.stack(kept_ls), torch.stack(kept_cll), int(accepted), steps * z.shape[0]


def _responsibilities(problem: _Problem, comp_ll: torch.Tensor) -> torch.Tensor:
    """Switch posterior ``γ (..., T, K)`` of each kept sample: per frame, or the utterance's
    (Rao–Blackwellised, module docstring) repeated on every frame."""
    if problem.utterance:
        return torch.softmax(problem.utterance_logits(comp_ll), -1)[..., None, :].expand_as(comp_ll)
    return torch.softmax(comp_ll + problem.log_prior_k, -1)


def _m_step(problem: _Problem, log_speech: torch.Tensor, gamma: torch.Tensor) -> None:
    """Multiplicative updates of W, H and g (module docstring), in place."""
    speech = log_speech.exp()                                                     # (R,T,K,F)
    X = problem.power.T                                                           # (F,T)

    def moments():
        var = problem.gain[:, None, None] * speech + problem.noise[:, None, :]
        inv1 = gamma[..., None] / var                                             # γ V^-1
        return inv1, inv1 / var                                                   # γ V^-2

    inv1, inv2 = moments()
    A, B = inv2.sum((0, 2)).T, inv1.sum((0, 2)).T
    problem.W *= (((X * A) @ problem.H.T) / (B @ problem.H.T).clamp_min(EPS)).sqrt()
    problem.W.clamp_min_(EPS)
    problem.refresh()
    inv1, inv2 = moments()
    A, B = inv2.sum((0, 2)).T, inv1.sum((0, 2)).T
    problem.H *= ((problem.W.T @ (X * A)) / (problem.W.T @ B).clamp_min(EPS)).sqrt()
    problem.H.clamp_min_(EPS)
    problem.refresh()
    inv1, inv2 = moments()
    num = (problem.power * (inv2 * speech).sum((0, 2))).sum(-1)
    den = (inv1 * speech).sum((0, 2)).sum(-1)
    problem.gain *= (num / den.clamp_min(EPS)).sqrt()
    problem.gain.clamp_min_(EPS)


def _cost(problem: _Problem, log_speech: torch.Tensor) -> float:
    """MC estimate of ``-log p(x | z)`` per time-frequency bin with the current parameters."""
    ll = problem.evidence(problem.component_loglik(log_speech))                   # (R, T) or (R,)
    return float(-ll.mean(0).sum() / problem.power.numel())


def _wiener_masks(problem: _Problem, log_speech: torch.Tensor, gamma: torch.Tensor):
    """Speech and noise masks ``(T, F)`` averaged over samples and the switch posterior."""
    speech = problem.gain[:, None, None] * log_speech.exp()                       # (R,T,K,F)
    noise = problem.noise[:, None, :]
    w = gamma[..., None] / (speech + noise)
    return (w * speech).sum(2).mean(0), (w * noise).sum(2).mean(0)


# ---------------------------------------------------------------------------------------------
# public entry point
# ---------------------------------------------------------------------------------------------
@torch.no_grad()
@subnormals_flushed()               # as SVI's fits (see .subnormals): a like-for-like comparison
def mcem_separate(models: SpeechModels, audio, track=None, settings: MCEMSettings = MCEMSettings(),
                  device=torch.device("cpu"), progress=None) -> MCEMSeparated:
    """Separate one recording ``audio (N,)`` into one source and noise with MCEM.

    :param track: the source's :class:`~pyro_avss.video.track.LipTrack`, or None (audio only).
    :param progress: optional callable ``(iteration, cost)`` after each EM iteration.
    :returns: :class:`MCEMSeparated` with ``sources (1, N)``, ``noise (N,)``, ``posterior
        (T, 1, K)`` over all K components of the model (zeros outside ``settings.components``;
        the same on every frame with ``settings.switch="utterance"``) and ``steps`` = EM
        iterations run.
    """
    settings.validate()
    audio = np.asarray(audio, dtype=np.float32)
    if audio.ndim != 1 or audio.size == 0:
        raise InputError("audio", f"expected a non-empty 1-D waveform, got shape {audio.shape}")
    cfg = models.stft
    models.to(device)
    decoders = components_view(models, settings.components)
    x = utterance_inputs(audio, track if models.uses_video else None, models.lips, cfg,
                         temporal=models.lip_encoder)
    power, lips, present = x.power.to(device), x.lips.to(device), x.present.to(device)
    gen = torch.Generator(device=device).manual_seed(settings.seed)
    problem = _Problem(decoders, power, lips, present, settings, gen)
    z = models.encoder(log_power_features(power), lips, present)[0]               # (T, D)
    scale = math.sqrt(settings.proposal_var)

    history, accepted, proposed, previous = [], 0, 0, None
    for it in range(1, settings.em_iterations + 1):
        z, ls, cll, acc, n = _metropolis(problem, z, settings.mh_steps, settings.burn_in, scale, gen)
        accepted, proposed = accepted + acc, proposed + n
        _m_step(problem, ls, _responsibilities(problem, cll))
        cost = _cost(problem, ls)
        if not math.isfinite(cost):
            raise SeparationDiverged(f"MCEM cost became {cost} at EM iteration {it}")
        history.append({"cost": cost, "acceptance": acc / n})
        if progress is not None:
            progress(it, cost)
        if previous is not None and abs(cost - previous) < settings.tol * abs(previous):
            break
        previous = cost

    z, ls, cll, acc, n = _metropolis(problem, z, settings.final_steps, settings.final_burn_in,
                                     scale, gen)
    accepted, proposed = accepted + acc, proposed + n
    gamma = _responsibilities(problem, cll)
    speech_mask, noise_mask = _wiener_masks(problem, ls, gamma)
    spec = stft(torch.as_tensor(audio), cfg).to(device)                            # (T, F)
    masks = torch.stack([speech_mask, noise_mask])                                 # (2, T, F)
    est = istft(masks * spec, len(audio), cfg).cpu().numpy().astype(np.float32)
    post = gamma.mean(0).cpu()                                                     # (T, K')
    full = torch.zeros(post.shape[0], models.decoders.num_components)
    full[:, list(settings.components) if settings.components is not None else slice(None)] = post
    return MCEMSeparated(sources=est[:1], noise=est[1], posterior=full[:, None, :].numpy(),
                         steps=len(history), acceptance=accepted / max(proposed, 1),
                         history=history, decoder_passes=problem.passes)


__all__ = ["MCEMSettings", "MCEMSeparated", "mcem_separate", "MCEM_SWITCHES"]
