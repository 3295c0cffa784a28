"""XFADS against the comparison kinds (dkf, dvbf, latent_sde) on simulated families and the locust
recording: `xfads compare` per recording, one markdown table (family x kind).

    python benchmarks/compare.py                                # 5 min per kind and recording: 6 recordings
                                                                # x 4 kinds x 5 min = about 2 h on 2 cores
    python benchmarks/compare.py --minutes 2 --families vdp,hopf --out runs/cmp --json cmp.json
    python benchmarks/compare.py --max-epochs 2 --families vdp  # smoke run (minutes with the locust
                                                                # recording, seconds with --no-real)

Each recording runs through the CLI in a subprocess, the kinds one after another (never two fits at once):

    xfads simulate FAMILY --out DATA --seed SEED           (the command's default sizes: 100 trials x 100
                                                            bins x 50 neurons, 20 ms bins)
    xfads compare DATA --out OUT/FAMILY --time-limit MIN --overwrite [--set ...]

with the defaults of every kind: no model or training option. The locust odour recording
(../shared/data/real/locust_odor_250trials.nwb; skipped with a message when absent) gets held-out
neurons (data.heldout_fraction=0.2) and its odour-response forecast window (benchmarks/real_recordings.py
WINDOWS). The table (stdout) gives per recording and kind the test fp-bps, the fp baseline (the same for
every kind: one split), the test-retest ratio (simulated: the model's test-retest bps over the true
rates'), co-bps on the locust's held-out neurons, epochs and s/epoch; progress goes to stderr. Fits are
time-limited, so the machine's load matters: the load average is printed at the start and the end.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

FAMILIES = ("vdp", "lorenz", "hopf", "duffing", "task")
KINDS = ("xfads", "dkf", "dvbf", "latent_sde")
SEED = 2024  # the simulations' seed (no test, fixture or other benchmark uses it)
LOCUST = "locust_odor_250trials.nwb"
DEFAULT_REAL = Path(os.environ.get("XFADS_SHARED", REPO.parent / "shared")) / "data" / "real"  # as tests/conftest.py


def xfads_command() -> list[str]:
    """The xfads CLI of the Python running this script (its venv's entry point, else `-m xfads_cli`)."""
    exe = Path(sys.executable).with_name("xfads")
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "xfads_cli"]


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def run(cmd: list[str]) -> subprocess.CompletedProcess:
    """A CLI call; its stderr streams through (progress), its stdout is kept (--json)."""
    log("$ " + " ".join(cmd))
    return subprocess.run(cmd, stdout=subprocess.PIPE, text=True)


def simulate(family: str, data_dir: Path) -> Path:
    path = data_dir / f"{family}-seed{SEED}.h5"
    if not path.exists():
        res = run(xfads_command() + ["simulate", family, "--out", str(path), "--seed", str(SEED)])
        if res.returncode != 0:
            raise SystemExit(f"xfads simulate {family} failed (exit {res.returncode})")
    return path


def locust_sets() -> list[str]:
    """The locust recording's options: held-out neurons and the scored odour-response window."""
    from real_recordings import WINDOWS

    context, horizon, _ = WINDOWS[LOCUST]
    return ["data.heldout_fraction=0.2", f"eval.context_bins={context}", f"eval.horizon_bins={horizon}"]


def compare(name: str, data: Path, out: Path, budget: list[str], sets: list[str], kinds: str) -> dict | None:
    """`xfads compare` of one recording; its summary (None when it failed: said on stderr)."""
    cmd = xfads_command() + ["compare", str(data), "--out", str(out / name), "--kinds", kinds, "--overwrite",
                             "--json", *budget]
    for item in sets:
        cmd += ["--set", item]
    started = time.monotonic()
    res = run(cmd)
    log(f"{name}: exit {res.returncode} after {time.monotonic() - started:.0f} s")
    if res.returncode not in (0, 1) or not res.stdout.strip():  # 1: a kind failed, the others are in the summary
        return None
    return json.loads(res.stdout)


def fmt(x, digits: int = 3) -> str:
    return "-" if x is None else f"{x:.{digits}f}"


def format_table(results: dict[str, dict]) -> str:
    head = ["recording", "kind", "test fp-bps", "fp baseline", "retest ratio", "co-bps", "co baseline", "epochs",
            "s/epoch"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name, summary in results.items():
        base = summary.get("baselines", {})
        for kind, row in summary["kinds"].items():
            if "error" in row:
                lines.append(f"| {name} | {kind} | failed: {row['error']} |" + " |" * (len(head) - 3))
                continue
            cells = [name, kind, fmt(row["fp_bps"]), fmt(base.get("fp_baseline_bps")), fmt(row["retest_ratio"], 2),
                     fmt(row["co_bps"]), fmt(base.get("co_baseline_bps")), str(row["epochs"]), fmt(row["s_per_epoch"], 2)]
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--families", default=",".join(FAMILIES), help="simulated families, comma-separated")
    parser.add_argument("--kinds", default=",".join(KINDS), help="model kinds, comma-separated")
    parser.add_argument("--minutes", "--time-limit", type=float, default=5.0, help="each kind's budget per recording")
    parser.add_argument("--max-epochs", type=int, default=None, help="instead of --minutes (smoke runs)")
    parser.add_argument("--real", type=Path, default=DEFAULT_REAL, help="folder holding " + LOCUST)
    parser.add_argument("--no-real", action="store_true", help="simulated families only")
    parser.add_argument("--out", type=Path, default=REPO / "runs" / "compare_benchmark")
    parser.add_argument("--json", type=Path, default=None, help="also write every summary here")
    args = parser.parse_args(argv)
    budget = ["--max-epochs", str(args.max_epochs)] if args.max_epochs else ["--time-limit", f"{args.minutes:g}"]
    data_dir = args.out / "data"
    data_dir.mkdir(parents=True, exist_ok=True)
    log(f"load average at the start: {os.getloadavg()}")
    results: dict[str, dict] = {}
    for family in [f.strip() for f in args.families.split(",") if f.strip()]:
        summary = compare(family, simulate(family, data_dir), args.out, budget, [], args.kinds)
        if summary is not None:
            results[family] = summary
    locust = args.real / LOCUST
    if args.no_real:
        pass
    elif not locust.is_file():
        log(f"skipped the locust recording: {locust} does not exist")
    else:
        summary = compare("locust", locust, args.out, budget, locust_sets(), args.kinds)
        if summary is not None:
            results["locust"] = summary
    log(f"load average at the end: {os.getloadavg()}")
    if args.json is not None:
        args.json.write_text(json.dumps(results, indent=2))
    print(f"xfads compare, {' '.join(budget)} per kind (test split; ratio: test-retest bps / the true rates')\n")
    print(format_table(results))
    return 0 if results else 1


if __name__ == "__main__":
    sys.exit(main())
