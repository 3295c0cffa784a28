"""`xfads simulate`: a simulated recording (data/simulate.py's systems) written to a file.

  .nwb       Units table (spike times), trials table, and a `ground_truth` processing module with
             TimeSeries `true_latents`, `true_rates` (Hz) and `retest_counts`. The trials table's
             `condition` column is 0 throughout, except for the `task` system: its condition (0..3),
             and its events as columns `stimulus_time`, `go_time` (seconds, on the file's clock).
             The metadata NWB's best practices ask for (nwbinspector, which DANDI runs): a fresh uuid4
             identifier per file (the system and seed are in session_description and subject_id), a
             Subject marked synthetic, keywords, experiment_description, and the Units `resolution`
             (spike times are samples of a 30 kHz clock, data/simulate.py spike_times_from_counts).
             The module keeps its name `ground_truth` (readers find it by that name; nwbinspector only
             suggests the schema's modality names, ecephys/behavior/misc..., which do not fit).
  .h5/.hdf5  the plain layout: `spikes` [trial, time, neuron] and `truth/{latents,rates,retest_counts}`
             (rates in expected counts per bin); for `task` also `conditions` [trial] and
             `events/stimulus_time`, `events/go_time` [trial] (seconds from each trial's start).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from xfads_cli.atomic import atomic_path, check_writable
from xfads_cli.data.simulate import (
    DESCRIPTIONS,
    SESSION_START,
    simulate_arrays,
    simulated_spike_times,
    spike_sample_rate_hz,
    synthetic_nwb_metadata,
)
from xfads_cli.errors import UsageError
from xfads_cli.scoring.bits import bits_per_spike


def describe(sim: dict, neurons: int, trials: int, bins: int) -> dict:
    return {
        "system": sim["system"],
        "bin_ms": sim["bin_ms"],
        "seed": sim["seed"],
        "params": sim["params"],
        "neurons": neurons,
        "trials": trials,
        "bins": bins,
    }


def write_nwb(path: Path, sim: dict) -> None:
    from hdmf.backends.hdf5.h5_utils import H5DataIO
    from pynwb import NWBHDF5IO, NWBFile, TimeSeries
    from pynwb.misc import Units

    n_trial, n_time, n_neuron = sim["counts"].shape
    bin_s = sim["bin_ms"] / 1000.0
    meta = describe(sim, n_neuron, n_trial, n_time)
    params = ", ".join(f"{k}={v:g}" for k, v in sim["params"].items() if isinstance(v, float))
    nwb = NWBFile(
        session_description=f"xfads simulated '{sim['system']}' recording ({params}; seed {sim['seed']})",
        session_start_time=SESSION_START,
        file_create_date=SESSION_START,  # a fixed date: the same seed gives the same data (the identifier is new)
        experiment_description=f"Simulated with `xfads simulate {sim['system']}`: {DESCRIPTIONS[sim['system']]}. "
                               "Spike counts are Poisson draws from known rates; no animal was recorded.",
        **synthetic_nwb_metadata(f"xfads-simulate-{sim['system']}-seed{sim['seed']}",
                                 "not an animal: a simulated population (xfads simulate)"),
    )

    events = sim.get("events", {})
    if "conditions" in sim:
        nwb.add_trial_column(name="condition", description="task condition (0..3): the stimulus pulse's direction")
    else:
        nwb.add_trial_column(name="condition", description="condition label (all 0: no conditions in simulated data)")
    for name in events:
        nwb.add_trial_column(name=name, description=f"{name[:-len('_time')]} event (seconds): a pulse into the latents")
    for k, start in enumerate(sim["start_s"]):
        extra = {name: float(start + times[k]) for name, times in events.items()}  # trial start + offset
        condition = int(sim["conditions"][k]) if "conditions" in sim else 0
        nwb.add_trial(start_time=float(start), stop_time=float(start + n_time * bin_s), condition=condition, **extra)

    spikes = simulated_spike_times(sim)
    nwb.units = Units(name="units", description="simulated units (spike times drawn within their bins)",
                      resolution=1.0 / spike_sample_rate_hz(bin_s))
    nwb.add_unit_column(name="readout_weight", description="row of C: log-rate = C z + d, z = true_latents")
    nwb.add_unit_column(name="readout_bias", description="d: log expected count per bin at z = 0")
    for j in range(n_neuron):
        nwb.add_unit(id=j, spike_times=spikes[j], readout_weight=sim["C"][j], readout_bias=float(sim["d"][j]))

    # Bin centres of every trial, in time order.
    centres = (sim["start_s"][:, None] + (np.arange(n_time) + 0.5) * bin_s).ravel()
    flat = lambda a, dtype: H5DataIO(  # noqa: E731
        a.reshape(n_trial * n_time, -1).astype(dtype), compression="gzip", shuffle=True
    )
    module = nwb.create_processing_module(name="ground_truth", description=json.dumps(meta))
    latents = TimeSeries(
        name="true_latents", data=flat(sim["latents"], np.float32), unit="a.u.",
        timestamps=H5DataIO(centres, compression="gzip"),
        description="standardised latent state z at each bin centre [time, latent]",
    )
    module.add(latents)
    module.add(TimeSeries(
        name="true_rates", data=flat(sim["rates_hz"], np.float32), unit="Hz", timestamps=latents,
        description="true firing rate of each unit in each bin [time, neuron]",
    ))
    module.add(TimeSeries(
        name="retest_counts", data=flat(sim["retest_counts"], count_dtype(sim["retest_counts"])),
        unit="spikes", timestamps=latents,
        description="independent second Poisson draw from true_rates, per bin [time, neuron]",
    ))
    with NWBHDF5IO(str(path), "w") as io:
        io.write(nwb)


def count_dtype(counts: np.ndarray):
    return np.uint16 if counts.max(initial=0) <= np.iinfo(np.uint16).max else np.int32


def write_h5(path: Path, sim: dict) -> None:
    import h5py

    n_trial, n_time, n_neuron = sim["counts"].shape
    gz = {"compression": "gzip", "shuffle": True}
    with h5py.File(path, "w") as f:
        f.attrs["bin_ms"] = float(sim["bin_ms"])
        f.attrs["system"] = sim["system"]
        f.attrs["seed"] = int(sim["seed"])
        f.attrs["params_json"] = json.dumps(sim["params"])
        f.create_dataset("spikes", data=sim["counts"].astype(count_dtype(sim["counts"])), **gz)
        f.create_dataset("trial_ids", data=np.arange(n_trial, dtype=np.int64))
        f.create_dataset("unit_ids", data=np.arange(n_neuron, dtype=np.int64))
        if "conditions" in sim:
            f.create_dataset("conditions", data=np.asarray(sim["conditions"], dtype=np.int64))
        for name, times in sim.get("events", {}).items():  # seconds from each trial's start (hdf5.py)
            f.create_dataset(f"events/{name}", data=np.asarray(times, dtype=np.float64))
        truth = f.create_group("truth")
        truth.create_dataset("latents", data=sim["latents"].astype(np.float32), **gz)
        truth.create_dataset("rates", data=sim["rates"].astype(np.float32), **gz)
        truth.create_dataset(
            "retest_counts", data=sim["retest_counts"].astype(count_dtype(sim["retest_counts"])), **gz
        )
        # Outside truth/: these are not [trial, ...] arrays.
        ro = f.create_group("readout")
        ro.attrs["description"] = "log(truth/rates) = truth/latents @ weight.T + bias"
        ro.create_dataset("weight", data=sim["C"])
        ro.create_dataset("bias", data=sim["d"])


WRITERS = {".nwb": write_nwb, ".h5": write_h5, ".hdf5": write_h5}


def simulate(system: str, out: Path, *, overwrite: bool = False, **options) -> dict:
    """Simulate `system` and write it to `out` (.nwb or .h5/.hdf5); options: simulate_arrays' (neurons,
    trials, bins, bin_ms, seed, base_rate_hz, param). Returns a plain summary dict."""
    out = Path(out)
    writer = WRITERS.get(out.suffix.lower())
    if writer is None:
        raise UsageError(f"cannot write '{out.name}': use .nwb or .h5 as the output suffix")
    if out.is_dir():
        raise UsageError(f"output '{out}' is a directory; give a file name ending in .nwb or .h5")
    if out.exists() and not overwrite:
        raise UsageError(f"output '{out}' already exists; pass --overwrite to replace it")
    check_writable(out)
    sim = simulate_arrays(system, **options)
    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(out) as tmp:  # a failure (or Ctrl-C) never leaves a partial file under `out`
        writer(tmp, sim)
    return summarise(sim, out)


def summarise(sim: dict, path: Path | None = None) -> dict:
    """Plain-data summary of a `simulate_arrays` result (JSON-serialisable)."""
    n_trial, n_time, n_neuron = sim["counts"].shape
    spikes = int(sim["counts"].sum())
    seconds = n_trial * n_time * sim["bin_ms"] / 1000.0
    # the task system's structure (data.condition / data.events find it in the written file)
    task = {}
    if "conditions" in sim:
        task = {"conditions": int(len(np.unique(sim["conditions"]))), "events": list(sim["events"])}
    return {
        "system": sim["system"],
        "params": sim["params"],
        "seed": sim["seed"],
        "path": None if path is None else str(path),
        "format": None if path is None else ("nwb" if path.suffix.lower() == ".nwb" else "h5"),
        "neurons": n_neuron,
        "trials": n_trial,
        "bins": n_time,
        "bin_ms": sim["bin_ms"],
        "latent_dim": int(sim["latents"].shape[-1]),
        "spikes": spikes,
        "mean_rate_hz": spikes / max(seconds * n_neuron, 1e-12),
        "truth": ["latents", "rates", "retest_counts"],
        # the true rates over a per-neuron constant rate: the ceiling a perfect model reaches
        "oracle_bits_per_spike": float(bits_per_spike(sim["rates"], sim["counts"])),
        "retest_oracle_bits_per_spike": float(bits_per_spike(sim["rates"], sim["retest_counts"])),
    } | task
