"""Extending pyro_avss with your own model pieces: the runnable companion of ``docs/extending.md``.

It works on a synthetic recording (a harmonic tone burst in white noise; no data files) and
builds:

1. noise models that replace NMF: :class:`StationaryNoise` (one positive spectrum per
   utterance) and :class:`LevelPriorNoise` (that spectrum times a per-frame level with a
   Gaussian prior: a noise model with a latent variable and its own guide);
2. switch priors: :class:`ActivitySwitch` (i.i.d., per-frame probabilities driven by a
   voice-activity track, marginalised exactly by a ``logsumexp`` factor or by Pyro's parallel
   enumeration) and :class:`LearntStickySwitch` (the Markov switch with a learnt stay probability);
3. a new decoder family as a switch component: :class:`FlatDecoder` (a fixed flat or pink
   spectrum, here a "silence" component) stacked after a small ``DecoderBank`` with
   :class:`StackedDecoders`.

The ``DecoderBank`` (one "tone" component) and its encoder are first fitted for a few hundred
steps to the clean tone with the project's ``speech_model`` / ``speech_guide`` (about a second).
Then :class:`~pyro_avss.models.generative.SeparationModel` is fitted to the mixture by SVI, the
exact switch posterior and the Wiener masks come from
:func:`~pyro_avss.inference.separation.posterior_masks`, and a few numbers are printed. Run::

    python examples/extend_noise_and_switch.py [--noise stationary|level-prior]
        [--switch activity|sticky] [--enumerate] [--extra-voice] [--noise-quantile Q] [--steps N]

Shapes: B utterances, T frames, F bins, J sources, K components, D latent dimensions,
S = K^J joint switch states. Powers are normalised to mean 1 per utterance.
"""

from __future__ import annotations

import argparse
import contextlib
import math

import numpy as np
import pyro
import pyro.distributions as dist
import torch
from pyro import poutine
from pyro.distributions import constraints
from pyro.infer import SVI, Trace_ELBO, TraceEnum_ELBO
from pyro.ops.indexing import Vindex
from torch import nn

from pyro_avss.audio import StftConfig, istft, stft
from pyro_avss.evaluation.metrics import si_sdr
from pyro_avss.inference.inputs import normalised_power
from pyro_avss.inference.batch_fit import posterior_masks
from pyro_avss.models.generative import (MAX_PLATE_NESTING, SeparationModel, speech_guide,
                                         speech_model)
from pyro_avss.models.noise import noise_floor
from pyro_avss.models.switch import IIDSwitch, MarkovSwitch, SwitchPrior, joint_states
from pyro_avss.nets.vae import DecoderBank, SpeechEncoder


# ---------------------------------------------------------------------------------------------
# 1. noise models: any object with log_variance(power, mask, plates) -> (B, T, F)
# ---------------------------------------------------------------------------------------------
class StationaryNoise:
    """Noise whose variance does not change over time: ``b[f, t] ~ CN(0, q[f])``.

    One positive spectrum per utterance, the ``pyro.param`` ``noise_psd`` ``(B, F)``, started at
    the ``quantile`` of the mixture power of each bin over the valid frames.
    """

    def __init__(self, quantile: float = 0.2):
        self.quantile = quantile

    def log_variance(self, power, mask, plates=None):
        """``power (B,T,F)``, ``mask (B,T)`` bool -> ``log q`` broadcast to ``(B,T,F)``."""
        psd = pyro.param("noise_psd", lambda: noise_floor(power, mask, self.quantile),
                         constraint=constraints.positive)
        return psd.log()[:, None, :].expand(power.shape)


