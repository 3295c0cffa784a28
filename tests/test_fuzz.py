"""Fuzzed malformed inputs: every broken NWB/HDF5 file (or absurd option) must give ONE line on stderr
starting with 'error:', exit code 2, no traceback and no output files (issue 6).

Each case builds a small broken file in tmp_path: a valid file written here (or a bundled fixture,
copied first) that is then truncated or corrupted with h5py (datasets deleted, replaced with other
dtypes, shapes or values). Every case runs `xfads inspect FILE` and `xfads fit FILE --out DIR
--max-epochs 1` in-process through Typer's CliRunner (a subprocess per case would cost ~2 s of
imports each); a few cases also run the real console entry point in a subprocess.

Categories: not HDF5 at all (empty, text, random bytes, a zip, a directory), truncated copies of the
bundled fixtures, HDF5 damaged inside a compressed chunk, missing groups/datasets/columns, wrong
dtypes (text, complex, records, booleans), impossible values (NaN/inf/negative/1e300 spike times,
negative/inf/1e12/all-NaN counts, trials that stop before they start), shape mismatches, duplicate or
non-UTF-8 unit ids, broken bin_ms attributes, absurd --set data.bin_ms, and a broken second session.

Not in the malformed list, because they are valid recordings (`test_valid_oddities_still_load`):
  * unsorted spike times: NWB asks for ascending times, but the binning sorts them and the NWB tests
    rely on unsorted trains being counted exactly;
  * duplicate spike times within a unit: coarse timestamps (1 ms clocks) and merged units give them;
    each spike is counted;
  * integer spike times: whole seconds, however unusual;
  * NaN counts in some bins of an HDF5 file: NaN marks missing bins (README, NLB eval held-out data).
A NaN spike time, by contrast, is rejected: it has no time, and dropping it would change the counts.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import h5py
import numpy as np
import pytest
from typer.testing import CliRunner

from writers import new_nwb, replace, save_nwb
from xfads_cli.cli import app

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = ROOT / "data_fixtures"
LORENZ = FIXTURES / "lorenz_small.nwb"
VDP = FIXTURES / "vdp_small.h5"

N_UNITS, N_TRIALS, DURATION = 5, 6, 10.0
TRIAL_START = 0.5 + 1.5 * np.arange(N_TRIALS)
TRIAL_STOP = TRIAL_START + 1.0
SHAPE = (8, 20, 6)  # plain HDF5: trials, bins, neurons

runner = CliRunner()


# --------------------------------------------------------------------------------------------------
# Valid base files (written once per session; every case copies one before corrupting it)


def spike_trains(seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [np.sort(rng.uniform(0.0, DURATION, size=40 + 10 * j)) for j in range(N_UNITS)]


def write_nwb(path: Path, *, units: bool = True, trials: bool = True, empty_units: bool = False,
              trains: list[np.ndarray] | None = None) -> Path:
    from pynwb import TimeSeries
    from pynwb.misc import Units

    nwb = new_nwb("fuzz base", path.stem)
    if empty_units:
        nwb.units = Units(name="units", description="no units")
    elif units:
        nwb.add_unit_column("quality", "sorting quality")
        for j, train in enumerate(trains or spike_trains()):
            nwb.add_unit(id=10 + j, spike_times=train, quality="good")
    if trials:
        for start, stop in zip(TRIAL_START, TRIAL_STOP):
            nwb.add_trial(start_time=float(start), stop_time=float(stop))
    module = nwb.create_processing_module("behavior", "behaviour")
    module.add(TimeSeries(name="speed", data=np.sin(np.arange(1000) / 100.0), unit="m/s", rate=100.0))
    return save_nwb(nwb, path)


def write_plain(path: Path, **datasets) -> Path:
    rng = np.random.default_rng(0)
    n_trial, n_time, n_neuron = SHAPE
    with h5py.File(path, "w") as f:
        f["spikes"] = rng.poisson(1.0, size=SHAPE).astype(np.uint16)
        f["trial_ids"] = np.arange(n_trial)
        f["unit_ids"] = np.arange(n_neuron)
        f["behavior"] = rng.normal(size=(n_trial, n_time, 2))
        f.attrs["bin_ms"] = 20.0
        for name, value in datasets.items():
            f[name] = value
    return path


def write_nlb(path: Path) -> Path:
    rng = np.random.default_rng(1)
    with h5py.File(path, "w") as f:
        f["train_spikes_heldin"] = rng.poisson(1, (8, 10, 4))
        f["train_spikes_heldout"] = rng.poisson(1, (8, 10, 2))
        f["eval_spikes_heldin"] = rng.poisson(1, (4, 10, 4))
        f["train_behavior"] = rng.normal(size=(8, 10, 2))
        f["eval_behavior"] = rng.normal(size=(4, 10, 2))
        f.attrs["bin_ms"] = 5.0
    return path


@pytest.fixture(scope="session")
def bases(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("fuzz_bases")
    return {
        "nwb": write_nwb(root / "base.nwb"),
        "nwb_notrials": write_nwb(root / "notrials.nwb", trials=False),
        "nwb_nounits": write_nwb(root / "nounits.nwb", units=False),
        "nwb_emptyunits": write_nwb(root / "emptyunits.nwb", empty_units=True),
        "nwb_silent": write_nwb(root / "silent.nwb", trains=[np.array([], dtype=float)] * 3),
        "plain": write_plain(root / "plain.h5"),
        "nlb": write_nlb(root / "nlb.h5"),
        "lorenz": LORENZ,
        "vdp": VDP,
    }


# --------------------------------------------------------------------------------------------------
# Corrupting files with h5py


def set_spike_times(f, data, index=None, dtype=None):
    """units/spike_times := data, with spike_times_index := `index` (default: the same row ends)."""
    ends = f["units/spike_times_index"][:] if index is None else np.asarray(index)
    if index is None and len(np.asarray(data).reshape(len(data), -1)) != int(ends[-1]):
        ends = np.linspace(0, len(data), len(ends) + 1).astype(np.int64)[1:]
    replace(f, "units/spike_times", data, dtype=dtype)
    idx = replace(f, "units/spike_times_index", ends)
    idx.attrs["target"] = f["units/spike_times"].ref


def edit_spikes(fn: Callable[[np.ndarray], np.ndarray]):
    """Corrupt the flat spike-time vector of the base NWB file (same length, same units)."""
    def corrupt(f):
        set_spike_times(f, fn(f["units/spike_times"][:].copy()))
    return corrupt


def edit_trials(fn: Callable[[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]):
    def corrupt(f):
        start, stop = fn(f["intervals/trials/start_time"][:].copy(), f["intervals/trials/stop_time"][:].copy())
        replace(f, "intervals/trials/start_time", start)
        replace(f, "intervals/trials/stop_time", stop)
        replace(f, "intervals/trials/id", np.arange(len(start)))
    return corrupt


def drop_column(table: str, *names: str):
    def corrupt(f):
        for name in names:
            del f[f"{table}/{name}"]
        colnames = [c for c in f[table].attrs["colnames"] if (c.decode() if isinstance(c, bytes) else c) not in names]
        f[table].attrs["colnames"] = np.array(colnames, dtype=object)
    return corrupt


def set_ds(name: str, value, dtype=None):
    def corrupt(f):
        replace(f, name, value, dtype=dtype)
    return corrupt


def set_attr(name: str, value):
    def corrupt(f):
        f.attrs[name] = value
    return corrupt


def delete(*names: str):
    def corrupt(f):
        for name in names:
            del f[name]
    return corrupt


# --------------------------------------------------------------------------------------------------
# The cases


@dataclass(frozen=True)
class Case:
    """A malformed input: `make(dir) -> path` builds it; `args` are extra CLI options."""

    make: Callable[[Path], Path | list[Path]]
    args: tuple[str, ...] = ()


CASES: dict[str, Case] = {}


def add(name: str, make: Callable[[Path], Path], *args: str) -> None:
    assert name not in CASES, name
    CASES[name] = Case(make, tuple(args))


def from_base(base: str, corrupt: Callable | None = None, suffix: str | None = None):
    """A copy of a base file (suffix kept unless given), corrupted with `corrupt(h5py.File)`."""
    def make(folder: Path) -> Path:
        src = BASES[base]
        path = folder / f"input{suffix or src.suffix}"
        shutil.copyfile(src, path)
        if corrupt is not None:
            with h5py.File(path, "r+") as f:
                corrupt(f)
        return path
    return make


def raw_bytes(content: bytes, suffix: str):
    def make(folder: Path) -> Path:
        path = folder / f"input{suffix}"
        path.write_bytes(content)
        return path
    return make


def garbled_chunk(base: str, name: str):
    """The base file with dataset `name` rewritten gzip-compressed and its first chunk overwritten with
    noise: the file opens and its metadata reads, but reading the data fails inside HDF5."""
    def make(folder: Path) -> Path:
        path = from_base(base, lambda f: replace_compressed(f, name))(folder)
        with h5py.File(path, "r") as f:
            info = f[name].id.get_chunk_info(0)
        with open(path, "r+b") as handle:
            handle.seek(info.byte_offset + 2)
            handle.write(np.random.default_rng(0).bytes(max(info.size - 4, 8)))
        return path
    return make


def replace_compressed(f, name: str) -> None:
    data = f[name][()]
    ds = replace(f, name, data)
    attrs = {k: ds.attrs[k] for k in ds.attrs}
    del f[name]
    ds = f.create_dataset(name, data=data, compression="gzip", chunks=(max(len(data) // 2, 1),) + data.shape[1:])
    for key, value in attrs.items():
        ds.attrs[key] = value
    if name == "units/spike_times":
        f["units/spike_times_index"].attrs["target"] = ds.ref


def two_sessions(good: str, bad: Callable[[Path], Path]):
    """A valid session and a broken one, fitted together (the meta model loads every session first)."""
    def make(folder: Path) -> list[Path]:
        first = folder / "good"
        first.mkdir()
        return [from_base(good)(first).rename(first / f"good{BASES[good].suffix}"), bad(folder)]
    return make


def directory(suffix: str):
    def make(folder: Path) -> Path:
        path = folder / f"input{suffix}"
        path.mkdir()
        return path
    return make


def truncated(base: str, cut: float):
    """The base file cut at byte `cut` (a fraction of its size when < 1)."""
    def make(folder: Path) -> Path:
        src = BASES[base]
        data = src.read_bytes()
        at = int(cut * len(data)) if cut < 1 else int(cut)
        path = folder / f"input{src.suffix}"
        path.write_bytes(data[:at])
        return path
    return make


BASES: dict[str, Path] = {}  # filled by the `bases` fixture before any case is built
RNG = np.random.default_rng(6)
HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"

# -- files that are not HDF5 at all, or are cut short
add("zero_byte_nwb", raw_bytes(b"", ".nwb"))
add("zero_byte_h5", raw_bytes(b"", ".h5"))
add("text_as_nwb", raw_bytes(b"unit,spike_time\n1,0.5\n", ".nwb"))
add("text_as_h5", raw_bytes(b"hello\n", ".h5"))
add("random_bytes_nwb", raw_bytes(RNG.bytes(4096), ".nwb"))
add("random_bytes_h5", raw_bytes(RNG.bytes(4096), ".h5"))
add("hdf5_magic_then_garbage_nwb", raw_bytes(HDF5_MAGIC + RNG.bytes(2048), ".nwb"))
add("hdf5_magic_then_garbage_h5", raw_bytes(HDF5_MAGIC + RNG.bytes(2048), ".h5"))
add("zip_as_h5", raw_bytes(b"PK\x03\x04" + RNG.bytes(512), ".h5"))
for cut in (8, 96, 1024, 0.1, 0.25, 0.5, 0.75, 0.95, 0.9999):
    add(f"truncated_lorenz_nwb_at_{cut}", truncated("lorenz", cut))
for cut in (8, 512, 0.25, 0.5, 0.9, 0.9999):
    add(f"truncated_vdp_h5_at_{cut}", truncated("vdp", cut))
add("nwb_spike_times_garbled_chunk", garbled_chunk("nwb", "units/spike_times"))
add("h5_counts_garbled_chunk", garbled_chunk("plain", "spikes"))
add("directory_named_nwb", directory(".nwb"))
add("second_session_truncated", two_sessions("nwb", truncated("lorenz", 0.5)))
add("second_session_nan_spikes", two_sessions("plain", from_base("nwb", edit_spikes(lambda t: np.where(t > 5, np.nan, t)))))

# -- NWB structure
add("nwb_no_units_table", from_base("nwb_nounits"))
add("nwb_units_table_without_rows", from_base("nwb_emptyunits"))
add("nwb_units_all_silent", from_base("nwb_silent"))
add("nwb_no_spike_times_column", from_base("nwb", drop_column("units", "spike_times", "spike_times_index")))
add("nwb_spike_times_without_index", from_base("nwb", delete("units/spike_times_index")))
add("nwb_units_replaced_by_dataset", from_base("nwb", lambda f: (f.__delitem__("units"), f.create_dataset("units", data=[1, 2]))))
add("nwb_no_trials_but_intervals_asked", from_base("nwb_notrials"), "--set", "data.intervals=trials")
add("nwb_empty_trials_table", from_base("nwb", edit_trials(lambda s, e: (s[:0], e[:0]))))
add("nwb_trials_without_stop_time", from_base("nwb", drop_column("intervals/trials", "stop_time")))
add("nwb_spike_index_past_data", from_base("nwb", lambda f: set_spike_times(
    f, f["units/spike_times"][:], index=f["units/spike_times_index"][:] * 2)))
add("nwb_spike_index_decreasing", from_base("nwb", lambda f: set_spike_times(
    f, f["units/spike_times"][:], index=f["units/spike_times_index"][:][::-1])))
add("nwb_spike_times_2d", from_base("nwb", lambda f: set_spike_times(
    f, np.stack([f["units/spike_times"][:]] * 2, axis=1), index=f["units/spike_times_index"][:])))
add("plain_h5_named_nwb", from_base("plain", suffix=".nwb"))

# -- HDF5 structure
add("h5_without_spikes", from_base("plain", delete("spikes")))
add("h5_empty_file", from_base("plain", delete("spikes", "trial_ids", "unit_ids", "behavior")))
add("h5_spikes_is_group", from_base("plain", lambda f: (f.__delitem__("spikes"), f.create_group("spikes"))))
add("nlb_heldout_only", from_base("nlb", delete("train_spikes_heldin", "eval_spikes_heldin")))
add("nlb_eval_neurons_differ", from_base("nlb", set_ds("eval_spikes_heldin", np.ones((4, 10, 3)))))
add("nlb_heldout_trials_differ", from_base("nlb", set_ds("train_spikes_heldout", np.ones((7, 10, 2)))))
add("nlb_behavior_bins_differ", from_base("nlb", set_ds("train_behavior", np.ones((8, 9, 2)))))
add("h5_truth_group_in_group", from_base("plain", lambda f: f.create_dataset("truth/deeper/rates", data=np.ones(SHAPE))))

# -- wrong dtypes
n_spikes = sum(len(t) for t in spike_trains())
add("nwb_spike_times_strings", from_base("nwb", lambda f: set_spike_times(f, np.array([b"soon"] * n_spikes))))
add("nwb_spike_times_numeric_strings", from_base("nwb", lambda f: set_spike_times(
    f, np.char.encode(f["units/spike_times"][:].astype(str)))))
add("nwb_spike_times_vlen_strings", from_base("nwb", lambda f: set_spike_times(
    f, np.array(["0.5"] * n_spikes, dtype=object), dtype=h5py.string_dtype())))
add("nwb_spike_times_complex", from_base("nwb", lambda f: set_spike_times(f, f["units/spike_times"][:] * (1 + 1j))))
add("nwb_spike_times_bool", from_base("nwb", lambda f: set_spike_times(f, np.ones(n_spikes, dtype=bool))))
add("nwb_spike_times_compound", from_base("nwb", lambda f: set_spike_times(
    f, np.zeros(n_spikes, dtype=[("t", "f8"), ("ch", "i4")]))))
add("nwb_trial_start_strings", from_base("nwb", set_ds("intervals/trials/start_time", np.array([b"x"] * N_TRIALS))))
for kind, value, dtype in [
    ("strings", np.full(SHAPE, b"3"), None),
    ("vlen_strings", np.full(SHAPE, "three", dtype=object), h5py.string_dtype()),
    ("complex", np.ones(SHAPE) * (1 + 2j), None),
    ("compound", np.zeros(SHAPE, dtype=[("n", "i4"), ("q", "f4")]), None),
]:
    add(f"h5_counts_{kind}", from_base("plain", set_ds("spikes", value, dtype)))
add("nlb_heldin_strings", from_base("nlb", set_ds("train_spikes_heldin", np.full((8, 10, 4), b"1"))))
add("h5_behavior_strings", from_base("plain", set_ds("behavior", np.full(SHAPE[:2] + (2,), b"fast"))))
add("h5_trial_ids_strings", from_base("plain", set_ds("trial_ids", np.array([b"t%d" % i for i in range(SHAPE[0])]))))
add("h5_heldout_all_true", from_base("plain", lambda f: f.create_dataset("heldout", data=np.ones(SHAPE[2], bool))))
add("h5_heldout_strings", from_base("plain", lambda f: f.create_dataset("heldout", data=np.array([b"no"] * SHAPE[2]))))

# -- bad spike-time values (NWB)
add("nwb_spike_time_nan", from_base("nwb", edit_spikes(lambda t: np.where(np.arange(t.size) == 7, np.nan, t))))
add("nwb_spike_times_all_nan", from_base("nwb", edit_spikes(lambda t: np.full_like(t, np.nan))))
add("nwb_spike_time_inf", from_base("nwb", edit_spikes(lambda t: np.where(np.arange(t.size) == t.size - 1, np.inf, t))))
add("nwb_spike_time_minus_inf", from_base("nwb", edit_spikes(lambda t: np.where(np.arange(t.size) == 0, -np.inf, t))))
add("nwb_spike_time_negative", from_base("nwb", edit_spikes(lambda t: np.where(np.arange(t.size) == 3, -0.25, t))))
add("nwb_spike_time_1e300", from_base("nwb", edit_spikes(lambda t: np.where(np.arange(t.size) == 5, 1e300, t))))
add("nwb_spike_time_1e300_chopped", from_base("nwb_notrials", edit_spikes(lambda t: np.where(np.arange(t.size) == 5, 1e300, t))))
add("nwb_spike_time_minus_1e300", from_base("nwb", edit_spikes(lambda t: np.where(np.arange(t.size) == 2, -1e300, t))))

# -- bad trials (NWB)
add("nwb_trial_stop_before_start", from_base("nwb", edit_trials(lambda s, e: (s, np.where(np.arange(s.size) == 2, s - 0.5, e)))))
add("nwb_trial_starts_all_nan", from_base("nwb", edit_trials(lambda s, e: (np.full_like(s, np.nan), e))))
add("nwb_trial_start_1e300", from_base("nwb", edit_trials(lambda s, e: (np.where(np.arange(s.size) == 1, 1e300, s),
                                                                        np.where(np.arange(s.size) == 1, 1e300, e)))))
add("nwb_trial_start_negative_inf", from_base("nwb", edit_trials(lambda s, e: (np.where(np.arange(s.size) == 0, -np.inf, s), e))))
add("nwb_window_past_end", from_base("nwb"), "--set", "data.window_ms=[0,100000]")
add("nwb_window_before_start", from_base("nwb"), "--set", "data.window_ms=[-100000,0]")

# -- wrong shapes (HDF5)
for label, value in [("1d", np.ones(8)), ("2d", np.ones((8, 20))), ("4d", np.ones((8, 20, 6, 2))), ("scalar", 3.0),
                     ("no_trials", np.ones((0, 20, 6))), ("no_bins", np.ones((8, 0, 6))), ("no_neurons", np.ones((8, 20, 0)))]:
    add(f"h5_counts_{label}", from_base("plain", set_ds("spikes", value)))
add("nlb_heldin_2d", from_base("nlb", set_ds("train_spikes_heldin", np.ones((8, 40)))))
add("h5_heldout_wrong_length", from_base("plain", lambda f: f.create_dataset("heldout", data=np.zeros(SHAPE[2] + 1, bool))))
add("h5_heldout_2d", from_base("plain", lambda f: f.create_dataset("heldout", data=np.zeros((SHAPE[2], 2), bool))))
add("h5_behavior_wrong_trials", from_base("plain", set_ds("behavior", np.zeros((SHAPE[0] - 1, SHAPE[1], 2)))))
add("h5_behavior_wrong_bins", from_base("plain", set_ds("behavior", np.zeros((SHAPE[0], SHAPE[1] + 3, 2)))))
add("h5_behavior_2d", from_base("plain", set_ds("behavior", np.zeros(SHAPE[:2]))))
add("h5_trial_ids_wrong_length", from_base("plain", set_ds("trial_ids", np.arange(SHAPE[0] + 2))))
add("h5_split_wrong_length", from_base("plain", lambda f: f.create_dataset("split", data=np.array([b"train"] * 3))))
add("h5_split_bad_label", from_base("plain", lambda f: f.create_dataset("split", data=np.array([b"train"] * 7 + [b"holdout"]))))
add("h5_unit_ids_wrong_length", from_base("plain", set_ds("unit_ids", np.arange(SHAPE[2] - 1))))
add("h5_unit_ids_2d", from_base("plain", set_ds("unit_ids", np.arange(SHAPE[2] * 2).reshape(SHAPE[2], 2))))
add("h5_truth_rates_wrong_shape", from_base("plain", lambda f: f.create_dataset("truth/rates", data=np.ones((8, 20)))))

# -- weird unit names
add("h5_unit_ids_not_utf8", from_base("plain", set_ds("unit_ids", np.array([b"\xff\xfe%d" % i for i in range(SHAPE[2])]))))
add("h5_unit_ids_duplicated", from_base("plain", set_ds("unit_ids", np.array([b"a", b"b", b"c", b"a", b"d", b"e"]))))
add("nwb_unit_ids_duplicated", from_base("nwb", set_ds("units/id", np.array([1, 2, 3, 2, 5]))))
add("nwb_unit_ids_not_utf8", from_base("nwb", set_ds("units/id", np.array([b"\xff\xfe%d" % i for i in range(N_UNITS)]))))

# -- absurd counts (HDF5)
for label, value in [("1e12", 1e12), ("1e300", 1e300), ("negative", -1.0), ("inf", np.inf), ("minus_inf", -np.inf)]:
    add(f"h5_count_{label}", from_base("plain", lambda f, v=value: replace(
        f, "spikes", np.where(np.arange(np.prod(SHAPE)).reshape(SHAPE) == 17, v, f["spikes"][:].astype(float)))))
add("h5_counts_all_nan", from_base("plain", set_ds("spikes", np.full(SHAPE, np.nan))))
add("nlb_heldin_all_nan", from_base("nlb", set_ds("train_spikes_heldin", np.full((8, 10, 4), np.nan))))
add("nlb_heldout_negative", from_base("nlb", set_ds("train_spikes_heldout", -np.ones((8, 10, 2)))))
add("vdp_counts_1e12", from_base("vdp", lambda f: replace(f, "spikes", f["spikes"][:].astype(float) * 1e12)))

# -- absurd bin widths (in the file, and via --set)
for label, value in [("zero", 0.0), ("negative", -20.0), ("nan", np.nan), ("inf", np.inf), ("text", "twenty")]:
    add(f"h5_file_bin_ms_{label}", from_base("plain", set_attr("bin_ms", value)))
for value in ("0", "-20", "nan", "inf", "1e300", "1e-300", "1e-9", "twenty"):
    add(f"nwb_set_bin_ms_{value}", from_base("nwb"), "--set", f"data.bin_ms={value}")
for value in ("nan", "inf", "-inf", "1e300", "1e-300", "7"):
    add(f"h5_set_bin_ms_{value}", from_base("plain"), "--set", f"data.bin_ms={value}")
add("nwb_chopped_set_bin_ms_1e-9", from_base("nwb_notrials"), "--set", "data.bin_ms=1e-9")
add("nwb_chopped_set_chop_ms_1e-300", from_base("nwb_notrials"), "--set", "data.chop_ms=1e-300")


# --------------------------------------------------------------------------------------------------
# Running the CLI


def files_under(folder: Path) -> set[str]:
    return {str(p.relative_to(folder)) for p in folder.rglob("*")}


def check_one_line_exit_2(result, what: str) -> str:
    """exit 2, exactly one non-empty stderr line 'error: ...', no traceback, nothing on stdout."""
    exc = result.exception
    assert exc is None or isinstance(exc, SystemExit), f"{what}: uncaught {type(exc).__name__}: {exc}"
    text = result.stdout + result.stderr
    assert "Traceback" not in text, f"{what}: traceback\n{text}"
    assert result.exit_code == 2, f"{what}: exit {result.exit_code}\n{text}"
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and lines[0][7:].strip(), f"{what}: stderr {result.stderr!r}"
    assert result.stdout == "", f"{what}: stdout {result.stdout!r}"
    return lines[0]


@pytest.fixture
def build(bases, tmp_path):
    BASES.update(bases)

    def make(name: str) -> tuple[list[str], Case]:
        folder = tmp_path / "in"
        folder.mkdir()
        case = CASES[name]
        paths = case.make(folder)
        return [str(p) for p in (paths if isinstance(paths, list) else [paths])], case

    return make


@pytest.mark.parametrize("name", sorted(CASES))
def test_malformed_input_is_one_line_exit_2(name, build, tmp_path):
    paths, case = build(name)
    before = files_under(tmp_path)
    out = tmp_path / "run"

    result = runner.invoke(app, ["inspect", *paths, *case.args])
    check_one_line_exit_2(result, f"inspect {name}")
    assert files_under(tmp_path) == before, "inspect wrote files"

    result = runner.invoke(app, ["fit", *paths, "--out", str(out), "--max-epochs", "1", "--quiet", *case.args])
    line = check_one_line_exit_2(result, f"fit {name}")
    # No partial output: not even an empty --out directory, and nothing next to the input.
    assert not out.exists(), f"fit {name} created {out} before failing on its input"
    assert files_under(tmp_path) == before, f"fit {name} left {sorted(files_under(tmp_path) - before)}"
    assert len(line) < 600, f"fit {name}: message too long: {line}"


@pytest.mark.filterwarnings("ignore:.*is being converted to data type float64")  # pynwb on int spike times
def test_valid_oddities_still_load(bases, tmp_path):
    """Unsorted, duplicate and integer spike times, and partly-NaN counts, are valid recordings."""
    from xfads_cli.config import DataConfig
    from xfads_cli.data.load import load_data

    BASES.update(bases)
    trains = spike_trains()
    odd = [trains[0][::-1], np.repeat(trains[1], 2), np.round(trains[2]).astype(np.int64), trains[3], trains[4]]
    path = write_nwb(tmp_path / "odd.nwb", trains=odd)
    data = load_data(path, DataConfig())
    clean = load_data(BASES["nwb"], DataConfig())
    np.testing.assert_array_equal(data.counts[..., 0], clean.counts[..., 0])
    np.testing.assert_array_equal(data.counts[..., 1], 2 * clean.counts[..., 1])

    counts = np.random.default_rng(0).poisson(1.0, SHAPE).astype(float)
    counts[0, :5, 1] = np.nan
    path = write_plain(tmp_path / "nan.h5")
    with h5py.File(path, "r+") as f:
        replace(f, "spikes", counts)
    data = load_data(path, DataConfig())
    assert np.isnan(data.counts).sum() == 5
    result = runner.invoke(app, ["inspect", str(path)])
    assert result.exit_code == 0, result.output


def run_main(*args: str) -> subprocess.CompletedProcess:
    """The real console entry point in a fresh interpreter (PYTHONWARNINGS unset: no warning may leak)."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONWARNINGS"}
    return subprocess.run([sys.executable, "-m", "xfads_cli", *args], capture_output=True, text=True, env=env, timeout=120)


