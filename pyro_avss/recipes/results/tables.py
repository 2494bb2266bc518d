"""The tables of ``docs/results.md``: markdown from evaluation summaries (``evaluate()``'s
summary with its ``like_for_like`` groups), every mean over the same mixtures for the systems it
compares, and a note wherever rows of separate runs do not cover the same mixtures."""

from __future__ import annotations

import numpy as np

from pyro_avss.recipes.results.experiments import MEMORY_SPLITS, SWITCH_SPLITS


def _f(v, d=2):
    return "–" if v is None or (isinstance(v, float) and not np.isfinite(v)) else f"{v:.{d}f}"


def _split_table(rows: dict, splits, head: list[str], cells) -> list[str]:
    """Markdown: one row per label of ``rows`` (``{label: {split: summary}}``) whose switching
    system processed mixtures of every split, ``cells({split: summary entry})`` after the
    label; then :func:`_coverage_note`."""
    L = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    shown: list = []
    for label, per_split in rows.items():
        sw = {n: per_split[n]["systems"].get("switching") for n in splits}
        if not all(v and v["ok"] for v in sw.values()):
            continue
        shown += [(f"{label} on {n}", sw[n]) for n in splits]
        L.append("| " + " | ".join([label] + cells(sw)) + " |")
    return L + _coverage_note(shown)


def settings_table(rows: dict, what: str) -> list[str]:
    """Markdown: one row per setting of ``rows`` (``{label: {split: summary}}`` over
    :data:`MEMORY_SPLITS`: one and two talkers, tuned-on and held-out), ``what`` heading the
    labels; SI-SDRi on each split, PESQ-WB and STOI on the one-talker held-out split, the
    two-talker swap rates, RTF on one talker."""
    head = [what] + [f"{n}: SI-SDRi" for n in MEMORY_SPLITS] + \
        ["1spk_held: PESQ-WB / STOI", "2spk / 2spk_held: swap rate", "RTF (1spk)"]
    return _split_table(rows, MEMORY_SPLITS, head, lambda sw: [_f(sw[n]["mean"]["si_sdri"]) for n in MEMORY_SPLITS] + [
        f"{_f(sw['1spk_held']['mean']['pesq_wb'])} / {_f(sw['1spk_held']['mean']['stoi'], 3)}",
        f"{_f(sw['2spk']['mean']['swapped'], 3)} / {_f(sw['2spk_held']['mean']['swapped'], 3)}",
        _f(sw["1spk"]["mean"]["rtf"], 3)])


def quality_table(rows: dict, splits, what: str) -> list[str]:
    """Markdown: one row per setting of ``rows`` (``{label: {split: summary}}``), ``what``
    heading the labels; SI-SDRi / PESQ-WB on each of ``splits``, and the two-talker swap rates
    where ``splits`` has both two-talker splits."""
    swaps = {"2spk", "2spk_held"} <= set(splits)
    head = [what] + [f"{n}: SI-SDRi / PESQ-WB" for n in splits]
    if swaps:
        head.append("2spk / 2spk_held: swap rate")

    def cells(sw: dict) -> list[str]:
        out = [f"{_f(sw[n]['mean']['si_sdri'])} / {_f(sw[n]['mean']['pesq_wb'])}" for n in splits]
        if swaps:
            out.append(f"{_f(sw['2spk']['mean']['swapped'], 3)} / {_f(sw['2spk_held']['mean']['swapped'], 3)}")
        return out

    return _split_table(rows, splits, head, cells)


def switch_table(switch: dict) -> list[str]:
    """Markdown: one row per switch prior; SI-SDRi and true-speaker posterior mass on each split
    of :data:`SWITCH_SPLITS`, the two-talker swap rates, RTF on one talker."""
    head = ["switch prior"] + [f"{n}: SI-SDRi / p(true)" for n in SWITCH_SPLITS] + \
        ["2spk / 2spk_held: swap rate", "RTF (1spk)"]
    return _split_table(switch, SWITCH_SPLITS, head, lambda sw: [
        f"{_f(sw[n]['mean']['si_sdri'])} / {_f(sw[n]['mean']['switch_true_mass'], 3)}" for n in SWITCH_SPLITS] + [
        f"{_f(sw['2spk']['mean']['swapped'], 3)} / {_f(sw['2spk_held']['mean']['swapped'], 3)}",
        _f(sw["1spk"]["mean"]["rtf"], 3)])


