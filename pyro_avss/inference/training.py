"""Training the speech models by stochastic variational inference.

Three modes (``train.mode``), one loop:

* ``universal``: one decoder (K = 1) and the encoder, on all training speakers;
* ``speakers``: one decoder per speaker, each initialised from the model in ``train.init``
  (usually the universal one), the encoder frozen so that all decoders share its latent space;
  speaker labels are observed, so decoder k only sees speaker k;
* ``switching``: K decoders trained jointly with the switch marginalised exactly
  (``TraceEnum_ELBO`` for the i.i.d. prior, ``DiscreteHMM`` for the Markov prior); labels are
  observed where known (``train.labels: observed``) or all hidden (``hidden``), in which case
  the decoders, started from perturbed copies of ``train.init``, discover K clusters, or found
  per clip before training (``clustered``, :mod:`.clip_clusters`) and then observed;
* ``noisy_encoder``: every network of ``train.init`` kept as it is, plus a noise-robust copy of
  its encoder distilled with noise drawn from an NMF prior (:mod:`.noisy_encoder`; no SVI), which
  starts separation's guide.

Objective: the negative ELBO of :func:`~pyro_avss.models.generative.speech_model` per frame,
with the KL term scaled by β rising linearly from ``beta_start`` to 1 over ``warmup_epochs``.
Mini-batches are shuffled segments of ``segment_frames`` frames. Early stopping on the dev
split. Every epoch writes a resumable state; the best model is written as a model file, with
each component's pitch range read from its training clips at the end (:mod:`.harmonics`).
"""

from __future__ import annotations

import csv
import logging
import math
import random
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
from pyro.infer import Trace_ELBO, TraceEnum_ELBO

from ..audio import StftConfig
from ..checkpoint import SpeechModels
from ..errors import InputError, TrainingDiverged, first_line, writable_folder
from ..models.generative import MAX_PLATE_NESTING, speech_guide, speech_model
from ..models.switch import make_switch
from ..settings import Settings
from .distributed import rank_device, resolve_device
from .distributed_training import (GlobalNoise, barrier, current_ranks, main_rank_first, my_rows,
                                   sum_gradients, sum_over_ranks)
from .harmonics import component_pitch_ranges
from .pyro_state import isolated_pyro_state
from .subnormals import subnormals_flushed
from .streamed_data import StreamedClips, training_sets
from .training_data import ClipReader, FrameSet, lip_context, segment_lips, select_rows
from .clip_clusters import clustered_rows
from .training_models import build_models

LOG = logging.getLogger(__name__)


