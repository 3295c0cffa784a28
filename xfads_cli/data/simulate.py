"""Synthetic spike recordings with known ground truth (numpy only; no torch).

Every system is a low-dimensional latent process z_t observed through Poisson neurons:

    log-rate_n(t) = C_n . z_t + d_n,        counts_n(t) ~ Poisson(exp(log-rate_n(t)))

with z standardised (zero mean, unit variance per dimension over all trials and bins), `C`
random and `d` set so that each neuron fires at about `base_rate_hz` on average. Rates are
expected counts per bin; in Hz they are divided by the bin width. A second, independent draw of
counts from the same rates ("retest") bounds what any model can achieve on held-out data.

Dynamics run in physical time: each system has a `time_scale` (system time units per second), so
the bin width changes the resolution of a trial, not its dynamics. The state is integrated with
RK4 substeps (at most `max_step` system time units) plus additive Gaussian process noise
(Euler-Maruyama), and sampled at bin centres.

The `task` system is driven from outside as well: each trial has a condition (0..3) and two events,
a stimulus and a go cue, and at each event the latent state receives a short pulse (section "Task
family" below). Its trials also carry `conditions` [trial] and `events` {name: [trial] seconds from
the trial's start}, written to the files as a trials table's columns (NWB) or datasets (HDF5).

Writing them to .nwb / .h5 files is the simulate command (commands/simulate.py).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Callable

import numpy as np

from xfads_cli.errors import UsageError, closest, listing

SYSTEMS = ("lorenz", "vdp", "ring", "duffing", "hopf", "task")

DESCRIPTIONS = {
    "lorenz": "3-D chaotic Lorenz attractor (sigma 10, beta 8/3); param = rho (default 28)",
    "vdp": "2-D noisy Van der Pol limit cycle; param = mu, the nonlinearity (default 1.5, >= 0)",
    "ring": "2-D ring attractor: noisy rotation on the unit circle; param = rotation frequency in Hz (default 0.75)",
    "duffing": "2-D noisy Duffing oscillator x'' + 0.3x' - alpha x + x^3 = noise; param = alpha "
    "(default 1: double well; < 0: single well)",
    "hopf": "2-D Hopf normal form r' = mu r - r^3, theta' = omega; param = mu (default 1: limit cycle; "
    "< 0: stable focus)",
    "task": "3-D damped rotation driven by a task: 4 conditions, a stimulus pulse (condition-specific, at 25% of "
    "the trial) and a go pulse (common, random gain, at 60%); param = the go cue's jitter in s (default 0.1, +-)",
}

# Gap between consecutive trials in the NWB file, in bins: trials are separate windows of time.
TRIAL_GAP_BINS = 10
# Spike times are samples of a 30 kHz clock (a typical extracellular acquisition rate), finer for bins
# under 4 samples; the Units table's `resolution` is 1 / this rate (spike_sample_rate_hz).
SPIKE_SAMPLE_RATE_HZ = 30_000.0
# Spikes are kept strictly inside their bin (this many samples from either edge at least) so that
# re-binning never moves one across an edge.
SPIKE_MARGIN_SAMPLES = 0.25
# Standard deviation over time of each neuron's log-rate modulation, drawn per neuron.
MODULATION_STD = (0.5, 1.0)
# Per-neuron spread of mean firing rates around base_rate_hz (log-normal sd).
RATE_JITTER = 0.4
SESSION_START = datetime(2020, 1, 1, tzinfo=timezone.utc)


# --------------------------------------------------------------------------------------------
# Dynamical systems
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class System:
    """One latent dynamical system dz/dt = drift(z) + noise * dW/dt (in system time units).

    drift:      f(z, params) for z of shape [trial, latent]
    initial:    draws starting states [trial, latent] from (rng, n_trial, params)
    time_scale: system time units per second of recording
    max_step:   largest integration substep in system time units
    noise:      process noise standard deviation per sqrt(system time unit), per latent dimension
    burn_in:    system time integrated (noise-free) before the trial starts, e.g. to land on an attractor
    """

    name: str
    latent_dim: int
    param_name: str
    param_default: float
    param_range: tuple[float, float]
    constants: dict
    drift: Callable[[np.ndarray, dict], np.ndarray]
    initial: Callable[[np.random.Generator, int, dict], np.ndarray]
    time_scale: float
    max_step: Callable[[dict], float]
    noise: tuple[float, ...]
    burn_in: float = 0.0

    def params(self, param: float | None) -> dict:
        """All constants of this system, with the free parameter set (default when None)."""
        value = self.param_default if param is None else float(param)
        lo, hi = self.param_range
        if not (math.isfinite(value) and lo <= value <= hi):
            raise UsageError(
                f"--param for '{self.name}' is {self.param_name}, which must lie in [{lo:g}, {hi:g}]; got {param}"
            )
        return {**self.constants, self.param_name: value}


def _lorenz_drift(z, p):
    """x' = sigma (y - x), y' = x (rho - z) - y, z' = x y - beta z."""
    x, y, w = z[:, 0], z[:, 1], z[:, 2]
    return np.stack([p["sigma"] * (y - x), x * (p["rho"] - w) - y, x * y - p["beta"] * w], axis=1)


