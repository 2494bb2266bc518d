# cost of separate.harmonics_at=30 against none: the bench's 3-s clip (random-weight models of the
# real size), J sources, K components, the two settings alternating in one process
import sys, time, torch
from pyro_avss.recipes.bench import BenchConfig, make_models, make_mixtures, make_tracks
from pyro_avss.config import load_settings
from pyro_avss.inference.separation import separate_recordings
torch.set_num_threads(2)
K, J, reps = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
cfg = BenchConfig(3.0, K, J, 1)
models = make_models(cfg)
mixtures, _ = make_mixtures(cfg, 16000)
jobs = [(m, make_tracks(cfg, 3.0)) for m in mixtures]
settings = {n: load_settings(None, [f"separate.harmonics_at={n}", "separate.tol=0"]).separate for n in (0, 30)}
times = {0: [], 30: []}
separate_recordings(models, jobs, settings[0], "cpu")
for _ in range(reps):
    for n in (0, 30):
        t = time.perf_counter(); separate_recordings(models, jobs, settings[n], "cpu"); times[n].append(time.perf_counter() - t)
best = {n: min(v) for n, v in times.items()}
print(f"K={K} J={J}: none {best[0]:.3f} s, harmonics at 30 {best[30]:.3f} s, ratio {best[30] / best[0]:.3f}; all {times}")