class LevelPriorNoise(StationaryNoise):
    """A stationary spectrum modulated per frame: ``q[f] · exp(u[t])`` with the latent log-level
    ``u[b, t] ~ N(0, prior_scale²)``.

    ``u`` is a sample site, so the guide must sample it too: ``SeparationModel.guide`` calls
    :meth:`guide` because the class has one. Outside inference, fix ``u`` with
    :meth:`point_estimate` (see :func:`masks_and_posterior`). ``SeparationModel`` hands both
    methods its ``(utt, time)`` plate objects (dims -2, -1); the site re-enters them, so its
    value is ``(..., B, T)`` with particle or enumeration dims on the left, as everywhere else.
    """

    def __init__(self, prior_scale: float = 0.5, quantile: float = 0.2):
        super().__init__(quantile)
        self.prior_scale = prior_scale

    def log_variance(self, power, mask, plates):
        utt, time = plates                      # the model's own plates, re-entered
        with utt, time, poutine.mask(mask=mask):
            u = pyro.sample("noise_level", dist.Normal(power.new_zeros(()), self.prior_scale))
        return super().log_variance(power, mask, plates) + u[..., None]                 # (..., B, T, F)

    def guide(self, power, mask, plates):
        """``q(u[b, t]) = N(noise_level_loc, noise_level_scale²)``, both ``(B, T)``."""
        B, T, _ = power.shape
        loc = pyro.param("noise_level_loc", lambda: power.new_zeros(B, T))
        scale = pyro.param("noise_level_scale", lambda: power.new_full((B, T), 0.1),
                           constraint=constraints.positive)
        utt, time = plates
        with utt, time, poutine.mask(mask=mask):
            pyro.sample("noise_level", dist.Normal(loc, scale))

    def point_estimate(self) -> dict:
        """Values for ``poutine.condition`` when the noise is needed after fitting."""
        return {"noise_level": pyro.param("noise_level_loc").detach()}


# ---------------------------------------------------------------------------------------------
# 2. switch priors: subclasses of SwitchPrior with observe() and posterior()
# ---------------------------------------------------------------------------------------------
class ActivitySwitch(SwitchPrior):
    """I.i.d. switch whose per-frame prior follows a voice-activity track.

    ``activity (B, T, J)`` in [0, 1] (from the lips, an energy detector, ...); ``speech``: one
    bool per component, True for speech components. With ``a = floor + (1 - 2 floor) activity``::

        p(m_j[t] = k) = a_j[t]       · π_j[k] / Σ_{speech k'} π_j[k']    (k a speech component)
                      = (1 - a_j[t]) · π_j[k] / Σ_{other k'}  π_j[k']    (k any other component)

    ``π`` is :class:`SwitchPrior`'s learnt ``switch_pi`` ``(B, J, K)`` (``prior_probs``), which
    the inherited ``fitted_posterior`` reads and passes to :meth:`posterior`.

    :param enumerate: marginalise with Pyro's parallel enumeration (``TraceEnum_ELBO``) instead
        of the hand-written ``logsumexp`` factor (any ELBO); both are exact.
    """

    def __init__(self, activity, speech, floor: float = 0.05, enumerate: bool = False):
        speech = torch.as_tensor(speech, dtype=torch.bool)
        if speech.all() or not speech.any():
            raise ValueError("ActivitySwitch: 'speech' must mark some, but not all, components")
        super().__init__(len(speech), activity.shape[-1], learn_prior=True)
        self.activity, self.speech, self.floor, self.enumerate = activity, speech, floor, enumerate

    def frame_probs(self, pi):
        """``pi (B, J, K)`` -> per-frame prior probabilities ``(B, T, J, K)``."""
        speech = self.speech.to(pi.device)
        a = (self.floor + (1 - 2 * self.floor) * self.activity.to(pi))[..., None]   # (B,T,J,1)
        share = torch.where(speech, pi / (pi * speech).sum(-1, keepdim=True),
                            pi / (pi * ~speech).sum(-1, keepdim=True))             # (B,J,K)
        return torch.where(speech, a, 1 - a) * share[:, None]

    def frame_log_prior(self, pi):
        """``(B, T, S)``: ``Σ_j log p(m_j[t] = s_j)`` for every joint state s."""
        states = joint_states(self.K, self.J).to(pi.device)                       # (S, J)
        logp = self.frame_probs(pi).clamp_min(1e-30).log()
        return sum(logp[..., j, states[:, j]] for j in range(self.J))

    def observe(self, loglik, mask, time_plate):
        """``loglik (..., B, T, S)``; called inside ``plate("utt", dim=-2)``."""
        pi = self.prior_probs(loglik.shape[-3], loglik.device)
        with time_plate, poutine.mask(mask=mask):
            if not self.enumerate:
                pyro.factor("x", torch.logsumexp(loglik + self.frame_log_prior(pi), -1))
                return
            probs = self.frame_probs(pi)
            picks = [pyro.sample(f"m{j}", dist.Categorical(probs[..., j, :]),
                                 infer={"enumerate": "parallel"}) for j in range(self.J)]
            table = loglik.reshape(loglik.shape[:-1] + (self.K,) * self.J)          # (..,B,T,K..K)
            pyro.factor("x", Vindex(table)[(Ellipsis, *picks)])

    def posterior(self, loglik, mask, pi):
        """Exact ``p(m[t] = s | x, z)`` ``(..., B, T, S)``; padded frames get the prior."""
        log_prior = self.frame_log_prior(pi)
        logits = torch.where(mask[..., None], loglik + log_prior, log_prior.expand_as(loglik))
        return torch.softmax(logits, -1)


