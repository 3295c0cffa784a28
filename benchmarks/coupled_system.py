"""A benchmark-only synthetic system: two interacting rhythms (numpy + h5py; no xfads imports).

Not one of `xfads simulate`'s systems, so no part of xfads was developed against it. The 4-D latent
state is a fast and a slow noisy limit-cycle oscillator with nonlinear coupling both ways:

    fast z1 = (x1, y1), FAST_HZ:  dz1 = [ lam1 (exp(a y2) - |z1|^2) z1 + w1 (1 + k tanh(x2)) R z1 ] dt + s dW
    slow z2 = (x2, y2), SLOW_HZ:  dz2 = [ lam2 (1 - |z2|^2) z2 + w2 R z2 + g (x1^2 - 1/2) e_x ] dt + s dW

(R = rotation by 90 degrees, w = 2 pi f.) The slow rhythm sets the fast one's amplitude (exp(a y2),
like theta-gamma amplitude coupling) and modulates its frequency (1 + k tanh(x2): +-50 %); the fast
rhythm's power (x1^2) drives the slow one back (measured spectral peaks of the latents: about 2.3 Hz
and 0.75 Hz; the fast one runs below its nominal 3 Hz because tanh(x2) is negative on average). Integrated by Euler-Maruyama with 1 ms steps from
random phases after a 3 s noisy burn-in, sampled at bin centres and standardised per dimension.

Observations: log expected count per bin = C z + d for `neurons` Poisson neurons; each row of C is
random and scaled so that the neuron's log-rate varies over time with a standard deviation drawn in
[0.5, 1.0], and d gives the neuron a mean rate drawn log-uniformly in [5, 20] Hz. A second, independent
Poisson draw from the same rates is stored as truth/retest_counts (test-retest and oracle scores).

Written in xfads' plain HDF5 layout: spikes [trial, time, neuron], root attribute bin_ms,
trial_ids, unit_ids, truth/latents, truth/rates (expected counts per bin), truth/retest_counts.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

NAME = "coupled"
FAST_HZ, SLOW_HZ = 3.0, 0.7
PARAMS = {
    "fast_hz": FAST_HZ, "slow_hz": SLOW_HZ,
    "lam_fast": 4.0, "lam_slow": 1.5,   # radial relaxation rates, 1/s
    "amp_coupling": 0.6,                # a: fast amplitude^2 = exp(a * y2)
    "freq_coupling": 0.5,               # k: fast frequency x (1 + k tanh(x2))
    "drive": 1.5,                       # g: slow x2 driven by x1^2 - 1/2
    "noise": 0.3,                       # s: per sqrt(second), every dimension
    "dt_s": 0.001, "burn_in_s": 3.0,
    "rate_hz": [5.0, 20.0], "modulation_std": [0.5, 1.0],
}


def drift(z: np.ndarray, p: dict = PARAMS) -> np.ndarray:
    """dz/dt for z [trial, 4] = (x1, y1, x2, y2)."""
    x1, y1, x2, y2 = z.T
    w1, w2 = 2 * np.pi * p["fast_hz"], 2 * np.pi * p["slow_hz"]
    r1, r2 = x1 * x1 + y1 * y1, x2 * x2 + y2 * y2
    radial1 = p["lam_fast"] * (np.exp(p["amp_coupling"] * y2) - r1)
    omega1 = w1 * (1.0 + p["freq_coupling"] * np.tanh(x2))
    radial2 = p["lam_slow"] * (1.0 - r2)
    return np.stack([
        radial1 * x1 - omega1 * y1,
        radial1 * y1 + omega1 * x1,
        radial2 * x2 - w2 * y2 + p["drive"] * (x1 * x1 - 0.5),
        radial2 * y2 + w2 * x2,
    ], axis=1)


def latents(trials: int, bins: int, bin_ms: float, rng: np.random.Generator, p: dict = PARAMS) -> np.ndarray:
    """Raw latent states at the bin centres, [trial, bins, 4]."""
    phase = rng.uniform(0, 2 * np.pi, size=(trials, 2))
    radius = rng.uniform(0.5, 1.5, size=(trials, 2))
    z = np.concatenate([radius[:, :1] * np.stack([np.cos(phase[:, 0]), np.sin(phase[:, 0])], 1),
                        radius[:, 1:] * np.stack([np.cos(phase[:, 1]), np.sin(phase[:, 1])], 1)], axis=1)
    dt = p["dt_s"]
    sd = p["noise"] * np.sqrt(dt)

    def advance(z, seconds):
        for _ in range(int(round(seconds / dt))):
            z = z + drift(z, p) * dt + sd * rng.standard_normal(z.shape)
        return z

    z = advance(z, p["burn_in_s"])
    step = bin_ms / 1000.0
    z = advance(z, step / 2)  # trial start -> first bin centre
    out = np.empty((trials, bins, 4))
    for i in range(bins):
        if i:
            z = advance(z, step)
        out[:, i] = z
    if not np.isfinite(out).all():
        raise RuntimeError("coupled-oscillator simulation diverged")
    return out


def simulate(trials: int = 200, bins: int = 70, neurons: int = 45, bin_ms: float = 20.0, seed: int = 0,
             p: dict = PARAMS) -> dict:
    """In memory: latents (standardised), rates (expected counts per bin), counts, retest_counts, C, d."""
    ss = np.random.SeedSequence(seed)
    dyn, obs, first, second = (np.random.default_rng(s) for s in ss.spawn(4))
    z = latents(trials, bins, bin_ms, dyn, p)
    flat = z.reshape(-1, 4)
    z = (z - flat.mean(0)) / flat.std(0)
    flat = z.reshape(-1, 4)
    C = obs.standard_normal((neurons, 4))
    C *= (obs.uniform(*p["modulation_std"], size=neurons) / (flat @ C.T).std(0))[:, None]
    target_hz = np.exp(obs.uniform(*np.log(p["rate_hz"]), size=neurons))
    # d such that the time-averaged rate is exactly target_hz.
    d = np.log(target_hz * bin_ms / 1000.0) - np.log(np.exp(flat @ C.T).mean(0))
    rates = np.exp(z @ C.T + d)
    return {"latents": z, "rates": rates, "counts": first.poisson(rates), "retest_counts": second.poisson(rates),
            "C": C, "d": d, "seed": seed, "bin_ms": float(bin_ms), "params": p}


def write_h5(path: Path, trials: int = 200, bins: int = 70, neurons: int = 45, bin_ms: float = 20.0,
             seed: int = 0) -> dict:
    """Simulate and write the plain HDF5 layout to `path` (atomically). Returns a small summary."""
    import h5py

    sim = simulate(trials, bins, neurons, bin_ms, seed)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.partial-{os.getpid()}{path.suffix}")
    gz = {"compression": "gzip", "shuffle": True}
    try:
        with h5py.File(tmp, "w") as f:
            f.attrs["bin_ms"] = float(bin_ms)
            f.attrs["system"] = NAME
            f.attrs["seed"] = int(seed)
            f.attrs["params_json"] = json.dumps(sim["params"])
            f.attrs["description"] = "benchmarks/coupled_system.py: two coupled noisy oscillators, 4-D latent"
            f.create_dataset("spikes", data=sim["counts"].astype(np.int32), **gz)
            f.create_dataset("trial_ids", data=np.arange(trials, dtype=np.int64))
            f.create_dataset("unit_ids", data=np.arange(neurons, dtype=np.int64))
            truth = f.create_group("truth")
            truth.create_dataset("latents", data=sim["latents"].astype(np.float32), **gz)
            truth.create_dataset("rates", data=sim["rates"].astype(np.float32), **gz)
            truth.create_dataset("retest_counts", data=sim["retest_counts"].astype(np.int32), **gz)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    hz = sim["counts"].mean((0, 1)) / (bin_ms / 1000.0)
    return {"path": str(path), "trials": trials, "bins": bins, "neurons": neurons, "seed": seed,
            "rate_hz_min_median_max": [float(hz.min()), float(np.median(hz)), float(hz.max())]}


if __name__ == "__main__":
    import sys

    print(write_h5(Path(sys.argv[1] if len(sys.argv) > 1 else "coupled.h5"), seed=int(sys.argv[2]) if len(sys.argv) > 2 else 0))
