"""TimeSeries: behaviour found by name and averaged onto the bins, and the ground truth of simulated files.

Behaviour is any TimeSeries in processing/* or acquisition (one level into containers such as
Position). Files written by `xfads simulate` also carry a `ground_truth` processing module, which
is not behaviour: it becomes `SpikeData.truth`, following the unit selection.
"""

from __future__ import annotations

import json

import numpy as np

from xfads_cli.data.binning import resample
from xfads_cli.data.nwb.columns import text
from xfads_cli.data.nwb.units import Units
from xfads_cli.errors import UsageError, closest, listing

TRUTH_MODULE = "ground_truth"


# --------------------------------------------------------------------------------------------------
# Behaviour


def all_series(nwb, include_truth: bool = False):
    """(path, TimeSeries) for every series in processing/* and acquisition, looking one level into
    containers such as Position or BehavioralTimeSeries."""
    from pynwb import TimeSeries
    from pynwb.core import MultiContainerInterface

    def inside(obj, path):
        if isinstance(obj, TimeSeries):
            yield path, obj
        elif isinstance(obj, MultiContainerInterface):
            for child in obj.children:
                if isinstance(child, TimeSeries):
                    yield f"{path}/{child.name}", child

    for module_name, module in nwb.processing.items():
        if module_name == TRUTH_MODULE and not include_truth:
            continue
        for name, obj in module.data_interfaces.items():
            yield from inside(obj, f"processing/{module_name}/{name}")
    for name, obj in nwb.acquisition.items():
        yield from inside(obj, f"acquisition/{name}")


def find_series(nwb, name: str):
    """(name, path, TimeSeries) for a behaviour name: a series name ('hand_vel'), the tail of its path
    ('kinematics/hand_vel'), or a container holding exactly one series ('Position')."""
    found = list(all_series(nwb))
    hits = [(p, ts) for p, ts in found if p == name or p.endswith("/" + name)]
    if not hits:  # a container's name stands for its only series
        hits = [(p, ts) for p, ts in found if (p.rsplit("/", 1)[0] + "/").endswith("/" + name + "/")]
        if len(hits) > 1:
            raise UsageError(
                f"behaviour '{name}' is a container of {len(hits)} series; name one of them:"
                f" {listing(p.rsplit('/', 1)[1] for p, _ in hits)}"
            )
    if not hits:
        names = sorted({p.rsplit("/", 1)[1] for p, _ in found})
        raise UsageError(
            f"no behaviour series '{name}' in processing/* or acquisition{closest(name, names)};"
            f" available: {listing(names)}"
        )
    if len(hits) > 1:
        raise UsageError(
            f"behaviour name '{name}' is ambiguous; give its path instead, one of: {listing(p for p, _ in hits)}"
        )
    path, ts = hits[0]
    if np.dtype(ts.data.dtype).kind not in "biuf":
        raise UsageError(f"behaviour series '{path}' is not numeric ({ts.data.dtype}); choose another series")
    return name, path, ts


def series_times(ts) -> np.ndarray:
    """[sample] time of every sample of a TimeSeries, in seconds."""
    n = int(ts.data.shape[0])
    if ts.timestamps is not None:
        return np.asarray(ts.timestamps[:], dtype=np.float64)
    start = ts.starting_time if ts.starting_time is not None else 0.0
    return float(start) + np.arange(n) / float(ts.rate)


def _series_values(ts, times: np.ndarray, t_lo: float, t_hi: float) -> tuple[np.ndarray, np.ndarray]:
    """Samples of `ts` covering [t_lo, t_hi] (plus one on each side, for interpolation) as
    (times [sample], values [sample, dim]) in the series' unit (data * conversion + offset).
    Only that slice is read, so an hour of 1 kHz data costs nothing when trials are short."""
    if len(times) > 1 and np.all(np.diff(times) >= 0):
        i0 = max(int(np.searchsorted(times, t_lo, side="left")) - 1, 0)
        i1 = min(int(np.searchsorted(times, t_hi, side="right")) + 1, len(times))
    else:
        i0, i1 = 0, len(times)
    values = np.asarray(ts.data[i0:i1], dtype=np.float64)
    values = values.reshape(len(values), -1) * float(ts.conversion or 1.0) + float(getattr(ts, "offset", 0.0) or 0.0)
    return times[i0:i1], values


def resample_behaviour(series, times, edges: np.ndarray) -> tuple[np.ndarray | None, list[str]]:
    """behavior [trial, time, dim] (the requested series side by side) and one label per dim."""
    if not series:
        return None, []
    blocks, names = [], []
    for (name, _, ts), t in zip(series, times):
        t_sel, values = _series_values(ts, t, float(edges.min()), float(edges.max()))
        blocks.append(resample(t_sel, values, edges))
        names += [name] if len(ts.data.shape) == 1 else [f"{name}[{i}]" for i in range(values.shape[1])]
    return np.concatenate(blocks, axis=2).astype(np.float32), names


# --------------------------------------------------------------------------------------------------
# Ground truth of simulated files


def read_truth(nwb, edges: np.ndarray, bin_ms: float, units: Units, notes) -> tuple[dict, dict | None]:
    """SpikeData.truth from the `ground_truth` module and its parsed JSON description.

    latents [trial, time, latent]; rates [trial, time, neuron] in expected counts per bin (the
    simulation's Hz times the bin); retest_counts [trial, time, neuron] summed over the simulation
    bins inside each bin, only when bin_ms is a whole multiple of the simulation's bin.
    """
    if TRUTH_MODULE not in nwb.processing:
        return {}, None
    module = nwb.processing[TRUTH_MODULE]
    simulation = parse_simulation(module.description, notes)
    series = module.data_interfaces
    truth = {}
    if "true_latents" in series:
        truth["latents"] = _resample_series(series["true_latents"], edges)
    if "true_rates" in series:
        rates = _resample_series(series["true_rates"], edges, units, notes)
        if rates is not None:
            truth["rates"] = rates * np.float32(bin_ms / 1000.0)
    sim_bin_ms = simulation.get("bin_ms") if isinstance(simulation, dict) else None
    if "retest_counts" in series and isinstance(sim_bin_ms, (int, float)) and sim_bin_ms > 0:
        ratio = bin_ms / float(sim_bin_ms)
        if abs(ratio - round(ratio)) < 1e-6 and round(ratio) >= 1:
            retest = _resample_series(series["retest_counts"], edges, units, notes)
            if retest is not None:
                truth["retest_counts"] = retest * np.float32(round(ratio))
    return truth, simulation


def parse_simulation(description, notes) -> dict:
    """The simulation's parameters, written by `xfads simulate` as JSON in the module's description."""
    try:
        simulation = json.loads(text(description))
    except (TypeError, ValueError):
        notes.append(f"the '{TRUTH_MODULE}' module's description is not JSON; simulation parameters are not recorded")
        return {}
    return simulation if isinstance(simulation, dict) else {"description": simulation}


def _resample_series(ts, edges: np.ndarray, units: Units | None = None, notes=None) -> np.ndarray | None:
    """A ground-truth series on the bins, [trial, time, dim]; with `units`, only the columns of the
    selected units (column j belongs to row j of the units table). None when the columns do not
    match the units table."""
    times = series_times(ts)
    t_sel, values = _series_values(ts, times, float(edges.min()), float(edges.max()))
    if units is not None:
        if values.shape[1] != units.n_rows:
            notes.append(
                f"ground truth '{ts.name}' has {values.shape[1]} columns but the units table has {units.n_rows}"
                " rows; it is left out"
            )
            return None
        values = values[:, units.rows]
    return resample(t_sel, values, edges)