def _lorenz_initial(rng, n, p):
    # Anywhere in the basin; the noise-free burn-in then carries each start onto the attractor.
    return rng.uniform([-15.0, -20.0, 5.0], [15.0, 20.0, 40.0], size=(n, 3))


def _vdp_drift(z, p):
    """x' = y, y' = mu (1 - x^2) y - x."""
    x, y = z[:, 0], z[:, 1]
    return np.stack([y, p["mu"] * (1.0 - x * x) * y - x], axis=1)


def _vdp_initial(rng, n, p):
    return rng.uniform(-3.0, 3.0, size=(n, 2))


def _ring_drift(z, p):
    """In polar form theta' = 2 pi freq_hz, r' = relax (1 - r): rotation at a fixed speed, with the
    radius pulled back onto the unit circle."""
    r = np.sqrt(np.sum(z * z, axis=1, keepdims=True))
    radial = p["relax"] * (1.0 - r) / np.maximum(r, 1e-9)
    omega = 2.0 * np.pi * p["freq_hz"]
    rot = np.stack([-z[:, 1], z[:, 0]], axis=1)
    return radial * z + omega * rot


def _ring_initial(rng, n, p):
    angle = rng.uniform(0.0, 2.0 * np.pi, size=n)
    radius = rng.uniform(0.5, 1.5, size=n)
    return radius[:, None] * np.stack([np.cos(angle), np.sin(angle)], axis=1)


def _duffing_drift(z, p):
    """x' = v, v' = -delta v + alpha x - beta x^3: a double well at x = +-sqrt(alpha / beta) for
    alpha > 0, a single (hardening) well at 0 for alpha <= 0."""
    x, v = z[:, 0], z[:, 1]
    return np.stack([v, -p["delta"] * v + p["alpha"] * x - p["beta"] * x**3], axis=1)


def _duffing_initial(rng, n, p):
    return np.stack([rng.uniform(-2.0, 2.0, size=n), rng.uniform(-1.0, 1.0, size=n)], axis=1)


def _hopf_drift(z, p):
    """Cartesian form of r' = mu r - r^3, theta' = omega (no singularity at r = 0)."""
    r2 = np.sum(z * z, axis=1, keepdims=True)
    rot = np.stack([-z[:, 1], z[:, 0]], axis=1)
    return (p["mu"] - r2) * z + p["omega"] * rot


def _hopf_initial(rng, n, p):
    angle = rng.uniform(0.0, 2.0 * np.pi, size=n)
    radius = rng.uniform(0.2, 2.0, size=n)
    return radius[:, None] * np.stack([np.cos(angle), np.sin(angle)], axis=1)


