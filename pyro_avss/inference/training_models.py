"""The networks each training mode starts from (``train.mode``): a new universal model, or
decoders copied from the model of ``train.init`` (one per speaker, or K for the switching VAE)."""

from __future__ import annotations

import torch

from ..audio import StftConfig
from ..checkpoint import SpeechModels
from ..errors import InputError
from ..nets.lips import LipProjection, LipTemporalEncoder
from ..nets.vae import UNIVERSAL, DecoderBank, LatentDynamics, SpeechEncoder, VisualPrior
from ..settings import Settings


def build_models(settings: Settings, speakers: list[str], video_speakers: set[str],
                 train_rows: list[dict], stft_cfg: StftConfig) -> tuple[SpeechModels, list[str] | None]:
    """Create the networks for ``train.mode``; returns the models and the label order
    (component index of each speaker, or None when labels are hidden)."""
    from ..video.track import LipTrack

    tr, mc = settings.train, settings.model
    mode = tr.mode
    use_video = bool(mc.use_video) and bool(video_speakers)
    F = stft_cfg.num_bins
    gen = torch.Generator().manual_seed(tr.seed)
    if mode == "universal":
        lc = settings.lips
        temporal = use_video and lc.front_end == "temporal"
        lip_dim = (lc.embed_dim if temporal else lc.dim) if use_video else 0
        projection = LipProjection(lc.dim, lc.downsample)
        if use_video:      # the tracks are read one at a time, once for each fit
            def clips():
                return ((t.rois, t.face_found) for t in (LipTrack.load(r["lips"]) for r in train_rows
                                                         if r.get("lips")))
            projection.fit(clips())
            projection.fit_gate(clips(), lc.gate_sigmas)
        lip_encoder = LipTemporalEncoder(lc.dim, lc.embed_dim, dilations=lc.dilations) if temporal else None
        prior = VisualPrior(lip_dim, mc.latent_dim, mc.hidden) if use_video and mc.prior == "visual" else None
        encoder = SpeechEncoder(F, mc.latent_dim, mc.hidden, lip_dim)
        decoders = DecoderBank(1, F, mc.latent_dim, mc.hidden, lip_dim,
                               uses_video=[use_video], names=[UNIVERSAL])
        dynamics = LatentDynamics(mc.latent_dim) if mc.memory == "markov" else None
        return SpeechModels(encoder, decoders, projection, stft_cfg, lip_encoder=lip_encoder,
                            prior=prior, dynamics=dynamics), None
    base = SpeechModels.load(tr.init)
    if base.stft != stft_cfg:
        raise InputError(tr.init, f"STFT settings {base.stft} differ from the config's {stft_cfg}")
    template = base.decoders.component_state(0)
    d = base.decoders
    if mode == "speakers":
        parts = [dict(template, name=s, uses_video=bool(template["uses_video"] and s in video_speakers))
                 for s in speakers]
        if tr.include_universal:
            parts.append(dict(template))
        labels = speakers
    else:
        K = tr.num_components or len(speakers)
        labelled = tr.labels != "hidden"         # clustered: the clusters are the speakers
        names = speakers if labelled else [f"cluster{k}" for k in range(K)]
        if labelled and K != len(speakers):
            raise InputError("train.num_components", f"{K} components for {len(speakers)} labelled "
                                                     f"{'speakers' if tr.labels == 'observed' else 'clusters'}")
        parts = [dict(template, name=n) for n in names]
        labels = speakers if labelled else None
    decoders = DecoderBank.from_components(parts, d.num_bins, d.latent_dim, d.hidden, d.lip_dim,
                                           perturb=tr.perturb if mode == "switching" else 0.0,
                                           generator=gen)
    return SpeechModels(base.encoder, decoders, base.lips, stft_cfg, lip_encoder=base.lip_encoder,
                        prior=base.prior, dynamics=base.dynamics), labels
