"""Ending a command's process without the interpreter's teardown.

Once torch is loaded, the interpreter's own shutdown (tearing down every module and collecting
their objects, memory the system takes back anyway) takes about 0.4 s: as long as separating a
3-s clip. A command whose outputs are all written and closed when it returns calls
:func:`allow`; the program entry points (``cli.py``, ``python -m pyro_avss``, ``pyro-avss``: all
through :func:`run`) then flush stdout and stderr, run the ``atexit`` handlers as a normal exit
does (logging, multiprocessing, ``weakref.finalize``) and end the process with :func:`os._exit`.

Only :func:`run` leaves early: code that calls the click group otherwise (click's ``CliRunner``,
``main(standalone_mode=False)``) ends as it always did, and so does a process that still has
a non-daemon thread running (a normal exit would wait for it).
"""

from __future__ import annotations

import atexit
import os
import sys
import threading

_ALLOWED = False


def allow() -> None:
    """The running command leaves nothing that needs the interpreter's teardown."""
    global _ALLOWED
    _ALLOWED = True


def _other_threads() -> bool:
    main = threading.main_thread()
    return any(t is not main and t.is_alive() and not t.daemon for t in threading.enumerate())


def _status(code) -> int:
    """The exit status ``sys.exit(code)`` gives (a message is printed, status 1)."""
    if code is None:
        return 0
    if isinstance(code, int):
        return code
    print(code, file=sys.stderr)
    return 1


def run(main, **kwargs) -> None:
    """Run the click group ``main`` as the program (its status is the process's); leave
    without the teardown when the command allowed it."""
    try:
        main(**kwargs)
        code = None
    except SystemExit as exc:
        code = exc.code
    if not _ALLOWED or _other_threads():
        sys.exit(code)
    status = _status(code)
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError, AttributeError):
            pass
    atexit._run_exitfuncs()
    os._exit(status)


def program() -> None:
    """The ``pyro-avss`` console script."""
    from .cli import main

    run(main)
