"""Pyro's global state, borrowed and given back.

Pyro keeps its parameters in one global store (``pyro.get_param_store()``) and draws from the
global random streams of torch, NumPy and Python. A library call that fits something must not
leave either changed behind its caller's back: a user's own parameters would vanish
(``pyro.clear_param_store()``) and their random sequence would restart at our seed.
:func:`isolated_pyro_state` gives a fit an empty store and seeded streams of its own, and puts
the caller's back afterwards, also when the fit fails.
"""

from __future__ import annotations

import contextlib
import random

import numpy as np
import pyro
import torch


def forked_rng(device: torch.device | None = None):
    """``torch.random.fork_rng`` over the CPU stream and, for a CUDA ``device``, its stream: the
    body may draw without moving the caller's random sequences."""
    devices = [device.index or 0] if device is not None and device.type == "cuda" else []
    return torch.random.fork_rng(devices=devices)


@contextlib.contextmanager
def isolated_pyro_state(seed: int, device: torch.device | None = None):
    """Run the body with an empty Pyro param store and every random stream seeded with ``seed``
    (``pyro.set_rng_seed``); restore the caller's store (the same parameter objects) and streams
    on exit. Yields the body's store. The CUDA stream of ``device`` is restored too."""
    store = pyro.get_param_store()
    saved = store.get_state()
    python_state, numpy_state = random.getstate(), np.random.get_state()
    with forked_rng(device):
        store.clear()
        try:
            pyro.set_rng_seed(seed)
            yield store
        finally:
            store.clear()
            store.set_state(saved)
            random.setstate(python_state)
            np.random.set_state(numpy_state)
