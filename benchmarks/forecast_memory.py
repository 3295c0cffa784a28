"""Peak memory of `xfads forecast` on N trials versus 10 N trials: the output is streamed to HDF5.

    python benchmarks/forecast_memory.py [--trials 100] [--factor 10] [--samples 30] [--no-in-memory]

Simulates two Lorenz recordings (N and factor x N trials, 120 bins of 20 ms, 50 neurons), fits a tiny
model for one epoch on a separate 40-trial file (a checkpoint is all `forecast` needs; its quality
is irrelevant here), then runs each measurement in a fresh process and reports that process's peak
RSS (ru_maxrss of a wrapper's only child):

  - baseline:  python -c 'import torch, xfads_cli.runs' (fixed overhead: interpreter, torch, numpy);
  - input:     load the run and the recording (SpikeData) and nothing else: what any run must hold;
  - streamed:  `xfads forecast RUN DATA --context 20 --horizon 100 --samples S` on each file;
  - in-memory (unless --no-in-memory): the same forecast the whole-array way through the library,
    forecast_arrays + whole-array fp_bps / oracle_bps + write_h5, as `xfads forecast` did before
    it streamed.

What still grows with the trials in the streamed run is the recording loaded as SpikeData (counts
[trial, time, neuron] float32, and for simulated data the true rates, latents and retest counts).
Per block it holds the forecast samples [sample, batch, horizon, neuron] and their sorted copy for
the quantiles; the batch is the run's train.batch_size (16 here). Output volume at factor x N:
4 rate arrays x trials x 100 x 50 float32 (rates_mean, q05, q50, q95), plus counts and true rates.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

NEURONS, BINS, CONTEXT, HORIZON = 50, 120, 20, 100
TINY = ["--set", "model.latent_dim=4", "--set", "model.dynamics_hidden=32", "--set", "model.encoder_hidden=32",
        "--set", "model.samples=5", "--set", "train.batch_size=16", "--set", "eval.samples=5"]

# Runs argv[1:] as its only child and prints that child's peak RSS: RUSAGE_CHILDREN of a fresh
# process covers exactly one command (ru_maxrss is in KB on Linux).
WRAPPER = """
import resource, subprocess, sys
code = subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL).returncode
print(code, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)
"""

LOAD_ONLY = """
import sys
from xfads_cli import inference, runs
run = runs.load_run(sys.argv[1], "cpu")
data = runs.load_data_for_run(sys.argv[2], run)
"""

# The pre-streaming `xfads forecast`: every array whole in memory, then one write_h5.
IN_MEMORY = """
import sys
from xfads_cli import inference, runs
from xfads_cli.scoring import bits as M
from xfads_cli.outputs.h5 import write_h5
run_dir, path, out, samples = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
context, horizon = {context}, {horizon}
run = runs.load_run(run_dir, "cpu")
data = runs.load_data_for_run(path, run)
arrays = inference.forecast_arrays(runs.session_model(run, data), runs.as_tensor(data.counts[:, :context], run), horizon,
                             n_samples=samples, batch_size=run.config.train.batch_size)
observed = data.counts[:, context:context + horizon]
metrics = {{"fp_bps": M.fp_bps(arrays["rates_mean"], observed),
           "fp_oracle_bps": M.oracle_bps(data.truth["rates"][:, context:context + horizon], observed)}}
arrays.update({{"counts": data.counts[:, context:context + horizon], "context_counts": data.counts[:, :context],
               "true_rates": data.truth["rates"][:, context:context + horizon], "trial_ids": data.trial_ids,
               "split": data.split, "unit_ids": data.unit_ids.astype(str)}})
