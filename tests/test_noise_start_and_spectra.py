"""Two noise-model options: the start from lip-silent frames and spectrally smooth NMF bases."""

from __future__ import annotations

import numpy as np
import pyro
import pytest
import torch

from pyro_avss.audio import StftConfig, stft
from pyro_avss.errors import InputError
from pyro_avss.inference.activity import lip_noise_shape, silent_frames
from pyro_avss.inference.separation import SeparationSettings, fit_batch, separate_recordings
from pyro_avss.models.noise import NMFNoise

from test_noise_model import latent_noise_site
from test_separation import noisy, random_models
from test_visual_pathway import DV, F, _models


# ---------------------------------------------------------------------------------------------
# silent frames and the noise start shape
# ---------------------------------------------------------------------------------------------
def test_silent_frames_need_every_source_closed_and_seen():
    T = 50
    level = torch.zeros(1, T, 2)
    level[0, 10:40, 0] = 5.0                       # source 1 speaks in frames 10-39
    level[0, 20:30, 1] = 5.0                       # source 2 in frames 20-29
    present = torch.ones(1, T, 2)
    present[0, 45:, 1] = 0.0                       # source 2's face lost at the end
    mask = torch.ones(1, T, dtype=torch.bool)
    silent = silent_frames(level, present, mask)[0]
    expected = torch.zeros(T, dtype=torch.bool)
    expected[:10] = True
    expected[40:45] = True
    assert torch.equal(silent, expected)
    flat = torch.zeros(1, T, 2)                    # no open/closed contrast: nothing is silent
    assert not silent_frames(flat, present, mask).any()
    short = mask.clone()
    short[0, 5:] = False                           # padded frames are never silent
    assert not silent_frames(level, present, short)[0, 5:].any()


def test_noise_shape_is_the_mean_spectrum_of_silent_frames(monkeypatch):
    B, T = 2, 40
    power = torch.rand(B, T, F) + 0.5
    power[0, :20] = torch.linspace(1.0, 3.0, F)   # utterance 1: silent frames hold this spectrum
    level = torch.zeros(B, T, 1)
    level[0, 20:] = 4.0                            # utterance 1 speaks in its second half only
    level[1, :30] = 4.0                            # ... fewer than min_frames of them
    level[1, 30:] = torch.tensor([0.0, 4.0] * 5)[:, None]
    import pyro_avss.inference.activity as activity

    monkeypatch.setattr(activity, "lip_speech_level", lambda *a: level)
    shape = lip_noise_shape(None, None, power, torch.zeros(B, T, 1, DV), torch.ones(B, T, 1),
                            torch.ones(B, T, dtype=torch.bool))
    target = torch.linspace(1.0, 3.0, F)
    assert torch.allclose(shape[0], target / target.mean(), atol=1e-5)
    assert torch.equal(shape[1], torch.ones(F))    # too few silent frames: flat start
    assert torch.allclose(shape.mean(-1), torch.ones(B))


def test_shaped_start_keeps_the_level_and_takes_the_shape():
    power, mask = torch.rand(1, 8, F) + 0.1, torch.ones(1, 8, dtype=torch.bool)
    shape = torch.linspace(0.5, 1.5, F)[None]
    W0, H0 = NMFNoise(rank=4, seed=1).init_params(power, mask)
    W1, H1 = NMFNoise(rank=4, seed=1, start_shape=shape).init_params(power, mask)
    assert torch.equal(H0, H1)
    assert torch.allclose(W1, W0 * shape[..., None])
    with pytest.raises(ValueError, match="positive"):
        NMFNoise(start_shape=torch.zeros(1, F))


