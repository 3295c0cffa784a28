"""The real recordings of ../shared/data/real/ as quality-benchmark cases (used by quality.py).

Two of them are .npz files that xfads does not read; they are converted here to NWB (pynwb), so that
xfads' own loader does the binning, alignment and chopping:

  mouse_gpe_50trials.npz -> a units table and a trials table (trial-aligned). The npz holds spike
      times relative to each trial's alignment event (the last centre-out, `epochs_times`, in
      recording time); they are put back in recording time (epochs_times[trial] + spike_times). The 50
      trial windows (epochs_times + trials_start_times .. epochs_times + trials_end_times) do not
      overlap and every spike lies inside its trial's window. Spikes were only kept inside the trials,
      so each unit's obs_intervals are the trial windows (outside them the unit was not observed).
      Trial ids are the task's trial indices (`trials_indices`); unit ids are 0..17 with the sorter's
      cluster id in a `cluster_id` column; `align_time` holds the alignment event.
  ibl_np_120s.npz -> a units table only (unit id = cluster id; no trials table, so xfads chops the
      120 s into windows). `event_times`/`event_groups` are made-up test events and are dropped.

    python benchmarks/real_recordings.py OUT_DIR     # convert both, print what was written

`real_cases(real_dir)` lists every file of the folder with the data options the benchmark uses for it
(and, for a recording with a known response window such as the locust odour trials, the scored forecast
window, WINDOWS) or why it is skipped; `RealCase.prepare(cache_dir)` converts an npz file into
cache_dir, once.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

import numpy as np

# A fixed placeholder: these recordings' real session start times are not in the npz files.
SESSION_START = datetime(2000, 1, 1, tzinfo=timezone.utc)


@dataclass
class RealCase:
    """One real recording as a benchmark case.

    path: the file to fit (None for an npz file: prepare() converts it into a cache folder); sets: the
    `--set` options chosen for it (data options, and the eval forecast window of WINDOWS); skip: why it
    is not fitted (None: it is); note: why these options, for the report."""

    name: str
    source: Path
    path: Path | None
    sets: list[str] = field(default_factory=list)
    skip: str | None = None
    note: str = ""
    convert: Callable[[Path, Path], dict] | None = None

    def prepare(self, cache_dir: Path, log=print) -> Path:
        """The file to fit; an npz source is converted to cache_dir/<name>.nwb unless that exists."""
        if self.convert is None:
            return self.path
        path = Path(cache_dir) / f"{self.name}.nwb"
        if not path.exists():
            info = self.convert(self.source, path)
            log(f"converted {self.source.name} -> {path} ({info['units']} units, {info['trials']} trials, "
                f"{info['spikes']} spikes)")
        return path


def _atomic_nwb(nwb, out: Path) -> None:
    from pynwb import NWBHDF5IO

    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.stem}.partial-{os.getpid()}{out.suffix}")
    try:
        with NWBHDF5IO(str(tmp), "w") as io:
            io.write(nwb)
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)


def convert_mouse_gpe(npz: Path, out: Path) -> dict:
    """mouse_gpe_50trials.npz -> NWB with units (spike times in recording time, obs_intervals = the
    trial windows) and a trials table. Returns {'units', 'trials', 'spikes'}."""
    from pynwb import NWBFile

    d = np.load(npz)
    rel, trial, neuron = d["spike_times"].astype(np.float64), d["trial_ids"].astype(np.int64), d["neuron_ids"].astype(np.int64)
    align = d["epochs_times"].astype(np.float64)
    start, stop = align + d["trials_start_times"], align + d["trials_end_times"]
    order = np.argsort(start)
    if np.any(start[order][1:] < stop[order][:-1]):
        raise ValueError(f"{npz.name}: trial windows overlap; cannot place the trials in one recording")
    absolute = align[trial] + rel
    inside = (absolute >= start[trial] - 1e-9) & (absolute <= stop[trial] + 1e-9)
    if not inside.all():
        raise ValueError(f"{npz.name}: {int((~inside).sum())} spikes lie outside their trial's window")
    cluster = d["neuron_cluster_ids"] if "neuron_cluster_ids" in d.files else np.arange(neuron.max() + 1)
    trial_index = d["trials_indices"] if "trials_indices" in d.files else np.arange(len(align))
    windows = np.stack([start[order], stop[order]], axis=1)

    nwb = NWBFile(
        session_description="Mouse globus pallidus externus, bandit task, 50 trials aligned to the last centre-out "
        "(svGPFA example data, converted from ../shared/data/real/mouse_gpe_50trials.npz by xfads benchmarks)",
        identifier="mouse-gpe-50trials-xfads-benchmark",
        session_start_time=SESSION_START,
        file_create_date=SESSION_START,
    )
    nwb.add_trial_column(name="align_time", description="the alignment event (last centre-out), recording time in s")
    nwb.add_trial_column(name="trial_index", description="the task's trial index (npz trials_indices)")
    for k in order:
        nwb.add_trial(start_time=float(start[k]), stop_time=float(stop[k]), align_time=float(align[k]),
                      trial_index=int(trial_index[k]), id=int(trial_index[k]))
    nwb.add_unit_column(name="cluster_id", description="spike sorter's cluster id (npz neuron_cluster_ids)")
    n_spikes = 0
    for j in range(len(cluster)):
        times = np.sort(absolute[neuron == j])
        n_spikes += times.size
        nwb.add_unit(id=j, spike_times=times, obs_intervals=windows, cluster_id=int(cluster[j]))
    _atomic_nwb(nwb, out)
    return {"units": int(len(cluster)), "trials": int(len(align)), "spikes": int(n_spikes)}


def convert_ibl(npz: Path, out: Path) -> dict:
    """ibl_np_120s.npz -> NWB with a units table only (continuous: xfads chops it). Returns
    {'units', 'trials', 'spikes'}."""
    from pynwb import NWBFile

    d = np.load(npz)
    times, clusters = d["spike_times"].astype(np.float64), d["spike_clusters"].astype(np.int64)
    nwb = NWBFile(
        session_description="Neuropixels-style sorted spikes, 120 s, continuous (ibllib brainbox test fixture, "
        "converted from ../shared/data/real/ibl_np_120s.npz by xfads benchmarks; made-up test events dropped)",
        identifier="ibl-np-120s-xfads-benchmark",
        session_start_time=SESSION_START,
        file_create_date=SESSION_START,
    )
    n_spikes = 0
    ids = np.unique(clusters)
    for c in ids:
        t = np.sort(times[clusters == c])
        n_spikes += t.size
        nwb.add_unit(id=int(c), spike_times=t)
    _atomic_nwb(nwb, out)
    return {"units": int(len(ids)), "trials": 0, "spikes": int(n_spikes)}


CONVERTERS = {"mouse_gpe_50trials.npz": convert_mouse_gpe, "ibl_np_120s.npz": convert_ibl}

# Per-file data options (data-description only: which interval table; held-out neurons are added by
# the benchmark for every real case). Files not listed get the defaults: the trials table when there is
# one, else 1 s chopped windows.
OPTIONS = {
    "human_mtl_sub-4_ses-4.nwb": (
        ["data.intervals=recognition_table"],
        "no trials table; recognition_table (180 trials) is the largest interval table of repeated trials "
        "(encoding_table has 90 clips); the default would chop 47 min into 2821 1-s windows",
    ),
}

# Per-file forecast window scored by the fit (fp-bps and its baseline): (context bins, horizon bins, why),
# in bins of the default data.bin_ms, 20 ms (tests/test_quality_benchmark.py checks that default). These
# are evaluation options, not training ones: every real case has held-out neurons, so best.pt is chosen
# on co-bps and the window changes only which bins fp-bps scores. Files not listed: the default window,
# the last third of each trial forecast from the first two thirds.
WINDOWS = {
    "locust_odor_250trials.nwb": (
        75, 50,
        "forecast window 75-bin context, 50 bins ahead (1.5 s, then 1 s at 20 ms bins): the odour response, "
        "which starts ~2 s into each 4 s trial; the default window (133 + 67 bins) would forecast its decay",
    ),
}

# Files that cannot be a meaningful case with the data options xfads has.
SKIP = {
    "mc_maze_2trials.nwb": (
        "only 2 trials (split 1 train / 1 valid / 0 test: no test scores); chopping is not selectable for a file "
        "with a trials table (data.intervals=null means 'trials if present'), and a units-only copy would chop "
        "1844 s of which only 6.8 s (the two trials, ~30 min apart) hold spikes"
    ),
}


def real_cases(real_dir: Path) -> list[RealCase]:
    """Every recording in `real_dir` (sorted by name; README and other non-data files ignored) as a
    RealCase. Nothing is converted or written here (see RealCase.prepare)."""
    cases = []
    for src in sorted(Path(real_dir).iterdir()):
        suffix = src.suffix.lower()
        if suffix not in (".nwb", ".npz", ".h5", ".hdf5"):
            continue
        name = src.stem
        if src.name in SKIP:
            cases.append(RealCase(name, src, None, skip=SKIP[src.name]))
            continue
        sets, why = OPTIONS.get(src.name, ([], ""))
        if src.name in WINDOWS:
            context, horizon, window_why = WINDOWS[src.name]
            sets = list(sets) + [f"eval.context_bins={context}", f"eval.horizon_bins={horizon}"]
            why = "; ".join(x for x in (why, window_why) if x)
        if suffix == ".npz":
            convert = CONVERTERS.get(src.name)
            if convert is None:
                cases.append(RealCase(name, src, None, skip="an npz file without a converter in benchmarks/real_recordings.py"))
                continue
            note = "; ".join(x for x in ("converted from npz to NWB by benchmarks/real_recordings.py", why) if x)
            cases.append(RealCase(name, src, None, list(sets), note=note, convert=convert))
        else:
            cases.append(RealCase(name, src, src, list(sets), note=why))
    return cases


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python benchmarks/real_recordings.py OUT_DIR")
    real = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "real"
    outdir = Path(sys.argv[1])
    for fname, fn in CONVERTERS.items():
        target = outdir / (Path(fname).stem + ".nwb")
        print(target, fn(real / fname, target))
