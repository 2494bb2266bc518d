"""Property-based tests of the command line, end to end: the real click app (in-process, through
click's ``CliRunner``) runs ``separate``, ``evaluate`` and ``fit`` with random ``--set`` lists
(known keys with random and hostile values, unknown keys, malformed items) on a tiny
random-weight model and short WAVs of random length and content.

Every case must end with exit status 0, 1 or 2 and never with an uncaught exception; a failure
must be said on stderr in lines of the form ``error: ...`` (exactly one line when there is one
input); nothing may be written outside ``--out`` (no hidden half-written folder inside it
either), and a command that could not start (status 2) writes nothing at all.

The default suite runs ``CLI_FUZZ`` cases per command (see ``conftest.py``); a long run:
``PYRO_AVSS_FUZZ=long python -m pytest tests/test_fuzz_cli.py``.
"""

from __future__ import annotations

import contextlib
import csv
import re
import shutil
import sys
import tempfile
import traceback
import warnings
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from click.testing import CliRunner
from hypothesis import event, given, strategies as st

from pyro_avss.cli import main
from pyro_avss.config import DEFAULTS
from pyro_avss.inference.run_separate import NOTICES, output_names

from conftest import CLI_FUZZ, fuzz_settings
from test_batch_safety import all_files
from test_harness import FAST, setup  # noqa: F401 - the tiny synthetic manifest and model
from test_separation import noisy, random_models
from test_training import synthetic_rows

CHEAP_SEPARATION = ["separate.steps=2", "separate.num_samples=1"]
"""Prepended to every ``--set`` list (a fuzzed value of the same key comes later and wins)."""


# ---------------------------------------------------------------------------------------------
# strategies
# ---------------------------------------------------------------------------------------------
def known_keys(*sections: str) -> list[str]:
    """Every dotted config key of ``sections`` (all sections when none is named)."""
    return [f"{s}.{k}" for s, keys in DEFAULTS.items() if not sections or s in sections
            for k in keys]


UNKNOWN_KEYS = ["separate.bogus", "nope.x", "separate", "stft", "", " ", "separate.steps.x",
                "separate..steps", ".", "mcem.bogus", "data.", "train.lr.x"]
HOSTILE_VALUES = ["nan", ".nan", ".inf", "-.inf", "1e309", "1.0e+300", "-0.0", "1e-300", "",
                  "null", "~", "[]", "[1, 2]", "{a: 1}", "true", "no", "'", '"', ":", "- x",
                  "&a [*a]", "!!python/object/apply:os.system ['echo pwned']", "\x00", "0x10",
                  "1_000", "2.5", "-1", "4294967296", "../../escape", "/tmp/abs"]
MALFORMED = ["=", "==", "=3", "separate.steps", "separate.steps==2", "separate.steps= =",
             " = ", "separate.steps=\n3"]
NAMES = ["utterance", "iid", "markov", "flat", "lips", "auto", "product", "encoder", "prior",
         "meanfield", "frame", "marginal", "pyro", "mu", "adam", "sine", "hann", "universal",
         "speakers", "switching", "observed", "temporal", "visual", "none", "roi", "bogus"]


def plausible(key: str):
    """Values of the type of ``key``'s default, in and around its valid range (small numbers:
    a fuzzed ``steps`` or ``num_samples`` must not make one case run for minutes)."""
    section, _, name = key.partition(".")
    default = DEFAULTS.get(section, {}).get(name)
    if isinstance(default, bool):
        return st.sampled_from(["true", "false"])
    if isinstance(default, int):
        return st.integers(-2, 6).map(str)
    if isinstance(default, float):
        return st.one_of(st.floats(-1, 10).map(repr),
                         st.sampled_from(["0", "1e-9", "0.999999", "1.0e+6", "1.0e+30", "1.0e-30"]))
    if isinstance(default, str):
        return st.sampled_from(NAMES)
    return st.sampled_from(["null", "1", "[0]", "x"])


values = st.one_of(st.integers(-3, 4).map(str), st.sampled_from(HOSTILE_VALUES),
                   st.text(max_size=10))


def set_items(keys: list[str]):
    """``--set`` strings: mostly a known key with a value of its type (in or out of range),
    else a known key with a hostile value, an unknown key or a malformed item."""
    typed = st.sampled_from(keys).flatmap(lambda k: plausible(k).map(lambda v: f"{k}={v}"))
    key = st.one_of(st.sampled_from(keys), st.sampled_from(UNKNOWN_KEYS), st.text(max_size=12))
    hostile = st.tuples(key, values).map(lambda kv: f"{kv[0]}={kv[1]}")
    rare = st.one_of(hostile, st.sampled_from(MALFORMED), st.text(max_size=20))
    return st.lists(st.one_of(typed, typed, typed, typed, typed, rare), max_size=3)


