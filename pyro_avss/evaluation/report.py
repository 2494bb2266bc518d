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


def results_markdown(summary: dict, meta: dict) -> str:
    """A markdown report: one table of means per system, then SI-SDRi by SNR and by noise."""
    lines = ["# Evaluation results", ""]
    for key in ("manifest", "model", "device", "created"):
        if key in meta:
            lines.append(f"- {key}: `{meta[key]}`")
    lines += ["", "Means over rows with status ok (one row per mixture and source). RTF = "
              "processing time / audio duration (batched systems: batch time shared by audio "
              "length). `p(true)` = mean switch posterior on the true speaker's component over "
              "speech frames.", ""]
    head = ["system", "ok", "skip", "fail", "SI-SDR", "SI-SDRi", "SDR", "PESQ-WB", "PESQ-NB",
            "STOI", "ESTOI", "RTF", "p(true)", "metric failures"]
    lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name, s in summary["systems"].items():
        m = s["mean"]
        fails = ", ".join(f"{k} {v}" for k, v in s["metric_failures"].items() if v) or "0"
        lines.append("| " + " | ".join([
            name, str(s["ok"]), str(s["skipped"]), str(s["failed"]), _fmt(m["si_sdr"]),
            _fmt(m["si_sdri"]), _fmt(m["sdr"]), _fmt(m["pesq_wb"]), _fmt(m["pesq_nb"]),
            _fmt(m["stoi"], 3), _fmt(m["estoi"], 3), _fmt(m["rtf"], 3),
            _fmt(m["switch_true_mass"], 3), fails]) + " |")
    for group, title in (("by_snr", "SNR (dB)"), ("by_noise", "noise")):
        keys = list(dict.fromkeys(k for s in summary["systems"].values() for k in s[group]))
        if not keys:
            continue
        lines += ["", f"## SI-SDRi (dB) by {title}", "",
                  "| system | " + " | ".join(keys) + " |", "|---|" + "---|" * len(keys)]
        for name, s in summary["systems"].items():
            cells = [_fmt(s[group][k]["mean"]["si_sdri"]) if k in s[group] else "–" for k in keys]
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
    reasons = {(n, r): c for n, s in summary["systems"].items() for r, c in s["reasons"].items()}
    if reasons:
        lines += ["", "## Skipped and failed", ""]
        lines += [f"- {n}: {c} × {r}" for (n, r), c in reasons.items()]
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------------------------
# figures
# ---------------------------------------------------------------------------------------------
def plot_metrics_vs_snr(rows: list[dict], path: str | Path,
                        metrics=("si_sdri", "pesq_wb", "estoi")) -> bool:
    """Mean of each metric against the SNR, one line per system (ok rows). False if nothing to
    plot."""
    from ..plots import plt

    ok = [r for r in rows if r["status"] == "ok" and math.isfinite(r["snr_db"])]
    snrs = sorted({r["snr_db"] for r in ok})
    if not snrs:
        return False
    fig, axes = plt.subplots(1, len(metrics), figsize=(4.2 * len(metrics), 3.4))
    for ax, metric in zip(np.atleast_1d(axes), metrics):
        for name in dict.fromkeys(r["system"] for r in ok):
            ys = []
            for snr in snrs:
                v = np.array([r[metric] for r in ok if r["system"] == name and r["snr_db"] == snr])
                v = v[np.isfinite(v)]
                ys.append(v.mean() if v.size else np.nan)
            ax.plot(snrs, ys, marker="o", label=name)
        ax.set_xlabel("input SNR (dB)")
        ax.set_ylabel(metric)
        ax.grid(alpha=0.3)
    np.atleast_1d(axes)[0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return True


def plot_example(path: str | Path, signals: list[tuple[str, np.ndarray]], stft_cfg) -> None:
    """Spectrograms (dB) of ``[(title, waveform (N,)), ...]`` stacked vertically."""
    import torch

    from ..audio import stft
    from ..plots import plt

    powers = [(t, stft(torch.as_tensor(np.asarray(x, np.float32)), stft_cfg).abs().pow(2).numpy())
              for t, x in signals]
    fig, axes = plt.subplots(len(powers), 1, figsize=(8, 1.7 * len(powers)), sharex=True,
                             squeeze=False)
    vmax = max(10 * np.log10(max(p.max(), 1e-10)) for _, p in powers)
    for ax, (title, p) in zip(axes[:, 0], powers):
        T = p.shape[0]
        ax.imshow(10 * np.log10(np.maximum(p, 1e-10)).T, origin="lower", aspect="auto",
                  extent=(0, T / stft_cfg.frame_rate, 0, stft_cfg.sample_rate / 2000),
                  vmin=vmax - 80, vmax=vmax, cmap="magma")
        ax.set_title(title, fontsize=8)
        ax.set_ylabel("kHz")
    axes[-1, 0].set_xlabel("time (s)")
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


__all__ = ["METRICS", "CSV_COLUMNS", "read_results", "write_results", "summarise",
           "write_summary", "results_markdown", "plot_metrics_vs_snr", "plot_example"]