# --------------------------------------------------------------------------------------------
# Task family: a latent driven by pulses at set times, in conditions
# --------------------------------------------------------------------------------------------

N_CONDITIONS = 4
STIMULUS_AT = 0.25  # stimulus onset, as a fraction of the trial
GO_AT = 0.6  # go cue before its jitter, as a fraction of the trial
GO_GAIN_SD = 0.3  # sd of the log of the go pulse's per-trial gain
PULSE_S = 0.15  # duration of each input pulse (a raised-cosine bump)
TASK_EVENTS = ("stimulus_time", "go_time")


def _task_drift(z, p):
    """Damped rotation of (z0, z1) at freq_hz decaying at `damping` per second, slower decay of z2, and
    a mild cubic saturation (-sat |z|^2 z) that keeps large pulses from adding up linearly."""
    x, y, w = z[:, 0], z[:, 1], z[:, 2]
    omega = 2.0 * np.pi * p["freq_hz"]
    linear = np.stack([-p["damping"] * x - omega * y, omega * x - p["damping"] * y, -p["slow_decay"] * w], axis=1)
    return linear - p["saturation"] * np.sum(z * z, axis=1, keepdims=True) * z


def _task_initial(rng, n, p):
    # Small: before the stimulus the population sits near its baseline; trials differ by this and the noise.
    return p["initial_sd"] * rng.standard_normal((n, 3))


def task_design(rng: np.random.Generator, trials: int, duration_s: float, jitter_s: float) -> dict:
    """The task's per-trial draws: conditions [trial] int in 0..3 (balanced, in random order),
    stimulus_time and go_time [trial] in seconds from the trial's start (go: GO_AT of the trial plus a
    uniform +-jitter_s, kept inside the trial) and go_gain [trial] (log-normal, sd GO_GAIN_SD)."""
    conditions = rng.permutation(np.resize(np.arange(N_CONDITIONS), trials))
    go = GO_AT * duration_s + rng.uniform(-jitter_s, jitter_s, size=trials)
    return {
        "conditions": conditions.astype(np.int64),
        "stimulus_time": np.full(trials, STIMULUS_AT * duration_s),
        "go_time": np.clip(go, 0.0, duration_s),
        "go_gain": np.exp(GO_GAIN_SD * rng.standard_normal(trials)),
    }


def _pulse(t: np.ndarray) -> np.ndarray:
    """Raised-cosine bump over [0, PULSE_S] with unit integral (1/s), t in seconds after the event."""
    inside = (t >= 0.0) & (t <= PULSE_S)
    return np.where(inside, (1.0 - np.cos(2.0 * np.pi * t / PULSE_S)) / PULSE_S, 0.0)


def task_drive(design: dict, p: dict) -> Callable[[float], np.ndarray]:
    """u(t) [trial, latent] at t seconds after the trial's start: B_c pulse(t - stimulus) with B_c the
    condition's direction (4 directions 90 degrees apart in the rotation plane), plus
    gain * g pulse(t - go) with g one direction common to all trials. Both pulses integrate to
    their amplitude: each event moves z by about that much."""
    angle = 2.0 * np.pi * design["conditions"] / N_CONDITIONS
    stim = p["stimulus_amp"] * np.stack([np.cos(angle), np.sin(angle), np.zeros_like(angle)], axis=1)
    go_dir = np.array([0.6, 0.0, 0.8])  # mostly the slow dimension: the go response outlasts the stimulus'
    go = p["go_amp"] * design["go_gain"][:, None] * go_dir
    t_stim, t_go = design["stimulus_time"], design["go_time"]
    return lambda t: stim * _pulse(t - t_stim)[:, None] + go * _pulse(t - t_go)[:, None]


