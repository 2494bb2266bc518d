"""The reproducible results run behind ``docs/results.md`` (``pyro-avss results``).

From the real corpora in ``data_root`` (the layout of ``../shared/data``) it

1. prepares GRID (lip features) and LibriSpeech, and trains: the GRID universal audio-visual
   model (learned temporal lip encoder and visual prior ``p(z | v)``), GRID speaker decoders
   (+ the universal one), the GRID switching VAE without labels, three GRID ablation models
   (PCA lips and/or the ``N(0, I)`` prior), the LibriSpeech universal audio-only model and
   LibriSpeech speaker decoders;
2. scores every speaker decoder on every dev speaker, and the unlabelled switch's clusters
   (balanced accuracy and NMI);
3. builds deterministic dev mixtures (:func:`.dev_mixtures.dev_mixtures`): a tuned-on split,
   whose noises and clips every setting was chosen on, and a held-out split (other noises,
   other clips, other seeds), each noise with as many targets; GRID with one, two and three
   talkers and LibriSpeech with one; evaluates every system on them, MCEM included, the
   ablation rows, and MCEM and our SVI at equal iteration counts (in this process, or by a
   pool of worker processes: :mod:`.evaluations`);
4. writes ``docs/results.md`` with the tables, the exact command and the machine, and copies
   the plots next to it.
"""
