"""The SVI-versus-MCEM section of docs/results.md says what the numbers say."""

from __future__ import annotations

from pathlib import Path

import pytest

from pyro_avss.recipes.results.tables import _mcem_comparison


def summary(si_sdri: float, rtf: float) -> dict:
    mean = {"si_sdri": si_sdri, "rtf": rtf, "pesq_wb": 1.2, "stoi": 0.5, "switch_true_mass": float("nan")}
    return {"ok": 3, "mean": mean, "by_snr": {"0": {"mean": mean}}}


def test_ratio_at_equal_quality_uses_the_best_mcem_budget_when_svi_matches_it():
    text = "\n".join(_mcem_comparison(summary(9.0, 0.1), summary(9.0, 0.2),
                                      {20: summary(8.0, 0.6), 50: summary(8.9, 1.5), 100: summary(8.3, 3.0)}, 100))
    assert "(50 EM iterations, 8.90 dB), and **15.0× faster** than that run" in text   # 1.5 / 0.1
    assert "**15.0× faster**, SI-SDRi 9.00 vs 8.30" in text   # equal iterations: 3.0 / 0.2
    assert "not reached" not in text


def test_a_better_mcem_budget_is_reported_as_not_reached():
    text = "\n".join(_mcem_comparison(summary(8.5, 0.1), summary(8.5, 0.2),
                                      {20: summary(8.0, 0.6), 50: summary(8.9, 1.5), 100: summary(8.3, 3.0)}, 100))
    assert "Equal or better quality is not reached: MCEM with 50 EM iterations gives 8.90 dB" in text
    assert "15.0× faster than that run" in text


def test_missing_runs_give_a_placeholder():
    assert _mcem_comparison(None, None, {}, 100) == ["(not run)"]


def row(i, system, si_sdri, *, snr=0.0, noise="tap", status="ok", source=1, pesq=1.5):
    """A results.csv row (numbers as read_results gives them)."""
    nan = float("nan")
    value = si_sdri if status == "ok" else nan
    out = {"id": i, "condition": "1spk", "snr_db": snr, "noise": noise, "system": system,
           "source": float(source), "target_speaker": "s1", "status": status,
           "error": "" if status == "ok" else "cannot", "input_si_sdr": 0.0,
           "switch_true_mass": 0.8 if system == "switching" and status == "ok" else nan,
           "swapped": nan, "rtf": 0.1 if status == "ok" else nan, "runtime_s": 0.1}
    for m in ("si_sdr", "si_sdri", "sdr"):
        out[m] = value
    for m in ("pesq_wb", "pesq_nb"):
        out[m] = pesq if status == "ok" else nan
    out["stoi"] = out["estoi"] = 0.5 if status == "ok" else nan
    return out


def evaluation(rows) -> dict:
    """What evaluate() returns: the per-system summary plus the like-for-like comparison."""
    from pyro_avss.evaluation.summary import compare, summarise

    return {**summarise(rows), "like_for_like": compare(rows)}


def test_one_talker_section_reports_both_splits_by_noise_and_the_gap():
    from pyro_avss.recipes.results.tables import _one_talker_section

    tuned = evaluation([row("a", "switching", 12.0), row("a", "log-mmse", 6.0),
                        row("b", "switching", 4.0, noise="babble3"), row("b", "log-mmse", 4.0, noise="babble3")])
    held = evaluation([row("c", "switching", 5.5, noise="cafe"), row("c", "log-mmse", 5.0, noise="cafe"),
                       row("c", "rnnoise", 0.0, noise="cafe", status="skipped")])
    text = "\n".join(_one_talker_section({"x": tuned, "x_held": held}, "x",
                                         {"mixtures_x": 2, "mixtures_x_held": 1}))
    assert "| system | babble3 (n=1) | tap (n=1) | cafe (n=1) |" in text
    assert "| switching | 4.00 | 12.00 | 5.50 |" in text
    assert "- switching: tuned-on 8.00 dB, held-out 5.50 dB (gap 2.50 dB; n = 2 / 1 mixtures)" in text
    assert "| rnnoise" not in text and "- rnnoise" not in text   # skipped everywhere: no row, no gap
    assert "Not compared (nothing processed): rnnoise" in text
    assert "The tuned-on targets and draws" not in text    # no noise-only split in this run


