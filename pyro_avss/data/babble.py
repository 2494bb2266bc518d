"""Babble noise: several talkers at once, built from a pool of other speakers' utterances.

Babble is the noise a speech model confuses most easily with its target, so it belongs in any
held-out noise set. A babble of density ``n`` is the sum of ``n`` talker streams::

    b[t] = Σ_{i=1..n} u_i[t] / rms(u_i)

where stream ``u_i`` concatenates randomly chosen utterances of speakers that no other stream
uses (so two streams never hold the same voice), trimmed to the requested length. Every stream
has unit RMS before the sum, so no talker dominates; the sum is scaled to a peak of 0.5 (the
mixture builder sets the level it needs). The draw depends only on ``seed`` and the order of
``pool``, so the same call writes the same file on every machine.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from ..audio import load_audio, save_audio
from ..errors import InputError
from .clips import Clip


def babble(pool: Sequence[Clip], talkers: int, seconds: float, seed: int = 0,
           sample_rate: int = 16000) -> np.ndarray:
    """``(N,)`` float32 babble of ``talkers`` streams (module docstring) from ``pool``'s clips.

    :raises InputError: when the pool has fewer speakers than ``talkers`` or too little audio.
    """
    speakers = sorted({c.speaker for c in pool})
    if talkers < 1 or len(speakers) < talkers:
        raise InputError("babble", f"needs {talkers} talkers but the pool has {len(speakers)} speakers")
    rng = np.random.default_rng(seed)
    order = [speakers[i] for i in rng.permutation(len(speakers))]
    groups = [order[i::talkers] for i in range(talkers)]        # disjoint speakers per stream
    n = int(round(seconds * sample_rate))
    out = np.zeros(n, np.float64)
    for group in groups:
        clips = [c for c in pool if c.speaker in group]
        stream, have = [], 0
        for k in rng.permutation(len(clips)):
            x = load_audio(clips[k].audio, sample_rate)
            stream.append(x)
            have += len(x)
            if have >= n:
                break
        if have < n:
            raise InputError("babble", f"the pool's speakers {group} hold {have / sample_rate:.1f} s, "
                                       f"{seconds:.1f} s needed per talker")
        u = np.concatenate(stream)[:n].astype(np.float64)
        out += u / max(np.sqrt(np.mean(u ** 2)), 1e-12)
    return (0.5 * out / max(np.abs(out).max(), 1e-12)).astype(np.float32)


def write_babble_noises(pool: Sequence[Clip], densities: Sequence[int], folder: str | Path,
                        seconds: float = 60.0, seed: int = 0,
                        sample_rate: int = 16000) -> list[tuple[str, Path]]:
    """Write ``babble<n>.wav`` for every density ``n`` into ``folder`` (kept if present) and
    return ``(name, path)`` pairs in the form of :func:`~.selection.read_noises`."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for n in densities:
        path = folder / f"babble{n}.wav"
        if not path.exists():
            save_audio(path, babble(pool, n, seconds, seed + n, sample_rate), sample_rate)
        out.append((f"babble{n}", path))
    return out
