"""The evaluation harness behind ``cli.py evaluate``: systems × mixtures → scored CSV and reports.

:func:`evaluate` renders every mixture of a manifest (:mod:`pyro_avss.data.mixtures`), runs each
requested system (:mod:`.systems`) on it, scores every source estimate against its clean
reference (:mod:`.scoring`, :func:`~pyro_avss.evaluation.metrics.compute_metrics`) and appends
the rows to
``<out>/results.csv`` (format: :mod:`.results_csv`) as soon as each mixture is scored, dropping
its estimates then: the audio in memory is one batch of mixtures and the noise recordings,
whatever the length of the manifest (what grows is a few numbers per mixture: its input
metrics, kept for the next system), and an interrupted run keeps every mixture scored. Then it
writes ``summary.json``, ``results.md``, ``metrics_vs_snr.png`` and the listening report
``report.html``. For ``examples`` mixtures per condition (number of talkers × SNR × noise; the
first ones of the manifest; ``"all"``: every mixture) it keeps ``examples/<id>/*.wav`` (16-bit:
the mixture, the references and every system's estimates), ``examples/<id>.png`` (spectrograms
on one dB scale) and ``examples/<id>/<system>_posterior.png`` (the switch posterior), which the
report links to (:mod:`.listening_report`, :mod:`pyro_avss.html_report`).

* **Like for like**: the tables of ``results.md`` and ``report.html`` and the curves of
  ``metrics_vs_snr.png`` average every system over the same mixtures (those all compared
  systems processed) and never pool one-talker and multi-talker mixtures
  (:func:`~.summary.compare`, also in ``summary.json`` under ``like_for_like``). The per-system
  entries of ``summary.json`` (``systems``) still average each system over its own ok rows.

* **Resumable**: pairs (mixture id, system) that already have rows with status ``ok``, one per
  source, are not computed again; rows with status ``skipped`` or ``failed``, and the rows of a
  pair stopped before all its sources were written, are dropped and retried. The
  model path and settings of the first run are kept in ``settings.json``; resuming with other
  ones warns (finished rows are kept: use a new ``--out`` to recompute everything).
* **Batched**: the SVI systems separate ``separate.batch_size`` mixtures per call (mixtures with
  the same number of sources and component subset, sorted by length).
* **Lips**: for audio-visual models, the lip track of each source's video is extracted with the
  model's detector (``data.detector`` of its config) and cached in ``<out>/lips/``
  (:mod:`.lip_tracks`); a source
  whose manifest row gives a lip corruption (``source<j>_lips``, e.g. ``missing:0.3``) is
  separated with its track corrupted so (:mod:`pyro_avss.data.lip_corruption`; deterministic,
  the clean reference untouched).
* **Source order**: with videos, estimate j belongs to source j; audio-only estimates of J ≥ 2
  sources are matched to the references by the permutation with the best mean SI-SDR.
* One failing mixture or system never stops the run: the row records the reason (and
  ``echo``, the command line's stderr, gets it on one line).
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import asdict
from pathlib import Path

import torch

from ..checkpoint import SpeechModels
from ..data.lip_corruption import source_track
from ..data.mixture_manifest import read_mixture_manifest
from ..data.mixtures import MixtureSpec, render_mixture
from ..errors import InputError, PyroAvssError, one_line, writable_folder
from .lip_tracks import TrackCache
from .listening_report import REPORT_HTML, Examples, example_ids, write_evaluation_report
from .overrides import settings_from_overrides
from .report import plot_metrics_vs_snr, results_markdown
from .results_csv import read_results, write_results
from .scoring import Scorer, status_rows
from .summary import compare, summarise, write_summary
from .system_interface import EvalContext, EvalItem, SystemResult, SystemSkip
from .systems import make_system, parse_system_names

RESULTS_CSV = "results.csv"


def evaluate(manifest: str | Path, model: str | Path | None, out_dir: str | Path, systems,
             *, limit: int | None = None, device="auto", overrides=(), examples: int | str = 1,
             progress: bool = True, models: SpeechModels | None = None, echo=None,
             interleave: bool = False) -> dict:
    """Run ``systems`` on the mixtures of ``manifest`` and write the results into ``out_dir``.

    :param model: model file (or pass an already loaded ``models``); may be None when only
        model-free systems (``mixture``, ``spectral-gating``, ``log-mmse``,
        ``rnnoise``, ``deepfilternet``) run.
    :param systems: ``"a,b,…"`` or a list of names (:data:`~.systems.SYSTEM_NAMES`).
    :param limit: only the first ``limit`` mixtures of the manifest.
    :param overrides: ``separate.k=v``, ``mcem.k=v`` and ``data.k=v`` strings.
    :param examples: mixtures per condition (talkers × SNR × noise) whose audio and figures are
        kept for ``report.html`` (:func:`~.listening_report.example_ids`); ``"all"``: every
        mixture.
    :param echo: called with one ``error: <id>: <system>: <reason>`` line per failed mixture
        and system, as it fails (the command line prints them on stderr).
    :param interleave: the systems take turns on successive slices of the manifest (as many
        mixtures as the largest batch of the systems) instead of each running on every mixture
        before the next system starts: on a shared machine whose load changes, their run times
        then see the same load, so their ratio is like for like. The batched systems batch
        within each slice.
    :returns: the summary (also written to ``summary.json``).
    :raises InputError: unknown system, unreadable manifest or model, bad overrides.
    """
    from tqdm import tqdm

    from ..inference.training import resolve_device

    names = parse_system_names(systems)
    if limit is not None and limit < 1:
        raise InputError("--limit", f"must be >= 1, got {limit}")
    settings_from_overrides(overrides, {})    # every value checked before any file is read
    specs = read_mixture_manifest(manifest)[:limit]
    if not specs:
        raise InputError(manifest, "no mixtures in the manifest")
    if models is None and model is not None:
        models = SpeechModels.load(model)
    dev = device if isinstance(device, torch.device) else resolve_device(device)
    separation, mcem, data_cfg = settings_from_overrides(overrides, models.config if models else {})
    out_dir = writable_folder(out_dir)
    ctx = EvalContext(models, dev, separation, mcem, data_cfg, out_dir)
    built = _build_systems(names, ctx)
    out_dir.mkdir(parents=True, exist_ok=True)

    csv_path = out_dir / RESULTS_CSV
    # the model by its absolute path: one file named relatively or absolutely is one model
    _check_settings(out_dir / "settings.json", {"model": str(Path(model).resolve()) if model else None,
                                                 "separation": asdict(separation), "mcem": asdict(mcem)},
                    {"separation": asdict(type(separation)()), "mcem": asdict(type(mcem)())})
    done = _finished_pairs(csv_path, specs)
    todo = {s.name: [sp for sp in specs if (sp.id, s.name) not in done] for s in built}
    detector = (models.config.get("data", {}).get("detector", "auto") if models else "auto")
    kept = example_ids(specs, examples)
    run = _Run(ctx, Scorer(models, ctx.stft), TrackCache(out_dir / "lips", detector), csv_path,
               Examples(out_dir, set(kept), ctx), echo)
    bar = tqdm(total=sum(len(v) for v in todo.values()), desc="evaluating", unit="mix",
               disable=not progress)
    step = max(s.batch_size for s in built) if interleave else len(specs)
    for start in range(0, len(specs), step):
        part = {sp.id for sp in specs[start:start + step]}
        for system in built:
            bar.set_postfix(system=system.name)
            run.system(system, [sp for sp in todo[system.name] if sp.id in part], bar.update)
    bar.close()

    ids = {sp.id for sp in specs}
    rows = [r for r in read_results(csv_path) if r["system"] in names and r["id"] in ids]
    meta = {"manifest": str(manifest), "model": str(model) if model else None, "device": str(dev),
            "systems": names, "created": time.strftime("%Y-%m-%d %H:%M:%S"),
            "separation": asdict(separation), "mcem": asdict(mcem), "torch": torch.__version__}
    summary, comparison = _write_summaries(out_dir, rows, names, meta)
    by_id = {sp.id: sp for sp in specs}
    items = run.examples.report_items(names, [by_id[i] for i in kept], rows)
    write_evaluation_report(out_dir / REPORT_HTML, comparison, meta, items, len(specs))
    summary["like_for_like"] = comparison
    return summary


def _build_systems(names: list[str], ctx: EvalContext) -> list:
    """The systems ``names``, once it is sure they can run: a model where one needs it, and
    separation settings that suit that model (checked before any work, not once per mixture)."""
    built = [make_system(n, ctx) for n in names]
    if ctx.models is None and any(s.needs_model for s in built):
        raise InputError("--model", "the systems " + ", ".join(s.name for s in built if s.needs_model)
                         + " need a model file")
    if any(s.needs_model for s in built):
        ctx.separation.check_model(ctx.models)
    return built


def _finished_pairs(csv_path: Path, specs) -> set:
    """The ``(mixture id, system)`` pairs ``csv_path`` already has ok rows for, one per source of
    the mixture (a resumed run skips them); skipped and failed rows, and the rows of a pair that
    lacks some of its sources (a run stopped while writing them), are dropped, so that they are
    retried."""
    previous = read_results(csv_path)
    sources = {sp.id: len(sp.sources) for sp in specs}
    count = Counter((r["id"], r["system"]) for r in previous if r["status"] == "ok")
    whole = {pair for pair, n in count.items() if n == sources.get(pair[0], n)}
    kept = [r for r in previous if r["status"] == "ok" and (r["id"], r["system"]) in whole]
    if len(kept) != len(previous):
        write_results(csv_path, kept, append=False)
    return whole


def _write_summaries(out_dir: Path, rows: list[dict], names: list[str], meta: dict) -> tuple[dict, dict]:
    """``summary.json``, ``results.md`` and ``metrics_vs_snr.png`` from the rows of ``names``;
    returns ``(summary, like-for-like comparison)``."""
    summary = summarise(rows)
    comparison = compare(rows, names)
    write_summary(out_dir / "summary.json", {**summary, "like_for_like": comparison}, meta)
    (out_dir / "results.md").write_text(results_markdown(summary, meta, comparison))
    plot_metrics_vs_snr(rows, out_dir / "metrics_vs_snr.png", comparison=comparison)
    return summary, comparison


def _check_settings(path: Path, current: dict, defaults: dict) -> None:
    """Remember the settings of the first run in ``path``; warn when a resumed run differs
    (its finished rows are kept, so they would mix two settings). A key the first run did not
    know yet (added since) counts as its value in ``defaults`` (section -> key -> value): a new
    key's default keeps the behaviour from before it existed."""
    import json
    import warnings

    def plain(value):
        return json.loads(json.dumps(value, default=str))

    current = plain(current)
    if path.exists():
        try:
            before = json.loads(path.read_text())
        except ValueError:
            before = None
        if isinstance(before, dict):
            for section, keys in plain(defaults).items():
                if isinstance(before.get(section), dict):
                    before[section] = {**keys, **before[section]}
        if before is not None and before != current:
            changed = [k for k in current if not isinstance(before, dict) or before.get(k) != current[k]]
            warnings.warn(f"{path.parent}: resuming with other {', '.join(changed)} settings than "
                          "the finished rows were computed with (they are kept; use a new --out "
                          "to recompute everything)", stacklevel=3)
            return
    path.write_text(json.dumps(current, indent=2) + "\n")


