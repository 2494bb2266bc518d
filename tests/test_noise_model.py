"""The noise model's smooth activations and the babble noise of the held-out protocol."""

from __future__ import annotations

import numpy as np
import pyro
import pytest
import soundfile as sf
import torch

from pyro_avss.data.babble import babble, write_babble_noises
from pyro_avss.data.clips import Clip
from pyro_avss.errors import InputError
from pyro_avss.inference.separation import SeparationSettings, separate_recordings
from pyro_avss.models.noise import LogRandomWalk, NMFNoise

from test_separation import noisy, random_models


def test_log_random_walk_scores_only_steps_between_real_frames():
    u = torch.tensor([[[0.0, 1.0, 3.0, 10.0]]])                  # (B=1, R=1, T=4)
    mask = torch.tensor([[True, True, True, False]])
    walk = LogRandomWalk(0.5, u.shape, mask)
    expected = torch.distributions.Normal(0.0, 0.5).log_prob(torch.tensor([1.0, 2.0])).sum()
    assert torch.allclose(walk.log_prob(u), expected)
    assert walk.sample().shape == u.shape


def latent_noise_site(noise, name: str, batch: int = 1):
    """The model trace's site ``name`` of ``noise`` replayed from its guide (fresh parameters),
    checked to be a latent sample site at the guide's MAP parameter ``<name>_map``."""
    power, mask = torch.rand(batch, 6, 5) + 0.1, torch.ones(batch, 6, dtype=torch.bool)
    pyro.clear_param_store()
    guide = pyro.poutine.trace(noise.guide).get_trace(power, mask)
    model = pyro.poutine.trace(pyro.poutine.replay(noise.log_variance, trace=guide)).get_trace(power, mask)
    site = model.nodes[name]
    assert site["type"] == "sample" and not site["is_observed"]
    assert torch.equal(site["value"], pyro.param(f"{name}_map"))
    return site, model


def test_smooth_noise_is_a_latent_site_with_a_map_guide():
    latent_noise_site(NMFNoise(rank=2, smoothness=0.1), "noise_log_H")
    assert not NMFNoise().__dict__.get("guide")                  # the free-H NMF has no latent


def test_smooth_noise_separation_is_exact_and_flatter_in_time():
    x = noisy(seconds=1.0)
    free = separate_recordings(random_models(), [(x, [None])], SeparationSettings(steps=30, num_samples=2))[0]
    smooth = separate_recordings(random_models(), [(x, [None])],
                                 SeparationSettings(steps=30, num_samples=2, noise_smoothness=0.02))[0]
    assert np.abs(smooth.sources.sum(0) + smooth.noise - x).max() < 1e-4

    def roughness(noise):                     # frame-to-frame change of the noise's log energy
        frames = noise[: len(noise) // 256 * 256].reshape(-1, 256)
        return np.abs(np.diff(np.log((frames ** 2).mean(1) + 1e-10))).mean()

    assert roughness(smooth.noise) < roughness(free.noise)


def test_multiplicative_noise_updates_separate_end_to_end(monkeypatch):
    """``separate.noise_updates=mu`` reads the model at the guide's mean between SVI steps; the
    guide's plates are sample sites without a mean, which once failed every separation."""
    calls = []
    original = NMFNoise.multiplicative_update

    def spy(self, *args):
        calls.append(1)
        return original(self, *args)

    monkeypatch.setattr(NMFNoise, "multiplicative_update", spy)
    x = noisy(seconds=1.0)
    out = separate_recordings(random_models(), [(x, [None])],
                              SeparationSettings(steps=5, tol=0, num_samples=1, noise_smoothness=0,
                                                 noise_updates="mu"))[0]
    assert len(calls) == 5                                        # one update after every step
    assert np.isfinite(out.sources).all()
    assert np.abs(out.sources.sum(0) + out.noise - x).max() < 1e-4


def test_smooth_noise_refuses_multiplicative_updates():
    with pytest.raises(InputError, match="separate.noise_updates"):
        SeparationSettings(noise_smoothness=0.1, noise_updates="mu")
    with pytest.raises(InputError, match="separate.noise_smoothness"):
        SeparationSettings(noise_smoothness=-1.0)


def _pool(tmp_path, speakers=4, seconds=1.0):
    clips = []
    for i in range(speakers):
        path = tmp_path / f"spk{i}.wav"
        t = np.arange(int(16000 * seconds)) / 16000
        sf.write(path, (0.1 * (i + 1) * np.sin(2 * np.pi * (150 + 50 * i) * t)).astype(np.float32), 16000)
        clips.append(Clip(id=f"u{i}", speaker=f"spk{i}", audio=path))
    return clips


def test_babble_sums_equal_level_talkers_deterministically(tmp_path):
    pool = _pool(tmp_path)
    a, b = babble(pool, 2, 1.5, seed=3), babble(pool, 2, 1.5, seed=3)
    assert a.shape == (24000,) and np.array_equal(a, b)
    assert np.isclose(np.abs(a).max(), 0.5, atol=1e-6)
    assert not np.array_equal(a, babble(pool, 2, 1.5, seed=4))
    with pytest.raises(InputError, match="5 talkers"):
        babble(pool, 5, 1.0)
    with pytest.raises(InputError, match="needed per talker"):
        babble(pool, 4, 3.0)                                    # one 1-s clip per talker only
    noises = write_babble_noises(pool, [2, 3], tmp_path / "noise", seconds=1.0)
    assert [n for n, _ in noises] == ["babble2", "babble3"] and all(p.exists() for _, p in noises)
