"""Speed and memory benchmark of :func:`~pyro_avss.inference.separation.separate_recordings`.

Measured quantities, per configuration (utterance length L, components K, sources J, number of
recordings B separated in one call, device):

* ``wall_s``: wall-clock time of one ``separate_recordings`` call on B recordings (after a short
  warm-up call in the same process, so one-time start-up costs are excluded);
* ``rtf = wall_s / (B · L)``: real-time factor (processing time per second of audio);
* ``peak_rss_mb``: peak resident memory of the process (``resource.getrusage(RUSAGE_SELF)
  .ru_maxrss``) at the end of the run. Peak RSS never decreases within a process, so **each
  configuration runs in its own subprocess** (``python -m pyro_avss.recipes.bench worker
  JSON``); ``rss_before_mb`` is the resident memory just before the measured call (imports,
  model, inputs and the warm-up), so ``peak_rss_mb - rss_before_mb`` is what separation added;
* ``cuda_peak_mb``: ``torch.cuda.max_memory_allocated`` during the call (CUDA only).

Models have random weights of the real size (F = 513, D = 16, H = 128, lip embedding 24 with a
projection fitted on random mouth images, unless audio-only). The cost of a step does not depend
on the weights, but how many components survive pruning (``separate.prune_threshold``, after
``separate.prune_after`` steps) does: random decoders are about equally poor, so more of them
survive than of a trained bank, and how many is chance (K = 4: 2 and 2 of 4 with J = 1 and 2
under the 50-step schedule, 1 and 3 under the 40-step one, which moved the RTF by a third
either way). ``kept`` is that number (the largest over the B recordings): compare times at equal
``kept``, or with ``--set separate.prune_threshold=0``. The number of SVI steps is fixed (``tol =
0``, all ``separate.steps`` run) unless overridden, so times are comparable between configurations
and are an upper bound for real models (which may stop earlier). Audio: GRID sentences of s1/s4
concatenated to length, plus real noise looped to length, mixed at 0 dB, when the shared data
folder exists; otherwise synthetic harmonic "voices" and white noise (the ``audio`` column).

The default grid varies one factor at a time around L = 3 s, K = 2, J = 1, B = 1:
L ∈ {1, 3, 10, 30} s, K ∈ {1, 2, 4, 8}, J ∈ {1, 2, 3}, B ∈ {1, 4, 8}; ``--quick`` uses a small
grid, and ``--point components=4,sources=2`` (repeatable) measures just the configurations named
(e.g. K = 4 with J = 2, which the one-factor grid never visits). ``--long-minutes M`` adds one
J = 1 recording of M minutes (default chunking) to check peak memory on long inputs.
"""

from __future__ import annotations

import csv
import json
import math
import os
import resource
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np

BASE = {"length_s": 3.0, "components": 2, "sources": 1, "batch": 1}
FULL_GRID = {"length_s": (1.0, 3.0, 10.0, 30.0), "components": (1, 2, 4, 8), "sources": (1, 2, 3),
             "batch": (1, 4, 8)}
QUICK_GRID = {"length_s": (1.0, 3.0), "components": (1, 2), "sources": (1, 2), "batch": (1, 2)}
BANK_COMPONENTS, BANK_SOURCES = (2, 11, 50), (1, 2)
"""``--banks``: audio-only banks of many speakers, every K with every J (3-s clips, B = 1)."""
COLUMNS = ("kind", "device", "length_s", "components", "sources", "batch", "steps", "kept", "wall_s",
           "audio_s", "rtf", "peak_rss_mb", "rss_before_mb", "cuda_peak_mb", "threads", "audio",
           "error")
DEFAULT_DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data"


@dataclass
class BenchConfig:
    """One measured configuration (what a worker subprocess receives as JSON)."""

    length_s: float
    components: int
    sources: int
    batch: int
    device: str = "cpu"
    kind: str = "grid"
    audio_only: bool = False
    threads: int | None = None
    overrides: tuple = ()
    data: str = str(DEFAULT_DATA)
    seed: int = 0


def parse_point(text: str) -> dict:
    """``"components=4,sources=2"`` -> ``{**BASE, "components": 4, "sources": 2}``: one
    configuration of ``cli.py bench --point``, the factors not named at their :data:`BASE`
    value. An unknown factor or a value that is not a positive number is refused."""
    from pyro_avss.errors import InputError

    point = dict(BASE)
    for item in filter(None, (part.strip() for part in text.split(","))):
        name, sep, value = item.partition("=")
        name = name.strip()
        if not sep or name not in BASE:
            raise InputError("--point", f"{item!r}: expected FACTOR=VALUE with FACTOR one of {', '.join(BASE)}")
        kind = type(BASE[name])
        try:
            number = kind(value)
        except ValueError:
            number = None
        if number is None or not number > 0:
            raise InputError("--point", f"{item!r}: {name} must be a positive {kind.__name__}")
        point[name] = number
    return point


