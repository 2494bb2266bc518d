"""The learned visual pathway: temporal lip encoder, visual prior p(z | v), lip-specific guide."""

from __future__ import annotations

import pyro.poutine as poutine
import pytest
import torch

from pyro_avss.audio import StftConfig
from pyro_avss.checkpoint import SpeechModels
from pyro_avss.errors import InputError
from pyro_avss.inference.separation import SeparationSettings, fit_batch
from pyro_avss.inference.training import FrameSet
from pyro_avss.models.generative import SeparationModel, speech_guide, speech_model
from pyro_avss.models.switch import make_switch
from pyro_avss.nets.lips import LipProjection, LipTemporalEncoder
from pyro_avss.nets.vae import DecoderBank, SpeechEncoder, VisualPrior

F, D, DV = 33, 4, 6


@pytest.mark.parametrize("dilations, reach", [((), 12), ((4,), 28), ((2, 4), 36)])
def test_temporal_encoder_sees_exactly_its_context_and_zeroes_missing_frames(dilations, reach):
    torch.manual_seed(0)
    enc = LipTemporalEncoder(5, DV, 8, dilations)
    assert enc.context == reach
    u, present = torch.randn(2, 100, 5), torch.ones(2, 100)
    present[1, 20:25] = 0
    v = enc(u, present)
    assert v.shape == (2, 100, DV)
    assert torch.all(v[1, 20:25] == 0)                       # no face: no embedding
    t, c = 50, enc.context
    moved = u.clone()
    moved[:, t + c + 1:] += 5.0                               # beyond the reach of frame t
    assert torch.allclose(enc(moved, present)[:, t], v[:, t])
    moved = u.clone()
    moved[:, t + c] += 5.0                                    # at the edge of its reach
    assert not torch.allclose(enc(moved, present)[:, t], v[:, t])
    # extra leading axes (sources) are batch axes
    assert torch.allclose(enc(u[:, None].expand(2, 3, 100, 5), present[:, None].expand(2, 3, 100))[:, 1], v,
                          atol=1e-6)


def test_visual_prior_is_standard_normal_without_a_face():
    prior = VisualPrior(DV, D, 16)
    loc, scale = prior(torch.randn(7, DV), torch.tensor([1, 1, 0, 0, 1, 0, 1.0]))
    assert torch.all(loc[[2, 3, 5]] == 0) and torch.allclose(scale[[2, 3, 5]], torch.ones(3, D))
    assert loc[[0, 1, 4, 6]].abs().sum() > 0


def test_training_batches_bring_lip_context_from_the_same_clip_only():
    lips = torch.arange(10.0)[:, None].repeat(1, 2)           # clip 0: frames 0-5, clip 1: 6-9
    fs = FrameSet(torch.ones(11, F), torch.cat([lips, torch.zeros(1, 2)]), torch.ones(11),
                  torch.full((11,), -1), starts=[0, 6], lengths=[6, 4], clip_ids=["a", "b"],
                  speakers=["x", "x"])
    fs.present[-1] = 0
    b = fs.batch(torch.tensor([[2, 3], [6, 4]]), 4, context=2)
    assert b["lips"].shape == (2, 8, 2) and b["power"].shape == (2, 4, F)
    assert b["lips"][0, :, 0].tolist() == [0, 1, 2, 3, 4, 5, 0, 0]        # clip 0 ends at frame 5
    assert b["present"][0].tolist() == [1, 1, 1, 1, 1, 1, 0, 0]
    assert b["present"][1].tolist() == [0, 0, 1, 1, 1, 1, 0, 0]           # nothing before clip 1
    assert b["lips"][1, 2:6, 0].tolist() == [6, 7, 8, 9]
    plain = fs.batch(torch.tensor([[2, 3], [6, 4]]), 4)
    assert torch.equal(plain["lips"], b["lips"][:, 2:6] * plain["present"][..., None])


def test_training_kl_is_taken_to_the_visual_prior():
    torch.manual_seed(0)
    B, T = 2, 5
    batch = {"power": torch.rand(B, T, F) + 0.1, "lips": torch.randn(B, T, DV),
             "present": torch.ones(B, T), "labels": torch.full((B, T), -1), "mask": torch.ones(B, T, dtype=bool)}
    dec, enc, prior = DecoderBank(1, F, D, 16, DV), SpeechEncoder(F, D, 16, DV), VisualPrior(DV, D, 16)
    switch = make_switch("iid", 1, 1, learn_prior=False)
    guide = poutine.trace(speech_guide).get_trace(batch, enc)
    model = poutine.trace(poutine.replay(speech_model, guide)).get_trace(batch, dec, switch, 1.0, prior)
    z = guide.nodes["z"]["value"]
    loc, scale = prior(batch["lips"], batch["present"])
    expected = torch.distributions.Normal(loc[..., None, :], scale[..., None, :]).log_prob(z).sum((-1, -2))
    assert torch.allclose(model.nodes["z"]["fn"].log_prob(z), expected)


