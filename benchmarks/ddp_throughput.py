"""Training throughput of one process versus 2 DDP ranks under torchrun, at a fixed global batch.

    python benchmarks/ddp_throughput.py [--epochs 4] [--trials 160]

Setting: the TARGETS.md reference model (L = 8, r_a = 8, r_b = 4, S = 20, hidden 128 / 64, Poisson,
smoother) on simulated Lorenz data, 70 bins x 45 neurons, global batch 64, no validation split (an
epoch is only training steps: forward, backward, gradient all-reduce, Adam). Three configurations,
each in fresh processes, in one run of this script:

    1 process  x 1 thread         the baseline
    2 ranks    x 1 thread each    torchrun --nproc-per-node 2 (gloo), each rank half of every batch
    1 process  x 2 threads        the same 2 cores used by intra-op threads instead

Reported: median seconds per epoch after a warm-up epoch, trials/s, and the ratios. The final
training loss of each configuration is printed too: the DDP run follows the same optimisation path
as the single process (keyed Monte Carlo draws, train/distributed.py), so the losses agree to
round-off. On a CPU-only machine with 2 cores this measures how well data parallelism uses the
cores, not a multi-GPU speed-up.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys


def worker(args) -> None:
    import torch

    from xfads_cli.config import ModelConfig, TrainConfig
    from xfads_cli.data.simulate import simulate_arrays
    from xfads_cli.model.xfads import XFADS
    from xfads_cli.train.distributed import detect, process_group
    from xfads_cli.train.loop import train_model

    torch.set_num_threads(args.threads)
    d = detect()
    with process_group(d, torch.device("cpu")):
        sim = simulate_arrays("lorenz", neurons=45, trials=args.trials, bins=70, bin_ms=20.0, seed=0,
                              base_rate_hz=10.0, param=None)
        y = torch.tensor(sim["counts"], dtype=torch.float32)
        cfg = ModelConfig(latent_dim=8, rank_local=8, rank_backward=4, samples=20, dynamics_hidden=128,
                          encoder_hidden=64, mode="smoother")
        torch.manual_seed(0)
        model = XFADS.one_session(cfg, 45, torch.ones(45, dtype=torch.bool), dt=0.02)
        model.init_from_data(y)
        res = train_model(model, y, None, TrainConfig(max_epochs=args.epochs + 1, batch_size=args.batch, patience=10**9),
                  seed=0, dist=d).run()
        if d.is_main:
            print("RESULT " + json.dumps({"seconds": [r["seconds"] for r in res.history],
                                          "loss": res.history[-1]["train_loss"]}), flush=True)


def run(cmd: list[str], threads: int) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    done = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit(f"failed: {' '.join(cmd)}\n{done.stderr[-2000:]}")
    line = next(ln for ln in done.stdout.splitlines() if ln.startswith("RESULT "))
    return json.loads(line[len("RESULT "):])


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--epochs", type=int, default=4)
    p.add_argument("--trials", type=int, default=160)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        return worker(args)
    me = [os.path.abspath(__file__), "--worker", "--epochs", str(args.epochs), "--trials", str(args.trials),
          "--batch", str(args.batch)]
    configs = [
        ("1 process  x 1 thread ", [sys.executable, *me, "--threads", "1"], 1),
        ("2 ranks    x 1 thread ", [sys.executable, "-m", "torch.distributed.run", "--standalone",
                                    "--nproc-per-node", "2", *me, "--threads", "1"], 1),
        ("1 process  x 2 threads", [sys.executable, *me, "--threads", "2"], 2),
    ]
    print(f"{args.trials} trials x 70 bins x 45 neurons, global batch {args.batch}, {args.epochs} timed epochs "
          f"(+1 warm-up), {os.cpu_count()} CPU cores")
    rates = []
    for name, cmd, threads in configs:
        res = run(cmd, threads)
        med = statistics.median(res["seconds"][1:])
        rates.append(args.trials / med)
        print(f"{name}: {med:6.3f} s/epoch  {rates[-1]:7.1f} trials/s  final train loss {res['loss']:.6f}", flush=True)
    print(f"2 ranks / 1 process (1 thread): {rates[1] / rates[0]:.2f}x;  "
          f"2 ranks / 1 process with 2 threads: {rates[1] / rates[2]:.2f}x")


if __name__ == "__main__":
    main()
