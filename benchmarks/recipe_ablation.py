"""One fit of the training-recipe ablation in benchmarks/README.md: `xfads fit` with the given `--set`
options (1 torch thread, so that two such fits can share 2 cores), then one line of test scores.

    python benchmarks/recipe_ablation.py NAME DATA [--minutes M] [--max-epochs E] [--set k=v ...]
                                         [--data-set k=v ...]

Prints epochs, best epoch, wall time, the model's valid/test fp-bps, test-retest bps and their oracles
(simulated files), and the fp-bps of a plain leave-one-out PSTH (each trial's forecast bins predicted by
the mean of every other trial, one pseudo-trial at the neuron's mean rate as a floor) on the same
bins. Appends the line to --results (default recipe_ablation.txt). The ablation fixes --max-epochs
(60) so that configurations are compared at the same number of epochs whatever the machine's load.
Simulated files of the README's table: `xfads simulate SYSTEM --neurons 45 --trials 200 --bins 70
--seed S` (vdp 77, lorenz 78; vdp 30 trials: 79; 1000 x 100: 81) and benchmarks/coupled_system.py
(`write_h5(path, seed=5)`).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from xfads_cli.config import load_config  # noqa: E402
from xfads_cli.data.load import load_data  # noqa: E402
from xfads_cli.scoring import bits_per_spike  # noqa: E402


def loo_psth(counts: np.ndarray, trials: np.ndarray) -> np.ndarray:
    """[len(trials), time, neuron]: mean of every other trial, with one pseudo-trial at the mean rate."""
    total, seen = np.nansum(counts, 0), np.sum(np.isfinite(counts), 0)
    mean = np.nanmean(counts.reshape(-1, counts.shape[-1]), 0)
    return np.stack([(total - np.nan_to_num(counts[i]) + mean) / seen for i in trials])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("name")
    ap.add_argument("data")
    ap.add_argument("--minutes", type=float, default=30.0)
    ap.add_argument("--max-epochs", default=None)
    ap.add_argument("--set", action="append", default=[], help="training/model option (repeatable)")
    ap.add_argument("--data-set", action="append", default=[], help="data option (repeatable)")
    ap.add_argument("--threads", default="1")
    ap.add_argument("--runs", default="recipe_runs")
    ap.add_argument("--results", default="recipe_ablation.txt")
    a = ap.parse_args()
    out = Path(a.runs) / a.name
    cmd = [sys.executable, "-m", "xfads_cli", "fit", a.data, "--out", str(out), "--overwrite", "--time-limit",
           str(a.minutes), "--json", "--quiet"]
    if a.max_epochs:
        cmd += ["--max-epochs", a.max_epochs]
    for s in a.set + a.data_set:
        cmd += ["--set", s]
    env = dict(os.environ, OMP_NUM_THREADS=a.threads, MKL_NUM_THREADS=a.threads)
    t0 = time.time()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if proc.returncode:
        sys.exit(f"{a.name} failed: {proc.stderr[-2000:]}")
    summary = json.loads(proc.stdout)
    m = summary["metrics"]
    data = load_data(a.data, load_config(overrides=a.data_set).data)
    context = max(1, 2 * data.n_time // 3)
    psth = {}
    for split in ("valid", "test"):
        idx = np.where(data.split == split)[0]
        if len(idx):
            psth[f"{split}_psth"] = bits_per_spike(loo_psth(data.counts, idx)[:, context:], data.counts[idx, context:])
    keys = [k for k in ("valid_fp_bps", "test_fp_bps", "test_fp_oracle_bps", "test_retest_bps",
                        "test_retest_oracle_bps", "test_co_bps") if k in m]
    line = (f"{a.name:28s} ep={summary['epochs']:4d} best={summary['best_epoch']:4d} {time.time() - t0:5.0f}s "
            + " ".join(f"{k.replace('_bps', '')}={m[k]:.4f}" for k in keys)
            + " " + " ".join(f"{k}={v:.4f}" for k, v in psth.items()))
    if "test_fp_oracle_bps" in m:
        line += f" fp/or={m['test_fp_bps'] / m['test_fp_oracle_bps']:.3f}"
    if "test_retest_oracle_bps" in m:
        line += f" rt/or={m['test_retest_bps'] / m['test_retest_oracle_bps']:.3f}"
    print(line, flush=True)
    with open(a.results, "a") as f:
        f.write(line + " | " + " ".join(a.set) + "\n")


if __name__ == "__main__":
    main()
