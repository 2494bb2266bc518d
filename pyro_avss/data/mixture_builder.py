"""Drawing test mixtures: targets, interfering speakers, noise excerpts and the gains that set
their levels (the conventions: :mod:`.mixtures`)."""

from __future__ import annotations

import math
from typing import Iterable, Sequence
from pathlib import Path

import numpy as np

from ..errors import InputError
from .clips import Clip
from .mixtures import (AudioCache, MixtureSpec, NoiseRef, SourceRef, abs_path, fit_length, limit_peak,
                       noise_excerpt, stable_hash)


def build_mixture_specs(targets: Sequence[Clip], noises: Sequence[tuple[str, str | Path]],
                        snrs_db: float | Iterable[float], *,
                        interferers: Sequence[Clip] | None = None, num_interferers: int = 0,
                        sir_db: float = 0.0, per_target: int = 1, seed: int = 0,
                        sample_rate: int = 16000, reuse_speakers: bool = False,
                        cycle_noises: bool = False) -> list[MixtureSpec]:
    """Draw mixtures deterministically and compute their gains.

    For every target and every ``k < per_target`` a random generator is seeded with
    ``(seed, sha256-hash(target.id), k)``; it draws, in this order, the noise recording
    (uniformly among ``noises``, taken in name order), the excerpt start (uniform; see the module
    docstring) and, when ``num_interferers > 0``, that many distinct interfering speakers
    (uniformly among the speakers of ``interferers`` other than the target's speaker, taken in
    name order) and one clip of each (uniformly, in id order). That draw is then mixed at every
    SNR of ``snrs_db``, so conditions are paired: the same excerpt and interferers at each SNR.
    The result therefore does not depend on the order of ``noises`` or ``interferers``, nor on
    which other targets are in the list.

    :param targets: target clips; their audio sets the mixture length.
    :param noises: ``(name, path)`` of each noise recording; names must be unique.
    :param snrs_db: one SNR or several (dB); ``inf`` gives a noise gain of 0.
    :param interferers: pool of competing clips (default: ``targets``).
    :param num_interferers: competing speakers per mixture (0 = enhancement).
    :param sir_db: target-to-interferer ratio (dB), for every interferer.
    :param per_target: independent draws per target.
    :param seed: non-negative integer.
    :param sample_rate: Hz; files with another rate are refused.
    :param cycle_noises: give target ``i`` (in the order of ``targets``) the noise ``i mod N``
        (name order) instead of a random one, so that every noise gets as many mixtures; the
        random draw is still made, so the other draws do not change.
    :param reuse_speakers: when there are fewer other speakers than ``num_interferers``, fill
        the remaining interferers with further clips (never the target clip, never one clip
        twice) of any speaker, the target's included; e.g. three talkers from two speakers.
    :returns: ``len(targets) * per_target * len(snrs_db)`` specs, target-major, then k, then SNR.
    :raises InputError: unreadable or silent audio, duplicate ids or noise names, too few
        interfering speakers, bad arguments.
    """
    single = isinstance(snrs_db, (int, float, np.number))
    snrs = [float(snrs_db)] if single else [float(s) for s in snrs_db]
    _check_build_args(targets, noises, snrs, num_interferers, sir_db, per_target, seed)
    noise_pool = sorted(((str(n), abs_path(p)) for n, p in noises), key=lambda item: item[0])
    pool = sorted(targets if interferers is None else interferers,
                  key=lambda c: (str(c.speaker), str(c.id)))
    load = AudioCache(sample_rate)
    condition = f"{1 + num_interferers}spk"

    specs: list[MixtureSpec] = []
    for index, target in enumerate(targets):
        target_audio = load(abs_path(target.audio))
        n = len(target_audio)
        for k in range(per_target):
            rng = np.random.default_rng([seed, stable_hash(str(target.id)), k])
            drawn = int(rng.integers(len(noise_pool)))
            noise_name, noise_path = noise_pool[(index * per_target + k) % len(noise_pool)
                                                if cycle_noises else drawn]
            noise_audio = load(noise_path)
            span = len(noise_audio) - n + 1 if len(noise_audio) >= n else len(noise_audio)
            start = int(rng.integers(span))
            chosen = _draw_interferers(rng, pool, target, num_interferers, reuse_speakers)

            raw_sources = [target_audio] + [fit_length(load(abs_path(c.audio)), n)
                                            for c in chosen]
            raw_noise = noise_excerpt(noise_audio, start, n)
            energies = [_energy(x, c.audio) for x, c in zip(raw_sources, [target, *chosen])]
            noise_energy = _energy(raw_noise, noise_path, what="noise excerpt")
            for snr in snrs:
                gains = [1.0] + [math.sqrt(energies[0] / (e * 10.0 ** (sir_db / 10.0)))
                                 for e in energies[1:]]
                gains.append(0.0 if math.isinf(snr) else
                             math.sqrt(energies[0] / (noise_energy * 10.0 ** (snr / 10.0))))
                gains = limit_peak(raw_sources, raw_noise, gains)
                specs.append(MixtureSpec(
                    id=f"{target.id}_{condition}_{k}_snr{snr:g}",
                    sample_rate=sample_rate,
                    sources=[_source_ref(c) for c in (target, *chosen)],
                    noise=NoiseRef(noise_name, noise_path, start),
                    snr_db=snr, sir_db=float(sir_db) if chosen else None,
                    gains=tuple(gains), num_samples=n, seed=seed,
                    split=target.split, condition=condition))
    return specs


