"""Recovery on simulated Lorenz data: how close does a short CPU fit get to the true rates?

    python benchmarks/recovery.py [--minutes 3] [--neurons 40] [--trials 150]

Prints honest quality numbers (docs/metrics.md): test-retest smoothing bits/spike (smoothed rates of test
trials scored on an independent second draw of counts) and forecast bits/spike (40-bin causal context,
then 20 bins ahead), each next to its oracle computed from the true rates in the same run.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from xfads_cli.config import ModelConfig, TrainConfig
from xfads_cli.data.simulate import simulate_arrays
from xfads_cli.model.xfads import XFADS
from xfads_cli.scoring import bits_per_spike
from xfads_cli.train.loop import train_model


def smoothed_rates(model, y, batch=64):
    with torch.no_grad():
        out = []
        for i in range(0, len(y), batch):
            post = model.posterior(y[i : i + batch])
            out.append(model.rates(post.samples).mean(0))
        return torch.cat(out).numpy()


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--system", default="lorenz")
    p.add_argument("--minutes", type=float, default=3.0)
    p.add_argument("--neurons", type=int, default=40)
    p.add_argument("--trials", type=int, default=150)
    p.add_argument("--bins", type=int, default=100)
    p.add_argument("--latent", type=int, default=8)
    p.add_argument("--mode", default="smoother")
    p.add_argument("--drop", type=float, default=0.2)
    p.add_argument("--context", type=int, default=40)
    p.add_argument("--horizon", type=int, default=20)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--lr", type=float, default=3e-3)
    args = p.parse_args()
    torch.set_num_threads(2)

    sim = simulate_arrays(args.system, neurons=args.neurons, trials=args.trials, bins=args.bins,
                          bin_ms=20.0, seed=args.seed, base_rate_hz=10.0, param=None)
    n = len(sim["counts"])
    rng = np.random.default_rng(args.seed)
    order = rng.permutation(n)
    tr, va, te = order[: int(0.7 * n)], order[int(0.7 * n) : int(0.8 * n)], order[int(0.8 * n) :]
    y = torch.tensor(sim["counts"], dtype=torch.float32)

    mcfg = ModelConfig(latent_dim=args.latent, mode=args.mode)
    tcfg = TrainConfig(max_epochs=100000, time_limit_min=args.minutes, drop_local=args.drop, patience=10**9, batch_size=args.batch, lr=args.lr)
    torch.manual_seed(args.seed)
    model = XFADS.one_session(mcfg, args.neurons, torch.ones(args.neurons, dtype=torch.bool), dt=0.02)
    model.init_from_data(y[tr])
    t0 = time.time()
    res = train_model(model, y[tr], y[va], tcfg, seed=args.seed).run()
    secs = time.time() - t0
    model.eval()

    rates = smoothed_rates(model, y[te])
    retest = sim["retest_counts"][te]
    bps = bits_per_spike(rates, retest)
    oracle = bits_per_spike(sim["rates"][te], retest)

    c, h = args.context, args.horizon
    with torch.no_grad():
        fc = model.forecast(y[te, :c], h, n_samples=200)
    f_rates = fc.rates.mean(0).numpy()
    f_counts = sim["counts"][te, c : c + h]
    fbps = bits_per_spike(f_rates, f_counts)
    f_oracle = bits_per_spike(sim["rates"][te, c : c + h], f_counts)

    print(f"system={args.system} neurons={args.neurons} trials={n} bins={args.bins} L={args.latent} mode={args.mode} "
          f"drop={args.drop} lr={args.lr} batch={args.batch}")
    print(f"trained {len(res.history)} epochs in {secs:.0f} s ({secs / len(res.history):.2f} s/epoch), best epoch {res.best_epoch}")
    print(f"test-retest smoothing bps {bps:.4f}  oracle {oracle:.4f}  ratio {bps / oracle:.3f}")
    print(f"forecast bps (context {c}, horizon {h}) {fbps:.4f}  oracle {f_oracle:.4f}  ratio {fbps / f_oracle:.3f}")


if __name__ == "__main__":
    main()
