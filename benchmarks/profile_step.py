"""Where one training step's time goes at the TARGETS.md reference setting (forward + backward).

    python benchmarks/profile_step.py [--threads 2] [--reps 7] [--rows 30] [--by-shape]
    PYTHONPATH=/path/to/other/checkout python benchmarks/profile_step.py   # another version

Reference setting as benchmarks/epoch_time.py: 64 trials x 70 bins x 45 neurons, L = 8, r_a = 8,
r_b = 4, S = 20, hidden 128 / 64, smoother mode, the training loss's per-trial draws. Prints

1. wall-clock medians of the step and of its parts, each forward + backward on its own: encoders
   (local MLP + backward GRU), the filter (`low_rank_filter` on fixed potentials, loss = samples + KL),
   the likelihood (readout + log_prob on fixed samples), the training draws;
2. a torch.profiler table of one step's ops (self CPU time), optionally grouped by input shape.

The profiler adds a few microseconds per op, which inflates the share of the many small ops of the
filter's time loop; the wall-clock split in 1. is the one to quote. On a loaded machine with 2 threads
the numbers are meaningless (every OpenMP parallel region can wait for a scheduler slice): use
--threads 1 there, or epoch_time_ab.py for a comparison.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch


def build():
    from xfads_cli.config import ModelConfig
    from xfads_cli.data.simulate import simulate_arrays
    from xfads_cli.model.xfads import XFADS

    sim = simulate_arrays("lorenz", neurons=45, trials=200, bins=70, bin_ms=20.0, seed=0, base_rate_hz=10.0, param=None)
    y = torch.tensor(sim["counts"], dtype=torch.float32)
    cfg = ModelConfig(latent_dim=8, rank_local=8, rank_backward=4, samples=20, dynamics_hidden=128,
                      encoder_hidden=64, mode="smoother")
    torch.manual_seed(0)
    model = XFADS.one_session(cfg, 45, torch.ones(45, dtype=torch.bool), dt=0.02)
    model.init_from_data(y[:160])
    return model, y[:64]


def median_ms(fn, reps: int) -> float:
    for _ in range(2):
        fn()
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return 1e3 * statistics.median(times)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--reps", type=int, default=7)
    p.add_argument("--rows", type=int, default=30)
    p.add_argument("--by-shape", action="store_true", help="group the profiler table by input shapes")
    args = p.parse_args()
    torch.set_num_threads(args.threads)

    import xfads_cli
    from xfads_cli.model.filtering import low_rank_filter
    from xfads_cli.train.draws import trial_draws

    model, y = build()
    keys = list(range(y.shape[0]))
    noise, keep = trial_draws(model, y, keys, 0.2)[:2]

    def step():
        model.zero_grad(set_to_none=True)
        (-model.elbo(y, noise=noise, local_mask=keep).elbo.sum()).backward()

    def encoders():
        a, A, _ = model.local(y)
        b, B = model.backward(a, A)
        (a.sum() + A.sum() + b.sum() + B.sum()).backward()

    with torch.no_grad():
        a, A, _ = model.local(y)
        b, B = model.backward(a, A)
        a, A = a * keep[..., None], A * keep[..., None, None]
    pot = [x.detach().requires_grad_() for x in (a, A, b, B)]

    def run_filter():
        return low_rank_filter(model.dynamics, model.m0, model.q0(), model.q(), *pot, n_samples=model.cfg.samples,
                               noise=noise)

    def filt():
        post = run_filter()
        (post.samples.sum() + post.kl.sum()).backward()

    with torch.no_grad():
        samples = run_filter().samples
    samples.requires_grad_()

    def likelihood():
        model.sessions[0].likelihood.log_prob(model.eta(samples), y).sum(-1).mean(0).sum(-1).sum().backward()

    print(f"xfads_cli from {xfads_cli.__file__}, threads={args.threads}")
    parts = {"step (forward + backward)": step, "  encoders": encoders, "  filter": filt,
             "  likelihood": likelihood, "  training draws": lambda: trial_draws(model, y, keys, 0.2)}
    for name, fn in parts.items():
        print(f"{name:28s} {median_ms(fn, args.reps):8.1f} ms")
    with torch.no_grad():
        print(f"{'filter forward, no grad':28s} {median_ms(run_filter, args.reps):8.1f} ms")

    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], record_shapes=args.by_shape) as prof:
        for _ in range(3):
            step()
    table = prof.key_averages(group_by_input_shape=args.by_shape)
    total = sum(e.self_cpu_time_total for e in table)
    print(f"\nprofiler, 3 steps: {total / 3e3:.1f} ms self CPU per step (profiler overhead included), "
          f"{sum(e.count for e in table if e.key.startswith('aten::')) / 3:.0f} aten calls per step")
    print(table.table(sort_by="self_cpu_time_total", row_limit=args.rows, max_name_column_width=40,
                      max_shapes_column_width=70))


if __name__ == "__main__":
    main()
