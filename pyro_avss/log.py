"""Messages of the library go through :mod:`logging`, never ``print``.

Every module logs to its own logger under ``"pyro_avss"`` (``logging.getLogger(__name__)``):
progress lines (a training epoch) at INFO, notices — something degraded a result without failing
it, their text starts with ``notice:`` — and problems found in a corpus at WARNING. A program
that uses the library decides where they go; the command line (``cli.py``) prints them one plain
line each with :func:`log_to_console`: progress on stdout with the commands' other output,
notices and warnings on stderr with the errors. Nothing is configured on import.
"""

from __future__ import annotations

import logging
import sys

ROOT = "pyro_avss"


class ConsoleLines(logging.Handler):
    """Each record as one plain line: WARNING and above on the *current* ``sys.stderr``, the
    rest on ``sys.stdout`` (looked up when a record comes, so a stream swapped in later — a
    test runner's capture — gets the lines)."""

    def emit(self, record: logging.LogRecord) -> None:
        stream = sys.stderr if record.levelno >= logging.WARNING else sys.stdout
        try:
            stream.write(self.format(record) + "\n")
            stream.flush()
        except Exception:                     # noqa: BLE001 - logging must never raise
            self.handleError(record)


def log_to_console(level: int = logging.INFO) -> None:
    """Print the library's messages at ``level`` and above as plain lines (:class:`ConsoleLines`;
    once: a second call only sets the level). For command-line programs; a library user
    configures :mod:`logging` as they like instead."""
    logger = logging.getLogger(ROOT)
    logger.setLevel(level)
    if not any(isinstance(h, ConsoleLines) for h in logger.handlers):
        handler = ConsoleLines()
        handler.setFormatter(logging.Formatter("%(message)s"))
        logger.addHandler(handler)
