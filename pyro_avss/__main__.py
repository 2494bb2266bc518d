"""``python -m pyro_avss ...``: the ``pyro-avss`` command."""

from .cli import main

main(prog_name="pyro-avss")
