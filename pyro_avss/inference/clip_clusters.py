"""Unsupervised discovery of who speaks in which clip: a Gaussian mixture over clip statistics.

A switching VAE whose K decoders are started from copies of one model and trained with hidden
labels splits the largest speaker's frames before it finds a rare one (GRID s1 : s4 is
500 : 28 clips): per-frame evidence is mostly about phones, not voices, and a uniform switch
prior favours clusters of equal size. The voice is a property of the whole clip, so the
clusters are found there first (``train.labels: clustered``), and the decoders are then trained
on them as on speaker labels:

1. each clip is summarised by the mean and standard deviation over its louder half of frames
   of the log power spectrum (per-utterance normalised, so the level does not count),
   ``u_n ∈ R^{2F}``;
2. the summaries are standardised per dimension and projected on their first ``D`` principal
   axes, ``y_n ∈ R^D``; with ``train.cluster_pitch`` the log of the clip's median pitch over the
   same frames (the harmonic comb that matches each frame best,
   :class:`~pyro_avss.models.harmonics.HarmonicCombs`) is one more dimension: the voice's pitch
   is the clip statistic a speaker changes least, and the spectral summary alone put 12 of GRID
   s1's 500 training clips (median pitches 103–151 Hz) with s4's 28 (about 190–240 Hz), a third
   of that cluster, whose decoder then fitted both voices; with the pitch none (LibriSpeech: 4
   of 60 training clips outside their cluster's majority speaker, against 3). A diagonal mixture
   weighs every dimension by its own spread, so the one dimension needs no weight of its own;
3. ``y_n ~ Σ_k w_k N(μ_k, diag σ²_k)`` is fitted by EM, with the weights ``w_k`` learnt (a
   rare speaker is a small cluster, not half of the data), from several random starts, keeping
   the one of highest likelihood (50 starts: with 10, the LibriSpeech clusters depended on the
   order of the clips); each clip goes to its most probable cluster.

``D`` (``train.cluster_dims``) was set on the GRID training clips (D = 10).
"""

from __future__ import annotations

import csv
import math
from pathlib import Path

import torch

from ..audio import StftConfig, load_audio
from ..errors import InputError
from ..models.harmonics import HarmonicCombs
from .inputs import normalised_power

#: variance floor of a cluster, as a fraction of the data's variance in that dimension (so that
#: a cluster cannot shrink onto a few near-identical clips, where the likelihood is unbounded)
VARIANCE_FLOOR = 0.01


def clip_statistics(power: torch.Tensor) -> torch.Tensor:
    """``(T, F)`` power spectrogram -> ``(2F,)``: mean and standard deviation of ``log power``
    over the frames whose energy is at or above the clip's median (its louder half)."""
    loud = torch.log(power[louder_half(power)] + 1e-10)
    return torch.cat([loud.mean(0), loud.std(0, unbiased=False)])


def louder_half(power: torch.Tensor) -> torch.Tensor:
    """``(T,)`` bool: the frames of ``power (T, F)`` whose energy is at or above the median."""
    energy = power.sum(-1)
    return energy >= energy.median()


def clip_log_pitch(power: torch.Tensor, combs) -> float:
    """``(T, F)`` power spectrogram -> the log of its median pitch (Hz) over the frames of
    :func:`clip_statistics` (its louder half) that hold a harmonic comb (``combs``: a
    :class:`~pyro_avss.models.harmonics.HarmonicCombs` on these bins); NaN where none does."""
    f0 = combs.pitch(power[louder_half(power)][:, None, :].float())[:, 0]
    f0 = f0[~f0.isnan()]
    return math.log(float(f0.median())) if f0.numel() else math.nan


def principal_projection(stats: torch.Tensor, dims: int) -> torch.Tensor:
    """``(N, P)`` -> ``(N, min(dims, N, P))``: standardised, then on the first principal axes."""
    z = (stats - stats.mean(0)) / stats.std(0, unbiased=False).clamp_min(1e-9)
    u, s, _ = torch.linalg.svd(z, full_matrices=False)
    d = min(dims, s.numel())
    return u[:, :d] * s[:d]


def fit_gaussian_mixture(y: torch.Tensor, num_clusters: int, restarts: int = 50, iterations: int = 200,
                         seed: int = 0) -> tuple[torch.Tensor, float]:
    """EM for a diagonal Gaussian mixture with learnt weights on ``y (N, D)``; the best of
    ``restarts`` random soft starts. Returns each point's cluster ``(N,)`` and the log-likelihood."""
    gen = torch.Generator().manual_seed(seed)
    y = y.to(torch.float64)                    # the responsibilities' dtype, cast once
    floor = VARIANCE_FLOOR * y.var(0, unbiased=False)
    best = None
    for _ in range(restarts):
        resp = _random_responsibilities(y.shape[0], num_clusters, gen)
        for _ in range(iterations):
            log_joint = _component_log_joint(y, resp, floor)
            total = log_joint.logsumexp(-1)
            resp = (log_joint - total[:, None]).exp()
        loglik = float(total.sum())
        if best is None or loglik > best[1]:
            best = (resp.argmax(-1), loglik)
    return best