def _check_build_args(targets, noises, snrs, num_interferers, sir_db, per_target, seed) -> None:
    where = "build_mixture_specs"
    if not targets:
        raise InputError(where, "no target clips given")
    if not noises:
        raise InputError(where, "no noise recordings given")
    if not snrs or any(math.isnan(s) or s == -math.inf for s in snrs):
        raise InputError(where, f"SNRs must be numbers or +inf, got {snrs}")
    if not math.isfinite(float(sir_db)):
        raise InputError(where, f"sir_db must be finite, got {sir_db}")
    if num_interferers < 0 or per_target < 1 or seed < 0:
        raise InputError(where, "num_interferers >= 0, per_target >= 1 and seed >= 0 are required")
    ids = [str(t.id) for t in targets]
    if len(set(ids)) != len(ids):
        dup = sorted({i for i in ids if ids.count(i) > 1})[0]
        raise InputError(where, f"target clip id {dup!r} occurs more than once")
    names = [str(name) for name, _ in noises]
    if len(set(names)) != len(names):
        raise InputError(where, f"noise names must be unique, got {names}")


def _draw_interferers(rng: np.random.Generator, pool: Sequence[Clip], target: Clip,
                      count: int, reuse_speakers: bool = False) -> list[Clip]:
    if count == 0:
        return []
    by_speaker: dict[str, list[Clip]] = {}
    for clip in pool:
        if str(clip.speaker) != str(target.speaker):
            by_speaker.setdefault(str(clip.speaker), []).append(clip)
    speakers = sorted(by_speaker)
    if len(speakers) < count and not reuse_speakers:
        raise InputError(target.id, f"needs {count} interfering speaker(s) other than "
                                    f"{target.speaker!r}, the pool has {len(speakers)}")
    picked = rng.choice(len(speakers), size=min(count, len(speakers)), replace=False)
    chosen = []
    for idx in picked:
        clips = by_speaker[speakers[int(idx)]]
        chosen.append(clips[int(rng.integers(len(clips)))])
    taken = {str(target.id)} | {str(c.id) for c in chosen}
    rest = [c for c in pool if str(c.id) not in taken]
    while len(chosen) < count:
        if not rest:
            raise InputError(target.id, f"needs {count} interfering clips, the pool has fewer")
        chosen.append(rest.pop(int(rng.integers(len(rest)))))
    return chosen


def _energy(x: np.ndarray, path, what: str = "audio") -> float:
    e = float(np.sum(np.square(x, dtype=np.float64)))
    if not e > 0.0:
        raise InputError(path, f"{what} is silent: cannot set a level ratio against it")
    return e


def _source_ref(clip: Clip) -> SourceRef:
    video = None if clip.video in (None, "") else abs_path(clip.video)
    return SourceRef(str(clip.id), abs_path(clip.audio), video, str(clip.speaker))


__all__ = ["build_mixture_specs"]
