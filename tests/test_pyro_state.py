"""Separation leaves Pyro's global state to its caller, and needs no naming conventions.

* A fit runs in a param store and random streams of its own: the caller's parameters, and where
  their random sequences stand, are the same after separating (also after a failed fit).
* Masks and posteriors come from replaying the model at the guide's draws, so a guide of the
  user's own (other parameter names) and a noise model with a latent variable of its own give
  valid masks.
"""

from __future__ import annotations

import random

import numpy as np
import pyro
import pyro.distributions as dist
import pytest
import torch

from pyro_avss.checkpoint import SpeechModels
from pyro_avss.inference.separation import SeparationSettings, fit_batch, separate_recordings
from pyro_avss.nets.lips import LipProjection
from pyro_avss.nets.vae import DecoderBank, SpeechEncoder
from pyro_avss.audio import StftConfig

FAST = SeparationSettings(steps=8, num_samples=2)


def random_models(K=2):
    torch.manual_seed(0)
    return SpeechModels(SpeechEncoder(513, 4, 16), DecoderBank(K, 513, 4, 16), LipProjection(1, 8), StftConfig())


def recording(seconds=0.5):
    return (0.1 * np.random.default_rng(0).standard_normal(int(16000 * seconds))).astype(np.float32)


def streams(seed):
    torch.manual_seed(seed)
    np.random.seed(seed)
    random.seed(seed)


def draws():
    return torch.rand(3), np.random.rand(3), random.random()


def test_separation_leaves_the_callers_params_and_random_streams_alone():
    models, x = random_models(), recording()
    streams(123)
    expected = draws()
    pyro.clear_param_store()
    mine = pyro.param("users_own", torch.ones(3))
    streams(123)
    separate_recordings(models, [(x, [None, None])], FAST)
    got = draws()
    assert torch.equal(got[0], expected[0]) and np.array_equal(got[1], expected[1]) and got[2] == expected[2]
    store = pyro.get_param_store()
    assert list(store.keys()) == ["users_own"] and store["users_own"] is mine
    pyro.clear_param_store()


def test_a_failed_fit_gives_the_store_back():
    pyro.clear_param_store()
    pyro.param("users_own", torch.ones(3))

    class Broken:
        def log_variance(self, power, mask, plates=None):
            pyro.param("half_made", torch.zeros(1))
            raise RuntimeError("noise model failed")

    with pytest.raises(RuntimeError, match="noise model failed"):
        separate_recordings(random_models(), [(recording(), [None])], FAST, make_noise=Broken)
    assert list(pyro.get_param_store().keys()) == ["users_own"]
    pyro.clear_param_store()


class LevelNoise:
    """A stationary noise whose log level is a latent variable per utterance:
    ``u_b ~ N(0, 1)``, noise variance ``exp(u_b) · c[f]`` with ``c`` the mixture's mean spectrum."""

    def log_variance(self, power, mask, plates):
        utt, _ = plates
        with utt:
            level = pyro.sample("my_level", dist.Normal(power.new_zeros(power.shape[0], 1), 1.0))  # (B,1)
        shape = (power * mask[..., None]).sum(1) / mask.sum(1, keepdim=True)                      # (B,F)
        return (level[..., None] + shape.clamp_min(1e-8).log()[:, None, :]).expand_as(power)


def my_guide(sep):
    """A guide with names of its own: a per-frame Gaussian ``q(z)`` and a Gaussian ``q(u)``."""

    def guide(power, lips, present, mask):
        B, T, _ = power.shape
        J, D = lips.shape[-2], sep.decoders.latent_dim
        mu = pyro.param("my_mu", lambda: power.new_zeros(B, T, J, D))
        sd = pyro.param("my_sd", lambda: power.new_full((B, T, J, D), 0.5),
                        constraint=dist.constraints.positive)
        where = pyro.param("my_where", lambda: power.new_zeros(B, 1))
        utt, time = sep.plates(power)
        with utt:
            pyro.sample("my_level", dist.Normal(where, 0.1))
            with time, pyro.poutine.mask(mask=mask), pyro.poutine.scale(scale=sep.prior_weight):
                pyro.sample("z", dist.Normal(mu, sd).to_event(2))

    return guide


@pytest.mark.parametrize("prior", ["utterance", "iid", "markov"])
def test_a_users_guide_and_latent_noise_give_valid_masks(prior):
    models = random_models()
    B, T, F, J = 2, 20, 513, 2
    power = torch.rand(B, T, F) + 0.05
    mask = torch.ones(B, T, dtype=torch.bool)
    mask[1, 15:] = False
    settings = SeparationSettings(steps=8, num_samples=3, switch_prior=prior, prune_threshold=0)
    fit = fit_batch(models, power, torch.zeros(B, T, J, 0), torch.zeros(B, T, J), mask, settings,
                    make_noise=LevelNoise, make_guide=my_guide)
    assert torch.allclose(fit.masks.sum(2), torch.ones(B, T, F), atol=1e-5)
    assert torch.allclose(fit.posterior.sum(-1), torch.ones(B, T, J), atol=1e-5)
    assert {"my_mu", "my_sd", "my_where"} <= fit.params.keys() and "z_loc" not in fit.params
    assert not torch.equal(fit.params["my_where"], torch.zeros(B, 1))          # it was fitted


def test_pieces_that_lack_part_of_their_protocol_are_refused_when_the_model_is_built():
    from pyro_avss.models.generative import SeparationModel
    from pyro_avss.models.switch import make_switch

    models = random_models()
    switch = make_switch("utterance", 2, 1)

    class NoVariance:
        def level(self, power):
            return power

    with pytest.raises(TypeError, match=r"noise model \(NoVariance\) does not follow NoiseModel: missing log_variance"):
        SeparationModel(models.encoder, models.decoders, switch, NoVariance())
    with pytest.raises(TypeError, match="switch prior .* missing observe_mixture, fitted_posterior"):
        SeparationModel(models.encoder, models.decoders, object())
    with pytest.raises(TypeError, match="decoder bank .* missing .*num_components"):
        SeparationModel(models.encoder, torch.nn.Linear(2, 2), switch)
    with pytest.raises(TypeError, match="lip front end"):
        SpeechModels(models.encoder, models.decoders, models.lips, models.stft, lip_encoder=torch.nn.Linear(2, 2))
