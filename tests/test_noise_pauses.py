"""Noise bases learnt from the pauses (the frames where the lips say nobody speaks), held fixed."""

from __future__ import annotations

import pytest
import torch

from pyro_avss.errors import InputError
from pyro_avss.inference.activity import pause_frames, pause_noise_bases
from pyro_avss.inference.batch_fit import noise_pauses
from pyro_avss.inference.separation import SeparationSettings, fit_batch
from pyro_avss.models.noise import NMFNoise, fit_is_nmf

from test_separation import random_models
from test_visual_pathway import DV, F, _models


def is_divergence(V, A):
    ratio = V / A
    return float((ratio - ratio.log() - 1).mean())


def test_pauses_are_silent_frames_away_from_speech():
    T = 50
    silent = torch.ones(1, T, dtype=torch.bool)
    silent[0, 20:30] = False                        # speech in frames 20-29
    mask = torch.ones(1, T, dtype=torch.bool)
    pauses = pause_frames(silent, mask, margin=3)[0]
    expected = torch.zeros(T, dtype=torch.bool)
    expected[:17] = True                            # at least 3 frames from frame 20 ...
    expected[33:] = True                            # ... and from frame 29
    assert torch.equal(pauses, expected)
    assert torch.equal(pause_frames(silent, mask, margin=0)[0], silent[0])
    padded = mask.clone()
    padded[0, 45:] = False                          # padding is neither a pause nor speech
    pauses = pause_frames(silent, padded, margin=3)[0]
    assert not pauses[45:].any() and pauses[33:45].all()


def test_is_nmf_recovers_a_low_rank_spectrogram_and_is_seeded():
    gen = torch.Generator().manual_seed(1)
    V = torch.rand(40, 2, generator=gen) @ torch.rand(2, 60, generator=gen) + 0.01
    W, H = fit_is_nmf(V, 2, seed=3, iterations=300)
    assert W.shape == (40, 2) and H.shape == (2, 60) and bool((W > 0).all() and (H > 0).all())
    start_W, start_H = fit_is_nmf(V, 2, seed=3, iterations=0)
    assert is_divergence(V, W @ H) < 0.01 * is_divergence(V, start_W @ start_H)
    assert torch.equal(W, fit_is_nmf(V, 2, seed=3, iterations=300)[0])


def test_pause_bases_model_the_pauses_and_are_flat_without_enough_of_them():
    B, T = 2, 30
    power = torch.rand(B, T, F) + 1.0
    noise = torch.linspace(0.5, 2.0, F)
    power[0, :12] = noise                            # utterance 1 pauses on a fixed spectrum
    pauses = torch.zeros(B, T, dtype=torch.bool)
    pauses[0, :12] = True
    pauses[1, :5] = True                             # utterance 2: fewer than min_frames pauses
    bases, level = pause_noise_bases(power, pauses, rank=2, seed=0)
    assert bases.shape == (B, F, 2) and level.shape == (B, 2)
    assert torch.allclose(bases[0] @ level[0], noise, rtol=0.02)
    assert torch.allclose(bases[1], torch.ones(F, 2))
    assert torch.allclose(level[1], torch.full((2,), 0.01 * float(power[1].mean()) / 2))
    alone, alone_level = pause_noise_bases(power[:1], pauses[:1], rank=2, seed=0)
    assert torch.equal(alone[0], bases[0]) and torch.equal(alone_level[0], level[0])   # batch-free


def test_nmf_noise_holds_its_pause_bases_and_learns_the_rest():
    B, T, R, Rp = 1, 6, 3, 2
    pause = torch.rand(B, F, Rp) + 0.1
    level = torch.full((B, Rp), 0.3)
    noise = NMFNoise(rank=R, smoothness=0.1, pauses=(pause, level))
    power, mask = torch.rand(B, T, F), torch.ones(B, T, dtype=torch.bool)
    W, H = noise.init_params(power, mask)
    assert W.shape == (B, F, R - Rp) and H.shape == (B, R, T)
    assert torch.allclose(H[:, :Rp], torch.full((B, Rp, T), 0.3))
    assert torch.equal(NMFNoise(rank=1, seed=0).init_params(power, mask)[0], W)   # learnt start as before
    with pytest.raises(ValueError, match="smooth_rank"):
        NMFNoise(rank=R, spectral_smoothness=0.1, smooth_rank=2, pauses=(pause, level))
    with pytest.raises(ValueError, match="pause bases"):
        NMFNoise(rank=1, pauses=(pause, level))


