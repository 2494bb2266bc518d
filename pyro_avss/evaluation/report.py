"""An evaluation's results for people: ``results.md``, the tables of ``report.html`` and the
figures (metrics against SNR, spectrograms of an example), from the summaries of :mod:`.summary`
(the rows themselves: :mod:`.results_csv`)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from .summary import TABLE_METRICS, compare, key_text

METRIC_NAMES = {"si_sdr": "SI-SDR (dB)", "si_sdri": "SI-SDRi (dB)", "sdr": "SDR (dB)",
                "pesq_wb": "PESQ-WB (MOS-LQO)", "pesq_nb": "PESQ-NB (MOS-LQO)", "stoi": "STOI",
                "estoi": "ESTOI", "input_si_sdr": "input SI-SDR (dB)", "rtf": "RTF",
                "switch_true_mass": "p(true speaker)", "switch_identified": "speaker identified",
                "swapped": "swap rate"}
"""Readable names, with units, of the CSV's metric columns (figures and tables)."""

DIGITS = {"stoi": 3, "estoi": 3, "rtf": 3, "switch_true_mass": 3, "switch_identified": 3, "swapped": 3}


def metric_name(key: str) -> str:
    return METRIC_NAMES.get(key, key)


def _fmt(value, digits: int = 2) -> str:
    return "–" if value is None or (isinstance(value, float) and not math.isfinite(value)) \
        else f"{value:.{digits}f}"


def talker_title(J: int | str) -> str:
    J = int(J)
    return "one talker" if J == 1 else f"{J} talkers"


def comparison_caption(group: dict) -> str:
    """What the means of a group are over, in words (tables of the markdown and the HTML)."""
    text = (f"{talker_title(group['talkers'])}: means over the {group['common']} of "
            f"{group['mixtures']} mixtures that every listed system processed (status ok), the "
            "same mixtures for every system; a metric is averaged over the (mixture, source) pairs "
            "where it is defined for all systems (RTF, p(true), swap rate: each system's own).")
    if group["restricted_by"]:
        text += " The common set excludes mixtures missing from: " + ", ".join(
            f"{n} ({k})" for n, k in group["restricted_by"].items()) + "."
    if group["left_out"]:
        text += " Not compared (nothing processed): " + ", ".join(group["left_out"]) + "."
    return text


def comparison_rows(group: dict, stats: dict, metrics=TABLE_METRICS) -> list[list[str]]:
    return [[n] + [_fmt(stats["mean"][n].get(m), DIGITS.get(m, 2)) for m in metrics]
            for n in group["systems"]]


def _short(metric: str) -> str:
    return {"switch_true_mass": "p(true)", "switch_identified": "identified", "swapped": "swap"}.get(metric, metric_name(metric))


def results_markdown(summary: dict, meta: dict, comparison: dict | None = None) -> str:
    """A markdown report: per number of talkers, a like-for-like table of means (the same
    mixtures for every system, :func:`compare`) and SI-SDRi by SNR and by noise; then the
    counts per system and what was skipped or failed."""
    lines = ["# Evaluation results", ""]
    for key in ("manifest", "model", "device", "created"):
        if key in meta:
            lines.append(f"- {key}: `{meta[key]}`")
    lines += ["", "RTF = processing time / audio duration (batched systems: batch time shared by "
              "audio length). `p(true)` = mean switch posterior on the true speaker's component "
              "over speech frames. `swap` = share of estimates closer to another talker. "
              "One-talker and multi-talker mixtures are never averaged together.", ""]
    for J, group in (comparison or {"groups": {}})["groups"].items():
        lines += [f"## {talker_title(J).capitalize()} ({group['common']} common mixtures)", "",
                  comparison_caption(group), ""]
        if not group["systems"] or not group["common"]:
            lines += ["No mixture was processed by every system.", ""]
            continue
        head = ["system"] + [_short(m) for m in TABLE_METRICS]
        lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        lines += ["| " + " | ".join(r) + " |" for r in comparison_rows(group, group["all"])]
        for part, title in (("by_snr", "SNR (dB)"), ("by_noise", "noise")):
            keys = list(group[part])
            if not keys:
                continue
            lines += ["", f"SI-SDRi (dB) by {title}, {talker_title(J)} (n = common mixtures):", "",
                      "| system | " + " | ".join(f"{k} (n={group[part][k]['mixtures']})" for k in keys)
                      + " |", "|---|" + "---|" * len(keys)]
            for n in group["systems"]:
                cells = [_fmt(group[part][k]["mean"][n]["si_sdri"]) for k in keys]
                lines.append(f"| {n} | " + " | ".join(cells) + " |")
        lines.append("")
    lines += ["## Rows per system", "",
              "| system | ok | skip | fail | metric failures |", "|---|---|---|---|---|"]
    for name, s in summary["systems"].items():
        fails = ", ".join(f"{k} {v}" for k, v in s["metric_failures"].items() if v) or "0"
        lines.append(f"| {name} | {s['ok']} | {s['skipped']} | {s['failed']} | {fails} |")
    reasons = {(n, r): c for n, s in summary["systems"].items() for r, c in s["reasons"].items()}
    if reasons:
        lines += ["", "## Skipped and failed", ""]
        lines += [f"- {n}: {c} × {r}" for (n, r), c in reasons.items()]
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------------------------
# HTML
# ---------------------------------------------------------------------------------------------
def comparison_html(comparison: dict) -> str:
    """The summary of the listening report: per number of talkers, the like-for-like table of
    means and the means per condition (SNR × noise) with n; tables carry ``data-talkers`` (and
    per-condition rows ``data-snr``/``data-noise``) for the report's filters."""
    from ..html_report import esc, table

    out = ["<h2>Summary</h2>"]
    for J, group in comparison["groups"].items():
        attrs = {"talkers": J}
        out.append(f'<div class="grp" data-talkers="{esc(J)}"><h3>{esc(talker_title(J).capitalize())}'
                   f" — {group['common']} common mixtures</h3></div>")
        if not group["systems"] or not group["common"]:
            out.append(f'<p class="grp note" data-talkers="{esc(J)}">{esc(comparison_caption(group))} '
                       "No mixture was processed by every system.</p>")
            continue
        out.append(table(["system"] + [_short(m) for m in TABLE_METRICS],
                         comparison_rows(group, group["all"]), comparison_caption(group), attrs))
        conditions = list(group["by_condition"].items())
        row_attrs = [{"talkers": J, "snr": f"{key_text(stats['snr'])} dB", "noise": stats["noise"]}
                     for _, stats in conditions]
        out.append(f'<div class="tables grp" data-talkers="{esc(J)}">')
        for m in ("si_sdri", "pesq_wb", "stoi"):
            rows = [[key, stats["mixtures"]] + [_fmt(stats["mean"][n].get(m), DIGITS.get(m, 2))
                                                for n in group["systems"]]
                    for key, stats in conditions]
            out.append(table(["SNR, noise", "n"] + group["systems"], rows,
                             f"{metric_name(m)}, {talker_title(J)}: per condition, over the n "
                             "mixtures every system processed in it.", row_attrs=row_attrs))
        out.append("</div>")
    return "\n".join(out)