def test_one_talker_section_gives_the_gap_of_the_noises_alone_when_that_split_ran():
    from pyro_avss.recipes.results.tables import _one_talker_section

    tuned = evaluation([row("a", "switching", 12.0), row("b", "switching", 4.0, noise="babble3")])
    held = evaluation([row("c", "switching", 5.5, noise="cafe")])
    noise_held = evaluation([row("a", "switching", 9.0, noise="cafe"), row("b", "switching", 5.0, noise="hens")])
    text = "\n".join(_one_talker_section({"x": tuned, "x_held": held, "x_noise_held": noise_held}, "x",
                                         {"mixtures_x": 2, "mixtures_x_held": 1, "mixtures_x_noise_held": 2}))
    assert "The tuned-on targets and draws in the held-out noises (2 mixtures)" in text
    assert "- switching: tuned-on 8.00 dB, held-out noises 7.00 dB (gap 1.00 dB; n = 2 / 2 mixtures)" in text
    assert "- switching: tuned-on 8.00 dB, held-out 5.50 dB (gap 2.50 dB" in text


def test_tables_average_every_system_over_the_common_mixtures_only():
    """log-mmse skipped mixture b: every system's table mean is over a and c, not its own rows."""
    from pyro_avss.recipes.results.tables import _noise_breakdown, _system_table

    rows = [row("a", "switching", 2.0, snr=-5.0), row("a", "log-mmse", 1.0, snr=-5.0),
            row("b", "switching", 20.0, snr=-5.0, noise="cafe"),
            row("b", "log-mmse", 0.0, snr=-5.0, noise="cafe", status="skipped"),
            row("c", "switching", 4.0, snr=5.0, pesq=2.0), row("c", "log-mmse", 3.0, snr=5.0, pesq=1.0)]
    ev = evaluation(rows)
    assert ev["systems"]["switching"]["mean"]["si_sdri"] == pytest.approx(26.0 / 3)   # its own three
    text = "\n".join(_system_table(ev, by_snr=False))
    assert "the 2 of 3 mixtures that every listed system processed" in text
    assert "excludes mixtures missing from: log-mmse (1)" in text
    assert "| switching | 2 | 3.00 | 3.00 | 1.75 | 0.500 | 0.500 | – | 0.800 | 0.100 |" in text
    assert "| log-mmse | 2 | 2.00 |" in text
    by_snr = "\n".join(_system_table(ev, by_snr=True))
    assert "SI-SDRi @ -5 dB (n=1)" in by_snr and "SI-SDRi @ 5 dB (n=1)" in by_snr
    assert "| switching | 2.00 | 1.50 | 0.500 | 4.00 | 2.00 | 0.500 | 0.800 | 0.100 |" in by_snr
    noise = "\n".join(_noise_breakdown(ev, ev))
    assert "cafe" not in noise                                   # nobody's common mixture
    assert "| switching | 3.00 | 3.00 |" in noise and "tap (n=2)" in noise


def test_multi_talker_table_counts_sources_and_leaves_out_single_talker_systems():
    from pyro_avss.recipes.results.tables import _system_table

    rows = []
    for i, (a, b) in enumerate(((1.0, 3.0), (5.0, 7.0))):
        for j, v in enumerate((a, b), start=1):
            rows.append(row(f"m{i}", "switching", v, source=j))
            rows.append(row(f"m{i}", "log-mmse", 0.0, source=j, status="skipped"))
    rows.append(row("m2", "switching", 0.0, source=1, status="failed"))
    rows.append(row("m2", "switching", 0.0, source=2, status="failed"))
    text = "\n".join(_system_table(evaluation(rows), by_snr=False))
    assert "2 talkers: means over the 2 of 3 mixtures" in text
    assert "| switching | 4 | 4.00 |" in text and "| log-mmse" not in text
    assert "Not compared (nothing processed): log-mmse" in text