def lips_table(rows: dict) -> list[str]:
    """Markdown: one row per system (``{label: {condition: entry}}`` of :func:`lips_rows`), one
    column per lips condition: the target's SI-SDRi / p(true), and the swap rate with two
    talkers; then :func:`_coverage_note`."""
    conditions = list(dict.fromkeys(c for per in rows.values() for c in per))
    two = any((e or {}).get("mean", {}).get("swapped") is not None for per in rows.values() for e in per.values())
    head = ["system"] + [c.replace(":", " ") for c in conditions]
    L = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    shown: list = []
    for label, per in rows.items():
        cells = []
        for c in conditions:
            e = per.get(c)
            if not (e and e["ok"]):
                cells.append("–")
                continue
            shown.append((f"{label}, {c}", e))
            m = e["mean"]
            cells.append(f"{_f(m['si_sdri'])} / {_f(m['switch_true_mass'], 3)}"
                         + (f" / {_f(m['swapped'], 3)}" if two else ""))
        L.append("| " + " | ".join([label] + cells) + " |")
    return L + _coverage_note(shown)


def _mcem_comparison(sw, eq, mcem: dict, iters: int) -> list[str]:
    """Markdown comparing SVI (default and ``iters`` steps) with MCEM at each EM budget:
    quality per SNR, RTF, and how much faster SVI is, saying whether at equal-or-better quality."""
    mcem = {n: m for n, m in mcem.items() if m and m["ok"] and m["mean"]["rtf"]}
    if not (sw and eq and mcem and sw["mean"]["rtf"] and eq["mean"]["rtf"]):
        return ["(not run)"]
    snrs = list(sw["by_snr"])

    def row(label, s, ratio):
        by = [_f(s["by_snr"].get(k, {}).get("mean", {}).get("si_sdri")) for k in snrs]
        return (f"| {label} | {_f(s['mean']['si_sdri'])} | {' / '.join(by)} | {_f(s['mean']['pesq_wb'])} | "
                f"{_f(s['mean']['stoi'], 3)} | {_f(s['mean']['rtf'], 3)} | {ratio} |")

    L = [f"All {sw['ok']} one-speaker mixtures above. MCEM at its published budget ({iters} EM "
         "iterations of 40 Metropolis–Hastings steps, the `mcem` row of the first table) and at "
         "smaller budgets; SVI at its default and at " + f"{iters} steps (equal iterations). The last "
         "column is MCEM's RTF divided by the RTF of the SVI default.", "",
         f"| system | SI-SDRi | SI-SDRi at {' / '.join(snrs)} dB | PESQ-WB | STOI | RTF | SVI default faster by |",
         "|---|---|---|---|---|---|---|",
         row("SVI, default settings", sw, "–"), row(f"SVI, {iters} steps", eq, "–")]
    for n, m in mcem.items():
        L.append(row(f"MCEM, {n} EM iterations", m, f"{m['mean']['rtf'] / sw['mean']['rtf']:.1f}×"))
    L += _coverage_note([("SVI default", sw), (f"SVI {iters} steps", eq)]
                        + [(f"MCEM {n} iterations", m) for n, m in mcem.items()])
    ours = sw["mean"]["si_sdri"]
    beaten = [n for n, m in mcem.items() if m["mean"]["si_sdri"] <= ours]
    best = max(mcem, key=lambda n: mcem[n]["mean"]["si_sdri"])
    L.append("")
    if iters in mcem:
        m = mcem[iters]
        L.append(f"- Equal iterations ({iters} SVI steps vs {iters} EM iterations): SVI "
                 f"**{m['mean']['rtf'] / eq['mean']['rtf']:.1f}× faster**, SI-SDRi "
                 f"{_f(eq['mean']['si_sdri'])} vs {_f(m['mean']['si_sdri'])} dB.")
    if best in beaten:
        L.append(f"- Equal or better quality: the SVI default ({_f(ours)} dB) is at least as good as MCEM "
                 f"at every budget tried, including its best ({best} EM iterations, "
                 f"{_f(mcem[best]['mean']['si_sdri'])} dB), and "
                 f"**{mcem[best]['mean']['rtf'] / sw['mean']['rtf']:.1f}× faster** than that run.")
    else:
        better = min(n for n in mcem if n not in beaten)
        L.append(f"- Equal or better quality is not reached: MCEM with {better} EM iterations gives "
                 f"{_f(mcem[better]['mean']['si_sdri'])} dB against the SVI default's {_f(ours)} dB; "
                 f"SVI is {mcem[better]['mean']['rtf'] / sw['mean']['rtf']:.1f}× faster than that run.")
    return L


