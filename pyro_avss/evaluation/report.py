"""The results of an evaluation: the per-utterance CSV, ``summary.json``, ``results.md`` and plots.

``results.csv`` has one row per (mixture, system, source), columns :data:`CSV_COLUMNS`:

* ``id, condition, snr_db, noise``: the mixture (manifest fields); ``source`` (1..J) and
  ``target_speaker`` (the speaker of that source, whose clean signal is the reference);
* ``system``; ``status``: ``ok``, ``skipped`` (the system cannot handle this mixture, e.g. a
  baseline on J ≥ 2, or the model lacks the component) or ``failed``; ``error``: the reason;
* ``input_<m>`` (the unprocessed mixture) and ``<m>`` (the estimate) for every metric of
  :data:`~pyro_avss.evaluation.metrics.ALL_METRICS`, ``si_sdri = si_sdr - input_si_sdr``; a
  metric that could not be computed is empty (NaN) and its reason is in ``<m>_error`` /
  ``input_<m>_error``;
* ``runtime_s``: processing time attributed to the mixture (s; for systems run in batches, the
  batch's time × this mixture's share of the batch's audio), ``audio_s``: mixture duration,
  ``rtf = runtime_s / audio_s``. All rows of one mixture and system carry the same runtime;
* ``switch_true_mass``: mean posterior probability of the component named like
  ``target_speaker`` over the speech frames of that source (frames whose clean energy is within
  40 dB of its loudest frame); empty when the system has no switch or no such component;
* ``swapped`` (J ≥ 2): 1 when the estimate of a source has a higher SI-SDR against another
  source's reference than against its own (it holds the wrong talker), else 0; its mean is the
  swap rate;
* ``steps`` (SVI steps or EM iterations) and ``acceptance`` (MCEM's MH acceptance rate).
"""

from __future__ import annotations

import csv
import json
import math
import os
from pathlib import Path

import numpy as np

from ..errors import InputError
from .metrics import ALL_METRICS

METRICS = ("si_sdr", "si_sdri", "sdr", "pesq_wb", "pesq_nb", "stoi", "estoi")
"""Metrics summarised per system (``si_sdri`` derived, the others computed)."""

ERROR_COLUMNS = tuple(f"{m}_error" for m in ALL_METRICS) + tuple(f"input_{m}_error" for m in ALL_METRICS)
CSV_COLUMNS = (("id", "condition", "snr_db", "noise", "system", "source", "target_speaker",
                "status", "error")
               + tuple(f"input_{m}" for m in ALL_METRICS) + METRICS + ERROR_COLUMNS
               + ("runtime_s", "audio_s", "rtf", "switch_true_mass", "swapped", "steps", "acceptance"))
NUMERIC = {c for c in CSV_COLUMNS if c.startswith("input_") and not c.endswith("_error")} \
    | set(METRICS) | {"snr_db", "runtime_s", "audio_s", "rtf", "switch_true_mass", "swapped",
                      "steps", "acceptance", "source"}


# ---------------------------------------------------------------------------------------------
# the CSV
# ---------------------------------------------------------------------------------------------
def _cell(value) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        if math.isnan(value):
            return ""
        return str(int(value)) if value.is_integer() and abs(value) < 1e15 else repr(value)
    return str(value)


