"""MCEM against SVI like for like: ``evaluate(interleave=True)``, the ``compare-mcem`` recipe and
its table's verdicts."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from pyro_avss.cli import main
from pyro_avss.evaluation.harness import evaluate
from pyro_avss.recipes.mcem_comparison import TARGET_SPEEDUP, best_budget, comparison_table
from pyro_avss.evaluation.results_csv import read_results

from test_harness import FAST, setup  # noqa: F401 - the tiny synthetic manifest and model


def test_interleaved_systems_take_turns_and_score_the_same(setup, tmp_path):  # noqa: F811
    root, _ = setup
    runs = {}
    for interleave in (False, True):
        out = tmp_path / str(interleave)
        evaluate(root / "mix.csv", None, out, "mixture,spectral-gating", progress=False, examples=0,
                 interleave=interleave)
        runs[interleave] = read_results(out / "results.csv")
    order = [r["system"] for r in runs[True] if r["source"] == 1]
    assert order[:4] == ["mixture", "spectral-gating"] * 2          # batches of one: every mixture
    assert [r["system"] for r in runs[False] if r["source"] == 1][:4] == ["mixture"] * 4
    key = lambda r: (r["id"], r["system"], r["source"])                  # noqa: E731
    a, b = (sorted(runs[i], key=key) for i in (False, True))
    assert [(key(r), r["status"], r["si_sdr"]) for r in a] == [(key(r), r["status"], r["si_sdr"]) for r in b]


def test_compare_mcem_runs_both_switches_and_prints_the_table(setup, tmp_path):  # noqa: F811
    root, _ = setup
    args = ["compare-mcem", "--model", str(root / "model.pt"), "--mixtures", f"tuned={root / 'mix.csv'}",
            "--mixtures", f"held={root / 'mix.csv'}", "--out", str(tmp_path / "cmp"), "--budgets", "2,1",
            "--quiet", *[a for item in FAST for a in ("--set", item)]]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    table = (tmp_path / "cmp" / "comparison.md").read_text()
    assert table.strip() in result.stdout
    assert "Mixtures per run: 3 (both systems on the same ones)" in table     # J = 2 is SVI's alone
    for switch in ("iid", "utterance"):
        assert table.count(f"| tuned | {switch} | MCEM") == 2                 # every budget tuned-on
        assert table.count(f"| held | {switch} | MCEM |") == 1                # only the best held-out
        for budget in (1, 2):
            settings = json.loads((tmp_path / "cmp" / f"tuned_{switch}_em{budget}" / "settings.json").read_text())
            assert settings["separation"]["switch_prior"] == switch          # the same switch both sides
            assert settings["mcem"]["switch"] == switch and settings["mcem"]["em_iterations"] == budget
    assert table.count("at equal or better SI-SDRi **") == 4
    rows = read_results(tmp_path / "cmp" / "tuned_utterance_em1" / "results.csv")
    assert {r["system"] for r in rows} == {"switching", "mcem"}


@pytest.mark.parametrize("args, line", [
    (["--budgets", "x"], "error: --budgets: expected comma-separated integers, got 'x'"),
    (["--budgets", "0"], "error: --budgets: EM iteration budgets must be >= 1, got [0]"),
    (["--switches", "markov"], "error: --switches: must be among iid, utterance, got 'markov'"),
])
def test_compare_mcem_refuses_bad_options_in_one_line(setup, tmp_path, args, line):  # noqa: F811
    root, _ = setup
    result = CliRunner().invoke(main, ["compare-mcem", "--model", str(root / "model.pt"), "--mixtures",
                                       str(root / "mix.csv"), "--out", str(tmp_path / "o"), *args])
    assert result.exit_code == 2 and result.stderr.strip() == line, result.output


def summary(svi: float, mcem: float, svi_rtf: float, mcem_rtf: float) -> dict:
    """A one-talker like-for-like summary of switching and MCEM with these means."""
    stats = lambda si, rtf: {"si_sdri": si, "pesq_wb": 1.3, "stoi": 0.6, "switch_true_mass": 1.0,  # noqa: E731
                             "rtf": rtf}
    mean = {"switching": stats(svi, svi_rtf), "mcem": stats(mcem, mcem_rtf)}
    group = {"systems": ["switching", "mcem"], "common": 51, "all": {"mean": mean},
             "by_snr": {"-5": {"mean": mean}, "0": {"mean": mean}}}
    return {"like_for_like": {"groups": {"1": group}}}


def test_the_best_budget_is_chosen_on_the_first_split_and_the_verdicts_say_why():
    tuned = {20: summary(8.0, 7.0, 0.1, 1.0), 50: summary(8.0, 7.5, 0.1, 6.0), 100: summary(8.0, 7.4, 0.1, 9.0)}
    assert best_budget(tuned) == 50
    held = {50: summary(6.0, 6.5, 0.1, 7.0)}
    text = comparison_table({"tuned-on": {"utterance": tuned}, "held-out": {"utterance": held}})
    assert "| tuned-on | utterance | MCEM (best) | 50 | 7.50 |" in text
    assert "| held-out | utterance | MCEM | 50 | 6.50 |" in text and "| 70.0× |" in text
    assert (f"- tuned-on, utterance switch: SVI 8.00 dB vs MCEM at 50 EM iterations 7.50 dB (+0.50 dB "
            f"for SVI), SVI 60.0× faster: ≥ {TARGET_SPEEDUP:g}× at equal or better SI-SDRi **holds**.") in text
    assert ("- held-out, utterance switch: SVI 6.00 dB vs MCEM at 50 EM iterations (the budget chosen on "
            "tuned-on) 6.50 dB (−0.50 dB for SVI), SVI 70.0× faster: ≥ 50× at equal or better SI-SDRi "
            "**does not hold** (quality short).") in text
    slow = comparison_table({"t": {"iid": {20: summary(8.0, 7.0, 0.1, 1.0)}}})
    assert "**does not hold** (speed short)" in slow
    assert "| t | iid | MCEM (the only budget run) | 20 |" in slow     # no choice was made: not "best"


def test_the_section_replaces_its_old_self_and_survives_a_rewrite_of_the_results(tmp_path):
    from pyro_avss.recipes.mcem_comparison import SECTION, carry_section, write_section

    doc = tmp_path / "results.md"
    doc.write_text("# Results\n\n## MCEM (old)\n\nold\n\n## How to reproduce\n\nrun it\n")
    runs = {"tuned-on": {"iid": {20: summary(8.0, 7.0, 0.1, 6.0)}}}
    write_section(doc, runs, "python cli.py compare-mcem --model m.pt")
    first = doc.read_text()
    assert first.index("## MCEM (old)") < first.index(SECTION) < first.index("## How to reproduce")
    assert "python cli.py compare-mcem --model m.pt" in first and "60.0×" in first
    runs["tuned-on"]["iid"][20] = summary(8.0, 7.0, 0.1, 7.0)
    write_section(doc, runs, "python cli.py compare-mcem --model m.pt")
    second = doc.read_text()
    assert second.count(SECTION) == 1 and "70.0×" in second and "60.0×" not in second
    rewritten = carry_section(doc, "# Results\n\nnew numbers\n\n## How to reproduce\n\nrun it\n")
    assert "new numbers" in rewritten and rewritten.count(SECTION) == 1 and "70.0×" in rewritten
    assert rewritten.index(SECTION) < rewritten.index("## How to reproduce")
    assert carry_section(tmp_path / "absent.md", "# R\n") == "# R\n"


def test_each_svi_budget_keeps_its_own_sub_section(tmp_path):
    from pyro_avss.recipes.mcem_comparison import SECTION, carry_section, svi_heading, write_section

    doc = tmp_path / "results.md"
    legacy = (f"# Results\n\n{SECTION}\n\nMeasured long ago.\n\nMixtures per run: 5 (both systems on the same "
              "ones).\n\n| old table 11.1× |\n\n## How to reproduce\n\nrun it\n")
    doc.write_text(legacy)
    cheap = ["separate.steps=15", "separate.lr_decay=0.85"]
    write_section(doc, {"tuned-on": {"iid": {50: summary(8.0, 7.0, 0.1, 6.0)}}}, "cmd cheap", cheap)
    text = doc.read_text()
    defaults, cheaper = svi_heading(), svi_heading(cheap)
    assert cheaper == "### SVI with `separate.steps=15`, `separate.lr_decay=0.85`"
    assert text.count(SECTION) == 1 and text.count(defaults) == 1 and text.count(cheaper) == 1
    assert text.index(defaults) < text.index("11.1×") < text.index(cheaper) < text.index("60.0×")
    assert text.index(defaults) < text.index("Measured long ago.")   # the old stamp goes with its table
    write_section(doc, {"tuned-on": {"iid": {50: summary(8.0, 7.0, 0.1, 9.0)}}}, "cmd default")
    text = doc.read_text()
    assert "11.1×" not in text and "long ago" not in text and text.index(defaults) < text.index("90.0×") < text.index(cheaper) < text.index("60.0×")
    write_section(doc, {"tuned-on": {"iid": {50: summary(8.0, 7.0, 0.1, 7.0)}}}, "cmd cheap", cheap)
    text = doc.read_text()
    assert "60.0×" not in text and text.index("90.0×") < text.index("70.0×") and text.count(cheaper) == 1
    assert text.index(SECTION) < text.index("## How to reproduce") and "run it" in text
    rewritten = carry_section(doc, "# Results\n\nnew numbers\n\n## How to reproduce\n\nrun it\n")
    assert "new numbers" in rewritten and "90.0×" in rewritten and "70.0×" in rewritten
    assert rewritten.count(SECTION) == 1 and rewritten.index(SECTION) < rewritten.index("## How to reproduce")