def _random_responsibilities(n: int, k: int, gen: torch.Generator) -> torch.Tensor:
    """``(n, k)`` rows drawn uniformly from the simplex (normalised exponentials)."""
    e = -torch.log(torch.rand((n, k), generator=gen, dtype=torch.float64))
    return e / e.sum(-1, keepdim=True)


def _component_log_joint(y: torch.Tensor, resp: torch.Tensor, floor: torch.Tensor) -> torch.Tensor:
    """M-step from ``resp (N, K)``, then ``log w_k + log N(y_n; μ_k, σ²_k)`` as ``(N, K)``."""
    mass = resp.sum(0).clamp_min(1e-12)                                  # (K,)
    mean = (resp.T @ y) / mass[:, None]                                  # (K, D)
    var = ((resp.T @ y ** 2) / mass[:, None] - mean ** 2).clamp_min(0) + floor   # (K, D)
    weight = mass / mass.sum()
    sq = (y[:, None, :] - mean[None]) ** 2 / var[None]                   # (N, K, D)
    return weight.log() - 0.5 * (sq + var.log()[None] + math.log(2 * math.pi)).sum(-1)


def cluster_clips(rows: list[dict], stft_cfg: StftConfig, num_clusters: int, dims: int = 10,
                  seed: int = 0, pitch: bool = True) -> dict[str, int]:
    """The cluster of every clip of ``rows`` (prepared-manifest rows with ``id`` and ``audio``),
    by the module's procedure (``pitch``: with the clips' log median pitch; a clip without a
    voiced frame takes the median of the others'): ``{clip id: cluster index}``."""
    if num_clusters < 1 or len(rows) < num_clusters:
        raise ValueError(f"cannot form {num_clusters} clusters from {len(rows)} clips")
    powers = [normalised_power(load_audio(r["audio"], stft_cfg.sample_rate), stft_cfg)[0].double()
              for r in rows]
    y = principal_projection(torch.stack([clip_statistics(p) for p in powers]), dims)
    if pitch:
        combs = HarmonicCombs(stft_cfg.num_bins, stft_cfg.sample_rate, stft_cfg.n_fft)
        log_f0 = torch.tensor([clip_log_pitch(p, combs) for p in powers], dtype=y.dtype)
        y = torch.cat([y, log_f0.nan_to_num(float(log_f0.nanmedian()))[:, None]], 1)
    labels, _ = fit_gaussian_mixture(y, num_clusters, seed=seed)
    return {r["id"]: int(k) for r, k in zip(rows, labels)}


def clustered_rows(train_rows: list[dict], dev_rows: list[dict], train, stft_cfg: StftConfig,
                   record: Path | None = None) -> tuple[list[dict], list[dict]]:
    """``train.labels: clustered``: the train and dev rows with ``speaker`` replaced by the clip's
    cluster (``cluster<k>``, K = ``train.num_components``), the clusters found over both splits
    together (:func:`cluster_clips`). ``record``: a CSV of ``id, speaker, split, cluster`` to
    write (the manifest's speaker kept there, for scoring the clusters)."""
    if train.num_components is None:
        raise InputError("train.num_components", "labels: clustered needs the number of clusters")
    rows = train_rows + dev_rows
    try:
        found = cluster_clips(rows, stft_cfg, train.num_components, train.cluster_dims, train.seed,
                              train.cluster_pitch)
    except ValueError as exc:
        raise InputError("train.labels", f"clustered: {exc}") from None
    used = {found[r["id"]] for r in train_rows}
    if len(used) < train.num_components:
        raise InputError("train.num_components", f"the clips fall into only {len(used)} of "
                                                 f"{train.num_components} clusters (training clips); "
                                                 "ask for fewer")
    if record is not None:
        record.parent.mkdir(parents=True, exist_ok=True)
        with open(record, "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["id", "speaker", "split", "cluster"])
            w.writerows([(r["id"], r["speaker"], r.get("split", ""), found[r["id"]]) for r in rows])
    relabel = [dict(r, speaker=f"cluster{found[r['id']]}") for r in rows]
    return relabel[:len(train_rows)], relabel[len(train_rows):]
