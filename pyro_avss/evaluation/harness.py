"""The evaluation harness behind ``cli.py evaluate``: systems × mixtures → scored CSV and reports.

:func:`evaluate` renders every mixture of a manifest (:mod:`pyro_avss.data.mixtures`), runs each
requested system (:mod:`.systems`) on it, scores every source estimate against its clean
reference (:func:`~pyro_avss.evaluation.metrics.compute_metrics`) and appends the rows to
``<out>/results.csv`` (format: :mod:`.report`) as soon as each mixture is scored, dropping its
estimates then: the audio in memory is one batch of mixtures and the noise recordings,
whatever the length of the manifest (what grows is a few numbers per mixture: its input
metrics, kept for the next system), and an interrupted run keeps every mixture scored. Then it
writes
``summary.json``, ``results.md``, ``metrics_vs_snr.png`` and the listening report
``report.html``. For ``examples`` mixtures per condition (number of talkers × SNR × noise; the
first ones of the manifest; ``"all"``: every mixture) it keeps ``examples/<id>/*.wav`` (16-bit:
the mixture, the references and every system's estimates), ``examples/<id>.png`` (spectrograms
on one dB scale) and ``examples/<id>/<system>_posterior.png`` (the switch posterior), which the
report links to (:mod:`pyro_avss.html_report`).

* **Like for like**: the tables of ``results.md`` and ``report.html`` and the curves of
  ``metrics_vs_snr.png`` average every system over the same mixtures (those all compared
  systems processed) and never pool one-talker and multi-talker mixtures
  (:func:`~.report.compare`, also in ``summary.json`` under ``like_for_like``). The per-system
  entries of ``summary.json`` (``systems``) still average each system over its own ok rows.

* **Resumable**: pairs (mixture id, system) that already have rows with status ``ok`` are not
  computed again; rows with status ``skipped`` or ``failed`` are dropped and retried. The
  model path and settings of the first run are kept in ``settings.json``; resuming with other
  ones warns (finished rows are kept: use a new ``--out`` to recompute everything).
* **Batched**: the SVI systems separate ``separate.batch_size`` mixtures per call (mixtures with
  the same number of sources and component subset, sorted by length).
* **Lips**: for audio-visual models, the lip track of each source's video is extracted with the
  model's detector (``data.detector`` of its config) and cached in ``<out>/lips/``; a source
  whose manifest row gives a lip corruption (``source<j>_lips``, e.g. ``missing:0.3``) is
  separated with its track corrupted so (:mod:`pyro_avss.data.lip_corruption`; deterministic,
  the clean reference untouched).
* **Source order**: with videos, estimate j belongs to source j; audio-only estimates of J ≥ 2
  sources are matched to the references by the permutation with the best mean SI-SDR.
* One failing mixture or system never stops the run: the row records the reason (and
  ``echo``, the command line's stderr, gets it on one line).
"""

from __future__ import annotations

import copy
import hashlib
import itertools
import math
import time
from dataclasses import asdict, fields
from pathlib import Path

import numpy as np
import torch

from ..audio import save_audio, stft
from ..checkpoint import SpeechModels
from ..data.lip_corruption import source_track
from ..data.mixtures import MixtureSpec, read_mixture_manifest, render_mixture
from ..errors import ConfigError, InputError, PyroAvssError, one_line, writable_folder
from .metrics import compute_metrics, si_sdr
from .report import (compare, comparison_html, mixture_table, plot_example, plot_metrics_vs_snr,
                     read_results, results_markdown, summarise, write_results, write_summary)
from .systems import EvalContext, EvalItem, SystemResult, SystemSkip, make_system, parse_system_names

SPEECH_RANGE_DB = 40.0
"""Frames of a clean source within this many dB of its loudest frame count as speech."""

RESULTS_CSV = "results.csv"
REPORT_HTML = "report.html"


def example_ids(specs: list[MixtureSpec], per_condition: int | str | None) -> list[str]:
    """Ids of the first ``per_condition`` mixtures of each condition (number of talkers, SNR,
    noise), in manifest order; ``"all"`` or None: every mixture."""
    if per_condition is None or per_condition == "all":
        return [sp.id for sp in specs]
    seen: dict = {}
    out = []
    for sp in specs:
        key = (sp.num_sources, sp.snr_db, sp.noise.name)
        if seen.get(key, 0) < int(per_condition):
            seen[key] = seen.get(key, 0) + 1
            out.append(sp.id)
    return out


