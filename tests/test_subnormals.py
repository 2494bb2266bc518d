"""Fits run with subnormal floats flushed to zero, and give the caller's mode back.

The speed this buys is measured by ``cli.py bench`` (see ``pyro_avss/inference/subnormals.py``);
these tests check the mode itself: on inside separation, training and MCEM, restored afterwards
whichever mode the caller had, also after a failure.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pyro_avss.inference.mcem import mcem_separate
from pyro_avss.inference.separation import separate_recordings
from pyro_avss.inference.subnormals import flushing_subnormals, subnormals_flushed
from pyro_avss.settings.mcem import MCEMSettings
from test_pyro_state import FAST, random_models, recording

pytestmark = pytest.mark.skipif(not torch.set_flush_denormal(False),
                                reason="this CPU has no flush-to-zero mode for torch to set")


@pytest.fixture(params=[False, True], ids=["caller-keeps-subnormals", "caller-flushes"])
def callers_mode(request):
    torch.set_flush_denormal(request.param)
    yield request.param
    torch.set_flush_denormal(False)


def test_the_probe_reads_the_mode():
    torch.set_flush_denormal(True)
    assert flushing_subnormals()
    torch.set_flush_denormal(False)
    assert not flushing_subnormals()
    assert torch.tensor([1e-39]).mul(1.0).item() > 0         # a subnormal survives again


def test_the_mode_is_on_inside_and_given_back(callers_mode):
    with subnormals_flushed() as supported:
        assert supported and flushing_subnormals()
    assert flushing_subnormals() == callers_mode
    with pytest.raises(RuntimeError, match="inside"):
        with subnormals_flushed():
            raise RuntimeError("inside")
    assert flushing_subnormals() == callers_mode


class SpyNoise:
    """A flat noise that records whether subnormals are flushed while the model runs."""

    seen: list[bool] = []

    def log_variance(self, power, mask, plates=None):
        SpyNoise.seen.append(flushing_subnormals())
        return torch.zeros_like(power)


def test_separation_fits_with_subnormals_flushed(callers_mode):
    SpyNoise.seen = []
    separate_recordings(random_models(), [(recording(), [None])], FAST, make_noise=SpyNoise)
    assert SpyNoise.seen and all(SpyNoise.seen)
    assert flushing_subnormals() == callers_mode


def test_a_failed_separation_gives_the_mode_back(callers_mode):
    class Broken:
        def log_variance(self, power, mask, plates=None):
            raise RuntimeError("noise model failed")

    with pytest.raises(RuntimeError, match="noise model failed"):
        separate_recordings(random_models(), [(recording(), [None])], FAST, make_noise=Broken)
    assert flushing_subnormals() == callers_mode


def test_mcem_runs_with_subnormals_flushed(callers_mode, monkeypatch):
    import pyro_avss.inference.mcem as mcem

    seen, cost = [], mcem._cost

    def spy(problem, log_speech):
        seen.append(flushing_subnormals())
        return cost(problem, log_speech)

    monkeypatch.setattr(mcem, "_cost", spy)
    out = mcem_separate(random_models(), recording(), None, MCEMSettings(em_iterations=2, mh_steps=2, burn_in=0))
    assert seen and all(seen) and np.isfinite(out.sources).all()
    assert flushing_subnormals() == callers_mode


def test_training_runs_with_subnormals_flushed(tmp_path, callers_mode, monkeypatch):
    from pyro_avss.inference import training
    from test_training import synthetic_rows, tiny_config

    seen, loss = [], training.Trainer.loss

    def spy(self, *args, **kwargs):
        seen.append(flushing_subnormals())
        return loss(self, *args, **kwargs)

    monkeypatch.setattr(training.Trainer, "loss", spy)
    training.fit(tiny_config("train.epochs=1"), tmp_path / "run", rows=synthetic_rows(tmp_path), progress=False)
    assert seen and all(seen)
    assert flushing_subnormals() == callers_mode
