"""The mixture as an observed Pyro site, the switch as enumerated sites, and the posteriors.

For every switch prior the separation model observes the mixture power with ``obs=``. By
default the switch is summed out inside that site's distribution (a mixture over joint states,
or an HMM); with ``enumerate`` it is a set of ``Categorical`` sample sites that
``TraceEnum_ELBO`` sums out. Both must give the same ELBO and gradients as each other and as the
hand-written factor of ``SwitchPrior.observe`` (padded frames included); the exact posterior
formulas must match Pyro's own marginals; and ``Predictive`` must draw mixtures from the model.
"""

from __future__ import annotations

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro import poutine
from pyro.infer import Predictive, Trace_ELBO, TraceEnum_ELBO

from pyro_avss.inference.pyro_state import isolated_pyro_state
from pyro_avss.models.generative import MAX_PLATE_NESTING, SeparationModel
from pyro_avss.models.likelihood import frame_log_likelihood
from pyro_avss.models.noise import NMFNoise
from pyro_avss.models.switch import SwitchPrior, make_switch
from pyro_avss.nets.vae import DecoderBank, SpeechEncoder

B, T, F, D, K = 2, 6, 5, 3, 2


def problem(J=2, seed=0, padded=True):
    g = torch.Generator().manual_seed(seed)
    power = torch.rand(B, T, F, generator=g) * 2 + 0.05
    mask = torch.ones(B, T, dtype=torch.bool)
    if padded:
        mask[1, 4:] = False
        power[1, 4:] = 0.0
    return power, torch.zeros(B, T, J, 0), torch.ones(B, T, J), mask


def nets(seed=0):
    torch.manual_seed(seed)
    return SpeechEncoder(F, D, 8).requires_grad_(False), DecoderBank(K, F, D, 8).requires_grad_(False)


def factor_only(switch: SwitchPrior) -> SwitchPrior:
    """The same prior observed through the generic ``pyro.factor`` of ``observe``."""
    switch.observe_mixture = lambda *a, **k: SwitchPrior.observe_mixture(switch, *a, **k)
    return switch


def model_for(prior, how, J=2, allowed=None, learn_stay=False):
    enc, dec = nets()
    switch = make_switch(prior, K, J, enumerate=how == "enumerated", learn_stay=learn_stay,
                         stay_prob=0.8)
    if how == "factor":
        switch = factor_only(switch)
    return SeparationModel(enc, dec, switch, NMFNoise(rank=2), allowed=allowed, gain="frame")


def loss_and_grads(sep, inputs, enumerated):
    """ELBO (one particle, fixed seed) and the gradients of every parameter."""
    with isolated_pyro_state(0):
        elbo = (TraceEnum_ELBO if enumerated else Trace_ELBO)(max_plate_nesting=MAX_PLATE_NESTING)
        loss = elbo.differentiable_loss(sep.model, sep.guide, *inputs)
        store = pyro.get_param_store()
        names = sorted(store.keys())
        grads = torch.autograd.grad(loss, [store[n].unconstrained() for n in names])
    return float(loss.detach()), dict(zip(names, grads))


@pytest.mark.parametrize("prior", ["iid", "utterance", "markov"])
@pytest.mark.parametrize("allowed", [None, [[True, False], [True, True]]])
def test_marginal_enumerated_and_factor_observations_agree(prior, allowed):
    inputs = problem()
    allowed = None if allowed is None else torch.tensor(allowed)
    results = {how: loss_and_grads(model_for(prior, how, allowed=allowed), inputs, how == "enumerated")
               for how in ("marginal", "enumerated", "factor")}
    ref_loss, ref_grads = results["marginal"]
    # with a restriction the observed site's prior is renormalised over the allowed components
    # (a prior conditioned on them); the factor adds EXCLUDED to the likelihood instead, which
    # differs from it by a constant per frame for a fixed prior, so compare it unrestricted only
    for how in ("enumerated", "factor") if allowed is None else ("enumerated",):
        loss, grads = results[how]
        assert loss == pytest.approx(ref_loss, rel=1e-5, abs=1e-3), how
        assert grads.keys() == ref_grads.keys()
        for name in grads:
            assert torch.allclose(grads[name], ref_grads[name], rtol=1e-3, atol=1e-3), (how, name)


def test_learnt_stay_agrees_between_the_hmm_and_the_markov_chain_of_sites():
    inputs = problem()
    a = loss_and_grads(model_for("markov", "marginal", learn_stay=True), inputs, False)
    b = loss_and_grads(model_for("markov", "enumerated", learn_stay=True), inputs, True)
    assert a[0] == pytest.approx(b[0], rel=1e-5)
    assert torch.allclose(a[1]["switch_stay_logit"], b[1]["switch_stay_logit"], rtol=1e-3, atol=1e-4)


