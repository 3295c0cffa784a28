"""Side-by-side epoch time of two code versions, alternating subprocesses A B A B ... in one run.

    python benchmarks/epoch_time_ab.py --a 3bc4e64                 # that commit vs this working tree
    python benchmarks/epoch_time_ab.py --a /tmp/xfads_base --b .   # two checkouts
    python benchmarks/epoch_time_ab.py --a HEAD~3 --rounds 7 --epochs 3 --threads 2

--a / --b: a directory holding an xfads checkout (its xfads_cli/ is imported) or a git revision of this
repository (checked out into a temporary `git worktree`, removed at the end). Each round runs
`epoch_time.py --json` once per version, A then B, so both see the same machine load; every run times
`--epochs` epochs after one warm-up epoch at the TARGETS.md reference setting. The per-run median
seconds/epoch of each version, their medians over the rounds and the ratio A / B (> 1: B is faster)
are printed, plus the pooled ratio of all epochs. Both versions train the same model from the same
seed, so their losses are printed side by side as well: for an optimisation that keeps the
mathematics they agree up to float round-off.

On a shared machine absolute times move by 2x and more between runs (with 2 threads, every OpenMP
parallel region can stall for a scheduler slice when the cores are busy): only the ratio from
alternating runs is meaningful, and more rounds make it steadier.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent


def checkout(spec: str, tmp: Path, name: str) -> Path:
    """A directory with xfads_cli/ for `spec` (a directory, or a git revision -> temporary worktree)."""
    path = Path(spec)
    if (path / "xfads_cli").is_dir():
        return path.resolve()
    dest = tmp / name
    subprocess.run(["git", "-C", str(REPO), "worktree", "add", "--detach", "--quiet", str(dest), spec], check=True)
    return dest


def run_one(tree: Path, args) -> dict:
    env = dict(os.environ, PYTHONPATH=str(tree) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    cmd = [sys.executable, str(HERE / "epoch_time.py"), "--json", "--epochs", str(args.epochs),
           "--mode", args.mode, "--dynamics", args.dynamics, "--threads", str(args.threads)]
    out = subprocess.run(cmd, env=env, cwd=tree, check=True, capture_output=True, text=True).stdout
    res = json.loads(out.strip().splitlines()[-1])
    if Path(res["package"]).resolve().parent.parent != tree.resolve():
        raise RuntimeError(f"{tree}: imported {res['package']} instead (PYTHONPATH not honoured?)")
    return res


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--a", required=True, help="baseline: directory or git revision")
    p.add_argument("--b", default=str(REPO), help="candidate: directory or git revision (default: this checkout)")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--epochs", type=int, default=3, help="timed epochs per run (after one warm-up epoch)")
    p.add_argument("--mode", default="smoother")
    p.add_argument("--dynamics", default="mlp")
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args()
    with tempfile.TemporaryDirectory(prefix="xfads_ab_") as tmpdir:
        tmp = Path(tmpdir)
        trees = {"A": checkout(args.a, tmp, "a"), "B": checkout(args.b, tmp, "b")}
        try:
            print(f"A = {args.a} ({trees['A']})\nB = {args.b} ({trees['B']})\n"
                  f"{args.rounds} rounds x {args.epochs} timed epochs, mode={args.mode}, dynamics={args.dynamics}, "
                  f"threads={args.threads}, load average at start {os.getloadavg()[0]:.2f}", flush=True)
            runs: dict[str, list[dict]] = {"A": [], "B": []}
            for i in range(args.rounds):
                for v in "AB":
                    runs[v].append(run_one(trees[v], args))
                a, b = (statistics.median(runs[v][-1]["seconds"]) for v in "AB")
                print(f"round {i + 1}: A {a:.3f} s/epoch  B {b:.3f} s/epoch  A/B {a / b:.2f}  "
                      f"(load {os.getloadavg()[0]:.2f})", flush=True)
        finally:
            for v, spec in (("A", args.a), ("B", args.b)):
                if trees.get(v, Path()).parent == tmp:
                    subprocess.run(["git", "-C", str(REPO), "worktree", "remove", "--force", str(trees[v])], check=False)
    med = {v: statistics.median(statistics.median(r["seconds"]) for r in runs[v]) for v in "AB"}
    pooled = {v: statistics.median(s for r in runs[v] for s in r["seconds"]) for v in "AB"}
    print(f"median of per-run medians: A {med['A']:.3f} s/epoch, B {med['B']:.3f} s/epoch, "
          f"ratio A/B {med['A'] / med['B']:.2f}x (pooled epochs: {pooled['A'] / pooled['B']:.2f}x)")
    la, lb = runs["A"][0], runs["B"][0]
    for key in ("train_loss", "valid_loss"):
        rel = max(abs(x - y) / max(abs(x), 1e-30) for x, y in zip(la[key], lb[key]))
        print(f"{key} per epoch (first round) A {['%.6g' % x for x in la[key]]}\n"
              f"{'':{len(key) + 25}}B {['%.6g' % x for x in lb[key]]}  max rel diff {rel:.1e}")


if __name__ == "__main__":
    main()
