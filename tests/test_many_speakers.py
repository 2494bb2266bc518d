"""Banks of many speakers: the labelled decoder alone in training, the screening of joint
switch states before a fit with several sources, speaker identification, the pool corpus."""

from __future__ import annotations

import csv

import numpy as np
import pyro
import pytest
import soundfile as sf
import torch
from pyro.infer import Trace_ELBO

from pyro_avss.api import SeparationResult
from pyro_avss.audio import StftConfig
from pyro_avss.evaluation.scoring import true_speaker_switch
from pyro_avss.inference.batch_fit import fit_batch
from pyro_avss.inference.screening import kept_components, kept_count, needs_screening
from pyro_avss.inference.separation import SeparationSettings
from pyro_avss.inference.separation_outputs import write_speakers
from pyro_avss.models.generative import speech_guide, speech_model, utterance_labels
from pyro_avss.models.switch import IIDSwitch, identified_components
from pyro_avss.nets.vae import DecoderBank, SpeechEncoder
from pyro_avss.recipes.speaker_pool import part_bounds, write_pool_corpus, write_test_mixtures

from test_model_math import B, D, DV, F, T, tiny_inputs, tiny_nets
from test_separation import random_models


# --------------------------------------------------------------------------------------------
# training: only the labelled speaker's decoder is evaluated
# --------------------------------------------------------------------------------------------
def test_selected_component_equals_the_bank_sliced():
    torch.manual_seed(0)
    bank = DecoderBank(5, F, D, 16, DV, uses_video=[True, False, True, False, True])
    z = torch.randn(3, B, T, 1, D)                   # a leading sample dimension too
    power, lips, present, _ = tiny_inputs(1)
    index = torch.tensor([4, 1])
    full = bank(z, lips, present)
    picked = bank.selected(z, lips, present, index)
    assert picked.shape == (3, B, T, 1, 1, F)
    for b in range(B):
        assert torch.allclose(picked[:, b], full[:, b, :, :, index[b]:index[b] + 1], atol=1e-6)


def test_utterance_labels_need_one_known_label_per_utterance():
    mask = torch.tensor([[True, True, False], [True, True, True]])
    assert utterance_labels(torch.tensor([[2, 2, -1], [0, 0, 0]]), mask).tolist() == [2, 0]
    assert utterance_labels(torch.tensor([[2, 1, -1], [0, 0, 0]]), mask) is None       # two labels
    assert utterance_labels(torch.tensor([[2, 2, -1], [0, -1, 0]]), mask) is None      # one unknown


class WholeBank:
    """The same decoders without ``selected``: the training model then evaluates all K."""

    def __init__(self, bank):
        self.bank, self.num_components, self.latent_dim = bank, bank.num_components, bank.latent_dim

    def __call__(self, *args):
        return self.bank(*args)


def test_training_loss_and_gradients_equal_with_the_labelled_decoder_alone():
    enc, dec = tiny_nets(4)
    power, lips, present, mask = tiny_inputs(1)
    labels = torch.tensor([3, 1])[:, None].expand(B, T).clone()
    labels[~mask] = -1                               # padding carries no label
    batch = {"power": power, "lips": lips[..., 0, :], "present": present[..., 0], "labels": labels,
             "mask": mask}
    results = []
    for decoders in (dec, WholeBank(dec)):
        dec.zero_grad()
        pyro.set_rng_seed(3)
        switch = IIDSwitch(4, 1, learn_prior=False)
        loss = Trace_ELBO().differentiable_loss(lambda b: speech_model(b, decoders, switch, 0.5),
                                                lambda b: speech_guide(b, enc, None, 0.5), batch)
        loss.backward()
        results.append((loss.item(), [p.grad.clone() for p in dec.parameters()]))
    (fast, fast_grads), (slow, slow_grads) = results
    assert fast == pytest.approx(slow, rel=1e-5)
    for a, b in zip(fast_grads, slow_grads):
        assert torch.allclose(a, b, rtol=1e-4, atol=1e-5)
    assert float(fast_grads[-1][0].abs().sum()) == 0.0    # b3 of component 0: no utterance of it


# --------------------------------------------------------------------------------------------
# separation: screening the components before a fit of J sources
# --------------------------------------------------------------------------------------------
def test_kept_count_is_the_largest_that_fits():
    assert kept_count(128, 2) == 11 and kept_count(125, 3) == 5 and kept_count(124, 3) == 4
    assert kept_count(1, 3) == 1 and kept_count(64, 1) == 64
    settings = SeparationSettings(max_joint_states=128)
    assert not needs_screening(settings, 11, 2) and needs_screening(settings, 12, 2)
    assert not needs_screening(settings, 500, 1)        # one source: K states, never screened