_SYSTEMS = {
    "lorenz": System(
        name="lorenz", latent_dim=3, param_name="rho", param_default=28.0, param_range=(0.5, 100.0),
        constants={"sigma": 10.0, "beta": 8.0 / 3.0},
        drift=_lorenz_drift, initial=_lorenz_initial,
        # 2 time units per second: a 2 s trial loops ~6 times and switches lobes ~3 times.
        time_scale=2.0, max_step=lambda p: 0.0025 * min(1.0, 28.0 / p["rho"]),
        noise=(0.0, 0.0, 0.0), burn_in=10.0,
    ),
    "vdp": System(
        name="vdp", latent_dim=2, param_name="mu", param_default=1.5, param_range=(0.0, 10.0),
        constants={},
        drift=_vdp_drift, initial=_vdp_initial,
        # The mu = 1.5 cycle lasts ~7.6 time units: about two cycles per 2 s trial.
        time_scale=7.0, max_step=lambda p: 0.01 / max(1.0, p["mu"]),
        noise=(0.0, 0.3),
    ),
    "ring": System(
        name="ring", latent_dim=2, param_name="freq_hz", param_default=0.75, param_range=(-10.0, 10.0),
        constants={"relax": 2.0},
        drift=_ring_drift, initial=_ring_initial,
        time_scale=1.0, max_step=lambda p: 0.005 / max(1.0, abs(p["freq_hz"])),
        noise=(0.3, 0.3),
    ),
    "duffing": System(
        name="duffing", latent_dim=2, param_name="alpha", param_default=1.0, param_range=(-5.0, 5.0),
        constants={"delta": 0.3, "beta": 1.0},
        drift=_duffing_drift, initial=_duffing_initial,
        # Noise on the velocity only; strong enough for occasional hops over the alpha = 1 barrier.
        time_scale=4.0, max_step=lambda p: 0.01 / max(1.0, math.sqrt(abs(p["alpha"]))),
        noise=(0.0, 0.5),
    ),
    "hopf": System(
        name="hopf", latent_dim=2, param_name="mu", param_default=1.0, param_range=(-5.0, 5.0),
        constants={"omega": np.pi},
        drift=_hopf_drift, initial=_hopf_initial,
        # 2 time units per second with omega = pi: one rotation per second.
        time_scale=2.0, max_step=lambda p: 0.01 / max(1.0, abs(p["mu"])),
        noise=(0.1, 0.1),
    ),
    "task": System(
        name="task", latent_dim=3, param_name="go_jitter_s", param_default=0.1, param_range=(0.0, 0.5),
        constants={"freq_hz": 0.75, "damping": 1.2, "slow_decay": 0.5, "saturation": 0.02, "initial_sd": 0.2,
                   "stimulus_amp": 3.0, "go_amp": 3.0},
        drift=_task_drift, initial=_task_initial,
        # Seconds are the system's time; substeps of 5 ms resolve the 150 ms pulses.
        time_scale=1.0, max_step=lambda p: 0.005,
        noise=(0.3, 0.3, 0.3),
    ),
}


def get_system(name: str) -> System:
    """The `System` called `name`; UsageError with a suggestion for unknown names."""
    key = str(name).strip().lower()
    if key not in _SYSTEMS:
        raise UsageError(f"unknown system '{name}'{closest(key, SYSTEMS)}; available: {listing(SYSTEMS)}")
    return _SYSTEMS[key]


def _rk4(f, z, h, p):
    k1 = f(z, p)
    k2 = f(z + 0.5 * h * k1, p)
    k3 = f(z + 0.5 * h * k2, p)
    k4 = f(z + h * k3, p)
    return z + (h / 6.0) * (k1 + 2.0 * k2 + 2.0 * k3 + k4)


def _rk4_driven(f, drive, z, t, h, p, time_scale):
    """_rk4 of dz/dt = f(z) + drive(seconds) [trial, latent], from system time t."""
    u = lambda s: drive(s / time_scale)  # noqa: E731
    k1 = f(z, p) + u(t)
    k2 = f(z + 0.5 * h * k1, p) + u(t + 0.5 * h)
    k3 = f(z + 0.5 * h * k2, p) + u(t + 0.5 * h)
    k4 = f(z + h * k3, p) + u(t + h)
    return z + (h / 6.0) * (k1 + 2.0 * k2 + 2.0 * k3 + k4)


