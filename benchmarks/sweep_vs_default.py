"""Does a hyperparameter sweep beat the default fit given the same wall-clock budget?

    python benchmarks/sweep_vs_default.py                      # 3 cases, 20 min each for the default fit and for the sweep
    python benchmarks/sweep_vs_default.py --quick              # smoke run: 1 small case, 4 trials, 1 min each
    python benchmarks/sweep_vs_default.py --cases 'lorenz-200x70,mouse_*' --minutes 30 --out runs/sw --json sw.json

For each case of the quality benchmark (benchmarks/quality.py: same simulated systems, sizes, seeds
and real recordings, same data options), one after the other, never two jobs at once:

  default  xfads fit DATA --out RUN --time-limit MINUTES --overwrite             (the defaults, all cores)
  sweep    xfads sweep DATA --space sample_configs/sweep_xfads.yaml --out SWEEP --trials 12 --workers 2
               --time-limit MINUTES --set train.time_limit_min=<0.8 * 2 * MINUTES / 12>

The sweep's 2 workers share the cores (threads = cores / 2 each) and each trial gets an equal share of
the 2 x MINUTES worker-minutes, less 20 % for its data loading and scoring; the sweep stops at MINUTES
of wall time whatever is left (trials in progress then are saved, not scored). Its wall time includes every trial's data loading and final scoring,
which the default fit's --time-limit does not count. The sweep picks its best trial on the VALIDATION
score that selects best.pt; the table reports that trial's TEST scores next to the default fit's and
the trivial baselines' (fp: leave-one-out PSTH or mean rate; co: NLB's smoothing baseline), from each
run's summary.json, and both wall times. Progress goes to stderr, each job's log to OUT/logs/.
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
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

from quality import (  # noqa: E402 - after the path set-up
    DEFAULT_REAL,
    Case,
    _last_line,
    fmt,
    real_case_list,
    run_case,
    select,
    simulated_cases,
    xfads_command,
)

REPO = HERE.parent
SPACE = REPO / "sample_configs" / "sweep_xfads.yaml"
DEFAULT_CASES = "lorenz-200x70,duffing-200x70,coupled-200x70"
QUICK_CASES = "lorenz-30x70"
TRIALS, WORKERS = 12, 2
SHARE = 0.8  # of a trial's share of the worker-minutes given to its training (the rest: loading, scoring)
DEFAULT_MINUTES, QUICK_MINUTES, QUICK_TRIALS = 20.0, 1.0, 4
METRICS = ("test_fp_bps", "test_fp_baseline_bps", "test_co_bps", "test_co_baseline_bps")


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def run_sweep(case: Case, path: Path, out: Path, minutes: float, trials: int) -> dict:
    """The sweep of one case: its status, best trial and that trial's test metrics."""
    sweep_dir, logfile = out / "sweeps" / case.name, out / "logs" / f"{case.name}.sweep.log"
    per_trial = SHARE * WORKERS * minutes / trials
    cmd = xfads_command() + ["sweep", str(path), "--space", str(SPACE), "--out", str(sweep_dir), "--trials",
                             str(trials), "--workers", str(WORKERS), "--time-limit", f"{minutes:g}",
                             "--set", f"train.time_limit_min={per_trial:g}", "--json"]
    for s in case.sets:
        cmd += ["--set", s]
    started = time.monotonic()
    with open(logfile, "w") as err:
        err.write("$ " + " ".join(cmd) + "\n")
        err.flush()
        res = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=err, text=True, timeout=minutes * 60 * 2 + 1200)
    row = {"wall_s": time.monotonic() - started, "command": " ".join(cmd), "log": str(logfile)}
    if res.returncode != 0:
        return {**row, "status": "failed", "reason": f"exit {res.returncode}: {_last_line(logfile.read_text())}"}
    summary = json.loads(res.stdout)
    best = summary.get("best")
    row.update(status="ok", counts=summary.get("counts"), stopped=summary.get("stopped"))
    if not best:
        return {**row, "status": "failed", "reason": "no trial completed within the budget"}
    run_summary = json.loads((sweep_dir / best["run_dir"] / "summary.json").read_text())
    return {**row, "best": best, "metrics": dict(run_summary.get("metrics") or {})}


