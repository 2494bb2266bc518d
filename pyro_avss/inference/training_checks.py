"""Checks of a training config (``cli.py fit``) before any work starts: choices, lower bounds and
ranges of the ``train``, ``model`` and ``data`` sections, each refused on one line naming its key."""

from __future__ import annotations

from ..errors import InputError


CHOICES = {"train.mode": ("universal", "speakers", "switching"), "train.labels": ("observed", "hidden"),
           "train.switch_prior": ("iid", "markov"), "model.prior": ("standard", "visual"),
           "model.memory": ("none", "markov"), "lips.front_end": ("pca", "temporal"),
           "stft.window": ("sine", "hann")}
"""The values a word-valued key of ``fit``'s config may take."""

AT_LEAST = {"train.epochs": 1, "train.batch_size": 1, "train.segment_frames": 1,
            "train.warmup_epochs": 0, "train.patience": 1, "train.max_steps_per_epoch": 1,
            "train.num_components": 1, "train.seed": 0, "model.latent_dim": 1, "model.hidden": 1,
            "lips.dim": 1, "lips.downsample": 1, "lips.embed_dim": 1, "stft.sample_rate": 1,
            "stft.n_fft": 2, "stft.hop": 1, "data.max_clips_per_speaker": 1}
"""The smallest value of each integer key of ``fit``'s config (null stays allowed where the
config allows it)."""

IN_RANGE = {"train.lr": ("> 0", lambda x: x > 0), "train.beta_start": ("in (0, 1]", lambda x: 0 < x <= 1),
            "train.lip_dropout": ("in [0, 1]", lambda x: 0 <= x <= 1),
            "train.stay_prob": ("in (0, 1)", lambda x: 0 < x < 1),
            "train.perturb": (">= 0", lambda x: x >= 0), "train.seed": ("below 2**32", lambda x: x < 2**32)}
"""What each number key of ``fit``'s config must be, in words and as a test."""


def check_config(cfg: dict) -> None:
    """One-line errors, naming the key, for values of ``train``, ``model``, ``lips``, ``stft``
    and ``data`` that would fail later (before any folder is made or clip prepared)."""
    def value(key):
        section, name = key.split(".")
        return cfg[section][name]

    for key, allowed in CHOICES.items():
        if value(key) not in allowed:
            raise InputError(key, f"must be one of {', '.join(allowed)}, got {value(key)!r}")
    for key, low in AT_LEAST.items():
        x = value(key)
        if x is not None and (not isinstance(x, int) or isinstance(x, bool)):
            raise InputError(key, f"must be an integer, got {x!r}")
        if x is not None and x < low:
            raise InputError(key, f"must be >= {low}, got {x}")
    for key, (wording, ok) in IN_RANGE.items():
        if not ok(value(key)):
            raise InputError(key, f"must be {wording}, got {value(key)}")
    if value("stft.hop") > value("stft.n_fft"):
        raise InputError("stft.hop", f"must be at most stft.n_fft = {value('stft.n_fft')}, got "
                                     f"{value('stft.hop')}")
    init = value("train.init")
    if init is not None and not isinstance(init, str):
        raise InputError("train.init", f"must be the path of a model file or null, got {init!r}")
    if value("train.mode") != "universal" and not init:
        raise InputError("train.init", f"mode {value('train.mode')!r} needs train.init (a model "
                                       "file to start from)")