class LearntStickySwitch(MarkovSwitch):
    """:class:`MarkovSwitch` whose stay probability is learnt: ``pyro.param("switch_stay")`` in
    (0.5, 1), shared by all sources. Only the transition matrix changes; ``DiscreteHMM``
    marginalisation and the forward-backward posterior are inherited."""

    def __init__(self, num_components: int, num_sources: int = 1, init_stay: float = 0.9):
        if num_components < 2:
            raise ValueError("LearntStickySwitch needs at least two components")
        super().__init__(num_components, num_sources, learn_prior=True, stay_prob=init_stay)

    def log_transition(self, device, batch=None):
        """``(S, S)`` log transition matrix of the joint chain (rows: from-state), the same for
        every utterance of the ``batch``."""
        stay = pyro.param("switch_stay", lambda: torch.tensor(self.stay_prob, device=device),
                          constraint=constraints.interval(0.5, 1.0)).clamp(max=1 - 1e-6)
        same = torch.eye(self.K, dtype=torch.bool, device=device)
        log_a = torch.where(same, stay.log(), torch.log1p(-stay) - math.log(self.K - 1))
        states = joint_states(self.K, self.J).to(device)
        return sum(log_a[states[:, None, j], states[None, :, j]] for j in range(self.J))


# ---------------------------------------------------------------------------------------------
# 3. decoder components: forward(z, lips, present) -> (..., K, F) log-variances
# ---------------------------------------------------------------------------------------------
class FlatDecoder(nn.Module):
    """One component that ignores ``z`` and the lips: ``log σ²[f] = level - slope·log(1 + f)``
    (slope 0: flat, 1: pink). With a low ``level`` it says "this source is silent now"."""

    num_components = 1

    def __init__(self, num_bins: int, latent_dim: int, level: float = -6.0, slope: float = 0.0,
                 name: str = "flat"):
        super().__init__()
        self.num_bins, self.latent_dim, self.names = num_bins, latent_dim, [name]
        f = torch.arange(num_bins, dtype=torch.float32)
        self.register_buffer("log_spectrum", level - slope * torch.log1p(f))

    def forward(self, z, lips=None, present=None):
        """``z (..., D)`` -> ``(..., 1, F)`` (broadcast over all of z's leading dims)."""
        return self.log_spectrum.expand(z.shape[:-1] + (1, self.num_bins))


class StackedDecoders(nn.Module):
    """Several decoder banks seen as one: the components of ``banks[0]`` first, then those of
    ``banks[1]``, ... Each bank needs ``forward(z, lips, present) -> (..., K_i, F)`` and the
    attributes ``num_components``, ``latent_dim`` and ``num_bins`` (equal for all banks)."""

    def __init__(self, *banks):
        super().__init__()
        first = banks[0]
        for bank in banks[1:]:
            if (bank.latent_dim, bank.num_bins) != (first.latent_dim, first.num_bins):
                raise ValueError("StackedDecoders: banks differ in latent_dim or num_bins")
        self.banks = nn.ModuleList(banks)
        self.num_components = sum(b.num_components for b in banks)
        self.latent_dim, self.num_bins = first.latent_dim, first.num_bins
        self.names = [n for b in banks for n in getattr(b, "names", ["?"] * b.num_components)]

    def forward(self, z, lips=None, present=None):
        outs = [bank(z, lips, present) for bank in self.banks]
        lead = torch.broadcast_shapes(*(o.shape[:-2] for o in outs))
        return torch.cat([o.expand(lead + o.shape[-2:]) for o in outs], dim=-2)


# ---------------------------------------------------------------------------------------------
# synthetic recording and a crude voice-activity track
# ---------------------------------------------------------------------------------------------
def synthetic_recording(seconds=1.0, sample_rate=16000, f0=220.0, snr_db=0.0, seed=0):
    """A harmonic tone burst (f0 and 4 overtones, on from 30 % to 70 % of the signal with 20 ms
    raised-cosine ramps) and white noise at ``snr_db`` over the burst. Returns float32
    ``(tone, noise)``, each ``(N,)``."""
    n = int(seconds * sample_rate)
    t = np.arange(n) / sample_rate
    tone = sum(np.sin(2 * np.pi * f0 * h * t) / h for h in range(1, 6))
    on, off, ramp = 0.3 * seconds, 0.7 * seconds, 0.02
    envelope = np.clip(np.minimum(t - on, off - t) / ramp, 0.0, 1.0)
    tone = tone * 0.5 * (1 - np.cos(np.pi * envelope))
    burst = tone[(t >= on) & (t < off)]
    noise = np.random.default_rng(seed).standard_normal(n)
    noise *= np.sqrt(np.mean(burst ** 2) / 10 ** (snr_db / 10))
    return tone.astype(np.float32), noise.astype(np.float32)


