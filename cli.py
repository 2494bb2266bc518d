#!/usr/bin/env python
"""``python cli.py ...`` from a source checkout: the same command as the installed
``pyro-avss`` (the click app lives in :mod:`pyro_avss.cli`)."""

from pyro_avss.cli import main
from pyro_avss.quick_exit import run

if __name__ == "__main__":
    run(main)
