"""The extension points of the separation model, as protocols checked when a model is built.

A piece of your own needs no base class, only these methods and attributes
(``docs/extending.md`` has worked examples). :func:`check_piece` runs when
:class:`~.generative.SeparationModel` is constructed, so a piece that lacks one fails there, with
its name, instead of deep inside the first SVI step.

* :class:`NoiseModel` — ``log_variance(power, mask, plates) -> (..., B, T, F)`` log noise
  variance; may register ``pyro.param``s and, with latent variables, sample them inside the
  given plates and provide ``guide(power, mask, plates)`` (:class:`~.noise.NMFNoise`).
* :class:`SwitchModel` — observes the mixture with the switch summed out or enumerated
  (``observe_mixture``), gives the exact posterior with its own fitted parameters
  (``fitted_posterior``) and per-source marginals (``source_marginals``). Subclass
  :class:`~.switch.SwitchPrior` and define ``observe`` and ``posterior``: it provides the rest.
* :class:`DecoderBankLike` — ``decoders(z, lips, present) -> (..., J, K, F)`` log-variances of
  K components, with ``num_components``, ``latent_dim`` and ``num_bins``
  (:class:`~pyro_avss.nets.vae.DecoderBank`).
* :class:`LatentPrior` — ``prior(lips, present) -> (loc, scale)`` of ``z`` given the lips
  (:class:`~pyro_avss.nets.vae.VisualPrior`).
* :class:`LatentCorrelation` — ``dynamics() -> (D,)`` frame-to-frame correlation of the prior
  with memory (:class:`~pyro_avss.nets.vae.LatentDynamics`).
* :class:`LipFrontEnd` — ``front_end(lips, present) -> (..., T, out_dim)`` learned lip embedding
  over time, with ``out_dim`` (:class:`~pyro_avss.nets.lips.LipTemporalEncoder`).
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import torch


@runtime_checkable
class NoiseModel(Protocol):
    def log_variance(self, power: torch.Tensor, mask: torch.Tensor, plates) -> torch.Tensor: ...


@runtime_checkable
class SwitchModel(Protocol):
    def observe_mixture(self, log_var: torch.Tensor, power: torch.Tensor, mask: torch.Tensor, time_plate,
                        allowed: torch.Tensor | None = None) -> None: ...

    def fitted_posterior(self, loglik: torch.Tensor, mask: torch.Tensor) -> torch.Tensor: ...

    def source_marginals(self, joint: torch.Tensor) -> torch.Tensor: ...


@runtime_checkable
class DecoderBankLike(Protocol):
    num_components: int
    latent_dim: int
    num_bins: int

    def __call__(self, z: torch.Tensor, lips: torch.Tensor, present: torch.Tensor) -> torch.Tensor: ...


@runtime_checkable
class LatentPrior(Protocol):
    def __call__(self, lips: torch.Tensor, present: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]: ...


@runtime_checkable
class LatentCorrelation(Protocol):
    def __call__(self) -> torch.Tensor: ...


@runtime_checkable
class LipFrontEnd(Protocol):
    out_dim: int

    def __call__(self, lips: torch.Tensor, present: torch.Tensor) -> torch.Tensor: ...


def check_piece(role: str, piece, protocol: type, optional: bool = False) -> None:
    """Raise ``TypeError`` naming ``role`` and what is missing unless ``piece`` follows
    ``protocol`` (None passes when ``optional``)."""
    if piece is None and optional:
        return
    if isinstance(piece, protocol):
        return
    wanted = [name for name in _members(protocol) if not hasattr(piece, name)]
    missing = ", ".join(wanted) if wanted else "a matching interface"
    raise TypeError(f"the {role} ({type(piece).__name__}) does not follow {protocol.__name__}: "
                    f"missing {missing} (see pyro_avss.models.protocols)")


def _members(protocol: type) -> list[str]:
    names = [n for n in vars(protocol) if not n.startswith("_") or n == "__call__"]
    return names + list(getattr(protocol, "__annotations__", {}))
