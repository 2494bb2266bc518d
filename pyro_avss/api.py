"""The one-call entry points: separate recordings with a model file, train a model.

::

    import pyro_avss

    sep = pyro_avss.Separator.load("runs/grid_speakers/model.pt", steps=100)
    result = sep.separate("mix.wav", videos=["alice.mp4", "bob.mp4"])
    result.sources[0]                  # source 1, float32 at result.sample_rate
    result.posteriors[0]               # (T, K) switch posterior of source 1 over STFT frames
    result.save("separated/")          # the files `pyro-avss separate` writes

    models = pyro_avss.fit("grid_universal", "runs/grid_universal")

These are the pieces ``pyro-avss separate`` and ``pyro-avss fit`` are made of: the same
settings (``separate.*`` keys, checked with the same one-line errors as ``--set``), the same
reading of inputs (sample-rate mismatches refused unless ``resample=True``), the same output
files. A :class:`Separator` loads its model once; :meth:`Separator.separate_many` separates a
list of recordings in batches of ``separate.batch_size``.

Errors are raised, not reported: a bad input raises :class:`~pyro_avss.errors.InputError` (one
line naming it) before any separation starts. For batches that must go on past bad files and
write each result to disk as soon as it is done, use the command (or
:func:`pyro_avss.inference.run_separate.run_jobs`, which it calls).
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np
import torch

from .audio import conform_audio, load_audio
from .checkpoint import SpeechModels
from .config import apply_overrides, default_config, load_config, load_settings
from .errors import ConfigError, InputError, writable_folder
from .inference.separation_jobs import _SharedDetector, load_track, model_notices
from .inference.separation_outputs import _existing_outputs, write_atomically, write_outputs
from .inference.separation import Separated, SeparationSettings, separate_recordings
from .models.switch import identified_components

MAX_SOURCES = 3


# ---------------------------------------------------------------------------------------------
# settings
# ---------------------------------------------------------------------------------------------
def separation_settings(overrides: Mapping | Iterable[str] | None = None, *, strict: bool = True,
                        source: str = "Separator.load", **settings: Any) -> SeparationSettings:
    """Separation settings: the ``separate`` defaults changed by ``overrides`` and ``settings``.

    :param overrides: ``"separate.steps=100"`` strings, read exactly as ``--set`` reads them, or
        a mapping ``{"separate.steps": 100}`` (the ``separate.`` prefix may be left out).
    :param settings: ``steps=100``, ...: ``separate.*`` keys by their short name.
    :param strict: refuse keys outside ``separate`` (they would change nothing); the command
        line passes False, as ``separate --set`` has always accepted any known key.
    :raises ConfigError: an unknown key or a value of the wrong type (as ``--set`` would say).
    :raises SettingError: a value out of range (a :class:`ConfigError` and an
        :class:`InputError`), naming its ``separate.*`` key.
    """
    if isinstance(overrides, str):
        overrides = [overrides]
    mapping = dict(overrides) if isinstance(overrides, Mapping) else {}
    strings = [] if overrides is None or isinstance(overrides, Mapping) else list(overrides)
    mapping.update(settings)
    dotted = {(k if "." in k else f"separate.{k}"): v for k, v in mapping.items()}
    if strict:
        for key in [s.partition("=")[0].strip() for s in strings] + list(dotted):
            if not key.startswith("separate."):
                raise ConfigError(f"{source}: {key!r} is not a separation setting (only "
                                  "separate.* keys apply)")
    cfg = default_config()
    apply_overrides(cfg, strings)
    return load_settings(cfg, dotted, source=source).separate


# ---------------------------------------------------------------------------------------------
# results
# ---------------------------------------------------------------------------------------------
@dataclass(eq=False)              # arrays have no single truth value: compared by identity
class SeparationResult:
    """One separated recording.

    :param sources: one ``float32`` waveform ``(N,)`` per source, in the order of the videos.
    :param noise: the noise estimate ``(N,)``; ``sum(sources) + noise`` is the mixture (the
        Wiener masks sum to one).
    :param sample_rate: of the waveforms (the model's rate).
    :param posteriors: ``(J, T, K)``: ``posteriors[j, t, k]`` is the probability that source j
        is component ``components[k]`` at STFT frame t (times in ``frame_times``).
    :param components: the model's component (speaker) names.
    :param frame_times: centre time (s) of each STFT frame ``(T,)``.
    :param mixture: the mixture as separated (mono, at ``sample_rate``).
    :param models: the model that separated it (for :meth:`save`).
    :param notices: what degraded the result without failing it (a video without a face, ...).
    :param steps: SVI steps taken (the largest over the recording's chunks).
    :param switch_stay: ``(J,)`` the stay probability per frame that SVI fitted for each source
        (``learn_stay=True`` with the Markov switch), else None.
    """

    sources: list[np.ndarray]
    noise: np.ndarray
    sample_rate: int
    posteriors: np.ndarray
    components: list[str]
    frame_times: np.ndarray
    mixture: np.ndarray = field(repr=False)
    models: SpeechModels = field(repr=False, compare=False)
    notices: list[str] = field(default_factory=list)
    steps: int = 0
    switch_stay: np.ndarray | None = None

    @property
    def best_components(self) -> list[str]:
        """Per source, the component that best explains the whole recording,
        ``argmax_k Σ_t log posteriors[j, t, k]``
        (:func:`~pyro_avss.models.switch_prior.identified_components`, the rule the evaluation's
        ``switch_identified`` scores): with a per-frame switch a better decision than the
        component that wins most frames."""
        return [self.components[int(k)] for k in identified_components(self.posteriors)]

    def save(self, directory: str | Path, figure: bool = False, overwrite: bool = False) -> Path:
        """Write ``source1.wav … sourceJ.wav``, ``noise.wav``, ``switch_posterior.csv``, with
        ``figure=True`` ``separation.png``, and ``notices.txt`` if there are notices: the files
        ``pyro-avss separate`` writes for one mixture, all at once. Existing outputs in
        ``directory`` are an error unless ``overwrite``. Returns ``directory``."""
        target = Path(directory)
        if _existing_outputs(target, own_folder=False) and not overwrite:
            raise InputError(target, "outputs exist (pass overwrite=True to replace them)")
        separated = Separated(np.stack(self.sources), self.noise,
                              np.ascontiguousarray(self.posteriors.transpose(1, 0, 2)), self.steps,
                              self.switch_stay)
        scaled = write_atomically(target, False, lambda folder: write_outputs(
            folder, separated, self.mixture, self.models, plot=figure, notices=self.notices))
        for note in scaled:
            warnings.warn(f"{target}{os.sep}{note}", stacklevel=2)
        return target


# ---------------------------------------------------------------------------------------------
# the separator
# ---------------------------------------------------------------------------------------------
class Separator:
    """A model and separation settings, ready to separate any number of recordings.

    :param models: fitted models (``SpeechModels.load(path)``, or what :func:`fit` returns).
    :param settings: separation settings (default: the ``separate`` defaults).
    :param device: ``auto`` (CUDA when available), ``cpu``, ``cuda``, ``cuda:N`` or a
        ``torch.device``.
    :param detector: the lip detector for videos (default: the one the model was trained with).
    """

    def __init__(self, models: SpeechModels, settings: SeparationSettings | None = None,
                 device: str | torch.device = "auto", detector: str | None = None):
        from .inference.distributed import resolve_device

        self.models = models
        self.settings = (settings if settings is not None else separation_settings()).check_model(models)
        self.device = resolve_device(str(device))
        self.detector = detector or models.config.get("data", {}).get("detector", "auto")

    @classmethod
    def load(cls, path: str | Path, device: str | torch.device = "auto",
             overrides: Mapping | Iterable[str] | None = None, *, detector: str | None = None,
             **settings: Any) -> "Separator":
        """Load the model file ``path`` (once) with separation settings changed by ``overrides``
        (``--set``-style strings or a mapping of ``separate.*`` keys) and ``settings``
        (``steps=100``, ``switch_prior="iid"``, ...); see :func:`separation_settings`."""
        models = SpeechModels.load(path)
        return cls(models, separation_settings(overrides, **settings), device, detector)

    @property
    def sample_rate(self) -> int:
        return self.models.stft.sample_rate

    @property
    def components(self) -> list[str]:
        return self.models.component_names

    def separate(self, mixture, videos: Sequence | None = None, sources: int | None = None, *,
                 sample_rate: int | None = None, resample: bool = False) -> SeparationResult:
        """Separate one recording.

        :param mixture: an audio file (wav, flac, ogg; channels are averaged) or a 1-D float
            array of samples in [-1, 1], at ``sample_rate``.
        :param videos: one entry per source, in order: a video file, a prepared lip cache
            ``.npz``, an already extracted lip track (a
            :class:`~pyro_avss.video.track.LipTrack`) or None (that source has no video).
            With an audio-only model videos only set the number of sources (a notice says so).
        :param sources: the number of sources J without videos (default 1); 1 to 3.
        :param sample_rate: the rate of an array ``mixture`` (required for arrays; a file's own
            rate is read from it).
        :param resample: convert a mixture at another rate than the model's instead of refusing.
        """
        return self.separate_many([mixture], None if videos is None else [videos], sources,
                                  sample_rate=sample_rate, resample=resample)[0]

    def separate_many(self, mixtures: Sequence, videos: Sequence | None = None,
                      sources: int | Sequence[int] | None = None, *, sample_rate: int | None = None,
                      resample: bool = False, progress=None) -> list[SeparationResult]:
        """Separate many recordings with one model load, ``separate.batch_size`` chunks at a time
        (recordings with the same number of sources are batched together).

        ``mixtures``: files or arrays as for :meth:`separate`; ``videos``: None or one list per
        mixture (None entries for mixtures without video); ``sources``: one J for all or one per
        mixture; ``sample_rate``: the rate of every array (files: their own). Every input is
        read (and checked) before separation starts. ``progress(n)`` is called after each batch
        of chunks."""
        if isinstance(mixtures, (str, os.PathLike)) or (isinstance(mixtures, np.ndarray)
                                                        and mixtures.ndim == 1):
            mixtures = [mixtures]
        mixtures = list(mixtures)
        n = len(mixtures)
        per_videos = [None] * n if videos is None else list(videos)
        per_sources = list(sources) if isinstance(sources, Sequence) else [sources] * n
        if len(per_videos) != n or len(per_sources) != n:
            raise InputError("videos/sources", f"give one entry per mixture ({n}), got "
                                               f"{len(per_videos)} and {len(per_sources)}")
        shared = _SharedDetector(self.detector)
        jobs, notices = [], []
        try:
            for i, (mixture, vids, J) in enumerate(zip(mixtures, per_videos, per_sources)):
                name = str(mixture) if isinstance(mixture, (str, os.PathLike)) else \
                    ("mixture" if n == 1 else f"mixture {i + 1}")
                audio, tracks, found = self._read(mixture, name, vids, J, sample_rate, resample,
                                                  shared)
                jobs.append((audio, tracks))
                notices.append(found)
        finally:
            shared.close()
        separated: list = [None] * n
        for J in sorted({len(tracks) for _, tracks in jobs}):    # a batch shares its J
            same = [i for i, (_, tracks) in enumerate(jobs) if len(tracks) == J]
            for i, s in zip(same, separate_recordings(self.models, [jobs[i] for i in same],
                                                      self.settings, self.device, progress=progress)):
                separated[i] = s
        return [self._result(s, audio, found) for s, (audio, _), found in
                zip(separated, jobs, notices)]

    # -----------------------------------------------------------------------------------------
    def _read(self, mixture, name: str, vids, J, sample_rate, resample, shared):
        """``(audio, tracks, notices)`` of one input; notices are also issued as warnings."""
        if vids is not None and (isinstance(vids, (str, os.PathLike))
                                 or not isinstance(vids, Sequence)):
            vids = [vids]                                 # one video given on its own
        if vids is not None and J is not None and len(vids) != J:
            raise InputError(name, f"sources={J} but {len(vids)} videos were given")
        num = len(vids) if vids is not None else (1 if J is None else J)
        if not 1 <= num <= MAX_SOURCES:
            raise InputError(name, f"1 to {MAX_SOURCES} sources are supported, got {num}")
        vids = list(vids) if vids is not None else [None] * num
        uses_video = self.models.uses_video
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            audio = self._audio(mixture, name, sample_rate, resample)
            seconds = len(audio) / self.sample_rate
            tracks = [(load_track(v, shared, seconds) if isinstance(v, (str, os.PathLike)) else v)
                      if uses_video else None for v in vids]
        found = [str(w.message) for w in caught]
        found += model_notices(self.models, self.settings, name, vids)
        for text in found:
            warnings.warn(text, stacklevel=4)
        return audio, tracks, found

    def _audio(self, mixture, name: str, sample_rate, resample) -> np.ndarray:
        sr = self.sample_rate
        if isinstance(mixture, (str, os.PathLike)):         # a file says its own rate
            return load_audio(mixture, sr, resample=resample)
        if isinstance(mixture, torch.Tensor):
            mixture = mixture.detach().cpu().numpy()
        audio = np.asarray(mixture)
        if audio.ndim != 1:
            raise InputError(name, f"expected a path or a 1-D (mono) waveform, got an array of "
                                   f"shape {audio.shape}")
        if not np.issubdtype(audio.dtype, np.floating):
            raise InputError(name, f"expected float samples in [-1, 1], got {audio.dtype} "
                                   "(scale integer PCM first, e.g. x / 32768)")
        if sample_rate is None:
            raise InputError(name, f"give sample_rate= with an array (the model works at {sr} Hz)")
        return conform_audio(audio, sample_rate, sr, name, resample=resample)

    def _result(self, s: Separated, audio: np.ndarray, notices: list[str]) -> SeparationResult:
        posteriors = np.ascontiguousarray(s.posterior.transpose(1, 0, 2))
        return SeparationResult(list(s.sources), s.noise, self.sample_rate, posteriors,
                                self.components, self.models.stft.frame_times(posteriors.shape[1]),
                                audio, self.models, notices, s.steps, s.switch_stay)


# ---------------------------------------------------------------------------------------------
# training
# ---------------------------------------------------------------------------------------------
def fit(config: str | Path | Mapping | None, out: str | Path,
        overrides: Mapping | Iterable[str] = (), device: str = "auto", *, resume: bool = False,
        seed: int | None = None, progress: bool = True) -> SpeechModels:
    """Train a model as ``pyro-avss fit`` does; returns the best model (also in ``out/model.pt``).

    :param config: the name of a packaged config (``"grid_universal"``, see
        :func:`pyro_avss.config.packaged_configs`), a YAML file, a dict of sections (checked
        like a YAML file), or None for the defaults (with ``resume``: ``out/config.yaml``).
        Paths inside a config (``data.corpora``, ``data.cache``) are relative to the current
        folder.
    :param out: the output folder (must be empty or new unless ``resume``).
    :param overrides: ``"train.lr=1e-3"`` strings as for ``--set``, or a mapping of dotted keys.
    :param device: ``auto``, ``cpu``, ``cuda`` or ``cuda:N``.
    :param resume: continue an interrupted run in ``out``.
    :param seed: ``train.seed``.
    """
    from .inference.training import fit as run_fit

    if resume and config is None and (Path(out) / "config.yaml").exists():
        config = Path(out) / "config.yaml"
    cfg = load_config(config, overrides)
    if seed is not None:
        cfg = load_config(cfg, [f"train.seed={seed}"])
    return run_fit(cfg, out, device=device, resume=resume, progress=progress)


def add_pitch_ranges(model: str | Path, out: str | Path, overrides: Mapping | Iterable[str] = (),
                     progress: bool = True) -> SpeechModels:
    """Read the components' pitch ranges of the model file ``model`` from the clips it was fitted
    on, as ``fit`` does when it ends, and save the model with them to ``out`` (which may be
    ``model`` itself); returns the model. For a file written before ``fit`` kept the ranges
    (:func:`pyro_avss.inference.harmonics.training_pitch_ranges`).

    :param overrides: ``data.*`` settings that differ from the model's fit, e.g.
        ``["data.corpora=[../shared/data/grid]"]`` where its corpora now live elsewhere.
    """
    from .inference.harmonics import training_pitch_ranges

    out = Path(out)
    if out.is_dir():
        raise InputError(out, "is a folder; give the model file to write")
    writable_folder(out.parent)                 # refused before the clips are read, not after
    models = SpeechModels.load(model)
    models.info["pitch_ranges"] = training_pitch_ranges(models, overrides, progress)
    models.save(out)
    return models