def _one_talker_section(evals: dict, key: str, facts: dict) -> list[str]:
    """Tables for one one-talker set: both splits by SNR, SI-SDRi by noise, the tuned/held gap
    (every mean like for like: within a split, all systems over the same mixtures)."""
    tuned, held = evals[key], evals[f"{key}_held"]
    L = [f"Tuned-on split ({facts[f'mixtures_{key}']} mixtures):", ""] + _system_table(tuned, by_snr=True)
    L += ["", f"Held-out split ({facts[f'mixtures_{key}_held']} mixtures):", ""]
    L += _system_table(held, by_snr=True)
    L += ["", "SI-SDRi (dB) by noise, tuned-on noises then held-out noises (n = mixtures of that "
          "noise every system of the split processed):", ""]
    L += _noise_breakdown(tuned, held)
    L += [""] + _gap_lines(tuned, held)
    noise_held = evals.get(f"{key}_noise_held")       # runs written before this split have none
    if noise_held:
        count = facts[f"mixtures_{key}_noise_held"]
        L += ["", f"The tuned-on targets and draws in the held-out noises ({count} mixtures): the "
              "held-out split above also changes the targets, so only this split's gap to the "
              "tuned-on one is the noises' alone.", ""]
        L += _system_table(noise_held, by_snr=True) + [""] + _gap_lines(tuned, noise_held, "held-out noises")
    return L


def _groups(summary: dict) -> list[dict]:
    """The like-for-like groups (one per number of talkers) of an evaluation's summary: the
    means of every system over the same mixtures (:func:`~pyro_avss.evaluation.summary.compare`, ``summary.json``'s
    ``like_for_like``), never each system over its own."""
    if "like_for_like" not in summary:
        raise ValueError("an evaluation summary without like_for_like means (evaluate() returns "
                         "them; older summary.json files lack them: rerun evaluate on that folder)")
    return list(summary["like_for_like"]["groups"].values())


def _noise_breakdown(tuned, held) -> list[str]:
    """Markdown: one row per system, one column per noise of either split; each split's cells
    over the mixtures of that noise that every system of the split processed."""
    cols = [(g, n) for s in (tuned, held) for g in _groups(s) for n in g["by_noise"]]
    head = ["system"] + [f"{n} (n={g['by_noise'][n]['mixtures']})" for g, n in cols]
    rows = []
    for name in dict.fromkeys(n for g in _groups(tuned) for n in g["systems"]):
        cells = [_f(g["by_noise"][n]["mean"].get(name, {}).get("si_sdri")) for g, n in cols]
        rows.append([name] + cells)
    return ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)] + \
        ["| " + " | ".join(r) + " |" for r in rows]


def _gap_lines(tuned, held, held_name: str = "held-out") -> list[str]:
    """One line per system run on both splits: its tuned-on and held-out means (each the
    like-for-like mean of the tables above) and the difference; ``held_name`` names the second
    split."""
    out = []
    for a in _groups(tuned):
        b = next((g for g in _groups(held) if g["talkers"] == a["talkers"]), None)
        if not (a["common"] and b and b["common"]):
            continue
        for name in a["systems"]:
            if name in b["systems"] and name != "mixture":
                x, y = a["all"]["mean"][name]["si_sdri"], b["all"]["mean"][name]["si_sdri"]
                if x is not None and y is not None:
                    out.append(f"- {name}: tuned-on {_f(x)} dB, {held_name} {_f(y)} dB (gap {_f(x - y)} dB; "
                               f"n = {a['common']} / {b['common']} mixtures)")
    return out


