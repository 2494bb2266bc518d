"""Deterministic test mixtures: a target utterance, optional competing speakers and a noise excerpt.

A mixture is described by a :class:`MixtureSpec` (one row of a mixture manifest CSV). The spec
holds everything needed to rebuild the mixture **bit for bit**: the source and noise files, the
noise start sample and the exact linear gain applied to every component. Gains are computed once,
at build time (:func:`build_mixture_specs`), and stored with full precision (Python's ``repr`` of
a float round-trips exactly), so rendering (:func:`render_mixture`) needs no level measurement and
gives identical arrays on every machine; :func:`materialise` writes them as 32-bit float WAV files,
which read back equal to the on-the-fly rendering.

Level conventions (all energies are sums of squares over the ``num_samples`` samples of the
components as they are added, i.e. after fitting their length):

* ``snr_db = 10 log10(E[target] / E[noise])``;
* ``sir_db = 10 log10(E[target] / E[interferer_j])`` for every interferer j (one value for all);
* the target keeps its own level (gain 1) unless the peak rule below scales everything down;
* **no clipping, ever**: if the largest absolute sample of the mixture or of any scaled component
  would exceed 0.99, *all* gains are multiplied by the same factor so that it is at most 0.99.
  This is done at build time, so the gains in the manifest already include it, and SNR/SIR are
  unchanged by it.

Length conventions: a mixture has exactly as many samples as its target (``num_samples``).
Interferers are truncated, or zero-padded at the end. The noise is read **circularly** from
``noise_start``: sample ``n`` of the excerpt is noise sample ``(noise_start + n) mod L``. When the
noise file is at least as long as the target, ``noise_start`` is drawn so that the excerpt fits
without wrapping; a noise file shorter than the target is looped.

Rendering arithmetic (float32 throughout the outputs):

* ``component = (x.astype(float64) * gain).astype(float32)`` for each source and for the noise;
* ``mixture = sources.sum(axis=0, dtype=float32) + noise`` (sources added in order 1..J, then the
  noise), so ``mixture == sources.sum(0) + noise`` holds exactly in float32.
"""

from __future__ import annotations

import csv
import hashlib
import math
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from ..audio import load_audio
from ..errors import InputError, first_line
from .clips import Clip

PEAK_LIMIT = 0.99
"""Largest absolute sample value allowed in a mixture and in each of its components."""

_HEAD_COLUMNS = ("id", "split", "condition", "sample_rate", "num_samples", "seed", "snr_db",
                 "sir_db")
_SOURCE_FIELDS = ("id", "audio", "video", "speaker")
_LIPS_FIELDS = ("lips", "lips_donor")     # written only when some source's lips are corrupted
_NOISE_COLUMNS = ("noise_name", "noise_audio", "noise_start", "noise_gain")
_SOURCE_ID = re.compile(r"source(\d+)_id")


# --------------------------------------------------------------------------------------------
# records
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class SourceRef:
    """One speech source of a mixture.

    :param id: clip id.
    :param audio: audio file of the clip.
    :param video: face video of the clip, or None.
    :param speaker: speaker name.
    :param lips: lip corruption applied when its track is read for separation (``missing:0.3``,
        ``noise:0.3``, ``swap:0.3``; :mod:`.lip_corruption`), or ``""``: intact.
    :param lips_donor: for ``swap``: the video of the other clip whose mouth ROIs are used.
    """

    id: str
    audio: Path
    video: Path | None
    speaker: str
    lips: str = ""
    lips_donor: Path | None = None


@dataclass(frozen=True)
class NoiseRef:
    """The noise of a mixture: a file, its name and the first sample of the excerpt."""

    name: str
    audio: Path
    start: int