def mixture_table(rows: list[dict], names: list[str]) -> str:
    """Metrics of one mixture: a row per system and source with status ok; the systems that
    skipped or failed it, with the reason, in the caption."""
    from ..html_report import table

    metrics = ("si_sdr", "si_sdri", "pesq_wb", "stoi", "estoi", "switch_true_mass")
    inputs = {int(r["source"]): r["input_si_sdr"] for r in rows if math.isfinite(r["input_si_sdr"])}
    mine = sorted((r for r in rows if r["system"] in names),
                  key=lambda r: (names.index(r["system"]), r["source"]))
    body = [[r["system"], int(r["source"]), r["target_speaker"]]
            + [_fmt(r[m], DIGITS.get(m, 2)) for m in metrics] for r in mine if r["status"] == "ok"]
    caption = "input SI-SDR (dB): " + ", ".join(f"source {j} {_fmt(v)}" for j, v in sorted(inputs.items()))
    missing = {r["system"]: f"{r['status']}: {r['error']}" for r in mine if r["status"] != "ok"}
    if missing:
        caption += ". Not processed: " + "; ".join(f"{n} ({why})" for n, why in missing.items())
    return table(["system", "source", "speaker"] + [_short(m) for m in metrics], body, caption)


# ---------------------------------------------------------------------------------------------
# figures
# ---------------------------------------------------------------------------------------------
def plot_metrics_vs_snr(rows: list[dict], path: str | Path,
                        metrics=("si_sdri", "pesq_wb", "stoi"), comparison: dict | None = None):
    """Mean of each metric against the SNR: a panel per metric, a row of panels per number of
    talkers, a line per system, every point over the mixtures all systems processed at that SNR
    (:func:`compare`). Returns the Figure (None if there is nothing to plot)."""
    from ..plots import metric_curves

    comparison = comparison or compare(rows)
    panels = []
    for J, group in comparison["groups"].items():
        snrs = [(float(k), s) for k, s in group["by_snr"].items() if _is_number(k)]
        if not snrs or not group["systems"]:
            continue
        row = len({p["row"] for p in panels})
        for col, m in enumerate(metrics):
            lines = {n: ([x for x, _ in snrs], [_nan(s["mean"][n].get(m)) for _, s in snrs])
                     for n in group["systems"]}
            panels.append({"row": row, "col": col, "ylabel": metric_name(m),
                           "title": f"{metric_name(m).split(' (')[0]}, {talker_title(J)}",
                           "lines": lines})
    if not panels:
        return None
    return metric_curves(path, panels, "input SNR (dB)")


def _is_number(text: str) -> bool:
    try:
        return math.isfinite(float(text))
    except ValueError:
        return False


def _nan(value):
    return math.nan if value is None else value


def plot_example(path: str | Path, signals: list[tuple[str, np.ndarray]], stft_cfg):
    """Spectrograms (dB, one colour scale, with a colour bar) of ``[(title, waveform (N,))]``
    stacked vertically; returns the Figure."""
    import torch

    from ..audio import stft
    from ..plots import spectrogram_figure

    powers = [(t, stft(torch.as_tensor(np.asarray(x, np.float32)), stft_cfg).abs().pow(2).numpy())
              for t, x in signals]
    return spectrogram_figure(path, powers, stft_cfg.frame_rate, stft_cfg.sample_rate)


__all__ = ["METRIC_NAMES", "metric_name", "talker_title", "comparison_caption", "results_markdown",
           "comparison_html", "mixture_table", "plot_metrics_vs_snr", "plot_example"]
