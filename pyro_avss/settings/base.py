"""The machinery of typed settings: a config section is a dataclass (a :class:`Section`) whose
fields are its keys and whose field defaults are the defaults.

Each field's annotation gives its type (``int``, ``float``, ``str``, ``bool`` or ``list``, with
``| None`` where null is allowed; the section modules use ``from __future__ import
annotations``, so annotations are read as text), and :func:`key` adds what its values may be:
``choices`` or :class:`Rule` ranges. Building a section, from Python or from a config (YAML or
``--set``, read by :mod:`pyro_avss.config`), checks every key in field order, then
:meth:`Section.check` (keys that depend on each other), and refuses the first bad value with a
one-line :class:`~pyro_avss.errors.SettingError` naming its ``section.key``. Fields declared
with ``key(..., config=False)`` are set by code only (they are no config key).
"""

from __future__ import annotations

import copy
import dataclasses
import numbers
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Callable

from ..errors import ConfigError, SettingError


@dataclass(frozen=True)
class Rule:
    """What a number must be, in words (``"> 0"``, shown as ``must be > 0, got -1``) and as a test."""

    wording: str
    test: Callable[[Any], bool]


def at_least(low) -> Rule:
    return Rule(f">= {low}", lambda x: x >= low)


def above(low) -> Rule:
    return Rule(f"> {low}", lambda x: x > low)


def within(low, high, ends: str = "[]", shown: str | None = None) -> Rule:
    """``low <= x <= high``, with ``ends`` ``"()"``, ``"(]"``, ... the open or closed ends as in
    mathematics (``in (0, 1]``); ``shown``: how ``high`` is written in the message."""
    def test(x) -> bool:
        return ((x >= low) if ends[0] == "[" else (x > low)) and \
               ((x <= high) if ends[1] == "]" else (x < high))
    return Rule(f"in {ends[0]}{low}, {shown or high}{ends[1]}", test)


def key(default, *rules: Rule, choices=None, config: bool = True):
    """A field of a section: its default, then the :class:`Rule` s its value must pass, or the
    ``choices`` it must be one of; ``config=False``: set by code only, not a config key."""
    meta = {"rules": rules, "choices": tuple(choices) if choices is not None else None,
            "config": config}
    if isinstance(default, list):
        return dataclasses.field(default_factory=lambda: list(default), metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


def one_of(choices) -> str:
    """``a, b or c``: the choices of a key, in words."""
    words = [str(c) for c in choices]
    return words[0] if len(words) == 1 else f"{', '.join(words[:-1])} or {words[-1]}"


KINDS: dict[str, tuple[str, Callable[[Any], bool]]] = {
    "int": ("an integer", lambda v: isinstance(v, numbers.Integral) and not isinstance(v, bool)),
    "float": ("a number", lambda v: isinstance(v, numbers.Real) and not isinstance(v, bool)),
    "str": ("a string", lambda v: isinstance(v, str)),
    "bool": ("true or false", lambda v: isinstance(v, bool)),
    "list": ("a list", lambda v: isinstance(v, (list, tuple))),
}
"""Each type a config key may have: its name in words and a test of a value."""


def kind(f: dataclasses.Field) -> tuple[str, bool]:
    """``(type name, null allowed)`` of a field, from its annotation (``"float | None"``)."""
    parts = [p.strip() for p in str(f.type).split("|")]
    return [p for p in parts if p != "None"][0].split("[")[0], "None" in parts


def unknown_key(source: str, path: tuple, known, depth: int | None = None) -> ConfigError:
    """The one-line error of a key that no section has (``path[:depth]`` was found: by default
    all but the last part)."""
    where = ".".join(path[:depth if depth is not None else -1]) or "top level"
    return ConfigError(f"{source}: unknown config key {'.'.join(path)!r} "
                       f"(keys under {where}: {', '.join(known) or 'none'})")


class Section:
    """A config section as a dataclass; subclasses are declared ``class X(Section, name="x")``
    and decorated with ``@dataclass``."""

    NAME = ""

    def __init_subclass__(cls, name: str = "", **kwargs):
        super().__init_subclass__(**kwargs)
        cls.NAME = name or cls.NAME

    def __post_init__(self):
        self.validate()

    def validate(self) -> None:
        """Every key's type, choices and range, then :meth:`check`; raises :class:`SettingError`."""
        for f in self.config_fields():
            self._check_value(f, getattr(self, f.name))
        self.check()

    def check(self) -> None:
        """The checks of keys that depend on each other (none here; sections add theirs)."""

    def _check_value(self, f: dataclasses.Field, value) -> None:
        name, (type_name, optional) = f"{self.NAME}.{f.name}", kind(f)
        if value is None and optional:
            return
        words, test = KINDS[type_name]
        if not test(value):
            raise SettingError(name, f"must be {words}{' or null' if optional else ''}, got {value!r}")
        if f.metadata.get("choices") and value not in f.metadata["choices"]:
            raise SettingError(name, f"must be {one_of(f.metadata['choices'])}, got {value!r}")
        for rule in f.metadata.get("rules", ()):
            if not rule.test(value):
                raise SettingError(name, f"must be {rule.wording}, got {value}")

    @classmethod
    def config_fields(cls) -> list[dataclasses.Field]:
        """The fields that are config keys, in order."""
        return [f for f in dataclasses.fields(cls) if f.metadata.get("config", True)]

    @classmethod
    def field(cls, name: str, source: str = "--set") -> dataclasses.Field:
        """The config key ``name`` of this section; an unknown one is a :class:`ConfigError`."""
        found = {f.name: f for f in cls.config_fields()}
        if name not in found:
            raise unknown_key(source, (cls.NAME, name), found)
        return found[name]

    @classmethod
    def from_config(cls, section: Mapping, source: str = "config", **changes):
        """The section from its config mapping (keys left out keep their defaults), with
        ``changes`` (any field, by name) on top; unknown keys and bad values are refused."""
        for name in section:
            cls.field(name, source)
        return cls(**{**copy.deepcopy(dict(section)), **changes})

    def to_config(self) -> dict:
        """The section as a config mapping (its config keys only)."""
        return {f.name: copy.deepcopy(getattr(self, f.name)) for f in self.config_fields()}
