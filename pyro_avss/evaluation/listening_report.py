"""The listening report of ``evaluate`` (``report.html``): which mixtures are kept as examples,
their audio (16-bit WAVs in ``examples/<id>/``), switch posteriors and figures, and the page."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from ..audio import save_audio
from ..data.mixtures import MixtureSpec
from .report import comparison_html, mixture_table, plot_example
from .system_interface import EvalItem, SystemResult

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


class Examples:
    """The kept mixtures of one evaluation (``ids``) under ``out_dir/examples``: their audio and
    switch posteriors as each system is scored (:meth:`keep`), then their figures and report
    items (:meth:`report_items`)."""

    def __init__(self, out_dir: Path, ids: set, ctx):
        self.out_dir, self.ids, self.ctx = Path(out_dir), ids, ctx

    def folder(self, spec_id: str) -> Path:
        return self.out_dir / "examples" / spec_id

    def keep(self, item: EvalItem, system: str, result: SystemResult) -> None:
        """Keep the audio (16-bit WAV, for listening) and the switch posterior of a kept
        mixture; the mixture system's estimate is the mixture itself and is not written again."""
        import json
        import warnings

        folder = self.folder(item.spec.id)
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
            folder = self.folder(spec.id)
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
            shown = [(t, folder / f) for t, f in panels if (folder / f).exists()]
            images = []
            if len(shown) > 1:
                png = folder.parent / f"{spec.id}.png"
                if not up_to_date(png, [path for _, path in shown]):
                    plot_example(png, [(t, load_audio(path, spec.sample_rate)) for t, path in shown], cfg)
                images.append(("spectrograms", png))
            for n in names:
                post, png = folder / f"{n}_posterior.npy", folder / f"{n}_posterior.png"
                if post.exists():
                    if not up_to_date(png, [post]):
                        p = np.load(post)
                        comp = (models.component_names if models is not None
                                and len(models.component_names) == p.shape[-1]
                                else [f"component {k + 1}" for k in range(p.shape[-1])])
                        posterior_figure(png, p, comp, cfg.frame_rate, title=f"{n}: switch posterior")
                    images.append((f"{n} switch posterior", png))
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


def up_to_date(figure: Path, inputs: list[Path]) -> bool:
    """Whether ``figure`` exists and was drawn after every file of ``inputs`` was last written:
    a resumed evaluation draws again only the figures whose audio or posterior changed."""
    return figure.exists() and all(figure.stat().st_mtime >= p.stat().st_mtime for p in inputs)


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


__all__ = ["REPORT_HTML", "example_ids", "Examples", "write_evaluation_report"]
