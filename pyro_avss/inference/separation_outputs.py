"""The outputs of ``cli.py separate`` for one recording, written all at once or not at all.

``source1.wav … sourceJ.wav``, ``noise.wav``, ``switch_posterior.csv``, ``speakers.csv`` (the
component that best explains each source over the whole recording,
:func:`~pyro_avss.models.switch.identified_components`, and its mean posterior) and (unless no
figure is wanted) ``separation.png`` go into a hidden temporary folder that is then renamed
into place (:func:`write_atomically`); :func:`write_separation_report` lists a batch in ``report.html``.
See :mod:`.run_separate` for the batch around them.
"""

from __future__ import annotations

import csv
import os
import shutil
import tempfile
import warnings
from pathlib import Path

import numpy as np
import torch

from ..audio import save_audio, scaled_note, stft
from ..checkpoint import SpeechModels
from ..models.switch import identified_components
from .separation import Separated
from .separation_jobs import SeparationJob

NOTICES = "notices.txt"          # one line per degradation noticed while reading the inputs
SPEAKERS = "speakers.csv"        # per source: the component identified, its mean posterior


def output_names(num_sources: int, plot: bool = True) -> list[str]:
    """The files one separated recording consists of."""
    return ([f"source{j + 1}.wav" for j in range(num_sources)]
            + ["noise.wav", "switch_posterior.csv", SPEAKERS] + (["separation.png"] if plot else []))


