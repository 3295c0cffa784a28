"""Cost of one training step versus latent size L: the low-rank filter against a dense O(L^3) filter.

    python benchmarks/scaling.py [--quick] [--latents 16,32,64,128,256,512] [--repeats 3]

One training step = forward + backward + Adam step of: `low_rank_filter` (smoother mode) with a
residual MLP dynamics (hidden 128, SiLU), linear heads on a fixed random input standing in for the
encoders (outputs a, A, b, B), and a Poisson likelihood (exp link) on the posterior samples.
Fixed: T = 70 bins, batch 64, 45 neurons, S = 20, r_a = 8, r_b = 4, 2 threads (TARGETS.md).

The dense comparator runs the same model but forms Pbar = diag(q) + M M^T as an L x L matrix and
does the update in dense information form (P^{-1} = Pbar^{-1} + K K^T) with L x L Cholesky factors
and an inverse: O(L^3) per trial and step. It is skipped at an L where its predicted step time
exceeds --max-seconds or its predicted memory exceeds --max-dense-gb (or 60% of available RAM),
both extrapolated from the L already measured.

Method: every (method, L) runs in a fresh subprocess: it builds the model, runs one untimed warm-up
step, then --repeats timed steps; the reported time is the median step (wall clock). Peak memory is
that subprocess's resource.getrusage(RUSAGE_SELF).ru_maxrss after the steps, i.e. the peak resident
set of the whole process including the ~0.3 GB of the torch import ("base" column: ru_maxrss after
setup, before the first step). Wall-clock numbers are only meaningful on an otherwise idle machine:
with 2 OpenMP threads, a competing process stalls every parallel region.
"""

from __future__ import annotations

import argparse
import json
import math
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

B, T, N, S, R_A, R_B, HIDDEN = 64, 70, 45, 20, 8, 4, 128
FULL = (16, 32, 64, 128, 256, 512)
QUICK = (16, 64, 256)


# ----------------------------------------------------------------------------------------------
# worker: one (method, L) configuration, run in its own process


def dense_filter(dynamics, m0, q0, q, k, K, n_samples, eps):
    """The same smoother-mode filter with dense L x L algebra.

    k [batch, time, latent], K [batch, time, latent, rank], eps [time, batch, sample, latent]
    -> (samples [sample, batch, time, latent], kl [batch, time]).
    """
    import torch

    Bn, Tn, L = k.shape
    samples, kls = [], []
    z = None
    for t in range(Tn):
        if t == 0:
            mbar = m0.expand(Bn, L)
            Pbar = torch.diag_embed(q0.expand(Bn, L))
        else:
            mu = dynamics(z.transpose(0, 1)).transpose(0, 1)
            mbar = mu.mean(1)
            Mt = (mu - mbar.unsqueeze(1)) / math.sqrt(n_samples)
            Pbar = torch.diag_embed(q.expand(Bn, L)) + Mt.transpose(1, 2) @ Mt
        Kt = K[:, t]
        Lp = torch.linalg.cholesky(Pbar)
        Pinv = torch.cholesky_inverse(Lp)
        J = Pinv + Kt @ Kt.transpose(1, 2)  # posterior precision
        LJ = torch.linalg.cholesky(J)
        m = torch.cholesky_solve(Pinv @ mbar.unsqueeze(-1) + k[:, t].unsqueeze(-1), LJ).squeeze(-1)
        # P = J^{-1} = LJ^{-T} LJ^{-1}, so LJ^{-T} eps has covariance P
        dev = torch.linalg.solve_triangular(LJ.transpose(1, 2), eps[t].transpose(1, 2), upper=True)
        z = m.unsqueeze(1) + dev.transpose(1, 2)
        # tr(Pbar^{-1} P) = tr((J - K K^T) J^{-1}) = L - |LJ^{-1} K|^2: P itself is never formed
        trace = L - torch.linalg.solve_triangular(LJ, Kt, upper=False).square().sum((-2, -1))
        delta = m - mbar
        quad = (delta * (Pinv @ delta.unsqueeze(-1)).squeeze(-1)).sum(-1)
        logdet = 2 * (Lp.diagonal(dim1=-2, dim2=-1).log().sum(-1) + LJ.diagonal(dim1=-2, dim2=-1).log().sum(-1))
        kls.append(0.5 * (trace - L + quad + logdet))
        samples.append(z.transpose(0, 1))
    return torch.stack(samples, 2), torch.stack(kls, 1)


