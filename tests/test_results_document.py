"""The SVI-versus-MCEM section of docs/results.md says what the numbers say."""

from __future__ import annotations

from pyro_avss.evaluation.results import _mcem_comparison


def summary(si_sdri: float, rtf: float) -> dict:
    mean = {"si_sdri": si_sdri, "rtf": rtf, "pesq_wb": 1.2, "stoi": 0.5}
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
