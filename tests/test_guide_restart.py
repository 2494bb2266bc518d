"""The separation guide's restart from each source's own estimate (separate.restart_at)."""

from __future__ import annotations

import pyro
import pytest
import torch
from pyro.infer import SVI, Trace_ELBO

from pyro_avss.audio import StftConfig
from pyro_avss.checkpoint import SpeechModels
from pyro_avss.errors import InputError
from pyro_avss.inference.batch_fit import fit_batch
from pyro_avss.inference.guide_restart import restart_guide, source_power_estimates
from pyro_avss.inference.optim import DecayingAdam
from pyro_avss.inference.pyro_state import isolated_pyro_state
from pyro_avss.models.generative import SeparationModel
from pyro_avss.models.noise import NMFNoise
from pyro_avss.models.switch import make_switch
from pyro_avss.nets.lips import LipProjection
from pyro_avss.nets.vae import DecoderBank, SpeechEncoder, VisualPrior
from pyro_avss.settings.separation import SeparationSettings

F, D, DV, B, T, J = 17, 3, 4, 2, 9, 2


def _models() -> SpeechModels:
    torch.manual_seed(0)
    return SpeechModels(SpeechEncoder(F, D, 16, DV), DecoderBank(2, F, D, 16, DV), LipProjection(DV, 8),
                        StftConfig(), prior=VisualPrior(DV, D, 16))


def _inputs():
    torch.manual_seed(1)
    mask = torch.ones(B, T, dtype=torch.bool)
    mask[1, 6:] = False
    return torch.rand(B, T, F) + 0.1, torch.randn(B, T, J, DV), torch.ones(B, T, J), mask


def test_source_estimates_are_the_masks_share_of_the_mixture_power():
    power = torch.rand(B, T, F) + 0.1
    masks = torch.softmax(torch.randn(B, T, J + 1, F), dim=2)
    est = source_power_estimates(masks, power)
    assert est.shape == (B, T, J, F)
    assert torch.allclose(est.sum(2) + masks[:, :, -1] * power, power, atol=1e-6)


def test_restart_multiplies_the_fit_by_each_sources_own_estimate_and_forgets_its_moments():
    m = _models()
    power, lips, present, mask = _inputs()
    sep = SeparationModel(m.encoder, m.decoders, make_switch("utterance", 2, J), NMFNoise(4, 0),
                          prior=m.prior, guide_init="product", gain="utterance")
    sources = torch.rand(B, T, J, F) + 0.05
    with isolated_pyro_state(0, power.device) as store:
        optim = pyro.optim.PyroOptim(DecayingAdam, {"lr": 0.1, "lrd": 0.9})
        SVI(sep.model, sep.guide, optim, Trace_ELBO(max_plate_nesting=2)).step(power, lips, present, mask)
        gain_state = optim.optim_objs[store["gain"].unconstrained()]
        old_loc = store["z_loc"].unconstrained()
        assert old_loc in optim.optim_objs
        fitted_loc, fitted_scale = store["z_loc"].detach().clone(), store["z_scale"].detach().clone()
        restart_guide(sep, optim, lips, present, sources)
        loc, scale = sep.restarted_guide(sources, lips, present)
        precision = fitted_scale.pow(-2) + scale.pow(-2)              # the product of the two
        assert torch.allclose(store["z_scale"], precision.rsqrt())
        assert torch.allclose(store["z_loc"], (fitted_loc * fitted_scale.pow(-2) + loc * scale.pow(-2)) / precision)
        assert torch.all(store["z_scale"] < torch.minimum(fitted_scale, scale))
        assert old_loc not in optim.optim_objs                        # Adam starts again for z
        assert optim.optim_objs[store["gain"].unconstrained()] is gain_state   # the rest goes on
        moved = sources.clone()
        moved[:, :, 1] *= 3.0                                         # source 2's estimate only
        other_loc, _ = sep.restarted_guide(moved, lips, present)
        assert torch.allclose(other_loc[:, :, 0], loc[:, :, 0])
        assert not torch.allclose(other_loc[:, :, 1], loc[:, :, 1])
        with pytest.raises(KeyError, match="z_loc"):
            del store["z_loc"]
            restart_guide(sep, optim, lips, present, sources)


def _fit(restart_at, J_min=2, lips_sources=J, **kw):
    m = _models()
    power, lips, present, mask = _inputs()
    settings = SeparationSettings(steps=4, num_samples=2, tol=0.0, restart_at=restart_at, restart_sources=J_min)
    return fit_batch(m, power, lips[:, :, :lips_sources], present[:, :, :lips_sources], mask, settings, **kw)


def test_fit_batch_restarts_once_at_the_step_asked_for():
    never, restarted, too_late = _fit(0), _fit(2), _fit(9)
    assert restarted.steps == never.steps == 4
    assert not torch.allclose(restarted.masks, never.masks)
    assert torch.equal(too_late.masks, never.masks)                   # a fit that never gets there
    assert torch.allclose(restarted.masks.sum(2), torch.ones(B, T, F), atol=1e-4)


def test_restart_only_in_fits_of_enough_sources_with_the_models_own_guide():
    one_source = _fit(2, lips_sources=1)
    assert torch.equal(one_source.masks, _fit(0, lips_sources=1).masks)       # restart_sources = 2
    assert not torch.equal(_fit(2, J_min=1, lips_sources=1).masks, one_source.masks)
    own_guide = _fit(2, make_guide=lambda sep: sep.guide)                      # not restarted
    assert torch.equal(own_guide.masks, _fit(0, make_guide=lambda sep: sep.guide).masks)
    with pytest.raises(InputError, match="separate.restart_at"):
        SeparationSettings(restart_at=-1)
    with pytest.raises(InputError, match="separate.restart_sources"):
        SeparationSettings(restart_sources=0)


def test_auto_restart_only_for_models_with_a_visual_prior(monkeypatch):
    import pyro_avss.settings.separation as separation

    with_prior, without = _models(), _models()
    without.prior = None
    auto = SeparationSettings()
    assert auto.restart_at is None
    assert auto.restart_step_for(with_prior) == separation.AUTO_RESTART_STEP == 20
    assert auto.restart_step_for(without) == 0
    assert SeparationSettings(restart_at=7).restart_step_for(without) == 7
    monkeypatch.setattr(separation, "AUTO_RESTART_STEP", 2)              # within a 4-step fit
    assert torch.equal(_fit(None).masks, _fit(2).masks)
    assert not torch.equal(_fit(None).masks, _fit(0).masks)
