"""Training speed on a shared CPU: `xfads fit --threads 2 | 1 | auto`, alone and beside another job.

    python benchmarks/contention.py [--epochs 10] [--competitor busy|fit|none] [--policies 2,1,auto]

Fits the reference-size simulated recording (200 trials x 70 bins x 45 neurons, vdp, 20 ms) for a
fixed number of epochs with each thread policy, first with the machine to itself, then with a
competitor on it: `busy` is one process spinning on one core (any CPU-bound job), `fit` is a second
`xfads fit` of the same data with the SAME --threads policy (two users' jobs on one node: with
`--threads 2` both run torch's default, which is what every fit did before --threads existed). Prints seconds per epoch (the fit's own wall time / epochs) and each
cell's ratio to the best policy measured in the same condition. Run it on an otherwise idle machine.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BUSY = "while True:\n    pass\n"


def fit(data: Path, out: Path, epochs: int, threads: str) -> dict:
    cmd = [sys.executable, "-m", "xfads_cli", "fit", str(data), "--out", str(out), "--max-epochs", str(epochs),
           "--threads", threads, "--quiet", "--json", "--overwrite"]
    env = {k: v for k, v in os.environ.items() if k not in ("XFADS_THREADS", "OMP_NUM_THREADS")}
    res = subprocess.run(cmd, capture_output=True, text=True, env=env, check=True)
    summary = json.loads(res.stdout)
    return {"s_per_epoch": summary["seconds"] / summary["epochs"], "threads": summary.get("threads", {})}


def competitor(kind: str, data: Path, tmp: Path, policy: str):
    if kind == "busy":
        return subprocess.Popen([sys.executable, "-c", BUSY])
    if kind == "fit":
        env = {k: v for k, v in os.environ.items() if k not in ("XFADS_THREADS", "OMP_NUM_THREADS")}
        return subprocess.Popen([sys.executable, "-m", "xfads_cli", "fit", str(data), "--out", str(tmp / "other"),
                                 "--max-epochs", "100000", "--threads", policy, "--quiet", "--overwrite"],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    return None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--competitor", default="busy", choices=["busy", "fit", "none"])
    ap.add_argument("--policies", default="2,1,auto")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    policies = args.policies.split(",")
    rows = []
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        data = tmp / "vdp.h5"
        subprocess.run([sys.executable, "-m", "xfads_cli", "simulate", "vdp", "--out", str(data), "--trials", "200",
                        "--bins", "70", "--neurons", "45", "--seed", "7"], check=True, capture_output=True)
        conditions = ["alone"] + ([f"beside {args.competitor}"] if args.competitor != "none" else [])
        for condition in conditions:
            for policy in policies:
                other = competitor(args.competitor, data, tmp, policy) if condition != "alone" else None
                try:
                    if other is not None:
                        time.sleep(8.0)  # let the competitor get going (past its imports and data loading)
                    r = fit(data, tmp / "run", args.epochs, policy)
                finally:
                    if other is not None:
                        other.kill()
                        other.wait()
                rows.append({"condition": condition, "policy": policy, **r})
                print(f"{condition:>12}  --threads {policy:>4}  {r['s_per_epoch']:.3f} s/epoch  "
                      f"steps at each count {r['threads'].get('steps_at')}", file=sys.stderr, flush=True)
    alone = {r["policy"]: r["s_per_epoch"] for r in rows if r["condition"] == "alone"}
    print(f"\n{'condition':>14} {'--threads':>9} {'s/epoch':>8} {'x best':>7} {'x alone':>8}")
    for condition in dict.fromkeys(r["condition"] for r in rows):
        cells = [r for r in rows if r["condition"] == condition]
        best = min(r["s_per_epoch"] for r in cells)
        for r in cells:
            ratio = r["s_per_epoch"] / alone[r["policy"]] if r["policy"] in alone else float("nan")
            print(f"{condition:>14} {r['policy']:>9} {r['s_per_epoch']:8.3f} {r['s_per_epoch'] / best:7.2f} {ratio:8.2f}")
    if args.json:
        print(json.dumps(rows))


if __name__ == "__main__":
    main()
