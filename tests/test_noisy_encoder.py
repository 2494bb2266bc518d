"""The noisy encoder: its noise prior, its distillation, the model file that carries it, the
separation that starts from it, and `fit` in train.mode=noisy_encoder."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch

from pyro_avss.checkpoint import SpeechModels
from pyro_avss.config import load_settings
from pyro_avss.errors import SettingError
from pyro_avss.inference.batch_fit import guide_encoder
from pyro_avss.inference.noisy_encoder import NoisePrior
from pyro_avss.inference.training import fit
from pyro_avss.nets.vae import VisualPrior

from test_training import synthetic_rows, tiny_config


def test_noise_prior_draws_positive_varied_noises():
    gen = torch.Generator().manual_seed(0)
    noise = NoisePrior().draw(16, 40, 65, gen)
    assert noise.shape == (16, 40, 65) and bool((noise >= 0).all())
    assert torch.equal(noise, NoisePrior().draw(16, 40, 65, torch.Generator().manual_seed(0)))
    # noises differ in spectral shape: the per-row log spectra are far from each other
    shapes = noise.mean(1).log()
    shapes = shapes - shapes.mean(-1, keepdim=True)
    assert float(torch.cdist(shapes, shapes).max()) > 5.0


@pytest.mark.parametrize("snr_db", [-5.0, 10.0])
def test_noisy_inputs_are_mixed_at_the_drawn_snr(snr_db):
    """noisy = (c + n) / mean(c + n) and clean = c / mean(c), so noisy - clean / (1 + 1/s) is the
    noise part: never negative, with mean 1 - 1 / (1 + 1/s) at the SNR s."""
    gen = torch.Generator().manual_seed(1)
    power = torch.rand(4, 30, 33) + 0.1
    mask = torch.ones(4, 30, dtype=torch.bool)
    mask[0, 20:] = False                                  # a padded segment
    noisy, clean = NoisePrior(snr_db=(snr_db, snr_db)).noisy(power, mask, gen)
    valid = mask[..., None].float()
    for x in (noisy, clean):
        means = (x * valid).sum((1, 2)) / (valid.sum((1, 2)) * 33)
        assert torch.allclose(means, torch.ones(4), atol=1e-4)
    assert float(noisy[0, 20:].abs().max()) == 0.0
    s = 10 ** (snr_db / 10)
    rest = noisy - clean / (1 + 1 / s)
    assert float(rest.min()) > -1e-4
    share = (rest * valid).sum((1, 2)) / (valid.sum((1, 2)) * 33)
    assert torch.allclose(share, torch.full((4,), 1 - 1 / (1 + 1 / s)), atol=1e-3)


@pytest.fixture(scope="module")
def distilled(tmp_path_factory):
    """A tiny universal model and its noisy-encoder version, made by `fit` as a user would."""
    folder = tmp_path_factory.mktemp("noisy")
    rows = synthetic_rows(folder)
    base = fit(tiny_config("train.epochs=2"), folder / "uni", rows=rows, progress=False)
    noisy = fit(tiny_config("train.mode=noisy_encoder", f"train.init={folder / 'uni' / 'model.pt'}",
                            "train.epochs=6", "train.patience=10", "train.lr=3e-3"),
                folder / "noisy", rows=rows, progress=False)
    return base, noisy, folder


def test_fit_distils_a_noisy_encoder_and_keeps_the_rest(distilled):
    base, noisy, folder = distilled
    log = np.genfromtxt(folder / "noisy" / "log.csv", delimiter=",", names=True)
    assert len(log) == 6 and log["dev_kl"].min() < log["dev_kl"][0]
    assert noisy.info["noisy_encoder"]["dev_kl"] == pytest.approx(log["dev_kl"].min())
    z = torch.randn(7, base.decoders.latent_dim)
    assert torch.equal(noisy.decoders(z), base.decoders(z))             # the latent space is kept
    assert torch.equal(noisy.encoder.loc.weight, base.encoder.loc.weight)
    assert not torch.equal(noisy.noisy_encoder.loc.weight, base.encoder.loc.weight)


def test_the_noisy_encoder_round_trips_through_the_model_file(distilled, tmp_path):
    base, noisy, folder = distilled
    raw = torch.load(folder / "noisy" / "model.pt", weights_only=True)
    assert raw["format_version"] == 4
    assert torch.load(folder / "uni" / "model.pt", weights_only=True)["format_version"] == 2
    again = SpeechModels.load(folder / "noisy" / "model.pt")
    x = torch.randn(3, base.stft.num_bins)
    assert torch.equal(again.noisy_encoder(x)[0], noisy.noisy_encoder(x)[0])
    assert SpeechModels.load(folder / "uni" / "model.pt").noisy_encoder is None


def test_separation_starts_from_the_encoder_the_setting_names(distilled):
    base, noisy, _ = distilled
    settings = load_settings(None, []).separate
    av = replace(noisy, prior=VisualPrior(3, noisy.decoders.latent_dim, 8))     # as if audio-visual
    assert guide_encoder(av, settings) is av.noisy_encoder                # auto, one talker, AV
    assert guide_encoder(av, settings, num_sources=2) is av.encoder       # auto, two talkers
    assert guide_encoder(noisy, settings) is noisy.encoder                # auto, audio only
    assert guide_encoder(base, settings) is base.encoder                  # auto without one
    speech = load_settings(None, ["separate.guide_encoder=speech"]).separate
    assert guide_encoder(noisy, speech) is noisy.encoder
    wanted = load_settings(None, ["separate.guide_encoder=noisy"]).separate
    with pytest.raises(SettingError, match="separate.guide_encoder"):
        wanted.check_model(base)


def test_separate_cli_uses_the_noisy_encoder(distilled, tmp_path, monkeypatch):
    """`cli.py separate` on a model with a noisy encoder starts the guide from it (spied)."""
    import soundfile as sf
    from click.testing import CliRunner

    from pyro_avss.cli import main
    from pyro_avss.inference import batch_fit

    _, _, folder = distilled
    chosen = []

    def spy(models, settings, num_sources):
        encoder = guide_encoder(models, settings, num_sources)
        chosen.append(encoder is models.noisy_encoder)
        return encoder

    monkeypatch.setattr(batch_fit, "guide_encoder", spy)
    rng = np.random.default_rng(0)
    sf.write(tmp_path / "mix.wav", (0.1 * rng.standard_normal(16000)).astype(np.float32), 16000)
    for setting, expected in (("noisy", True), ("auto", False), ("speech", False)):   # audio only
        result = CliRunner().invoke(main, ["separate", "--model", str(folder / "noisy" / "model.pt"),
                                           "--mixture", str(tmp_path / "mix.wav"),
                                           "--out", str(tmp_path / setting), "--no-figure",
                                           "--set", "separate.steps=2",
                                           "--set", f"separate.guide_encoder={setting}"])
        assert result.exit_code == 0, result.output
        assert chosen and set(chosen) == {expected}
        chosen.clear()
