"""Model files written before ``fit`` kept each component's pitch range: every input they separate
gets a notice (their harmonic combs search every pitch), and ``pitch-ranges`` reads the ranges
afterwards from the clips of the model's fit, as ``fit`` does."""

from __future__ import annotations

import csv
import shutil

from click.testing import CliRunner

from pyro_avss.checkpoint import SpeechModels
from pyro_avss.cli import main
from pyro_avss.inference.training import fit
from test_training import synthetic_rows, tiny_config


def _manifest(folder):
    """A CSV corpus of the synthetic voices (pitches near 120-139 and 240-278 Hz)."""
    rows = synthetic_rows(folder, per_speaker=4)
    path = folder / "corpus.csv"
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["id", "speaker", "split", "audio"])
        writer.writeheader()
        writer.writerows({k: r[k] for k in ("id", "speaker", "split", "audio")} for r in rows)
    return path, rows


def _old_model_file(tmp_path):
    """A model fitted on the corpus, and the same model saved without its ranges."""
    manifest, rows = _manifest(tmp_path)
    models = fit(tiny_config("train.epochs=1", f"data.corpora=[{manifest}]",
                             f"data.cache={tmp_path / 'cache'}"), tmp_path / "run", progress=False)
    old = SpeechModels.load(tmp_path / "run" / "model.pt")
    del old.info["pitch_ranges"]
    old.save(tmp_path / "old.pt")
    return models, manifest, rows


def test_pitch_ranges_reads_the_ranges_fit_reads_into_an_old_model_file(tmp_path):
    models, manifest, _ = _old_model_file(tmp_path)
    ranges = models.info["pitch_ranges"]
    assert 110 <= ranges["universal"][0] < 150 and 230 < ranges["universal"][1] <= 290

    result = CliRunner().invoke(main, ["pitch-ranges", "--model", str(tmp_path / "old.pt"),
                                       "--out", str(tmp_path / "new.pt"), "--quiet"])
    assert result.exit_code == 0, result.output
    new = SpeechModels.load(tmp_path / "new.pt")
    assert new.info["pitch_ranges"] == ranges
    assert "universal (pitch 1" in result.output
    old = SpeechModels.load(tmp_path / "old.pt")       # a different --out leaves the old file alone
    assert "pitch_ranges" not in old.info
    for a, b in zip(old.decoders.state_dict().values(), new.decoders.state_dict().values()):
        assert a.equal(b)

    # corpora that moved (and no prepared cache of them): one error line naming the missing
    # one; --set data.corpora finds them
    moved = tmp_path / "elsewhere.csv"
    shutil.move(manifest, moved)
    shutil.rmtree(tmp_path / "cache")
    result = CliRunner().invoke(main, ["pitch-ranges", "--model", str(tmp_path / "old.pt"),
                                       "--out", str(tmp_path / "old.pt"), "--quiet"])
    assert result.exit_code == 2
    assert result.stderr.strip().splitlines() == [f"error: {manifest}: corpus not found"]
    result = CliRunner().invoke(main, ["pitch-ranges", "--model", str(tmp_path / "old.pt"),
                                       "--out", str(tmp_path / "old.pt"), "--quiet",
                                       "--set", f"data.corpora=[{moved}]"])
    assert result.exit_code == 0, result.output
    assert SpeechModels.load(tmp_path / "old.pt").info["pitch_ranges"] == ranges   # in place

    # only data.* settings choose the clips
    result = CliRunner().invoke(main, ["pitch-ranges", "--model", str(tmp_path / "old.pt"),
                                       "--out", str(tmp_path / "x.pt"), "--set", "separate.steps=3"])
    assert result.exit_code == 2
    assert result.stderr.strip().splitlines() == [
        "error: separate.steps: only data.* settings choose the clips the ranges are read from"]

    # an --out that is a folder is refused before any clip is read
    result = CliRunner().invoke(main, ["pitch-ranges", "--model", str(tmp_path / "new.pt"),
                                       "--out", str(tmp_path), "--quiet"])
    assert result.exit_code == 2 and len(result.stderr.splitlines()) == 1
    assert result.stderr.startswith("error:") and str(tmp_path) in result.stderr


def test_separating_with_a_model_file_without_ranges_says_so_in_the_notices(tmp_path):
    models, _, rows = _old_model_file(tmp_path)
    models.save(tmp_path / "current.pt")
    mixture = rows[1]["audio"]
    for name, expected in (("old", True), ("current", False)):
        out = tmp_path / f"sep_{name}"
        result = CliRunner().invoke(main, ["separate", "--model", str(tmp_path / f"{name}.pt"),
                                           "--mixture", mixture, "--out", str(out), "--no-figure",
                                           "--quiet", "--device", "cpu"])
        assert result.exit_code == 0, result.output
        notices = out / "notices.txt"
        said = notices.exists() and "no pitch ranges" in notices.read_text()
        assert said == expected, name
        assert ("pitch-ranges" in result.output) == expected
    # the combs off: no notice, whatever the file holds
    out = tmp_path / "sep_off"
    result = CliRunner().invoke(main, ["separate", "--model", str(tmp_path / "old.pt"), "--mixture",
                                       mixture, "--out", str(out), "--no-figure", "--quiet",
                                       "--set", "separate.harmonics_at=0"])
    assert result.exit_code == 0 and not (out / "notices.txt").exists()
