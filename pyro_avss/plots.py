"""PNG figures: learning curves, separation overviews, spectrograms, switch posteriors and
metric curves (matplotlib, no display needed).

The figures here are drawn on :class:`matplotlib.figure.Figure` objects directly: no pyplot,
whose import and figure manager cost a few tenths of a second more than the separation figure
of a short clip takes to draw. ``plt`` (pyplot on the Agg backend) is still offered, imported
on first use, to the benchmark figures. Every function returns the :class:`Figure` it saved,
so that callers and tests can read its labels.

Time axes follow the recording: a figure is :func:`time_width` inches wide (2 in per second
of audio between 6 and 16 in) and its ticks are :func:`time_step` apart (about one per inch);
longer recordings are pooled to at most one column per pixel (``separation_outputs._pool``).
"""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib
import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import MultipleLocator

matplotlib.use("Agg")

MIN_WIDTH, MAX_WIDTH, INCHES_PER_SECOND = 6.0, 16.0, 2.0
STEPS = (0.1, 0.2, 0.25, 0.5, 1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600)
MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*", "<", ">", "h", "p")
LINE_STYLES = ("-", "--", "-.", ":")
DB_RANGE = 80.0            # spectrograms show the loudest bin's level down to this many dB below


def __getattr__(name: str):
    if name == "plt":
        import matplotlib.pyplot as plt

        return plt
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


# ---------------------------------------------------------------------------------------------
# time axes
# ---------------------------------------------------------------------------------------------
def time_width(seconds: float) -> float:
    """Figure width (in) for a time axis of ``seconds``: proportional, capped."""
    return float(min(MAX_WIDTH, max(MIN_WIDTH, 1.5 + INCHES_PER_SECOND * seconds)))


def time_step(seconds: float, width: float) -> float:
    """Tick spacing (s): the first of :data:`STEPS` giving at most one tick per 0.8 in."""
    want = seconds / max(1.0, width / 0.8)
    return next((s for s in STEPS if s >= want), STEPS[-1] * math.ceil(want / STEPS[-1]))


def _time_axis(ax, seconds: float, width: float) -> None:
    ax.xaxis.set_major_locator(MultipleLocator(time_step(seconds, width)))
    ax.set_xlim(0, seconds)