def _advance(system: System, z, duration, p, rng, noisy=True, drive=None, t0=0.0):
    """Integrate all trials [trial, latent] forward by `duration` system time units; with `drive`
    (seconds -> [trial, latent]), the input added to the drift, starting at system time t0."""
    n_sub = max(1, math.ceil(duration / system.max_step(p) - 1e-9))
    h = duration / n_sub
    sigma = np.asarray(system.noise) * math.sqrt(h)
    add_noise = noisy and np.any(sigma > 0)
    for i in range(n_sub):
        if drive is None:  # the autonomous systems: exactly the arithmetic they always had
            z = _rk4(system.drift, z, h, p)
        else:
            z = _rk4_driven(system.drift, drive, z, t0 + i * h, h, p, system.time_scale)
        if add_noise:
            # RK4 for the drift plus an Euler-Maruyama noise increment (additive noise).
            z = z + sigma * rng.standard_normal(z.shape)
    return z


def simulate_latents(system: System, p: dict, trials: int, bins: int, bin_s: float, rng, drive=None) -> np.ndarray:
    """Raw (unstandardised) latent states at the bin centres: [trial, time, latent] float64. drive:
    None (autonomous), or seconds since the trial's start -> [trial, latent] input to the drift."""
    z = system.initial(rng, trials, p)
    if system.burn_in > 0:
        z = _advance(system, z, system.burn_in, p, rng, noisy=False)
    step = bin_s * system.time_scale
    z = _advance(system, z, 0.5 * step, p, rng, drive=drive)  # trial start -> first bin centre
    out = np.empty((trials, bins, system.latent_dim))
    for i in range(bins):
        if i:
            z = _advance(system, z, step, p, rng, drive=drive, t0=(i - 0.5) * step)
        out[:, i] = z
    if not np.all(np.isfinite(out)):
        raise RuntimeError(f"simulation of '{system.name}' diverged with params {p}")
    return out


def standardise(latents: np.ndarray) -> np.ndarray:
    """Zero mean, unit variance per latent dimension over all trials and bins ([trial, time, latent])."""
    flat = latents.reshape(-1, latents.shape[-1])
    std = flat.std(axis=0)
    # A dimension that never moves (e.g. a decayed focus) is centred but not blown up.
    return (latents - flat.mean(axis=0)) / np.where(std > 1e-12, std, 1.0)


# --------------------------------------------------------------------------------------------
# Observations
# --------------------------------------------------------------------------------------------


def readout(latents: np.ndarray, neurons: int, base_rate_hz: float, bin_s: float, rng):
    """Random log-linear readout of standardised `latents` [trial, time, latent].

    Returns (C [neuron, latent], d [neuron]). Each row of C is scaled so that the neuron's
    log-rate varies over time with a standard deviation drawn from MODULATION_STD, and d is set
    so that the neuron's mean rate is base_rate_hz times a log-normal jitter (mean 1).
    """
    flat = latents.reshape(-1, latents.shape[-1])
    C = rng.standard_normal((neurons, flat.shape[1]))
    drive = flat @ C.T  # [sample, neuron]
    target = rng.uniform(*MODULATION_STD, size=neurons)
    C *= (target / np.maximum(drive.std(axis=0), 1e-12))[:, None]
    drive = flat @ C.T
    jitter = RATE_JITTER * rng.standard_normal(neurons) - 0.5 * RATE_JITTER**2
    # Subtract log E_t[exp(C z)] so the time-averaged rate equals the intended one.
    log_mean_gain = np.log(np.mean(np.exp(drive - drive.max(axis=0)), axis=0)) + drive.max(axis=0)
    d = np.log(base_rate_hz * bin_s) + jitter - log_mean_gain
    return C, d


# Appended only: a stream's index is its spawn key, so a new stream never changes an existing one.
_STREAMS = ("dynamics", "readout", "counts", "retest", "spike_times", "task")


