"""MCEM against our SVI like for like (``cli.py compare-mcem``; the "MCEM like for like" section
of ``docs/results.md``).

The published MCEM (:mod:`pyro_avss.inference.mcem`) and our SVI separate the same one-talker
mixtures with the same speech models and **the same switch prior** on both sides:

* per frame: SVI ``separate.switch_prior=iid`` against MCEM ``mcem.switch=iid``;
* per utterance: SVI ``separate.switch_prior=utterance`` (its default with lips) against MCEM
  ``mcem.switch=utterance``.

One difference stays: SVI's per-frame switch learns its prior ``π`` for each utterance
(:class:`~pyro_avss.models.switch.IIDSwitch` with ``learn_prior``), MCEM's is uniform, as
published; the per-utterance switch is uniform on both sides.

MCEM runs at several budgets (``mcem.em_iterations``); its best budget is the one with the
highest mean SI-SDRi on the **first** manifest (the tuned-on split), and only that budget runs
on the others (held-out splits), so nothing is chosen on them. Every (manifest, switch, budget)
is one :func:`~.harness.evaluate` run of both systems (``switching`` and ``mcem``) in one
process, taking turns every batch of mixtures (``interleave``), so the time ratio of each row
comes from one run on one machine under the same load. Each run is its own folder, resumable.

:func:`section_markdown` turns the runs into the "MCEM like for like" section of
``docs/results.md`` (``compare-mcem --doc``); ``cli.py results``, which rewrites that file, keeps
the section (:func:`carry_section`).
"""

from __future__ import annotations

import re
import shutil
import time
from pathlib import Path

from pyro_avss.errors import InputError

SWITCHES = ("iid", "utterance")
BUDGETS = (20, 50, 100)
SYSTEMS = "switching,mcem"
TARGET_SPEEDUP = 50.0
"""The issue's goal: SVI at least this much faster than MCEM's best budget, at equal or better
SI-SDRi."""


def run_overrides(switch: str, budget: int) -> list[str]:
    """The ``--set`` overrides of one run: the same switch prior on both sides, MCEM's budget."""
    return [f"separate.switch_prior={switch}", f"mcem.switch={switch}", f"mcem.em_iterations={budget}"]


def run_folder(out_dir: Path, split: str, switch: str, budget: int) -> Path:
    return Path(out_dir) / f"{split}_{switch}_em{budget}"


def _seed_lips(out_dir: Path, folder: Path) -> None:
    """Copy the lip tracks the earlier runs extracted into ``folder/lips`` (the harness caches
    them per output folder; extracting them again would only cost time, and none of it is timed)."""
    target = folder / "lips"
    for cached in sorted(Path(out_dir).glob("*/lips/*.npz")):
        if cached.parent != target and not (target / cached.name).exists():
            target.mkdir(parents=True, exist_ok=True)
            shutil.copy2(cached, target / cached.name)


def run_comparison(model, manifests: dict, out_dir, *, budgets=BUDGETS, switches=SWITCHES,
                   limit: int | None = None, device="cpu", overrides=(), progress: bool = False,
                   echo=print) -> dict:
    """Run every (manifest, switch, budget) evaluation (resumable) and return their summaries.

    :param manifests: ``{split label: mixture manifest}``; the first is the one MCEM's best
        budget is chosen on (all ``budgets`` run there), the others run that budget only.
    :param overrides: further ``separate.*`` / ``mcem.*`` settings of every run (the switch and
        the budget of each run are set after them, so they win).
    :returns: ``{split: {switch: {budget: summary}}}`` (summaries of :func:`~.harness.evaluate`).
    """
    from pyro_avss.checkpoint import SpeechModels
    from pyro_avss.inference.mcem import MCEM_SWITCHES
    from pyro_avss.evaluation.harness import evaluate

    budgets = sorted({int(b) for b in budgets})
    if not budgets or budgets[0] < 1:
        raise InputError("--budgets", f"EM iteration budgets must be >= 1, got {budgets}")
    if not switches:
        raise InputError("--switches", f"no switch prior given (choose from {', '.join(MCEM_SWITCHES)})")
    for s in switches:
        if s not in MCEM_SWITCHES:
            raise InputError("--switches", f"must be among {', '.join(MCEM_SWITCHES)}, got {s!r}")
    if not manifests:
        raise InputError("--mixtures", "no mixture manifest given")
    models = SpeechModels.load(model)
    out_dir = Path(out_dir)
    results: dict = {}
    for i, (split, manifest) in enumerate(manifests.items()):
        results[split] = {}
        for switch in switches:
            todo = budgets if i == 0 else [best_budget(results[next(iter(manifests))][switch])]
            results[split][switch] = {}
            for budget in todo:
                folder = run_folder(out_dir, split, switch, budget)
                _seed_lips(out_dir, folder)
                echo(f"{split}: switch {switch}, MCEM {budget} EM iterations -> {folder}")
                results[split][switch][budget] = evaluate(
                    manifest, model, folder, SYSTEMS, limit=limit, device=device,
                    overrides=[*overrides, *run_overrides(switch, budget)], examples=0, progress=progress,
                    models=models, interleave=True, echo=echo)
    return results