def test_separation_uses_pause_bases_with_a_visual_prior_only():
    B, T, J = 1, 40, 1
    power, mask = torch.rand(B, T, F) + 0.1, torch.ones(B, T, dtype=torch.bool)
    lips, present = torch.randn(B, T, J, DV), torch.ones(B, T, J)
    settings = SeparationSettings(steps=3, num_samples=1, noise_rank=6, noise_pause_rank=2)
    fit = fit_batch(_models(), power, lips, present, mask, settings)
    assert fit.params["noise_W"].shape == (B, F, 4)              # 2 of the 6 bases from the pauses
    assert fit.params["noise_log_H_map"].shape == (B, 6, T)
    assert torch.allclose(fit.masks.sum(2), torch.ones(B, T, F), atol=1e-4)
    faceless = fit_batch(_models(), power, lips, torch.zeros(B, T, J), mask, settings)
    assert faceless.params["noise_W"].shape == (B, F, 4)         # no video: flat pause bases
    bases, level = noise_pauses(_models(), settings, power, lips, torch.zeros(B, T, J), mask)
    assert torch.equal(bases, torch.ones(B, F, 2))
    assert torch.allclose(level, torch.full((B, 2), 0.01 * float(power.mean()) / 2))
    no_prior = fit_batch(_models(prior=False), power, lips, present, mask, settings)
    assert no_prior.params["noise_W"].shape == (B, F, 6)         # audio-visual bank without p(z|v)
    audio = fit_batch(random_models(), torch.rand(B, T, 513) + 0.1, torch.zeros(B, T, J, 0),
                      torch.zeros(B, T, J), mask, settings)
    assert audio.params["noise_W"].shape == (B, 513, 6)


def test_multiplicative_updates_keep_the_pause_bases():
    B, T = 1, 40
    power, mask = torch.rand(B, T, F) + 0.1, torch.ones(B, T, dtype=torch.bool)
    lips, present = torch.randn(B, T, 1, DV), torch.ones(B, T, 1)
    settings = SeparationSettings(steps=4, num_samples=1, noise_rank=5, noise_pause_rank=2,
                                  noise_smoothness=0, noise_updates="mu")
    fit = fit_batch(_models(), power, lips, present, mask, settings)
    assert fit.params["noise_W"].shape == (B, F, 3) and fit.params["noise_H"].shape == (B, 5, T)
    assert torch.allclose(fit.masks.sum(2), torch.ones(B, T, F), atol=1e-4)


def test_pause_settings_are_checked_against_the_noise_rank():
    with pytest.raises(InputError, match="separate.noise_pause_rank.*noise_rank = 2"):
        SeparationSettings(noise_rank=2)
    with pytest.raises(InputError, match="separate.noise_smooth_rank.*= 4"):
        SeparationSettings(noise_rank=8, noise_pause_rank=4, noise_smooth_rank=5)
    SeparationSettings(noise_rank=8, noise_pause_rank=0, noise_smooth_rank=8)
    for key, bad in (("noise_pause_rank", -1), ("noise_pause_threshold", 1.0), ("noise_pause_margin", -0.1),
                     ("noise_pause_smoothness", 0.0)):
        with pytest.raises(InputError, match=f"separate.{key}"):
            SeparationSettings(**{key: bad})


def test_the_pause_bases_activations_walk_with_their_own_step():
    """``separate.noise_pause_smoothness``: the pause bases' log activations step by their own
    σ, the learnt ones' by ``noise_smoothness``; unset, both by ``noise_smoothness``."""
    from pyro_avss.models.noise import LogRandomWalk

    pauses = (torch.rand(1, F, 3) + 0.1, torch.ones(1, 3))
    noise = NMFNoise(rank=5, smoothness=0.1, pauses=pauses, pause_smoothness=0.02)
    assert noise.step_scales().flatten().tolist() == pytest.approx([0.02] * 3 + [0.1] * 2)
    assert NMFNoise(rank=5, smoothness=0.1, pauses=pauses).step_scales().flatten().tolist() == \
        pytest.approx([0.1] * 5)
    u = torch.randn(1, 5, 20)
    walk = LogRandomWalk(noise.step_scales(), (1, 5, 20))
    expected = sum(torch.distributions.Normal(0.0, s).log_prob(u[0, r].diff()).sum()
                   for r, s in enumerate([0.02] * 3 + [0.1] * 2))
    assert float(walk.log_prob(u)) == pytest.approx(float(expected), rel=1e-5)