def test_noise_table_marks_splits_a_setting_was_not_run_on():
    from pyro_avss.recipes.results.tables import _noise_table

    row = {"systems": {"switching": summary(7.0, 0.2)}}
    text = "\n".join(_noise_table({"default": {"1spk": row, "libri": row}, "long": {"1spk": row}}))
    assert "| default | 7.00 / 1.20 | 7.00 / 1.20 | 0.200 |" in text
    assert "| long | 7.00 / 1.20 | – | 0.200 |" in text


def test_settings_table_reports_every_split_and_drops_incomplete_rows():
    from pyro_avss.recipes.results.experiments import MEMORY_SPLITS
    from pyro_avss.recipes.results.tables import settings_table

    def row(v):
        entry = summary(v, 0.1)
        entry["mean"]["swapped"] = 0.25
        return {"systems": {"switching": entry}}

    full = {n: row(7.0 + i) for i, n in enumerate(MEMORY_SPLITS)}
    broken = dict(full, **{"2spk_held": {"systems": {"switching": {"ok": 0, "mean": {}}}}})
    text = "\n".join(settings_table({"chain": full, "broken": broken}, "prior / guide"))
    assert text.startswith("| prior / guide | 1spk: SI-SDRi |")
    assert "| chain | 7.00 | 8.00 | 9.00 | 10.00 | 1.20 / 0.500 | 0.250 / 0.250 | 0.100 |" in text
    assert "broken" not in text


def test_tables_of_separate_runs_say_whether_they_compare_the_same_mixtures():
    """Settings side by side come from separate runs: like for like only when no run lacks a
    mixture, which the line under the table says (or names the runs that lack some)."""
    from pyro_avss.recipes.results.tables import _noise_table

    full = {"systems": {"switching": dict(summary(7.0, 0.2), skipped=0, failed=0)}}
    short = {"systems": {"switching": dict(summary(9.0, 0.2), skipped=0, failed=2)}}
    text = "\n".join(_noise_table({"default": {"1spk": full}, "other": {"1spk": full}}))
    assert "processed every mixture of its split, so its rows compare the same mixtures" in text
    text = "\n".join(_noise_table({"default": {"1spk": full}, "other": {"1spk": short}}))
    assert "**Not like for like**" in text and "other on 1spk (2 of 5 rows)" in text
    assert "default on 1spk" not in text


def test_switch_table_gives_sisdri_and_true_speaker_mass_on_every_split():
    from pyro_avss.recipes.results.experiments import SWITCH_SPLITS
    from pyro_avss.recipes.results.tables import switch_table

    def run(v, mass):
        entry = summary(v, 0.2)
        entry["mean"].update(switch_true_mass=mass, swapped=0.0)
        return {"systems": {"switching": entry}}

    rows = {"utterance": {n: run(8.0, 0.98) for n in SWITCH_SPLITS},
            "markov": {n: run(7.0 + i, 0.7) for i, n in enumerate(SWITCH_SPLITS)}}
    text = "\n".join(switch_table(rows))
    assert "| switch prior | 1spk: SI-SDRi / p(true) | 2spk: SI-SDRi / p(true) |" in text
    assert "| libri: SI-SDRi / p(true) | libri_held: SI-SDRi / p(true) |" in text
    assert ("| markov | 7.00 / 0.700 | 8.00 / 0.700 | 9.00 / 0.700 | 10.00 / 0.700 | 11.00 / 0.700 | "
            "12.00 / 0.700 | 0.000 / 0.000 | 0.200 |") in text