class _Run:
    """State of one :func:`evaluate` call: rendering, tracks, scoring and writing.

    Each mixture's rows are appended to the results file as soon as it is scored, and its
    estimates are dropped then (the audio of the kept examples is written first): memory holds
    one batch of mixtures, never the manifest's outputs, and an interrupted run keeps every
    mixture scored so far. ``echo`` (if given) gets one ``error: …`` line per failed mixture
    and system."""

    def __init__(self, ctx: EvalContext, scorer: Scorer, tracks: TrackCache, csv_path: Path,
                 examples: Examples, echo=None):
        self.ctx, self.scorer, self.tracks, self.csv_path = ctx, scorer, tracks, csv_path
        self.examples, self.echo = examples, echo
        self.audio_cache: dict = {}           # the noise recordings (render_mixture keeps no more)

    def write(self, rows: list[dict], say: bool = True) -> None:
        """Append ``rows`` to the results file; with ``say``, echo each failed (mixture,
        system) on one line."""
        write_results(self.csv_path, rows)
        failed = dict.fromkeys((r["id"], r["system"], r["error"]) for r in rows if r["status"] == "failed")
        for spec_id, system, error in failed if say and self.echo else ():
            self.echo(f"error: {spec_id}: {system}: {error}")

    def system(self, system, specs: list[MixtureSpec], advance) -> None:
        """Run one system on ``specs``: skip what it cannot do, batch the rest, write rows."""
        groups: dict = {}
        skipped = []
        for spec in specs:
            probe = EvalItem(spec, None, [None] * spec.num_sources)
            try:
                system.check(probe)
                groups.setdefault(system.group_key(probe), []).append(spec)
            except SystemSkip as exc:
                skipped += status_rows(spec, system.name, "skipped", str(exc))
        self.write(skipped)
        advance(len(specs) - sum(len(g) for g in groups.values()))
        if groups:
            try:
                system.prepare()
            except (PyroAvssError, OSError) as exc:          # e.g. NMF without training data
                status = "skipped" if isinstance(exc, SystemSkip) else "failed"
                todo = [spec for g in groups.values() for spec in g]
                self.write([r for spec in todo for r in status_rows(spec, system.name, status, one_line(exc))],
                           say=False)
                if status == "failed" and self.echo:           # one line, not one per mixture
                    self.echo(f"error: {system.name}: {one_line(exc)} ({len(todo)} mixture(s) not run)")
                advance(len(todo))
                return
        for group in groups.values():
            group.sort(key=lambda s: s.num_samples)
            for b in range(0, len(group), system.batch_size):
                self.batch(system, group[b:b + system.batch_size], advance)

    def batch(self, system, specs: list[MixtureSpec], advance) -> None:
        """Run ``system`` on ``specs`` in one call, then score and write them one by one; a
        failing call is retried one mixture at a time, so that only the culprit fails."""
        items = []
        for spec in specs:
            try:
                items.append(self.item(system, spec))
            except (PyroAvssError, OSError) as exc:
                self.write(status_rows(spec, system.name, "failed", one_line(exc)))
                advance(1)
        try:
            results = system.run(items) if items else []
        except Exception as exc:                             # noqa: BLE001 - recorded per mixture
            if len(items) > 1:                               # find the culprit one by one
                for item in items:
                    self.batch(system, [item.spec], advance)
                return
            self.write([r for i in items for r in status_rows(i.spec, system.name, "failed", one_line(exc))])
            advance(len(items))
            return
        results.reverse()
        for item in items:
            self.write(self.score(item, system.name, results.pop()))   # its estimates go now
            advance(1)

    def score(self, item: EvalItem, system: str, result: SystemResult) -> list[dict]:
        """The rows of one mixture (failed rows if scoring fails); keeps its audio when it is
        one of the examples."""
        try:
            rows = self.scorer.rows(item, system, result)
        except Exception as exc:                             # noqa: BLE001
            rows = status_rows(item.spec, system, "failed", f"scoring: {one_line(exc)}")
        if item.spec.id in self.examples.ids:
            self.examples.keep(item, system, result)
        return rows

    def item(self, system, spec: MixtureSpec) -> EvalItem:
        rendered = render_mixture(spec, audio_cache=self.audio_cache)
        models = self.ctx.models
        use_video = system.uses_video and models is not None and models.uses_video
        tracks = [source_track(spec, j, self.tracks.get) if use_video else None
                  for j in range(spec.num_sources)]
        return EvalItem(spec, rendered, tracks)


__all__ = ["evaluate", "RESULTS_CSV"]
