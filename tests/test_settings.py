"""One settings system (issue 15): the dataclasses of :mod:`pyro_avss.settings` are the single
source of every default; YAML, ``--set`` and Python build them with the same one-line errors,
and every range and choice is checked when they are built, before any work."""

from __future__ import annotations

import dataclasses

import pytest
from click.testing import CliRunner

from pyro_avss.api import separation_settings
from pyro_avss.audio import StftConfig
from pyro_avss.checkpoint import SpeechModels
from pyro_avss.cli import main
from pyro_avss.config import DEFAULTS, dump_config, load_config, load_settings
from pyro_avss.errors import ConfigError, InputError, SettingError
from pyro_avss.evaluation.overrides import settings_from_overrides
from pyro_avss.inference.mcem import MCEMSettings
from pyro_avss.inference.separation import SeparationSettings
from pyro_avss.settings import SECTIONS, Settings
from pyro_avss.settings.base import KINDS, kind

from test_separation import noisy, random_models


def test_every_default_is_written_once_in_the_dataclasses():
    defaults = Settings()
    assert load_config(None) == defaults.to_config() == DEFAULTS
    assert load_settings(None) == defaults
    assert list(DEFAULTS) == list(SECTIONS) == [f.name for f in dataclasses.fields(Settings)]
    assert SeparationSettings() == SeparationSettings.from_config(load_config(None)["separate"])
    assert MCEMSettings() == MCEMSettings.from_config(load_config(None)["mcem"])
    assert dataclasses.asdict(StftConfig()) == DEFAULTS["stft"]        # the model's STFT too
    for name, section in SECTIONS.items():
        assert section.NAME == name and list(DEFAULTS[name]) == [f.name for f in section.config_fields()]
        for f in section.config_fields():           # every key has a type the config can read
            type_name, optional = kind(f)
            value = DEFAULTS[name][f.name]
            assert type_name in KINDS and (KINDS[type_name][1](value) or (optional and value is None)), f


def test_the_model_modules_use_the_settings_choices():
    from pyro_avss.models import generative, markov_switch, switch
    from pyro_avss.settings import separation, training

    assert switch.SWITCH_PRIORS is separation.SWITCH_PRIORS
    assert generative.GAINS is separation.GAINS and generative.GUIDES is separation.GUIDES
    assert markov_switch.DEFAULT_STAY is training.DEFAULT_STAY == Settings().train.stay_prob


def test_yaml_round_trip(tmp_path):
    dump_config(Settings().to_config(), tmp_path / "all.yaml")
    assert load_settings(tmp_path / "all.yaml") == Settings()
    (tmp_path / "some.yaml").write_text("mcem:\n  em_iterations: 20\nseparate:\n  lr: 1\n")
    settings = load_settings(tmp_path / "some.yaml", ["mcem.switch=utterance"])
    assert settings.mcem == MCEMSettings(em_iterations=20, switch="utterance")
    assert settings.separate.lr == 1.0 and isinstance(settings.separate.lr, float)


BAD = [
    ("separate.switch_prior=bogus", "separate.switch_prior: must be auto, iid, markov, utterance or speaker, got 'bogus'"),
    ("separate.stay_prob=1", "separate.stay_prob: must be in (0, 1), got 1.0"),
    ("separate.steps=0", "separate.steps: must be >= 1, got 0"),
    ("separate.num_samples=0", "separate.num_samples: must be >= 1, got 0"),
    ("separate.lr=0", "separate.lr: must be > 0, got 0.0"),
    ("separate.guide=bogus", "separate.guide: must be auto, meanfield or markov, got 'bogus'"),
    ("train.lr=-1", "train.lr: must be > 0, got -1.0"),
    ("train.mode=bogus", "train.mode: must be universal, speakers, switching or noisy_encoder, got 'bogus'"),
    ("train.mode=speakers", "train.init: mode 'speakers' needs train.init"),
    ("stft.hop=2048", "stft.hop: must be at most stft.n_fft = 1024, got 2048"),
    ("data.max_clips_per_speaker=0", "data.max_clips_per_speaker: must be >= 1, got 0"),
    ("mcem.switch=markov", "mcem.switch: must be iid or utterance, got 'markov'"),
    ("mcem.em_iterations=0", "mcem.em_iterations: must be >= 1, got 0"),
    ("mcem.burn_in=40", "mcem.burn_in: must be in [0, mh_steps=40), got 40"),
]


@pytest.mark.parametrize("item, message", BAD, ids=[b[0] for b in BAD])
def test_a_bad_value_is_one_line_naming_its_key(item, message):
    with pytest.raises(SettingError) as err:
        load_settings(None, [item])
    assert str(err.value).startswith(message) and "\n" not in str(err.value)
    assert isinstance(err.value, ConfigError) and isinstance(err.value, InputError)


