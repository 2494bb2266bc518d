"""Unsupervised speaker discovery per clip (train.labels: clustered): the mixture finds a rare
speaker, the clusters become the training labels, and real GRID s1 vs s4 clips separate."""

from __future__ import annotations

import csv

import numpy as np
import pytest
import soundfile as sf
import torch

from pyro_avss.audio import StftConfig
from pyro_avss.errors import InputError
from pyro_avss.evaluation.speaker_models import cluster_scores
from pyro_avss.inference.clip_clusters import (clip_log_pitch, clip_statistics, cluster_clips,
                                               clustered_rows, fit_gaussian_mixture,
                                               principal_projection)
from pyro_avss.inference.inputs import normalised_power
from pyro_avss.inference.training import fit
from pyro_avss.models.harmonics import HarmonicCombs
from pyro_avss.settings.training import TrainSettings

from conftest import grid_rows
from test_training import synthetic_rows, tiny_config


def balanced_accuracy(assigned, truth) -> float:
    speakers = sorted(set(truth))
    counts = np.zeros((max(assigned) + 1, len(speakers)), int)
    for k, s in zip(assigned, truth):
        counts[k, speakers.index(s)] += 1
    return cluster_scores(counts)["balanced_accuracy"]


def test_the_mixture_finds_a_rare_cluster_that_equal_sizes_would_split():
    # 300 points of one broad cluster, 12 of a distinct small one: learnt weights keep the small
    # cluster whole instead of halving the large one
    gen = torch.Generator().manual_seed(1)
    big = torch.randn((300, 3), generator=gen) * torch.tensor([3.0, 1.0, 1.0])
    small = torch.randn((12, 3), generator=gen) * 0.3 + torch.tensor([0.0, 6.0, 0.0])
    labels, loglik = fit_gaussian_mixture(torch.cat([big, small]).double(), 2, restarts=5)
    truth = ["big"] * 300 + ["small"] * 12
    assert balanced_accuracy(labels.tolist(), truth) == 1.0
    assert np.isfinite(loglik)
    # the same seed gives the same clusters
    again, _ = fit_gaussian_mixture(torch.cat([big, small]).double(), 2, restarts=5)
    assert torch.equal(labels, again)


def test_clip_statistics_ignore_the_level_and_keep_the_spectrum():
    gen = torch.Generator().manual_seed(0)
    power = torch.rand((50, 9), generator=gen, dtype=torch.float64) + 0.1
    stats = clip_statistics(power)
    assert stats.shape == (18,)
    assert torch.allclose(clip_statistics(power * 7.0)[9:], stats[9:])           # spreads: level-free
    assert torch.allclose(clip_statistics(power * 7.0)[:9] - stats[:9],          # means: a shift
                          torch.full((9,), np.log(7.0), dtype=torch.float64))
    projected = principal_projection(torch.randn((6, 18), generator=gen, dtype=torch.float64), 10)
    assert projected.shape == (6, 6)                                              # at most N axes


def test_clip_log_pitch_reads_a_voice_and_is_nan_without_one():
    cfg = StftConfig()
    combs = HarmonicCombs(cfg.num_bins, cfg.sample_rate, cfg.n_fft)
    t = np.arange(cfg.sample_rate) / cfg.sample_rate
    for f0 in (110.0, 220.0):
        voice = sum(np.sin(2 * np.pi * h * f0 * t) / h for h in range(1, 20)).astype(np.float32)
        power = normalised_power(voice, cfg)[0].double()
        assert abs(np.exp(clip_log_pitch(power, combs)) - f0) < 0.02 * f0
    assert np.isnan(clip_log_pitch(torch.ones((40, cfg.num_bins), dtype=torch.float64), combs))