# ---------------------------------------------------------------------------------------------
# the training loop
# ---------------------------------------------------------------------------------------------
class Trainer:
    """Runs SVI epochs, early stopping, logging and resumable state for one output folder."""

    def __init__(self, settings: Settings, models: SpeechModels, train: FrameSet | StreamedClips,
                 dev: FrameSet | StreamedClips | None,
                 out_dir: Path, device: torch.device, label_names: list[str] | None, progress=True):
        self.settings, self.tr = settings, settings.train
        self.models = models.to(device)
        self.train_set, self.dev_set = train, dev
        self.out_dir, self.device, self.progress = Path(out_dir), device, progress
        self.label_names = label_names
        self.ranks = current_ranks()           # data-parallel ranks (:mod:`.distributed_training`)
        mode = self.tr.mode
        K = models.decoders.num_components
        self.switch = make_switch(self.tr.switch_prior if mode == "switching" else "iid", K, 1,
                                  learn_prior=False, stay_prob=self.tr.stay_prob,
                                  enumerate=self.tr.switch_prior == "iid" and K > 1)
        self.elbo = (TraceEnum_ELBO(max_plate_nesting=MAX_PLATE_NESTING) if getattr(self.switch, "enumerate", False)
                     else Trace_ELBO(max_plate_nesting=MAX_PLATE_NESTING))
        self.train_encoder = mode == "universal"
        # the encoder, the temporal lip encoder, the visual prior and the latent dynamics define
        # the shared latent space: learnt with the universal model, frozen for every later decoder
        self.shared = [n for n in (models.encoder, models.lip_encoder, models.prior, models.dynamics)
                       if n is not None]
        params = list(models.decoders.parameters())
        for net in self.shared:
            net.requires_grad_(self.train_encoder)
            params += list(net.parameters()) if self.train_encoder else []
        self.optim = torch.optim.Adam(params, lr=self.tr.lr)
        self.epoch, self.best, self.bad_epochs, self.log = 0, math.inf, 0, []

    # -- loss -------------------------------------------------------------------------------
    def beta(self, epoch: int) -> float:
        w = self.tr.warmup_epochs
        return 1.0 if w <= 0 else min(1.0, self.tr.beta_start + (1 - self.tr.beta_start) * epoch / w)

    def loss(self, batch: dict, beta: float, differentiable: bool = True):
        """Negative ELBO per valid frame (a tensor to back-propagate, or a float)."""
        batch = {k: v.to(self.device) for k, v in batch.items()}
        frames, rows = batch["mask"].sum().clamp_min(1), batch["mask"].shape[0]
        if self.ranks.world > 1:              # this rank's rows of the global batch
            batch = my_rows(batch, self.ranks)
            if not batch["mask"].shape[0]:
                return sum(p.sum() for g in self.optim.param_groups for p in g["params"]) * 0.0
        m = self.models
        batch["lips"], batch["present"] = segment_lips(m.lip_encoder, batch["lips"], batch["present"])
        objective = self.elbo.differentiable_loss if differentiable else self.elbo.loss
        guide = lambda b: speech_guide(b, m.encoder, None, beta)  # noqa: E731
        return objective(
            lambda b: speech_model(b, m.decoders, self.switch, beta, m.prior, m.dynamics),
            GlobalNoise(rows, self.ranks)(guide) if self.ranks.world > 1 else guide, batch) / frames

    @property
    def lip_context(self) -> int:
        """Frames of lips needed on each side of a segment (the temporal encoder's reach)."""
        return lip_context(self.models.lip_encoder)

    @torch.no_grad()
    def dev_loss(self) -> float:
        """Mean negative ELBO per frame (β = 1) on the dev set, with fixed randomness."""
        if self.dev_set is None:
            return math.nan
        L = self.tr.segment_frames
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(12345)
            total, frames = 0.0, 0
            for batch in self.dev_set.epoch(L, 256, torch.Generator().manual_seed(0), context=self.lip_context):
                n = int(batch["mask"].sum())
                total += float(self.loss(batch, 1.0, differentiable=False)) * n
                frames += n
        return sum_over_ranks(total, self.ranks) / max(frames, 1)

    # -- state ------------------------------------------------------------------------------
    def state(self) -> dict:
        return {"epoch": self.epoch, "best": self.best, "bad_epochs": self.bad_epochs,
                "log": self.log, "encoder": self.models.encoder.state_dict(),
                "decoders": self.models.decoders.state_dict(), "optim": self.optim.state_dict(),
                "lip_encoder": _state_or_none(self.models.lip_encoder),
                "prior": _state_or_none(self.models.prior),
                "dynamics": _state_or_none(self.models.dynamics),
                "rng_torch": torch.get_rng_state(), "rng_numpy": _numpy_state(),
                "rng_python": list(random.getstate()[1]), "rng_python_pos": random.getstate()[2]}

    def restore(self, state: dict) -> None:
        self.epoch, self.best, self.bad_epochs = state["epoch"], state["best"], state["bad_epochs"]
        self.log = list(state["log"])
        self.models.encoder.load_state_dict(state["encoder"])
        self.models.decoders.load_state_dict(state["decoders"])
        for name in ("lip_encoder", "prior", "dynamics"):
            net = getattr(self.models, name)
            if net is not None and state.get(name) is not None:
                net.load_state_dict(state[name])
        self.optim.load_state_dict(state["optim"])
        torch.set_rng_state(state["rng_torch"])
        np.random.set_state(("MT19937", np.asarray(state["rng_numpy"]["keys"], dtype=np.uint32),
                             state["rng_numpy"]["pos"], 0, 0.0))
        random.setstate((3, tuple(state["rng_python"]), state["rng_python_pos"]))

    def save_state(self) -> None:                   # state.pt and log.csv, by rank 0
        if not self.ranks.main:
            return
        path = self.out_dir / "state.pt"
        torch.save(self.state(), path.with_suffix(".tmp"))
        path.with_suffix(".tmp").replace(path)
        write_log(self.log, self.out_dir / "log.csv")

    def save_model(self, dev_loss: float) -> None:
        if not self.ranks.main:
            return
        self.models.config = self.settings.to_config()
        self.models.info = {"mode": self.tr.mode, "epoch": self.epoch, "dev_loss": dev_loss,
                            "train_frames": self.train_set.num_frames,
                            "label_names": self.label_names or []}
        self.models.save(self.out_dir / "model.pt")

    # -- loop -------------------------------------------------------------------------------
    def run(self, max_epochs: int | None = None) -> list[dict]:
        from tqdm import tqdm

        L, B = self.tr.segment_frames, self.tr.batch_size
        last_epoch = self.tr.epochs if max_epochs is None else min(self.tr.epochs, max_epochs)
        while self.epoch < last_epoch and self.bad_epochs < self.tr.patience:
            gen = torch.Generator().manual_seed(self.tr.seed * 100003 + self.epoch)
            batches = self.train_set.epoch(L, B, gen, self.tr.lip_dropout, self.lip_context,
                                           self.tr.max_steps_per_epoch)
            beta = self.beta(self.epoch)
            for net in self.shared:
                net.train(self.train_encoder)
            t0, total, frames = time.perf_counter(), 0.0, 0
            bar = tqdm(batches, desc=f"epoch {self.epoch + 1}/{last_epoch}", leave=False,
                       disable=not self.progress)
            for i, batch in enumerate(bar):
                loss = self.loss(batch, beta)
                if not torch.isfinite(loss):
                    loss = loss.detach()            # read without autograd's warning
                    raise TrainingDiverged(
                        f"loss became {loss.item()} at epoch {self.epoch + 1}, step {i + 1}; the last "
                        f"good model and state are in {self.out_dir} (try a lower train.lr)")
                params = [p for g in self.optim.param_groups for p in g["params"]]
                self.optim.zero_grad()
                loss.backward()
                loss = sum_gradients(params, loss, self.ranks)        # over the ranks, if several
                torch.nn.utils.clip_grad_norm_(params, 10.0)
                self.optim.step()
                n = int(batch["mask"].sum())
                total, frames = total + float(loss.detach()) * n, frames + n
                bar.set_postfix(loss=f"{total / frames:.2f}")
            seconds = time.perf_counter() - t0
            self.epoch += 1
            dev = self.dev_loss()
            row = {"epoch": self.epoch, "beta": beta, "train_loss": total / max(frames, 1),
                   "dev_loss": dev, "seconds": seconds, "frames_per_s": frames / max(seconds, 1e-9)}
            self.log.append(row)
            score = dev if math.isfinite(dev) else row["train_loss"]
            # compare only after warm-up: the loss is not comparable while beta changes
            if beta >= 1.0 and score < self.best:
                self.best, self.bad_epochs = score, 0
                self.save_model(score)
            elif beta >= 1.0:
                self.bad_epochs += 1
            if not (self.out_dir / "model.pt").exists():
                self.save_model(score)
            self.save_state()
            if self.progress:
                LOG.info(f"epoch {self.epoch}: train {row['train_loss']:.3f}  dev {dev:.3f}  "
                         f"beta {beta:.2f}  {row['frames_per_s']:.0f} frames/s")
        return self.log


