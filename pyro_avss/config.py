"""Configuration: built-in defaults, YAML files and ``key.sub=value`` overrides.

A configuration is a nested dict. :data:`DEFAULTS` lists every key that exists; a YAML file or a
``--set`` override may only change existing keys (an unknown key is an error that names it), and a
value must have the type of its default (ints are accepted where floats are expected; ``null``
is accepted where the default is ``null`` or where noted as optional).

The YAML files of ``configs/`` ship inside the package (``pyro_avss/configs``; the top-level
``configs`` of a source checkout points there), so a config can be given by name
(``grid_universal``) from any folder, or as a path. Paths *inside* a config, such as
``data.corpora: [../shared/data/grid]`` or ``data.cache: cache``, are relative to the folder
the command runs in, not to the config file.
"""

from __future__ import annotations

import copy
import math
from pathlib import Path
from typing import Any, Iterable

import yaml

from .errors import ConfigError, first_line

DEFAULTS: dict[str, Any] = {
    "stft": {"sample_rate": 16000, "n_fft": 1024, "hop": 256, "window": "sine"},
    "data": {
        # corpora: folders or manifest CSVs understood by `cli.py prepare` (GRID folders, the GRID
        # distribution, LibriSpeech-style speaker folders, a generic manifest)
        "corpora": [],
        "cache": "cache",            # where prepared manifests and lip caches go (relative to cwd)
        "speakers": None,            # restrict to these speakers (list) or null for all
        "train_split": "train",
        "dev_split": "dev",
        "max_clips_per_speaker": None,
        "detector": "auto",          # lip detector used when preparing video
    },
    # front_end: pca (the projection is the embedding) | temporal (a learned temporal encoder of
    # the projected ROIs, trained with the universal model; embed_dim is its output size)
    "lips": {"dim": 24, "downsample": 32, "front_end": "temporal", "embed_dim": 32},
    # prior: standard (z ~ N(0, I)) | visual (z ~ p(z | lips), the conditional-VAE prior)
    # memory: none (z[t] independent over frames) | markov (the same prior chained over frames
    # by a learnt correlation per latent dimension: the speech prior with memory)
    # audio_only_twins: the saved bank also holds an audio-only twin of every audio-visual decoder
    # (same weights, lips ignored; see DecoderBank.with_audio_only_twins), for lips that go wrong
    "model": {"latent_dim": 16, "hidden": 128, "use_video": True, "prior": "visual", "memory": "none",
              "audio_only_twins": False},
    "train": {
        # universal: one decoder on all speakers; speakers: one decoder per speaker, fine-tuned from
        # `init` with the encoder frozen; switching: K decoders trained jointly, switch enumerated
        "mode": "universal",
        "init": None,                # path of a model file to start from (speakers/switching)
        "num_components": None,      # K for switching mode (null: number of speakers)
        "labels": "observed",        # observed | hidden (switching mode)
        "include_universal": False,  # speakers mode: keep the initial decoder as an extra component
        "switch_prior": "iid",       # iid | markov
        "stay_prob": 0.98,           # markov switch: probability of keeping the same component
        "epochs": 60,
        "batch_size": 64,            # segments per mini-batch
        "segment_frames": 32,        # frames per segment
        "lr": 2e-3,
        "beta_start": 0.1,           # KL warm-up: beta grows linearly from this to 1
        "warmup_epochs": 5,
        "patience": 8,               # early stopping on the dev loss
        "lip_dropout": 0.2,          # probability of hiding the lips of a segment
        "perturb": 0.05,             # switching mode: relative noise on the replicated decoders
        "max_steps_per_epoch": None,
        "seed": 0,
    },
    "separate": {
        "switch_prior": "utterance", # utterance (one component per source and chunk) | iid | markov
                                     # Tuned split, SI-SDRi one / two talkers: utterance 8.13 /
                                     # 7.07, iid 7.95 / 5.68, markov (τ = 30 s) 8.00 / 5.68 dB
        # the Markov switch's stay probability ρ (per frame) comes from at most one of two keys:
        "stay_prob": None,           # ρ itself, in (0, 1); null = 0.98 unless stay_seconds is set
        "stay_seconds": None,        # or a time constant τ (s): ρ = exp(-hop / τ), hop from the
                                     # model's STFT (τ = 0.8 s ~ 0.98 at a 16 ms hop); null = unused.
                                     # Tuned split (mean of one and two talkers): ρ 0.98 6.81, τ 0.1
                                     # / 0.5 / 2 / 30 / 600 s 6.76 / 6.80 / 6.82 / 6.84 / 6.78 dB
        "learn_stay": False,         # true: ρ (started as above) is fitted per source and chunk by
                                     # SVI with the rest (its logit a pyro.param); markov only.
                                     # From 0.98 it fell to 0.92 (one talker) / 0.88 (two): 6.77 dB
        "noise_rank": 8,
        "noise_init_level": 6.0,     # initial E[noise variance] / mean mixture power (flat spectrum)
        "noise_start": "flat",       # flat (E[WH] = noise_init_level, every bin alike) | lips
                                     # (the same level shaped like the mixture over the frames
                                     # where every source's lips are closed; needs p(z|v) and
                                     # videos, else flat) | auto (lips where possible). Tuned
                                     # split: flat 8.13, lips 7.62 dB (one talker), 7.07 vs 6.61
                                     # (two talkers), so flat stays
        "noise_smoothness": 0.1,     # σ of the log-activation random walk (nats/frame); 0 = free
                                     # H. Chosen on the tuned noises: 0 -> 7.46, 0.05 -> 7.78,
                                     # 0.1 -> 7.94, 0.3 -> 7.77 dB (GRID one talker, babble
                                     # 1.7 -> 3.2 dB)
        "noise_spectral_smoothness": 0.0,  # σ_f of the NMF bases' log-spectrum random walk
                                     # over frequency (nats/bin); 0 = free bases. Tuned split,
                                     # one talker: 0 -> 8.13, 0.1 -> 8.92, 0.15 -> 8.97 dB
                                     # (babble 3.5 -> 6.0); held-out: 6.16 -> 5.99 (sheep and
                                     # hens, harmonic noises, lose 0.5-1 dB), so 0 stays
        "noise_smooth_rank": None,   # how many of the noise_rank bases are spectrally smooth
                                     # (the others are free); null = all of them. With σ_f 0.15
                                     # and 4 of 8: GRID tuned 8.53, held-out 6.59 (default 8.13
                                     # / 6.16), LibriSpeech 3.16 / 0.64 (default 3.10 / 1.24)
        "steps": 50,                 # SVI iteration cap; 100 or 200 steps without early stop give
                                     # 8.18 or 8.20 dB against 8.13 (tuned one talker): the
                                     # decaying rate has settled by then
        "tol": 1e-4,                 # stop when the relative change of the loss EMA is below this
        "lr": 0.4,                   # Adam's first learning rate ...
        "lr_decay": 0.95,            # ... multiplied by this after every step (0.4 -> 0.03 at 50)
        "num_samples": 8,            # z samples for the Wiener filter
        "guide_init": "auto",        # encoder (on the mixture) | prior (each source's visual
                                     # prior) | product (of the two; needs p(z|v)) | auto
                                     # (product when the model has a visual prior, else encoder)
        "guide": "auto",             # meanfield (q(z[t]) independent over frames) | markov (chained
                                     # over frames, one fitted correlation per source and latent
                                     # dimension) | auto (markov when the model has memory)
        "gain": "auto",              # utterance (one gain per source and chunk) | frame (g_j[t])
                                     # | faceless (utterance, times a free per-frame factor
                                     # where that source's face is missing)
                                     # | auto: faceless with a visual prior, else frame. GRID
                                     # two talkers: utterance +1.2 dB over frame with p(z|v) (a
                                     # small model without one could not carry the level and
                                     # lost 3 dB). Faceless equals utterance with every face
                                     # seen; tuned split with the target's face removed on 30 /
                                     # 60 % of frames: 1 talker 4.16 / 1.99 -> 4.68 / 2.47 dB,
                                     # 2 talkers 4.04 / 1.44 -> 4.62 / 2.05 dB (swaps 6 / 16 ->
                                     # 3 / 10 %); per-frame gains give 5.59 / 4.18 with one
                                     # talker but lose 0.6 dB with intact lips
        "prior_weight": 3.0,         # weight of the z prior (KL) term at test time: how hard
                                     # the speech model pulls z back to speech; tuned noises 1 ->
                                     # 7.94, 3 -> 8.23, 10 -> 7.65 dB (with smoothness 0.1)
        "enumeration": "marginal",   # marginal (the switch summed out in the observation) | pyro (TraceEnum_ELBO)
        "noise_updates": "adam",     # adam (SVI only) | mu (plus a multiplicative NMF update per step)
        "prune_threshold": 1.0e-3,   # after prune_after steps, drop the decoders whose switch
        "prune_after": 10,           # posterior is below this in every frame of every source;
                                     # 0 = never. GRID bank (K = 3), 3-s clips: 0.62x the time
                                     # with one talker, 0.60x with two; SI-SDRi unchanged (tuned
                                     # split 8.13 / 7.07 dB with and without)
        "chunk_seconds": 20.0,
        "overlap_seconds": 2.0,
        "batch_size": 8,
        "seed": 0,
    },
}