def test_lips_rows_corrupt_the_target_reuse_intact_runs_and_tabulate_the_target(tmp_path, monkeypatch):
    """lips_rows writes one corrupted manifest per condition, runs every row on it (intact lips
    come from the main runs' folders) and reads the target's rows only."""
    import numpy as np
    import soundfile as sf

    from pyro_avss.data.clips import Clip
    from pyro_avss.data.mixture_builder import build_mixture_specs
    from pyro_avss.data.mixture_manifest import read_mixture_manifest, write_mixture_manifest
    from pyro_avss.recipes.results import rows as results
    from pyro_avss.recipes.results.tables import lips_table
    from pyro_avss.evaluation.results_csv import write_results

    t = np.arange(4000) / 16000
    clips = []
    for i, spk in enumerate(["s1", "s1", "s4", "s4"]):
        sf.write(str(tmp_path / f"{i}.wav"), (0.3 * np.sin(2 * np.pi * (150 + 20 * i) * t)).astype(np.float32), 16000)
        clips.append(Clip(f"{spk}_{i}", spk, tmp_path / f"{i}.wav", tmp_path / f"{i}.mp4"))
    sf.write(str(tmp_path / "n.wav"), np.random.default_rng(0).standard_normal(9000).astype(np.float32) * 0.1, 16000)
    specs = build_mixture_specs(clips, [("n", tmp_path / "n.wav")], [0.0], interferers=clips, num_interferers=1)
    manifests = {n: write_mixture_manifest(specs, tmp_path / f"mixtures_{n}.csv") for n in results.LIPS_SPLITS}
    calls = []

    def fake_evaluate(manifest, model, out, systems, overrides=()):
        calls.append((Path(manifest).name, Path(out).name, systems, list(overrides)))
        lips = {s.sources[0].lips for s in read_mixture_manifest(manifest)}
        target = {"": 8.0, "missing:0.6": 5.0}.get(lips.pop(), 6.0)
        Path(out).mkdir(exist_ok=True)
        write_results(Path(out) / "results.csv", [row(s.id, systems, v, source=j) for s in specs
                                                  for j, v in ((1, target), (2, 0.0))])

    switch_labels = {label for label, _, _ in results.SWITCH_ROWS}
    main = {label for label, _, _, changes in results.LIPS_ROWS if changes is None or label in switch_labels}
    for label, _, system, changes in results.LIPS_ROWS:      # the main runs exist already
        if label in main:
            base = "eval_1spk" if changes is None else f"eval_1spk_{results.slug(label)}"
            fake_evaluate(manifests["1spk"], None, tmp_path / base, system)
    calls.clear()
    monkeypatch.setattr(results, "LIPS_SPLITS", ("1spk",))
    out = results.lips_rows(manifests, {None: "model.pt", "twins": "twins.pt"}, tmp_path, fake_evaluate)
    # intact lips: read from the folders of the main runs, run only for the rows that have none
    assert len(calls) == (len(results.LIP_CORRUPTIONS) + 1) * len(results.LIPS_ROWS) - len(main)
    assert ("mixtures_1spk.csv", "eval_1spk_one_component_per_utterance__per_frame_gains", "switching",
            ["separate.gain=frame"]) in calls
    assert ("mixtures_1spk_lips_missing_0_6.csv", "eval_1spk_lips_missing_0_6", "universal", []) in calls
    assert ("mixtures_1spk_lips_noise_0_3.csv", "eval_1spk_i_i_d__per_frame_lips_noise_0_3", "switching",
            ["separate.switch_prior=iid"]) in calls
    swapped = read_mixture_manifest(tmp_path / "mixtures_1spk_lips_swap_0_3.csv")
    assert all(s.sources[0].lips == "swap:0.3" and not s.sources[1].lips for s in swapped)
    cells = out["1spk"]["universal model"]
    assert cells["intact"]["mean"]["si_sdri"] == 8.0 and cells["missing:0.6"]["mean"]["si_sdri"] == 5.0
    text = "\n".join(lips_table(out["1spk"]))
    assert "| system | intact | missing 0.3 | missing 0.6 | noise 0.3 | swap 0.3 |" in text
    assert "| universal model | 8.00 / – | 6.00 / – | 5.00 / – | 6.00 / – | 6.00 / – |" in text


