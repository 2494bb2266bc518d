"""What an evaluation's rows add up to: per-system means (``summary.json``'s ``systems``) and the
like-for-like comparison (``like_for_like``: in each group of mixtures with the same number of
talkers, every system averaged over the same mixtures), from the rows of ``results.csv``
(:mod:`.results_csv`)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

from .results_csv import METRICS

OWN_MEANS = ("rtf", "switch_true_mass", "switch_identified", "swapped")
"""Columns averaged over each system's own finite values on the common mixtures (they are
undefined for some systems by design: no switch, J = 1); every other metric is averaged over
the (mixture, source) pairs where it is finite for every compared system."""

TABLE_METRICS = ("si_sdr", "si_sdri", "sdr", "pesq_wb", "pesq_nb", "stoi", "estoi") + OWN_MEANS


def _stats(rows: list[dict]) -> dict:
    """Means (NaN-free), valid counts and metric-failure counts of ok rows."""
    out: dict = {"rows": len(rows)}
    means, counts, fails = {}, {}, {}
    for key in METRICS + ("input_si_sdr", "switch_true_mass", "switch_identified", "swapped", "rtf", "runtime_s"):
        values = np.array([r.get(key, np.nan) for r in rows], dtype=float)   # older runs lack some
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


def key_text(value) -> str:
    """A group key as text: a float (an SNR) as ``%g``, anything else as ``str``."""
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
            entry[group] = {key_text(v): _stats([r for r in ok if r[field] == v]) for v in values}
        systems[name] = entry
    return {"systems": systems, "mixtures": len({r["id"] for r in rows}), "rows": len(rows)}


def _reasons(rows: list[dict]) -> dict:
    counts: dict = {}
    for r in rows:
        counts[r["error"]] = counts.get(r["error"], 0) + 1
    return counts


def write_summary(path: str | Path, summary: dict, meta: dict) -> None:
    Path(path).write_text(json.dumps({**meta, **summary}, indent=2, default=str) + "\n")


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
                v = np.array([u[n].get(key, np.nan) for u in units.values() if n in u], dtype=float)
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
        for name, key in (("by_snr", lambda r: key_text(r["snr_db"])),
                          ("by_noise", lambda r: str(r["noise"])),
                          ("by_condition", lambda r: f"{key_text(r['snr_db'])} dB, {r['noise']}")):
            keys = sorted({key(r) for r in info.values()}, key=_sort_key)
            group[name] = {k: _common_stats(mine, compared, {i for i, r in info.items() if key(r) == k})
                           for k in keys}
        for k, stats in group["by_condition"].items():
            first = next(r for r in info.values() if f"{key_text(r['snr_db'])} dB, {r['noise']}" == k)
            stats["snr"], stats["noise"] = first["snr_db"], str(first["noise"])
        groups[str(J)] = group
    return {"groups": groups}


def _sort_key(text: str):
    head = text.split(" ")[0]
    try:
        return (0, float(head), text)
    except ValueError:
        return (1, 0.0, text)


__all__ = ["OWN_MEANS", "TABLE_METRICS", "summarise", "write_summary", "talkers_of", "compare"]
