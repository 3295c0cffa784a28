"""Quality benchmark: `xfads fit` with its DEFAULTS on simulated and real recordings, one table.

    python benchmarks/quality.py                         # everything, 5 min per fit (73 min on 2 idle cores
                                                         # before the locust case; small recordings end early)
    python benchmarks/quality.py --quick                 # smoke run: 3 cases, 1 min per fit
    python benchmarks/quality.py --cases 'lorenz-*,mouse_gpe_50trials' --minutes 3 --out runs/q --json q.json
    python benchmarks/quality.py --list                  # the case names

Every case is fitted by the CLI in a subprocess, one at a time (never two fits at once):

    xfads fit DATA --out RUN --time-limit MINUTES --overwrite [--set <data option>]...

with no model or training options: the only `--set` options are data descriptions (real recordings:
`data.heldout_fraction=0.2`, and the interval table where the file has no `trials` table) and, for a
real recording with a known response window, the scored forecast window (`eval.context_bins`,
`eval.horizon_bins`: which bins fp-bps scores; best.pt is chosen on co-bps, so the fit is the same). The script
then reads RUN/summary.json (test split) and prints ONE markdown table on stdout; progress goes to
stderr, each fit's log to OUT/logs/. A metric missing from a summary prints as "-".

Cases
  simulated  `xfads simulate` lorenz, vdp, ring, duffing, hopf at 200 trials x 70 bins (the reference
             size), 1000 x 100 and 30 x 70; 45 neurons, 20 ms bins, 10 Hz. Seeds 1234 + the case's
             index in this list (1234-1248; no test, fixture or other benchmark uses them), stated
             in the table.
  coupled    a benchmark-only system (benchmarks/coupled_system.py): two nonlinearly coupled noisy
             oscillators (4-D latent), 200 x 70 x 45, seed 1249, plain HDF5 layout with truth/rates and
             truth/retest_counts.
  real       every recording in --real (default ../shared/data/real next to the repository); the npz
             files are converted to NWB (benchmarks/real_recordings.py, cached in OUT/data); held-out
             neurons 20 %; trial-aligned where the file has trials or an interval table, else chopped
             into the default 1 s windows. Skipped with a message when the folder does not exist.
             locust_odor_250trials (250 odour trials x 4 s, 10 units) is scored on its odour response:
             75-bin context, 50 bins ahead (real_recordings.WINDOWS).

Scores (docs/metrics.md; test split)
  simulated  retest/oracle = test_retest_bps / test_retest_oracle_bps (smoothed rates scored on an
             independent second draw of counts), fp/oracle = test_fp_bps / test_fp_oracle_bps
             (forecast of the last third of each trial from the first two thirds), and the fp baseline.
  real       fp-bps vs its baseline (test_fp_bps, test_fp_baseline_bps, their ratio; the baseline is
             the condition-aware leave-one-out PSTH where the recording has condition labels) and
             co-bps on the held-out neurons vs its baseline (test_co_bps, test_co_baseline_bps). The
             forecast is the default window (last third from the first two) unless the case's options
             (listed under the table) set eval.context_bins / eval.horizon_bins.

Fits are time-limited, so the machine's load matters: the load average is printed at the start, at
the end and per fit (column "load").
"""

from __future__ import annotations

import argparse
import csv
import fnmatch
import json
import math
import os
import platform
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Callable

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

SYSTEMS = ("lorenz", "vdp", "ring", "duffing", "hopf")
SIZES = ((200, 70), (1000, 100), (30, 70))  # (trials, bins); the first is the reference size
NEURONS, BIN_MS, SEED0 = 45, 20.0, 1234
HELDOUT_SET = "data.heldout_fraction=0.2"
DEFAULT_MINUTES, QUICK_MINUTES = 5.0, 1.0
QUICK_CASES = ("lorenz-200x70", "lorenz-30x70", "mouse_gpe_50trials")
DEFAULT_REAL = Path(os.environ.get("XFADS_SHARED", REPO.parent / "shared")) / "data" / "real"  # as tests/conftest.py