# ---------------------------------------------------------------------------------------------
# settings from --set overrides
# ---------------------------------------------------------------------------------------------
def settings_from_overrides(overrides, model_config: dict):
    """Split ``key=value`` overrides into separation settings (``separate.*``), MCEM settings
    (``mcem.*``, fields of :class:`~pyro_avss.inference.mcem.MCEMSettings`) and the data section
    (``data.*``, applied to the model's own ``data`` config).

    :returns: ``(SeparationSettings, MCEMSettings, data_config dict)``.
    :raises ConfigError: unknown key or badly typed value.
    """
    from ..config import default_config, load_config, parse_override, set_key
    from ..inference.mcem import MCEMSettings
    from ..inference.separation import SeparationSettings

    sep, mcem, data = [], {}, []
    known = {f.name: f for f in fields(MCEMSettings) if f.name != "components"}
    for item in overrides:
        key, value = parse_override(item)
        text = item.partition("=")[2]
        if key.startswith("mcem."):
            name = key[len("mcem."):]
            if name not in known:
                raise ConfigError(f"--set: unknown MCEM setting {key!r} (mcem.{', mcem.'.join(known)})")
            default = getattr(MCEMSettings(), name)
            if isinstance(default, int) and not (isinstance(value, int) and not isinstance(value, bool)):
                raise ConfigError(f"--set: {key} must be an integer, got {text!r}")
            if isinstance(default, float) and not isinstance(value, (int, float)):
                raise ConfigError(f"--set: {key} must be a number, got {text!r}")
            mcem[name] = type(default)(value)
        elif key.startswith("data."):
            data.append((key, value))
        else:
            sep.append(item)
    separation = SeparationSettings.from_config(load_config(None, sep)["separate"])
    cfg = default_config()
    cfg["data"].update(copy.deepcopy((model_config or {}).get("data", {})))
    for key, value in data:
        set_key(cfg, key, value)
    mcem = MCEMSettings(**mcem)
    mcem.check()                         # before any work, not once per mixture
    return separation, mcem, cfg["data"]


# ---------------------------------------------------------------------------------------------
# lip tracks
# ---------------------------------------------------------------------------------------------
class TrackCache:
    """Lip tracks of videos, extracted once with ``detector`` and cached in ``folder``."""

    def __init__(self, folder: Path, detector: str):
        self.folder, self.detector = Path(folder), detector
        self._detector_obj = None

    def path(self, video: Path) -> Path:
        digest = hashlib.sha1(str(Path(video).resolve()).encode()).hexdigest()[:10]
        return self.folder / f"{Path(video).stem}-{digest}.npz"

    def get(self, video):
        """The track of ``video`` (None for None). :raises InputError: unreadable video."""
        from ..video.track import LipTrack, extract_lip_track

        if video is None:
            return None
        cached = self.path(video)
        if cached.exists():
            try:
                return LipTrack.load(cached)
            except InputError:
                cached.unlink()                 # corrupt cache: extract again
        track = extract_lip_track(video, detector=self.detector)
        track.save(cached)
        return track


# ---------------------------------------------------------------------------------------------
# scoring
# ---------------------------------------------------------------------------------------------
def speech_frames(reference: np.ndarray, stft_cfg, range_db: float = SPEECH_RANGE_DB) -> np.ndarray:
    """``(T,)`` bool: STFT frames of a clean source within ``range_db`` of its loudest frame."""
    energy = stft(torch.as_tensor(np.asarray(reference, np.float32)), stft_cfg).abs().pow(2).sum(-1)
    return (energy >= energy.max() * 10.0 ** (-range_db / 10.0)).numpy()


def true_speaker_mass(posterior: np.ndarray, reference: np.ndarray, component: int,
                      stft_cfg) -> float:
    """Mean ``posterior[t, component]`` over the speech frames of ``reference``.

    :param posterior: ``(T, K)`` switch posterior of one source.
    """
    speech = speech_frames(reference, stft_cfg)
    T = min(len(speech), posterior.shape[0])
    speech = speech[:T]
    if not speech.any():
        return math.nan
    return float(posterior[:T][speech, component].mean())


def best_order(estimates: np.ndarray, references: np.ndarray) -> list[int]:
    """Permutation ``p`` maximising ``Σ_j SI-SDR(estimates[p[j]], references[j])``."""
    J = len(references)
    score = np.array([[si_sdr(estimates[a], references[b]) for b in range(J)] for a in range(J)])
    score = np.nan_to_num(score, nan=-1e9, neginf=-1e9)
    return list(max(itertools.permutations(range(J)), key=lambda p: sum(score[p[j], j] for j in range(J))))