def test_lips_start_needs_a_visual_prior_and_auto_falls_back():
    B, T, J = 1, 24, 1
    power, mask = torch.rand(B, T, F) + 0.1, torch.ones(B, T, dtype=torch.bool)
    lips, present = torch.randn(B, T, J, DV), torch.ones(B, T, J)
    lipstart = SeparationSettings(steps=2, num_samples=1, noise_start="lips", guide_init="encoder")
    masks, _, _ = fit_batch(_models(), power, lips, present, mask, lipstart)
    assert torch.allclose(masks.sum(2), torch.ones(B, T, F), atol=1e-4)
    with pytest.raises(InputError, match="separate.noise_start"):
        fit_batch(_models(prior=False), power, lips, present, mask, lipstart)
    auto = SeparationSettings(steps=2, num_samples=1, noise_start="auto", guide_init="encoder")
    fit_batch(_models(prior=False), power, lips, present, mask, auto)     # flat, no error
    with pytest.raises(InputError, match="separate.noise_start"):
        SeparationSettings(noise_start="bogus")


# ---------------------------------------------------------------------------------------------
# spectrally smooth bases
# ---------------------------------------------------------------------------------------------
def test_smooth_bases_are_latent_random_walks_over_frequency_with_a_map_guide():
    site, model = latent_noise_site(NMFNoise(rank=3, spectral_smoothness=0.2), "noise_log_W", batch=2)
    assert tuple(site["value"].shape) == (2, 3, 5)                 # (B, R, F): walks along F
    assert "noise_log_H" not in model.nodes and "noise_H" in pyro.get_param_store()
    steps = site["value"].diff(dim=-1)
    expected = torch.distributions.Normal(0.0, 0.2).log_prob(steps).sum()
    assert torch.allclose(site["fn"].log_prob(site["value"]).sum(), expected)


def test_smooth_bases_separation_is_exact_and_smoother_across_frequency():
    x = noisy(seconds=1.0)
    free = NMFNoise(rank=4)
    settings = SeparationSettings(steps=30, num_samples=2, noise_spectral_smoothness=0.02, noise_smoothness=0.1)
    out = separate_recordings(random_models(), [(x, [None])], settings)[0]
    assert np.abs(out.sources.sum(0) + out.noise - x).max() < 1e-4
    power = stft(torch.as_tensor(x), StftConfig()).abs().pow(2)[None]
    fit = fit_batch(random_models(), power / power.mean(), torch.zeros(1, power.shape[1], 1, 0),
                    torch.zeros(1, power.shape[1], 1), torch.ones(1, power.shape[1], dtype=torch.bool), settings)
    log_W = fit.params["noise_log_W_map"]
    free_W = free.init_params(torch.ones(1, 4, 513), torch.ones(1, 4, dtype=torch.bool))[0].log()
    assert log_W.diff(dim=-1).abs().mean() < free_W.transpose(-1, -2).diff(dim=-1).abs().mean()
    with pytest.raises(InputError, match="separate.noise_spectral_smoothness"):
        SeparationSettings(noise_spectral_smoothness=-0.1)
    with pytest.raises(InputError, match="separate.noise_updates"):
        SeparationSettings(noise_smoothness=0, noise_spectral_smoothness=0.1, noise_updates="mu")


def test_some_bases_smooth_and_the_others_free():
    site, model = latent_noise_site(NMFNoise(rank=3, spectral_smoothness=0.2, smooth_rank=2), "noise_log_W")
    assert tuple(site["value"].shape) == (1, 2, 5)                 # the first two bases are latent
    assert tuple(pyro.param("noise_W").shape) == (1, 5, 1)         # the third is a free parameter
    assert tuple(model.nodes["_RETURN"]["value"].shape) == (1, 6, 5)
    free = NMFNoise(rank=3, spectral_smoothness=0.2, smooth_rank=0)
    assert not free.__dict__.get("guide")                         # no latent bases, free H
    with pytest.raises(ValueError, match="smooth_rank"):
        NMFNoise(rank=3, spectral_smoothness=0.2, smooth_rank=4)
    for bad in (5, ";", 2.5, True):
        with pytest.raises(InputError, match="separate.noise_smooth_rank"):
            SeparationSettings(noise_rank=4, noise_smooth_rank=bad)
    x = noisy(seconds=0.5)
    out = separate_recordings(random_models(), [(x, [None])],
                              SeparationSettings(steps=5, num_samples=1, noise_rank=4, noise_pause_rank=0,
                                                 noise_smooth_rank=2, noise_spectral_smoothness=0.1))[0]
    assert np.abs(out.sources.sum(0) + out.noise - x).max() < 1e-4