def absurd(items: list[str]) -> bool:
    """Whether a ``--set`` value is a number of absurd magnitude (above 1e3, or below 1e-6 but
    not 0): such a value may pass validation and still break the arithmetic of a recording,
    which then fails on its own line (status 1) like any numerical failure."""
    for item in items:
        try:
            x = abs(float(item.partition("=")[2]))
        except ValueError:
            continue
        if x > 1e3 or 0 < x < 1e-6:
            return True
    return False


def set_args(items: list[str]) -> list[str]:
    return [a for item in items for a in ("--set", item)]


LENGTHS = st.one_of(st.integers(1, 2000), st.sampled_from([4000, 8000]))
CONTENTS = st.sampled_from(["speech", "silence", "full scale", "denormal"])


def write_wav(path: Path, length: int, content: str) -> Path:
    """A 16 kHz WAV of ``length`` samples: noisy speech-like tones, digital silence, a
    full-scale square wave or values near the smallest float."""
    x = noisy(1.0)[:length] if length <= 16000 else noisy(length / 16000)
    x = {"speech": x, "silence": np.zeros_like(x), "full scale": np.sign(x) + (x == 0),
         "denormal": np.full_like(x, 1e-38)}[content]
    sf.write(path, x.astype(np.float32), 16000, subtype="FLOAT")
    return path


# ---------------------------------------------------------------------------------------------
# running and checking a case
# ---------------------------------------------------------------------------------------------
def invoke(workspace: Path, args: list[str]):
    """Run the command line in a fresh empty folder inside ``workspace``; returns the click
    result, the case's folder and the files of ``workspace`` before the run."""
    before = all_files(workspace)
    case = Path(tempfile.mkdtemp(dir=workspace, prefix="case"))
    with contextlib.chdir(case), warnings.catch_warnings():
        warnings.simplefilter("always")
        warnings.showwarning = warning_to_stderr        # as a real process shows them
        result = CliRunner().invoke(main, args)
    return result, case, before


def warning_to_stderr(message, category, filename, lineno, file=None, line=None):
    """Python's default display of a warning (pytest would otherwise record it silently)."""
    sys.stderr.write(warnings.formatwarning(message, category, filename, lineno, line))


PROGRESS = re.compile(r"\d+%\|.*\| \d+/\d+")
"""A progress bar's line (``fit`` has no ``--quiet``)."""


