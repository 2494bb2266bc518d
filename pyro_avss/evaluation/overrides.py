"""``evaluate``'s ``--set`` overrides: separation settings, MCEM settings and the model's data
section, each checked before any work starts."""

from __future__ import annotations

import copy
from dataclasses import fields

from ..errors import ConfigError


def settings_from_overrides(overrides, model_config: dict):
    """Split ``key=value`` overrides into separation settings (``separate.*``), MCEM settings
    (``mcem.*``, fields of :class:`~pyro_avss.inference.mcem.MCEMSettings`) and the data section
    (``data.*``, applied to the model's own ``data`` config).

    :returns: ``(SeparationSettings, MCEMSettings, data_config dict)``.
    :raises ConfigError: unknown key or badly typed value.
    """
    from ..config import default_config, load_config, parse_override, set_key
    from ..inference.mcem import MCEMSettings
    from ..inference.separation import SeparationSettings

    sep, mcem, data = [], {}, []
    known = {f.name: f for f in fields(MCEMSettings) if f.name != "components"}
    for item in overrides:
        key, value = parse_override(item)
        text = item.partition("=")[2]
        if key.startswith("mcem."):
            name = key[len("mcem."):]
            if name not in known:
                raise ConfigError(f"--set: unknown MCEM setting {key!r} (mcem.{', mcem.'.join(known)})")
            default = getattr(MCEMSettings(), name)
            if isinstance(default, int) and not (isinstance(value, int) and not isinstance(value, bool)):
                raise ConfigError(f"--set: {key} must be an integer, got {text!r}")
            if isinstance(default, float) and not isinstance(value, (int, float)):
                raise ConfigError(f"--set: {key} must be a number, got {text!r}")
            mcem[name] = type(default)(value)
        elif key.startswith("data."):
            data.append((key, value))
        else:
            sep.append(item)
    separation = SeparationSettings.from_config(load_config(None, sep)["separate"])
    cfg = default_config()
    cfg["data"].update(copy.deepcopy((model_config or {}).get("data", {})))
    for key, value in data:
        set_key(cfg, key, value)
    mcem = MCEMSettings(**mcem)
    mcem.check()                         # before any work, not once per mixture
    return separation, mcem, cfg["data"]


__all__ = ["settings_from_overrides"]
