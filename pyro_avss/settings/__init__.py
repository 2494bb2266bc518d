"""Typed settings, the single source of every default: one dataclass per config section.

========== ============================================ =========================================
section    dataclass                                    used by
========== ============================================ =========================================
stft       :class:`~.training.StftSettings`             ``fit`` (the model keeps its own STFT)
data       :class:`~.training.DataSettings`             ``fit``, ``evaluate`` (NMF speech bases)
lips       :class:`~.training.LipsSettings`             ``fit``
model      :class:`~.training.ModelSettings`            ``fit``
train      :class:`~.training.TrainSettings`            ``fit``
separate   :class:`~.separation.SeparationSettings`     ``separate``, ``evaluate``, the API
mcem       :class:`~.mcem.MCEMSettings`                 ``evaluate`` (the MCEM systems)
========== ============================================ =========================================

:class:`Settings` holds one of each. A configuration travels as a nested dict (YAML files,
``--set``, the ``config`` of a model file): :mod:`pyro_avss.config` reads it, checking keys
and types against these dataclasses, and :meth:`Settings.from_config` builds the settings from
it, checking every value (:mod:`.base`). To add a key, add a field to its section (with its
default, comment and range); to add a choice, add it to the tuple the field names.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from ..errors import ConfigError
from .base import Section, unknown_key
from .mcem import MCEM_SWITCHES, MCEMSettings
from .separation import SWITCH_PRIORS, SeparationSettings
from .training import (DEFAULT_STAY, DataSettings, LipsSettings, ModelSettings, StftSettings,
                       TrainSettings)

SECTIONS: dict[str, type[Section]] = {s.NAME: s for s in (
    StftSettings, DataSettings, LipsSettings, ModelSettings, TrainSettings, SeparationSettings,
    MCEMSettings)}
"""Every config section by name, in the order of a config file."""


@dataclass
class Settings:
    """All the settings: one :class:`~.base.Section` per config section."""

    stft: StftSettings = field(default_factory=StftSettings)
    data: DataSettings = field(default_factory=DataSettings)
    lips: LipsSettings = field(default_factory=LipsSettings)
    model: ModelSettings = field(default_factory=ModelSettings)
    train: TrainSettings = field(default_factory=TrainSettings)
    separate: SeparationSettings = field(default_factory=SeparationSettings)
    mcem: MCEMSettings = field(default_factory=MCEMSettings)

    @classmethod
    def from_config(cls, cfg: Mapping, source: str = "config") -> "Settings":
        """The settings of a config dict (sections or keys left out keep their defaults);
        unknown keys and bad values are refused in one line naming the key."""
        for name, section in cfg.items():
            if name not in SECTIONS:
                raise unknown_key(source, (name,), SECTIONS)
            if section is not None and not isinstance(section, Mapping):
                raise ConfigError(f"{source}: {name!r} is a section, set one of its keys")
        return cls(**{name: section.from_config(cfg.get(name) or {}, source)
                      for name, section in SECTIONS.items()})

    def to_config(self) -> dict:
        """The settings as a config dict (what a YAML file or a model file holds)."""
        return {name: getattr(self, name).to_config() for name in SECTIONS}


__all__ = ["DEFAULT_STAY", "DataSettings", "LipsSettings", "MCEMSettings", "MCEM_SWITCHES",
           "ModelSettings", "SECTIONS", "SWITCH_PRIORS", "SeparationSettings", "Section", "Settings",
           "StftSettings", "TrainSettings"]