def test_preamble_says_when_evaluations_were_resumed_from_an_earlier_invocation():
    from pyro_avss.recipes.results.document import _preamble

    fresh = " ".join(_preamble({"total_wall_s": 3600.0}, "python cli.py results"))
    assert "60.0 minutes" in fresh and "resumed" not in fresh
    resumed = " ".join(_preamble({"total_wall_s": 600.0, "evaluations_found": 40, "evaluations": 52},
                                 "python cli.py results"))
    assert "40 of its 52 evaluations" in resumed and "this invocation's only" in resumed


def test_evaluation_folders_are_those_holding_results(tmp_path):
    from pyro_avss.recipes.results.run import _evaluation_folders

    for name, has_results in (("eval_1spk", True), ("eval_2spk", False), ("models", True)):
        (tmp_path / name).mkdir()
        if has_results:
            (tmp_path / name / "results.csv").write_text("id\n")
    assert [p.name for p in _evaluation_folders(tmp_path)] == ["eval_1spk"]


def test_unlabelled_rows_separate_each_split_with_its_corpus_banks(tmp_path, monkeypatch):
    """The unlabelled banks' rows: the default row reuses the main evaluation, the other runs the
    bank of found speakers of the split's own corpus; the table shows both on every split."""
    import pyro_avss.recipes.results.run as run
    from pyro_avss.recipes.results.experiments import UNLABELLED_ROWS, UNLABELLED_SPLITS
    from pyro_avss.recipes.results.tables import quality_table

    calls = []

    def fake_evaluate(manifest, model, out, systems, overrides=None):
        calls.append((manifest, model, systems))
        return {"systems": {"switching": summary(6.0, 0.1)}}

    manifests = {n: f"{n}.csv" for n in UNLABELLED_SPLITS}
    evals = {n: {"systems": {"switching": summary(7.0, 0.1)}} for n in UNLABELLED_SPLITS}
    models = {"grid": "g.pt", "grid_switching": "gs.pt", "libri": "l.pt", "libri_switching": "ls.pt"}
    rows = run.unlabelled_rows(manifests, evals, models, tmp_path, fake_evaluate)
    assert calls == [("1spk.csv", "gs.pt", "switching"), ("1spk_held.csv", "gs.pt", "switching"),
                     ("libri.csv", "ls.pt", "switching"), ("libri_held.csv", "ls.pt", "switching")]
    default, found = (label for label, _, _ in UNLABELLED_ROWS)
    assert rows[default] == evals
    text = "\n".join(quality_table(rows, UNLABELLED_SPLITS, "speaker bank"))
    assert f"| {found} | 6.00 / 1.20 | 6.00 / 1.20 | 6.00 / 1.20 | 6.00 / 1.20 |" in text
    assert f"| {default} | 7.00 / 1.20 |" in text


def test_one_voice_section_tables_both_splits_and_older_runs_have_none():
    from pyro_avss.recipes.results.document import _one_voice_section

    def split(value):
        return evaluation([row("m0", "switching", value, source=j) for j in (1, 2)])

    text = "\n".join(_one_voice_section({"2spk_same": split(4.0), "2spk_same_held": split(3.0)}))
    assert "## Two talkers of one speaker" in text and "only each source's lips bind" in text
    tuned, held = text.split("Held-out noises:")
    assert "| switching | 2 | 4.00 |" in tuned and "| switching | 2 | 3.00 |" in held