def test_clustered_rows_relabel_both_splits_and_record_the_clusters(tmp_path):
    rows = synthetic_rows(tmp_path, speakers=("a", "b"), per_speaker=4)
    train = [r for r in rows if r["split"] == "train"]
    dev = [r for r in rows if r["split"] == "dev"]
    settings = TrainSettings(mode="switching", init="x.pt", labels="clustered", num_components=2,
                             cluster_dims=4)
    new_train, new_dev = clustered_rows(train, dev, settings, StftConfig(), tmp_path / "clusters.csv")
    assert [r["id"] for r in new_train] == [r["id"] for r in train]
    assert {r["speaker"] for r in new_train + new_dev} <= {"cluster0", "cluster1"}
    with open(tmp_path / "clusters.csv", newline="") as f:
        recorded = list(csv.DictReader(f))
    # the record keeps the manifest's speaker next to the cluster that replaced it
    assert [(r["id"], r["speaker"]) for r in recorded] == [(r["id"], r["speaker"]) for r in train + dev]
    assert [f"cluster{r['cluster']}" for r in recorded] == [r["speaker"] for r in new_train + new_dev]
    with pytest.raises(InputError, match="train.num_components"):
        clustered_rows(train, dev, TrainSettings(mode="switching", init="x.pt", labels="clustered"),
                       StftConfig())
    with pytest.raises(InputError, match="train.labels: clustered: cannot form 20 clusters"):
        clustered_rows(train, dev, TrainSettings(mode="switching", init="x.pt", labels="clustered",
                                                 num_components=20), StftConfig())


def two_timbre_rows(folder, per_speaker=4, seconds=0.6):
    """Clips of two 'speakers' with different spectral tilts (low-passed and high-passed
    noise, amplitude-modulated), which the clip statistics tell apart."""
    rng = np.random.default_rng(0)
    t = np.arange(int(16000 * seconds)) / 16000
    rows = []
    for spk, tilt in (("low", np.cumsum), ("high", lambda x: np.diff(x, prepend=0.0))):
        for i in range(per_speaker):
            x = tilt(rng.standard_normal(len(t)))
            x = x / np.abs(x).max() * (0.3 + 0.2 * np.sin(2 * np.pi * (2 + i) * t))
            path = folder / f"{spk}_{i}.wav"
            sf.write(path, x.astype(np.float32), 16000)
            rows.append({"id": f"{spk}_{i}", "speaker": spk, "split": "train" if i else "dev",
                         "audio": str(path), "lips": ""})
    return rows


def test_fit_with_clustered_labels_trains_one_decoder_per_cluster(tmp_path):
    rows = two_timbre_rows(tmp_path)
    fit(tiny_config("train.epochs=1"), tmp_path / "uni", rows=rows, progress=False)
    sw = fit(tiny_config("train.epochs=1", "train.mode=switching", "train.labels=clustered",
                         "train.num_components=2", "train.cluster_dims=4",
                         f"train.init={tmp_path / 'uni' / 'model.pt'}"), tmp_path / "sw", rows=rows,
             progress=False)
    assert sw.component_names == ["cluster0", "cluster1"]
    with open(tmp_path / "sw" / "clusters.csv", newline="") as f:
        recorded = list(csv.DictReader(f))
    assert balanced_accuracy([int(r["cluster"]) for r in recorded], [r["speaker"] for r in recorded]) == 1.0
    assert not torch.equal(sw.decoders.w3[0], sw.decoders.w3[1])
    # more clusters than the clips hold: refused with the key to change, before training
    with pytest.raises(InputError, match="train.num_components: the clips fall into only"):
        fit(tiny_config("train.epochs=1", "train.mode=switching", "train.labels=clustered",
                        "train.num_components=7", "train.cluster_dims=4",
                        f"train.init={tmp_path / 'uni' / 'model.pt'}"), tmp_path / "sw7", rows=rows,
            progress=False)


def test_grid_s1_and_s4_clips_fall_into_their_own_clusters():
    # real clips, unbalanced as in the corpus (about 14 s1 clips for every s4 one)
    rows = grid_rows("train", "s1", 100) + grid_rows("train", "s4", 7)
    found = cluster_clips(rows, StftConfig(), 2)
    assert balanced_accuracy([found[r["id"]] for r in rows], [r["speaker"] for r in rows]) == 1.0
    # without the pitch, the spectral summary alone is good but not perfect on these clips
    found = cluster_clips(rows, StftConfig(), 2, pitch=False)
    assert balanced_accuracy([found[r["id"]] for r in rows], [r["speaker"] for r in rows]) >= 0.9