def _coverage_note(entries) -> list[str]:
    """For tables whose rows come from separate runs of one system on one manifest (settings
    side by side): such rows compare the same mixtures exactly when no run skipped or failed
    any, which is what this line says, or else which runs lack how many (mixture, source) rows.
    ``entries``: ``[(label, per-system summary entry or None)]`` of the printed cells."""
    if not entries:
        return []
    short = {}
    for label, e in entries:
        missing = (e or {}).get("skipped", 0) + (e or {}).get("failed", 0)
        if missing:
            short[label] = f"{label} ({missing} of {missing + e.get('ok', 0)} rows)"
    if not short:
        return ["", "Each run behind this table processed every mixture of its split, so its rows "
                "compare the same mixtures."]
    return ["", "**Not like for like**: these runs lack rows (skipped or failed), so their means are "
            "over fewer mixtures than the others: " + ", ".join(short.values()) + "."]


def _noise_table(noise_rows: dict) -> list[str]:
    """Markdown: one row per noise-model setting, SI-SDRi / PESQ-WB on each one-talker split."""
    splits = list(dict.fromkeys(n for r in noise_rows.values() for n in r))
    head = ["setting"] + [f"{n}: SI-SDRi / PESQ-WB" for n in splits] + ["RTF (1spk)"]
    L = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    shown: list = []
    for label, per_split in noise_rows.items():
        cells = []
        for n in splits:
            sw = per_split.get(n, {}).get("systems", {}).get("switching") if per_split.get(n) else None
            cells.append(f"{_f(sw['mean']['si_sdri'])} / {_f(sw['mean']['pesq_wb'])}" if sw and sw["ok"]
                         else "–")
        one = per_split.get("1spk", {}).get("systems", {}).get("switching")
        cells.append(_f(one["mean"]["rtf"], 3) if one and one["ok"] else "–")
        L.append("| " + " | ".join([label] + cells) + " |")
        shown += [(f"{label} on {n}", (per_split.get(n) or {}).get("systems", {}).get("switching"))
                  for n in splits if per_split.get(n)]
    return L + _coverage_note(shown)


def _system_table(summary, by_snr: bool) -> list[str]:
    """Markdown: a row per system, every mean over the same mixtures for all systems (the
    like-for-like group of :func:`~pyro_avss.evaluation.summary.compare`; a table per number of talkers), under a
    line that says which mixtures (how many of how many, who shrank the set, who is left out).
    ``n``: (mixture, source) pairs (by SNR: mixtures at that SNR)."""
    from pyro_avss.evaluation.report import comparison_caption, talker_title

    groups = _groups(summary)
    L: list[str] = []
    for group in groups:
        if L:
            L.append("")
        if len(groups) > 1:
            L += [f"{talker_title(group['talkers']).capitalize()}:", ""]
        L += [comparison_caption(group), ""]
        if not group["systems"] or not group["common"]:
            L.append("No mixture was processed by every system.")
            continue
        L += _group_table(group, by_snr)
    return L


def _group_table(group: dict, by_snr: bool) -> list[str]:
    mean = group["all"]["mean"]
    if by_snr:
        snrs = list(group["by_snr"])
        head = ["system"] + [h for k in snrs for h in
                             (f"SI-SDRi @ {k} dB (n={group['by_snr'][k]['mixtures']})",
                              f"PESQ-WB @ {k} dB", f"STOI @ {k} dB")] + ["p(true)", "RTF"]
        rows = []
        for name in group["systems"]:
            cells = []
            for k in snrs:
                m = group["by_snr"][k]["mean"][name]
                cells += [_f(m.get("si_sdri")), _f(m.get("pesq_wb")), _f(m.get("stoi"), 3)]
            rows.append([name] + cells + [_f(mean[name].get("switch_true_mass"), 3),
                                          _f(mean[name].get("rtf"), 3)])
    else:
        head = ["system", "n", "SI-SDRi", "SDR", "PESQ-WB", "STOI", "ESTOI", "swap rate", "p(true)", "RTF"]
        n = str(group["all"]["pairs"])
        rows = [[name, n] + [_f(mean[name].get(k), d) for k, d in
                             (("si_sdri", 2), ("sdr", 2), ("pesq_wb", 2), ("stoi", 3), ("estoi", 3),
                              ("swapped", 3), ("switch_true_mass", 3), ("rtf", 3))]
                for name in group["systems"]]
    return ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)] + \
        ["| " + " | ".join(r) + " |" for r in rows]
