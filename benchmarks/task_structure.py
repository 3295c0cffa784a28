"""Task structure benchmark (issue 23): forecasts where a task drives the population, model vs the
(condition-aware) leave-one-out PSTH, at every context of the forecast grid, with and without task inputs.

    python benchmarks/task_structure.py                       # all cases, 5 min per fit, variants new + autonomous
    python benchmarks/task_structure.py --cases locust,task --minutes 5
    python benchmarks/task_structure.py --old-repo /tmp/xfads-old   # adds the 'old' variant: that checkout's fit

Every fit is the CLI with DEFAULTS, one at a time, in a subprocess (time-limited fits: never two at once):

    xfads fit DATA --out RUN --time-limit MIN --overwrite [--set data.inputs=[]]
    xfads forecast RUN DATA --context C --horizon H --split test --grid --json

Variants: `new` (this checkout's defaults: task inputs on for trial-aligned data), `autonomous` (this
checkout with `--set data.inputs=[]`: the model without inputs, the same selection), `old` (with
--old-repo: `python -m xfads_cli fit` run inside another checkout, e.g. the commit before the issue;
its run is scored by this checkout's forecast command with the condition-aware baseline).

Cases
  locust   ../shared/data/real/locust_odor_250trials.nwb (skipped without it): response window
           context 75, horizon 50 (20 ms bins).
  task     `xfads simulate task`, 200 trials x 100 bins x 40 neurons, seed 2301: context 50 (just
           after the stimulus at 25%), horizon 25 (across the jittered go cue at 60%).
  lorenz, vdp, hopf
           `xfads simulate SYSTEM`, 200 trials x 70 bins x 45 neurons (the reference size), seeds
           2302-2304: context 40, horizon 20 (the TARGETS.md window); no task structure, so the inputs
           must not cost anything here.

Columns (test split): fp and its baseline at the case's window, their ratio; the forecast grid's
windows won and the worst window's margin (model - baseline, bits/spike); for simulated data
test-retest/oracle of smoothing (fit's summary) and fp/oracle at the case's window.
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

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
REAL = Path(os.environ.get("XFADS_SHARED", REPO.parent / "shared")) / "data" / "real"
CASES = {
    # name: (how to get the data, context, horizon)
    "locust": ("real:locust_odor_250trials.nwb", 75, 50),
    "task": ("simulate:task:200:100:40:2301", 50, 25),
    "lorenz": ("simulate:lorenz:200:70:45:2302", 40, 20),
    "vdp": ("simulate:vdp:200:70:45:2303", 40, 20),
    "hopf": ("simulate:hopf:200:70:45:2304", 40, 20),
}


def xfads() -> list[str]:
    exe = Path(sys.executable).with_name("xfads")
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "xfads_cli"]


def prepare(spec: str, data_dir: Path) -> Path | None:
    kind, *rest = spec.split(":")
    if kind == "real":
        path = REAL / rest[0]
        return path if path.exists() else None
    system, trials, bins, neurons, seed = rest
    path = data_dir / f"{system}-{trials}x{bins}-seed{seed}.nwb"
    if not path.exists():
        subprocess.run(xfads() + ["simulate", system, "--out", str(path), "--trials", trials, "--bins", bins,
                                  "--neurons", neurons, "--seed", seed], check=True, capture_output=True)
    return path


def fit(variant: str, data: Path, run: Path, minutes: float, old_repo: Path | None, log: Path) -> float:
    if variant == "old":
        cmd = [sys.executable, "-m", "xfads_cli", "fit", str(data), "--out", str(run), "--time-limit", f"{minutes:g}",
               "--overwrite", "--quiet"]
        cwd, env = old_repo, dict(os.environ, PYTHONPATH=str(old_repo))
    else:
        cmd = xfads() + ["fit", str(data), "--out", str(run), "--time-limit", f"{minutes:g}", "--overwrite", "--quiet"]
        cmd += ["--set", "data.inputs=[]"] if variant == "autonomous" else []
        cwd, env = None, None
    t0 = time.monotonic()
    with open(log, "w") as f:
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=f, cwd=cwd, env=env)
    return time.monotonic() - t0


def score(run: Path, data: Path, context: int, horizon: int, out: Path) -> dict:
    # an old run's saved config may say data.condition: null; the comparison uses the condition-aware baseline
    cmd = xfads() + ["forecast", str(run), str(data), "--context", str(context), "--horizon", str(horizon),
                     "--split", "test", "--out", str(out), "--overwrite", "--json", "--set", "data.condition=auto"]
    res = subprocess.run(cmd, check=True, capture_output=True, text=True)
    return json.loads(res.stdout)


def row(case: str, variant: str, forecast: dict, summary: dict) -> dict:
    m = forecast["metrics"]
    grid = {k.split("@")[1]: (v, m[f"fp_baseline_bps@{k.split('@')[1]}"]) for k, v in m.items()
            if k.startswith("fp_bps@")}
    margins = {k: a - b for k, (a, b) in grid.items()}
    worst = min(margins, key=margins.get) if margins else None
    sm = summary.get("metrics", {})
    out = {"case": case, "variant": variant, "fp": m.get("fp_bps"), "base": m.get("fp_baseline_bps"),
           "grid_won": f"{sum(v > 0 for v in margins.values())}/{len(margins)}",
           "worst": f"{worst} {margins[worst]:+.3f}" if worst else "-",
           "epochs": summary.get("epochs"), "inputs": summary.get("task_inputs", "none (old)")}
    if "fp_oracle_bps" in m:
        out["fp/oracle"] = m["fp_bps"] / m["fp_oracle_bps"]
    if "test_retest_oracle_bps" in sm:
        out["retest/oracle"] = sm["test_retest_bps"] / sm["test_retest_oracle_bps"]
    return out


def fmt(x) -> str:
    return f"{x:.3f}" if isinstance(x, float) else str(x)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--cases", default=",".join(CASES))
    p.add_argument("--variants", default="new,autonomous")
    p.add_argument("--minutes", type=float, default=5.0)
    p.add_argument("--old-repo", type=Path, help="a checkout whose `python -m xfads_cli fit` is the 'old' variant")
    p.add_argument("--out", type=Path, help="folder for data, runs and logs (default: a new temp dir)")
    p.add_argument("--json", type=Path)
    args = p.parse_args()
    out = args.out or Path(tempfile.mkdtemp(prefix="xfads-task-"))
    (out / "data").mkdir(parents=True, exist_ok=True)
    variants = args.variants.split(",") + (["old"] if args.old_repo else [])
    print(f"load average at start: {os.getloadavg()[0]:.2f}; output in {out}", file=sys.stderr)
    rows = []
    for case in args.cases.split(","):
        spec, context, horizon = CASES[case]
        data = prepare(spec, out / "data")
        if data is None:
            print(f"{case}: skipped ({spec} not found)", file=sys.stderr)
            continue
        for variant in variants:
            run = out / "runs" / f"{case}-{variant}"
            seconds = fit(variant, data, run, args.minutes, args.old_repo, out / f"{case}-{variant}.log")
            summary = json.loads((run / "summary.json").read_text())
            r = row(case, variant, score(run, data, context, horizon, out / f"{case}-{variant}.h5"), summary)
            r["seconds"] = round(seconds)
            rows.append(r)
            print(f"{case} {variant}: " + ", ".join(f"{k}={fmt(v)}" for k, v in r.items() if k not in ("case", "variant")),
                  file=sys.stderr, flush=True)
    cols = ["case", "variant", "fp", "base", "ratio", "grid_won", "worst", "fp/oracle", "retest/oracle", "epochs"]
    print("| " + " | ".join(cols) + " |\n|" + "---|" * len(cols))
    for r in rows:
        r["ratio"] = r["fp"] / r["base"] if r.get("base") and r["base"] > 0 else "-"
        print("| " + " | ".join(fmt(r.get(c, "-")) for c in cols) + " |")
    print(f"\nload average at end: {os.getloadavg()[0]:.2f}", file=sys.stderr)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