def worker(method: str, L: int, repeats: int, warmup: int, checkpoint_steps: int) -> dict:
    import torch
    from torch import nn

    from xfads_cli.model.filtering import low_rank_filter

    torch.set_num_threads(2)
    torch.manual_seed(0)
    hidden = nn.Sequential(nn.Linear(L, HIDDEN), nn.SiLU())
    out = nn.Linear(HIDDEN, L)
    nn.init.normal_(out.weight, std=1e-3)
    dynamics = lambda z: z + out(hidden(z))
    readout = nn.Linear(L, N)
    # the random stand-in potentials let the latent drift to |z| ~ 10-30 over 70 bins; a small
    # readout keeps exp(eta) finite at every L
    nn.init.normal_(readout.weight, std=0.1 / math.sqrt(L))
    raw_q, raw_q0, m0 = (nn.Parameter(torch.full((L,), v)) for v in (-2.0, 0.0, 0.0))
    # encoder stand-in: linear heads on a fixed random input, so the potentials are activations
    # (transient gradients, small parameters) as with the real encoders
    x = torch.randn(B, T, 32)
    heads = nn.ModuleList(nn.Linear(32, n) for n in (L, L * R_A, L, L * R_B))
    for h in heads:
        nn.init.normal_(h.weight, std=0.3 / math.sqrt(32))
    y = torch.poisson(torch.full((B, T, N), 0.5))
    params = [*hidden.parameters(), *out.parameters(), *readout.parameters(), *heads.parameters(), raw_q, raw_q0, m0]
    opt = torch.optim.Adam(params, lr=1e-3)

    def step():
        a, A, b, Bk = (h(x) for h in heads)
        A, Bk = A.unflatten(-1, (L, R_A)), Bk.unflatten(-1, (L, R_B))
        q = nn.functional.softplus(raw_q).clamp_min(1e-4)
        q0 = nn.functional.softplus(raw_q0).clamp_min(1e-2)
        if method == "lowrank":
            post = low_rank_filter(dynamics, m0, q0, q, a, A, b, Bk, n_samples=S, checkpoint_steps=checkpoint_steps)
            samples, kl = post.samples, post.kl
        else:
            eps = torch.randn(T, B, S, L)
            samples, kl = dense_filter(dynamics, m0, q0, q, a + b, torch.cat([A, Bk], -1), S, eps)
        eta = readout(samples)
        loglik = (y * eta - eta.exp() - torch.lgamma(y + 1)).sum(-1).mean(0).sum()
        loss = -(loglik - kl.sum()) / B
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    for _ in range(warmup):
        step()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        step()
        times.append(time.perf_counter() - t0)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"method": method, "L": L, "time": statistics.median(times), "times": times,
            "peak_mb": peak, "base_mb": base}


# ----------------------------------------------------------------------------------------------
# driver


def mem_available_mb() -> float:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 8192.0


def predict_dense(done: list[dict], L: int) -> tuple[float, float]:
    """(seconds, MB) of a dense step at L, extrapolated from the measured ones: time with the exponent
    seen between the last two points (clipped to [2, 3]; 3 with one point), memory above the
    import baseline as L^2 (the saved per-step factors are batch x L x L)."""
    if not done:
        return 0.0, 0.0
    last = done[-1]
    e = 3.0
    if len(done) >= 2:
        prev = done[-2]
        e = min(3.0, max(2.0, math.log(last["time"] / prev["time"]) / math.log(last["L"] / prev["L"])))
    ratio = L / last["L"]
    return last["time"] * ratio**e, last["base_mb"] + (last["peak_mb"] - last["base_mb"]) * ratio**2


def run(method: str, L: int, repeats: int, warmup: int, timeout: float, checkpoint_steps: int) -> dict | None:
    cmd = [sys.executable, __file__, "--worker", method, "--latents", str(L), "--repeats", str(repeats),
           "--warmup", str(warmup), "--checkpoint-steps", str(checkpoint_steps)]
    try:
        res = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=ROOT)
    except subprocess.TimeoutExpired:
        print(f"  {method} L={L}: timed out after {timeout:.0f} s", flush=True)
        return None
    if res.returncode != 0:
        print(f"  {method} L={L}: failed\n{res.stderr[-2000:]}", flush=True)
        return None
    return json.loads(res.stdout.strip().splitlines()[-1])


