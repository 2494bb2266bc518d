"""The baseline systems: the unprocessed mixture, the single-talker enhancers (spectral gating,
log-MMSE, RNNoise, DeepFilterNet3) and semi-supervised NMF with speech bases learned from the
model's training clips."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from ..errors import InputError
from .system_interface import (UNIVERSAL, EvalContext, EvalItem, System, SystemResult, SystemSkip,
                               single_source)


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
        single_source(item, self.label or self.name)

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
        single_source(item, "NMF")

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
    from ..data.prepared import prepared_rows
    from ..inference.training import select_rows
    from .baselines import learn_speech_bases

    path = ctx.out_dir / "nmf_speech_bases.npz"
    if path.exists():
        with np.load(path) as data:
            return data["bases"]
    data = ctx.data_config
    if not data.corpora:
        raise SystemSkip("the model's config lists no training corpora (data.corpora); pass "
                         "--set data.corpora=[FOLDER] to learn the NMF speech bases")
    cache = Path(data.cache)
    if not cache.is_dir():     # never prepare a corpus in the caller's working folder
        cache = ctx.out_dir / "cache"
    rows = prepared_rows(list(data.corpora), cache, data.detector, progress=False)
    train, _ = select_rows(rows, data)
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


__all__ = ["MixtureSystem", "SingleTalkerSystem", "SpectralGatingSystem", "LogMMSESystem",
           "NeuralEnhancerSystem", "NMFSystem", "learned_speech_bases"]