def _state_or_none(net):
    return None if net is None else net.state_dict()


def _numpy_state() -> dict:
    _, keys, pos, _, _ = np.random.get_state()
    return {"keys": torch.as_tensor(keys.astype(np.int64)), "pos": int(pos)}


def write_log(rows: list[dict], path: Path) -> None:
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)


# ---------------------------------------------------------------------------------------------
# entry point used by `cli.py fit`
# ---------------------------------------------------------------------------------------------
#: what fit writes before its first step: a folder holding only these may start again
BEFORE_TRAINING = ("config.yaml", "skipped.csv", "clusters.csv")


def fit(cfg: dict | Settings, out_dir: str | Path, *, device: str = "auto", resume: bool = False,
        progress: bool = True, rows: list[dict] | None = None) -> SpeechModels:
    """Train a model as configured (a config dict or :class:`~pyro_avss.settings.Settings`);
    see the module docstring. Returns the best model.

    ``rows`` (prepared-manifest rows) may be given directly; otherwise the corpora in
    ``data.corpora`` are prepared (or found in the cache) first.
    """
    settings = cfg if isinstance(cfg, Settings) else Settings.from_config(cfg)   # checked now
    out_dir = writable_folder(out_dir)
    started = out_dir.exists() and any(p.name not in BEFORE_TRAINING for p in out_dir.iterdir())
    if started and not resume:
        raise InputError(out_dir, "output folder is not empty (use --resume to continue a run "
                                  "there, or choose another --out)")
    if resume and not (out_dir / "state.pt").exists():
        raise InputError(out_dir / "state.pt", "nothing to resume (no training step was saved: "
                                               "run again without --resume)")
    ranks = current_ranks()          # several under fit --nproc or torchrun: rank 0 writes
    dev = rank_device(resolve_device(device), ranks)
    with isolated_pyro_state(settings.train.seed, dev), subnormals_flushed():  # caller's modes kept
        return _train(settings, out_dir, dev, resume, progress and ranks.main, rows, ranks.main)


