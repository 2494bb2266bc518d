"""What an evaluated system is: the mixture it gets (:class:`EvalItem`), what it returns
(:class:`SystemResult`), what it may use (:class:`EvalContext`), how it says it cannot process a
mixture (:class:`SystemSkip`) and the base class every system derives from (:class:`System`)."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from ..audio import StftConfig
from ..checkpoint import SpeechModels
from ..data.mixtures import MixtureSpec, RenderedMixture
from ..errors import PyroAvssError
from ..nets.vae import UNIVERSAL   # the universal component's name, re-exported for the systems


class SystemSkip(PyroAvssError):
    """A system cannot process a mixture (or any mixture); the message says why."""


@dataclass
class EvalItem:
    """One rendered mixture and the lip tracks of its sources (None where audio only)."""

    spec: MixtureSpec
    rendered: RenderedMixture
    tracks: list

    @property
    def num_sources(self) -> int:
        return self.spec.num_sources

    @property
    def audio_s(self) -> float:
        return self.spec.num_samples / self.spec.sample_rate


@dataclass
class SystemResult:
    """Output of a system for one mixture.

    :param estimates: ``(J, N)``, one estimate per source, in the spec's source order.
    :param runtime_s: processing time attributed to this mixture (s).
    :param posterior: ``(T, J, K)`` switch posterior over the model's components, or None.
    :param ordered: True when estimate j is tied to source j (by its video, or J = 1); False
        when the order is arbitrary (audio-only J ≥ 2: the harness matches it to the references).
    :param info: extra numbers for the CSV (``steps``, ``acceptance``).
    :param components: the component indices the switch could choose from (None: no switch).
    """

    estimates: np.ndarray
    runtime_s: float
    posterior: np.ndarray | None = None
    ordered: bool = True
    info: dict = field(default_factory=dict)
    components: tuple[int, ...] | None = None


@dataclass
class EvalContext:
    """What systems need besides the mixtures.

    :param models: the loaded model (None when only model-free systems run).
    :param device: torch device for the model-based systems.
    :param separation: :class:`~pyro_avss.inference.separation.SeparationSettings` for SVI.
    :param mcem: :class:`~pyro_avss.inference.mcem.MCEMSettings`.
    :param data_config: the ``data`` settings (:class:`~pyro_avss.settings.DataSettings`) used
        to find the model's training clips.
    :param out_dir: where caches (NMF bases) go.
    """

    models: SpeechModels | None
    device: torch.device
    separation: object
    mcem: object
    data_config: object
    out_dir: Path

    @property
    def stft(self) -> StftConfig:
        """The model's STFT settings (the defaults when no model is loaded)."""
        return self.models.stft if self.models is not None else StftConfig()


class System:
    """Base class. ``batch_size`` > 1 means :meth:`run` profits from many mixtures at once."""

    name = ""
    needs_model = False      # needs the model file (its components, STFT or training data)
    uses_video = False       # takes the sources' lip tracks (when the model is audio-visual)
    batch_size = 1

    def __init__(self, ctx: EvalContext):
        self.ctx = ctx

    def check(self, item: EvalItem) -> None:
        """Raise :class:`SystemSkip` if this mixture cannot be processed (default: all can)."""

    def prepare(self) -> None:
        """One-time set-up before the first mixture, not timed (raise :class:`SystemSkip` if
        the system cannot run at all)."""

    def group_key(self, item: EvalItem):
        """Mixtures with equal keys may share one batched call of :meth:`run`."""
        return item.num_sources

    def run(self, items: list[EvalItem]) -> list[SystemResult]:
        """Default: :meth:`run_one` on each mixture, timed separately."""
        out = []
        for item in items:
            start = time.perf_counter()
            estimates, posterior, info = self.run_one(item)
            out.append(SystemResult(np.atleast_2d(estimates), time.perf_counter() - start,
                                    posterior, info=info))
        return out

    def run_one(self, item: EvalItem):
        """``(estimates (J, N), posterior or None, info dict)`` for one mixture."""
        raise NotImplementedError


def single_source(item: EvalItem, what: str) -> None:
    if item.num_sources != 1:
        raise SystemSkip(f"{what} handles one source (J = 1) only; this mixture has "
                         f"J = {item.num_sources}")


__all__ = ["UNIVERSAL", "SystemSkip", "EvalItem", "SystemResult", "EvalContext", "System", "single_source"]
