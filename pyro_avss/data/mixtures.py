"""Deterministic test mixtures: a target utterance, optional competing speakers and a noise excerpt.

A mixture is described by a :class:`MixtureSpec` (one row of a mixture manifest CSV,
:mod:`.mixture_manifest`). The spec holds everything needed to rebuild the mixture **bit for
bit**: the source and noise files, the noise start sample and the exact linear gain applied to
every component. Gains are computed once, at build time
(:func:`~.mixture_builder.build_mixture_specs`), and stored with full precision (Python's
``repr`` of a float round-trips exactly), so rendering (:func:`render_mixture`) needs no level
measurement and gives identical arrays on every machine; :func:`materialise` writes them as
32-bit float WAV files, which read back equal to the on-the-fly rendering. The signal rules
below are written once here, so that building and rendering agree bit for bit.

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

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from ..audio import load_audio
from ..errors import InputError

PEAK_LIMIT = 0.99
"""Largest absolute sample value allowed in a mixture and in each of its components."""


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
    :param seed: the seed given to :func:`~.mixture_builder.build_mixture_specs`.
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
def fit_length(x: np.ndarray, n: int) -> np.ndarray:
    """Truncate, or zero-pad at the end, to ``n`` samples."""
    if len(x) >= n:
        return x[:n]
    return np.concatenate([x, np.zeros(n - len(x), dtype=x.dtype)])


def noise_excerpt(noise: np.ndarray, start: int, n: int) -> np.ndarray:
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


class AudioCache:
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


def abs_path(p) -> Path:
    """``p`` as an absolute, normalised path (links are not resolved)."""
    return Path(os.path.abspath(os.fspath(p)))


def limit_peak(raw_sources, raw_noise, gains: list[float]) -> list[float]:
    """Scale all gains by one factor so that no rendered sample exceeds :data:`PEAK_LIMIT`."""
    for _ in range(20):
        peak = _peak(*_combine(raw_sources, raw_noise, gains))
        if peak <= PEAK_LIMIT:
            return gains
        # float32 rounding can leave the peak a hair above the limit: aim slightly lower
        factor = PEAK_LIMIT / peak * (1.0 - 1e-7)
        gains = [g * factor for g in gains]
    raise AssertionError("peak limiting did not converge")  # pragma: no cover


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
    load = AudioCache(spec.sample_rate)                  # this mixture's speech clips only
    target = load(spec.sources[0].audio)
    if len(target) != spec.num_samples:
        raise InputError(spec.sources[0].audio, f"has {len(target)} samples but mixture "
                                                f"{spec.id} expects {spec.num_samples}")
    raw_sources = [target] + [fit_length(load(s.audio), spec.num_samples)
                              for s in spec.sources[1:]]
    noise_audio = AudioCache(spec.sample_rate, audio_cache)(spec.noise.audio)
    if spec.noise.start >= len(noise_audio):
        raise InputError(spec.noise.audio, f"noise start {spec.noise.start} is beyond its "
                                           f"{len(noise_audio)} samples (mixture {spec.id})")
    raw_noise = noise_excerpt(noise_audio, spec.noise.start, spec.num_samples)
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


__all__ = ["PEAK_LIMIT", "SourceRef", "NoiseRef", "MixtureSpec", "RenderedMixture", "render_mixture",
           "materialise", "stable_hash"]
