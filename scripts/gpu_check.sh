#!/usr/bin/env bash
# The GPU checks of issue 16, for a machine with a CUDA GPU; run from the repository root in an
# environment with the package installed (pip install -e ".[test]"):
#
#     scripts/gpu_check.sh [OUT]            # OUT defaults to gpu_check/; about 5 minutes
#
# 1. the device tests on the real GPU (pytest -m cuda: fit, resume, separate audio-visual and
#    audio-only with one and two talkers, MCEM, evaluate with every model system, bench, the
#    separate command), which the ordinary suite runs on a pretend GPU (tests/fake_cuda.py);
# 2. cli.py bench --quick on cpu and cuda: real-time factor per configuration;
# 3. cli.py demo --small --device cuda: prepare, fit (universal, then speaker decoders),
#    separate and evaluate end to end on the GPU, on the demo's synthetic corpus;
# 4. a short fit of the universal audio-visual model on that corpus, on cuda then on cpu:
#    training throughput (frames/s) on each.
# It ends with a summary (OUT/summary.txt): tests passed, median RTF per device, frames/s.
set -euo pipefail
OUT=${1:-gpu_check}
PY=${PYTHON:-python}
mkdir -p "$OUT"
$PY -c "import torch, sys; ok = torch.cuda.is_available(); print('GPU:', torch.cuda.get_device_name(0) if ok else 'none'); sys.exit(0 if ok else 3)"

$PY -m pytest -q -m cuda tests/test_devices.py -p no:cacheprovider 2>&1 | tee "$OUT/cuda_tests.txt"
$PY cli.py bench --out "$OUT/bench" --quick --device cpu,cuda --threads 4 --quiet
$PY cli.py demo --small --device cuda --workdir "$OUT/demo" --force --quiet > "$OUT/demo.txt"
for dev in cuda cpu; do
  $PY cli.py fit --out "$OUT/fit_$dev" --device "$dev" --threads 4 \
      --set "data.corpora=[$OUT/demo/corpus/manifest.csv]" --set "data.cache=$OUT/demo/cache" \
      --set data.detector=roi --set lips.front_end=pca --set model.prior=standard \
      --set train.epochs=3 --set train.warmup_epochs=1 --set train.patience=10 > /dev/null
done

$PY - "$OUT" <<'PYEOF' | tee "$OUT/summary.txt"
import csv, statistics, sys
from pathlib import Path
out = Path(sys.argv[1])
print("cuda tests:", (out / "cuda_tests.txt").read_text().strip().splitlines()[-1])
rows = list(csv.DictReader(open(out / "bench" / "bench.csv")))
for dev in ("cpu", "cuda"):
    ok = [r for r in rows if r["device"] == dev and not r["error"]]
    if ok:
        print(f"bench {dev}: median RTF {statistics.median(float(r['rtf']) for r in ok):.3f} over "
              f"{len(ok)} configurations, failed {sum(1 for r in rows if r['device'] == dev and r['error'])}")
for dev in ("cuda", "cpu"):
    log = list(csv.DictReader(open(out / f"fit_{dev}" / "log.csv")))
    print(f"fit {dev}: {statistics.median(float(r['frames_per_s']) for r in log):.0f} frames/s "
          f"(median over {len(log)} epochs), final dev loss {float(log[-1]['dev_loss']):.3f}")
print("demo:", (out / "demo.txt").read_text().strip().splitlines()[-8:][0] if (out / "demo.txt").exists() else "")
PYEOF
