"""Scale of a whole recording: a simulated continuous session of M minutes and U units at 20 ms bins,
through `xfads inspect`, `xfads fit` (on 1 s windows, a fixed time budget) and `xfads smooth` (the
whole session, one trajectory: model/streaming.py), each stage in a fresh process with its wall time
and peak RSS (ru_maxrss of a wrapper's only child).

    python benchmarks/full_size.py                 # 15, 30, 60 min at 1000 units; 250, 500 units at 15 min
    python benchmarks/full_size.py --quick         # 2, 4 min at 100 units; 50 units at 2 min (a smoke run)

The recording: a 4-d latent (two slow rotations with noise, 20 ms steps) read out by U units,
rate_j(t) = exp(c_j . z_t + b_j), mean about 5 Hz; spike times uniform within their 20 ms bin; one
units table, no trials (so fit chops 1 s windows and smooth runs over the whole session). Written in
blocks of time, so the simulation itself never holds the [time, unit] rates.

Reported per stage: seconds, peak MB, and for smooth also MB above the `load` stage of the same file
(what smoothing adds to holding the spike times). fit's budget (--fit-minutes, default 0.5) is a time
limit: its wall time is the budget plus loading and the final evaluation. `smooth` uses the run's
defaults (20 samples) and filters 2000-bin pieces.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

BIN_S = 0.02
WRAPPER = """
import resource, subprocess, sys
code = subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE).returncode
print(code, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)
"""
LOAD_ONLY = """
import sys
from xfads_cli import runs
from xfads_cli.data.opened import open_file
run = runs.load_run(sys.argv[1], "cpu")
with open_file(sys.argv[2]) as f:
    recording = runs.read_recording_for_run(f, run)