def _train(settings: Settings, out_dir: Path, dev: torch.device, resume: bool, progress: bool,
           rows: list[dict] | None, writes: bool = True) -> SpeechModels:
    """:func:`fit` after its checks, with every random stream seeded by ``train.seed``."""
    from ..data.prepared import prepared_rows
    from ..plots import learning_curve

    data = settings.data
    stft_cfg = StftConfig(**settings.stft.to_config())
    if rows is None:
        rows = main_rank_first(lambda: prepared_rows(data.corpora, data.cache, data.detector,
                                                     progress=progress), current_ranks())
    train_rows, dev_rows = select_rows(rows, data)
    if not train_rows:
        raise InputError("data", f"no clips in split {data.train_split!r}")
    if settings.train.mode == "noisy_encoder":
        return _distil(settings, train_rows, dev_rows, stft_cfg, out_dir, dev, progress, writes)
    if settings.train.labels == "clustered":      # each clip's cluster becomes its speaker
        train_rows, dev_rows = clustered_rows(train_rows, dev_rows, settings.train, stft_cfg,
                                              out_dir / "clusters.csv" if writes else None)
    speakers = sorted({r["speaker"] for r in train_rows})
    video_speakers = {r["speaker"] for r in train_rows if r.get("lips")}
    models, label_names = build_models(settings, speakers, video_speakers, train_rows, stft_cfg)
    label_of = {s: i for i, s in enumerate(label_names)} if label_names else None
    use_video = models.uses_video
    skipped: list = []
    read = ClipReader(models.lips, stft_cfg, label_of, use_video)
    train_set, dev_set = training_sets(settings.train, train_rows, dev_rows, read, skipped)
    if writes:
        _write_start(out_dir, settings, skipped)
    trainer = Trainer(settings, models, train_set, dev_set, out_dir, dev, label_names, progress)
    if resume:
        try:
            # on the CPU: the random states must be CPU tensors, and load_state_dict puts the
            # weights and the optimiser state on the model's device (a run may resume on another)
            trainer.restore(torch.load(out_dir / "state.pt", map_location="cpu", weights_only=True))
        except Exception as exc:                     # noqa: BLE001 - any corruption, one line
            raise InputError(out_dir / "state.pt", f"cannot resume from this training state "
                                                   f"({first_line(exc)[:160]}); start again in a "
                                                   "new --out") from None
    log = trainer.run()
    barrier(trainer.ranks)                          # rank 0 has written the model
    models = SpeechModels.load(out_dir / "model.pt")
    if settings.model.audio_only_twins and models.uses_video:
        models.decoders = models.decoders.with_audio_only_twins()
    audio = ClipReader(models.lips, stft_cfg, None, False)            # the clips' power only
    models.info["pitch_ranges"] = component_pitch_ranges(models, train_rows, audio)
    if writes:
        models.save(out_dir / "model.pt")
    if log and writes:      # the saved model's epoch marked, the KL warm-up shaded
        learning_curve(log, out_dir / "learning_curve.png", saved=models.info.get("epoch"))
    notice = overfitting_notice(log)
    if notice and writes:
        LOG.warning(notice)
    return models