#: keys whose value may be null even though the default is not
OPTIONAL = {("train", "init"), ("data", "speakers"), ("data", "max_clips_per_speaker"),
            ("train", "num_components"), ("train", "max_steps_per_epoch"),
            ("separate", "noise_smooth_rank")}


#: the configs shipped with the package (``configs/<name>.yaml`` in a source checkout)
CONFIG_DIR = Path(__file__).resolve().parent / "configs"


def packaged_configs() -> list[str]:
    """Names of the packaged configs (``grid_universal``, ...), for ``load_config(name)``."""
    return sorted(p.stem for p in CONFIG_DIR.glob("*.yaml"))


def config_file(config: str | Path) -> Path:
    """The YAML file ``config`` names: an existing file as given, else the packaged config of
    that name (``grid_universal`` or ``grid_universal.yaml``: a bare name, no folder)."""
    path = Path(config)
    if path.is_file():
        return path
    if len(path.parts) == 1 and path.suffix in ("", ".yaml", ".yml"):
        packaged = CONFIG_DIR / f"{path.stem if path.suffix else path.name}.yaml"
        if packaged.is_file():
            return packaged
    raise ConfigError(f"{config}: config file not found (nor a packaged config: "
                      f"{', '.join(packaged_configs()) or 'none installed'})")