def exponent(rows: list[dict], lo: int = 64, hi: int = 512) -> float | None:
    pts = [(math.log(r["L"]), math.log(r["time"])) for r in rows if lo <= r["L"] <= hi]
    if len(pts) < 2:
        return None
    mx = sum(x for x, _ in pts) / len(pts)
    my = sum(y for _, y in pts) / len(pts)
    return sum((x - mx) * (y - my) for x, y in pts) / sum((x - mx) ** 2 for x, _ in pts)


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help=f"L in {QUICK}, one timed step")
    p.add_argument("--latents", default=None, help="comma-separated L values")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--max-seconds", type=float, default=60.0, help="skip dense steps predicted to take longer")
    p.add_argument("--max-dense-gb", type=float, default=8.0, help="skip dense steps predicted to need more memory")
    p.add_argument("--checkpoint-steps", type=int, default=0, help="low_rank_filter checkpoint_steps")
    p.add_argument("--no-dense", action="store_true")
    p.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = p.parse_args()

    if args.worker:
        print(json.dumps(worker(args.worker, int(args.latents), args.repeats, args.warmup, args.checkpoint_steps)))
        return

    latents = tuple(int(x) for x in args.latents.split(",")) if args.latents else (QUICK if args.quick else FULL)
    repeats = 1 if args.quick else args.repeats
    print(f"one training step: T={T}, batch={B}, neurons={N}, S={S}, r_a={R_A}, r_b={R_B}, "
          f"MLP hidden {HIDDEN}, 2 threads; median of {repeats} step(s) after {args.warmup} warm-up", flush=True)
    rows = {"lowrank": [], "dense": []}
    for L in latents:
        r = run("lowrank", L, repeats, args.warmup, 30 * args.max_seconds, args.checkpoint_steps)
        if r:
            rows["lowrank"].append(r)
            print(f"  lowrank L={L}: {r['time']:.3f} s, peak {r['peak_mb']:.0f} MB", flush=True)
    if not args.no_dense:
        done: list[dict] = []
        for L in latents:
            predicted_s, predicted_mb = predict_dense(done, L)
            if predicted_s > args.max_seconds:
                print(f"  dense L={L}: skipped (predicted {predicted_s:.0f} s per step)", flush=True)
                continue
            if predicted_mb > min(1024 * args.max_dense_gb, 0.6 * mem_available_mb()):
                print(f"  dense L={L}: skipped (predicted {predicted_mb / 1024:.1f} GB)", flush=True)
                continue
            # long dense steps: no warm-up, one repeat
            long = predicted_s > 5.0
            r = run("dense", L, 1 if long else repeats, 0 if long else args.warmup,
                    10 * args.max_seconds + 60, 0)
            if r:
                rows["dense"].append(r)
                done.append(r)
                print(f"  dense   L={L}: {r['time']:.3f} s, peak {r['peak_mb']:.0f} MB", flush=True)

    lr = {r["L"]: r for r in rows["lowrank"]}
    dn = {r["L"]: r for r in rows["dense"]}
    print()
    print(f"{'L':>5} | {'low-rank s':>10} {'peak MB':>8} {'base MB':>8} | {'dense s':>8} {'peak MB':>8} | {'dense/low-rank':>14}")
    print("-" * 80)
    for L in latents:
        a, d = lr.get(L), dn.get(L)
        fa = f"{a['time']:10.3f} {a['peak_mb']:8.0f} {a['base_mb']:8.0f}" if a else f"{'-':>10} {'-':>8} {'-':>8}"
        fd = f"{d['time']:8.3f} {d['peak_mb']:8.0f}" if d else f"{'skipped':>8} {'-':>8}"
        ratio = f"{d['time'] / a['time']:14.1f}" if a and d else f"{'-':>14}"
        print(f"{L:>5} | {fa} | {fd} | {ratio}")
    for name, rs in rows.items():
        e = exponent(rs)
        used = [r["L"] for r in rs if 64 <= r["L"] <= 512]
        print(f"log-log exponent of step time in L, {name}: "
              + (f"{e:.2f} (over L = {used})" if e is not None else "n/a (needs >= 2 points in 64..512)"))


if __name__ == "__main__":
    main()