def read_results(path: str | Path) -> list[dict]:
    """Rows of a results CSV, numbers as floats (NaN where empty).

    :raises InputError: the file has other columns than :data:`CSV_COLUMNS`.
    """
    path = Path(path)
    if not path.exists():
        return []
    with open(path, newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        if tuple(reader.fieldnames or ()) != CSV_COLUMNS:
            raise InputError(path, "was written with other columns (another pyro_avss version?); "
                                   "use a new --out folder")
        rows = list(reader)
    for row in rows:
        for key in NUMERIC:
            text = row.get(key) or ""
            row[key] = float(text) if text else math.nan
    return rows


def write_results(path: str | Path, rows: list[dict], append: bool = True) -> None:
    """Append ``rows`` (or rewrite the file with them when ``append`` is False) and flush."""
    path = Path(path)
    new = not append or not path.exists()
    tmp = path.with_name(path.name + ".tmp") if not append else path
    with open(tmp, "w" if new else "a", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=CSV_COLUMNS, restval="", extrasaction="ignore")
        if new:
            writer.writeheader()
        for row in rows:
            writer.writerow({k: _cell(row.get(k)) for k in CSV_COLUMNS})
        fh.flush()
    if tmp != path:
        os.replace(tmp, path)


# ---------------------------------------------------------------------------------------------
# summary
# ---------------------------------------------------------------------------------------------
def _stats(rows: list[dict]) -> dict:
    """Means (NaN-free), valid counts and metric-failure counts of ok rows."""
    out: dict = {"rows": len(rows)}
    means, counts, fails = {}, {}, {}
    for key in METRICS + ("input_si_sdr", "switch_true_mass", "swapped", "rtf", "runtime_s"):
        values = np.array([r[key] for r in rows], dtype=float)
        valid = values[np.isfinite(values)]
        means[key] = float(valid.mean()) if valid.size else None
        counts[key] = int(valid.size)
        if key in METRICS and key != "si_sdri":
            fails[key] = int(sum(1 for r in rows if r.get(f"{key}_error")))
    out["mean"], out["valid"], out["metric_failures"] = means, counts, fails
    sdri = np.array([r["si_sdri"] for r in rows], dtype=float)
    sdri = sdri[np.isfinite(sdri)]
    out["si_sdri_median"] = float(np.median(sdri)) if sdri.size else None
    out["si_sdri_std"] = float(sdri.std()) if sdri.size else None
    return out


def _key_text(value) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def summarise(rows: list[dict]) -> dict:
    """Per system: row counts by status, metric means overall, by SNR, by noise and by
    condition (over rows with status ok; NaNs are counted, never averaged)."""
    systems: dict = {}
    for name in dict.fromkeys(r["system"] for r in rows):
        mine = [r for r in rows if r["system"] == name]
        ok = [r for r in mine if r["status"] == "ok"]
        entry = {"ok": len(ok), "skipped": sum(r["status"] == "skipped" for r in mine),
                 "failed": sum(r["status"] == "failed" for r in mine),
                 "reasons": _reasons([r for r in mine if r["status"] != "ok"])}
        entry.update(_stats(ok))
        for group, field in (("by_snr", "snr_db"), ("by_noise", "noise"),
                             ("by_condition", "condition")):
            values = sorted({r[field] for r in ok}, key=lambda v: (isinstance(v, str), v))
            entry[group] = {_key_text(v): _stats([r for r in ok if r[field] == v]) for v in values}
        systems[name] = entry
    return {"systems": systems, "mixtures": len({r["id"] for r in rows}), "rows": len(rows)}


def _reasons(rows: list[dict]) -> dict:
    counts: dict = {}
    for r in rows:
        counts[r["error"]] = counts.get(r["error"], 0) + 1
    return counts


def write_summary(path: str | Path, summary: dict, meta: dict) -> None:
    Path(path).write_text(json.dumps({**meta, **summary}, indent=2, default=str) + "\n")


def _fmt(value, digits: int = 2) -> str:
    return "–" if value is None or (isinstance(value, float) and not math.isfinite(value)) \
        else f"{value:.{digits}f}"


METRIC_NAMES = {"si_sdr": "SI-SDR (dB)", "si_sdri": "SI-SDRi (dB)", "sdr": "SDR (dB)",
                "pesq_wb": "PESQ-WB (MOS-LQO)", "pesq_nb": "PESQ-NB (MOS-LQO)", "stoi": "STOI",
                "estoi": "ESTOI", "input_si_sdr": "input SI-SDR (dB)", "rtf": "RTF",
                "switch_true_mass": "p(true speaker)", "swapped": "swap rate"}
"""Readable names, with units, of the CSV's metric columns (figures and tables)."""

OWN_MEANS = ("rtf", "switch_true_mass", "swapped")
"""Columns averaged over each system's own finite values on the common mixtures (they are
undefined for some systems by design: no switch, J = 1); every other metric is averaged over
the (mixture, source) pairs where it is finite for every compared system."""

TABLE_METRICS = ("si_sdr", "si_sdri", "sdr", "pesq_wb", "pesq_nb", "stoi", "estoi") + OWN_MEANS
DIGITS = {"stoi": 3, "estoi": 3, "rtf": 3, "switch_true_mass": 3, "swapped": 3}


def metric_name(key: str) -> str:
    return METRIC_NAMES.get(key, key)


# ---------------------------------------------------------------------------------------------
# like-for-like comparison
# ---------------------------------------------------------------------------------------------
def talkers_of(rows: list[dict]) -> dict:
    """``{mixture id: number of sources}`` (the highest ``source`` among its rows)."""
    out: dict = {}
    for r in rows:
        out[r["id"]] = max(out.get(r["id"], 0), int(r["source"]))
    return out


def _common_stats(rows: list[dict], names: list[str], ids: set) -> dict:
    """Means per system over the mixtures ``ids`` (every system has ok rows for all of them)."""
    units: dict = {}
    for r in rows:
        if r["id"] in ids and r["system"] in names and r["status"] == "ok":
            units.setdefault((r["id"], r["source"]), {})[r["system"]] = r
    mean: dict = {n: {} for n in names}
    valid: dict = {}
    for key in TABLE_METRICS:
        if key in OWN_MEANS:
            for n in names:
                v = np.array([u[n][key] for u in units.values() if n in u], dtype=float)
                v = v[np.isfinite(v)]
                mean[n][key] = float(v.mean()) if v.size else None
            continue
        joint = [u for u in units.values()
                 if all(n in u and math.isfinite(u[n][key]) for n in names)]
        valid[key] = len(joint)
        for n in names:
            mean[n][key] = float(np.mean([u[n][key] for u in joint])) if joint else None
    return {"mixtures": len(ids), "pairs": len(units), "valid": valid, "mean": mean}


def compare(rows: list[dict], systems: list[str] | None = None) -> dict:
    """Like-for-like means: one group per number of talkers (never pooled); in each, every
    system is averaged over the *same* mixtures, those on which all compared systems have
    status ok. A system with no ok mixture in a group (e.g. a single-talker baseline on
    two-talker mixtures) is left out of that group; a system that skipped or failed only some
    shrinks the common set, and how many it lacked is recorded in ``restricted_by``.

    :returns: ``{"groups": {"<J>": {"talkers", "mixtures" (total), "common", "systems",
        "left_out": {name: reason}, "restricted_by": {name: missing}, "all": stats,
        "by_snr" / "by_noise" / "by_condition": {key: stats}}}}``; ``stats`` is
        ``{"mixtures" (n), "pairs", "valid": {metric: pairs}, "mean": {system: {metric: mean}}}``;
        ``by_condition`` keys are ``"<snr> dB, <noise>"``.
    """
    names = list(systems) if systems is not None else list(dict.fromkeys(r["system"] for r in rows))
    talkers = talkers_of(rows)
    groups: dict = {}
    for J in sorted(set(talkers.values())):
        ids = [i for i in dict.fromkeys(r["id"] for r in rows) if talkers[i] == J]
        ok = {n: set() for n in names}
        seen: dict = {}
        for r in rows:
            if talkers[r["id"]] == J and r["system"] in ok:
                seen.setdefault((r["id"], r["system"]), []).append(r["status"] == "ok")
        for (i, n), flags in seen.items():
            if len(flags) == J and all(flags):
                ok[n].add(i)
        compared = [n for n in names if ok[n]]
        left_out = {n: "no mixture processed (skipped or failed on all)" for n in names if not ok[n]}
        common = set(ids).intersection(*(ok[n] for n in compared)) if compared else set()
        restricted = {n: len(ids) - len(ok[n]) for n in compared if len(ok[n]) < len(ids)}
        mine = [r for r in rows if r["id"] in common]
        info = {r["id"]: r for r in mine}
        group = {"talkers": J, "mixtures": len(ids), "common": len(common), "systems": compared,
                 "left_out": left_out, "restricted_by": restricted,
                 "all": _common_stats(mine, compared, common)}
        for name, key in (("by_snr", lambda r: _key_text(r["snr_db"])),
                          ("by_noise", lambda r: str(r["noise"])),
                          ("by_condition", lambda r: f"{_key_text(r['snr_db'])} dB, {r['noise']}")):
            keys = sorted({key(r) for r in info.values()}, key=_sort_key)
            group[name] = {k: _common_stats(mine, compared, {i for i, r in info.items() if key(r) == k})
                           for k in keys}
        for k, stats in group["by_condition"].items():
            first = next(r for r in info.values() if f"{_key_text(r['snr_db'])} dB, {r['noise']}" == k)
            stats["snr"], stats["noise"] = first["snr_db"], str(first["noise"])
        groups[str(J)] = group
    return {"groups": groups}


def _sort_key(text: str):
    head = text.split(" ")[0]
    try:
        return (0, float(head), text)
    except ValueError:
        return (1, 0.0, text)


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
    return {"switch_true_mass": "p(true)", "swapped": "swap"}.get(metric, metric_name(metric))


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
        row_attrs = [{"talkers": J, "snr": f"{_key_text(stats['snr'])} dB", "noise": stats["noise"]}
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


__all__ = ["METRICS", "CSV_COLUMNS", "METRIC_NAMES", "read_results", "write_results", "summarise",
           "compare", "write_summary", "results_markdown", "comparison_html", "mixture_table",
           "plot_metrics_vs_snr", "plot_example"]
