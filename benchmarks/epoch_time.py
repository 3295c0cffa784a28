"""Seconds per training epoch of the full XFADS model at the TARGETS.md reference setting.

    python benchmarks/epoch_time.py [--epochs 5] [--mode smoother]

160 training trials x 70 bins x 45 neurons, 20 ms bins, Poisson, L = 8, r_a = 8, r_b = 4, S = 20,
batch 64, hidden widths 128 (dynamics) / 64 (encoders), 2 threads. One epoch = every training batch
forward + backward + Adam step, plus the validation pass the fit loop runs (40 trials). The median
over epochs is reported next to the TARGETS.md figures (the authors' code is not run here, so that
ratio is against the published-on-this-machine figure, not measured in this run).
"""

from __future__ import annotations

import argparse
import statistics

import torch

from xfads_cli.config import ModelConfig, TrainConfig
from xfads_cli.data.simulate import simulate_arrays
from xfads_cli.model.xfads import XFADS
from xfads_cli.train.loop import fit

REFERENCE_S, TARGET_S = 3.8, 1.25


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--epochs", type=int, default=5)
    p.add_argument("--mode", default="smoother")
    args = p.parse_args()
    torch.set_num_threads(2)
    sim = simulate_arrays("lorenz", neurons=45, trials=200, bins=70, bin_ms=20.0, seed=0, base_rate_hz=10.0, param=None)
    y = torch.tensor(sim["counts"], dtype=torch.float32)
    cfg = ModelConfig(latent_dim=8, rank_local=8, rank_backward=4, samples=20, dynamics_hidden=128,
                      encoder_hidden=64, mode=args.mode)
    model = XFADS(cfg, 45, torch.ones(45, dtype=torch.bool), dt=0.02)
    model.init_from_data(y[:160])
    res = fit(model, y[:160], y[160:], TrainConfig(max_epochs=args.epochs + 1, batch_size=64, patience=10**9), seed=0)
    secs = [r["seconds"] for r in res.history[1:]]  # the first epoch includes one-off warm-up
    med = statistics.median(secs)
    print(f"mode={args.mode} epochs timed={len(secs)} seconds/epoch median {med:.3f} (min {min(secs):.3f}, max {max(secs):.3f})")
    print(f"TARGETS.md: reference code {REFERENCE_S} s/epoch, target <= {TARGET_S} s; "
          f"speed-up over the reference figure {REFERENCE_S / med:.2f}x")


if __name__ == "__main__":
    main()