def test_same_speaker_and_noise_held_sets_hold_what_their_names_say():
    data = Path(__file__).resolve().parents[1].parent / "shared" / "data"
    if not (data / "grid" / "s1").is_dir():
        pytest.skip(f"needs the GRID clips of the shared data ({data}), absent here")
    import tempfile

    from pyro_avss.recipes.results.dev_mixtures import dev_mixtures

    with tempfile.TemporaryDirectory() as folder:
        sets = dev_mixtures(data, Path(folder))
    ids = {}
    tuned, noise_held = sets["1spk"], sets["1spk_noise_held"]
    assert [s.sources[0].id for s in noise_held] == [s.sources[0].id for s in tuned]
    assert not {s.noise.name for s in tuned} & {s.noise.name for s in noise_held}
    assert {s.noise.name for s in noise_held} == {s.noise.name for s in sets["1spk_held"]}
    for key in ("2spk_same", "2spk_same_held"):
        specs = sets[key]
        assert len(specs) == 34 and {s.snr_db for s in specs} == {0.0, 5.0}
        assert all([r.speaker for r in s.sources] == ["s1", "s1"] for s in specs)
        assert all(s.sources[0].id != s.sources[1].id for s in specs)
        ids[key] = {r.id for s in specs for r in s.sources}
    assert not ids["2spk_same"] & ids["2spk_same_held"]           # no clip in both splits
    tuned_noises = {s.noise.name for s in sets["2spk_same"]}
    assert tuned_noises == {s.noise.name for s in sets["2spk"]}
    assert not tuned_noises & {s.noise.name for s in sets["2spk_same_held"]}


def test_a_model_folder_is_reused_only_once_its_fit_has_returned(tmp_path, monkeypatch):
    import pyro_avss.inference.training as training
    from pyro_avss.recipes.results import run

    from test_guide_restart import _models

    fits = []

    def fake_fit(cfg, out, **kw):
        fits.append(out)
        out.mkdir(parents=True)
        _models().save(out / "model.pt")                        # what every epoch leaves behind
        (out / "log.csv").write_text("epoch,frames_per_s\n1,100\n")
        if len(fits) == 1:
            raise KeyboardInterrupt                             # stopped after its first epoch
        return _models()

    monkeypatch.setattr(training, "fit", fake_fit)
    monkeypatch.setattr("pyro_avss.config.load_config", lambda config, overrides: {})
    out, facts = tmp_path / "m", {}
    with pytest.raises(KeyboardInterrupt):
        run._fit("c.yaml", out, [], [], facts, "m", "cpu")
    assert not (out / run.FINISHED).exists()
    run._fit("c.yaml", out, [], [], facts, "m", "cpu")          # the stopped fit is done again
    assert len(fits) == 2 and (out / run.FINISHED).exists() and "reused" not in facts
    run._fit("c.yaml", out, [], [], facts, "m", "cpu")          # now it is reused
    assert len(fits) == 2 and facts["reused"] == ["m"] and facts["m"]["epochs"] == 1


def test_ablation_table_gives_the_two_talkers_of_one_speaker_where_they_ran():
    from pyro_avss.recipes.results.document import _ablation_section

    def split(value, talkers=1):
        return evaluation([row("m0", "switching", value, source=j) for j in range(1, talkers + 1)])

    evals = {"1spk": split(9.0), "2spk": split(8.0, 2), "2spk_same": split(4.0, 2)}
    ablation = {"PCA lips": {"1spk": split(5.0), "2spk": split(3.0, 2), "2spk_same": split(-1.0, 2)},
                "older run": {"1spk": split(6.0), "2spk": split(4.0, 2)}}
    text = "\n".join(_ablation_section(evals, ablation))
    assert "2 talkers of one speaker: SI-SDRi / swap rate |" in text
    lines = {line.split(" | ")[0]: line for line in text.splitlines() if line.startswith("| ")}
    assert lines["| **default: learned lips, visual prior, lip-specific start, per-utterance gain**"].endswith(
        "| 4.00 / – |")
    assert lines["| PCA lips"].endswith("| -1.00 / – |") and lines["| older run"].endswith("| – |")
