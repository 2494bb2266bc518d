"""The built-in demo (``pyro-avss demo``): the whole pipeline on a synthetic audio-visual corpus.

* :mod:`.run` — the steps, each the code path of the command it stands for;
* :mod:`.corpus` — the synthetic corpus on disk (layout, manifest, noises);
* :mod:`.speakers`, :mod:`.speech`, :mod:`.mouth_video`, :mod:`.noises` — what the corpus is made
  of: speaker profiles, source-filter speech, rendered mouth videos, synthetic noises.
"""