def test_the_observed_site_is_the_mixture():
    sep = model_for("utterance", "marginal")
    inputs = problem()
    with isolated_pyro_state(0):
        trace = poutine.trace(sep.model).get_trace(*inputs)
    site = trace.nodes["x"]
    assert site["is_observed"] and isinstance(site["fn"], dist.MixtureSameFamily)
    assert torch.equal(site["value"][:, 0], inputs[0])          # padded frames are zero already


@pytest.mark.parametrize("prior", ["iid", "utterance", "markov"])
def test_exact_posteriors_equal_pyros_marginals(prior):
    power, lips, present, mask = problem()
    sep = model_for(prior, "enumerated")
    with isolated_pyro_state(0):
        guide_trace = poutine.trace(sep.guide).get_trace(power, lips, present, mask)
        z = guide_trace.nodes["z"]["value"]
        fixed = poutine.condition(sep.model, data={"z": z})
        explained = poutine.trace(fixed).get_trace(power, lips, present, mask).nodes["_RETURN"]["value"]
        ours = sep.switch.source_marginals(sep.switch.fitted_posterior(explained.loglik, mask))  # (B,T,J,K)
        elbo = TraceEnum_ELBO(max_plate_nesting=MAX_PLATE_NESTING)
        marginals = elbo.compute_marginals(fixed, lambda *a: None, power, lips, present, mask)
    for j in range(2):
        if prior == "markov":
            theirs = torch.stack([marginals[f"m{j}_{t}"].probs.reshape(B, K) for t in range(T)], 1)
        else:
            theirs = marginals[f"m{j}"].probs.reshape(B, -1, K).expand(B, T, K)
        valid = mask if prior != "iid" else mask      # padded iid frames: the prior, not compared
        assert torch.allclose(ours[..., j, :][valid], theirs[valid], atol=1e-4), j


def test_predictive_draws_mixtures_with_the_models_variance():
    """One source, one component: given z, each bin's power is exponential with the model's
    variance, so ``x / v`` has mean 1 and variance 1 over draws."""
    enc, dec = nets()
    dec = DecoderBank(1, F, D, 8).requires_grad_(False)
    sep = SeparationModel(enc, dec, make_switch("utterance", 1, 1), NMFNoise(rank=2), gain="frame")
    power, lips, present, mask = problem(J=1, padded=False)
    with isolated_pyro_state(0):
        z = poutine.trace(sep.guide).get_trace(power, lips, present, mask).nodes["z"]["value"]
        fixed = poutine.condition(sep.model, data={"z": z})
        var = poutine.trace(fixed).get_trace(power, lips, present, mask).nodes["_RETURN"]["value"].log_var.exp()
        draws = Predictive(poutine.uncondition(fixed), num_samples=400, return_sites=["x"])(
            power, lips, present, mask)["x"]
    ratio = (draws.reshape(400, B, T, F) / var[..., 0, :]).detach()
    assert abs(float(ratio.mean()) - 1) < 0.05 and abs(float(ratio.var()) - 1) < 0.15
    assert not torch.equal(draws[0], draws[1])


@pytest.mark.parametrize("prior", ["utterance", "markov", "iid"])
def test_predictive_draws_each_state_of_the_switch(prior):
    """Two components 6 nats apart: the component that generated each drawn frame is plain from
    its likelihood. Both are drawn (the switch is sampled, not fixed); the per-utterance switch
    keeps one for all frames of an utterance, the i.i.d. one changes within utterances."""
    enc, _ = nets()
    dec = DecoderBank(2, F, D, 8).requires_grad_(False)
    with torch.no_grad():
        dec.b3[0] -= 6.0
    sep = SeparationModel(enc, dec, make_switch(prior, 2, 1, stay_prob=0.5, learn_prior=False),
                          NMFNoise(rank=2, init_level=1e-4), gain="frame")
    inputs = problem(J=1, padded=False)
    with isolated_pyro_state(0):
        drawn = Predictive(poutine.uncondition(sep.model), guide=sep.guide, num_samples=30,
                           return_sites=["x", "z"])(*inputs)
        states = []
        for x, z in zip(drawn["x"], drawn["z"]):
            fixed = poutine.condition(sep.model, data={"z": z})
            explained = poutine.trace(fixed).get_trace(*inputs).nodes["_RETURN"]["value"]
            loglik = frame_log_likelihood(x.reshape(B, T, 1, F), explained.log_var)    # (B,T,S)
            states.append(loglik.argmax(-1))
    states = torch.stack(states)                                                      # (N,B,T)
    assert 0.2 < float(states.float().mean()) < 0.8
    constant = (states == states[..., :1]).all(-1)
    if prior == "utterance":
        assert bool(constant.all())
    if prior == "iid":
        assert not bool(constant.all())
