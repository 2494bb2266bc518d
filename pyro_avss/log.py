"""Messages of the library go through :mod:`logging`, never ``print``.

Every module logs to its own logger under ``"pyro_avss"`` (``logging.getLogger(__name__)``):
progress lines (a training epoch) at INFO, notices — something degraded a result without failing
it, their text starts with ``notice:`` — and problems found in a corpus at WARNING. A program
that uses the library decides where they go; the command line (``cli.py``) sends them to
stderr, one plain line each, with :func:`log_to_stderr`. Nothing is configured on import.
"""

from __future__ import annotations

import logging
import sys

ROOT = "pyro_avss"


class StderrLines(logging.Handler):
    """Each record as one plain line on the *current* ``sys.stderr`` (looked up when a record
    comes, so a stream swapped in later — a test runner's capture — gets the lines)."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            sys.stderr.write(self.format(record) + "\n")
            sys.stderr.flush()
        except Exception:                     # noqa: BLE001 - logging must never raise
            self.handleError(record)


def log_to_stderr(level: int = logging.INFO) -> None:
    """Send the library's messages at ``level`` and above to stderr as plain lines (once: a
    second call only sets the level). For command-line programs; a library user configures
    :mod:`logging` as they like instead."""
    logger = logging.getLogger(ROOT)
    logger.setLevel(level)
    if not any(isinstance(h, StderrLines) for h in logger.handlers):
        handler = StderrLines()
        handler.setFormatter(logging.Formatter("%(message)s"))
        logger.addHandler(handler)