def grid_configs(grid: dict, devices: list[str], **common) -> list[BenchConfig]:
    """One-factor-at-a-time sweep around :data:`BASE` (the base point appears once)."""
    points = []
    for factor, values in grid.items():
        for v in values:
            p = {**BASE, factor: v}
            if p not in points:
                points.append(p)
    return [BenchConfig(**p, device=d, **common) for d in devices for p in points]


# ---------------------------------------------------------------------------------------------
# inputs of a configuration
# ---------------------------------------------------------------------------------------------
def _loop(x: np.ndarray, n: int, offset: int = 0) -> np.ndarray:
    return x[(offset + np.arange(n)) % len(x)]


def _grid_signals(data: Path, n: int, sources: int, sr: int):
    """``(sources (J, n), noise (n,))`` from GRID clips and a noise recording, or None."""
    from pyro_avss.audio import load_audio

    folders = [data / "grid" / s / "audio" for s in ("s1", "s4", "s1")]
    noise_file = data / "noise" / "running_tap.flac"
    if not noise_file.exists() or not all(f.is_dir() for f in folders):
        return None
    out = []
    for j in range(sources):
        files = sorted(folders[j].glob("*.flac"))
        files = files[::2] if j == 0 else files[1::2] if j == 2 else files
        pieces, total = [], 0
        for f in files:
            pieces.append(load_audio(f, sr))
            total += len(pieces[-1])
            if total >= n:
                break
        out.append(_loop(np.concatenate(pieces), n))
    return np.stack(out), _loop(load_audio(noise_file, sr), n)


def _synthetic_signals(n: int, sources: int, sr: int, rng: np.random.Generator):
    t = np.arange(n) / sr
    voices = []
    for j in range(sources):
        f0 = 110.0 * (1.4 ** j) * (1 + 0.05 * np.sin(2 * np.pi * 0.5 * t))
        phase = 2 * np.pi * np.cumsum(f0) / sr
        env = 0.5 + 0.5 * np.sin(2 * np.pi * (2.5 + j) * t)
        voices.append(sum(np.sin(h * phase) / h for h in range(1, 10)) * env)
    return np.stack(voices).astype(np.float32), rng.normal(size=n).astype(np.float32)