"""


def simulate(path: Path, minutes: float, units: int, seed: int = 0) -> int:
    """Write the continuous recording; returns its number of spikes."""
    from pynwb import NWBHDF5IO, NWBFile

    rng = np.random.default_rng(seed)
    T = int(round(minutes * 60 / BIN_S))
    C = rng.normal(0, 0.5, (4, units))
    b = np.log(5.0 * BIN_S) - 0.5 * (C**2).sum(0) * 0.5  # about 5 Hz on average
    angle = np.array([2 * np.pi * BIN_S * 0.5, 2 * np.pi * BIN_S * 0.13])
    z = rng.normal(size=4)
    spikes = [[] for _ in range(units)]
    for t0 in range(0, T, 5000):
        n = min(5000, T - t0)
        block = np.empty((n, 4))
        for i in range(n):
            for k, a in enumerate(angle):
                c, s = np.cos(a), np.sin(a)
                z[2 * k : 2 * k + 2] = 0.995 * np.array([c * z[2 * k] - s * z[2 * k + 1], s * z[2 * k] + c * z[2 * k + 1]])
            z += rng.normal(0, 0.1, 4)
            block[i] = z
        counts = rng.poisson(np.exp(block @ C + b))
        rows, cols = np.nonzero(counts)
        k = counts[rows, cols]
        times = (t0 + np.repeat(rows, k) + rng.random(int(k.sum()))) * BIN_S
        unit = np.repeat(cols, k)
        order = np.argsort(unit, kind="stable")
        times, bounds = times[order], np.searchsorted(unit[order], np.arange(units + 1))
        for j in range(units):
            spikes[j].append(times[bounds[j] : bounds[j + 1]])
    nwb = NWBFile(session_description="simulated continuous session", identifier=f"full-size-{minutes}-{units}",
                  session_start_time=datetime(2024, 1, 1, tzinfo=timezone.utc))
    total = 0
    for j in range(units):
        times = np.sort(np.concatenate(spikes[j])) if spikes[j] else np.zeros(0)
        total += times.size
        nwb.add_unit(spike_times=times)
    with NWBHDF5IO(str(path), "w") as io:
        io.write(nwb)
    return total


def measure(argv: list[str]) -> tuple[float, float]:
    """(seconds, peak MB) of one command in a fresh process."""
    t0 = time.monotonic()
    out = subprocess.run([sys.executable, "-c", WRAPPER, *argv], capture_output=True, text=True, check=True)
    code, kb = out.stdout.split()
    if code != "0":
        raise SystemExit(f"{' '.join(map(str, argv))} failed (exit {code})")
    return time.monotonic() - t0, int(kb) / 1024


def stages(data: Path, work: Path, fit_minutes: float, threads: int) -> dict:
    xfads = [sys.executable, "-m", "xfads_cli"]
    run = work / f"run_{data.stem}"
    out = {}
    out["inspect"] = measure([*xfads, "inspect", str(data)])
    out["fit"] = measure([*xfads, "fit", str(data), "--out", str(run), "--time-limit", str(fit_minutes), "--quiet",
                          "--threads", str(threads), "--overwrite", "--set", "data.chop_ms=1000"])
    out["load"] = measure([sys.executable, "-c", LOAD_ONLY, str(run), str(data)])
    out["smooth"] = measure([*xfads, "smooth", str(run), str(data), "--out", str(work / f"{data.stem}.h5"), "--quiet",
                             "--threads", str(threads), "--overwrite"])
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--fit-minutes", type=float, default=0.5)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    lengths, units = ([2, 4], [50, 100]) if args.quick else ([15, 30, 60], [250, 500, 1000])
    cases = [(m, units[-1]) for m in lengths] + [(lengths[0], u) for u in units[:-1]]
    fit_minutes = 0.2 if args.quick else args.fit_minutes
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        for minutes, n_units in cases:
            data = work / f"rec_{minutes}min_{n_units}u.nwb"
            t0 = time.monotonic()
            spikes = simulate(data, minutes, n_units)
            made = time.monotonic() - t0
            found = stages(data, work, fit_minutes, args.threads)
            row = {"minutes": minutes, "units": n_units, "bins": int(round(minutes * 60 / BIN_S)), "spikes": spikes,
                   "file_mb": data.stat().st_size / 2**20, "simulate_s": made}
            row |= {f"{k}_s": v[0] for k, v in found.items()} | {f"{k}_mb": v[1] for k, v in found.items()}
            row["smooth_above_load_mb"] = row["smooth_mb"] - row["load_mb"]
            rows.append(row)
            print(json.dumps(row), flush=True)
            data.unlink()
    print("\n| minutes | units | bins | spikes | inspect s / MB | fit s / MB | load MB | smooth s / MB | smooth - load MB |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['minutes']} | {r['units']} | {r['bins']} | {r['spikes']:,} | {r['inspect_s']:.0f} / {r['inspect_mb']:.0f} "
              f"| {r['fit_s']:.0f} / {r['fit_mb']:.0f} | {r['load_mb']:.0f} | {r['smooth_s']:.0f} / {r['smooth_mb']:.0f} "
              f"| {r['smooth_above_load_mb']:.0f} |")
    for key, ref in (("units", units[-1]), ("minutes", lengths[0])):  # along session length, then unit count
        series = sorted((r for r in rows if r[key] == ref), key=lambda r: r["bins"] * r["units"])
        for r in series[1:]:
            size = r["bins"] * r["units"] / (series[0]["bins"] * series[0]["units"])
            print(f"{r['minutes']} min x {r['units']} units vs {series[0]['minutes']} x {series[0]['units']} ({size:g}x the "
                  f"bins x units): smooth time {r['smooth_s'] / series[0]['smooth_s']:.2f}x, smooth peak MB "
                  f"{r['smooth_mb'] / series[0]['smooth_mb']:.2f}x, fit peak MB {r['fit_mb'] / series[0]['fit_mb']:.2f}x")


if __name__ == "__main__":
    os.environ.setdefault("PYTHONWARNINGS", "ignore")
    main()
