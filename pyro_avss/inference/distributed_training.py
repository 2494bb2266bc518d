"""Data-parallel training over a ``gloo`` process group: ``fit --nproc N`` or ``torchrun``.

Every rank holds the whole model and builds every global mini-batch of ``train.batch_size``
segments exactly as one process would (same segments, same lip dropout, from the same seeded
generators), then fits only its rows of it (rows ``rank, rank + N, ...``). So that the result is
the one-process result (up to the order of float sums):

* the noise of the guide's reparameterised draw of ``z`` is drawn for the *whole* global batch
  on every rank (all ranks keep one random stream, seeded by ``train.seed``, as one process
  would) and each rank takes its rows (:class:`GlobalNoise`);
* each rank's loss is its rows' negative ELBO divided by the frames of the *global* batch, and
  the gradients (and the losses, for the log) are summed over the ranks in one ``all_reduce``
  (:func:`sum_gradients`) before clipping and the Adam step, which are then the same everywhere;
* the dev loss is shared out the same way and summed, so the early-stopping decision is the
  same on every rank; rank 0 alone writes the model, the state, the log and the figure.

The gradients are reduced by hand rather than by ``DistributedDataParallel``: Pyro calls the
networks inside the model and the guide (the decoders once per component), which DDP's
one-forward-per-step bookkeeping does not fit; the sum of the flattened gradients is the same
average, in one message per step.
"""

from __future__ import annotations

import pyro.distributions as dist
import torch
from pyro.poutine.messenger import Messenger
from torch.distributions.utils import _standard_normal

from .distributed import Ranks


def current_ranks() -> Ranks:
    """The ranks of the process group this process is in (one process when there is none)."""
    import torch.distributed as torch_dist

    if not torch_dist.is_initialized():
        return Ranks()
    world = torch_dist.get_world_size()
    return Ranks(torch_dist.get_rank(), world, Ranks.from_env().local if world > 1 else 0)


def my_rows(batch: dict, ranks: Ranks) -> dict:
    """This rank's rows of a global batch (every tensor's first axis)."""
    return {k: v[ranks.rank::ranks.world] for k, v in batch.items()}


class _GivenNoiseNormal(dist.Normal):
    def __init__(self, loc, scale, noise):
        super().__init__(loc, scale)
        self.noise = noise

    def rsample(self, sample_shape=torch.Size()):
        return self.loc + self.noise * self.scale


class GlobalNoise(Messenger):
    """The guide's draw of ``z`` with the noise a one-process run would draw for the whole
    global batch of ``rows`` rows, of which this rank has every ``world``-th one."""

    def __init__(self, rows: int, ranks: Ranks):
        super().__init__()
        self.rows, self.ranks = rows, ranks

    def _pyro_sample(self, msg):
        fn = msg["fn"]
        if msg["name"] != "z" or msg["is_observed"] or not isinstance(fn, dist.Independent):
            return
        base = fn.base_dist
        shape = (self.rows,) + tuple(base.batch_shape[1:])
        noise = _standard_normal(shape, dtype=base.loc.dtype, device=base.loc.device)
        noise = noise[self.ranks.rank::self.ranks.world]
        msg["fn"] = _GivenNoiseNormal(base.loc, base.scale, noise).to_event(fn.reinterpreted_batch_ndims)


def sum_gradients(params: list[torch.Tensor], loss: torch.Tensor, ranks: Ranks) -> torch.Tensor:
    """Sum the gradients of ``params`` and ``loss`` over the ranks (in place); returns the summed
    loss (``loss`` itself with one process)."""
    if ranks.world == 1:
        return loss
    import torch.distributed as torch_dist

    grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
    flat = torch.cat([g.reshape(-1) for g in grads] + [loss.detach().reshape(1)]).cpu()
    torch_dist.all_reduce(flat)
    start = 0
    for p, g in zip(params, grads):
        p.grad = flat[start:start + g.numel()].view_as(g).to(p.device)
        start += g.numel()
    return flat[-1].to(loss.device)


def sum_over_ranks(value: float, ranks: Ranks) -> float:
    if ranks.world == 1:
        return value
    import torch.distributed as torch_dist

    t = torch.tensor([value], dtype=torch.float64)
    torch_dist.all_reduce(t)
    return float(t)


def barrier(ranks: Ranks) -> None:
    if ranks.world > 1:
        import torch.distributed as torch_dist

        torch_dist.barrier()


def main_rank_first(work, ranks: Ranks):
    """``work()`` on rank 0, then, once it has returned, on the other ranks (a barrier between):
    for a step that writes a shared cache — preparing a corpus — which the other ranks then only
    read instead of writing the same files at the same time. One process: just ``work()``."""
    result = work() if ranks.main else None
    barrier(ranks)
    return result if ranks.main else work()
