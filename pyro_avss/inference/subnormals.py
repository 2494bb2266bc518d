"""Subnormal floats flushed to zero while a fit runs.

Summing the switch out makes every decoder's gradient carry that component's posterior weight,
``∂ log Σ_k π_k p_k / ∂ log p_k = p(k | x)``. For a component far from the data this weight is
``exp(-100)`` or smaller, and the gradient reaching the decoder's matrix products is a
*subnormal* float32 number (below ``1.18e-38``), which x86 CPUs handle in microcode, tens of
times slower than a normal one. A fit of a 3-s clip with four randomly initialised decoders
(``cli.py bench``) spent more than half of its time in one such matrix product of the
backward pass.

:func:`subnormals_flushed` runs its body with ``torch.set_flush_denormal(True)`` (results and
inputs below the normal range read as zero) and puts the caller's mode back afterwards. Nothing
the separation reports can change by more than such a number; on the trained GRID bank the
sources came out bit-identical. On GPUs and CPUs without the mode it does nothing.
"""

from __future__ import annotations

import contextlib

import torch

#: a float32 subnormal: it survives ``x * 1`` only when subnormals are not flushed
_SUBNORMAL = 1e-39


def flushing_subnormals() -> bool:
    """Whether this thread currently flushes subnormal float32 numbers to zero."""
    return float(torch.tensor([_SUBNORMAL], dtype=torch.float32).mul(1.0).item()) == 0.0


@contextlib.contextmanager
def subnormals_flushed():
    """Flush subnormal floats to zero in the body (the calling thread, CPU); the mode found on
    entry is restored on exit, also after an exception. Usable as a decorator."""
    was = flushing_subnormals()
    supported = torch.set_flush_denormal(True)
    try:
        yield supported
    finally:
        if supported and not was:
            torch.set_flush_denormal(False)