# ---------------------------------------------------------------------------------------------
# the table
# ---------------------------------------------------------------------------------------------
def _group(summary: dict) -> dict | None:
    """The one-talker like-for-like group of a summary (both systems over the same mixtures)."""
    group = summary.get("like_for_like", {}).get("groups", {}).get("1")
    if not group or not {"switching", "mcem"} <= set(group["systems"]):
        return None
    return group


def _mean(group: dict, system: str, metric: str, snr: str | None = None):
    stats = group["all"] if snr is None else group["by_snr"].get(snr, {})
    return stats.get("mean", {}).get(system, {}).get(metric)


def best_budget(by_budget: dict) -> int:
    """MCEM's budget with the highest mean SI-SDRi (the smaller budget on a tie)."""
    scored = {b: _mean(g, "mcem", "si_sdri") for b, s in by_budget.items() if (g := _group(s))}
    scored = {b: v for b, v in scored.items() if v is not None}
    if not scored:
        raise InputError("MCEM comparison", "no run has both systems on common mixtures")
    return max(sorted(scored), key=lambda b: scored[b])


def _f(value, digits: int = 2) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def comparison_table(results: dict) -> str:
    """Markdown: per split and switch, the SVI row, then MCEM at each budget with its time ratio
    to the SVI of the same run; then one verdict line per split and switch."""
    first = next(iter(results))
    lines, verdicts, counts = [], [], set()
    for split, by_switch in results.items():
        for switch, by_budget in by_switch.items():
            groups = {b: g for b, s in sorted(by_budget.items()) if (g := _group(s))}
            if not groups:
                continue
            best = best_budget(by_budget) if split == first else next(iter(groups))
            snrs = list(groups[best]["by_snr"])
            counts.add(groups[best]["common"])

            def cells(g, system):
                by = " / ".join(_f(_mean(g, system, "si_sdri", k)) for k in snrs)
                return (f"{_f(_mean(g, system, 'si_sdri'))} | {by} | {_f(_mean(g, system, 'pesq_wb'))} | "
                        f"{_f(_mean(g, system, 'stoi'), 3)} | {_f(_mean(g, system, 'switch_true_mass'), 3)} | "
                        f"{_f(_mean(g, system, 'rtf'), 3)}")

            g = groups[best]
            lines.append(f"| {split} | {switch} | SVI (`switching`) | – | {cells(g, 'switching')} | – |")
            for b, gb in groups.items():
                ratio = _mean(gb, "mcem", "rtf") / _mean(gb, "switching", "rtf")
                mark = ""
                if b == best and split == first:          # the choice, or no choice at all
                    mark = " (best)" if len(groups) > 1 else " (the only budget run)"
                lines.append(f"| {split} | {switch} | MCEM{mark} | {b} | {cells(gb, 'mcem')} | {ratio:.1f}× |")
            svi, mc = _mean(g, "switching", "si_sdri"), _mean(g, "mcem", "si_sdri")
            ratio = _mean(g, "mcem", "rtf") / _mean(g, "switching", "rtf")
            held = "" if split == first else f" (the budget chosen on {first})"
            ok = svi >= mc and ratio >= TARGET_SPEEDUP
            verdicts.append(
                f"- {split}, {switch} switch: SVI {_f(svi)} dB vs MCEM at {best} EM iterations{held} "
                f"{_f(mc)} dB ({'+' if svi >= mc else '−'}{abs(svi - mc):.2f} dB for SVI), SVI "
                f"{ratio:.1f}× faster: ≥ {TARGET_SPEEDUP:g}× at equal or better SI-SDRi "
                f"{'**holds**' if ok else '**does not hold**'}"
                + ("" if ok else " (" + ", ".join(
                    w for w, bad in (("quality", svi < mc), ("speed", ratio < TARGET_SPEEDUP)) if bad)
                    + " short)") + ".")
    snr_head = " / ".join(next((list(g["by_snr"]) for s in results.values() for bb in s.values()
                                for v in bb.values() if (g := _group(v))), []))
    head = [f"Mixtures per run: {', '.join(map(str, sorted(counts)))} (both systems on the same ones).",
            "",
            f"| split | switch | system | EM iterations | SI-SDRi | SI-SDRi at {snr_head} dB | PESQ-WB | STOI "
            "| p(true) | RTF | MCEM time / SVI time (same run) |",
            "|---|---|---|---|---|---|---|---|---|---|---|"]
    return "\n".join(head + lines + [""] + verdicts)


