"""Recipes: the pipelines that *use* the library, kept apart from it (as Asteroid keeps
``asteroid/`` apart from its recipes).

* :mod:`pyro_avss.recipes.demo` — ``pyro-avss demo``: a synthetic audio-visual corpus and the
  whole pipeline on it (prepare, fit, mix, separate, evaluate);
* :mod:`pyro_avss.recipes.bench` — ``pyro-avss bench``: speed and memory of separation versus
  length, components, sources and batch size;
* :mod:`pyro_avss.recipes.results` — ``pyro-avss results``: every model, mixture set and
  evaluation behind ``docs/results.md``, and the document itself;
* :mod:`pyro_avss.recipes.cli` — those three commands of the ``pyro-avss`` command line.

Recipes import the library (absolute imports, ``pyro_avss.…``); nothing in the library imports
a recipe (``tests/test_layout.py`` checks it), so ``import pyro_avss`` and the library's own
commands never load them.
"""
