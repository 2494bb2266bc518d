"""pyro_avss: unsupervised audio-visual speech separation with switching VAEs in Pyro.

The one-call entry points (:mod:`pyro_avss.api`, imported on first use)::

    sep = pyro_avss.Separator.load("model.pt", steps=100)      # load a model file once
    result = sep.separate("mix.wav", videos=["alice.mp4"])     # -> SeparationResult
    result.save("separated/")                                  # the files the command writes
    pyro_avss.fit("grid_universal", "runs/grid_universal")      # train as `pyro-avss fit` does

The pieces, from the bottom up:

* :mod:`pyro_avss.audio` — audio I/O and the STFT (spectrograms are ``(..., T, F)``);
* :mod:`pyro_avss.video` — video decoding, lip landmarks, mouth ROIs, alignment to STFT frames;
* :mod:`pyro_avss.data` — corpora readers, ``prepare``, mixtures, lip corruption, babble noise;
* :mod:`pyro_avss.nets` — the encoder, the K-component decoder bank and the lip projection;
* :mod:`pyro_avss.models` — **the generative model in Pyro** (start with
  :mod:`pyro_avss.models.generative`), its likelihood, switch priors and noise models;
* :mod:`pyro_avss.inference` — training by SVI, separation by SVI with the switch enumerated,
  posteriors and Wiener filtering, and the MCEM reference algorithm;
* :mod:`pyro_avss.evaluation` — metrics, baselines and enhancers, the evaluation harness and
  its reports;
* :mod:`pyro_avss.settings` — the typed settings, one dataclass per config section (every key,
  its default, range and meaning), read from YAML files and ``--set`` by :mod:`pyro_avss.config`;
* :mod:`pyro_avss.checkpoint` — model files.

Apart from the library, :mod:`pyro_avss.recipes` holds the pipelines that use it: the built-in
demo, the benchmark and the results run behind ``docs/results.md``. The library never imports
them.

Command line: ``pyro-avss --help`` (installed), ``python -m pyro_avss`` or, in a source
checkout, ``python cli.py --help``.
"""

__version__ = "0.1.0"

# PEP 562: `import pyro_avss` stays cheap (no torch, no Pyro) until one of these is used
_API = ("Separator", "SeparationResult", "add_pitch_ranges", "fit")
__all__ = list(_API)


def __getattr__(name: str):
    if name not in _API:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    from . import api

    value = getattr(api, name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(list(globals()) + __all__)