# ---------------------------------------------------------------------------------------------
# the section of docs/results.md
# ---------------------------------------------------------------------------------------------
SECTION = "## MCEM like for like"


def svi_heading(overrides=()) -> str:
    """The sub-heading of one comparison in the section: SVI (and MCEM) at their defaults, or
    with the ``--set`` overrides of the run (e.g. a cheaper SVI budget)."""
    if not overrides:
        return "### SVI at its defaults"
    return "### SVI with " + ", ".join(f"`{o}`" for o in overrides)


def section_markdown(results: dict, command: str, overrides=()) -> str:
    """The "MCEM like for like" section: how it was measured, then one sub-section (heading
    :func:`svi_heading`) with the table, the verdicts and the command."""
    from pyro_avss.recipes.results.document import _machine

    first = next(iter(results))
    return "\n".join([
        SECTION, "",
        "Measured by `cli.py compare-mcem` (not by `cli.py results`, which keeps this section as it "
        "is); each sub-section says when and on which machine.",
        "",
        "The published MCEM and our SVI on the same one-talker mixtures, with the same speech models "
        "(the `switching` components: every decoder but the universal one; neither is told the "
        "speaker) and **the same switch prior on both sides** (the MCEM section above pits MCEM's "
        "per-frame switch against SVI's per-utterance default):", "",
        "* per frame: SVI `separate.switch_prior=iid` against MCEM `mcem.switch=iid` (the published "
        "algorithm). One difference stays: SVI learns the switch prior π per utterance, MCEM's is "
        "uniform, as published;",
        "* per utterance: SVI's default against MCEM `mcem.switch=utterance` (a Gibbs sweep over the "
        "component and the latent codes, `pyro_avss/inference/mcem.py`); π uniform on both sides;",
        f"* MCEM runs at every budget (EM iterations of 40 Metropolis–Hastings steps, then 100 final "
        f"steps) on {first}; its best budget there (highest SI-SDRi) is the only one run on the other "
        "split, so nothing is chosen on it;",
        "* each SVI row and the MCEM row below it come from one `evaluate` run, one process, the two "
        "systems taking turns every SVI batch (`--interleave`), so the time ratio compares them under "
        "the same load. The machine was shared with other jobs, so the RTFs depend on its load; "
        "compare the ratios. SVI separates a batch of mixtures per call (its default, "
        "8; the time is shared out per mixture), MCEM one mixture at a time (it has no batched form);",
        "* p(true): the switch posterior on the target's speaker over its speech frames;",
        "* one sub-section per SVI budget: its defaults, and cheaper ones (fewer steps, chosen on the "
        "first split) — the goal is speed *at equal or better SI-SDRi*, so SVI's budget may shrink "
        "while its SI-SDRi stays at or above MCEM's best.", "",
        svi_heading(overrides), "",
        f"Measured {time.strftime('%Y-%m-%d')} on: " + _machine() + ".", "",
        comparison_table(results), "",
        "To reproduce (the model and mixture manifests are those `cli.py results` builds under "
        "`runs/results`; every run is a resumable `evaluate` folder under `--out`, and "
        "`OUT/comparison.md` gets the table):", "", f"```bash\n{command}\n```", ""])


