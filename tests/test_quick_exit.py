"""The program entry point's quick exit (pyro_avss.quick_exit): the status, the output, the
atexit handlers of a normal exit, and no interpreter teardown, only where a command allowed it."""

from __future__ import annotations

import subprocess
import sys

import pytest

PROGRAM = """
import atexit, sys, threading, time
import click
from pyro_avss import quick_exit

class Noisy:
    def __del__(self):
        print("teardown", flush=True)

keep = Noisy()                      # collected by the interpreter's teardown only
atexit.register(lambda: print("atexit", flush=True))

@click.command()
@click.option("--allow", is_flag=True)
@click.option("--status", type=int, default=0)
@click.option("--thread", is_flag=True)
def main(allow, status, thread):
    if allow:
        quick_exit.allow()
    if thread:
        threading.Thread(target=time.sleep, args=(0.3,)).start()
    click.echo("output")            # block-buffered: stdout is a pipe
    sys.exit(status)

quick_exit.run(main)
"""


def program(*args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", PROGRAM, *args], capture_output=True, text=True)


@pytest.mark.parametrize("status", [0, 2])
def test_an_allowed_command_leaves_without_teardown_but_after_the_atexit_handlers(status):
    res = program("--allow", "--status", str(status))
    assert res.returncode == status, res.stderr
    assert res.stdout.split() == ["output", "atexit"]


def test_a_command_that_did_not_allow_it_ends_as_usual():
    res = program("--status", "1")
    assert res.returncode == 1, res.stderr
    assert res.stdout.split() == ["output", "atexit", "teardown"]


def test_a_running_thread_is_waited_for():
    res = program("--allow", "--thread")
    assert res.returncode == 0, res.stderr
    assert res.stdout.split() == ["output", "atexit", "teardown"]


def test_usage_errors_keep_their_status():
    res = program("--allow", "--no-such-option")
    assert res.returncode == 2 and "no-such-option" in res.stderr
