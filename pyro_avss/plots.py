"""PNG figures: learning curves and separation overviews (matplotlib, no display needed).

The figures here are drawn on :class:`matplotlib.figure.Figure` objects directly: no pyplot,
whose import and figure manager cost a few tenths of a second more than the separation figure
of a short clip takes to draw. ``plt`` (pyplot on the Agg backend) is still offered, imported
on first use, to the report and benchmark figures.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib
import numpy as np
from matplotlib.figure import Figure

matplotlib.use("Agg")


def __getattr__(name: str):
    if name == "plt":
        import matplotlib.pyplot as plt

        return plt
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def learning_curve(log: list[dict], path: str | Path) -> None:
    """Train and dev loss (negative ELBO per frame) against the epoch."""
    epochs = [r["epoch"] for r in log]
    fig = Figure(figsize=(6, 3.5))
    ax = fig.subplots()
    ax.plot(epochs, [r["train_loss"] for r in log], label="train")
    dev = [r["dev_loss"] for r in log]
    if np.isfinite(dev).any():
        ax.plot(epochs, dev, label="dev")
    ax.set_xlabel("epoch")
    ax.set_ylabel("negative ELBO per frame")
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def _db(power: np.ndarray) -> np.ndarray:
    return 10 * np.log10(np.maximum(power, 1e-10))


def separation_figure(path: str | Path, mixture_power: np.ndarray, source_powers: list[np.ndarray],
                      posterior: np.ndarray, component_names: list[str], frame_rate: float,
                      sample_rate: int) -> None:
    """Mixture spectrogram, each estimate's spectrogram and each source's switch posterior.

    :param mixture_power: ``(T, F)``; ``source_powers``: J arrays ``(T, F)``;
    :param posterior: ``(T, J, K)`` switch posterior.

    The margins are fixed (in inches, so they suit any J) instead of ``tight_layout``, which
    measures every label by drawing the figure once more: a quarter of the time of a short
    clip's figure.
    """
    J = len(source_powers)
    height = 2.0 * (1 + 2 * J)
    fig = Figure(figsize=(9, height))
    fig.subplots_adjust(left=0.8 / 9, right=1 - 0.15 / 9, bottom=0.5 / height, top=1 - 0.3 / height,
                        hspace=0.35)
    axes = fig.subplots(1 + 2 * J, 1, sharex=True, gridspec_kw={"height_ratios": [3] + [3, 1.4] * J})
    T, F = mixture_power.shape
    extent = (0, T / frame_rate, 0, sample_rate / 2000)
    vmax = _db(mixture_power).max()
    kw = dict(origin="lower", aspect="auto", extent=extent, vmin=vmax - 80, vmax=vmax, cmap="magma")
    axes[0].imshow(_db(mixture_power).T, **kw)
    axes[0].set_title("mixture")
    for j in range(J):
        axes[1 + 2 * j].imshow(_db(source_powers[j]).T, **kw)
        axes[1 + 2 * j].set_title(f"source {j + 1}")
        axes[1 + 2 * j].set_ylabel("kHz")
        ax = axes[2 + 2 * j]
        t = np.arange(T) / frame_rate
        ax.stackplot(t, posterior[:, j, :].T, labels=component_names)
        ax.set_ylim(0, 1)
        ax.set_ylabel("p(m|x)")
        ax.legend(loc="upper right", fontsize=6, ncol=max(1, len(component_names)))
    axes[0].set_ylabel("kHz")
    axes[-1].set_xlabel("time (s)")
    fig.savefig(path, dpi=90)
