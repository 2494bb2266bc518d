"""MediaPipe's face mesh without the rest of MediaPipe.

``from mediapipe.python.solutions import face_mesh`` runs ``mediapipe/__init__.py`` and
``mediapipe/python/solutions/__init__.py`` first, which import every solution, the drawing
utilities (and with them ``matplotlib.pyplot``) and the tasks API (and with it ``sounddevice``):
about 0.45 s, for the 30 ms the face mesh itself needs, and matplotlib on a separation that
asked for no figure. :func:`face_mesh_module` imports the face mesh with those two packages
created but not run yet: each runs its ``__init__`` the first time anything else of it is asked
for (``mediapipe.solutions``, ``mediapipe.__version__``, ...), so ``import mediapipe`` elsewhere
in the process still finds all of MediaPipe.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
import threading
import types

DEFERRED_PACKAGES = ("mediapipe", "mediapipe.python.solutions")
FACE_MESH = "mediapipe.python.solutions.face_mesh"
_LOCK = threading.RLock()          # a package's __init__ may ask for the other one's


class _DeferredPackage(types.ModuleType):
    """A package whose ``__init__`` runs when an attribute it does not have yet is asked for
    (its ``__path__``, ``__spec__`` and imported submodules are there from the start)."""

    def _run_init(self) -> None:
        with _LOCK:
            if type(self) is _DeferredPackage:
                self.__class__ = types.ModuleType      # run once, then an ordinary module
                try:
                    self.__spec__.loader.exec_module(self)
                except BaseException:
                    self.__class__ = _DeferredPackage
                    raise

    def __getattr__(self, name: str):
        self._run_init()
        return object.__getattribute__(self, name)

    def __dir__(self):
        self._run_init()
        return object.__dir__(self)


def _deferred(name: str) -> types.ModuleType:
    spec = importlib.util.find_spec(name)
    if spec is None or spec.submodule_search_locations is None:
        raise ImportError(f"no package {name}")
    module = importlib.util.module_from_spec(spec)      # __init__ not run
    module.__class__ = _DeferredPackage
    return module


def face_mesh_module():
    """``mediapipe.python.solutions.face_mesh``, imported without MediaPipe's other parts when
    MediaPipe is not imported yet (the ordinary import otherwise, or when that way fails);
    :class:`ImportError` (or what MediaPipe raises) when it cannot be imported at all."""
    if FACE_MESH in sys.modules or "mediapipe" in sys.modules:
        return importlib.import_module(FACE_MESH)
    top, solutions = DEFERRED_PACKAGES
    try:
        sys.modules[top] = _deferred(top)
        python = importlib.import_module("mediapipe.python")      # the bindings: needed
        sys.modules[solutions] = python.solutions = _deferred(solutions)
        return importlib.import_module(FACE_MESH)
    except Exception:
        # a MediaPipe laid out otherwise than this expects: run the packages deferred so far
        # (their compiled bindings, once loaded, cannot be loaded again) and import the face
        # mesh the ordinary way (slower start, same detector), so that only a MediaPipe that
        # cannot be imported at all makes `auto` fall back to another detector
        for name in DEFERRED_PACKAGES:
            module = sys.modules.get(name)
            if isinstance(module, _DeferredPackage):
                module._run_init()
        return importlib.import_module(FACE_MESH)