def overfitting_notice(log: list[dict]) -> str | None:
    """A notice when the dev loss ran away from its best after the KL warm-up: at the last epoch
    it is above the best by more than the best's own magnitude (from −1783 to +33252 on the
    demo's synthetic corpus with the temporal lips, where a model that generalises drifts by a
    few per cent). The model file holds the best epoch either way; the notice says that it came
    early, before the decoders had learnt much, and why that usually happens."""
    scored = [r for r in log if r["beta"] >= 1.0 and math.isfinite(r["dev_loss"])]
    if len(scored) < 2:
        return None
    best, last = min(scored, key=lambda r: r["dev_loss"]), scored[-1]
    if last["dev_loss"] - best["dev_loss"] <= abs(best["dev_loss"]):
        return None
    return (f"notice: the dev loss rose from {best['dev_loss']:.1f} (epoch {best['epoch']}, the "
            f"model kept) to {last['dev_loss']:.1f} (epoch {last['epoch']}): the model overfits its "
            "training clips — a corpus too small for it (the per-frame lips, lips.front_end=pca, "
            "have far fewer weights) or clips that differ from the dev ones")


def _distil(settings: Settings, train_rows: list[dict], dev_rows: list[dict], stft_cfg: StftConfig,
            out_dir: Path, dev: torch.device, progress: bool, writes: bool) -> SpeechModels:
    """``train.mode: noisy_encoder``: the model of ``train.init`` with a noisy encoder distilled
    on these clips (:func:`~.noisy_encoder.distil_noisy_encoder`), written as ``model.pt`` with
    the per-epoch ``log.csv``."""
    from .noisy_encoder import NoisePrior, distil_noisy_encoder

    tr = settings.train
    models = SpeechModels.load(tr.init)
    if models.stft != stft_cfg:
        raise InputError(tr.init, f"STFT settings {models.stft} differ from the config's {stft_cfg}")
    skipped: list = []
    read = ClipReader(models.lips, stft_cfg, None, models.uses_video)
    train_set, dev_set = training_sets(tr, train_rows, dev_rows, read, skipped)
    if writes:
        _write_start(out_dir, settings, skipped)

    def report(row):
        if progress:
            LOG.info(f"epoch {row['epoch']}: train KL {row['train_kl']:.3f}  dev KL {row['dev_kl']:.3f}")

    prior = NoisePrior()
    encoder, log = distil_noisy_encoder(models.to(dev), train_set, dev_set, epochs=tr.epochs,
                                        batch_size=tr.batch_size, segment_frames=tr.segment_frames,
                                        lr=tr.lr, patience=tr.patience, seed=tr.seed,
                                        lip_dropout=tr.lip_dropout, max_batches=tr.max_steps_per_epoch,
                                        prior=prior, progress=report)
    models.noisy_encoder = encoder
    best = min(log, key=lambda r: r["dev_kl"])
    models.info = {**models.info, "noisy_encoder": {"epochs": len(log), "epoch": best["epoch"],
                                                    "dev_kl": best["dev_kl"],
                                                    "noise_prior": asdict(prior)}}
    if writes:
        models.save(out_dir / "model.pt")
        write_log(log, out_dir / "log.csv")
    return models


def _write_start(out_dir: Path, settings: Settings, skipped: list) -> None:
    """What a run writes before its first step: the folder, ``skipped.csv`` and ``config.yaml``
    (only now: a run refused earlier leaves nothing)."""
    from ..config import dump_config

    out_dir.mkdir(parents=True, exist_ok=True)
    if skipped:
        with open(out_dir / "skipped.csv", "w", newline="") as f:
            csv.writer(f).writerows([("id", "reason"), *skipped])
        for clip, reason in skipped:
            LOG.warning(f"notice: skipped {clip}: {reason}")
    dump_config(settings.to_config(), out_dir / "config.yaml")
