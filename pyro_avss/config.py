"""Configuration: built-in defaults, YAML files and ``key.sub=value`` overrides.

A configuration travels as a nested dict of sections; the typed settings of
:mod:`pyro_avss.settings` (one dataclass per section) hold every key, its default, its type and
its range, and :data:`DEFAULTS` is generated from them. A YAML file or a ``--set`` override may
only change existing keys (an unknown key is an error that names it), and a value must have the
key's type (ints are accepted where floats are expected; ``null`` where the type allows it);
:func:`load_settings` then checks every value's range and choices, before any work.

The YAML files of ``configs/`` ship inside the package (``pyro_avss/configs``; the top-level
``configs`` of a source checkout points there), so a config can be given by name
(``grid_universal``) from any folder, or as a path. Paths *inside* a config, such as
``data.corpora: [../shared/data/grid]`` or ``data.cache: cache``, are relative to the folder
the command runs in, not to the config file.
"""

from __future__ import annotations

import copy
import math
from pathlib import Path
from collections.abc import Mapping
from typing import Any, Iterable

import yaml

from .errors import ConfigError, first_line
from .settings import SECTIONS, Settings
from .settings.base import kind, unknown_key

DEFAULTS: dict[str, Any] = Settings().to_config()
"""Every key and its default, as a nested dict: generated from the dataclasses of
:mod:`pyro_avss.settings`, where each default is written (with what the key does)."""


#: the configs shipped with the package (``configs/<name>.yaml`` in a source checkout)
CONFIG_DIR = Path(__file__).resolve().parent / "configs"


def packaged_configs() -> list[str]:
    """Names of the packaged configs (``grid_universal``, ...), for ``load_config(name)``."""
    return sorted(p.stem for p in CONFIG_DIR.glob("*.yaml"))


def config_file(config: str | Path) -> Path:
    """The YAML file ``config`` names: an existing file as given, else the packaged config of
    that name (``grid_universal`` or ``grid_universal.yaml``: a bare name, no folder)."""
    path = Path(config)
    if path.is_file():
        return path
    if len(path.parts) == 1 and path.suffix in ("", ".yaml", ".yml"):
        packaged = CONFIG_DIR / f"{path.stem if path.suffix else path.name}.yaml"
        if packaged.is_file():
            return packaged
    raise ConfigError(f"{config}: config file not found (nor a packaged config: "
                      f"{', '.join(packaged_configs()) or 'none installed'})")


def default_config() -> dict:
    return copy.deepcopy(DEFAULTS)


def load_settings(config: str | Path | Mapping | None = None,
                  overrides: Mapping | Iterable[str] = (), *, source: str = "overrides") -> Settings:
    """The settings: defaults, updated by ``config``, then by ``overrides``; every value checked.

    :param config: a YAML file or the name of a packaged config (see :func:`config_file`), a
        mapping of sections (checked like a YAML file), or None for the defaults.
    :param overrides: ``"key.sub=value"`` strings, read as ``--set`` reads them, or a mapping of
        dotted keys (``source`` names it in errors).
    :raises ConfigError: an unknown key or a value of the wrong type; a value out of its range
        or choices is a :class:`~pyro_avss.errors.SettingError` (one line naming its key).
    """
    cfg = default_config()
    if isinstance(config, Mapping):
        merge(cfg, dict(config), source="config")
    elif config is not None:
        path = config_file(config)
        try:
            data = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as exc:
            raise ConfigError(f"{path}: not valid YAML ({first_line(exc)})") from None
        if not isinstance(data, dict):
            raise ConfigError(f"{path}: top level must be a mapping")
        merge(cfg, data, source=str(path))
    if isinstance(overrides, Mapping):
        for key, value in overrides.items():
            set_key(cfg, key, value, source=source)
    else:
        apply_overrides(cfg, [overrides] if isinstance(overrides, str) else overrides)
    return Settings.from_config(cfg)


def load_config(config: str | Path | Mapping | None = None,
                overrides: Mapping | Iterable[str] = (), *, source: str = "overrides") -> dict:
    """:func:`load_settings` as a config dict (every value checked): what YAML files and
    model files hold."""
    return load_settings(config, overrides, source=source).to_config()


def apply_overrides(cfg: dict, overrides: Iterable[str]) -> None:
    """Apply ``key.sub=value`` strings (``--set``; values are read as YAML) to ``cfg``."""
    for item in overrides:
        key, value = parse_override(item)
        set_key(cfg, key, value, source="--set")


def parse_override(item: str) -> tuple[str, Any]:
    """``(key, value)`` of a ``key.sub=value`` string, the value read as (safe) YAML.

    :raises ConfigError: no ``=``, or a value that is not valid safe YAML (e.g. a Python tag).
    """
    key, sep, text = item.partition("=")
    if not sep:
        raise ConfigError(f"override {item!r}: expected key.sub=value")
    try:
        return key.strip(), yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"--set {key.strip()}: value {text!r} is not valid YAML "
                          f"({' '.join(str(exc).split())[:120]})") from None


def merge(cfg: dict, update: dict, source: str, prefix: tuple = ()) -> None:
    """Recursively copy ``update`` into ``cfg``, checking keys and types."""
    for key, value in update.items():
        path = prefix + (key,)
        if isinstance(value, dict) and isinstance(_get(cfg, path, source), dict):
            merge(cfg, value, source, path)
        else:
            set_key(cfg, ".".join(path), value, source)


def set_key(cfg: dict, dotted: str, value: Any, source: str = "--set") -> None:
    """Set the key ``section.name`` of ``cfg`` to ``value``, converted to the key's type."""
    path = tuple(dotted.split("."))
    old = _get(cfg, path, source)
    if isinstance(old, dict):
        raise ConfigError(f"{source}: {dotted!r} is a section, set one of its keys "
                          f"({', '.join(old)})")
    type_name, optional = kind(SECTIONS[path[0]].field(path[1], source))
    cfg[path[0]][path[1]] = _coerce(value, type_name, optional, dotted, source)


def _get(cfg: dict, path: tuple, source: str):
    node = cfg
    for i, key in enumerate(path):
        if not isinstance(node, dict) or key not in node:
            raise unknown_key(source, path, node if isinstance(node, dict) else (), depth=i)
        node = node[key]
    return node


def _coerce(value, type_name: str, optional: bool, dotted: str, source: str):
    """``value`` as the key's type (``int``, ``float``, ``str``, ``bool`` or ``list``; null
    where ``optional``), else a one-line :class:`ConfigError`."""
    if isinstance(value, str) and type_name == "float":
        try:                                 # YAML 1.1 reads "3e-3" as a string
            value = float(value)
        except ValueError:
            pass
    if value is None and optional:
        return None
    number = isinstance(value, (int, float)) and not isinstance(value, bool)
    if type_name == "bool" and isinstance(value, bool):
        return value
    if type_name == "float" and number:
        if not math.isfinite(value):
            raise ConfigError(f"{source}: {dotted} must be a finite number, got {value!r}")
        return float(value)
    if type_name == "int" and number and (isinstance(value, int) or value.is_integer()):
        return int(value)
    if type_name == "str" and isinstance(value, str):
        return value
    if type_name == "list" and isinstance(value, (list, str)):
        return [value] if isinstance(value, str) else list(value)
    raise ConfigError(f"{source}: {dotted} must be {type_name}, got {value!r}")


def dump_config(cfg: dict, path: str | Path) -> None:
    Path(path).write_text(yaml.safe_dump(cfg, sort_keys=False))
