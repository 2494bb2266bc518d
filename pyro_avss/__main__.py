"""``python -m pyro_avss ...``: the ``pyro-avss`` command."""

from .cli import main
from .quick_exit import run

run(main, prog_name="pyro-avss")
