"""Clusters of an unlabelled switch are scored by balanced accuracy and NMI, which a dominant
speaker cannot inflate (purity can)."""

from __future__ import annotations

import numpy as np
import pytest

from pyro_avss.evaluation.speaker_models import cluster_scores


def test_one_cluster_for_everything_scores_chance_however_unbalanced():
    s = cluster_scores(np.array([[500, 28], [0, 0]]))        # GRID's train ratio, one cluster
    assert s["purity"] == pytest.approx(500 / 528)           # 94.7 %: says nothing
    assert s["balanced_accuracy"] == pytest.approx(0.5)
    assert s["nmi"] == pytest.approx(0.0)


def test_perfect_and_independent_clusterings():
    perfect = cluster_scores(np.array([[0, 7, 0], [30, 0, 0], [0, 0, 3]]))
    assert perfect["balanced_accuracy"] == 1.0 and perfect["nmi"] == pytest.approx(1.0)
    assert perfect["mapping"] == [1, 0, 2]                   # cluster of each speaker column
    independent = cluster_scores(np.array([[10, 20], [10, 20]]))
    assert independent["nmi"] == pytest.approx(0.0, abs=1e-12)
    assert independent["balanced_accuracy"] == pytest.approx(0.5)


def test_mapping_maximises_the_balanced_accuracy_not_the_hit_count():
    # speaker 0: 100 clips in cluster 0, 50 in cluster 1; speaker 1: its 20 clips in cluster 0.
    # Most hits (100 + 0 > 50 + 20) map cluster 0 to speaker 0, with recalls 2/3 and 0; the
    # better mean recall maps cluster 1 to speaker 0: 1/3 and 1
    s = cluster_scores(np.array([[100, 20], [50, 0]]))
    assert s["mapping"] == [1, 0]
    assert s["balanced_accuracy"] == pytest.approx((50 / 150 + 1.0) / 2)
    assert 0 < s["nmi"] < 1
