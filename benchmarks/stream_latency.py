"""Per-bin latency of `xfads stream` (issue 26): from reading an input line to writing its output line,
the path the command runs for every bin (data/live.py parse_bin -> runs/decoder.py CausalDecoder.step
-> outputs/live.py record -> an NDJSON line written and flushed), for a grid of population sizes and
latent dimensions, on one thread by default.

    python benchmarks/stream_latency.py                       # 10/100/1000 units x L 8/16/32/64/128
    python benchmarks/stream_latency.py --units 100 --latents 16 --bins 5000 --horizon 5
    python benchmarks/stream_latency.py --device cuda         # where a GPU exists

The model is untrained (random weights: latency does not depend on them) with the package's default
sizes except the latent dimension (samples 20, encoder 64 hidden units, MLP dynamics 128). Spike
counts are Poisson(0.5) per bin. The first --warmup bins are not timed. Prints p50 / p99 / max in ms
and p99 as a fraction of the bin width (20 ms), and the issue's targets next to the two cells they name.
"""

from __future__ import annotations

import argparse
import json
import os
import time

import numpy as np
import torch

TARGETS = {(100, 16): 1.0, (1000, 64): 5.0}  # (units, L) -> p99 ms (issue 26)


def measure(units: int, latent: int, bins: int, warmup: int, horizon: int, samples: int | None, device: str) -> dict:
    from xfads_cli.config import ModelConfig
    from xfads_cli.data.live import parse_bin
    from xfads_cli.model.xfads import XFADS
    from xfads_cli.outputs.live import NdjsonSink, record
    from xfads_cli.runs.decoder import CausalDecoder

    cfg = ModelConfig(latent_dim=latent)
    torch.manual_seed(0)
    model = XFADS.one_session(cfg, units, torch.ones(units, dtype=torch.bool), 0.02).to(device).eval()
    decoder = CausalDecoder(model.session(0), n_samples=samples or cfg.samples, horizon=horizon,
                            generator=torch.Generator(device=device).manual_seed(0))
    rng = np.random.default_rng(0)
    lines = [json.dumps({"counts": rng.poisson(0.5, units).tolist(), "t": i * 0.02}) for i in range(bins + warmup)]
    ms = []
    with open(os.devnull, "w") as null:
        sink = NdjsonSink(null)
        for i, line in enumerate(lines):
            start = time.perf_counter()
            b = parse_bin(line, units, start)
            out = decoder.step(b.counts)
            sink.write(record(b.t, out.latent_mean, out.latent_var, out.rates, out.forecast))
            if device.startswith("cuda"):
                torch.cuda.synchronize()
            if i >= warmup:
                ms.append((time.perf_counter() - b.received) * 1000.0)
    x = np.asarray(ms)
    return {"units": units, "latent": latent, "p50": float(np.percentile(x, 50)), "p99": float(np.percentile(x, 99)),
            "max": float(x.max())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--units", default="10,100,1000")
    parser.add_argument("--latents", default="8,16,32,64,128")
    parser.add_argument("--bins", type=int, default=2000)
    parser.add_argument("--warmup", type=int, default=100)
    parser.add_argument("--horizon", type=int, default=0)
    parser.add_argument("--samples", type=int, default=None, help="posterior samples per bin (default: the model's, 20)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--device", default="cpu", help="cpu | cuda | cuda:N")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    rows = [measure(u, L, args.bins, args.warmup, args.horizon, args.samples, args.device)
            for u in map(int, args.units.split(",")) for L in map(int, args.latents.split(","))]
    if args.json:
        print(json.dumps(rows, indent=2))
        return
    print(f"{args.threads} thread(s), {args.device}, horizon {args.horizon}, {args.bins} bins each; "
          "latency ms (read line -> line written); p99 / 20 ms bin")
    print(f"{'units':>6} {'L':>4} {'p50':>8} {'p99':>8} {'max':>8} {'p99/bin':>8}  target")
    for r in rows:
        target = TARGETS.get((r["units"], r["latent"]))
        mark = "" if target is None else f"p99 <= {target:g} ms: {'met' if r['p99'] <= target else 'NOT met'}"
        print(f"{r['units']:>6} {r['latent']:>4} {r['p50']:>8.3f} {r['p99']:>8.3f} {r['max']:>8.3f} "
              f"{r['p99'] / 20.0:>8.3f}  {mark}")


if __name__ == "__main__":
    main()