def swapped(estimate: np.ndarray, references: np.ndarray, j: int, own: float) -> float:
    """1.0 when ``estimate`` (source j's, with SI-SDR ``own`` against its reference) is closer,
    in SI-SDR, to another source's reference than to its own — it holds the wrong talker —,
    else 0.0 (NaN when ``own`` could not be computed)."""
    if not math.isfinite(own):
        return math.nan
    other = max(si_sdr(estimate, references[i]) for i in range(len(references)) if i != j)
    return float(other > own)


def _base_row(spec: MixtureSpec, system: str, j: int, status: str, error: str = "") -> dict:
    return {"id": spec.id, "condition": spec.condition, "snr_db": spec.snr_db,
            "noise": spec.noise.name, "system": system, "source": j + 1,
            "target_speaker": spec.sources[j].speaker, "status": status, "error": error,
            "audio_s": spec.num_samples / spec.sample_rate}


def status_rows(spec: MixtureSpec, system: str, status: str, error: str) -> list[dict]:
    """Rows of a mixture a system skipped or failed on (one per source, no metrics)."""
    return [_base_row(spec, system, j, status, " ".join(str(error).split()))
            for j in range(spec.num_sources)]


class Scorer:
    """Scores estimates; the mixture's own metrics are computed once per (mixture, source)."""

    def __init__(self, models: SpeechModels | None, stft_cfg):
        self.models, self.stft_cfg = models, stft_cfg
        self._inputs: dict = {}

    def inputs(self, item: EvalItem, j: int) -> dict:
        key = (item.spec.id, j)
        if key not in self._inputs:
            m = compute_metrics(item.rendered.mixture, item.rendered.sources[j])
            self._inputs[key] = {f"input_{k}": v for k, v in m.items()}
        return self._inputs[key]

    def rows(self, item: EvalItem, system: str, result: SystemResult) -> list[dict]:
        refs, mixture = item.rendered.sources, item.rendered.mixture
        est, post = np.asarray(result.estimates, np.float32), result.posterior
        if est.shape != refs.shape:
            raise ValueError(f"{system} returned estimates of shape {est.shape}, expected {refs.shape}")
        if not result.ordered and len(refs) > 1:
            order = best_order(est, refs)
            est = est[order]
            post = post[:, order] if post is not None else None
        out = []
        for j in range(len(refs)):
            inputs = self.inputs(item, j)
            unprocessed = np.array_equal(est[j], mixture)
            if unprocessed:
                metrics = {k[len("input_"):]: v for k, v in inputs.items()}
            else:
                metrics = compute_metrics(est[j], refs[j])
            row = {**_base_row(item.spec, system, j, "ok"), **inputs, **metrics}
            row["si_sdri"] = metrics["si_sdr"] - inputs["input_si_sdr"]
            row["runtime_s"] = result.runtime_s
            row["rtf"] = result.runtime_s / row["audio_s"]
            row.update(result.info)
            row["switch_true_mass"] = self._mass(post, j, item, refs[j], result.components)
            row["swapped"] = (swapped(est[j], refs, j, metrics["si_sdr"]) if len(refs) > 1 and not unprocessed
                              else math.nan)
            out.append(row)
        return out

    def _mass(self, post, j, item, reference, components) -> float:
        """NaN unless the system had a switch that could choose the true speaker's component."""
        if post is None or self.models is None or components is None:
            return math.nan
        names = self.models.component_names
        speaker = str(item.spec.sources[j].speaker)
        if speaker not in names or names.index(speaker) not in components:
            return math.nan
        return true_speaker_mass(post[:, j], reference, names.index(speaker), self.stft_cfg)


