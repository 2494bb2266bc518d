"""Self-describing model files.

A model file is one ``torch.save`` of a dict that holds only tensors and plain Python values, so
it loads with ``torch.load(path, weights_only=True)``: the format version, the resolved training
config, the STFT and lip-embedding settings, the component (speaker) names and kinds, the
network sizes, the weights of the encoder, the decoder bank, the lip projection and (format 2)
the learned temporal lip encoder and the visual prior where the model has them, (format 4) the
noise-robust encoder that starts separation's guide where the model has one, training facts and
software versions. Format-1 files (no temporal lip encoder, ``N(0, I)`` prior) still load.
"""

from __future__ import annotations

import platform
from dataclasses import dataclass, field
from pathlib import Path

import torch

from .audio import StftConfig
from .errors import InputError, first_line
from .nets.lips import LipProjection, LipTemporalEncoder
from .nets.vae import DecoderBank, LatentDynamics, SpeechEncoder, VisualPrior

FORMAT = "pyro_avss-model"
FORMAT_VERSION = 5          # 3: latent dynamics, 4: a noisy encoder, 5: a mouth gate (each
                            # written only by models that have it; others are written as format 2)


def software_versions() -> dict:
    import numpy
    import pyro

    from . import __version__

    return {"pyro_avss": __version__, "torch": str(torch.__version__), "pyro": pyro.__version__,
            "numpy": numpy.__version__, "python": platform.python_version()}