def table(rows: list[dict]) -> str:
    head = ("case", "default fp-bps", "sweep fp-bps", "fp baseline", "default co-bps", "sweep co-bps", "co baseline",
            "default wall s", "sweep wall s", "sweep trials", "best trial's values")
    lines = ["| " + " | ".join(head) + " |", "|---|" + "---:|" * (len(head) - 2) + "---|"]
    for r in rows:
        d, s = r["default"].get("metrics") or {}, r["sweep"].get("metrics") or {}
        base = d or s
        best = r["sweep"].get("best") or {}
        counts = r["sweep"].get("counts") or {}
        values = " ".join(f"{k.split('.')[-1]}={fmt(v) if isinstance(v, float) else v}"
                          for k, v in (best.get("params") or {}).items())
        cells = [r["case"], fmt(d.get("test_fp_bps")), fmt(s.get("test_fp_bps")), fmt(base.get("test_fp_baseline_bps")),
                 fmt(d.get("test_co_bps")), fmt(s.get("test_co_bps")), fmt(base.get("test_co_baseline_bps")),
                 fmt(r["default"].get("wall_s"), 0), fmt(r["sweep"].get("wall_s"), 0),
                 ", ".join(f"{v} {k.lower()}" for k, v in counts.items()) or "-",
                 values or r["sweep"].get("reason") or "-"]
        lines.append("| " + " | ".join(str(c).replace("|", "/") for c in cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--minutes", type=float, help=f"wall budget of each job (default {DEFAULT_MINUTES:g}; "
                                                 f"{QUICK_MINUTES:g} with --quick)")
    p.add_argument("--trials", type=int, help=f"sweep trials (default {TRIALS}; {QUICK_TRIALS} with --quick)")
    p.add_argument("--quick", action="store_true", help=f"smoke run: case {QUICK_CASES}, short budget, few trials")
    p.add_argument("--cases", help=f"comma-separated case names or patterns of quality.py (default {DEFAULT_CASES})")
    p.add_argument("--out", type=Path, help="folder for data, runs, sweeps and logs (default: a new temp dir)")
    p.add_argument("--json", type=Path, help="also write the rows to this JSON file")
    p.add_argument("--real", type=Path, default=DEFAULT_REAL, help="folder of real recordings (default: %(default)s)")
    args = p.parse_args(argv)
    minutes = args.minutes or (QUICK_MINUTES if args.quick else DEFAULT_MINUTES)
    trials = args.trials or (QUICK_TRIALS if args.quick else TRIALS)
    cases = simulated_cases() + (real_case_list(args.real.resolve()) if args.real.is_dir() else [])
    try:
        chosen = select(cases, args.cases or (QUICK_CASES if args.quick else DEFAULT_CASES))
    except ValueError as exc:
        p.error(str(exc))
    out = args.out or Path(tempfile.mkdtemp(prefix="xfads-sweep-bench-"))
    (out / "logs").mkdir(parents=True, exist_ok=True)
    log(f"{len(chosen)} case(s), {minutes:g} min per job, sweeps of {trials} trials x {WORKERS} workers; output in {out}")
    rows = []
    for i, case in enumerate(chosen, 1):
        log(f"[{i}/{len(chosen)}] {case.name}: default fit")
        default = run_case(case, out, minutes, log)
        sweep = {"status": "skipped", "reason": default.get("reason")}
        if default.get("path"):
            log(f"[{i}/{len(chosen)}] {case.name}: sweep")
            sweep = run_sweep(case, Path(default["path"]), out, minutes, trials)
        log(f"  default: {default['status']} {fmt((default.get('metrics') or {}).get('test_fp_bps'))} fp-bps; "
            f"sweep: {sweep['status']} {fmt((sweep.get('metrics') or {}).get('test_fp_bps'))} fp-bps"
            + (f" ({sweep['reason']})" if sweep.get("reason") else ""))
        rows.append({"case": case.name, "data": case.data, "default": default, "sweep": sweep})
        if args.json:
            args.json.write_text(json.dumps({"minutes": minutes, "trials": trials, "cpus": os.cpu_count(),
                                             "rows": rows}, indent=2, default=str))
    print(f"# sweep ({trials} trials, {WORKERS} workers) vs default fit, {minutes:g} min of wall time each, "
          f"{os.cpu_count()} CPUs; test split\n")
    print(table(rows))
    ok = all(r["default"]["status"] == "ok" and r["sweep"]["status"] == "ok" for r in rows)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