def _rng(seed: int, stream: str) -> np.random.Generator:
    """One independent random stream per purpose, so that e.g. drawing the retest counts or the
    spike times never changes the first draw of counts."""
    return np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(_STREAMS.index(stream),)))


def _check_args(neurons, trials, bins, bin_ms, seed, base_rate_hz):
    for name, value in (("neurons", neurons), ("trials", trials), ("bins", bins)):
        if isinstance(value, bool) or int(value) != value or value < 1:
            raise UsageError(f"--{name} must be a whole number >= 1; got {value}")
    if isinstance(seed, bool) or int(seed) != seed or seed < 0:
        raise UsageError(f"--seed must be a whole number >= 0; got {seed}")
    if not (math.isfinite(bin_ms) and bin_ms > 0):
        raise UsageError(f"--bin-ms must be > 0; got {bin_ms}")
    if not (math.isfinite(base_rate_hz) and base_rate_hz > 0):
        raise UsageError(f"--base-rate must be > 0 Hz; got {base_rate_hz}")


def _check_rates(rates: np.ndarray, base_rate_hz: float, bin_ms: float) -> None:
    """Expected counts per bin must be counts the loaders accept (and numpy's Poisson sampler can draw):
    a huge --base-rate (or --bin-ms) would otherwise fail with a traceback or write a file that no command
    can read."""
    from xfads_cli.data.hdf5 import MAX_COUNT

    top = float(rates.max(initial=0.0))
    if not top <= MAX_COUNT:
        raise UsageError(
            f"--base-rate {base_rate_hz:g} Hz with {bin_ms:g} ms bins gives up to {top:.3g} expected spikes in one bin;"
            f" counts above {MAX_COUNT} per bin are not believable (nor exact in float32): lower --base-rate or --bin-ms"
        )


def simulate_arrays(
    system: str,
    *,
    neurons: int = 50,
    trials: int = 100,
    bins: int = 100,
    bin_ms: float = 20.0,
    seed: int = 0,
    base_rate_hz: float = 10.0,
    param: float | None = None,
) -> dict:
    """Simulate in memory; nothing is written. Deterministic for a given seed.

    Returns a dict with
      system, params (dict), seed, bin_ms
      latents        [trial, time, latent] float64, standardised
      rates          [trial, time, neuron] float64, expected counts per bin
      rates_hz       [trial, time, neuron] float64, rates / bin width
      counts         [trial, time, neuron] int64 spike counts ~ Poisson(rates)
      retest_counts  [trial, time, neuron] int64, an independent draw from the same rates
      C [neuron, latent], d [neuron]: the readout, log(rates) = latents @ C.T + d
      start_s        [trial] trial start times in the recording (seconds), back to back with gaps
    and for the `task` system only:
      conditions     [trial] int64 condition 0..3
      events         {'stimulus_time', 'go_time'}: [trial] float64 seconds from the trial's start
      go_gain        [trial] float64 gain of the go pulse
    """
    spec = get_system(system)
    _check_args(neurons, trials, bins, bin_ms, seed, base_rate_hz)
    neurons, trials, bins, seed = int(neurons), int(trials), int(bins), int(seed)
    p = spec.params(param)
    bin_s = float(bin_ms) / 1000.0
    dyn_rng, out_rng, count_rng, retest_rng = (_rng(seed, s) for s in ("dynamics", "readout", "counts", "retest"))

    design, drive = None, None
    if spec.name == "task":  # its own stream: the other systems' draws stay as they were
        design = task_design(_rng(seed, "task"), trials, bins * bin_s, p["go_jitter_s"])
        drive = task_drive(design, p)
    latents = standardise(simulate_latents(spec, p, trials, bins, bin_s, dyn_rng, drive=drive))
    C, d = readout(latents, neurons, float(base_rate_hz), bin_s, out_rng)
    with np.errstate(over="ignore"):
        rates = np.exp(latents @ C.T + d)
    _check_rates(rates, base_rate_hz, bin_ms)
    extras = {}
    if design is not None:
        extras = {"conditions": design["conditions"], "events": {e: design[e] for e in TASK_EVENTS},
                  "go_gain": design["go_gain"]}
    return {
        "system": spec.name,
        "params": {**p, "base_rate_hz": float(base_rate_hz), "time_scale": spec.time_scale,
                   "noise": list(spec.noise)},
        "seed": seed,
        "bin_ms": float(bin_ms),
        "latents": latents,
        "rates": rates,
        "rates_hz": rates / bin_s,
        "counts": count_rng.poisson(rates),
        "retest_counts": retest_rng.poisson(rates),
        "C": C,
        "d": d,
        "start_s": np.arange(trials) * (bins + TRIAL_GAP_BINS) * bin_s,
    } | extras


