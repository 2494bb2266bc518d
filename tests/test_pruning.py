"""Decoders that no source needs are dropped part-way through the fit (separate.prune_threshold)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pyro_avss.errors import InputError
from pyro_avss.inference import batch_fit, separation
from pyro_avss.inference.separation import SeparationSettings, separate_recordings

from test_separation import noisy, random_models


def models_with_implausible_components(K=4, implausible=(1, 3)):
    """A random bank in which some components predict speech ~e^15 times louder than any input:
    their switch posterior is ~0 after a few steps, so pruning must drop exactly them."""
    models = random_models(K=K)
    d = models.decoders
    with torch.no_grad():
        for k in implausible:
            d.b3[k].fill_(15.0)
    return models


def bank_sizes_seen(monkeypatch):
    """Record the number of components of every SeparationModel built during a fit."""
    seen, real = [], batch_fit.SeparationModel

    def spy(encoder, decoders, *args, **kwargs):
        seen.append(decoders.num_components)
        return real(encoder, decoders, *args, **kwargs)

    monkeypatch.setattr(batch_fit, "SeparationModel", spy)
    return seen


@pytest.mark.parametrize("J,prior,learn_stay", [(1, "iid", False), (2, "iid", False),
                                                (1, "utterance", False), (2, "markov", False),
                                                (2, "markov", True)])
def test_pruning_drops_the_unneeded_components(monkeypatch, J, prior, learn_stay):
    seen = bank_sizes_seen(monkeypatch)
    x = noisy()
    settings = SeparationSettings(steps=14, num_samples=2, tol=0.0, switch_prior=prior,
                                  learn_stay=learn_stay, prune_threshold=1e-3, prune_after=5)
    out = separate_recordings(models_with_implausible_components(), [(x, [None] * J)], settings)[0]
    assert seen[0] == 4 and 1 <= seen[1] <= 2 and len(seen) == 2     # (utterance: maybe one)
    assert out.components_run == seen[1]                      # what the bench's `kept` reports
    assert out.posterior.shape[-2:] == (J, 4)                 # reported on the whole bank
    assert np.all(out.posterior[..., [1, 3]] == 0)
    assert np.allclose(out.posterior.sum(-1), 1, atol=1e-4)
    assert np.abs(out.sources.sum(0) + out.noise - x).max() < 1e-4
    if learn_stay:                                   # the learnt stay survives the smaller bank
        assert out.switch_stay.shape == (J,) and np.all((out.switch_stay > 0) & (out.switch_stay < 1))


def fit_twice(monkeypatch, prior, implausible=(1, 3), **common):
    """The same fit without and with pruning; returns both results and both fitted π (or None)."""
    x = noisy()
    fits = []
    fit_batch = separation.fit_batch
    monkeypatch.setattr(separation, "fit_batch", lambda *a, **k: fits.append(fit_batch(*a, **k)) or fits[-1])
    out = [separate_recordings(models_with_implausible_components(implausible=implausible), [(x, [None])],
                               SeparationSettings(switch_prior=prior, prune_threshold=threshold, **common))[0]
           for threshold in (0.0, 1e-3)]
    return out, [fit.params.get("switch_pi") for fit in fits]


def test_pruned_fit_equals_the_unpruned_one_when_the_prior_is_fixed(monkeypatch):
    """The utterance switch has a fixed uniform π, so dropping components whose posterior is ~0
    (here all but one) changes nothing but the cost (the look at the posterior does not touch the random streams)."""
    (full, pruned), _ = fit_twice(monkeypatch, "utterance", implausible=(1, 2, 3), steps=20, num_samples=2, tol=0.0, prune_after=5)
    assert np.abs(pruned.sources - full.sources).max() < 1e-4 * np.abs(full.sources).max()
    assert np.abs(pruned.posterior - full.posterior).max() < 1e-4


def test_pruning_carries_the_learnt_switch_prior_over(monkeypatch):
    (full, pruned), (pi_full, pi_pruned) = fit_twice(monkeypatch, "iid", steps=20, num_samples=2, tol=0.0,
                                                     prune_after=5)
    assert pi_full.shape[-1] == 4 and pi_pruned.shape[-1] == 2
    kept = pi_full[..., [0, 2]] / pi_full[..., [0, 2]].sum(-1, keepdim=True)
    assert torch.allclose(pi_pruned, kept, atol=0.05)
    # π of the kept components is renormalised, so the rest of the fit differs a little
    err = np.sum((pruned.sources - full.sources) ** 2) / np.sum(full.sources ** 2)
    assert 10 * np.log10(err) < -20


def test_no_pruning_below_the_threshold_or_with_one_component(monkeypatch):
    seen = bank_sizes_seen(monkeypatch)
    x = noisy()
    out = separate_recordings(random_models(K=3), [(x, [None])],
                              SeparationSettings(steps=8, num_samples=1, tol=0.0, switch_prior="iid",
                                                 prune_threshold=1e-12, prune_after=3))[0]
    assert out.components_run == 3
    separate_recordings(random_models(K=1), [(x, [None])],
                        SeparationSettings(steps=8, num_samples=1, tol=0.0, prune_threshold=0.5,
                                           prune_after=3))
    assert seen == [3, 1]


def test_pruning_respects_components_told_per_source(monkeypatch):
    """With an oracle restriction per source, pruning keeps every source's own component."""
    x = noisy()
    settings = SeparationSettings(steps=10, num_samples=1, tol=0.0, switch_prior="iid",
                                  source_components=((0,), (2,)), prune_threshold=1e-3, prune_after=4)
    out = separate_recordings(models_with_implausible_components(), [(x, [None, None])], settings)[0]
    assert np.allclose(out.posterior[:, 0, 0], 1, atol=1e-4)
    assert np.allclose(out.posterior[:, 1, 2], 1, atol=1e-4)


@pytest.mark.parametrize("change", [{"prune_threshold": 1.0}, {"prune_threshold": -0.1},
                                    {"prune_after": 0}])
def test_bad_pruning_settings_name_their_key(change):
    with pytest.raises(InputError, match=f"^separate.{next(iter(change))}:"):
        SeparationSettings(**change)