def _models(prior=True, seed=0):
    torch.manual_seed(seed)
    return SpeechModels(SpeechEncoder(F, D, 16, DV), DecoderBank(2, F, D, 16, DV), LipProjection(DV, 8),
                        StftConfig(), prior=VisualPrior(DV, D, 16) if prior else None)


def test_lip_specific_guide_starts_each_source_from_its_own_lips():
    m = _models()
    B, T, J = 1, 12, 2
    power, lips = torch.rand(B, T, F) + 0.1, torch.randn(B, T, J, DV)
    present = torch.ones(B, T, J)
    switch = make_switch("utterance", 2, J)
    by_encoder = SeparationModel(m.encoder, m.decoders, switch, prior=m.prior)
    by_prior = SeparationModel(m.encoder, m.decoders, switch, prior=m.prior, guide_init="prior")
    both = SeparationModel(m.encoder, m.decoders, switch, prior=m.prior, guide_init="product")
    loc_p, scale_p = by_prior.initial_guide(power, lips, present)
    assert torch.allclose(loc_p, m.prior(lips, present)[0])
    loc_e, scale_e = by_encoder.initial_guide(power, lips, present)
    loc_b, scale_b = both.initial_guide(power, lips, present)
    assert torch.all(scale_b < torch.minimum(scale_e, scale_p))   # a product is narrower than both
    lo, hi = torch.minimum(loc_e, loc_p), torch.maximum(loc_e, loc_p)
    assert torch.all((loc_b >= lo - 1e-6) & (loc_b <= hi + 1e-6))
    with pytest.raises(ValueError, match="visual prior"):
        SeparationModel(m.encoder, m.decoders, switch, guide_init="prior")


@pytest.mark.parametrize("gain, frames", [("frame", 12), ("utterance", 1)])
def test_separation_with_the_visual_prior_and_each_gain(gain, frames):
    m = _models()
    B, T, J = 2, 12, 2
    power = torch.rand(B, T, F) + 0.1
    mask = torch.ones(B, T, dtype=torch.bool)
    mask[1, 9:] = False
    s = SeparationSettings(steps=3, num_samples=2, guide_init="product", gain=gain)
    fit = fit_batch(m, power, torch.randn(B, T, J, DV), torch.ones(B, T, J), mask, s)
    assert tuple(fit.params["gain"].shape) == (B, frames, J)
    assert torch.allclose(fit.masks.sum(2), torch.ones(B, T, F), atol=1e-4)
    with pytest.raises(InputError, match="separate.guide_init"):
        fit_batch(_models(prior=False), power, torch.randn(B, T, J, DV), torch.ones(B, T, J), mask, s)
    with pytest.raises(InputError, match="separate.gain"):
        SeparationSettings(gain="bogus")


def test_model_file_keeps_the_temporal_encoder_and_the_prior(tmp_path):
    m = _models()
    m.lip_encoder = LipTemporalEncoder(5, DV, 8, dilations=(4,))
    m.save(tmp_path / "m.pt")
    back = SpeechModels.load(tmp_path / "m.pt")
    u, p = torch.randn(20, 5), torch.ones(20)
    assert back.lip_encoder.dilations == (4,)
    assert torch.equal(back.lip_encoder(u, p), m.lip_encoder(u, p))
    # a file from before the residual layers (no dilations, no weights for them) still loads
    m.lip_encoder = LipTemporalEncoder(5, DV, 8)
    m.save(tmp_path / "base.pt")
    old = torch.load(tmp_path / "base.pt", weights_only=False)
    del old["lip_encoder"]["dilations"]
    torch.save(old, tmp_path / "old.pt")
    assert torch.equal(SpeechModels.load(tmp_path / "old.pt").lip_encoder(u, p), m.lip_encoder(u, p))
    v = torch.randn(3, DV)
    assert all(torch.equal(a, b) for a, b in zip(back.prior(v, torch.ones(3)), m.prior(v, torch.ones(3))))
    plain = _models(prior=False)
    plain.save(tmp_path / "plain.pt")
    again = SpeechModels.load(tmp_path / "plain.pt")
    assert again.prior is None and again.lip_encoder is None


