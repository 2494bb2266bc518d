"""The extension example (examples/extend_noise_and_switch.py) and its guide (docs/extending.md).

The example must run end to end and separate; its custom switch must marginalise exactly (same
ELBO as the project's own switch where they coincide, same value by enumeration and by factor);
its pieces must broadcast over Pyro's particle and enumeration dims; and every code block of the
guide marked as taken from the example must still be in the example.
"""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
from pathlib import Path

import pyro
import pytest
import torch
from pyro.infer import Trace_ELBO, TraceEnum_ELBO

from pyro_avss.models.generative import MAX_PLATE_NESTING, SeparationModel
from pyro_avss.models.switch import IIDSwitch
from pyro_avss.nets.vae import DecoderBank, SpeechEncoder

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "extend_noise_and_switch.py"
GUIDE = ROOT / "docs" / "extending.md"
MARK = "<!-- from examples/extend_noise_and_switch.py -->"


@pytest.fixture(scope="module")
def ex():
    spec = importlib.util.spec_from_file_location("extend_noise_and_switch", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(autouse=True)
def one_thread(ex):
    """Tiny tensors: one torch thread avoids contention on a busy machine."""
    with ex.one_thread():
        yield


def small_problem(J=2, seed=0):
    """Random mixture power of two utterances (the second padded), no video."""
    g = torch.Generator().manual_seed(seed)
    B, T, F = 2, 12, 9
    power = torch.rand(B, T, F, generator=g) + 0.1
    mask = torch.ones(B, T, dtype=torch.bool)
    mask[1, 9:] = False
    return power, torch.zeros(B, T, J, 0), torch.zeros(B, T, J), mask


def elbo_loss(sep, inputs, ex, enumerate=False, particles=1, vectorize=False, seed=0):
    pyro.clear_param_store()
    pyro.set_rng_seed(seed)
    elbo = (TraceEnum_ELBO if enumerate else Trace_ELBO)(
        max_plate_nesting=MAX_PLATE_NESTING, num_particles=particles, vectorize_particles=vectorize)
    return elbo.loss(sep.model, ex.make_guide(sep), *inputs)


def test_example_separates_the_tone_from_the_noise(ex):
    r = ex.main(verbose=False)
    assert r["loss_last"] < 0.6 * r["loss_first"]
    assert r["posterior_row_error"] < 1e-4
    assert r["mask_sum_error"] < 1e-4
    assert r["reconstruction_error"] < 1e-4
    assert r["tone_posterior_in_burst"] > 0.9 and r["silence_posterior_outside"] > 0.8
    assert r["si_sdr_estimate"] > r["si_sdr_mixture"] + 8.0         # measured: -4.0 -> +12.0 dB


def test_example_with_latent_noise_and_learnt_sticky_switch(ex):
    r = ex.main(noise="level-prior", switch="sticky", verbose=False)
    assert r["loss_last"] < 0.6 * r["loss_first"]
    assert r["posterior_row_error"] < 1e-4 and r["mask_sum_error"] < 1e-4
    assert abs(r["learnt_stay"] - 0.9) > 0.02                        # the param was learnt
    assert r["si_sdr_estimate"] > r["si_sdr_mixture"] + 8.0


def test_broadband_component_needs_a_noise_model_that_starts_high_enough(ex):
    """docs/extending.md, pitfall 8: with a random broadband voice added, the tone still wins the
    burst when the noise spectrum starts at the median of the mixture power."""
    r = ex.main(extra_voice=True, noise_quantile=0.5, verbose=False)
    assert r["tone_posterior_in_burst"] > 0.9
    assert r["si_sdr_estimate"] > r["si_sdr_mixture"] + 8.0


def test_activity_switch_reduces_to_the_uniform_iid_switch(ex):
    """With a constant activity of 2/3, no floor and uniform π over 3 components (2 speech), the
    per-frame prior is uniform: the ELBO must equal the project's IIDSwitch without learnt π."""
    torch.manual_seed(0)
    inputs = small_problem()
    power, lips, present, mask = inputs
    F, D = power.shape[-1], 3
    enc = SpeechEncoder(F, D, 8)
    dec = ex.StackedDecoders(DecoderBank(2, F, D, 8), ex.FlatDecoder(F, D))
    activity = torch.full(mask.shape + (2,), 2 / 3)
    ours = ex.ActivitySwitch(activity, [True, True, False], floor=0.0)
    theirs = IIDSwitch(3, 2, learn_prior=False)
    a = elbo_loss(SeparationModel(enc, dec, ours, ex.StationaryNoise()), inputs, ex)
    b = elbo_loss(SeparationModel(enc, dec, theirs, ex.StationaryNoise()), inputs, ex)
    assert a == pytest.approx(b, rel=1e-5)
    # and a non-constant track changes it
    ours.activity = torch.rand(activity.shape)
    changed = elbo_loss(SeparationModel(enc, dec, ours, ex.StationaryNoise()), inputs, ex)
    assert abs(changed - b) > 1e-2


def test_enumeration_factor_and_particles_agree(ex):
    """Same ELBO by the logsumexp factor and by Pyro enumeration; vectorised particles (an extra
    dim left of the plates) give the same estimate as a loop over particles."""
    torch.manual_seed(0)
    inputs = small_problem()
    F, D = inputs[0].shape[-1], 3
    enc = SpeechEncoder(F, D, 8)
    dec = ex.StackedDecoders(DecoderBank(2, F, D, 8), ex.FlatDecoder(F, D))
    activity = torch.rand(inputs[-1].shape + (2,))

    def sep(enumerate):
        switch = ex.ActivitySwitch(activity, [True, True, False], enumerate=enumerate)
        return SeparationModel(enc, dec, switch, ex.LevelPriorNoise())

    factor = elbo_loss(sep(False), inputs, ex)
    enumerated = elbo_loss(sep(True), inputs, ex, enumerate=True)
    assert enumerated == pytest.approx(factor, rel=1e-5)
    # Monte Carlo spread at 64 particles is about 0.5 %; a misplaced dim is off by far more
    looped = elbo_loss(sep(True), inputs, ex, enumerate=True, particles=64)
    vectorised = elbo_loss(sep(True), inputs, ex, enumerate=True, particles=64, vectorize=True)
    assert vectorised == pytest.approx(looped, rel=0.03)
    sticky = SeparationModel(enc, dec, ex.LearntStickySwitch(3, 2), ex.LevelPriorNoise())
    assert elbo_loss(sticky, inputs, ex, particles=64, vectorize=True) == pytest.approx(
        elbo_loss(sticky, inputs, ex, particles=64), rel=0.03)


def test_stacked_decoders_broadcast_and_check_sizes(ex):
    F, D = 7, 3
    bank = ex.StackedDecoders(DecoderBank(2, F, D, 8), ex.FlatDecoder(F, D, level=-3.0, slope=1.0))
    assert bank.num_components == 3 and bank.names[-1] == "flat"
    z = torch.randn(4, 1, 2, 5, 2, D)               # (enum, particle, B, T, J, D)
    out = bank(z, torch.zeros(2, 5, 2, 0), torch.zeros(2, 5, 2))
    assert out.shape == (4, 1, 2, 5, 2, 3, F)
    assert torch.allclose(out[..., 2, :], -3.0 - torch.log1p(torch.arange(F, dtype=torch.float32)))
    with pytest.raises(ValueError, match="latent_dim or num_bins"):
        ex.StackedDecoders(DecoderBank(1, F, D, 8), ex.FlatDecoder(F + 1, D))


def test_guide_code_blocks_come_from_the_example():
    text, code = GUIDE.read_text(), EXAMPLE.read_text()
    blocks = re.findall(re.escape(MARK) + r"\s*```python\n(.*?)```", text, flags=re.S)
    assert len(blocks) >= 5, "the guide should quote the example"
    for block in blocks:
        assert block in code, f"docs/extending.md block not found in the example:\n{block}"


def test_example_runs_as_a_script():
    run = subprocess.run([sys.executable, str(EXAMPLE), "--steps", "20", "--switch", "sticky"],
                         capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert run.returncode == 0, run.stderr[-2000:]
    assert "posterior_row_error" in run.stdout and "learnt_stay" in run.stdout