@dataclass
class MixtureSpec:
    """One mixture, i.e. one row of a mixture manifest.

    :param id: unique mixture id (also the folder name used by :func:`materialise`).
    :param sample_rate: Hz; every file must have this rate.
    :param sources: the speech sources, **target first**.
    :param noise: the noise file and excerpt start.
    :param snr_db: target-to-noise ratio (dB) over the full mixture length; ``inf`` = no noise.
    :param sir_db: target-to-interferer ratio (dB), the same for every interferer; None when the
        mixture has a single source.
    :param gains: linear gains, one per source (in order) followed by the noise gain.
    :param num_samples: length of the mixture (= length of the target), samples.
    :param seed: the seed given to :func:`build_mixture_specs`.
    :param split: the target clip's split, or None.
    :param condition: ``"<J>spk"``, e.g. ``"1spk"`` (enhancement) or ``"2spk"``.
    """

    id: str
    sample_rate: int
    sources: list[SourceRef]
    noise: NoiseRef
    snr_db: float
    sir_db: float | None
    gains: tuple[float, ...]
    num_samples: int
    seed: int
    split: str | None = None
    condition: str = ""

    @property
    def num_sources(self) -> int:
        return len(self.sources)

    @property
    def source_gains(self) -> tuple[float, ...]:
        return tuple(self.gains[:-1])

    @property
    def noise_gain(self) -> float:
        return self.gains[-1]

    @property
    def target(self) -> SourceRef:
        return self.sources[0]


@dataclass
class RenderedMixture:
    """The signals of one mixture, all float32.

    :param spec: the spec it was rendered from.
    :param mixture: ``(N,)`` the mixture.
    :param sources: ``(J, N)`` each scaled source exactly as added (the references for scoring).
    :param noise: ``(N,)`` the scaled noise exactly as added.
    """

    spec: MixtureSpec
    mixture: np.ndarray
    sources: np.ndarray
    noise: np.ndarray


# --------------------------------------------------------------------------------------------
# signal helpers shared by building and rendering (one rule each, so both agree bit for bit)
# --------------------------------------------------------------------------------------------
def _fit_length(x: np.ndarray, n: int) -> np.ndarray:
    """Truncate, or zero-pad at the end, to ``n`` samples."""
    if len(x) >= n:
        return x[:n]
    return np.concatenate([x, np.zeros(n - len(x), dtype=x.dtype)])


def _noise_excerpt(noise: np.ndarray, start: int, n: int) -> np.ndarray:
    """``n`` samples of ``noise`` read circularly from ``start``."""
    return noise[(start + np.arange(n)) % len(noise)]


def _scale(x: np.ndarray, gain: float) -> np.ndarray:
    return (x.astype(np.float64) * gain).astype(np.float32)


