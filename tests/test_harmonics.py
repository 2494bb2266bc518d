"""Harmonic combs read from each source's own estimate part-way through a fit
(pyro_avss.models.harmonics, separate.harmonics_at)."""

from __future__ import annotations

import math

import pytest
import torch

from pyro_avss.errors import InputError
from pyro_avss.inference.batch_fit import fit_batch
from pyro_avss.inference.harmonics import pitch_range_table
from pyro_avss.models.generative import SeparationModel
from pyro_avss.models.harmonics import TOP_HZ, HarmonicCombs
from pyro_avss.settings.separation import SeparationSettings

from test_guide_restart import B, F, J, T, _inputs, _models

FREQS = torch.arange(513) * 16000 / 1024


def voiced(f0: float) -> torch.Tensor:
    """A falling envelope with narrow bumps on the harmonics of ``f0``, over a floor."""
    bumps = sum(torch.exp(-0.5 * ((FREQS - h * f0) / 6) ** 2) for h in range(1, int(8000 // f0)))
    return torch.exp(-FREQS / 1500) * (0.02 + bumps)


def test_combs_keep_the_level_and_read_the_pitch_of_a_voiced_frame():
    combs = HarmonicCombs(513, 16000, 1024)
    band = FREQS < TOP_HZ
    assert torch.allclose(combs.log_combs[:, band].exp().mean(1), torch.ones(len(combs.log_combs)))
    assert torch.all(combs.log_combs[:, ~band] == 0)
    frames = torch.stack([voiced(f0) for f0 in (75.0, 95.0, 143.0, 210.0)])[:, None]   # J = 1
    assert combs.pitch(frames)[:, 0].tolist() == [75.0, 95.0, 143.0, 210.0]
    log_comb = combs(frames[2])[0]
    off_harmonic = (FREQS[band][:, None] - 143.0 * torch.arange(1, 28)).abs().min(1).values
    assert log_comb[band][off_harmonic < 8].min() > 0 > log_comb[band][off_harmonic > 30].max()
    flat = torch.exp(-FREQS / 1500)[None]                                    # no fine structure
    assert math.isnan(combs.pitch(flat)) and torch.all(combs(flat) == 0)
    assert combs(torch.stack([frames, frames])).shape == (2, 4, 1, 513)


def test_each_source_keeps_the_pitch_its_own_estimate_has_more_of_than_the_others():
    combs = HarmonicCombs(513, 16000, 1024)
    loud, quiet = voiced(110.0), voiced(210.0)
    leaky = 0.6 * loud + 0.4 * quiet              # the quiet voice's estimate, the loud one leaking in
    assert combs.pitch(leaky[None]).item() == 110.0                     # alone: the leaked voice
    assert combs.pitch(torch.stack([loud, leaky])).tolist() == [110.0, 210.0]


def test_the_sources_pitches_chosen_together_explain_the_mixture():
    combs = HarmonicCombs(513, 16000, 1024)
    low, high = voiced(110.0), voiced(210.0)
    estimates = torch.stack([0.8 * low + 0.2 * high, 0.6 * low + 0.4 * high])   # low leaks into both
    noise = 0.01 * torch.exp(-FREQS / 3000)
    assert combs.pitch(estimates).tolist() == [110.0, 110.0]            # each its own: both the low
    assert combs.pitch(estimates, noise=noise).tolist() == [110.0, 210.0]
    assert combs.pitch(voiced(143.0)[None], noise=noise).tolist() == [143.0]      # one source
    allowed = torch.ones(2, len(combs.pitches), dtype=torch.bool)
    allowed[1, (combs.pitches < 100) | (combs.pitches > 150)] = False
    assert 100 <= combs.pitch(estimates, allowed, noise)[1] <= 150      # candidates stay allowed
    batch = torch.stack([estimates, estimates.flip(0)])                 # (B, J, F), noise (B, F)
    assert combs.pitch(batch, noise=noise.expand(2, -1)).tolist() == [[110.0, 210.0], [210.0, 110.0]]


def test_a_source_bound_to_a_speaker_reads_its_pitch_within_that_speakers_range():
    nan = float("nan")
    ranges = torch.tensor([[80.0, 150.0], [180.0, 260.0], [300.0, 380.0], [nan, nan]])
    combs = HarmonicCombs(513, 16000, 1024, ranges=ranges)
    leaky = (0.6 * voiced(110.0) + 0.4 * voiced(210.0))[None, None, None]      # (B, T, J, F)
    valid = torch.ones(1, 1, dtype=torch.bool)

    def allowed(posterior, components=(0, 1, 2, 3)):
        return combs.allowed_pitches(torch.tensor(posterior)[None, None, None], valid, list(components))

    assert combs.pitch(leaky).item() == 110.0                           # every pitch: the leaked one
    assert combs.pitch(leaky, allowed([0.1, 0.8, 0.0, 0.1])).item() == 210.0   # bound to the high voice
    assert combs.pitch(leaky, allowed([0.9, 0.1, 0.0, 0.0])).item() == 110.0
    assert allowed([0.0, 0.0, 0.0, 1.0]).all()                          # the component with no range
    both = allowed([0.5, 0.5, 0.0, 0.0])[0, 0, 0]                       # half each: either range
    assert both[110 - 70] and both[210 - 70] and not both[350 - 70] and not both[160 - 70]
    assert allowed([1 / 3, 1 / 3, 1 / 3, 0.0]).all()                    # no pitch holds half: every one
    assert allowed([1.0], components=[1])[..., :110].sum() == 0         # components index the bank
    assert HarmonicCombs(513, 16000, 1024).allowed_pitches(torch.ones(1, 1, 1, 3), valid, [0, 1, 2]) is None


def test_a_speakers_pitch_range_is_read_from_the_loud_frames_of_its_clips():
    combs = HarmonicCombs(513, 16000, 1024)
    clip = torch.stack([voiced(float(f0)) for f0 in range(100, 200)])
    quiet = 1e-3 * torch.stack([voiced(300.0)] * 30)                    # 30 dB down: not counted
    low, high = combs.pitch_range([torch.cat([clip, quiet])])
    assert low == pytest.approx(105.0, abs=2) and high == pytest.approx(194.0, abs=2)
    assert combs.pitch_range([clip[:40]]) is None                       # too few frames for a range


def _fit(harmonics_at, steps=4, models=None, **settings):
    settings = SeparationSettings(steps=steps, num_samples=2, tol=0.0, restart_at=0,
                                  harmonics_at=harmonics_at, **settings)
    return fit_batch(models or _models(), *_inputs(), settings)


@pytest.fixture
def combs_read(monkeypatch) -> list:
    """The log combs (or None) every evaluation of a source's speech variance uses, in order."""
    read = []
    speech_log_variance = SeparationModel.speech_log_variance

    def spy(self, z, lips, present, gain):
        read.append(self.log_harmonics)
        return speech_log_variance(self, z, lips, present, gain)

    monkeypatch.setattr(SeparationModel, "speech_log_variance", spy)
    return read


def test_the_fit_searches_each_sources_pitch_within_its_components_ranges(combs_read):
    read = combs_read
    models = _models()
    models.info["pitch_ranges"] = {name: [150.0, 150.0] for name in models.component_names}
    assert pitch_range_table(models).tolist() == [[150.0, 150.0]] * len(models.component_names)
    combs = HarmonicCombs(F, 16000, 1024)
    only = combs.log_combs[150 - 70]                                    # the comb of 150 Hz
    for kept, setting, choice in ((True, "speaker", "joint"), (True, "speaker", "each"), (False, "any", "joint"),
                                  (False, "any", "each")):
        read.clear()
        _fit(2, models=models, harmonics_range=setting, harmonics_choice=choice)
        combed = next(c for c in read if c is not None)
        is_only = (combed == only).all(-1) | (combed == 0).all(-1)
        assert bool(is_only.all()) == kept
    models.info["pitch_ranges"] = {}
    assert pitch_range_table(models) is None                            # a model file without ranges


def test_the_fit_reads_the_combs_once_at_the_step_asked_for(combs_read):
    read = combs_read
    never, combed, too_late = _fit(0), _fit(2), _fit(9)
    assert combed.steps == never.steps == 4
    assert not torch.allclose(combed.masks, never.masks)
    assert torch.equal(too_late.masks, never.masks)                  # a fit that never gets there
    assert torch.allclose(combed.masks.sum(2), torch.ones(B, T, F), atol=1e-4)
    combed_calls = [c for c in read if c is not None]
    assert combed_calls and all(c.shape == (B, T, J, F) for c in combed_calls)
    assert all(c is combed_calls[0] for c in combed_calls)           # read once, then kept
    with pytest.raises(InputError, match="separate.harmonics_at"):
        SeparationSettings(harmonics_at=-1)