@dataclass
class SpeechModels:
    """Everything needed to separate with (or continue training) a fitted model.

    :param encoder: ``q(z | s, v)``.
    :param decoders: the K components ``p(s | z, v)``.
    :param lips: the fitted lip projection (unfitted when the model is audio-only).
    :param lip_encoder: the learned temporal lip embedding applied after the projection, or None
        (the projection is the embedding).
    :param prior: the visual prior ``p(z | v)``, or None (``N(0, I)``).
    :param dynamics: the frame-to-frame correlation of the speech prior with memory, or None
        (``z`` independent over frames).
    :param noisy_encoder: ``q_n(z | x, v)`` for noisy input, distilled from ``encoder``
        (:mod:`~pyro_avss.inference.noisy_encoder`) to start separation's guide, or None.
    :param stft: STFT settings the model was trained with.
    :param config: the resolved training configuration.
    :param info: training facts (epochs, losses, data) recorded in the file.
    """

    encoder: SpeechEncoder
    decoders: DecoderBank
    lips: LipProjection
    stft: StftConfig
    config: dict = field(default_factory=dict)
    info: dict = field(default_factory=dict)
    lip_encoder: LipTemporalEncoder | None = None
    prior: VisualPrior | None = None
    dynamics: LatentDynamics | None = None
    noisy_encoder: SpeechEncoder | None = None

    def __post_init__(self):
        from .models.protocols import LipFrontEnd, check_piece

        check_piece("lip front end", self.lip_encoder, LipFrontEnd, optional=True)

    @property
    def component_names(self) -> list[str]:
        return list(self.decoders.names)

    def component_summary(self) -> str:
        """The components' names, each with the pitch range ``fit`` read from its training clips
        where the model file has one (:mod:`~pyro_avss.inference.harmonics`)."""
        ranges = self.info.get("pitch_ranges") or {}
        return ", ".join(f"{n} (pitch {ranges[n][0]:.0f}-{ranges[n][1]:.0f} Hz)" if n in ranges else n
                         for n in self.component_names)

    @property
    def uses_video(self) -> bool:
        return bool(self.decoders.lip_dim) and bool(self.decoders.uses_video.any())

    def to(self, device) -> "SpeechModels":
        self.encoder.to(device)
        self.decoders.to(device)
        self.lips.to(device)
        for net in (self.lip_encoder, self.prior, self.dynamics, self.noisy_encoder):
            if net is not None:
                net.to(device)
        return self

    def to_dict(self) -> dict:
        d = self.decoders
        return {
            "format": FORMAT, "format_version": self.format_version,
            "config": self.config, "stft": self.stft.to_dict(),
            "lips": {"dim": self.lips.dim, "downsample": self.lips.downsample},
            "components": [{"name": n, "uses_video": bool(u > 0)} for n, u in
                           zip(d.names, d.uses_video.tolist())],
            "sizes": {"num_bins": d.num_bins, "latent_dim": d.latent_dim, "hidden": d.hidden,
                      "lip_dim": d.lip_dim},
            "encoder": _cpu(self.encoder.state_dict()),
            "decoders": _cpu(d.state_dict()),
            "lip_projection": _cpu(self.lips.state_dict()),
            "lip_encoder": None if self.lip_encoder is None else {
                "in_dim": self.lip_encoder.in_dim, "out_dim": self.lip_encoder.out_dim,
                "hidden": self.lip_encoder.hidden, "dilations": list(self.lip_encoder.dilations),
                "weights": _cpu(self.lip_encoder.state_dict())},
            "prior": None if self.prior is None else {
                "hidden": self.prior.hidden, "weights": _cpu(self.prior.state_dict())},
            "dynamics": None if self.dynamics is None else _cpu(self.dynamics.state_dict()),
            "noisy_encoder": None if self.noisy_encoder is None else _cpu(self.noisy_encoder.state_dict()),
            "info": self.info, "versions": software_versions(),
        }

    @property
    def format_version(self) -> int:
        """The oldest format that holds this model: 5 with a mouth gate, 4 with a noisy
        encoder, 3 with latent dynamics, else 2 (so older readers still load what they can use)."""
        if self.lips.gated:
            return 5
        return 4 if self.noisy_encoder is not None else 3 if self.dynamics is not None else 2

    def save(self, path: str | Path) -> None:
        path = Path(path)
        tmp = path.with_suffix(path.suffix + ".tmp")
        torch.save(self.to_dict(), tmp)
        tmp.replace(path)  # never leave a half-written model file behind

    @classmethod
    def from_dict(cls, data: dict, source: str = "model") -> "SpeechModels":
        """The models stored in ``data``; a malformed file (wrong type, a missing key, weights of
        the wrong size) is an :class:`InputError` naming what is wrong, never a traceback."""
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise InputError(source, "not a pyro_avss model file")
        try:
            return cls._build(data, source)
        except InputError:
            raise
        except KeyError as exc:
            raise InputError(source, f"not a pyro_avss model: missing entry {exc}") from None
        except (TypeError, ValueError, AttributeError, RuntimeError) as exc:
            raise InputError(source, f"not a pyro_avss model: {first_line(exc)[:200]}") from None

    @classmethod
    def _build(cls, data: dict, source: str) -> "SpeechModels":
        if data.get("format_version", 0) > FORMAT_VERSION:
            raise InputError(source, f"model format {data['format_version']} is newer than this "
                                     f"pyro_avss understands ({FORMAT_VERSION})")
        s = data["sizes"]
        encoder = SpeechEncoder(s["num_bins"], s["latent_dim"], s["hidden"], s["lip_dim"])
        encoder.load_state_dict(data["encoder"])
        comps = data["components"]
        decoders = DecoderBank(len(comps), s["num_bins"], s["latent_dim"], s["hidden"], s["lip_dim"],
                               uses_video=[c["uses_video"] for c in comps],
                               names=[c["name"] for c in comps])
        decoders.load_state_dict(data["decoders"])
        lips = LipProjection(data["lips"]["dim"], data["lips"]["downsample"])
        # a file from before the mouth gate has no threshold: no gate (+inf, the default)
        lips.load_state_dict({"gate_threshold": lips.gate_threshold, **data["lip_projection"]})
        lip_encoder = prior = None
        if data.get("lip_encoder"):
            e = data["lip_encoder"]
            # a file from before the residual layers has no dilations: the two base layers only
            lip_encoder = LipTemporalEncoder(e["in_dim"], e["out_dim"], e["hidden"], e.get("dilations", ()))
            lip_encoder.load_state_dict(e["weights"])
        if data.get("prior"):
            prior = VisualPrior(s["lip_dim"], s["latent_dim"], data["prior"]["hidden"])
            prior.load_state_dict(data["prior"]["weights"])
        dynamics = None
        if data.get("dynamics"):
            dynamics = LatentDynamics(s["latent_dim"])
            dynamics.load_state_dict(data["dynamics"])
        noisy_encoder = None
        if data.get("noisy_encoder"):
            noisy_encoder = SpeechEncoder(s["num_bins"], s["latent_dim"], s["hidden"], s["lip_dim"])
            noisy_encoder.load_state_dict(data["noisy_encoder"])
        return cls(encoder, decoders, lips, StftConfig(**data["stft"]), data.get("config", {}),
                   data.get("info", {}), lip_encoder, prior, dynamics, noisy_encoder)

    @classmethod
    def load(cls, path: str | Path, map_location="cpu") -> "SpeechModels":
        path = Path(path)
        if not path.exists():
            raise InputError(path, "model file not found")
        try:
            data = torch.load(path, map_location=map_location, weights_only=True)
        except Exception as exc:
            raise InputError(path, f"cannot read model file ({first_line(exc)})") from None
        return cls.from_dict(data, str(path))


def _cpu(state: dict) -> dict:
    return {k: v.detach().cpu().clone() for k, v in state.items()}
