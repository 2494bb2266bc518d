"""pyro_avss: unsupervised audio-visual speech separation with switching VAEs in Pyro.

The pieces, from the bottom up:

* :mod:`pyro_avss.audio` — audio I/O and the STFT (spectrograms are ``(..., T, F)``);
* :mod:`pyro_avss.video` — video decoding, lip landmarks, mouth ROIs, alignment to STFT frames;
* :mod:`pyro_avss.data` — corpora readers, ``prepare``, mixtures, the synthetic demo corpus;
* :mod:`pyro_avss.nets` — the encoder, the K-component decoder bank and the lip projection;
* :mod:`pyro_avss.models` — **the generative model in Pyro** (start with
  :mod:`pyro_avss.models.generative`), its likelihood, switch priors and noise models;
* :mod:`pyro_avss.inference` — training by SVI, separation by SVI with the switch enumerated,
  posteriors and Wiener filtering, and the MCEM reference algorithm;
* :mod:`pyro_avss.evaluation` — metrics, baselines, the evaluation harness and benchmarks;
* :mod:`pyro_avss.checkpoint` and :mod:`pyro_avss.config` — model files and configurations.

Command line: ``python cli.py --help``.
"""

__version__ = "0.1.0"
