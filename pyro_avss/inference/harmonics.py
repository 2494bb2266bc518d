"""The harmonic combs of :mod:`pyro_avss.models.harmonics` in training and in a fit: each speech
component's pitch range, read from its training clips when ``fit`` ends; the combs a separation
reads part-way through its fit (``separate.harmonics_at``), searched within those ranges
(``separate.harmonics_range``) and chosen jointly for all sources (``separate.harmonics_choice``).

A model file keeps the ranges in ``info["pitch_ranges"]``: ``{component name: [low, high]}`` in
Hz. A speaker's component reads the clips of that speaker, the universal one every clip of the
fit; a component with too few voiced frames gets no range, and so searches every pitch, as do
the components of a model file written before the ranges existed (no ``pitch_ranges`` key at
all, which :func:`has_pitch_ranges` tells; :func:`training_pitch_ranges`, ``pyro-avss
pitch-ranges``, reads them afterwards from the clips the model was fitted on).
"""

from __future__ import annotations

import math

import torch

from ..checkpoint import SpeechModels
from ..errors import ConfigError, InputError
from ..models.harmonics import HarmonicCombs
from ..settings.separation import SeparationSettings
from ..nets.vae import TWIN_SUFFIX, UNIVERSAL
from .training_data import UNREADABLE

#: at most this many training clips per component, spread evenly over its clips
MAX_CLIPS = 100


def component_pitch_ranges(models: SpeechModels, rows: list[dict], read) -> dict[str, list[float]]:
    """``{component name: [low, high]}`` (Hz) for every component of ``models`` whose clips among
    the prepared-manifest ``rows`` give a range (:meth:`HarmonicCombs.pitch_range`); ``read``
    turns a row into a clip's tensors, power first (a
    :class:`~pyro_avss.inference.training_data.ClipReader`). Unreadable clips are passed over:
    training has already reported them."""
    stft = models.stft
    combs = HarmonicCombs(stft.num_bins, stft.sample_rate, stft.n_fft)
    ranges = {}
    for name in models.component_names:
        mine = rows if name == UNIVERSAL else [r for r in rows if r["speaker"] == name]
        spread = mine[::max(1, len(mine) // MAX_CLIPS)][:MAX_CLIPS]
        found = combs.pitch_range(power for power in _powers(spread, read))
        if found is not None:
            ranges[name] = [round(found[0], 1), round(found[1], 1)]
    return ranges


def has_pitch_ranges(models: SpeechModels) -> bool:
    """Whether ``fit`` read the components' pitch ranges into the model file (possibly finding
    none): False for a file written before the ranges existed."""
    return "pitch_ranges" in models.info


def training_pitch_ranges(models: SpeechModels, overrides=(), progress: bool = True
                          ) -> dict[str, list[float]]:
    """The ranges ``fit`` reads when it ends (:func:`component_pitch_ranges`), read afterwards
    for a model file: from the training split of the model's own ``data`` settings (corpora,
    cache, speakers, split, per-speaker cap), changed by ``overrides`` (``"data.corpora=[...]"``
    strings or a mapping of dotted keys), e.g. where the corpora now live elsewhere.

    A component is matched to the clips of the speaker of its name (the universal one to every
    clip), so the components of a model fitted on clustered labels, named after clusters, find
    no clips and get no range here.

    :raises InputError: no training clip is found.
    """
    from collections.abc import Mapping

    from ..config import load_settings, parse_override
    from ..data.prepared import prepared_rows
    from .training_data import ClipReader, select_rows

    keys = overrides.keys() if isinstance(overrides, Mapping) else [parse_override(o)[0] for o in overrides]
    other = [k for k in keys if not k.startswith("data.")]
    if other:
        raise ConfigError(f"{', '.join(other)}: only data.* settings choose the clips the ranges are "
                          "read from")
    data = load_settings({"data": models.config.get("data", {})}, overrides).data
    rows = prepared_rows(data.corpora, data.cache, data.detector, progress=progress)
    train, _ = select_rows(rows, data)
    if not train:
        raise InputError("data", f"no clips in split {data.train_split!r} of "
                                 f"{', '.join(map(str, data.corpora))}")
    return component_pitch_ranges(models, train, ClipReader(models.lips, models.stft, None, False))


def _powers(rows: list[dict], read):
    for row in rows:
        try:
            yield read(row)[0].float()
        except UNREADABLE:
            continue


def pitch_range_table(models: SpeechModels) -> torch.Tensor | None:
    """``(K, 2)`` each component's pitch range (Hz) from the model file, NaN for a component
    without one (an audio-only twin takes its component's); None when the file has no ranges."""
    known = models.info.get("pitch_ranges")
    if not known:
        return None
    table = []
    for name in models.component_names:
        own = known.get(name) or known.get(name.removesuffix(TWIN_SUFFIX))
        table.append(own if own is not None else [math.nan, math.nan])
    return torch.tensor(table, dtype=torch.float32)


def source_combs(models: SpeechModels, settings: SeparationSettings, power: torch.Tensor
                 ) -> HarmonicCombs | None:
    """The harmonic combs of a fit on ``power (B, T, F)``: None with ``separate.harmonics_at =
    0``; with the model's pitch ranges where ``separate.harmonics_range`` is ``speaker``."""
    if not settings.harmonics_at:
        return None
    ranges = pitch_range_table(models) if settings.harmonics_range == "speaker" else None
    stft = models.stft
    return HarmonicCombs(power.shape[-1], stft.sample_rate, stft.n_fft, power.device, ranges)


def read_combs(combs: HarmonicCombs, settings: SeparationSettings, sources: torch.Tensor,
               noise: torch.Tensor, posterior: torch.Tensor, mask: torch.Tensor,
               components: list[int]) -> torch.Tensor:
    """``(B, T, J, F)`` the log comb of each source's pitch, read from the sources' and the
    noise's power estimates ``sources (B, T, J, F)`` and ``noise (B, T, F)``: within the ranges
    of the components (``components``, indices into the bank) that hold each source's switch
    ``posterior (B, T, J, K)`` over the valid frames of ``mask``, and, with
    ``harmonics_choice = joint``, chosen together to explain the mixture with the noise."""
    joint = noise if settings.harmonics_choice == "joint" else None
    return combs(sources, combs.allowed_pitches(posterior, mask, components), joint)