def _pool_factor(frames: int, width: float, dpi: float) -> int:
    """Frames pooled into one column so that the plot has at most one column per pixel."""
    return max(1, -(-frames // int(width * dpi)))


def _pool(x: np.ndarray, factor: int) -> np.ndarray:
    from .inference.separation_outputs import _pool as pool

    return pool(x, factor)


def _db(power: np.ndarray) -> np.ndarray:
    return 10 * np.log10(np.maximum(power, 1e-10))


def _colorbar(fig: Figure, image, axes, width: float) -> None:
    """A colour bar (dB) right of ``axes``, as tall as they are together."""
    boxes = [ax.get_position() for ax in axes]
    bottom, top = min(b.y0 for b in boxes), max(b.y1 for b in boxes)
    left = max(b.x1 for b in boxes) + 0.12 / width
    cax = fig.add_axes([left, bottom, 0.12 / width, top - bottom])
    fig.colorbar(image, cax=cax).set_label("power (dB)")


# ---------------------------------------------------------------------------------------------
# training
# ---------------------------------------------------------------------------------------------
def saved_epoch(log: list[dict]) -> int | None:
    """The epoch whose model ``Trainer.run`` kept: the lowest dev loss (train loss without a
    dev set) among epochs trained with β = 1; the first epoch when warm-up never ended."""
    if not log:
        return None
    full = [r for r in log if r.get("beta", 1.0) >= 1.0]
    if not full:
        return int(log[0]["epoch"])
    score = lambda r: r["dev_loss"] if math.isfinite(r["dev_loss"]) else r["train_loss"]  # noqa: E731
    return int(min(full, key=score)["epoch"])


def warmup_end(log: list[dict]) -> int | None:
    """The first epoch trained with β = 1 (None when there was no warm-up or it never ended)."""
    if not log or log[0].get("beta", 1.0) >= 1.0:
        return None
    return next((int(r["epoch"]) for r in log if r.get("beta", 1.0) >= 1.0), None)


def learning_curve(log: list[dict], path: str | Path, saved: int | None = None) -> Figure:
    """Train and dev loss (negative ELBO per frame) against the epoch, the KL warm-up (β < 1)
    shaded and the saved model's epoch marked.

    :param log: rows of ``log.csv`` (``epoch, beta, train_loss, dev_loss``).
    :param saved: the saved model's epoch (``model.info["epoch"]``); default :func:`saved_epoch`.
    """
    epochs = [r["epoch"] for r in log]
    fig = Figure(figsize=(7, 3.6))
    fig.subplots_adjust(left=0.12, right=0.72, bottom=0.15, top=0.95)
    ax = fig.subplots()
    ax.plot(epochs, [r["train_loss"] for r in log], marker="o", ms=3, label="train")
    dev = [r["dev_loss"] for r in log]
    if np.isfinite(dev).any():
        ax.plot(epochs, dev, marker="s", ms=3, ls="--", label="dev")
    end = warmup_end(log)
    if log and log[0].get("beta", 1.0) < 1.0:
        ax.axvspan(epochs[0] - 0.5, (end if end is not None else epochs[-1] + 1) - 0.5,
                   color="0.85", zorder=0, label="KL warm-up (β < 1)")
    if end is not None:
        ax.axvline(end - 0.5, color="0.4", ls=":", lw=1)
    saved = saved_epoch(log) if saved is None else saved
    rows = {r["epoch"]: r for r in log}
    if saved in rows:
        r = rows[saved]
        y = r["dev_loss"] if math.isfinite(r["dev_loss"]) else r["train_loss"]
        ax.plot([saved], [y], marker="*", ms=14, color="tab:red", ls="none",
                label=f"saved model (epoch {saved})")
    ax.set_xlabel("epoch")
    ax.set_ylabel("negative ELBO per frame (nats)")
    ax.legend(loc="upper left", bbox_to_anchor=(1.02, 1.0), fontsize=8)
    ax.grid(alpha=0.3)
    fig.savefig(path, dpi=100)
    return fig


# ---------------------------------------------------------------------------------------------
# spectrograms and posteriors
# ---------------------------------------------------------------------------------------------
def spectrogram_figure(path: str | Path, powers: list[tuple[str, np.ndarray]], frame_rate: float,
                       sample_rate: int, dpi: int = 80) -> Figure:
    """Spectrograms (dB) of ``[(title, power (T, F)), ...]`` stacked, on one colour scale (the
    loudest bin of all down to :data:`DB_RANGE` dB below it) with a colour bar."""
    T = max(p.shape[0] for _, p in powers)
    seconds = T / frame_rate
    width = time_width(seconds)
    factor = _pool_factor(T, width, dpi)
    height = 0.5 + 1.35 * len(powers)
    fig = Figure(figsize=(width, height))
    left, right, bottom, top = 0.7 / width, 1 - 1.1 / width, 0.45 / height, 1 - 0.25 / height
    fig.subplots_adjust(left=left, right=right, bottom=bottom, top=top, hspace=0.45)
    axes = np.atleast_1d(fig.subplots(len(powers), 1, sharex=True))
    vmax = max(_db(p).max() for _, p in powers)
    image = None
    for ax, (title, p) in zip(axes, powers):
        image = ax.imshow(_db(_pool(p, factor)).T, origin="lower", aspect="auto",
                          extent=(0, p.shape[0] / frame_rate, 0, sample_rate / 2000),
                          vmin=vmax - DB_RANGE, vmax=vmax, cmap="magma", interpolation="nearest")
        ax.set_title(title, fontsize=8, loc="left")
        ax.set_ylabel("frequency (kHz)", fontsize=7)
        ax.tick_params(labelsize=7)
    _time_axis(axes[-1], seconds, width)
    axes[-1].set_xlabel("time (s)")
    _colorbar(fig, image, axes, width)
    fig.savefig(path, dpi=dpi)
    return fig


def _posterior_axes(ax, posterior: np.ndarray, names: list[str], frame_rate: float) -> None:
    """Stacked ``posterior`` ``(T, K)`` of one source; components never above 0.1 % are left
    out of the legend (a system switching among a subset of the model's components)."""
    shown = [k for k in range(posterior.shape[1]) if posterior[:, k].max() > 1e-3] or [0]
    T = posterior.shape[0]
    t = np.concatenate([[0.0], (np.arange(T) + 0.5) / frame_rate, [T / frame_rate]])   # edge to edge
    values = posterior[np.r_[0, np.arange(T), T - 1]][:, shown].T
    ax.stackplot(t, values, labels=[names[k] for k in shown],
                 colors=[f"C{k % 10}" for k in shown])         # a component keeps its colour
    ax.set_ylim(0, 1)
    ax.set_ylabel("p(component)", fontsize=7)
    ax.legend(loc="upper left", bbox_to_anchor=(1.005, 1.0), fontsize=7, title="component",
              title_fontsize=7)


def posterior_figure(path: str | Path, posterior: np.ndarray, names: list[str], frame_rate: float,
                     title: str = "", dpi: int = 80) -> Figure:
    """The switch posterior ``(T, J, K)`` over time, one panel per source, components named.
    Long recordings are pooled (the mean over blocks of frames, said in the title)."""
    T, J, _ = posterior.shape
    seconds = T / frame_rate
    width = time_width(seconds) + 1.2
    factor = _pool_factor(T, width, dpi)
    pooled = _pool(posterior, factor)
    height = 0.6 + 1.1 * J
    fig = Figure(figsize=(width, height))
    fig.subplots_adjust(left=0.7 / width, right=1 - 1.9 / width, bottom=0.45 / height,
                        top=1 - 0.3 / height, hspace=0.35)
    axes = np.atleast_1d(fig.subplots(J, 1, sharex=True))
    for j, ax in enumerate(axes):
        _posterior_axes(ax, pooled[:, j, :], names, frame_rate / factor)
        ax.set_title(f"source {j + 1}", fontsize=8, loc="left")
    _time_axis(axes[-1], seconds, width)
    axes[-1].set_xlabel("time (s)")
    note = f" (mean over {factor / frame_rate:.2g}-s blocks)" if factor > 1 else ""
    fig.suptitle(f"{title}{note}", fontsize=9)
    fig.savefig(path, dpi=dpi)
    return fig


def separation_figure(path: str | Path, mixture_power: np.ndarray, source_powers: list[np.ndarray],
                      posterior: np.ndarray, component_names: list[str], frame_rate: float,
                      sample_rate: int) -> Figure:
    """Mixture spectrogram, each estimate's spectrogram (one dB scale, with a colour bar) and
    each source's switch posterior.

    :param mixture_power: ``(T, F)``; ``source_powers``: J arrays ``(T, F)``;
    :param posterior: ``(T, J, K)`` switch posterior.

    The margins are fixed (in inches, so they suit any J) instead of ``tight_layout``, which
    measures every label by drawing the figure once more: a quarter of the time of a short
    clip's figure. The width follows the duration (:func:`time_width`).
    """
    J = len(source_powers)
    T, F = mixture_power.shape
    seconds = T / frame_rate
    width = time_width(seconds) + 1.5
    height = 2.0 * (1 + 2 * J)
    fig = Figure(figsize=(width, height))
    left, right, bottom, top = 0.8 / width, 1 - 2.0 / width, 0.5 / height, 1 - 0.3 / height
    fig.subplots_adjust(left=left, right=right, bottom=bottom, top=top, hspace=0.35)
    axes = fig.subplots(1 + 2 * J, 1, sharex=True, gridspec_kw={"height_ratios": [3] + [3, 1.4] * J})
    extent = (0, seconds, 0, sample_rate / 2000)
    vmax = _db(mixture_power).max()
    kw = dict(origin="lower", aspect="auto", extent=extent, vmin=vmax - DB_RANGE, vmax=vmax,
              cmap="magma")
    image = axes[0].imshow(_db(mixture_power).T, **kw)
    axes[0].set_title("mixture")
    for j in range(J):
        axes[1 + 2 * j].imshow(_db(source_powers[j]).T, **kw)
        axes[1 + 2 * j].set_title(f"source {j + 1}")
        axes[1 + 2 * j].set_ylabel("frequency (kHz)")
        _posterior_axes(axes[2 + 2 * j], posterior[:, j, :], component_names, frame_rate)
    axes[0].set_ylabel("frequency (kHz)")
    _time_axis(axes[-1], seconds, width)
    axes[-1].set_xlabel("time (s)")
    _colorbar(fig, image, [axes[0]], width)
    # zlib level 3 instead of 6: the same pixels, a tenth larger, 30 ms less for a 3-s clip
    fig.savefig(path, dpi=90, pil_kwargs={"compress_level": 3})
    return fig


# ---------------------------------------------------------------------------------------------
# metrics
# ---------------------------------------------------------------------------------------------
def line_style(i: int) -> dict:
    """Colour, marker and line style of the i-th line: distinguishable without colour too."""
    return {"color": f"C{i % 10}", "marker": MARKERS[i % len(MARKERS)],
            "linestyle": LINE_STYLES[i % len(LINE_STYLES)]}


def metric_curves(path: str | Path, panels: list[dict], xlabel: str, dpi: int = 100) -> Figure:
    """A grid of line plots: ``panels`` are dicts ``row`` (int), ``col`` (int), ``title``,
    ``ylabel`` and ``lines`` (``{name: (xs, ys)}``); one legend, outside the axes, on the right.
    A line's style depends on its name's position among all names, so it is the same in every
    panel."""
    rows = 1 + max(p["row"] for p in panels)
    cols = 1 + max(p["col"] for p in panels)
    names = list(dict.fromkeys(n for p in panels for n in p["lines"]))
    width, height = 3.6 * cols + 2.2, 3.0 * rows + 0.3
    fig = Figure(figsize=(width, height))
    fig.subplots_adjust(left=0.75 / width, right=1 - 2.2 / width, bottom=0.55 / height,
                        top=1 - 0.45 / height, wspace=0.35, hspace=0.55)
    axes = np.atleast_2d(fig.subplots(rows, cols, squeeze=False))
    for ax in axes.flat:
        ax.set_visible(False)
    handles = {}
    for p in panels:
        ax = axes[p["row"], p["col"]]
        ax.set_visible(True)
        for name, (xs, ys) in p["lines"].items():
            (line,) = ax.plot(xs, ys, label=name, **line_style(names.index(name)))
            handles.setdefault(name, line)
        ax.set_title(p["title"], fontsize=9)
        ax.set_xlabel(xlabel)
        ax.set_ylabel(p["ylabel"])
        ax.grid(alpha=0.3)
    fig.legend(list(handles.values()), list(handles), loc="upper left",
               bbox_to_anchor=(1 - 2.1 / width, 1 - 0.45 / height), fontsize=8, title="system")
    fig.savefig(path, dpi=dpi)
    return fig