def _parts(section: str) -> tuple[str, list[tuple[str, str]]]:
    """A section's text before its first sub-section, and its ``(heading, text)`` sub-sections.
    A section written before there were sub-sections holds one comparison at the defaults."""
    pieces = re.split(r"^(### .*)$", section, flags=re.M)
    if len(pieces) == 1:
        at = section.find("Mixtures per run:")
        if at < 0:
            return section, []
        when = re.search(r"^Measured .*$", section[:at], re.M)
        stamp = f"\n\n{when.group(0)}" if when else ""
        return section[:at], [(svi_heading(), f"{stamp}\n\n{section[at:]}")]
    intro, rest = pieces[0], pieces[1:]
    return intro, [(rest[i], rest[i + 1]) for i in range(0, len(rest), 2)]


def _merged(old: str, new: str) -> str:
    """``new``'s introduction and sub-section, with ``old``'s sub-sections of other headings kept
    (the one of the same heading is replaced in place; a new heading goes last)."""
    intro, (fresh,) = _parts(new)
    subsections = _parts(old)[1]
    if any(h == fresh[0] for h, _ in subsections):
        subsections = [fresh if h == fresh[0] else (h, t) for h, t in subsections]
    else:
        subsections.append(fresh)
    body = "".join(f"{h}{t.rstrip()}\n\n" for h, t in subsections)
    return intro.rstrip("\n") + "\n\n" + body


#: the whole "MCEM like for like" section of a markdown document, up to the next "## " heading
_SECTION_RE = re.compile(rf"^{re.escape(SECTION)}\n.*?(?=^## |\Z)", re.S | re.M)


def _inserted(text: str, section: str) -> str:
    """``text`` with ``section`` put before "## How to reproduce" (else at the end)."""
    section = section.rstrip("\n") + "\n\n"
    at = text.find("\n## How to reproduce")
    if at < 0:
        return text.rstrip("\n") + "\n\n" + section
    return text[:at + 1] + section + text[at + 1:]


def with_section(text: str, section: str) -> str:
    """``text`` (a markdown document) with the one-comparison ``section`` merged into its "MCEM
    like for like" section (:func:`_merged`: other sub-sections kept), or inserted before "## How
    to reproduce" (else at the end)."""
    found = _SECTION_RE.search(text)
    if not found:
        return _inserted(text, section)
    merged = _merged(found.group(0), section).rstrip("\n") + "\n\n"
    return text[:found.start()] + merged + text[found.end():]


def write_section(doc, results: dict, command: str, overrides=()) -> Path:
    """Write the comparison into the markdown file ``doc`` (made if absent), keeping the rest
    (and the section's sub-sections of other settings)."""
    doc = Path(doc)
    text = doc.read_text() if doc.exists() else "# Results\n"
    doc.write_text(with_section(text, section_markdown(results, command, overrides)))
    return doc


def carry_section(doc: Path, text: str) -> str:
    """``text`` (a new version of ``doc``) with the "MCEM like for like" section ``doc`` has now,
    every sub-section of it, if any: ``cli.py results`` rewrites ``doc`` and does not run this
    comparison."""
    doc = Path(doc)
    old = doc.read_text() if doc.exists() else ""
    found = _SECTION_RE.search(old)
    return _inserted(_SECTION_RE.sub("", text, count=1), found.group(0)) if found else text


__all__ = ["section_markdown", "svi_heading", "with_section", "write_section", "carry_section", "SECTION", "run_comparison", "comparison_table", "best_budget", "run_overrides", "SWITCHES",
           "BUDGETS", "TARGET_SPEEDUP"]
