"""`xfads generate`: the time to generate 1000 trials from a run, ancestral sampler (HDF5 and NWB) and
LDIDP sampler (HDF5; its diffusion model's training timed apart), and the posterior-predictive distances (scoring/predictive.py) of the generated trials against the
run's recording, next to the same distances between two halves of the recording (the floor that
sampling noise alone gives: a model cannot be told apart from the data better than the data from itself).

    python benchmarks/generate.py                                   # fits a quick run on a simulated vdp recording
    python benchmarks/generate.py --max-epochs 50 --trials 1000
    python benchmarks/generate.py --run runs/lorenz --data lorenz.nwb

Without --run: `xfads simulate vdp` (50 neurons, 200 trials of 100 bins of 20 ms) and `xfads fit
--max-epochs N` into a temporary folder (or --work DIR). Generation runs in this process on --threads
threads (default 1), timed from the run's loading to the file renamed into place; `seconds` is
`xfads generate`'s own time (sampling, writing, the report), without Python's and torch's start-up.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def xfads(*args) -> None:
    subprocess.run([sys.executable, "-m", "xfads_cli", *map(str, args)], check=True)


def quick_run(work: Path, max_epochs: int, neurons: int, trials: int, bins: int) -> tuple[Path, Path]:
    data, run = work / "vdp.h5", work / "run"
    if not data.exists():
        xfads("simulate", "vdp", "--out", data, "--neurons", neurons, "--trials", trials, "--bins", bins)
    if not (run / "best.pt").exists():
        xfads("fit", data, "--out", run, "--max-epochs", max_epochs, "--quiet", "--overwrite")
    return run, data


def half_split_floor(run: Path, data: Path, seed: int) -> dict:
    """The report of one random half of the recording's trials against the other half."""
    import numpy as np

    from xfads_cli.runs import load_data_for_run, load_run
    from xfads_cli.scoring.baselines import trial_aligned
    from xfads_cli.scoring.predictive import CountStats, compare

    recording = load_data_for_run(data, load_run(run, "cpu"))
    order = np.random.default_rng(seed).permutation(recording.n_trials)
    half = len(order) // 2
    a, b = (CountStats.of(recording.counts[rows]) for rows in (order[:half], order[half:]))
    return compare(a, b, bin_ms=recording.bin_ms, trial_aligned=trial_aligned(recording.provenance), seed=seed)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", type=Path, default=None, help="a run directory (default: fit a quick one)")
    parser.add_argument("--data", type=Path, default=None, help="the run's recording (default: its training file)")
    parser.add_argument("--trials", type=int, default=1000, help="trials generated")
    parser.add_argument("--max-epochs", type=int, default=20, help="epochs of the quick fit (without --run)")
    parser.add_argument("--neurons", type=int, default=50)
    parser.add_argument("--sim-trials", type=int, default=200, help="trials of the simulated recording")
    parser.add_argument("--bins", type=int, default=100, help="bins per simulated trial")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--work", type=Path, default=None, help="folder for the quick run and outputs (default: temporary)")
    parser.add_argument("--samplers", default="ancestral,ldidp", help="comma-separated: ancestral, ldidp")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    import torch

    from xfads_cli.commands.generate import generate
    from xfads_cli.scoring.predictive import report_lines

    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        work = args.work or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        run, data = (args.run, args.data) if args.run else quick_run(work, args.max_epochs, args.neurons,
                                                                      args.sim_trials, args.bins)
        if data is None:
            data = Path(torch.load(run / "best.pt", weights_only=True)["data"]["path"])
        rows = []
        cases = [(sampler, suffix) for sampler in args.samplers.split(",")
                 for suffix in ((".h5", ".nwb") if sampler == "ancestral" else (".h5",))]
        for sampler, suffix in cases:
            start = time.perf_counter()
            path = work / f"generated_{sampler}{suffix}"
            summary = generate(run, path, trials=args.trials, seed=args.seed, overwrite=True, sampler=sampler,
                               quiet=True, compare=data if suffix == ".h5" else None, device="cpu")
            train_s = None
            if sampler == "ldidp":
                import h5py

                with h5py.File(path, "r") as f:
                    record = f.attrs["ldidp"]
                    train_s = (json.loads(record) if isinstance(record, str) else record)["train_seconds"]
            rows.append({"sampler": sampler, "format": suffix[1:], "wall_s": time.perf_counter() - start,
                         "seconds": summary["seconds"], "train_s": train_s, "trials": summary["trials"],
                         "bins": summary["bins"], "neurons": summary["neurons"], "mb": path.stat().st_size / 1e6,
                         "summary": summary})
        floor = half_split_floor(run, data, args.seed)
    if args.json:
        print(json.dumps({"timings": rows, "floor": floor}, indent=2, default=str))
        return
    first = rows[0]
    print(f"xfads generate: {first['trials']} trials x {first['bins']} bins x {first['neurons']} neurons, "
          f"{args.threads} thread(s)")
    for row in rows:
        trained = "" if row["train_s"] is None else f", after {row['train_s']:.1f} s training its diffusion model"
        print(f"  {row['sampler']:>9} {row['format']:>4}: {row['seconds']:.2f} s in generate ({row['wall_s']:.2f} s "
              f"with loading{trained}), {row['mb']:.1f} MB")
    for row in rows:
        if row["summary"].get("predictive") is not None:
            print(f"{row['sampler']}:")
            print("\n".join(report_lines(row["summary"]["predictive"])))
    print("reference, half of the recording's trials against the other half (sampling noise alone):")
    print("\n".join(report_lines(floor)[1:]))


if __name__ == "__main__":
    main()