@dataclass
class Case:
    """One benchmark case. prepare(data_dir, log) returns the file to fit (writing it if needed)."""

    name: str
    kind: str  # "simulated" or "real"
    data: str  # what the data is, for the table
    seed: int | None = None
    sets: list[str] = field(default_factory=list)
    prepare: Callable[[Path, Callable], Path] | None = None
    skip: str | None = None
    note: str = ""


# -- cases -------------------------------------------------------------------------------------------

def xfads_command() -> list[str]:
    """The xfads CLI of the Python running this script (its venv's entry point, else `-m xfads_cli`)."""
    exe = Path(sys.executable).with_name("xfads")
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "xfads_cli"]


def _simulate(system: str, trials: int, bins: int, seed: int):
    def prepare(data_dir: Path, log) -> Path:
        path = data_dir / f"{system}-{trials}x{bins}-seed{seed}.h5"
        if not path.exists():
            cmd = xfads_command() + ["simulate", system, "--out", str(path), "--neurons", str(NEURONS),
                                     "--trials", str(trials), "--bins", str(bins), "--bin-ms", f"{BIN_MS:g}",
                                     "--seed", str(seed)]
            log("  " + " ".join(cmd[-14:]))
            res = subprocess.run(cmd, capture_output=True, text=True)
            if res.returncode != 0:
                raise RuntimeError(f"xfads simulate failed (exit {res.returncode}): {_last_line(res.stderr)}")
        return path
    return prepare


def _coupled(trials: int, bins: int, seed: int):
    def prepare(data_dir: Path, log) -> Path:
        import coupled_system

        path = data_dir / f"coupled-{trials}x{bins}-seed{seed}.h5"
        if not path.exists():
            info = coupled_system.write_h5(path, trials=trials, bins=bins, neurons=NEURONS, bin_ms=BIN_MS, seed=seed)
            log(f"  wrote {path} (mean rates {', '.join(f'{x:.1f}' for x in info['rate_hz_min_median_max'])} Hz min/median/max)")
        return path
    return prepare


def simulated_cases() -> list[Case]:
    """The 15 `xfads simulate` cases, then the coupled-oscillator case; seeds 1234 + list index."""
    cases = []
    for trials, bins in SIZES:
        for system in SYSTEMS:
            seed = SEED0 + len(cases)
            cases.append(Case(f"{system}-{trials}x{bins}", "simulated", f"simulated {trials}x{bins}x{NEURONS}, seed {seed}",
                              seed, prepare=_simulate(system, trials, bins, seed)))
    seed = SEED0 + len(cases)
    trials, bins = SIZES[0]
    cases.append(Case(f"coupled-{trials}x{bins}", "simulated",
                      f"own 2-rhythm system {trials}x{bins}x{NEURONS}, seed {seed}", seed,
                      prepare=_coupled(trials, bins, seed),
                      note="benchmarks/coupled_system.py: two nonlinearly coupled noisy oscillators, 4-D latent"))
    return cases


def real_case_list(real_dir: Path) -> list[Case]:
    """Every recording of real_dir as a Case (nothing converted or read until a case is prepared; npz
    files are converted into the output's data folder)."""
    from real_recordings import real_cases

    out = []
    for rc in real_cases(real_dir):
        sets = [HELDOUT_SET] + rc.sets
        if rc.skip:
            out.append(Case(rc.name, "real", "", sets=sets, skip=rc.skip))
            continue

        def prepare(data_dir: Path, log, rc=rc) -> Path:
            return rc.prepare(data_dir, log=lambda m: log("  " + m))
        out.append(Case(rc.name, "real", "real", sets=sets, prepare=prepare, note=rc.note))
    return out


