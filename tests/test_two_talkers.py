"""Two real GRID talkers, each with its video: the separated sources follow the videos.

A small audio-visual model (learned temporal lips, visual prior, s1 and s4 decoders) is trained
on real GRID clips; one real s1 + s4 dev mixture is then separated through ``cli.py separate``
with the videos in both orders. Source j must hold the voice of the person in video j: its
SI-SDR against that talker's clean speech must beat its SI-SDR against the other talker's.
"""

from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from pyro_avss.audio import load_audio
from pyro_avss.evaluation.metrics import si_sdr

from conftest import data_root

ROOT = Path(__file__).resolve().parents[1]


def _manifest(path: Path, root: Path) -> dict:
    """A corpus manifest of GRID s1/s4 clips: 30 + 20 train, 6 + 2 dev (dev holds the test pair)."""
    wanted = {("s1", "train"): 30, ("s4", "train"): 20, ("s1", "dev"): 6, ("s4", "dev"): 2}
    rows, pair = [], {}
    with open(root / "manifests" / "grid.csv", newline="") as f:
        for r in csv.DictReader(f):
            key = (r["speaker"], r["split"])
            if wanted.get(key, 0) > 0:
                wanted[key] -= 1
                rows.append({"id": r["clip_id"], "speaker": r["speaker"], "split": r["split"],
                             "audio": str(root / r["audio"]), "video": str(root / r["video"])})
                if r["split"] == "dev":
                    pair[r["speaker"]] = rows[-1]
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    return pair


@pytest.mark.slow
def test_sources_follow_their_videos_in_both_orders(tmp_path):
    from pyro_avss.config import load_config
    from pyro_avss.data.prepared import prepared_rows
    from pyro_avss.inference.training import fit

    root = data_root()
    pair = _manifest(tmp_path / "clips.csv", root)
    rows = prepared_rows([str(tmp_path / "clips.csv")], str(tmp_path / "cache"), "auto", progress=False)
    common = ["train.patience=50", "lips.front_end=temporal", "model.prior=visual"]
    fit(load_config(None, common + ["train.epochs=25"]), tmp_path / "uni", rows=rows, progress=False)
    fit(load_config(None,
                    common + ["train.mode=speakers", f"train.init={tmp_path / 'uni' / 'model.pt'}",
                              "train.epochs=15", "train.warmup_epochs=0", "train.lr=1e-3"]),
        tmp_path / "spk", rows=rows, progress=False)

    s1, s4 = (load_audio(pair[s]["audio"], 16000) for s in ("s1", "s4"))
    n = min(len(s1), len(s4))
    s1, s4 = s1[:n], s4[:n] * np.sqrt(np.sum(s1[:n] ** 2) / np.sum(s4[:n] ** 2))   # SIR 0 dB
    rng = np.random.default_rng(0)
    mixture = s1 + s4 + 0.01 * np.std(s1) * rng.standard_normal(n)
    peak = 0.9 / np.abs(mixture).max()
    sf.write(tmp_path / "mix.wav", (mixture * peak).astype(np.float32), 16000)
    refs = {"s1": s1, "s4": s4}

    for order in (("s1", "s4"), ("s4", "s1")):
        out = tmp_path / ("out_" + "_".join(order))
        videos = [a for s in order for a in ("--video", pair[s]["video"])]
        done = subprocess.run([sys.executable, str(ROOT / "cli.py"), "separate", "--model",
                               str(tmp_path / "spk" / "model.pt"), "--mixture", str(tmp_path / "mix.wav"),
                               *videos, "--out", str(out), "--quiet"],
                              capture_output=True, text=True, cwd=ROOT)
        assert done.returncode == 0, done.stderr
        folder = out                                      # one input: its files go into --out
        for j, speaker in enumerate(order):
            est = sf.read(folder / f"source{j + 1}.wav")[0][:n]
            other = order[1 - j]
            own, wrong = si_sdr(est, refs[speaker]), si_sdr(est, refs[other])
            assert own > wrong, (f"videos {order}: source {j + 1} (video of {speaker}) is closer to "
                                 f"{other} ({wrong:.1f} dB) than to {speaker} ({own:.1f} dB)")