def energy_activity(power, mask, threshold=0.35, width=0.1):
    """Voice-activity track ``(B, T)`` in (0, 1) from the mixture power ``(B, T, F)``: a logistic
    of the frame log-energy above its median over valid frames, in nats."""
    energy = power.sum(-1).clamp_min(1e-12).log()
    median = energy.masked_fill(~mask, float("nan")).nanmedian(-1, keepdim=True).values
    return torch.sigmoid((energy - median - threshold) / width)


# ---------------------------------------------------------------------------------------------
# fitting and read-out
# ---------------------------------------------------------------------------------------------
def train_tone_model(power, mask, latent_dim=4, hidden=16, steps=300, lr=0.01):
    """A one-component speech model fitted to clean power ``(B, T, F)`` (valid frames: ``mask``)
    with the project's own ``speech_model`` / ``speech_guide``, as training does. Returns the
    encoder and a ``DecoderBank`` with K = 1."""
    B, T, F = power.shape
    encoder = SpeechEncoder(F, latent_dim, hidden)
    bank = DecoderBank(1, F, latent_dim, hidden, names=["tone"])
    switch = IIDSwitch(1, 1, learn_prior=False)
    batch = {"power": power, "lips": power.new_zeros(B, T, 0), "present": power.new_zeros(B, T),
             "labels": torch.full((B, T), -1), "mask": mask}
    elbo = Trace_ELBO(max_plate_nesting=MAX_PLATE_NESTING)
    optim = torch.optim.Adam([*encoder.parameters(), *bank.parameters()], lr=lr)
    for _ in range(steps):
        optim.zero_grad()
        loss = elbo.differentiable_loss(lambda b: speech_model(b, bank, switch),
                                        lambda b: speech_guide(b, encoder), batch)
        loss.backward()
        optim.step()
    return encoder.requires_grad_(False), bank.requires_grad_(False)


def make_guide(sep: SeparationModel):
    """The separation guide; it runs the noise model's own guide, when there is one."""
    return sep.guide


def fit(sep: SeparationModel, inputs: tuple, steps: int, lr=0.05, enumerate=False, seed=0):
    """SVI from a clean param store; returns the loss per valid frame at every step."""
    pyro.clear_param_store()
    pyro.set_rng_seed(seed)
    elbo = (TraceEnum_ELBO if enumerate else Trace_ELBO)(max_plate_nesting=MAX_PLATE_NESTING)
    svi = SVI(sep.model, make_guide(sep), pyro.optim.Adam({"lr": lr}), elbo)
    frames = float(inputs[-1].sum())
    return [svi.step(*inputs) / frames for _ in range(steps)]


def masks_and_posterior(sep: SeparationModel, inputs: tuple, num_samples=8):
    """Wiener masks ``(B,T,J+1,F)`` and switch marginals ``(B,T,J,K)`` from the fitted params;
    a noise model with latent sites is fixed at its point estimate first."""
    point = getattr(sep.noise, "point_estimate", None)
    with poutine.condition(data=point()) if point else contextlib.nullcontext():
        return posterior_masks(sep, *inputs, num_samples)