def make_mixtures(cfg: BenchConfig, sr: int = 16000) -> tuple[list[np.ndarray], str]:
    """B mixtures of length L with J sources and noise at 0 dB; returns ``(mixtures, audio)``."""
    n = int(round(cfg.length_s * sr))
    rng = np.random.default_rng(cfg.seed)
    real = _grid_signals(Path(cfg.data), n, cfg.sources, sr) if Path(cfg.data).is_dir() else None
    sources, noise = real if real is not None else _synthetic_signals(n, cfg.sources, sr, rng)
    energy = lambda x: float(np.sum(np.square(x, dtype=np.float64))) + 1e-12  # noqa: E731
    sources = [s * math.sqrt(energy(sources[0]) / energy(s)) for s in sources]
    noise = noise * math.sqrt(energy(sources[0]) / energy(noise))
    mix = np.sum(sources, 0) + noise
    mix = (0.5 * mix / np.abs(mix).max()).astype(np.float32)
    shift = max(1, n // max(cfg.batch, 1))
    return [np.roll(mix, b * shift) for b in range(cfg.batch)], "grid" if real is not None else "synthetic"


def make_models(cfg: BenchConfig):
    """Random-weight models of the real size with K components (AV unless ``audio_only``)."""
    import torch

    from pyro_avss.audio import StftConfig
    from pyro_avss.checkpoint import SpeechModels
    from pyro_avss.nets.lips import LipProjection
    from pyro_avss.nets.vae import DecoderBank, SpeechEncoder

    torch.manual_seed(cfg.seed)
    stft_cfg = StftConfig()
    F, D, H = stft_cfg.num_bins, 16, 128
    lip_dim = 0 if cfg.audio_only else 24
    lips = LipProjection(24, 32)
    if not cfg.audio_only:
        gen = torch.Generator().manual_seed(cfg.seed)
        rois = torch.randint(0, 256, (200, 64, 64), generator=gen, dtype=torch.uint8)
        lips.fit([(rois, torch.ones(200, dtype=torch.bool))])
    names = [f"speaker{k}" for k in range(cfg.components)]
    decoders = DecoderBank(cfg.components, F, D, H, lip_dim, names=names)
    return SpeechModels(SpeechEncoder(F, D, H, lip_dim), decoders, lips, stft_cfg)


def make_tracks(cfg: BenchConfig, seconds: float):
    """One synthetic 25-fps lip track per source (random mouth images), or None (audio only)."""
    from pyro_avss.video.track import LipTrack

    if cfg.audio_only:
        return [None] * cfg.sources
    rng = np.random.default_rng(cfg.seed)
    n = int(math.ceil(seconds * 25)) + 1
    tracks = []
    for _ in range(cfg.sources):
        tracks.append(LipTrack(rois=rng.integers(0, 256, (n, 64, 64), dtype=np.uint8),
                               landmarks=np.zeros((n, 0, 2), np.float32),
                               timestamps=np.arange(n) / 25.0, fps=25.0,
                               face_found=np.ones(n, bool), detector="synthetic"))
    return tracks


# ---------------------------------------------------------------------------------------------
# one configuration (inside the worker subprocess)
# ---------------------------------------------------------------------------------------------
def _rss_mb() -> float:
    """Current resident memory (MB) from /proc, or NaN where unavailable."""
    try:
        with open("/proc/self/statm") as fh:
            return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2 ** 20
    except (OSError, ValueError, IndexError):
        return math.nan


def _peak_rss_mb() -> float:
    kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return kb / 1024 if sys.platform != "darwin" else kb / 2 ** 20   # macOS reports bytes


def measure(cfg: BenchConfig) -> dict:
    """Run one configuration in this process and return its CSV row."""
    import torch

    from pyro_avss.config import load_settings
    from pyro_avss.inference.separation import separate_recordings

    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    device = torch.device(cfg.device)
    models = make_models(cfg).to(device)
    settings = load_settings(None, ["separate.tol=0.0", *cfg.overrides]).separate
    mixtures, audio = make_mixtures(cfg, models.stft.sample_rate)
    jobs = [(m, make_tracks(cfg, cfg.length_s)) for m in mixtures]
    warm = [(mixtures[0][:models.stft.sample_rate], make_tracks(cfg, 1.0))]
    separate_recordings(models, warm, replace(settings, steps=3), device)
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats(device)
    before = _rss_mb()
    start = time.perf_counter()
    results = separate_recordings(models, jobs, settings, device)
    if device.type == "cuda":
        torch.cuda.synchronize()
    wall = time.perf_counter() - start
    audio_s = cfg.batch * cfg.length_s
    return {"kind": cfg.kind, "device": cfg.device, "length_s": cfg.length_s,
            "components": cfg.components, "sources": cfg.sources, "batch": cfg.batch,
            "steps": max(r.steps for r in results), "kept": max(r.components_run for r in results),
            "wall_s": wall, "audio_s": audio_s,
            "rtf": wall / audio_s, "peak_rss_mb": _peak_rss_mb(), "rss_before_mb": before,
            "cuda_peak_mb": (torch.cuda.max_memory_allocated(device) / 2 ** 20
                             if device.type == "cuda" else math.nan),
            "threads": torch.get_num_threads(), "audio": audio, "error": ""}


def run_isolated(cfg: BenchConfig, timeout_s: float | None = None) -> dict:
    """:func:`measure` in a fresh Python process (so its peak RSS is its own)."""
    cmd = [sys.executable, "-m", "pyro_avss.recipes.bench", "worker", json.dumps(asdict(cfg))]
    row = {k: getattr(cfg, k) for k in ("kind", "device", "length_s", "components", "sources", "batch")}
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s)
    except subprocess.TimeoutExpired:
        return {**row, "error": f"timed out after {timeout_s} s"}
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    if proc.returncode != 0 or not lines:
        tail = (proc.stderr.strip().splitlines() or [f"exit status {proc.returncode}"])[-1]
        return {**row, "error": f"worker failed (exit {proc.returncode}): {tail}"}
    return json.loads(lines[-1])


# ---------------------------------------------------------------------------------------------
# the whole benchmark
# ---------------------------------------------------------------------------------------------
def resolve_devices(text: str) -> list[str]:
    """``auto`` -> cpu (+ cuda when available); else a comma-separated list."""
    import torch

    if text == "auto":
        return ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    devices = [d.strip() for d in text.split(",") if d.strip()]
    if any(d.startswith("cuda") for d in devices) and not torch.cuda.is_available():
        from pyro_avss.errors import InputError

        raise InputError("--device", "CUDA was requested but no GPU is available")
    return devices


def write_rows(path: Path, rows: list[dict]) -> None:
    with open(path, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=COLUMNS, restval="", extrasaction="ignore")
        writer.writeheader()
        for row in rows:
            writer.writerow({k: ("" if isinstance(v, float) and math.isnan(v) else
                                 f"{v:.4g}" if isinstance(v, float) else v) for k, v in row.items()})