@pytest.mark.parametrize("name, command", [
    ("truncated_lorenz_nwb_at_0.5", "inspect"),
    ("nwb_spike_time_nan", "inspect"),
    ("h5_counts_complex", "fit"),
])
def test_real_entry_point_prints_one_line(name, command, build, tmp_path):
    paths, case = build(name)
    before = files_under(tmp_path)
    out = tmp_path / "run"
    extra = ["--out", str(out), "--max-epochs", "1"] if command == "fit" else []
    result = run_main(command, *paths, *extra, *case.args)
    assert result.returncode == 2, (result.stdout, result.stderr)
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert "Traceback" not in result.stdout + result.stderr and result.stdout == ""
    assert files_under(tmp_path) - before <= {"run"} and not (out.exists() and any(out.iterdir()))


def test_the_bases_the_cases_break_are_valid(bases):
    """A case is a valid base file broken in one way; were a base rejected as it is, every case built
    from it would pass without testing its corruption. (nwb_nounits, nwb_emptyunits and nwb_silent are
    malformed themselves: cases of their own.)"""
    for name in ("nwb", "nwb_notrials", "plain", "nlb", "lorenz", "vdp"):
        result = runner.invoke(app, ["inspect", str(bases[name])])
        assert result.exit_code == 0 and result.exception is None, f"base {name}: {result.output}"