def check_outcome(result, workspace: Path, case: Path, before: set, inputs: int = 1,
                  allowed: tuple[str, ...] = ()) -> None:
    """The properties every case must have (see the module docstring); ``allowed``: folders of
    ``workspace`` the command was told to write to besides ``--out`` (a cache)."""
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise AssertionError("uncaught exception:\n" + "".join(traceback.format_exception(
            result.exception)) + f"\nstderr: {result.stderr}")
    assert result.exit_code in (0, 1, 2), (result.exit_code, result.output)
    lines = [line for line in result.stderr.splitlines()
             if line.strip() and not line.startswith("notice: ") and not PROGRESS.search(line)]
    assert result.exit_code or not lines, f"stderr of a success is not notices: {result.stderr}"
    if result.exit_code:
        errors = [line for line in lines if line.startswith("error: ")]
        assert errors and errors == lines, result.stderr
        assert len(errors) == 1 or inputs > 1, result.stderr
        assert all(len(line) > len("error: ") for line in errors), result.stderr
    out = case / "out"
    new = {p for p in all_files(workspace) - before
           if not any(Path(p).is_relative_to(a) for a in (case.name, *allowed))}
    assert not new, f"written outside the case folder: {sorted(new)}"
    inside = all_files(case)
    assert all(Path(p).is_relative_to("out") for p in inside), f"outside --out: {sorted(inside)}"
    if result.exit_code == 2:
        assert not out.exists(), f"a command that could not start wrote {sorted(inside)}"
    if out.exists():
        hidden = [p for p in out.iterdir() if p.name.startswith(".")]
        assert not hidden, f"half-written folders left in --out: {hidden}"
    shutil.rmtree(case)


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    """A folder with a tiny random-weight model (2 components) and a tiny audio corpus,
    prepared into ``cache/`` (in this process: ``fit`` would start a worker per core)."""
    from pyro_avss.data.corpora import scan_corpus
    from pyro_avss.data.prepare import prepare_corpus
    from pyro_avss.data.prepared import cache_folder

    root = tmp_path_factory.mktemp("cli_fuzz")
    random_models().save(root / "model.pt")
    corpus = root / "corpus"
    corpus.mkdir()
    rows = synthetic_rows(corpus, per_speaker=2, seconds=0.5)
    with open(corpus / "corpus.csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=["id", "speaker", "audio", "split"])
        w.writeheader()
        w.writerows({k: r[k] for k in ("id", "speaker", "audio", "split")} for r in rows)
    manifest = corpus / "corpus.csv"
    prepare_corpus(scan_corpus(manifest)[0], cache_folder(manifest, root / "cache"), workers=1,
                   progress=False)
    return root


# ---------------------------------------------------------------------------------------------
# the properties
# ---------------------------------------------------------------------------------------------
@fuzz_settings(CLI_FUZZ)
@given(items=set_items(known_keys("separate")), length=LENGTHS, content=CONTENTS,
       sources=st.sampled_from([1, 1, 1, 2, 2, 3, 0, 4]),
       device=st.sampled_from(["cpu"] * 7 + ["auto", "bogus", "cuda:99"]),
       flags=st.lists(st.sampled_from(["--force", "--skip-existing", "--resample"]), max_size=1))
def test_separate_from_the_command_line(workspace, items, length, content, sources, device, flags):
    wav = write_wav(workspace / "mix.wav", length, content)
    args = ["separate", "--model", str(workspace / "model.pt"), "--mixture", str(wav),
            "--out", "out", "--quiet", "--no-figure", "--device", device, "--sources", str(sources),
            *flags, *set_args(CHEAP_SEPARATION + items)]
    result, case, before = invoke(workspace, args)
    event(f"exit status {result.exit_code}")
    produced = sorted(p.name for p in (case / "out").iterdir()) if result.exit_code == 0 else []
    check_outcome(result, workspace, case, before)
    if result.exit_code == 1:              # settings that passed validation failed a good input
        assert diverged(result.stderr) or absurd(items), result.stderr
    if result.exit_code == 0:
        noticed = [NOTICES] if "notice: " in result.stderr else []
        assert produced == sorted(output_names(sources, plot=False) + noticed), produced


def diverged(stderr: str) -> bool:
    """A fit whose cost became NaN or infinite says so (SeparationDiverged), one line per input."""
    return re.search(r"(loss|cost) became (nan|inf|-inf)", stderr) is not None


@fuzz_settings(CLI_FUZZ // 6)
@given(items=set_items(known_keys("separate") + ["mcem.em_iterations", "mcem.mh_steps", "mcem.seed",
                                                 "mcem.switch", "data.detector", "data.cache"]),
       systems=st.lists(st.sampled_from(["mixture", "universal", "switching", "oracle-speaker",
                                         "mcem", "bogus", ""]), min_size=1, max_size=3),
       examples=st.sampled_from(["0", "1", "all"]), limit=st.sampled_from([1, 1, 1, 2, 0, -1]))
def test_evaluate_from_the_command_line(setup, items, systems, examples, limit):  # noqa: F811
    root, _ = setup
    args = ["evaluate", "--mixtures", str(root / "mix.csv"), "--model", str(root / "model.pt"),
            "--systems", ",".join(systems), "--out", "out", "--limit", str(limit), "--quiet",
            "--device", "cpu", "--examples", examples, *set_args(FAST + items)]
    result, case, before = invoke(root, args)
    event(f"exit status {result.exit_code}")
    check_outcome(result, root, case, before, inputs=len(systems) * max(limit, 1))
    if result.exit_code == 1:              # settings that passed validation failed a mixture
        assert diverged(result.stderr) or absurd(items), result.stderr


@fuzz_settings(CLI_FUZZ // 6)
@given(items=set_items(known_keys("train", "model", "lips", "stft")))
def test_fit_from_the_command_line(workspace, items):
    base = [f"data.corpora=[{workspace / 'corpus' / 'corpus.csv'}]",
            f"data.cache={workspace / 'cache'}", "model.use_video=false", "model.hidden=16",
            "model.latent_dim=4", "train.epochs=1", "train.batch_size=8", "train.segment_frames=8"]
    args = ["fit", "--out", "out", "--device", "cpu", *set_args(base + items)]
    result, case, before = invoke(workspace, args)
    event(f"exit status {result.exit_code}")
    fitted = (case / "out" / "model.pt").exists()
    check_outcome(result, workspace, case, before, allowed=("cache",))
    assert fitted == (result.exit_code == 0)


# ---------------------------------------------------------------------------------------------
# what the fuzzing found, kept as plain cases
# ---------------------------------------------------------------------------------------------
FOUND = [
    # (command, --set items or other arguments, status, the one line of stderr starts with)
    ("separate", ["separate.noise_start=lips"], 2,
     "error: separate.noise_start: 'lips' needs a model trained with a visual prior"),
    ("separate", ["separate.guide_init=prior"], 2,
     "error: separate.guide_init: 'prior' needs a model trained with a visual prior"),
    ("separate", ["separate.chunk_seconds=1e-9", "separate.overlap_seconds=0"], 2,
     "error: separate.chunk_seconds: must be at least one STFT hop (0.016 s), got 1e-09"),
    ("separate", ["separate.noise_rank=1.0e+18"], 2,
     "error: separate.noise_rank: must be at most the model's 513 frequency bins"),
    ("separate", ["separate.seed=-1"], 2, "error: separate.seed: must be in [0, 2**32 - 1], got -1"),
    ("separate", ["separate.enumeration=bogus"], 2,
     "error: separate.enumeration: must be marginal or pyro, got 'bogus'"),
    ("separate", ["separate.noise_smoothness=1.0e-300"], 1,     # a NaN loss, one line per input
     "error: mix.wav: separation loss became nan at step 1"),
    ("evaluate", ["data.detector=!!python/object/apply:os.system ['echo pwned']"], 2,
     "error: --set data.detector: value \"!!python/object/apply:os.system ['echo pwned']\" is not valid YAML"),
    ("evaluate", ["mcem.mh_steps=1"], 2, "error: mcem.burn_in: must be in [0, mh_steps=1), got 2"),
    ("evaluate", ["mcem.seed=-1"], 2, "error: mcem.seed: must be in [0, 2**32 - 1], got -1"),
    ("evaluate", ["--limit", "-1"], 2, "error: --limit: must be >= 1, got -1"),
    ("fit", ["model.latent_dim=0"], 2, "error: model.latent_dim: must be >= 1, got 0"),
    ("fit", ["stft.hop=0"], 2, "error: stft.hop: must be >= 1, got 0"),
    ("fit", ["lips.dim=-1"], 2, "error: lips.dim: must be >= 1, got -1"),
    ("fit", ["train.beta_start=0"], 2, "error: train.beta_start: must be in (0, 1], got 0.0"),
    ("fit", ["train.seed=-1"], 2, "error: train.seed: must be >= 0, got -1"),
    ("fit", ["train.max_steps_per_epoch=x"], 2,          # typed like every key (issue 15)
     "error: --set: train.max_steps_per_epoch must be int, got 'x'"),
    ("separate", ["separate.switch_prior=bogus"], 2,
     "error: separate.switch_prior: must be auto, iid, markov, utterance or speaker, got 'bogus'"),
    ("evaluate", ["mcem.bogus=1"], 2, "error: --set: unknown config key 'mcem.bogus' (keys under mcem: "),
    ("fit", ["model.prior=bogus"], 2,
     "error: model.prior: must be standard or visual, got 'bogus'"),
]


@pytest.mark.parametrize("command, items, status, line", FOUND,
                         ids=[f"{c} {' '.join(i)}" for c, i, _, _ in FOUND])
def test_what_fuzzing_found_is_one_line(workspace, setup, command, items, status, line):  # noqa: F811
    """Each was a traceback, a failure of every input of a batch (status 1 for a setting), a
    folder made by a command that could not start or a page of Pyro's trace shapes."""
    root, _ = setup
    extra = items if items[0].startswith("--") else set_args(items)
    args = {"separate": ["separate", "--model", str(workspace / "model.pt"), "--quiet",
                         "--mixture", str(write_wav(workspace / "mix.wav", 4000, "speech")),
                         "--no-figure", *set_args(CHEAP_SEPARATION)],
            "evaluate": ["evaluate", "--mixtures", str(root / "mix.csv"), "--model",
                         str(root / "model.pt"), "--systems", "mixture,mcem", "--quiet",
                         *set_args(FAST)],
            "fit": ["fit", *set_args([f"data.corpora=[{workspace / 'corpus' / 'corpus.csv'}]",
                                      f"data.cache={workspace / 'cache'}"])]}[command]
    result, case, before = invoke(root if command == "evaluate" else workspace,
                                  [*args, "--out", "out", *extra])
    assert result.exit_code == status and result.stderr.count("\n") == 1, result.output
    assert result.stderr.replace(str(workspace) + "/", "").startswith(line), result.stderr
    assert "Trace Shapes" not in result.stderr
    check_outcome(result, root if command == "evaluate" else workspace, case, before)