# ---------------------------------------------------------------------------------------------
# the run
# ---------------------------------------------------------------------------------------------
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
        kept for ``report.html`` (:func:`example_ids`); ``"all"``: every mixture.
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
    specs = read_mixture_manifest(manifest)[:limit]
    if not specs:
        raise InputError(manifest, "no mixtures in the manifest")
    if models is None and model is not None:
        models = SpeechModels.load(model)
    dev = device if isinstance(device, torch.device) else resolve_device(device)
    separation, mcem, data_cfg = settings_from_overrides(overrides, models.config if models else {})
    out_dir = writable_folder(out_dir)
    ctx = EvalContext(models, dev, separation, mcem, data_cfg, out_dir)
    built = [make_system(n, ctx) for n in names]
    if models is None and any(s.needs_model for s in built):
        raise InputError("--model", "the systems " + ", ".join(s.name for s in built if s.needs_model)
                         + " need a model file")
    if any(s.needs_model for s in built):
        separation.check_model(models)             # before any work, not once per mixture
    out_dir.mkdir(parents=True, exist_ok=True)

    csv_path = out_dir / RESULTS_CSV
    _check_settings(out_dir / "settings.json", {"model": str(model) if model else None,
                                                 "separation": asdict(separation), "mcem": asdict(mcem)})
    previous = read_results(csv_path)
    kept = [r for r in previous if r["status"] == "ok"]
    if len(kept) != len(previous):
        write_results(csv_path, kept, append=False)          # retry skipped / failed pairs
    done = {(r["id"], r["system"]) for r in kept}
    todo = {s.name: [sp for sp in specs if (sp.id, s.name) not in done] for s in built}
    detector = (models.config.get("data", {}).get("detector", "auto") if models else "auto")
    kept = example_ids(specs, examples)
    run = _Run(ctx, Scorer(models, ctx.stft), TrackCache(out_dir / "lips", detector), csv_path,
               set(kept), echo)
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
    summary = summarise(rows)
    comparison = compare(rows, names)
    meta = {"manifest": str(manifest), "model": str(model) if model else None, "device": str(dev),
            "systems": names, "created": time.strftime("%Y-%m-%d %H:%M:%S"),
            "separation": asdict(separation), "mcem": asdict(mcem), "torch": torch.__version__}
    write_summary(out_dir / "summary.json", {**summary, "like_for_like": comparison}, meta)
    (out_dir / "results.md").write_text(results_markdown(summary, meta, comparison))
    plot_metrics_vs_snr(rows, out_dir / "metrics_vs_snr.png", comparison=comparison)
    by_id = {sp.id: sp for sp in specs}
    items = run.report_items(names, [by_id[i] for i in kept], rows)
    write_evaluation_report(out_dir / REPORT_HTML, comparison, meta, items, len(specs))
    summary["like_for_like"] = comparison
    return summary


def write_evaluation_report(path: Path, comparison: dict, meta: dict, items: list, total: int) -> Path:
    """``report.html``: the like-for-like summary, then the kept mixtures (players, figures,
    metrics), with filters by number of talkers, SNR and noise."""
    from ..html_report import esc, write_report

    intro = ("<p class=\"note\">" + "<br>".join(
        f"{esc(k)}: <code>{esc(meta[k])}</code>" for k in ("manifest", "model", "created") if meta.get(k))
        + f"<br>{len(items)} of {total} mixtures kept with audio and figures (<code>--examples</code> "
        "per condition; <code>--examples all</code> keeps every one). Audio: 16-bit WAV in "
        "<code>examples/</code>, loaded when played; spectrograms share one dB scale per mixture."
        " Metrics in the summary tables compare the systems on the same mixtures.</p>")
    if (path.parent / "metrics_vs_snr.png").exists():
        intro += '<p><img alt="metrics against SNR" src="metrics_vs_snr.png"></p>'
    return write_report(path, "Evaluation: listening report", items, intro=intro,
                        summary=comparison_html(comparison),
                        filters={"talkers": "talkers", "snr": "SNR", "noise": "noise"})