def write_outputs(out_dir: Path, result: Separated, mixture: np.ndarray, models: SpeechModels,
                  plot: bool = True, notices: list[str] = ()) -> list[str]:
    """Write the wavs, the posterior and speaker CSVs and the figure of one separated recording
    into the (new, empty) folder ``out_dir``, and ``notices`` (if any) into ``notices.txt``.

    A wav that would clip is scaled down (:func:`~pyro_avss.audio.save_audio`); instead of a
    warning naming ``out_dir`` (a temporary folder when written atomically) this returns one
    note per scaled file, ``"<file name>: scaled by …"``, also added to ``notices.txt``."""
    sr = models.stft.sample_rate
    out_dir.mkdir(parents=True, exist_ok=True)
    signals = {f"source{j + 1}.wav": s for j, s in enumerate(result.sources)}
    signals["noise.wav"] = result.noise
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")              # said by the notes returned instead
        gains = {name: save_audio(out_dir / name, s, sr) for name, s in signals.items()}
    scaled = [f"{name}: {scaled_note(gain)}" for name, gain in gains.items() if gain != 1.0]
    if notices or scaled:
        (out_dir / NOTICES).write_text("".join(f"{n}\n" for n in [*notices, *scaled]))
    names = models.component_names
    times = models.stft.frame_times(result.posterior.shape[0])
    with open(out_dir / "switch_posterior.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["time_s", "source", "component", "probability"])
        T, J, K = result.posterior.shape
        for t in range(T):
            for j in range(J):
                for k in range(K):
                    w.writerow([f"{times[t]:.4f}", j + 1, names[k], f"{result.posterior[t, j, k]:.4f}"])
    write_speakers(out_dir / SPEAKERS, result.posterior, names)
    if plot:
        from ..plots import separation_figure

        cfg = models.stft
        factor = max(1, -(-result.posterior.shape[0] // FIGURE_FRAMES))
        spec = lambda x: display_power(x, cfg, factor)                     # noqa: E731
        separation_figure(out_dir / "separation.png", spec(mixture),
                          [spec(s) for s in result.sources], _pool(result.posterior, factor), names,
                          cfg.frame_rate / factor, sr)
    return scaled


def write_speakers(path: Path, posterior: np.ndarray, names: list[str]) -> None:
    """``speakers.csv``: per source, the component that best explains the whole recording
    (:func:`~pyro_avss.models.switch.identified_components` of its ``(T, J, K)`` posterior over
    every frame) and that component's mean posterior over the frames."""
    per_source = np.asarray(posterior).transpose(1, 0, 2)                                 # (J,T,K)
    chosen = identified_components(per_source)
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["source", "component", "mean_probability"])
        for j, k in enumerate(chosen):
            w.writerow([j + 1, names[int(k)], f"{per_source[j, :, int(k)].mean():.4f}"])


FIGURE_FRAMES = 4000      # time columns of separation.png at most (a long recording is pooled)


def _pool(x: np.ndarray, factor: int) -> np.ndarray:
    """Means over consecutive blocks of ``factor`` rows (the last block may be shorter)."""
    if factor == 1:
        return x
    T = x.shape[0]
    pad = -T % factor
    full = np.concatenate([x, np.repeat(x[-1:], pad, 0)]) if pad else x
    return full.reshape((-1, factor) + x.shape[1:]).mean(1)


def display_power(audio: np.ndarray, cfg, factor: int, seconds: float = 60.0) -> np.ndarray:
    """Power spectrogram ``(T / factor, F)`` for display, pooled over ``factor`` frames and
    computed a minute at a time, so that an hour of audio never holds its full STFT."""
    step = max(1, int(seconds * cfg.frame_rate) // factor * factor) * cfg.hop
    parts = []
    for start in range(0, len(audio), step):
        piece = torch.as_tensor(np.ascontiguousarray(audio[start:start + step]))
        power = stft(piece, cfg).abs().pow(2).numpy()
        parts.append(_pool(power[:step // cfg.hop] if start + step < len(audio) else power, factor))
    return np.concatenate(parts)


REPORT_HTML = "report.html"
PLAYABLE = (".wav", ".flac", ".ogg", ".mp3", ".m4a", ".opus")     # what browsers play


def write_separation_report(out_dir: Path, done: list[tuple[SeparationJob, Path]]) -> Path:
    """``out_dir/report.html`` for the separated recordings ``[(job, output folder)]``: the input
    (linked where it lies, when a browser can play its format), every source, the noise, the
    figure (spectrograms, switch posterior) and the notices."""
    from ..html_report import Item, write_report

    items = []
    for job, target in done:
        players = [("input mixture", job.mixture)] if job.mixture.suffix.lower() in PLAYABLE else []
        sources = sorted(target.glob("source*.wav"), key=lambda p: (len(p.stem), p.stem))
        players += [(f"source {p.stem[6:]}", p) for p in sources]
        players += [("noise", target / "noise.wav")] if (target / "noise.wav").exists() else []
        images = [("separation", target / "separation.png")] if (target / "separation.png").exists() else []
        notices = target / NOTICES
        note = f"input: {job.mixture}"
        if notices.exists():
            note += ". Notices: " + " ".join(notices.read_text().split("\n"))
        items.append(Item(job.name, players, images, [], {"sources": len(sources)}, note))
    return write_report(out_dir / REPORT_HTML, "Separation report", items,
                        filters={"sources": "sources"} if len({i.attrs["sources"] for i in items}) > 1 else None)


def _partial_prefix(target: Path) -> str:
    return f".{target.name}.partial-"


def _existing_outputs(target: Path, own_folder: bool) -> list[Path]:
    """Output files of an earlier run at ``target`` (any ``source*.wav`` counts)."""
    if not target.is_dir():
        return []
    if own_folder:
        return sorted(target.iterdir())
    return sorted(p for p in target.iterdir() if p.name in ("noise.wav", "switch_posterior.csv",
                                                            SPEAKERS, "separation.png", NOTICES)
                  or (p.name.startswith("source") and p.suffix == ".wav"))


def _is_complete(target: Path, num_sources: int, figure: bool = True) -> bool:
    return all((target / n).is_file() for n in output_names(num_sources, figure))


def write_atomically(target: Path, own_folder: bool, write):
    """``write(folder)`` fills a fresh hidden folder next to ``target``, which then replaces it;
    returns what ``write`` returned.

    ``own_folder``: ``target`` holds one recording's outputs only (``OUT/<name>``), so the new
    folder is renamed onto it, the old one being moved aside first; otherwise (``OUT`` itself
    for a single input) the old output files are removed and the new ones moved in one by one.
    An interrupted write leaves only the hidden ``.<name>.partial-*`` folder, which the next run
    removes.
    """
    parent = target.parent if own_folder else target
    parent.mkdir(parents=True, exist_ok=True)
    for stale in parent.glob(_partial_prefix(target) + "*"):
        shutil.rmtree(stale, ignore_errors=True)
    tmp = Path(tempfile.mkdtemp(prefix=_partial_prefix(target), dir=parent))
    try:
        written = write(tmp)
        if own_folder:
            old = None
            if target.exists():
                old = Path(tempfile.mkdtemp(prefix=_partial_prefix(target), dir=parent))
                os.replace(target, old / "old")
            os.replace(tmp, target)
            if old is not None:
                shutil.rmtree(old, ignore_errors=True)
        else:
            for p in _existing_outputs(target, own_folder=False):
                p.unlink()
            for p in sorted(tmp.iterdir()):
                os.replace(p, target / p.name)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return written