def default_config() -> dict:
    return copy.deepcopy(DEFAULTS)


def load_config(path: str | Path | None = None, overrides: Iterable[str] = ()) -> dict:
    """Defaults, updated by the YAML file at ``path`` (a path or the name of a packaged config,
    see :func:`config_file`), then by ``key.sub=value`` strings."""
    cfg = default_config()
    if path is not None:
        path = config_file(path)
        try:
            data = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as exc:
            raise ConfigError(f"{path}: not valid YAML ({first_line(exc)})") from None
        if not isinstance(data, dict):
            raise ConfigError(f"{path}: top level must be a mapping")
        merge(cfg, data, source=str(path))
    apply_overrides(cfg, overrides)
    return cfg


def apply_overrides(cfg: dict, overrides: Iterable[str]) -> None:
    """Apply ``key.sub=value`` strings (``--set``; values are read as YAML) to ``cfg``."""
    for item in overrides:
        key, value = parse_override(item)
        set_key(cfg, key, value, source="--set")


def parse_override(item: str) -> tuple[str, Any]:
    """``(key, value)`` of a ``key.sub=value`` string, the value read as (safe) YAML.

    :raises ConfigError: no ``=``, or a value that is not valid safe YAML (e.g. a Python tag).
    """
    key, sep, text = item.partition("=")
    if not sep:
        raise ConfigError(f"override {item!r}: expected key.sub=value")
    try:
        return key.strip(), yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"--set {key.strip()}: value {text!r} is not valid YAML "
                          f"({' '.join(str(exc).split())[:120]})") from None


def merge(cfg: dict, update: dict, source: str, prefix: tuple = ()) -> None:
    """Recursively copy ``update`` into ``cfg``, checking keys and types."""
    for key, value in update.items():
        path = prefix + (key,)
        if isinstance(value, dict) and isinstance(_get(cfg, path, source), dict):
            merge(cfg, value, source, path)
        else:
            set_key(cfg, ".".join(path), value, source)


def set_key(cfg: dict, dotted: str, value: Any, source: str = "--set") -> None:
    path = tuple(dotted.split("."))
    old = _get(cfg, path, source)
    if isinstance(old, dict):
        raise ConfigError(f"{source}: {dotted!r} is a section, set one of its keys "
                          f"({', '.join(old)})")
    default = _get(DEFAULTS, path, source)
    value = _coerce(value, default, dotted, source, path in OPTIONAL)
    node = cfg
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value


def _get(cfg: dict, path: tuple, source: str):
    node = cfg
    for i, key in enumerate(path):
        if not isinstance(node, dict) or key not in node:
            where = ".".join(path[:i]) or "top level"
            known = ", ".join(node) if isinstance(node, dict) else "none"
            raise ConfigError(f"{source}: unknown config key {'.'.join(path)!r} "
                              f"(keys under {where}: {known})")
        node = node[key]
    return node


def _coerce(value, default, dotted, source, optional):
    if isinstance(value, str) and isinstance(default, float):
        try:                                 # YAML 1.1 reads "3e-3" as a string
            value = float(value)
        except ValueError:
            pass
    if value is None and (default is None or optional):
        return None
    if default is None:
        return value
    if isinstance(default, bool):
        if isinstance(value, bool):
            return value
    elif isinstance(default, float) and isinstance(value, (int, float)) and not isinstance(value, bool):
        if not math.isfinite(value):
            raise ConfigError(f"{source}: {dotted} must be a finite number, got {value!r}")
        return float(value)
    elif isinstance(default, int) and isinstance(value, int) and not isinstance(value, bool):
        return value
    elif isinstance(default, str) and isinstance(value, str):
        return value
    elif isinstance(default, list) and isinstance(value, (list, str)):
        return [value] if isinstance(value, str) else list(value)
    elif isinstance(default, int) and isinstance(value, float) and value.is_integer():
        return int(value)
    raise ConfigError(f"{source}: {dotted} must be {type(default).__name__}, got {value!r}")


def dump_config(cfg: dict, path: str | Path) -> None:
    Path(path).write_text(yaml.safe_dump(cfg, sort_keys=False))