def _check_settings(path: Path, current: dict) -> None:
    """Remember the settings of the first run in ``path``; warn when a resumed run differs
    (its finished rows are kept, so they would mix two settings)."""
    import json
    import warnings

    current = json.loads(json.dumps(current, default=str))
    if path.exists():
        try:
            before = json.loads(path.read_text())
        except ValueError:
            before = None
        if before is not None and before != current:
            changed = [k for k in current if before.get(k) != current[k]]
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
                 example_ids: set, echo=None):
        self.ctx, self.scorer, self.tracks, self.csv_path = ctx, scorer, tracks, csv_path
        self.example_ids, self.echo = example_ids, echo
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
        if item.spec.id in self.example_ids:
            self.save_example(item, system, result)
        return rows

    def item(self, system, spec: MixtureSpec) -> EvalItem:
        rendered = render_mixture(spec, audio_cache=self.audio_cache)
        models = self.ctx.models
        use_video = system.uses_video and models is not None and models.uses_video
        tracks = [source_track(spec, j, self.tracks.get) if use_video else None
                  for j in range(spec.num_sources)]
        return EvalItem(spec, rendered, tracks)

    # ---- examples -----------------------------------------------------------------------------
    def example_dir(self, spec_id: str) -> Path:
        return self.csv_path.parent / "examples" / spec_id

    def save_example(self, item: EvalItem, system: str, result: SystemResult) -> None:
        """Keep the audio (16-bit WAV, for listening) and the switch posterior of a kept
        mixture; the mixture system's estimate is the mixture itself and is not written again."""
        import json
        import warnings

        folder = self.example_dir(item.spec.id)
        sr = item.spec.sample_rate
        files = {"mixture.wav": item.rendered.mixture}
        files.update({f"clean_source{j + 1}.wav": s for j, s in enumerate(item.rendered.sources)})
        if system != "mixture":
            files.update({f"{system}_source{j + 1}.wav": s for j, s in enumerate(result.estimates)})
        scaled = {}
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")          # the gain is recorded instead
            for name, signal in files.items():
                gain = save_audio(folder / name, signal, sr, overwrite=True, subtype="PCM_16")
                if gain != 1.0:
                    scaled[name] = round(20 * math.log10(gain), 2)
        if scaled:
            path = folder / "scaled.json"
            before = json.loads(path.read_text()) if path.exists() else {}
            path.write_text(json.dumps({**before, **scaled}, indent=1))
        if result.posterior is not None:
            np.save(folder / f"{system}_posterior.npy", np.asarray(result.posterior, np.float32))

    def report_items(self, names: list[str], specs: list[MixtureSpec], rows: list[dict]) -> list:
        """Figures and :class:`~pyro_avss.html_report.Item` of each kept mixture."""
        import json

        from ..audio import load_audio
        from ..html_report import Item
        from ..plots import posterior_figure

        cfg = self.ctx.stft
        models = self.ctx.models
        items = []
        for spec in specs:
            folder = self.example_dir(spec.id)
            J = spec.num_sources
            players = [("mixture", folder / "mixture.wav")]
            players += [(f"reference {j + 1} ({spec.sources[j].speaker})", folder / f"clean_source{j + 1}.wav")
                        for j in range(J)]
            panels = [("mixture", "mixture.wav")]
            for j in range(J):
                panels.append((f"reference {j + 1}", f"clean_source{j + 1}.wav"))
                for n in names:
                    if n != "mixture":
                        panels.append((f"{n}, source {j + 1}", f"{n}_source{j + 1}.wav"))
                        players.append((f"{n}, source {j + 1}", folder / f"{n}_source{j + 1}.wav"))
            players = [(label, p) for label, p in players if p.exists()]
            if not players:
                continue
            signals = [(t, load_audio(folder / f, spec.sample_rate)) for t, f in panels
                       if (folder / f).exists()]
            images = []
            if len(signals) > 1:
                plot_example(folder.parent / f"{spec.id}.png", signals, cfg)
                images.append(("spectrograms", folder.parent / f"{spec.id}.png"))
            for n in names:
                post = folder / f"{n}_posterior.npy"
                if post.exists():
                    p = np.load(post)
                    comp = (models.component_names if models is not None
                            and len(models.component_names) == p.shape[-1]
                            else [f"component {k + 1}" for k in range(p.shape[-1])])
                    posterior_figure(folder / f"{n}_posterior.png", p, comp, cfg.frame_rate,
                                     title=f"{n}: switch posterior")
                    images.append((f"{n} switch posterior", folder / f"{n}_posterior.png"))
            scaled = folder / "scaled.json"
            note = (f"{spec.condition}, {spec.snr_db:g} dB SNR, noise {spec.noise.name}, "
                    f"{spec.num_samples / spec.sample_rate:.2f} s.")
            if scaled.exists():
                note += " Scaled down to avoid clipping (dB): " + ", ".join(
                    f"{k} {v}" for k, v in json.loads(scaled.read_text()).items()) + "."
            mine = [r for r in rows if r["id"] == spec.id]
            items.append(Item(spec.id, players, images, [mixture_table(mine, names)] if mine else [],
                              {"talkers": J, "snr": f"{spec.snr_db:g} dB", "noise": spec.noise.name},
                              note))
        return items


__all__ = ["evaluate", "settings_from_overrides", "TrackCache", "Scorer", "speech_frames",
           "true_speaker_mass", "best_order", "status_rows", "example_ids",
           "write_evaluation_report", "RESULTS_CSV", "REPORT_HTML"]
