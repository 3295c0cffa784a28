"""Does the meta model's session embedding organise within the time a user gives it? (issue 27)

    python benchmarks/meta_embedding.py --family hopf --seed 0 --minutes 8 --workdir /tmp/me
    python benchmarks/meta_embedding.py --family duffing --max-epochs 30 --threads 1 --set train.lr=3e-3

The user's path, through the CLI: `xfads simulate` a one-parameter family (8 training sessions at evenly
spaced parameter values, a 9th held out midway between the two middle ones), `xfads fit` the training
sessions with the defaults (`model.kind: meta`, plus any --set), `xfads adapt` the held-out session from
--shots trials, `xfads embed` all nine. Prints one JSON line:

- rho_train: |Spearman| between the parameter and the training sessions' embedding means projected on
  their first principal axis;
- rho_all: the same with the adapted session projected on that axis too;
- adapted_inside: whether the adapted session's projection lies within the training sessions' range on
  that axis, widened by one spacing of the family (an embedding far outside it cannot place the session);
- fp_bps / fp_bps_oracle of the adapted session (adapt.json's test metrics) and their ratio;
- spread: the training means' standard deviation along the axis over the median posterior sd (q(e_i))
  of the sessions: below ~1 the sessions are not told apart;
- epochs and seconds of the fit.

Time-limited fits depend on the machine being otherwise idle (one benchmark at a time); --max-epochs
makes a run independent of load, for comparing variants side by side.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

FAMILIES = {"hopf": (-1.0, 2.0), "duffing": (-2.0, 2.0), "vdp": (0.25, 3.0), "ring": (0.25, 1.5)}


def spearman(x: np.ndarray, y: np.ndarray) -> float:
    rx, ry = np.argsort(np.argsort(x)), np.argsort(np.argsort(y))
    return float(np.corrcoef(rx, ry)[0, 1])


def xfads(*args: str, out: Path | None = None) -> dict:
    exe = os.environ.get("XFADS", "xfads")
    proc = subprocess.run([exe, *args], capture_output=True, text=True)
    if proc.returncode != 0:
        sys.exit(f"xfads {args[0]} failed ({proc.returncode}): {proc.stderr.strip().splitlines()[-1:]}")
    if out is not None:
        out.write_text(proc.stderr)
    return json.loads(proc.stdout) if "--json" in args else {}


def axis_scores(means: np.ndarray, n_train: int) -> tuple[np.ndarray, np.ndarray]:
    """Projections of every session's mean on the training sessions' first principal axis, and the axis."""
    train = means[:n_train]
    center = train.mean(0)
    _, _, vt = np.linalg.svd(train - center, full_matrices=False)
    return (means - center) @ vt[0], vt[0]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--family", default="hopf", choices=sorted(FAMILIES))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--sessions", type=int, default=8)
    p.add_argument("--trials", type=int, default=96)
    p.add_argument("--bins", type=int, default=80)
    p.add_argument("--neurons", type=int, default=40)
    p.add_argument("--shots", type=int, default=8)
    p.add_argument("--minutes", type=float, default=8.0)
    p.add_argument("--max-epochs", type=int, default=None, help="instead of --minutes")
    p.add_argument("--threads", default=None)
    p.add_argument("--set", dest="sets", action="append", default=[], help="passed to fit")
    p.add_argument("--workdir", type=Path, default=Path("meta_embedding"))
    p.add_argument("--analyse-only", action="store_true", help="read the outputs already in --workdir")
    args = p.parse_args()

    lo, hi = FAMILIES[args.family]
    params = np.linspace(lo, hi, args.sessions)
    k = args.sessions // 2
    held = (params[k - 1] + params[k]) / 2
    w = args.workdir
    (w / "sessions").mkdir(parents=True, exist_ok=True)
    common = ["--neurons", str(args.neurons), "--trials", str(args.trials), "--bins", str(args.bins), "--overwrite"]
    for i, value in enumerate(params if not args.analyse_only else []):
        xfads("simulate", args.family, "--out", str(w / "sessions" / f"s{i}.h5"), "--param", f"{value:g}",
              "--seed", str(1000 * args.seed + i), *common)
    if not args.analyse_only:
        xfads("simulate", args.family, "--out", str(w / "new.h5"), "--param", f"{held:g}",
              "--seed", str(1000 * args.seed + 999), *common)
    budget = ["--max-epochs", str(args.max_epochs)] if args.max_epochs else ["--time-limit", f"{args.minutes:g}"]
    extra = [x for s in ["model.kind=meta", *args.sets] for x in ("--set", s)]
    extra += ["--seed", str(args.seed)] + (["--threads", args.threads] if args.threads else [])
    if not args.analyse_only:
        xfads("fit", str(w / "sessions"), "--out", str(w / "run"), *budget, *extra, "--overwrite", "--json",
              out=w / "fit.err")
        adapt_extra = ["--threads", args.threads] if args.threads else []
        xfads("adapt", str(w / "run"), str(w / "new.h5"), "--trials", str(args.shots), "--out", str(w / "run_new"),
              *adapt_extra, "--overwrite", "--json", out=w / "adapt.err")
        files = [str(w / "sessions" / f"s{i}.h5") for i in range(args.sessions)] + [str(w / "new.h5")]
        xfads("embed", str(w / "run_new"), *files, "--out", str(w / "embed.h5"), "--overwrite", "--json",
              out=w / "embed.err")
    fit = json.loads((w / "run" / "summary.json").read_text())
    adapt = json.loads((w / "run_new" / "summary.json").read_text())
    import h5py

    with h5py.File(w / "embed.h5", "r") as f:
        emb = {"embed_mean": np.asarray(f["embed_mean"]), "embed_var": np.asarray(f["embed_var"]),
               "metrics": json.loads(f.attrs["metrics"]) if "metrics" in f.attrs else {}}
    means, variances = emb["embed_mean"], emb["embed_var"]
    n = args.sessions
    score, axis = axis_scores(means, n)
    values = np.append(params, held)
    step = params[1] - params[0]
    # the training range on the axis, widened by one spacing of the family (in axis units)
    order = np.argsort(params)
    gap = np.abs(np.diff(score[:n][order])).mean() if n > 1 else 0.0
    inside = bool(score[:n].min() - gap <= score[n] <= score[:n].max() + gap)
    sd = np.sqrt((variances[:n] * axis**2).sum(-1))
    fp, oracle = adapt["metrics"].get("test_fp_bps"), adapt["metrics"].get("test_fp_oracle_bps")
    print(json.dumps({
        "family": args.family, "seed": args.seed, "sets": args.sets,
        "rho_train": abs(spearman(score[:n], params)), "rho_all": abs(spearman(score, values)),
        "adapted_inside": inside, "adapted_score": float(score[n]), "train_scores": score[:n].round(4).tolist(),
        "spread": float(score[:n].std() / np.median(sd)), "param_step": float(step),
        "fp_bps": fp, "fp_bps_oracle": oracle, "fp_fraction": (fp / oracle) if fp is not None and oracle else None,
        "epochs": fit.get("epochs"), "seconds": fit.get("seconds"),
        "separation": emb["metrics"].get("separation"), "dynamics_effect": emb["metrics"].get("dynamics_effect"),
    }))


if __name__ == "__main__":
    main()