def layout_of(path: Path, sets: list[str]) -> tuple[str, dict]:
    """('trial-aligned (<table>)' | 'chopped (<ms> ms windows)', inspect's 'loaded' dict) of a real
    recording under the benchmark's data options, from `xfads inspect --json`."""
    cmd = xfads_command() + ["inspect", str(path), "--json"] + [a for s in sets for a in ("--set", s)]
    res = subprocess.run(cmd, capture_output=True, text=True)
    if res.returncode != 0:
        raise RuntimeError(f"xfads inspect failed (exit {res.returncode}): {_last_line(res.stderr)}")
    info = json.loads(res.stdout)
    info = info[0] if isinstance(info, list) else info  # a list since issue 13 (one report per file)
    opts = dict(s.split("=", 1) for s in sets)
    table = opts.get("data.intervals")
    if table is None:
        table = (info.get("defaults") or {}).get("trials_from")
    if table in (None, "chopped"):
        chop = float(opts.get("data.chop_ms", 1000))
        return f"chopped ({chop:g} ms windows)", info.get("loaded") or {}
    return f"trial-aligned ({table})", info.get("loaded") or {}


# -- running -----------------------------------------------------------------------------------------

def _last_line(text: str) -> str:
    lines = [ln.strip() for ln in (text or "").splitlines() if ln.strip()]
    errors = [ln for ln in lines if ln.lower().startswith("error")]
    return (errors or lines or ["(no output)"])[-1][:300]


def load_average() -> tuple[float, float, float] | None:
    try:
        return tuple(round(x, 2) for x in os.getloadavg())
    except OSError:
        return None


def seconds_per_epoch(run: Path, summary: dict) -> float | None:
    """Mean of metrics.csv's per-epoch `seconds` (training + validation scoring of each epoch); else the
    summary's seconds / epochs (which also counts the final evaluation)."""
    try:
        with open(run / "metrics.csv", newline="") as f:
            secs = [float(r["seconds"]) for r in csv.DictReader(f) if r.get("seconds")]
        if secs:
            return sum(secs) / len(secs)
    except (OSError, KeyError, ValueError):
        pass
    epochs, seconds = summary.get("epochs"), summary.get("seconds")
    return seconds / epochs if epochs and seconds is not None else None


def run_case(case: Case, out: Path, minutes: float, log) -> dict:
    """Prepare the data, fit it, read summary.json: one result row (never raises for a failed case)."""
    row = {"case": case.name, "kind": case.kind, "data": case.data, "seed": case.seed, "sets": case.sets,
           "note": case.note, "status": "ok", "reason": None, "metrics": {}}
    if case.skip:
        row.update(status="skipped", reason=case.skip)
        return row
    data_dir, run, logs = out / "data", out / "runs" / case.name, out / "logs"
    data_dir.mkdir(parents=True, exist_ok=True)
    logs.mkdir(parents=True, exist_ok=True)
    try:
        path = case.prepare(data_dir, log)
        row["path"] = str(path)
        if case.kind == "real":
            layout, loaded = layout_of(path, case.sets)
            row["layout"] = layout
            row["data"] = layout
    except Exception as exc:  # a case that cannot be prepared is reported, the others still run
        row.update(status="failed", reason=f"preparing the data: {type(exc).__name__}: {exc}")
        return row
    cmd = xfads_command() + ["fit", str(path), "--out", str(run), "--time-limit", f"{minutes:g}", "--overwrite"]
    for s in case.sets:
        cmd += ["--set", s]
    row["command"] = " ".join(["xfads"] + cmd[len(xfads_command()):])
    row["log"] = str(logs / f"{case.name}.log")
    row["load_at_start"] = load_average()
    timeout = minutes * 60 * 3 + 1200  # the time limit covers training; loading and scoring come on top
    t0 = time.monotonic()
    with open(row["log"], "w") as fh:
        fh.write("$ " + " ".join(cmd) + "\n")
        fh.flush()
        try:
            res = subprocess.run(cmd, stdout=fh, stderr=subprocess.STDOUT, timeout=timeout)
            rc = res.returncode
        except subprocess.TimeoutExpired:
            rc = None
    row["wall_s"] = time.monotonic() - t0
    row["load_at_end"] = load_average()
    if rc != 0:
        text = Path(row["log"]).read_text(errors="replace")
        why = f"timed out after {timeout:.0f} s" if rc is None else f"xfads fit exit {rc}: {_last_line(text)}"
        row.update(status="failed", reason=why)
        return row
    try:
        summary = json.loads((run / "summary.json").read_text())
    except (OSError, ValueError) as exc:
        row.update(status="failed", reason=f"cannot read {run / 'summary.json'}: {exc}")
        return row
    row["run_dir"] = str(run)
    row["epochs"] = summary.get("epochs")
    row["stopped"] = summary.get("stopped")
    row["s_per_epoch"] = seconds_per_epoch(run, summary)
    row["metrics"] = dict(summary.get("metrics") or {})
    data = summary.get("data") or {}
    if isinstance(data, dict) and data.get("trials") is not None:
        shape = f"{data['trials']}x{data.get('bins')}x{data.get('neurons')}"
        held = data.get("heldout_neurons") or 0
        row["data"] = (f"{row['data']}: {shape}" + (f" ({held} held out)" if held else "")) if case.kind == "real" \
            else row["data"]
    return row