def test_python_construction_checks_types_and_ranges_like_a_config():
    with pytest.raises(SettingError, match="^separate.steps: must be an integer, got 'many'$"):
        SeparationSettings(steps="many")
    with pytest.raises(SettingError, match=r"^mcem.tol: must be >= 0, got -1"):
        MCEMSettings(tol=-1)
    with pytest.raises(ConfigError, match="unknown config key 'separate.stepz'"):
        SeparationSettings.from_config({"stepz": 3})
    with pytest.raises(SettingError, match="separate.lr_decay"):
        dataclasses.replace(SeparationSettings(), lr_decay=0)
    assert SeparationSettings.from_config({"steps": 3}, components=(1,)).components == (1,)
    assert "components" not in SeparationSettings().to_config()       # code only, not a key


def test_wrong_types_and_unknown_keys_keep_their_messages():
    with pytest.raises(ConfigError, match=r"^--set: separate.steps must be int, got 'many'$"):
        load_settings(None, ["separate.steps=many"])
    with pytest.raises(ConfigError, match=r"^--set: train.max_steps_per_epoch must be int, got 'x'$"):
        load_settings(None, ["train.max_steps_per_epoch=x"])       # optional keys are typed too
    with pytest.raises(ConfigError, match=r"^--set: unknown config key 'mcem.bogus' \(keys under mcem: "):
        load_settings(None, ["mcem.bogus=1"])
    with pytest.raises(ConfigError, match=r"^--set: unknown config key 'nope.x' \(keys under top level: stft, "):
        load_settings(None, ["nope.x=1"])
    with pytest.raises(ConfigError, match=r"^--set: unknown config key 'separate.steps.x' \(keys under separate.steps: none\)"):
        load_settings(None, ["separate.steps.x=1"])
    with pytest.raises(ConfigError, match=r"^config: 'mcem' is a section, set one of its keys"):
        load_settings({"mcem": 3})
    assert load_settings(None, ["separate.noise_smooth_rank=4.0"]).separate.noise_smooth_rank == 4
    assert load_settings(None, ["data.speakers=s1"]).data.speakers == ["s1"]


def test_separate_refuses_a_bad_choice_before_reading_the_model(tmp_path):
    """No model file at all: the setting is what the one line is about, and nothing is written."""
    result = CliRunner().invoke(main, ["separate", "--model", str(tmp_path / "none.pt"), "--mixture",
                                       str(tmp_path / "none.wav"), "--out", str(tmp_path / "out"),
                                       "--set", "separate.switch_prior=bogus"])
    assert result.exit_code == 2
    assert result.stderr == "error: separate.switch_prior: must be auto, iid, markov, utterance or speaker, got 'bogus'\n"
    assert not (tmp_path / "out").exists()


def test_evaluate_refuses_a_bad_choice_before_reading_anything(tmp_path):
    result = CliRunner().invoke(main, ["evaluate", "--systems", "mcem", "--mixtures", str(tmp_path / "none.csv"),
                                       "--model", str(tmp_path / "none.pt"), "--out", str(tmp_path / "out"),
                                       "--set", "mcem.switch=bogus"])
    assert result.exit_code == 2 and result.stderr == "error: mcem.switch: must be iid or utterance, got 'bogus'\n"
    assert not (tmp_path / "out").exists()


def test_fit_refuses_a_bad_range_before_any_folder(tmp_path):
    result = CliRunner().invoke(main, ["fit", "--out", str(tmp_path / "out"), "--set", "train.lip_dropout=2"])
    assert result.exit_code == 2 and result.stderr == "error: train.lip_dropout: must be in [0, 1], got 2.0\n"
    assert not (tmp_path / "out").exists()


def test_a_model_with_an_old_config_still_loads_and_separates(tmp_path):
    """Model files keep the config dict they were trained with: one from an older version (keys
    missing, a key since retired, no mcem section) is kept as it is and never re-checked."""
    old = {k: dict(v) for k, v in DEFAULTS.items() if k != "mcem"}
    del old["model"]["audio_only_twins"], old["separate"]["prune_after"]
    old["data"]["retired"] = True
    models = random_models()
    models.config = old
    models.save(tmp_path / "old.pt")
    loaded = SpeechModels.load(tmp_path / "old.pt")
    assert loaded.config == old
    separation, mcem, data = settings_from_overrides(["separate.steps=2"], loaded.config)
    assert separation.steps == 2 and mcem == MCEMSettings() and data.cache == old["data"]["cache"]
    from pyro_avss.api import Separator

    result = Separator(loaded, separation_settings(steps=2, num_samples=1), "cpu").separate(
        noisy(0.3), sample_rate=16000)
    assert result.sources[0].shape == (4800,)
