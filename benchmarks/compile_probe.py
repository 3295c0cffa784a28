"""Does torch.compile make one filter bin faster? (issue 26 part 2, a probe, not a fix)

    python benchmarks/compile_probe.py [--batch 64] [--threads 2]
    python benchmarks/compile_probe.py --dynamics [--threads 1]

Times the forward of one low-rank filter bin at the reference sizes (batch 64, S = 20, L = 8, rank
r_a + r_b = 12), written as model/filter_bin.py's fused step computes it: the prediction's moments and
[Pbar K, v] before the Cholesky factorisation, the triangular solve, mean, Matheron draws and variances
after it (the Cholesky with its failure check stays eager: the check needs the host). Eager torch
against the same two functions compiled by torch.compile (inductor, fullgraph, static shapes), in one
process, after warm-up; prints microseconds per bin, the compile time and the largest difference.

--dynamics: the other half of a training bin, f's forward + backward on the batch's particles
([batch, S = 20, L = 8], hidden 128) for the MLP and the GRU dynamics, eager against torch.compile'd
(the whole module, static shapes), with the multiply-adds of the GRU's matrix products and the rate
they run at: the GRU's bin is bound by those products, not by per-op overhead.
"""

from __future__ import annotations

import argparse
import time

import torch
from torch import baddbmm, bmm


def dynamics_probe(batch: int, bins: int) -> None:
    """f forward + backward per bin, eager vs compiled, MLP and GRU dynamics at the reference sizes."""
    from xfads_cli.model.dynamics import GRUDynamics, MLPDynamics

    S, L, H = 20, 8, 128
    for name, make, reps in (("mlp", lambda: MLPDynamics(L, H), bins), ("gru", lambda: GRUDynamics(L, H), bins // 3)):
        torch.manual_seed(0)
        f = make()
        z = torch.randn(batch, S, L, requires_grad=True)

        def ms_per_bin(fn) -> float:
            def run():
                y = fn(z)
                y.backward(torch.ones_like(y))
            for _ in range(10):
                run()
            start = time.perf_counter()
            for _ in range(reps):
                run()
            return (time.perf_counter() - start) / reps * 1e3

        eager = ms_per_bin(f)
        start = time.perf_counter()
        fc = torch.compile(f, dynamic=False)
        fc(z).sum().backward()
        compile_s = time.perf_counter() - start
        compiled, eager_again = ms_per_bin(fc), ms_per_bin(f)
        line = (f"{name}: f forward + backward, batch {batch}: eager {eager:.2f} / {eager_again:.2f} ms per bin, "
                f"compiled {compiled:.2f} ms (compile {compile_s:.1f} s)")
        if name == "gru":
            # per particle: W_in (L x H), gates (H x 2H), candidate (H x H), W_out (H x L); backward ~2x forward
            macs = 3 * batch * S * (L * H + 2 * H * H + H * H + H * L)
            line += f"; {macs / 1e6:.0f} M multiply-adds per bin, {2 * macs / (min(eager, eager_again) * 1e6):.0f} GFLOP/s"
        print(line)
    # the ceiling: the GRU's largest product alone, [batch * S, H] x [H, 2H]
    a, w = torch.randn(batch * S, H), torch.randn(2 * H, H)
    for _ in range(10):
        a @ w.T
    start = time.perf_counter()
    for _ in range(bins):
        a @ w.T
    sec = (time.perf_counter() - start) / bins
    print(f"one [{batch * S}, {H}] x [{H}, {2 * H}] product alone: {2 * batch * S * H * 2 * H / sec / 1e9:.0f} GFLOP/s")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--bins", type=int, default=300)
    p.add_argument("--dynamics", action="store_true", help="probe f (MLP, GRU) instead of the filter bin")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    if args.dynamics:
        dynamics_probe(args.batch, args.bins)
        return
    B, S, L, r = args.batch, 20, 8, 12
    g = torch.Generator().manual_seed(0)
    mu, X = torch.randn(B, S, L, generator=g), torch.randn(B, L, r + 1, generator=g) * 0.3
    d = torch.rand(L, generator=g) + 0.1
    DX, eye = d[:, None] * X, torch.eye(r).expand(B, r, r)
    w1, dw2, u = torch.randn(B, S, S, generator=g), torch.randn(B, S, L, generator=g), torch.randn(B, S, r, generator=g)

    def before(mu, X, DX):
        mbar = mu.mean(1)
        Mt = (mu - mbar.unsqueeze(1)) * (S ** -0.5)
        PX = baddbmm(DX, Mt.transpose(1, 2), bmm(Mt, X))
        PX = torch.cat([PX[..., :r], PX[..., r:] + mbar.unsqueeze(-1)], -1)
        KP = bmm(X[..., :r].transpose(1, 2), PX)
        return Mt, PX, KP, KP[..., :r] + torch.eye(r)

    def after(chol, eye, PX, KP, Mt, X, w1, dw2, u):
        Linv = torch.linalg.solve_triangular(chol, eye, upper=False)
        Uinv = Linv.transpose(-1, -2) @ Linv
        PK = PX[..., :r]
        Z = bmm(Uinv, PK.transpose(1, 2))
        mean = baddbmm(PX[..., r:], Z.transpose(1, 2), KP[..., r:], alpha=-1.0).transpose(1, 2)
        zt = baddbmm(dw2, w1, Mt)
        z = baddbmm(zt + mean, baddbmm(u, zt, X[..., :r]), Z, alpha=-1.0)
        return mean, z, Uinv, (PK * Z.transpose(1, 2)).sum(-1), Mt.square().sum(1)

    def one_bin(first, second):
        Mt, PX, KP, U = first(mu, X, DX)
        chol, info = torch.linalg.cholesky_ex(U)
        assert not bool(info.any())
        return second(chol, eye, PX, KP, Mt, X, w1, dw2, u)

    def us_per_bin(first, second) -> float:
        for _ in range(20):
            one_bin(first, second)
        start = time.perf_counter()
        for _ in range(args.bins):
            one_bin(first, second)
        return (time.perf_counter() - start) / args.bins * 1e6

    with torch.no_grad():
        eager = us_per_bin(before, after)
        start = time.perf_counter()
        cb, ca = (torch.compile(f, dynamic=False, fullgraph=True) for f in (before, after))
        one_bin(cb, ca)
        compile_s = time.perf_counter() - start
        diff = max((a - b).abs().max().item() for a, b in zip(one_bin(before, after), one_bin(cb, ca)))
        compiled = us_per_bin(cb, ca)
        eager_again = us_per_bin(before, after)
    print(f"batch {B}, {args.threads} thread(s): eager {eager:.0f} / {eager_again:.0f} us per bin, compiled "
          f"{compiled:.0f} us per bin (compile {compile_s:.1f} s, max difference {diff:.1e})")


if __name__ == "__main__":
    main()
