"""Does torch.compile make one filter bin faster? (issue 26 part 2, a probe, not a fix)

    python benchmarks/compile_probe.py [--batch 64] [--threads 2]

Times the forward of one low-rank filter bin at the reference sizes (batch 64, S = 20, L = 8, rank
r_a + r_b = 12), written as model/filter_bin.py's fused step computes it: the prediction's moments and
[Pbar K, v] before the Cholesky factorisation, the triangular solve, mean, Matheron draws and variances
after it (the Cholesky with its failure check stays eager: the check needs the host). Eager torch
against the same two functions compiled by torch.compile (inductor, fullgraph, static shapes), in one
process, after warm-up; prints microseconds per bin, the compile time and the largest difference.
"""

from __future__ import annotations

import argparse
import time

import torch
from torch import baddbmm, bmm


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--bins", type=int, default=300)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
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
