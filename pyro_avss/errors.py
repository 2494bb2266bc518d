"""Exception types of pyro_avss.

Every error the toolkit raises on bad input is an :class:`InputError` whose message is a single
line of the form ``"<path>: <problem>"`` so that batch commands can report it and move on.
"""

from __future__ import annotations

import os
from pathlib import Path


def first_line(exc: BaseException) -> str:
    """The first non-empty line of an exception's message, or its type's name: enough to say in
    one line what a library below us (libsndfile, torch, yaml, csv) complained about."""
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def one_line(exc: BaseException) -> str:
    """An error as one line: a deliberate one (:class:`PyroAvssError`) as it is, any other with
    its type and the first line of its message (Pyro appends pages of trace shapes below it)."""
    if isinstance(exc, PyroAvssError):
        return " ".join(str(exc).split())
    text = " ".join(first_line(exc).split()) if str(exc).strip() else "no message"
    return f"{type(exc).__name__}: {text}"


class PyroAvssError(Exception):
    """Base class of all errors raised deliberately by pyro_avss."""


class InputError(PyroAvssError, ValueError):
    """A file or value given by the user cannot be used.

    :param source: the file (or manifest row, or config key) the problem is about.
    :param problem: what is wrong, in a few words.
    """

    def __init__(self, source: str | Path, problem: str):
        # one line even for a name with control characters in it (they are shown escaped)
        self.source = "".join(c if c.isprintable() else repr(c)[1:-1] for c in str(source))
        self.problem = " ".join(str(problem).split())  # always one line
        super().__init__(f"{self.source}: {self.problem}")

    def __reduce__(self):
        # rebuilt from its two parts, so that it crosses a process boundary (a worker's error)
        return type(self), (self.source, self.problem)


class ConfigError(PyroAvssError, KeyError):
    """A configuration key or value is invalid."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0])


class SettingError(ConfigError, InputError):
    """A setting out of its range or choices (``separate.lr: must be > 0, got -1``), refused
    when the settings are built, before any work: a :class:`ConfigError` (a config problem)
    and an :class:`InputError` (a value given by the user) naming its ``section.key``."""


class TrainingDiverged(PyroAvssError, RuntimeError):
    """The training loss became NaN or infinite."""


class SeparationDiverged(PyroAvssError, FloatingPointError):
    """The cost of a test-time fit (SVI or MCEM) became NaN or infinite: that recording (or
    batch) has no result; the message says which cost and at which step."""


def writable_folder(path: str | Path) -> Path:
    """``path`` as a :class:`~pathlib.Path` if it is, or can be made, a folder we may write in;
    else an :class:`InputError` naming it. Checked before any work, so that a batch is refused
    in one line instead of failing every input for the same reason; nothing is created."""
    path = Path(path)
    existing = path
    while not existing.exists() and existing.parent != existing:
        existing = existing.parent                     # the nearest part that exists
    if not existing.is_dir():
        where = "it is" if existing == path else f"{existing} is"
        raise InputError(path, f"cannot be an output folder: {where} a file, not a folder")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise InputError(path, f"cannot write in {existing} (permission denied)")
    return path
