"""``evaluate``'s ``--set`` overrides: separation settings, MCEM settings and the model's data
section, each checked before any work starts."""

from __future__ import annotations

import copy


def settings_from_overrides(overrides, model_config: dict):
    """The settings of ``evaluate``: the defaults, with the model's own ``data`` section (the
    keys this version knows), then ``key=value`` overrides (``separate.*``, ``mcem.*``,
    ``data.*``), read and checked as every config is (:func:`pyro_avss.config.load_settings`).

    :returns: ``(SeparationSettings, MCEMSettings, DataSettings)``.
    :raises ConfigError: unknown key or badly typed value; a value out of range or choices is
        a :class:`~pyro_avss.errors.SettingError` naming its key.
    """
    from ..config import default_config, load_settings

    cfg = default_config()
    saved = copy.deepcopy((model_config or {}).get("data") or {})
    cfg["data"].update({k: v for k, v in saved.items() if k in cfg["data"]})
    settings = load_settings(cfg, list(overrides))
    return settings.separate, settings.mcem, settings.data


__all__ = ["settings_from_overrides"]