def _combine(raw_sources: Sequence[np.ndarray], raw_noise: np.ndarray,
             gains: Sequence[float]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Apply the gains and add; returns ``(mixture (N,), sources (J, N), noise (N,))``."""
    sources = np.stack([_scale(x, g) for x, g in zip(raw_sources, gains[:-1])])
    noise = _scale(raw_noise, gains[-1])
    mixture = sources.sum(axis=0, dtype=np.float32) + noise
    return mixture, sources, noise


def _peak(*arrays: np.ndarray) -> float:
    return max(float(np.max(np.abs(a))) if a.size else 0.0 for a in arrays)


class _AudioCache:
    """Loads each file once per call (noise recordings are long and shared by many mixtures)."""

    def __init__(self, sample_rate: int, store: dict | None = None):
        self.sample_rate = sample_rate
        self.store = {} if store is None else store

    def __call__(self, path: Path) -> np.ndarray:
        key = (str(path), self.sample_rate)
        if key not in self.store:
            self.store[key] = load_audio(path, self.sample_rate)
        return self.store[key]


def stable_hash(text: str) -> int:
    """A 64-bit hash of ``text`` that is the same in every process (unlike ``hash()``)."""
    digest = hashlib.sha256(("pyro_avss-mixture:" + text).encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "little")


def _abs_path(p) -> Path:
    return Path(os.path.abspath(os.fspath(p)))


# --------------------------------------------------------------------------------------------
# building
# --------------------------------------------------------------------------------------------
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
    noise_pool = sorted(((str(n), _abs_path(p)) for n, p in noises), key=lambda item: item[0])
    pool = sorted(targets if interferers is None else interferers,
                  key=lambda c: (str(c.speaker), str(c.id)))
    load = _AudioCache(sample_rate)
    condition = f"{1 + num_interferers}spk"

    specs: list[MixtureSpec] = []
    for index, target in enumerate(targets):
        target_audio = load(_abs_path(target.audio))
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

            raw_sources = [target_audio] + [_fit_length(load(_abs_path(c.audio)), n)
                                            for c in chosen]
            raw_noise = _noise_excerpt(noise_audio, start, n)
            energies = [_energy(x, c.audio) for x, c in zip(raw_sources, [target, *chosen])]
            noise_energy = _energy(raw_noise, noise_path, what="noise excerpt")
            for snr in snrs:
                gains = [1.0] + [math.sqrt(energies[0] / (e * 10.0 ** (sir_db / 10.0)))
                                 for e in energies[1:]]
                gains.append(0.0 if math.isinf(snr) else
                             math.sqrt(energies[0] / (noise_energy * 10.0 ** (snr / 10.0))))
                gains = _limit_peak(raw_sources, raw_noise, gains)
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


def _limit_peak(raw_sources, raw_noise, gains: list[float]) -> list[float]:
    """Scale all gains by one factor so that no rendered sample exceeds :data:`PEAK_LIMIT`."""
    for _ in range(20):
        peak = _peak(*_combine(raw_sources, raw_noise, gains))
        if peak <= PEAK_LIMIT:
            return gains
        # float32 rounding can leave the peak a hair above the limit: aim slightly lower
        factor = PEAK_LIMIT / peak * (1.0 - 1e-7)
        gains = [g * factor for g in gains]
    raise AssertionError("peak limiting did not converge")  # pragma: no cover


def _source_ref(clip: Clip) -> SourceRef:
    video = None if clip.video in (None, "") else _abs_path(clip.video)
    return SourceRef(str(clip.id), _abs_path(clip.audio), video, str(clip.speaker))


# --------------------------------------------------------------------------------------------
# rendering
# --------------------------------------------------------------------------------------------
def render_mixture(spec: MixtureSpec, *, audio_cache: dict | None = None) -> RenderedMixture:
    """Rebuild the signals of ``spec`` exactly (see the module docstring for the arithmetic).

    :param audio_cache: optional dict reused across calls to avoid re-reading long noise files;
        only the noise recording is kept there (speech clips are read again: a cache of them
        would grow with the number of mixtures rendered).
    :raises InputError: a file is missing, has another rate, or the target's length changed.
    """
    load = _AudioCache(spec.sample_rate)                 # this mixture's speech clips only
    target = load(spec.sources[0].audio)
    if len(target) != spec.num_samples:
        raise InputError(spec.sources[0].audio, f"has {len(target)} samples but mixture "
                                                f"{spec.id} expects {spec.num_samples}")
    raw_sources = [target] + [_fit_length(load(s.audio), spec.num_samples)
                              for s in spec.sources[1:]]
    noise_audio = _AudioCache(spec.sample_rate, audio_cache)(spec.noise.audio)
    if spec.noise.start >= len(noise_audio):
        raise InputError(spec.noise.audio, f"noise start {spec.noise.start} is beyond its "
                                           f"{len(noise_audio)} samples (mixture {spec.id})")
    raw_noise = _noise_excerpt(noise_audio, spec.noise.start, spec.num_samples)
    mixture, sources, noise = _combine(raw_sources, raw_noise, spec.gains)
    return RenderedMixture(spec, mixture, sources, noise)


def materialise(specs: Iterable[MixtureSpec], out_dir: str | Path, *,
                overwrite: bool = False) -> list[Path]:
    """Write ``<out_dir>/<id>/{mixture,source1..J,noise}.wav`` for every spec.

    Files are 32-bit float WAV, so reading them back gives exactly the arrays of
    :func:`render_mixture`. Returns the folder of each mixture.

    :raises InputError: an output file exists and ``overwrite`` is False, or an id is not a
        plain folder name.
    """
    import soundfile as sf

    out_dir = Path(out_dir)
    cache: dict = {}
    folders = []
    for spec in specs:
        if spec.id in ("", ".", "..") or "/" in spec.id or "\\" in spec.id:
            raise InputError(spec.id, "mixture id cannot be used as a folder name")
        rendered = render_mixture(spec, audio_cache=cache)
        folder = out_dir / spec.id
        files = {"mixture.wav": rendered.mixture, "noise.wav": rendered.noise}
        files.update({f"source{j + 1}.wav": s for j, s in enumerate(rendered.sources)})
        for name in files:
            if (folder / name).exists() and not overwrite:
                raise InputError(folder / name, "output exists (use overwrite=True to replace it)")
        folder.mkdir(parents=True, exist_ok=True)
        for name, signal in files.items():
            sf.write(str(folder / name), signal, spec.sample_rate, subtype="FLOAT")
        folders.append(folder)
    return folders


# --------------------------------------------------------------------------------------------
# manifest CSV
# --------------------------------------------------------------------------------------------
def manifest_columns(num_sources: int, lips: bool = False) -> list[str]:
    """Columns of a mixture manifest whose widest mixture has ``num_sources`` sources.

    ``id, split, condition, sample_rate, num_samples, seed, snr_db, sir_db``, then per source j
    ``source<j>_id, source<j>_audio, source<j>_video, source<j>_speaker, gain<j>`` (with
    ``lips``, also ``source<j>_lips, source<j>_lips_donor``: the lip corruption of
    :mod:`.lip_corruption`), then ``noise_name, noise_audio, noise_start, noise_gain``. Paths
    are relative to the manifest's folder where possible; gains are written with full float
    precision; ``sir_db`` and the columns of absent sources are empty.
    """
    fields = _SOURCE_FIELDS + (_LIPS_FIELDS if lips else ())
    cols = list(_HEAD_COLUMNS)
    for j in range(1, num_sources + 1):
        cols += [f"source{j}_{f}" for f in fields] + [f"gain{j}"]
    return cols + list(_NOISE_COLUMNS)


def write_mixture_manifest(specs: Sequence[MixtureSpec], path: str | Path, *,
                           overwrite: bool = False) -> Path:
    """Write ``specs`` as a manifest CSV (columns: :func:`manifest_columns`).

    :raises InputError: the file exists and ``overwrite`` is False, or ids are not unique.
    """
    path = Path(path)
    if path.exists() and not overwrite:
        raise InputError(path, "output exists (use overwrite=True to replace it)")
    ids = [s.id for s in specs]
    if len(set(ids)) != len(ids):
        raise InputError(path, "mixture ids are not unique")
    base = _abs_path(path.parent)
    width = max((s.num_sources for s in specs), default=1)
    lips = any(src.lips for s in specs for src in s.sources)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=manifest_columns(width, lips), restval="",
                                extrasaction="ignore")
        writer.writeheader()
        for spec in specs:
            writer.writerow(_spec_to_row(spec, base))
    return path


def _rel(p: Path | None, base: Path) -> str:
    if p is None:
        return ""
    try:
        return Path(os.path.relpath(_abs_path(p), base)).as_posix()
    except ValueError:  # another drive on Windows
        return str(_abs_path(p))


def _spec_to_row(spec: MixtureSpec, base: Path) -> dict:
    row = {"id": spec.id, "split": spec.split or "", "condition": spec.condition,
           "sample_rate": spec.sample_rate, "num_samples": spec.num_samples, "seed": spec.seed,
           "snr_db": repr(float(spec.snr_db)),
           "sir_db": "" if spec.sir_db is None else repr(float(spec.sir_db)),
           "noise_name": spec.noise.name, "noise_audio": _rel(spec.noise.audio, base),
           "noise_start": spec.noise.start, "noise_gain": repr(float(spec.noise_gain))}
    for j, (src, gain) in enumerate(zip(spec.sources, spec.source_gains), start=1):
        row.update({f"source{j}_id": src.id, f"source{j}_audio": _rel(src.audio, base),
                    f"source{j}_video": _rel(src.video, base), f"source{j}_speaker": src.speaker,
                    f"gain{j}": repr(float(gain)), f"source{j}_lips": src.lips,
                    f"source{j}_lips_donor": _rel(src.lips_donor, base)})
    return row


def read_mixture_manifest(path: str | Path) -> list[MixtureSpec]:
    """Read a manifest written by :func:`write_mixture_manifest`.

    Relative paths are taken relative to the manifest's folder.

    :raises InputError: missing file or columns, or a bad row; the message names the file and
        the row (spreadsheet numbering: the header is row 1).
    """
    path = Path(path)
    if not path.exists():
        raise InputError(path, "file not found")
    base = _abs_path(path.parent)
    specs = []
    with open(path, newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        header = reader.fieldnames or []
        missing = [c for c in manifest_columns(1) if c not in header]
        if missing:
            raise InputError(path, "not a mixture manifest: missing column(s) "
                                   + ", ".join(missing))
        seen: set[str] = set()
        for row in reader:
            where = f"{path} row {reader.line_num}"
            try:
                spec = _row_to_spec(row, base)
            except (ValueError, TypeError, KeyError) as exc:
                raise InputError(where, first_line(exc)) from None
            if spec.id in seen:
                raise InputError(where, f"duplicate mixture id {spec.id!r}")
            seen.add(spec.id)
            specs.append(spec)
    return specs


def _field(row: dict, key: str) -> str:
    value = row.get(key)
    return "" if value is None else value.strip()


def _number(row: dict, key: str, *, integer: bool = False, allow_inf: bool = False):
    text = _field(row, key)
    if not text:
        raise ValueError(f"{key} is empty")
    try:
        value = int(text) if integer else float(text)
    except ValueError:
        kind = "an integer" if integer else "a number"
        raise ValueError(f"{key} is not {kind}: {text!r}") from None
    if not integer and (math.isnan(value) or (math.isinf(value) and not allow_inf)):
        raise ValueError(f"{key} must be finite, got {text!r}")
    return value


def _path(row: dict, key: str, base: Path, *, required: bool = True) -> Path | None:
    text = _field(row, key)
    if not text:
        if required:
            raise ValueError(f"{key} is empty")
        return None
    return Path(os.path.normpath(base / text))


def _lips(row: dict, j: int, base: Path) -> tuple[str, Path | None]:
    """``(lips, lips_donor)`` of source ``j`` (``""``, None where the columns are absent),
    checked: a known corruption on a source with a video, a donor exactly for ``swap``."""
    from .lip_corruption import LipCorruption

    corruption = LipCorruption.parse(_field(row, f"source{j}_lips"))
    donor = _path(row, f"source{j}_lips_donor", base, required=False)
    if corruption is not None and not _field(row, f"source{j}_video"):
        raise ValueError(f"source{j}_lips is set but source{j}_video is empty")
    if (corruption is not None and corruption.kind == "swap") != (donor is not None):
        raise ValueError(f"source{j}_lips_donor must be given exactly when source{j}_lips is swap")
    return ("" if corruption is None else str(corruption)), donor


def _row_to_spec(row: dict, base: Path) -> MixtureSpec:
    if None in row:  # csv puts surplus cells under the key None
        raise ValueError("row has more cells than the header")
    mix_id = _field(row, "id")
    if not mix_id:
        raise ValueError("id is empty")
    sources, gains = [], []
    j = 1
    while f"source{j}_id" in row and _field(row, f"source{j}_id"):
        speaker = _field(row, f"source{j}_speaker")
        sources.append(SourceRef(_field(row, f"source{j}_id"), _path(row, f"source{j}_audio", base),
                                 _path(row, f"source{j}_video", base, required=False), speaker,
                                 *_lips(row, j, base)))
        gains.append(_number(row, f"gain{j}"))
        j += 1
    if not sources:
        raise ValueError("source1_id is empty")
    later = [k for k in row if k and (m := _SOURCE_ID.fullmatch(k)) and int(m.group(1)) > j
             and _field(row, k)]
    if later:
        raise ValueError(f"{later[0]} is set but source{j}_id is empty")
    noise_gain = _number(row, "noise_gain")
    if any(g <= 0 for g in gains) or noise_gain < 0:
        raise ValueError("gains must be positive (noise_gain may be 0)")
    num_samples = _number(row, "num_samples", integer=True)
    sample_rate = _number(row, "sample_rate", integer=True)
    start = _number(row, "noise_start", integer=True)
    seed = _number(row, "seed", integer=True)
    if num_samples <= 0 or sample_rate <= 0 or start < 0 or seed < 0:
        raise ValueError("num_samples and sample_rate must be positive, noise_start and seed >= 0")
    snr = _number(row, "snr_db", allow_inf=True)
    if snr == -math.inf:
        raise ValueError("snr_db cannot be -inf")
    sir = None
    if len(sources) > 1 or _field(row, "sir_db"):
        sir = _number(row, "sir_db")
    noise_name = _field(row, "noise_name")
    if not noise_name:
        raise ValueError("noise_name is empty")
    return MixtureSpec(
        id=mix_id, sample_rate=sample_rate, sources=sources,
        noise=NoiseRef(noise_name, _path(row, "noise_audio", base), start),
        snr_db=snr, sir_db=sir, gains=tuple(gains + [noise_gain]), num_samples=num_samples,
        seed=seed, split=_field(row, "split") or None, condition=_field(row, "condition"))


__all__ = ["PEAK_LIMIT", "SourceRef", "NoiseRef", "MixtureSpec", "RenderedMixture",
           "build_mixture_specs", "render_mixture", "materialise", "manifest_columns",
           "write_mixture_manifest", "read_mixture_manifest"]