def test_kept_components_take_turns_between_the_sources():
    one = torch.tensor([0.0, 9, 8, 7, 0, 0])
    two = torch.tensor([5.0, 0, 0, 0, 6, 4])
    assert kept_components([one, two], list(range(6)), 4) == [0, 1, 2, 4]
    assert kept_components([one, one], list(range(6)), 2) == [1, 2]
    assert kept_components([one, two], [0, 3, 4, 5], 2) == [3, 4]       # only among those in use


def test_a_screened_fit_has_posterior_only_on_the_kept_components():
    models = random_models(K=6)
    power, lips, present, mask = (torch.rand(1, 40, 513) * 2, torch.zeros(1, 40, 2, 0),
                                  torch.zeros(1, 40, 2), torch.ones(1, 40, dtype=torch.bool))
    settings = SeparationSettings(steps=12, num_samples=2, max_joint_states=9, prune_threshold=0)
    fit = fit_batch(models, power, lips, present, mask, settings)
    used = (fit.posterior.sum((0, 1, 2)) > 0).nonzero().flatten().tolist()
    assert len(used) == 3                                # 3 ** 2 = 9 joint states
    assert torch.allclose(fit.posterior.sum(-1), torch.ones(1, 40, 2), atol=1e-4)
    assert fit.masks.shape == (1, 40, 3, 513)
    unscreened = fit_batch(models, power, lips, present, mask,
                           SeparationSettings(steps=12, num_samples=2, max_joint_states=36, prune_threshold=0))
    assert (unscreened.posterior.sum((0, 1, 2)) > 0).sum() == 6


