"""A pretend CUDA device on the CPU, to catch device mismatches without a GPU.

Inside :func:`fake_cuda` ``--device cuda`` resolves as on a GPU machine, and every tensor that
would live on the GPU (moved there with ``.to``/``.cuda``, created with ``device=cuda``, or
computed from such a tensor) is an :class:`OnCuda` tensor: a plain CPU tensor that says
``device == cuda``. The arithmetic is the CPU's (so results can be compared with a CPU run), but
the rules are CUDA's, enforced on every torch call (a ``TorchFunctionMode``):

* an operation that mixes a "CUDA" tensor with a CPU tensor of one or more dimensions raises
  (0-dim CPU tensors mix, as on a GPU; a CUDA tensor may be indexed with CPU indices; ``copy_``
  copies across devices);
* ``.numpy()`` (and so ``np.asarray``) of a "CUDA" tensor raises;
* a random draw on "CUDA" with a CPU generator (or the reverse) raises;
* ``torch.load(..., map_location=cuda)`` gives "CUDA" tensors, and ``torch.set_rng_state`` refuses
  one (the CPU generator's state must be a CPU tensor).

What it cannot see: work done outside torch's Python API (none in this project), and speed.
"""

from __future__ import annotations

import contextlib

import torch
from torch.overrides import TorchFunctionMode
from torch.utils._pytree import tree_flatten, tree_map

CUDA, CPU = torch.device("cuda", 0), torch.device("cpu")
MIXING_ALLOWED = {"__getitem__", "_has_compatible_shallow_copy_type", "copy_", "__set__", "__get__"}


class OnCuda(torch.Tensor):
    """A CPU tensor that stands for one on the GPU (the mode below gives it its meaning)."""

    __torch_function__ = torch._C._disabled_torch_function_impl


class FakeGenerator(torch.Generator):
    """``torch.Generator(device=...)``: a CPU generator that remembers the device asked for."""

    def __new__(cls, device="cpu"):
        gen = super().__new__(cls, "cpu")
        gen.claimed = torch.device(device)
        return gen

    def __init__(self, device="cpu"):
        pass


def _cuda(device) -> bool | None:
    """Whether ``device`` (a device, a string or anything else) names CUDA; None: not a device."""
    if isinstance(device, (str, torch.device)):
        try:
            return torch.device(device).type == "cuda"
        except RuntimeError:
            return None
    return None


def _to_target(args, kwargs) -> bool | None:
    """Whether ``tensor.to(...)`` asks for CUDA (True), the CPU (False) or neither (None)."""
    for a in [*args[1:], kwargs.get("device")]:
        if isinstance(a, torch.Tensor):
            return isinstance(a, OnCuda)
        if _cuda(a) is not None:
            return _cuda(a)
    return None


def _plain(t):
    return t.as_subclass(torch.Tensor) if isinstance(t, OnCuda) else t


class FakeCudaMode(TorchFunctionMode):
    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = dict(kwargs or {})
        name = getattr(func, "__name__", "")
        if func == torch.Tensor.device.__get__:
            return CUDA if isinstance(args[0], OnCuda) else CPU
        if func == torch.Tensor.is_cuda.__get__:
            return isinstance(args[0], OnCuda)
        if func in (torch.Tensor.numpy, torch.Tensor.__array__) and isinstance(args[0], OnCuda):
            raise TypeError("can't convert cuda:0 device type tensor to numpy (fake CUDA)")
        if func is torch.Tensor.__reduce_ex__:             # saved like the CPU tensor it is
            return func(_plain(args[0]), *args[1:])
        if func in (torch.Tensor.to, torch.Tensor.cpu, torch.Tensor.cuda):
            return self._move(func, name, args, kwargs)
        tensors = [t for t in tree_flatten((args, kwargs))[0] if isinstance(t, torch.Tensor)]
        on_cuda = any(isinstance(t, OnCuda) for t in tensors)
        if _cuda(kwargs.get("device")):
            kwargs["device"], on_cuda = CPU, True
        gen = kwargs.get("generator")
        if isinstance(gen, FakeGenerator) and (gen.claimed.type == "cuda") != on_cuda:
            raise RuntimeError(f"{name}: a {gen.claimed} generator draws on "
                               f"{'cuda' if on_cuda else 'cpu'} (fake CUDA)")
        if on_cuda and name not in MIXING_ALLOWED:
            cpu = [tuple(t.shape) for t in tensors if not isinstance(t, OnCuda) and t.dim() > 0]
            if cpu:
                raise RuntimeError(f"Expected all tensors to be on the same device: {name} mixes "
                                   f"cuda tensors with cpu tensors of shapes {cpu} (fake CUDA)")
        out = func(*args, **kwargs)
        if not on_cuda:
            return out
        return tree_map(lambda t: t.as_subclass(OnCuda) if isinstance(t, torch.Tensor) and type(t)
                        is not OnCuda and not getattr(t, "_is_param", False) else t, out)

    @staticmethod
    def _move(func, name, args, kwargs):
        source = isinstance(args[0], OnCuda)
        target = {"cpu": False, "cuda": True}.get(name, None)
        if target is None:
            target = _to_target(args, kwargs)
        if name == "to":
            args = tuple(CPU if _cuda(a) is not None else _plain(a) for a in args)
            if "device" in kwargs:
                kwargs["device"] = CPU
            out = func(*args, **kwargs)
        else:
            out = _plain(args[0])
        target = source if target is None else target
        if target != source:
            out = out.clone()                          # a copy to the other device, as on a GPU
        return out.as_subclass(OnCuda) if target else _plain(out)


@contextlib.contextmanager
def fake_cuda(monkeypatch):
    """Run the body with the pretend CUDA device (see the module docstring)."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    for name in ("synchronize", "reset_peak_memory_stats", "set_rng_state", "manual_seed",
                 "manual_seed_all"):
        monkeypatch.setattr(torch.cuda, name, lambda *a, **k: None)
    monkeypatch.setattr(torch.cuda, "max_memory_allocated", lambda *a, **k: 0)
    monkeypatch.setattr(torch.cuda, "get_rng_state", lambda *a, **k: torch.get_rng_state())
    monkeypatch.setattr(torch, "Generator", FakeGenerator)
    monkeypatch.setattr(torch.optim.Optimizer, "_accelerator_graph_capture_health_check",
                        lambda self: None)          # it asks the CUDA runtime about streams
    load, set_rng_state = torch.load, torch.set_rng_state

    def fake_load(*args, map_location=None, **kwargs):
        data = load(*args, map_location="cpu" if _cuda(map_location) else map_location, **kwargs)
        if not _cuda(map_location):
            return data
        return tree_map(lambda t: t.as_subclass(OnCuda) if isinstance(t, torch.Tensor) else t, data)

    def fake_set_rng_state(state):
        if isinstance(state, OnCuda):
            raise TypeError("RNG state must be a torch.ByteTensor (fake CUDA: it is on the GPU)")
        set_rng_state(state)

    monkeypatch.setattr(torch, "load", fake_load)
    monkeypatch.setattr(torch, "set_rng_state", fake_set_rng_state)
    overwrite = torch.__future__.get_overwrite_module_params_on_conversion()
    torch.__future__.set_overwrite_module_params_on_conversion(True)   # parameters become OnCuda
    try:
        with FakeCudaMode():
            yield
    finally:
        torch.__future__.set_overwrite_module_params_on_conversion(overwrite)
