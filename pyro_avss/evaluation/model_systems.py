"""The systems built on the speech models: our SVI separation on a subset of the model's
components (``universal``, ``oracle-speaker``, ``switching``), its oracles (the true noise, the
clean signals' codes) and the published MCEM algorithm on the same components."""

from __future__ import annotations

import time

from ..checkpoint import SpeechModels
from .system_interface import UNIVERSAL, EvalItem, System, SystemResult, SystemSkip, single_source


def select_components(models: SpeechModels, kind: str, speakers: list[str]) -> tuple[int, ...]:
    """Component indices for ``kind`` in ``universal | oracle | switching | bank`` (every one).

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
    if kind == "bank":
        return tuple(range(len(names)))
    raise ValueError(f"unknown component selection {kind!r}")


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
    """``switching`` with the true noise's power spectrogram as its noise variance; with
    ``smooth_seconds > 0`` that spectrogram is first averaged over a centred window of about that
    many seconds in each frequency bin (:func:`time_smoothed`): the noise a model tracking it at
    that time resolution could know, without the frame-by-frame fluctuation of its periodogram."""

    def __init__(self, ctx, name: str = "oracle-noise", smooth_seconds: float = 0.0):
        super().__init__(ctx, name, "switching")
        self.batch_size = 1                    # the known noise belongs to one recording
        self.smooth_seconds = smooth_seconds

    def check(self, item):
        super().check(item)
        chunk = self.ctx.separation.chunk_seconds
        if item.audio_s > chunk:
            raise SystemSkip(f"{self.name} separates recordings of one chunk only ({item.audio_s:.1f} s "
                             f"> separate.chunk_seconds = {chunk:g} s)")

    def noise_model(self, items):
        from ..inference.inputs import normalised_power
        from ..models.noise import KnownNoise

        (item,) = items
        cfg = self.ctx.stft
        _, scale = normalised_power(item.rendered.mixture, cfg)   # the model's units
        noise, noise_scale = normalised_power(item.rendered.noise, cfg)
        half = round(self.smooth_seconds * cfg.sample_rate / cfg.hop / 2)
        known = time_smoothed(noise * (noise_scale / scale), half)[None]
        return lambda: KnownNoise(known)


def time_smoothed(power: "torch.Tensor", half: int) -> "torch.Tensor":
    """``(T, F)`` power averaged over frames ``t - half … t + half`` (edges repeated, the moving
    average :func:`~.baselines.estimate_noise_psd` uses); ``half = 0`` returns it unchanged."""
    import torch
    from scipy import ndimage

    if half <= 0:
        return power
    smooth = ndimage.uniform_filter1d(power.numpy(), size=2 * half + 1, axis=0, mode="nearest")
    return torch.from_numpy(smooth)


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
        single_source(item, "MCEM")
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


__all__ = ["select_components", "SVISystem", "OracleNoiseSystem", "OracleLatentSystem", "MCEMSystem"]
