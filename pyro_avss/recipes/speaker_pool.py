"""A bank of many speakers from the LibriSpeech pool: the corpus, and the mixtures that test it.

The pool (``librispeech/train-clean-100`` of the shared data) holds one utterance of each of 120
speakers. To train a decoder per speaker *and* test on speech of the same speaker that training
never saw, each chosen utterance is cut in time into three contiguous parts, written as FLAC
files of their own (the samples themselves, not re-encoded lossily)::

    | train: the start ... | dev: dev_s seconds | test: the last test_s seconds |

``train`` fits the speaker's decoder, ``dev`` decides when training stops, ``test`` is used
only by the test mixtures. The speakers are the first ``num_speakers`` pool speakers by
numeric id whose utterance lasts at least ``min_seconds`` (default 10 s, so at least 5 s of
training speech each). ``corpus.csv`` (columns ``id, speaker, audio, split``) is a corpus
manifest that ``cli.py fit`` reads like any other (``data.corpora``).

Test mixtures (``cli.py evaluate`` manifests), all at one SNR with the real noise recordings
given to every target in turn (``cycle_noises``):

* ``identify.csv``: each speaker's test part alone in noise — the switch's posterior argmax over
  the bank is the identified speaker (``switch_identified`` in ``results.csv``);
* ``identify_dev.csv``: the same with the dev parts and another draw, to choose settings on
  (the test parts are kept for reporting);
* ``two_talkers.csv``: each test part with another pool speaker's test part at 0 dB SIR;
  ``two_talkers_dev.csv`` the same with the dev parts.

Caveat to quote with any figure: a universal model trained by ``librispeech_universal`` has seen
the whole pool utterances (test parts included); every speaker decoder starts from it, so that
exposure does not favour any one speaker, but the speaker decoders are fitted on the train parts
only.
"""

from __future__ import annotations

import csv
from pathlib import Path

import soundfile as sf

from ..data.clips import Clip
from ..data.corpora import read_manifest, scan_corpus
from ..data.mixture_builder import build_mixture_specs
from ..data.mixture_manifest import write_mixture_manifest
from ..data.selection import read_noises
from ..errors import InputError

POOL = "train-clean-100"
PARTS = ("train", "dev", "test")


def pool_utterances(data_root: Path, num_speakers: int, min_seconds: float) -> list[Clip]:
    """The first ``num_speakers`` pool speakers (numeric id order) with an utterance of at
    least ``min_seconds``, one utterance each (the first by id)."""
    clips, _ = scan_corpus(Path(data_root) / "librispeech" / POOL)
    by_speaker: dict[str, Clip] = {}
    for clip in sorted(clips, key=lambda c: c.id):
        if clip.speaker not in by_speaker and sf.info(str(clip.audio)).duration >= min_seconds:
            by_speaker[clip.speaker] = clip
    speakers = sorted(by_speaker, key=lambda s: (len(s), s))
    if len(speakers) < num_speakers:
        raise InputError(Path(data_root) / "librispeech" / POOL,
                         f"only {len(speakers)} pool speakers have an utterance of at least "
                         f"{min_seconds:g} s; {num_speakers} were asked for")
    return [by_speaker[s] for s in speakers[:num_speakers]]


def part_bounds(num_samples: int, sample_rate: int, dev_s: float, test_s: float) -> dict:
    """Sample ranges ``{part: (start, stop)}`` of the three contiguous parts of an utterance."""
    test = int(round(test_s * sample_rate))
    dev = int(round(dev_s * sample_rate))
    if num_samples - test - dev < sample_rate:
        raise ValueError(f"{num_samples} samples leave under 1 s to train on")
    cut1, cut2 = num_samples - test - dev, num_samples - test
    return {"train": (0, cut1), "dev": (cut1, cut2), "test": (cut2, num_samples)}


def write_pool_corpus(data_root: Path, out: Path, num_speakers: int = 50, min_seconds: float = 10.0,
                      dev_s: float = 2.0, test_s: float = 3.0) -> Path:
    """Cut the chosen pool utterances into their parts under ``out/audio/<speaker>/`` and write
    ``out/corpus.csv``; returns the manifest's path (see the module docstring)."""
    out = Path(out)
    rows = []
    for clip in pool_utterances(data_root, num_speakers, min_seconds):
        audio, rate = sf.read(str(clip.audio), dtype="int16", always_2d=False)
        folder = out / "audio" / clip.speaker
        folder.mkdir(parents=True, exist_ok=True)
        for part, (start, stop) in part_bounds(len(audio), rate, dev_s, test_s).items():
            path = folder / f"{clip.id}_{part}.flac"
            sf.write(str(path), audio[start:stop], rate, subtype="PCM_16")
            rows.append({"id": f"{clip.id}_{part}", "speaker": clip.speaker,
                         "audio": str(path.relative_to(out)), "split": part})
    manifest = out / "corpus.csv"
    with open(manifest, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["id", "speaker", "audio", "split"])
        writer.writeheader()
        writer.writerows(rows)
    return manifest


def write_test_mixtures(corpus: Path, data_root: Path, out: Path, snr_db: float = 5.0,
                        seed: int = 11) -> dict[str, Path]:
    """``identify.csv``, ``identify_dev.csv``, ``two_talkers.csv`` and ``two_talkers_dev.csv``
    from the corpus's test and dev parts and the shared data's noise recordings (module
    docstring); returns their paths by name."""
    clips, problems = read_manifest(corpus)
    if problems:
        raise InputError(corpus, f"unusable row: {problems[0]}")
    tests = [c for c in clips if c.split == "test"]
    devs = [c for c in clips if c.split == "dev"]
    noises = read_noises(Path(data_root) / "manifests" / "noise.csv")
    out = Path(out)
    paths = {"identify": out / "identify.csv", "identify_dev": out / "identify_dev.csv"}
    write_mixture_manifest(build_mixture_specs(tests, noises, snr_db, seed=seed, cycle_noises=True),
                           paths["identify"], overwrite=True)
    write_mixture_manifest(build_mixture_specs(devs, noises, snr_db, seed=seed + 2, cycle_noises=True),
                           paths["identify_dev"], overwrite=True)
    for name, parts, draw in (("two_talkers", tests, seed + 1), ("two_talkers_dev", devs, seed + 3)):
        paths[name] = out / f"{name}.csv"
        write_mixture_manifest(build_mixture_specs(parts, noises, snr_db, num_interferers=1, sir_db=0.0,
                                                   seed=draw, cycle_noises=True), paths[name], overwrite=True)
    return paths

