"""The deterministic dev mixture sets of the results run: a tuned-on split and a held-out one."""

from __future__ import annotations

from pathlib import Path

from pyro_avss.recipes.results.experiments import BABBLE_HELD, BABBLE_TUNED, TUNED_NOISES


def dev_noises(data_root: Path, folder: Path) -> tuple[list, list]:
    """``(tuned, held)`` noise lists ``(name, path)``: the :data:`TUNED_NOISES` and
    ``babble3`` against the other real noises and ``babble8``; the babbles are written to
    ``folder`` from the LibriSpeech pool speakers (:mod:`~pyro_avss.data.babble`)."""
    from pyro_avss.data.babble import write_babble_noises
    from pyro_avss.data.corpora import scan_corpus
    from pyro_avss.data.selection import read_noises

    noises = read_noises(data_root / "manifests" / "noise.csv")
    libri, _ = scan_corpus(data_root / "librispeech")
    pool = [c for c in libri if "train-clean-100" in Path(c.audio).parts]
    babble_tuned, babble_held = write_babble_noises(pool, [BABBLE_TUNED, BABBLE_HELD], folder)
    tuned = [n for n in noises if n[0] in TUNED_NOISES] + [babble_tuned]
    held = [n for n in noises if n[0] not in TUNED_NOISES] + [babble_held]
    return tuned, held


def dev_mixtures(data_root: Path, noise_folder: Path) -> dict:
    """The deterministic dev mixture sets of the results run.

    Tuned-on split (every setting was chosen on these): the first 10 s1 dev clips and the 7 s4
    dev clips as targets, the tuned noises of :func:`dev_noises`; one talker at −5/0/5 dB (seed
    0), two talkers (the other speaker's dev clip at SIR 0 dB) at 0/5 dB (seed 1), three talkers
    (s1 + s4 + a second s1 clip, SIR 0 dB) at 5 dB (seed 4); LibriSpeech (audio only): the first
    dev utterance of each of the 10 speakers at −5/0/5 dB (seed 5). Held-out split (no choice
    looked at it): the next 10 s1 dev clips and the same s4 targets (GRID has only 7 s4 dev
    clips), the other LibriSpeech dev utterances, the held-out noises, other seeds (3, 2, 6).

    The noise alone held out (``1spk_noise_held``): the tuned-on one-talker targets and draws
    (seed 0) in the held-out noises, so that its gap to the tuned-on split is the noises' alone
    (the held-out split also changes the s1 targets and the draws).

    Two talkers of one speaker (``2spk_same``, ``2spk_same_held``; no choice was made on either):
    an s1 dev clip with another s1 clip of the same targets' list at SIR 0 dB, 0/5 dB SNR, so that
    the speaker models and pitch ranges cannot tell the sources apart and only their lips can;
    tuned-on: the 10 tuned-on s1 targets and the s1 dev clips 21–27 in the tuned-on noises (seed
    7), held-out: the 10 held-out s1 targets and the clips 28–34 in the held-out noises (seed 8),
    17 targets each like the other two-talker sets."""
    from pyro_avss.data.corpora import scan_corpus
    from pyro_avss.data.mixture_builder import build_mixture_specs
    from pyro_avss.data.selection import select_clips

    clips, _ = scan_corpus(data_root / "grid")
    libri, _ = scan_corpus(data_root / "librispeech")
    tuned, held = dev_noises(data_root, noise_folder)
    s1, s4 = select_clips(clips, "dev", ["s1"]), select_clips(clips, "dev", ["s4"])
    pool = select_clips(clips, "dev")
    targets, targets_held = s1[:10] + s4, s1[10:20] + s4
    libri_dev = select_clips(libri, "dev")
    first = {}
    for c in libri_dev:
        first.setdefault(c.speaker, c)
    libri_tuned = list(first.values())
    libri_held = [c for c in libri_dev if first[c.speaker] is not c]
    two = dict(interferers=pool, num_interferers=1, sir_db=0.0, cycle_noises=True)
    same, same_held = s1[:10] + s1[20:27], s1[10:20] + s1[27:34]
    one_voice = dict(num_interferers=1, sir_db=0.0, cycle_noises=True, reuse_speakers=True)
    snrs, cycle = [-5.0, 0.0, 5.0], dict(cycle_noises=True)
    return {
        "1spk": build_mixture_specs(targets, tuned, snrs, seed=0, **cycle),
        "1spk_held": build_mixture_specs(targets_held, held, snrs, seed=3, **cycle),
        "1spk_noise_held": build_mixture_specs(targets, held, snrs, seed=0, **cycle),
        "libri": build_mixture_specs(libri_tuned, tuned, snrs, seed=5, **cycle),
        "libri_held": build_mixture_specs(libri_held, held, snrs, seed=6, **cycle),
        "2spk": build_mixture_specs(targets, tuned, [0.0, 5.0], seed=1, **two),
        "2spk_held": build_mixture_specs(targets_held, held, [0.0, 5.0], seed=2, **two),
        "2spk_same": build_mixture_specs(same, tuned, [0.0, 5.0], seed=7, interferers=same, **one_voice),
        "2spk_same_held": build_mixture_specs(same_held, held, [0.0, 5.0], seed=8, interferers=same_held,
                                              **one_voice),
        "3spk": build_mixture_specs(targets, tuned, [5.0], interferers=pool, num_interferers=2,
                                    sir_db=0.0, seed=4, reuse_speakers=True, **cycle),
    }