write_h5(out, arrays, {{"metrics": metrics}}, overwrite=True)
""".format(context=CONTEXT, horizon=HORIZON)


def xfads(*args) -> list[str]:
    return [sys.executable, "-m", "xfads_cli", *map(str, args)]


def peak_mb(cmd: list[str]) -> tuple[float, float]:
    """(peak RSS in MB, seconds) of `cmd` run in a fresh process; fails loudly if the command fails."""
    start = time.perf_counter()
    out = subprocess.run([sys.executable, "-c", WRAPPER, *map(str, cmd)], capture_output=True, text=True, check=True)
    code, kb = out.stdout.split()[-2:]
    if code != "0":
        raise SystemExit(f"failed ({code}): {' '.join(cmd)}\n{out.stderr[-2000:]}")
    return int(kb) / 1024.0, time.perf_counter() - start


def simulate(path: Path, trials: int, seed: int) -> None:
    subprocess.run(xfads("simulate", "lorenz", "--out", path, "--neurons", NEURONS, "--trials", trials, "--bins", BINS,
                         "--seed", seed, "--overwrite"), check=True, stdout=subprocess.DEVNULL)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--trials", type=int, default=100, help="N (the large file has factor x N)")
    p.add_argument("--factor", type=int, default=10)
    p.add_argument("--samples", type=int, default=30, help="forecast samples per trial")
    p.add_argument("--no-in-memory", action="store_true", help="skip the whole-array comparison runs")
    p.add_argument("--workdir", type=Path, default=None, help="keep the files here (default: a temporary folder)")
    args = p.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", "2")
    with tempfile.TemporaryDirectory() as tmp:
        work = args.workdir or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        sizes = {"N": args.trials, f"{args.factor}N": args.trials * args.factor}
        for (label, trials), seed in zip(sizes.items(), (1, 2)):
            simulate(work / f"{label}.h5", trials, seed)
        simulate(work / "fit.h5", 40, 3)
        subprocess.run(xfads("fit", work / "fit.h5", "--out", work / "run", "--max-epochs", 1, "--overwrite", "--quiet",
                             *TINY), check=True)

        base, _ = peak_mb([sys.executable, "-c", "import torch, xfads_cli.runs"])
        print(f"baseline (import torch, xfads_cli.runs): {base:7.1f} MB")
        print(f"{NEURONS} neurons, context {CONTEXT} + horizon {HORIZON} bins, {args.samples} samples, batch 16")
        rows = {}
        for label, trials in sizes.items():
            out = work / f"forecast_{label}.h5"
            streamed, secs = peak_mb(xfads("forecast", work / "run", work / f"{label}.h5", "--out", out, "--context",
                                           CONTEXT, "--horizon", HORIZON, "--samples", args.samples, "--overwrite", "--quiet"))
            output_mb = 4 * trials * HORIZON * NEURONS * 4 / 2**20
            line = (f"{label:>4} = {trials:5d} trials: streamed peak {streamed:7.1f} MB ({secs:5.1f} s)"
                    f"  [rate arrays {output_mb:5.1f} MB, file {out.stat().st_size / 2**20:5.1f} MB]")
            loaded, _ = peak_mb([sys.executable, "-c", LOAD_ONLY, work / "run", work / f"{label}.h5"])
            line += f"  input only {loaded:6.1f} MB"
            rows[label] = [streamed]
            if not args.no_in_memory:
                memory, secs = peak_mb([sys.executable, "-c", IN_MEMORY, work / "run", work / f"{label}.h5",
                                        work / f"memory_{label}.h5", args.samples])
                line += f"  in-memory peak {memory:7.1f} MB ({secs:5.1f} s)"
                rows[label].append(memory)
            print(line, flush=True)
        small, large = rows.values()
        print(f"ratio {args.factor}N / N: streamed {large[0] / small[0]:.2f}", end="")
        print(f", in-memory {large[1] / small[1]:.2f}" if len(large) > 1 else "")
        print(f"above baseline: streamed +{small[0] - base:.0f} -> +{large[0] - base:.0f} MB", end="")
        print(f", in-memory +{small[1] - base:.0f} -> +{large[1] - base:.0f} MB" if len(large) > 1 else "")


if __name__ == "__main__":
    main()