def plot(rows: list[dict], path: Path) -> None:
    """RTF (top) and peak RSS (bottom) against each factor, one line per device, through the
    configurations whose other factors are at :data:`BASE` (the one-factor grid's lines); no
    figure when no factor has such a line (e.g. ``--point`` configurations off the base)."""
    from pyro_avss.plots import plt

    ok = [r for r in rows if not r.get("error") and r["kind"] == "grid"]
    lines = {}                                           # factor -> {device: [(x, rtf, rss)]}
    for factor in FULL_GRID:
        others = [f for f in FULL_GRID if f != factor]
        for device in dict.fromkeys(r["device"] for r in ok):
            pts = sorted((r[factor], r["rtf"], r["peak_rss_mb"]) for r in ok if r["device"] == device
                         and all(r[o] == BASE[o] for o in others))
            if len(pts) > 1:
                lines.setdefault(factor, {})[device] = pts
    if not lines:
        return
    fig, axes = plt.subplots(2, len(lines), figsize=(3.6 * len(lines), 6), squeeze=False)
    for c, (factor, per_device) in enumerate(lines.items()):
        for device, pts in per_device.items():
            x, rtf, mem = zip(*pts)
            axes[0, c].plot(x, rtf, marker="o", label=device)
            axes[1, c].plot(x, mem, marker="o", label=device)
        axes[0, c].set_title(f"vary {factor}", fontsize=9)
        axes[1, c].set_xlabel(factor)
        for r in (0, 1):
            axes[r, c].grid(alpha=0.3)
    axes[0, 0].set_ylabel("real-time factor")
    axes[1, 0].set_ylabel("peak RSS (MB)")
    axes[0, 0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def run_bench(out_dir: str | Path, *, quick: bool = False, devices: str = "auto",
              long_minutes: float | None = None, long_components: int = 2,
              threads: int | None = None, overrides=(), audio_only: bool = False,
              grid: dict | None = None, data: str | Path | None = None, banks: bool = False,
              points: list[dict] | None = None, progress: bool = True,
              timeout_s: float | None = None) -> list[dict]:
    """Measure every configuration (each in its own subprocess); write ``bench.csv`` and
    ``bench.png`` (:func:`plot`) into ``out_dir``. ``grid`` overrides the (quick or full) grid, which varies
    one factor at a time; ``points`` (from :func:`parse_point`) measures exactly those
    configurations instead, e.g. K = 4 with J = 2, which no one-factor grid contains; ``banks``
    measures the audio-only banks of many speakers instead (:data:`BANK_COMPONENTS` x
    :data:`BANK_SOURCES`)."""
    from tqdm import tqdm

    if banks and points:
        from pyro_avss.errors import InputError

        raise InputError("--point", "measures chosen configurations of the grid; --banks measures the "
                                    "banks instead: give one of them")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    common = {"threads": threads, "overrides": tuple(overrides), "audio_only": audio_only,
              "data": str(data if data is not None else DEFAULT_DATA)}
    dev_list = resolve_devices(devices)
    if points:
        configs = [BenchConfig(**p, device=d, **common) for d in dev_list for p in points]
    else:
        configs = grid_configs(grid or (QUICK_GRID if quick else FULL_GRID), dev_list, **common)
    if banks:
        configs = [BenchConfig(BASE["length_s"], K, J, 1, device=d, kind="bank", **{**common, "audio_only": True})
                   for d in dev_list for K in BANK_COMPONENTS for J in BANK_SOURCES]
    if long_minutes:
        configs += [BenchConfig(60.0 * long_minutes, long_components, 1, 1, device=d, kind="long",
                                **common) for d in dev_list]
    rows = []
    for cfg in tqdm(configs, desc="bench", disable=not progress):
        rows.append(run_isolated(cfg, timeout_s))
        write_rows(out_dir / "bench.csv", rows)
    plot(rows, out_dir / "bench.png")
    return rows


def _worker(argv: list[str]) -> None:
    data = json.loads(argv[0])
    data["overrides"] = tuple(data.get("overrides", ()))
    print(json.dumps(measure(BenchConfig(**data))), flush=True)


__all__ = ["BenchConfig", "grid_configs", "parse_point", "measure", "run_isolated", "run_bench", "make_mixtures",
           "make_models", "BASE", "FULL_GRID", "QUICK_GRID", "BANK_COMPONENTS", "BANK_SOURCES",
           "COLUMNS"]


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "worker":
        _worker(sys.argv[2:])
    else:
        sys.exit("usage: python -m pyro_avss.recipes.bench worker JSON  (use `cli.py bench`)")