# -- the table ---------------------------------------------------------------------------------------

def _num(x) -> float | None:
    try:
        x = float(x)
    except (TypeError, ValueError):
        return None
    return x if math.isfinite(x) else None


def fmt(x, digits: int = 3) -> str:
    x = _num(x)
    return "-" if x is None else f"{x:.{digits}f}"


def ratio(num, den) -> str:
    """num / den to 2 decimals; "-" when either is missing, "n/a" when den <= 0 (a ratio to a
    non-positive reference means nothing)."""
    num, den = _num(num), _num(den)
    if num is None or den is None:
        return "-"
    return "n/a" if den <= 0 else f"{num / den:.2f}"


def vs_baseline(model, base) -> str:
    """model / baseline; with a baseline <= 0 (a ratio means nothing) "n/a (+d)", d = model - baseline."""
    r = ratio(model, base)
    return f"n/a ({_num(model) - _num(base):+.3f})" if r == "n/a" else r


def ratio_cell(m: dict, num: str, den: str) -> str:
    """'ratio (num/den)' of two metrics; "-" when either is missing."""
    a, b = _num(m.get(num)), _num(m.get(den))
    return "-" if a is None or b is None else f"{ratio(a, b)} ({fmt(a)}/{fmt(b)})"


COLUMNS = ("case", "data", "load", "epochs", "s/epoch", "wall s", "retest/oracle", "fp/oracle", "fp-bps",
           "fp baseline", "fp/baseline", "fp grid", "co-bps", "co baseline")


def grid_cell(m: dict) -> str:
    """'won/scored, worst W (+d)': the forecast grid's windows (test_fp_bps@W vs test_fp_baseline_bps@W)
    where the model beats the baseline, and the worst window's margin d; "-" without a grid."""
    margins = {}
    for key, value in m.items():
        if key.startswith("test_fp_bps@"):
            name = key.split("@", 1)[1]
            model, base = _num(value), _num(m.get(f"test_fp_baseline_bps@{name}"))
            if model is not None and base is not None and math.isfinite(model - base):
                margins[name] = model - base
    if not margins:
        return "-"
    worst = min(margins, key=margins.get)
    return f"{sum(d > 0 for d in margins.values())}/{len(margins)}, worst {worst} ({margins[worst]:+.3f})"


def table_row(row: dict, note_ref: str = "") -> list[str]:
    m = row.get("metrics") or {}
    status = row.get("status", "ok")
    data = row.get("data", "-")
    if status != "ok":
        return [row.get("case", "?"), f"{status.upper()}{note_ref}" + (f": {data}" if data else "")] + ["-"] * (len(COLUMNS) - 2)
    load = row.get("load_at_start")
    return [
        row.get("case", "?") + note_ref,
        data,
        "-" if not load else f"{load[0]:.1f}",
        "-" if row.get("epochs") is None else str(row["epochs"]),
        fmt(row.get("s_per_epoch"), 2),
        fmt(row.get("wall_s"), 0),
        ratio_cell(m, "test_retest_bps", "test_retest_oracle_bps"),
        ratio_cell(m, "test_fp_bps", "test_fp_oracle_bps"),
        fmt(m.get("test_fp_bps")),
        fmt(m.get("test_fp_baseline_bps")),
        vs_baseline(m.get("test_fp_bps"), m.get("test_fp_baseline_bps")),
        grid_cell(m),
        fmt(m.get("test_co_bps")),
        fmt(m.get("test_co_baseline_bps")),
    ]