def spike_sample_rate_hz(bin_s: float) -> float:
    """The clock (Hz) spike_times_from_counts puts spike times on: 30 kHz, or 4 samples per bin for
    bins shorter than that. The NWB Units table's `resolution` is its inverse."""
    return max(SPIKE_SAMPLE_RATE_HZ, 4.0 / float(bin_s))


def spike_times_from_counts(counts: np.ndarray, start_s: np.ndarray, bin_s: float, rng) -> list[np.ndarray]:
    """Sorted spike times (seconds) per neuron: each count becomes a uniformly drawn sample of the
    spike_sample_rate_hz clock strictly inside its bin (two spikes may share a sample).
    counts: [trial, time, neuron]; start_s: [trial]."""
    n_trial, n_time, n_neuron = counts.shape
    rate = spike_sample_rate_hz(bin_s)
    bin_start = (np.asarray(start_s, dtype=np.float64)[:, None] + np.arange(n_time) * bin_s).ravel()
    first = np.ceil(bin_start * rate + SPIKE_MARGIN_SAMPLES).astype(np.int64)  # first sample inside each bin
    last = np.floor((bin_start + bin_s) * rate - SPIKE_MARGIN_SAMPLES).astype(np.int64)
    times = []
    for j in range(n_neuron):
        c = counts[:, :, j].ravel()
        samples = rng.integers(np.repeat(first, c), np.repeat(last, c) + 1)
        times.append(np.sort(samples / rate))
    return times


# --------------------------------------------------------------------------------------------
# Writers
# --------------------------------------------------------------------------------------------


def simulated_spike_times(sim: dict) -> list[np.ndarray]:
    """Spike times [spike] per neuron of a `simulate_arrays` result, drawn from its own seeded stream
    (so the data of a written NWB file are a function of the seed alone; its identifier is new each time)."""
    return spike_times_from_counts(sim["counts"], sim["start_s"], sim["bin_ms"] / 1000.0, _rng(sim["seed"], "spike_times"))


# NCBI Taxonomy 32630, "synthetic construct": the taxon for things made, not sampled from an organism.
# NWB's species must be a Latin binomial or an NCBI Taxonomy link; simulated data have no organism.
SYNTHETIC_SPECIES = "http://purl.obolibrary.org/obo/NCBITaxon_32630"


def synthetic_nwb_metadata(subject_id: str, subject_description: str) -> dict:
    """NWBFile keyword arguments that the NWB best practices (nwbinspector) ask of every file, for a
    file of simulated or model-generated data: a fresh uuid4 identifier, keywords, and a Subject that
    says it is not an animal (species "synthetic construct", sex "O" = other, age P0D: made at
    session start). session_description / experiment_description are the caller's."""
    import uuid

    from pynwb.file import Subject

    subject = Subject(subject_id=subject_id, description=subject_description, species=SYNTHETIC_SPECIES,
                      sex="O", age="P0D")
    return {"identifier": str(uuid.uuid4()), "subject": subject,
            "keywords": ["xfads", "simulated data", "latent dynamics", "spike trains"]}
