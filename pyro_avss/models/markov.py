"""A Gauss–Markov chain over the frames of an utterance: the latent speech prior with memory.

The frame-wise prior makes the codes of neighbouring frames independent, ``z[t] ~ N(m[t], s[t]²)``,
so nothing in the model says that speech is continuous. :class:`GaussMarkovChain` keeps those
marginals (where ``s`` is constant in time) and adds a correlation ``a`` (per source and latent
dimension) between the deviations of consecutive frames from their means::

    z[0] = m[0] + s[0] · ε[0]
    z[t] = m[t] + a · (z[t-1] − m[t-1]) + √(1 − a²) · s[t] · ε[t]        ε[t] ~ N(0, I)

This is the linear-Gaussian (Kalman-filter) member of the deep-Kalman-filter family: the transition
is linear in ``z[t-1]`` and the lips enter through ``m`` and ``s`` (the visual prior
:class:`~pyro_avss.nets.vae.VisualPrior` of each frame, or ``0`` and ``1`` without one).
``a = 0`` is the frame-wise prior exactly.

**Why one sample site and not a ``pyro.markov`` loop.** The chain factorises as
``p(z) = p(z[0]) Π_t p(z[t] | z[t-1])``; written as a Python loop over ``pyro.markov(range(T))``,
each frame would be its own sample site, ``T`` sites per step (hundreds per utterance). Here the
site keeps the frame-wise model's layout — batch shape ``(..., T)`` inside the ``time`` plate,
event shape ``(J, D)`` — and element ``t`` of :meth:`GaussMarkovChain.log_prob` is the
conditional term ``log p(z[t] | z[t-1])`` of the *same* value shifted by one frame, so the sum
over the plate is the chain's joint log density and every ELBO term is computed in parallel over
time. ``tests/test_markov_prior.py`` checks that this equals the ``pyro.markov`` formulation.
Masked (padded) frames come only at the end of an utterance, so masking them drops the last
factors of the chain and nothing else.

Sampling (``rsample``, used when the chain is a guide or the model is run forward) solves the
linear recurrence ``d[t] = a·d[t-1] + u[t]`` by :func:`linear_recurrence`, a parallel scan of
``⌈log₂ T⌉`` vectorised steps, and stays differentiable in ``m``, ``s`` and ``a``.

Shapes: ``loc, scale (..., T, J, D)``, ``corr`` broadcastable to ``(..., 1, J, D)`` (no time
axis: one correlation per chain, values in ``(−1, 1)``); time is tensor dim ``-3``.
"""

from __future__ import annotations

import math

import torch
from pyro.distributions import TorchDistribution, constraints

TIME_DIM = -3


def linear_recurrence(coef: torch.Tensor, inputs: torch.Tensor, dim: int = TIME_DIM) -> torch.Tensor:
    """``x[t] = coef · x[t-1] + inputs[t]`` with ``x[-1] = 0`` along ``dim``, by doubling.

    After the pass with offset ``k`` every ``x[t]`` sums the inputs of the ``2k`` frames up to
    ``t``, each weighted by ``coef`` to the power of its distance: ``x[t] += coef^k · x[t−k]``,
    then ``coef^k → coef^{2k}``. ``coef`` has no time axis (it broadcasts over it)."""
    x = inputs
    T = inputs.shape[dim]
    power = coef
    offset = 1
    while offset < T:
        head = x.narrow(dim, 0, offset)
        shifted = power * x.narrow(dim, 0, T - offset)
        x = torch.cat([head, x.narrow(dim, offset, T - offset) + shifted], dim)
        power = power * power
        offset *= 2
    return x


class GaussMarkovChain(TorchDistribution):
    """The chain of the module docstring, one sample site for all frames (batch ``(..., T)``,
    event ``(J, D)``); element ``t`` of :meth:`log_prob` is ``log p(z[t] | z[t-1])``."""

    arg_constraints = {"loc": constraints.real, "scale": constraints.positive,
                       "corr": constraints.interval(-1.0, 1.0)}
    support = constraints.independent(constraints.real, 2)
    has_rsample = True

    def __init__(self, loc: torch.Tensor, scale: torch.Tensor, corr: torch.Tensor, validate_args=None):
        loc, scale = torch.broadcast_tensors(loc, scale)
        if loc.dim() < 3:
            raise ValueError(f"loc must be (..., T, J, D), got shape {tuple(loc.shape)}")
        corr = torch.as_tensor(corr, dtype=loc.dtype, device=loc.device)
        if corr.dim() >= 3 and corr.shape[TIME_DIM] != 1:
            raise ValueError("corr must not have a time axis (size 1 at dim -3)")
        self.loc, self.scale, self.corr = loc, scale, corr
        super().__init__(loc.shape[:-2], loc.shape[-2:], validate_args=validate_args)

    def innovation_scale(self) -> torch.Tensor:
        """``s[0]`` for the first frame, ``√(1 − a²) · s[t]`` after it."""
        rest = torch.sqrt((1 - self.corr * self.corr).clamp_min(1e-6)) * self.scale.narrow(TIME_DIM, 1, self.scale.shape[TIME_DIM] - 1)
        return torch.cat([self.scale.narrow(TIME_DIM, 0, 1), rest], TIME_DIM)

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        if self._validate_args:
            self._validate_sample(value)
        dev = value - self.loc
        T = dev.shape[TIME_DIM]
        previous = torch.cat([torch.zeros_like(dev.narrow(TIME_DIM, 0, 1)),
                              self.corr * dev.narrow(TIME_DIM, 0, T - 1)], TIME_DIM)
        sigma = self.innovation_scale()
        resid = (dev - previous) / sigma
        log_density = -0.5 * resid * resid - sigma.log() - 0.5 * math.log(2 * math.pi)
        return log_density.sum((-1, -2))

    def rsample(self, sample_shape=torch.Size()) -> torch.Tensor:
        shape = self._extended_shape(sample_shape)
        eps = torch.randn(shape, dtype=self.loc.dtype, device=self.loc.device)
        return self.loc + linear_recurrence(self.corr, eps * self.innovation_scale())

    @property
    def mean(self) -> torch.Tensor:
        return self.loc

    @property
    def variance(self) -> torch.Tensor:
        """Marginal variances ``v[t] = a² v[t-1] + (innovation scale)²`` (``s²`` where ``s`` is
        constant in time)."""
        return linear_recurrence(self.corr * self.corr, self.innovation_scale() ** 2)

    def expand(self, batch_shape, _instance=None):
        batch_shape = torch.Size(batch_shape)
        full = batch_shape + self.event_shape
        corr = self.corr
        if corr.dim() >= 3:
            corr = corr.expand(batch_shape[:-1] + (1,) + self.event_shape)
        return GaussMarkovChain(self.loc.expand(full), self.scale.expand(full), corr,
                                validate_args=False)