def format_table(rows: list[dict]) -> str:
    """The markdown table of result rows plus numbered notes (options, skips, failures). Any metric or
    field may be missing: it prints as "-"."""
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "|".join("---" if i < 2 else "---:" for i in range(len(COLUMNS))) + "|"]
    notes = []
    for row in rows:
        extra = []
        if row.get("kind") == "real" and row.get("sets") and row.get("status") != "skipped":
            extra.append("options: " + " ".join(f"--set {s}" for s in row["sets"]))
        if row.get("note"):
            extra.append(row["note"])
        if row.get("reason"):
            extra.append(row["reason"])
        if row.get("status") == "ok" and row.get("stopped"):
            extra.append(f"stopped: {row['stopped']}")
        ref = ""
        if extra:
            notes.append(f"{len(notes) + 1}. {row.get('case', '?')}: " + "; ".join(str(e) for e in extra))
            ref = f" [{len(notes)}]"
        cells = [str(c).replace("|", "/") for c in table_row(row, ref)]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines + ([""] + notes if notes else []))


# -- main --------------------------------------------------------------------------------------------

def _git_commit() -> str:
    try:
        head = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"], capture_output=True,
                              text=True, timeout=20).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(REPO), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=20).stdout.strip()
        return (head or "unknown") + (" (with uncommitted changes in the working tree)" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def _package_location() -> str:
    """Where the fits' xfads_cli is imported from (PYTHONPATH can point it away from this repository)."""
    try:
        res = subprocess.run([sys.executable, "-c", "import xfads_cli; print(xfads_cli.__file__)"],
                             capture_output=True, text=True, timeout=120, cwd=str(HERE))
        return str(Path(res.stdout.strip()).parent) if res.returncode == 0 else "not importable"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def select(cases: list[Case], patterns: str | None) -> list[Case]:
    """The cases whose name matches one of the comma-separated names or shell patterns, in list order."""
    if not patterns:
        return cases
    wanted = [p.strip() for p in patterns.split(",") if p.strip()]
    unknown = [p for p in wanted if not any(fnmatch.fnmatchcase(c.name, p) for c in cases)]
    if unknown:
        raise ValueError(f"no case matches {', '.join(unknown)}; cases: {', '.join(c.name for c in cases)}")
    return [c for c in cases if any(fnmatch.fnmatchcase(c.name, p) for p in wanted)]


def _load_text(load) -> str:
    return "unavailable" if not load else f"{load[0]:.2f} / {load[1]:.2f} / {load[2]:.2f} (1 / 5 / 15 min)"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--minutes", type=float, default=None,
                   help=f"time limit per fit in minutes (default {DEFAULT_MINUTES:g}; {QUICK_MINUTES:g} with --quick)")
    p.add_argument("--quick", action="store_true", help=f"smoke mode: cases {', '.join(QUICK_CASES)}")
    p.add_argument("--cases", help="comma-separated case names or shell patterns (e.g. 'lorenz-*,*-30x70')")
    p.add_argument("--out", type=Path, help="folder for data, run directories and logs (default: a new temp dir)")
    p.add_argument("--json", type=Path, help="also write the rows (and run facts) to this JSON file")
    p.add_argument("--real", type=Path, default=DEFAULT_REAL, help="folder of real recordings (default: %(default)s)")
    p.add_argument("--list", action="store_true", help="print the case names and exit")
    args = p.parse_args(argv)
    minutes = args.minutes if args.minutes is not None else (QUICK_MINUTES if args.quick else DEFAULT_MINUTES)
    if not minutes > 0:
        p.error("--minutes must be > 0")

    def log(msg: str) -> None:
        print(f"[{datetime.now():%H:%M:%S}] {msg}", file=sys.stderr, flush=True)

    cases = simulated_cases()
    real_dir = args.real.resolve()
    real_message = None
    if real_dir.is_dir():
        cases += real_case_list(real_dir)
    else:
        real_message = f"real recordings: {real_dir} does not exist; the real cases are skipped"
    if args.list:
        print("\n".join(c.name for c in cases))
        if real_message:
            print(real_message, file=sys.stderr)
        return 0
    if args.cases:
        try:
            chosen = select(cases, args.cases)
        except ValueError as exc:
            p.error(str(exc))
    elif args.quick:
        chosen = [c for c in cases if c.name in QUICK_CASES]
    else:
        chosen = cases
    out = args.out if args.out is not None else Path(tempfile.mkdtemp(prefix="xfads-quality-"))
    out.mkdir(parents=True, exist_ok=True)

    start_load = load_average()
    started = datetime.now()
    header = [
        "# xfads quality benchmark",
        "",
        f"- {started:%Y-%m-%d %H:%M}, commit {_git_commit()}, {platform.node()} ({os.cpu_count()} CPUs), "
        f"python {platform.python_version()}, xfads_cli from {_package_location()}",
        f"- every fit: `xfads fit DATA --out RUN --time-limit {minutes:g} --overwrite` with the DEFAULT config, "
        "one fit at a time; real recordings add only data options (`--set " + HELDOUT_SET + "`, interval table) "
        "and, where a recording has a known response window, the scored forecast window (eval.context_bins / "
        "eval.horizon_bins; listed per case under the table)",
        f"- simulated data: 45 neurons, 20 ms bins, seeds {SEED0} + case index (listed per case; no test, "
        "fixture or other benchmark uses them); no held-out neurons",
        "- scores on the test split: retest/oracle = test_retest_bps / test_retest_oracle_bps, fp/oracle = "
        "test_fp_bps / test_fp_oracle_bps, fp/baseline = test_fp_bps / test_fp_baseline_bps (cells: ratio "
        "(model/reference)); '-' = not in summary.json; 'n/a (+d)' = the baseline is <= 0, d = model - baseline; "
        "fp grid = forecast-grid windows (contexts across the trial and before each event, docs/metrics.md) where "
        "the model beats the baseline / windows scored, and the worst window's margin (model - baseline)",
        f"- load average at start: {_load_text(start_load)}; column 'load' is the 1-min load when each fit "
        f"started. Fits are time-limited: on a machine loaded above its {os.cpu_count()} CPUs a fit gets "
        "fewer epochs and scores worse than it would on an idle one",
        f"- output folder: {out}",
    ]
    if real_message:
        header.append(f"- {real_message}")
    log(f"{len(chosen)} case(s), {minutes:g} min per fit, output in {out}; load average {_load_text(start_load)}")
    if real_message:
        log(real_message)

    rows: list[dict] = []

    def write_json() -> None:
        facts = {"started": started.isoformat(timespec="seconds"), "commit": _git_commit(), "minutes": minutes,
                 "cpus": os.cpu_count(), "load_at_start": start_load, "load_at_end": load_average(),
                 "out": str(out), "real_dir": str(real_dir) if not real_message else None}
        text = json.dumps({"facts": facts, "rows": rows}, indent=2, default=str)
        (out / "results.json").write_text(text)
        if args.json:
            args.json.parent.mkdir(parents=True, exist_ok=True)
            args.json.write_text(text)

    for i, case in enumerate(chosen, 1):
        log(f"[{i}/{len(chosen)}] {case.name}" + (f": skipped ({case.skip})" if case.skip else ""))
        row = run_case(case, out, minutes, log)
        rows.append(row)
        if row["status"] == "ok":
            m = row["metrics"]
            log(f"  {row['epochs']} epochs in {row['wall_s']:.0f} s; test fp-bps {fmt(m.get('test_fp_bps'))}"
                + (f", retest/oracle {ratio(m.get('test_retest_bps'), m.get('test_retest_oracle_bps'))}"
                   if "test_retest_bps" in m else "")
                + (f", co-bps {fmt(m.get('test_co_bps'))}" if "test_co_bps" in m else ""))
        elif row["status"] == "failed":
            log(f"  FAILED: {row['reason']}")
        write_json()

    end_load = load_average()
    print("\n".join(header))
    print()
    print(format_table(rows))
    print()
    print(f"Load average at end: {_load_text(end_load)} ({(datetime.now() - started).total_seconds() / 60:.1f} min in all).")
    write_json()
    return 0 if all(r["status"] != "failed" for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
