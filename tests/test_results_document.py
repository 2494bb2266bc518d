"""The SVI-versus-MCEM section of docs/results.md says what the numbers say."""

from __future__ import annotations

from pyro_avss.evaluation.results import _mcem_comparison


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


def noisy(si_sdri: float, noises: dict) -> dict:
    entry = summary(si_sdri, 0.1)
    entry["by_noise"] = {n: {"mean": {"si_sdri": v}} for n, v in noises.items()}
    return entry


def test_one_talker_section_reports_both_splits_by_noise_and_the_gap():
    from pyro_avss.evaluation.results import _one_talker_section

    tuned = {"systems": {"switching": noisy(8.0, {"tap": 12.0, "babble3": 4.0}),
                         "log-mmse": noisy(5.0, {"tap": 6.0, "babble3": 4.0})}}
    held = {"systems": {"switching": noisy(5.5, {"cafe": 5.5}), "log-mmse": noisy(5.0, {"cafe": 5.0}),
                        "rnnoise": {"ok": 0, "mean": {}, "by_snr": {}}}}
    text = "\n".join(_one_talker_section({"x": tuned, "x_held": held}, "x",
                                         {"mixtures_x": 2, "mixtures_x_held": 1}))
    assert "| system | tap | babble3 | cafe |" in text
    assert "| switching | 12.00 | 4.00 | 5.50 |" in text
    assert "- switching: tuned-on 8.00 dB, held-out 5.50 dB (gap 2.50 dB)" in text
    assert "rnnoise" not in text          # skipped everywhere: no row, no gap line


def test_noise_table_marks_splits_a_setting_was_not_run_on():
    from pyro_avss.evaluation.results import _noise_table

    row = {"systems": {"switching": summary(7.0, 0.2)}}
    text = "\n".join(_noise_table({"default": {"1spk": row, "libri": row}, "long": {"1spk": row}}))
    assert "| default | 7.00 / 1.20 | 7.00 / 1.20 | 0.200 |" in text
    assert "| long | 7.00 / 1.20 | – | 0.200 |" in text


def test_memory_table_reports_every_split_and_drops_incomplete_rows():
    from pyro_avss.evaluation.results import MEMORY_SPLITS, memory_table

    def row(v):
        entry = summary(v, 0.1)
        entry["mean"]["swapped"] = 0.25
        return {"systems": {"switching": entry}}

    full = {n: row(7.0 + i) for i, n in enumerate(MEMORY_SPLITS)}
    broken = dict(full, **{"2spk_held": {"systems": {"switching": {"ok": 0, "mean": {}}}}})
    text = "\n".join(memory_table({"chain": full, "broken": broken}))
    assert "| chain | 7.00 | 8.00 | 9.00 | 10.00 | 1.20 / 0.500 | 0.250 / 0.250 | 0.100 |" in text
    assert "broken" not in text
