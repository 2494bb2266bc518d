"""The README's main command, `cli.py demo`, in its reduced size."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_demo_runs_end_to_end(tmp_path):
    work = tmp_path / "demo"
    res = subprocess.run([sys.executable, str(ROOT / "cli.py"), "demo", "--small", "--quiet",
                          "--workdir", str(work)], capture_output=True, text=True, timeout=900)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]
    assert "[6/6] evaluate" in res.stdout and "| switching |" in res.stdout
    for path in ("corpus/README.txt", "speakers/model.pt", "universal/learning_curve.png",
                 "separated/source1.wav", "separated/source2.wav", "separated/noise.wav",
                 "separated/switch_posterior.csv", "separated/separation.png",
                 "evaluation/results.csv", "evaluation/summary.json", "evaluation/results.md"):
        assert (work / path).exists(), path
    # a second run refuses to overwrite the folder
    again = subprocess.run([sys.executable, str(ROOT / "cli.py"), "demo", "--small", "--quiet",
                            "--workdir", str(work)], capture_output=True, text=True, timeout=120)
    assert again.returncode == 2 and "not empty" in again.stderr