@contextlib.contextmanager
def one_thread():
    """Run torch on one thread: these tensors are tiny, and on a busy machine more threads
    only add contention (the previous setting is restored)."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def build_model(power, mask, clean, noise="stationary", switch="activity", enumerate=False,
                extra_voice=False, noise_quantile=0.2, latent_dim=4):
    """The separation model of :func:`main` for the mixture ``power (B, T, F)``, J = 1.

    The components: "tone" (a ``DecoderBank`` fitted to ``clean``, the power ``(1, T', F)`` of
    the clean tone, whose encoder also starts the guide), optionally "random_voice" (a
    random-weight ``DecoderBank``), and "silence" (a :class:`FlatDecoder`), stacked into one
    bank with :class:`StackedDecoders`. The noise spectrum starts at the ``noise_quantile`` of
    the mixture power in each bin.
    """
    F = power.shape[-1]
    encoder, tone_bank = train_tone_model(clean, clean.mean(-1) > 1e-3, latent_dim)
    banks = [tone_bank, FlatDecoder(F, latent_dim, level=-6.0, name="silence")]
    if extra_voice:
        voice = DecoderBank(1, F, latent_dim, hidden=16, names=["random_voice"])
        banks.insert(1, voice.requires_grad_(False))
    decoders = StackedDecoders(*banks)
    K = decoders.num_components
    noise_model = {"stationary": StationaryNoise, "level-prior": LevelPriorNoise}[noise]
    noise_model = noise_model(quantile=noise_quantile)
    if switch == "activity":
        activity = energy_activity(power, mask)[..., None]                      # (B, T, J=1)
        prior = ActivitySwitch(activity, speech=[True] * (K - 1) + [False], enumerate=enumerate)
    elif switch == "sticky":
        prior = LearntStickySwitch(K, num_sources=1)
    else:
        raise ValueError(f"unknown switch {switch!r} (activity or sticky)")
    return SeparationModel(encoder, decoders, prior, noise=noise_model)


@one_thread()
def main(steps=150, noise="stationary", switch="activity", enumerate=False, extra_voice=False,
         noise_quantile=0.2, seed=0, verbose=True) -> dict:
    """Separate the synthetic tone from its noise with the custom pieces; return (and print)
    a few figures. ``extra_voice`` adds a broadband random-weight component that competes with
    the noise model unless the noise starts high enough (``noise_quantile``; a pitfall shown in
    docs/extending.md)."""
    cfg = StftConfig(n_fft=256, hop=128)
    tone, background = synthetic_recording(seed=seed)
    mixture = tone + background
    spec = stft(torch.from_numpy(mixture), cfg)                                 # (T, F) complex
    power = normalised_power(mixture, cfg)[0][None]                             # (B=1, T, F)
    B, T, F = power.shape
    mask = torch.ones(B, T, dtype=torch.bool)
    lips, present = power.new_zeros(B, T, 1, 0), power.new_zeros(B, T, 1)      # J = 1, no video
    inputs = (power, lips, present, mask)

    torch.manual_seed(seed)
    clean = normalised_power(tone, cfg)[0][None]                                # (1, T, F)
    sep = build_model(power, mask, clean, noise, switch, enumerate, extra_voice, noise_quantile)
    losses = fit(sep, inputs, steps, enumerate=enumerate and switch == "activity", seed=seed)
    masks, post = masks_and_posterior(sep, inputs)                   # (B,T,J+1,F), (B,T,J,K)
    estimates = istft(masks[0].permute(1, 0, 2) * spec, len(mixture), cfg)      # (J+1, N)

    K = sep.decoders.num_components
    times = torch.from_numpy(cfg.frame_times(T))
    burst = (times >= 0.32) & (times < 0.68)
    result = {
        "loss_first": float(np.mean(losses[:10])), "loss_last": float(np.mean(losses[-10:])),
        "posterior_row_error": float((post.sum(-1) - 1).abs().max()),
        "mask_sum_error": float((masks.sum(2) - 1).abs().max()),
        "tone_posterior_in_burst": float(post[0, burst, 0, 0].mean()),
        "silence_posterior_outside": float(post[0, ~burst, 0, K - 1].mean()),
        "si_sdr_mixture": si_sdr(mixture, tone),
        "si_sdr_estimate": si_sdr(estimates[0].numpy(), tone),
        "reconstruction_error": float(np.abs(estimates.sum(0).numpy() - mixture).max()),
    }
    if switch == "sticky":
        result["learnt_stay"] = float(pyro.param("switch_stay").detach())
    if verbose:
        print(f"noise={noise} switch={switch} enumerate={enumerate}: B={B} T={T} F={F} J=1 "
              f"K={K} ({', '.join(sep.decoders.names)})")
        for key, value in result.items():
            print(f"  {key:27s} {value:.4g}")
    return result


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=150)
    parser.add_argument("--noise", choices=["stationary", "level-prior"], default="stationary")
    parser.add_argument("--switch", choices=["activity", "sticky"], default="activity")
    parser.add_argument("--enumerate", action="store_true",
                        help="marginalise the activity switch with TraceEnum_ELBO")
    parser.add_argument("--extra-voice", action="store_true",
                        help="add a random-weight voice component (shows a pitfall)")
    parser.add_argument("--noise-quantile", type=float, default=0.2,
                        help="start the noise spectrum at this quantile of the mixture power")
    args = parser.parse_args()
    main(args.steps, args.noise, args.switch, args.enumerate, args.extra_voice,
         args.noise_quantile)