# --------------------------------------------------------------------------------------------
# scoring and the pool corpus
# --------------------------------------------------------------------------------------------
def test_speaker_identified_by_the_posterior_over_speech_frames():
    cfg = StftConfig()
    reference = np.zeros(16000, np.float32)
    reference[:8000] = np.sin(np.arange(8000) * 0.3)          # speech in the first half only
    T = 16000 // cfg.hop + 1
    post = np.zeros((T, 3))
    post[:, 2] = 1.0                                          # component 2 everywhere ...
    post[: T // 2 - 2] = [0.0, 1.0, 0.0]                       # ... except where the speech is
    assert true_speaker_switch(post, reference, 1, cfg)[1] == 1.0            # identified
    assert true_speaker_switch(post, reference, 2, cfg)[1] == 0.0


def test_the_identified_speaker_explains_all_speech_frames_together_not_the_most_of_them():
    """Component 0 wins 6 of 10 speech frames and has the larger mean posterior, but is all but
    ruled out in the other 4, where component 1 explains the frames; component 1 is never far
    behind: the utterance-level decision is 1."""
    cfg = StftConfig()
    reference = np.sin(np.arange(cfg.hop * 9) * 0.3).astype(np.float32)    # 10 frames, all speech
    post = np.array([[0.9, 0.1]] * 6 + [[1e-12, 1.0]] * 4)
    assert post[:, 0].mean() > post[:, 1].mean()
    mass, identified = true_speaker_switch(post, reference, 1, cfg)
    assert identified == 1.0 and mass == pytest.approx(0.46)
    assert true_speaker_switch(post, reference, 0, cfg)[1] == 0.0


def test_part_bounds_cut_an_utterance_into_contiguous_parts():
    parts = part_bounds(16000 * 12, 16000, 2.0, 3.0)
    assert parts == {"train": (0, 16000 * 7), "dev": (16000 * 7, 16000 * 9), "test": (16000 * 9, 16000 * 12)}
    with pytest.raises(ValueError):
        part_bounds(16000 * 5, 16000, 2.0, 3.0)


def fake_shared_data(root, durations):
    rng = np.random.default_rng(0)
    for i, seconds in enumerate(durations):
        speaker = str(100 + i)
        folder = root / "librispeech" / "train-clean-100" / speaker
        folder.mkdir(parents=True)
        sf.write(folder / f"{speaker}-1-0000.flac", (0.1 * rng.standard_normal(int(16000 * seconds))), 16000,
                 subtype="PCM_16")
    (root / "noise").mkdir()
    sf.write(root / "noise" / "hum.flac", 0.1 * rng.standard_normal(16000 * 8), 16000, subtype="PCM_16")
    (root / "manifests").mkdir()
    (root / "manifests" / "noise.csv").write_text("name,audio\nhum,noise/hum.flac\n")


def test_pool_corpus_cuts_each_chosen_utterance_without_changing_a_sample(tmp_path):
    data = tmp_path / "shared"
    fake_shared_data(data, [11.0, 6.0, 12.5, 10.0])
    corpus = write_pool_corpus(data, tmp_path / "pool", num_speakers=3, min_seconds=10.0)
    rows = list(csv.DictReader(open(corpus)))
    assert sorted({r["speaker"] for r in rows}) == ["100", "102", "103"]     # 101 is too short
    assert [r["split"] for r in rows[:3]] == ["train", "dev", "test"]
    original = sf.read(data / "librispeech" / "train-clean-100" / "102" / "102-1-0000.flac", dtype="int16")[0]
    cut = np.concatenate([sf.read(tmp_path / "pool" / r["audio"], dtype="int16")[0]
                          for r in rows if r["speaker"] == "102"])
    assert np.array_equal(cut, original)
    mixtures = write_test_mixtures(corpus, data, tmp_path / "pool")
    identify = list(csv.DictReader(open(mixtures["identify"])))
    assert len(identify) == 3 and all(r["source1_id"].endswith("_test") for r in identify)
    two = list(csv.DictReader(open(mixtures["two_talkers"])))
    assert all(r["source1_speaker"] != r["source2_speaker"] for r in two)
    with pytest.raises(Exception, match="only 3 pool speakers"):
        write_pool_corpus(data, tmp_path / "pool4", num_speakers=4, min_seconds=10.0)


def test_a_results_file_of_an_older_version_is_read_and_extended(tmp_path):
    from pyro_avss.evaluation.results_csv import CSV_COLUMNS, read_results, write_results

    old_columns = [c for c in CSV_COLUMNS if c != "switch_identified"]
    path = tmp_path / "results.csv"
    with open(path, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=old_columns)
        writer.writeheader()
        writer.writerow({c: "" for c in old_columns} | {"id": "a", "system": "s", "source": "1",
                                                        "status": "ok", "si_sdr": "3.5"})
    (row,) = read_results(path)
    assert row["si_sdr"] == 3.5 and np.isnan(row["switch_identified"])
    write_results(path, [{"id": "b", "system": "s", "source": 1, "status": "ok", "switch_identified": 1.0}])
    assert open(path).readline().strip().split(",") == list(CSV_COLUMNS)
    rows = read_results(path)
    assert [r["id"] for r in rows] == ["a", "b"] and rows[0]["si_sdr"] == 3.5 and rows[1]["switch_identified"] == 1.0
    (tmp_path / "bad.csv").write_text("id,system,source,status,what\n")
    with pytest.raises(Exception, match="other columns"):
        read_results(tmp_path / "bad.csv")


def test_identified_components_is_one_rule_for_the_api_and_the_scores(tmp_path):
    """The public rule: per leading index, over all or the selected frames; -1 without frames;
    torch and numpy alike; and the API's ``best_components`` applies it, not the mean posterior."""
    post = np.array([[0.9, 0.1]] * 6 + [[1e-12, 1.0]] * 4)                  # (T=10, K=2)
    assert post.mean(0).argmax() == 0
    assert identified_components(post) == 1
    assert identified_components(post, frames=np.arange(10) < 6) == 0       # only frames 0-5
    assert identified_components(post, frames=np.zeros(10, bool)) == -1
    both = np.stack([post, post[:, ::-1]])                                   # (J=2, T, K)
    assert identified_components(both).tolist() == [1, 0]
    assert identified_components(torch.as_tensor(both)).tolist() == [1, 0]
    result = SeparationResult([np.zeros(4, np.float32)] * 2, np.zeros(4, np.float32), 16000, both,
                              ["a", "b"], np.arange(10) * 0.016, np.zeros(4, np.float32), None)
    assert result.best_components == ["b", "a"]
    write_speakers(tmp_path / "speakers.csv", both.transpose(1, 0, 2), ["a", "b"])   # what separate writes
    rows = list(csv.DictReader(open(tmp_path / "speakers.csv")))
    assert [(r["source"], r["component"]) for r in rows] == [("1", "b"), ("2", "a")]
    assert float(rows[0]["mean_probability"]) == pytest.approx(post[:, 1].mean(), abs=1e-4)
