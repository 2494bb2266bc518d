"""The optimiser of test-time SVI and frozen networks while it runs."""

from __future__ import annotations

import contextlib
import math

import torch


class DecayingAdam:
    """Adam whose rate decays geometrically, ``lr_i = lr · lrd^i`` (the first step already at
    ``lr · lrd``): the update of ``pyro.optim.ClippedAdam`` without clipping, operation for
    operation, so separation gives the same numbers.

    Not a ``torch.optim.Optimizer``: constructing one of those imports ``torch._dynamo``
    (``add_param_group`` is wrapped by ``torch._disable_dynamo``, which imports it on its first
    call), about 2 s, more than the 50 SVI steps of a short clip. ``pyro.optim.PyroOptim``
    needs only ``step``, ``state_dict`` and ``load_state_dict`` of it, for one parameter.
    """

    def __init__(self, params, lr: float, lrd: float = 1.0, betas=(0.9, 0.999), eps: float = 1e-8):
        (self.param,) = params
        self.lr, self.lrd, self.betas, self.eps = lr, lrd, betas, eps
        self.state: dict = {}

    @torch.no_grad()
    def step(self, closure=None):
        self.lr *= self.lrd
        p = self.param
        if p.grad is None:
            return None
        grad = p.grad
        if not self.state:
            self.state = {"step": 0, "exp_avg": torch.zeros_like(grad),
                          "exp_avg_sq": torch.zeros_like(grad)}
        beta1, beta2 = self.betas
        exp_avg, exp_avg_sq = self.state["exp_avg"], self.state["exp_avg_sq"]
        self.state["step"] += 1
        exp_avg.mul_(beta1).add_(grad, alpha=1 - beta1)
        exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
        denom = exp_avg_sq.sqrt().add_(self.eps)
        step = self.state["step"]
        step_size = self.lr * math.sqrt(1 - beta2 ** step) / (1 - beta1 ** step)
        p.addcdiv_(exp_avg, denom, value=-step_size)
        return None

    def state_dict(self) -> dict:
        return {"lr": self.lr, "state": dict(self.state)}

    def load_state_dict(self, state: dict) -> None:
        self.lr, self.state = state["lr"], dict(state["state"])


def forget_parameter(optim, unconstrained: torch.Tensor):
    """Drop what the ``pyro.optim.PyroOptim`` ``optim`` keeps for one parameter (its own optimiser
    and gradient clip, keyed by the unconstrained tensor), so that a parameter replaced in the
    param store starts afresh; returns the dropped optimiser (None if it had none yet)."""
    optim.grad_clip.pop(unconstrained, None)
    return optim.optim_objs.pop(unconstrained, None)


@contextlib.contextmanager
def frozen(*modules: torch.nn.Module):
    """Turn off the gradients of ``modules``' weights meanwhile (and restore them after): SVI at
    test time fits only its own parameters, and back-propagating into the networks' weights too
    made every step about 15 % slower."""
    params = [p for m in modules for p in m.parameters()]
    flags = [p.requires_grad for p in params]
    for p in params:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p, flag in zip(params, flags):
            p.requires_grad_(flag)