def test_lips_are_projected_on_the_models_device_and_come_back_to_the_cpu(monkeypatch):
    """Separation moves the model (and the lip projection's buffers) to its device; the mouth
    ROIs of a track must follow them there (they come from the video on the CPU). A meta-device
    projection stands in for a GPU: what reaches it must be on its device."""
    import numpy as np

    from pyro_avss.inference.inputs import aligned_lips
    from pyro_avss.video.track import LipTrack

    n = 10
    track = LipTrack(rois=np.zeros((n, 16, 16), np.uint8), landmarks=np.zeros((n, 0, 2), np.float32),
                     timestamps=np.arange(n) / 25.0, fps=25.0, face_found=np.ones(n, bool), detector="test")
    projection = LipProjection(4, 8)
    projection.fitted.fill_(True)
    projection.components = projection.components.to("meta")       # where the model would be
    seen = []

    def spy(self, rois, present):
        seen.append((rois.device, present.device))
        return torch.zeros(rois.shape[0], self.dim)

    monkeypatch.setattr(LipProjection, "forward", spy)
    lips, present = aligned_lips(track, projection, np.arange(5) * 0.016)
    assert seen == [(torch.device("meta"), torch.device("meta"))]
    assert lips.device.type == "cpu" and present.device.type == "cpu" and lips.shape == (5, 4)


def test_faceless_gain_is_free_only_where_the_face_is_missing():
    """gain=faceless: one gain per source and chunk where its face is seen, and a gain of its
    own on each frame without that source's face; only the seen frames move the chunk's gain."""
    m = _models()
    B, T, J = 1, 12, 2
    power = torch.rand(B, T, F) + 0.1
    present = torch.ones(B, T, J)
    present[0, 3:7, 1] = 0.0                                       # source 2 loses its face
    s = SeparationSettings(steps=5, num_samples=2, tol=0.0, gain="faceless")
    fit = fit_batch(m, power, torch.randn(B, T, J, DV), present, torch.ones(B, T, dtype=torch.bool), s)
    masks, own = fit.masks, fit.params["gain_faceless"]
    assert tuple(fit.params["gain"].shape) == (B, 1, J) and tuple(own.shape) == (B, T, J)
    seen = present > 0.5
    start = torch.tensor(1.0 / (J + 1))
    assert torch.allclose(own[seen], start.expand(int(seen.sum())))  # no gradient where the face is seen
    assert torch.all(own[~seen] != start)                          # fitted where it is not
    assert torch.allclose(masks.sum(2), torch.ones(B, T, F), atol=1e-4)

    # the faceless frames' gains are not tied to the chunk's: nothing that depends on them
    # alone moves it (as factors on it, they pulled it)
    import pyro

    pyro.clear_param_store()
    sep = SeparationModel(m.encoder, m.decoders, make_switch("utterance", 2, J), prior=m.prior, gain="faceless")
    gains = sep.fitted_gain(power, present)
    chunk = pyro.param("gain").unconstrained()
    (grad,) = torch.autograd.grad(gains[~seen].sum(), chunk, allow_unused=True)
    assert grad is None or torch.all(grad == 0)
    assert torch.equal(gains[seen], pyro.param("gain").expand(B, T, J)[seen])


def test_audio_only_twins_share_weights_and_ignore_the_lips():
    torch.manual_seed(0)
    bank = DecoderBank(3, F, D, 16, DV, uses_video=[True, True, False], names=["s1", "s4", "universal"])
    twins = bank.with_audio_only_twins()
    assert twins.names == ["s1", "s4", "universal", "s1-ao", "s4-ao"]
    assert twins.uses_video.tolist() == [1, 1, 0, 0, 0]
    z, lips, present = torch.randn(5, D), torch.randn(5, DV), torch.ones(5)
    with torch.no_grad():
        assert torch.allclose(twins(z, lips, present)[:, :3], bank(z, lips, present), atol=1e-6)
        assert torch.allclose(twins(z, lips, present)[:, 3:], bank(z, lips, torch.zeros(5))[:, :2], atol=1e-6)
        assert not torch.allclose(twins(z, lips, present)[:, 3:], twins(z, lips, present)[:, :2])
