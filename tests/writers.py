"""Writers of small test recordings, and the Hypothesis strategies that describe them.

A helper module for the test files (imported as `from writers import ...`, like range_server.py),
not a test file itself. test_properties.py fuzzes every command with these; other tests use the
NWB basics.

  * NWB basics: `new_nwb` and `save_nwb` (an in-memory NWBFile, written to disk), `replace` (swap an
    HDF5 dataset for other data while keeping its attributes: how tests corrupt a written file);
  * weighted choices (`chance`, `mostly`, `weighted`, `odd_list`), which shrink to the working value;
  * generated recordings: NWB (`NwbSpec`, `nwb_specs`, `write_nwb`), HDF5 (`H5Spec`, `h5_specs`,
    `write_h5`), files that are not recordings (`Junk`, `junk_specs`, `write_junk`), any of them
    (`any_recording`, `write_recording`);
  * generated configs: `--set` items (`set_items`, `set_args`) and config files (`config_files`,
    `write_config`);
  * output locations of file-writing commands (`OutSpec`, `out_specs`, `out_path`).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import h5py
import numpy as np
import yaml
from hypothesis import strategies as st

# --------------------------------------------------------------------------------------------------
# NWB basics


def new_nwb(description: str, identifier: str):
    """An empty in-memory NWBFile; the fixed session start keeps the written files reproducible."""
    from pynwb import NWBFile

    return NWBFile(session_description=description, identifier=identifier,
                   session_start_time=datetime(2024, 1, 1, tzinfo=timezone.utc))


def save_nwb(nwb, path: Path) -> Path:
    """Write `nwb` to `path`, muting pynwb's warnings (its checks flag the odd files tests write on purpose)."""
    from pynwb import NWBHDF5IO

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with NWBHDF5IO(str(path), "w") as io:
            io.write(nwb)
    return path


def write_continuous(path: Path, *, n_units: int, duration: float, gap: tuple[float, float], seed: int = 0) -> Path:
    """An NWB recording without trials: units driven by a slow oscillation (8 Hz mean, 0.3 Hz), observed
    in [0, gap[0]) and [gap[1], duration) s (so two segments)."""
    rng = np.random.default_rng(seed)
    nwb = new_nwb("continuous", "cont")
    t = np.arange(0, duration, 0.001)
    for j in range(n_units):
        rate = 8.0 * (1 + np.sin(2 * np.pi * 0.3 * t + j))
        spikes = t[rng.random(t.size) < rate * 0.001]
        spikes = spikes[(spikes < gap[0]) | (spikes >= gap[1])]
        nwb.add_unit(spike_times=spikes, obs_intervals=[[0.0, gap[0]], [gap[1], duration]])
    return save_nwb(nwb, path)


def replace(f, name: str, data, dtype=None):
    """Replace dataset `name` with `data`, keeping its attributes (neurodata_type, object_id, ...)."""
    attrs = {k: f[name].attrs[k] for k in f[name].attrs} if name in f else {}
    if name in f:
        del f[name]
    ds = f.create_dataset(name, data=data, dtype=dtype)
    for key, value in attrs.items():
        ds.attrs[key] = value
    return ds


# --------------------------------------------------------------------------------------------------
# Weighted choices: most examples should carry one or two odd values among working ones (an example
# that fails on its first of five broken arguments tests little). Hypothesis' one_of and sampled_from
# do not weight their choices, so draws go through an integer in [0, 100) that shrinks to the first,
# working, choice.


def chance(percent: int):
    """True with probability ~percent % (shrinks to False)."""
    return st.integers(0, 99).map(lambda i: i >= 100 - percent)


def mostly(valid, odd, odd_percent: int = 20):
    """One of `valid`, or with probability ~odd_percent % one of `odd` (shrinks to valid[0])."""
    valid, odd = list(valid), list(odd)
    cut = 1000 - 10 * odd_percent
    return st.integers(0, 999).map(lambda i: valid[i % len(valid)] if i < cut else odd[i % len(odd)])


def weighted(*options):
    """One of the strategies of `options` [(percent, strategy), ...] (shrinks to the first)."""
    total = sum(p for p, _ in options)

    def pick(i):
        for p, strategy in options:
            if i < p:
                return strategy
            i -= p
        raise AssertionError(i)

    return st.integers(0, total - 1).flatmap(pick)


def odd_list(choices, percent: int):
    """() mostly; else one or two distinct entries of `choices`."""
    return chance(percent).flatmap(lambda on: st.lists(st.sampled_from(choices), min_size=1, max_size=2, unique=True)
                                   .map(tuple) if on else st.just(()))


# --------------------------------------------------------------------------------------------------
# Generated recordings


@dataclass(frozen=True)
class NwbSpec:
    units_table: str = "rows"  # rows | empty (a units table without rows) | absent
    n_units: int = 4
    rate_hz: float = 10.0
    seed: int = 0
    odd: tuple[str, ...] = ()  # spike-time oddities applied to the first unit, see SPIKE_ODDITIES
    trials: str = "ok"  # ok | one of TRIAL_ODDITIES
    n_trials: int = 6
    trial_s: float = 0.2
    events: bool = False  # an extra interval table 'events'
    behavior: bool = False  # a TimeSeries 'speed' in processing/behavior
    condition: bool = False  # trials column 'condition'
    unit_extras: tuple[tuple[str, str], ...] = ()  # (obs_intervals | heldout, good | bad) units columns
    suffix: str = ".nwb"


SPIKE_ODDITIES = ("nan", "inf", "-inf", "negative", "huge", "unsorted", "duplicate", "all_nan", "integer")
TRIAL_ODDITIES = ("none", "empty_table", "stop_before_start", "nan_start", "overlap", "zero_length", "huge_start", "one")


@st.composite
def nwb_specs(draw, n_units: int | None = None, clean: int = 30) -> NwbSpec:
    """A small NWB recording: with probability ~clean % a well-formed one, else one with odd parts."""
    fixed = n_units is not None
    if draw(chance(clean)):
        return NwbSpec(n_units=n_units if fixed else draw(st.integers(1, 4)), rate_hz=draw(st.sampled_from([10.0, 30.0])),
                       seed=draw(st.integers(0, 3)), n_trials=draw(st.integers(4, 7)),
                       trial_s=draw(st.sampled_from([0.2, 0.3])), events=draw(st.booleans()),
                       behavior=draw(st.booleans()), condition=draw(st.booleans()))
    return NwbSpec(
        units_table="rows" if fixed else draw(mostly(["rows"], ["empty", "absent"], 8)),
        n_units=n_units if fixed else draw(mostly([4, 3, 2, 1], [0], 6)),
        rate_hz=draw(mostly([10.0, 30.0, 3.0], [0.0], 6)), seed=draw(st.integers(0, 3)),
        odd=draw(odd_list(SPIKE_ODDITIES, 20)),
        trials=draw(mostly(["ok"], TRIAL_ODDITIES, 35)), n_trials=draw(st.integers(2, 7)),
        trial_s=draw(mostly([0.2, 0.3, 0.12], [0.04], 10)), events=draw(st.booleans()),
        behavior=draw(st.booleans()), condition=draw(st.booleans()),
        unit_extras=tuple(draw(st.dictionaries(st.sampled_from(["obs_intervals", "heldout"]),
                                               mostly(["good"], ["bad"], 30), max_size=2)).items()),
        suffix=draw(mostly([".nwb"], [".h5"], 10)),
    )


def _odd_train(train: np.ndarray, odd: tuple[str, ...]) -> np.ndarray:
    train = np.asarray(train, dtype=np.float64)
    for kind in odd:
        if kind == "unsorted":
            train = train[::-1]
        elif kind == "duplicate":
            train = np.repeat(train, 2)
        elif kind == "all_nan":
            train = np.full(max(train.size, 1), np.nan)
        elif kind == "integer":
            train = np.round(train)
        else:
            value = {"nan": np.nan, "inf": np.inf, "-inf": -np.inf, "negative": -0.25, "huge": 1e300}[kind]
            train = np.append(train, value)
    return train


def write_nwb(path: Path, spec: NwbSpec) -> Path:
    """The NWB recording `spec` describes, at `path`."""
    from pynwb import TimeSeries
    from pynwb.misc import Units

    rng = np.random.default_rng(spec.seed)
    table = spec.trials not in ("none",)
    n_trials = 1 if spec.trials == "one" else spec.n_trials
    starts = 0.1 + np.arange(n_trials) * (spec.trial_s + 0.1)
    stops = starts + spec.trial_s
    duration = float(stops[-1] + 0.2) if table else 2.5
    if spec.trials == "stop_before_start":
        stops[-1] = starts[-1] - 0.05
    elif spec.trials == "nan_start":
        starts[0] = np.nan
    elif spec.trials == "overlap":
        stops = starts + 2 * spec.trial_s
    elif spec.trials == "zero_length":
        stops[0] = starts[0]
    elif spec.trials == "huge_start":
        starts[-1], stops[-1] = 1e12, 1e12 + spec.trial_s

    nwb = new_nwb("xfads property test", path.stem)
    if spec.units_table == "empty":
        nwb.units = Units(name="units", description="no units")
    elif spec.units_table == "rows" and spec.n_units:
        extras = dict(spec.unit_extras)
        nwb.add_unit_column("quality", "sorting quality")
        if "heldout" in extras:
            nwb.add_unit_column("heldout", "held-out neurons")
        for j in range(spec.n_units):
            train = np.sort(rng.uniform(0.0, duration, rng.poisson(spec.rate_hz * duration)))
            if j == 0 and spec.odd:
                train = _odd_train(train, spec.odd)
            columns = {}
            if "heldout" in extras:
                columns["heldout"] = j == 0 or extras["heldout"] == "bad"
            if "obs_intervals" in extras:  # unit 0 unobserved for a while (NaN bins), or an impossible interval
                columns["obs_intervals"] = ([[0.0, duration / 3], [duration / 2, duration]] if j == 0 else [[0.0, duration]]) \
                    if extras["obs_intervals"] == "good" else [[duration, 0.0]]
            nwb.add_unit(id=j, spike_times=train, quality="good" if j % 2 == 0 else "bad", **columns)
    if table:
        if spec.condition:
            nwb.add_trial_column("condition", "condition label")
        for k in range(n_trials):
            extra = {"condition": k % 2} if spec.condition else {}
            nwb.add_trial(start_time=float(starts[k]), stop_time=float(stops[k]), **extra)
    if spec.events:
        events = nwb.create_time_intervals("events", "other intervals")
        for k in range(3):
            events.add_interval(0.1 + 0.5 * k, 0.4 + 0.5 * k)
    if spec.behavior:
        module = nwb.create_processing_module("behavior", "behaviour")
        module.add(TimeSeries(name="speed", data=np.sin(np.arange(int(duration * 100)) / 10.0), unit="m/s", rate=100.0))
    save_nwb(nwb, path)
    if spec.trials == "empty_table":  # a trials table with no rows (pynwb cannot write one)
        with h5py.File(path, "r+") as f:
            for name in ("start_time", "stop_time", "id") + (("condition",) if spec.condition else ()):
                replace(f, f"intervals/trials/{name}", f[f"intervals/trials/{name}"][:0])
    return path


@dataclass(frozen=True)
class H5Spec:
    layout: str = "plain"  # plain | nlb
    trials: int = 8
    bins: int = 10
    neurons: int = 4
    dtype: str = "uint16"
    odd: tuple[str, ...] = ()  # count oddities, see COUNT_ODDITIES
    bin_ms: object = 20.0  # root attribute; None: absent
    extras: tuple[tuple[str, str], ...] = ()  # (dataset, good|bad)
    seed: int = 0
    suffix: str = ".h5"


COUNT_ODDITIES = ("nan_bin", "nan_neuron", "all_nan", "negative", "fraction", "inf", "huge", "one_spike", "zeros")
BIN_MS_ODDITIES = (0.0, -20.0, float("nan"), float("inf"), "twenty", b"20", (20.0, 20.0), 3.0)
EXTRAS = ("trial_ids", "unit_ids", "split", "heldout", "behavior", "conditions", "truth")


@st.composite
def h5_specs(draw, neurons: int | None = None, clean: int = 30) -> H5Spec:
    """A small HDF5 recording: with probability ~clean % a well-formed one, else one with odd parts."""
    if draw(chance(clean)):
        return H5Spec(trials=draw(st.sampled_from([4, 6, 8])), bins=draw(st.sampled_from([5, 8, 10, 12])),
                      neurons=neurons if neurons is not None else draw(st.integers(2, 5)),
                      dtype=draw(st.sampled_from(["uint16", "int64", "float32"])),
                      bin_ms=draw(st.sampled_from([20.0, None, 10.0])), seed=draw(st.integers(0, 3)))
    return H5Spec(
        layout=draw(mostly(["plain"], ["nlb"], 15)),
        trials=draw(mostly([8, 6, 4, 5], [0, 1, 2, 3], 12)),
        bins=draw(mostly([10, 8, 5, 12], [0, 1, 2, 3], 12)),
        neurons=neurons if neurons is not None else draw(mostly([4, 3, 2, 5], [0, 1], 10)),
        dtype=draw(mostly(["uint16", "int64", "float32", "float64", "uint8", "int32"],
                          ["float16", "bool", "text", "complex"], 10)),
        odd=draw(odd_list(COUNT_ODDITIES, 25)),
        bin_ms=draw(mostly([20.0, 20.0, None, 10.0, 5, 40.0], BIN_MS_ODDITIES, 12)),
        extras=tuple(draw(st.dictionaries(st.sampled_from(EXTRAS), mostly(["good"], ["bad"], 25), max_size=3)).items()),
        seed=draw(st.integers(0, 3)),
        suffix=draw(mostly([".h5"], [".hdf5", ".nwb", ".dat"], 10)),
    )


def _counts(spec: H5Spec) -> np.ndarray:
    rng = np.random.default_rng(spec.seed)
    counts = rng.poisson(1.0, (spec.trials, spec.bins, spec.neurons)).astype(np.float64)
    flat = counts.reshape(-1)
    for kind in spec.odd:
        if not flat.size:
            break
        if kind == "nan_bin":
            flat[len(flat) // 2] = np.nan
        elif kind == "nan_neuron":
            counts[..., 0] = np.nan
        elif kind == "all_nan":
            counts[...] = np.nan
        elif kind == "negative":
            flat[0] = -1
        elif kind == "fraction":
            flat[-1] = 0.5
        elif kind == "inf":
            flat[1 % len(flat)] = np.inf
        elif kind == "huge":
            flat[-1] = 1e9
        elif kind == "one_spike":
            counts[...] = 0
            flat[0] = 1
        elif kind == "zeros":
            counts[...] = 0
    return counts


def _as_dtype(counts: np.ndarray, dtype: str) -> np.ndarray:
    if dtype == "text":
        return np.char.encode(np.nan_to_num(counts).astype(int).astype(str))
    if dtype == "complex":
        return counts.astype(np.complex64)
    if dtype == "bool":
        return np.nan_to_num(counts) > 0
    target = np.dtype(dtype)
    if target.kind in "iu" and not np.all(np.isfinite(counts) & (counts == np.round(counts))):
        return counts  # the oddity needs a float dtype: keep float64
    if target.kind == "u" and np.nanmin(counts, initial=0) < 0:
        return counts.astype(np.int64)
    if target.kind in "iu" and np.nanmax(counts, initial=0) > np.iinfo(target).max:
        return counts.astype(np.int64)
    return counts.astype(target)


def write_h5(path: Path, spec: H5Spec) -> Path:
    counts = _as_dtype(_counts(spec), spec.dtype)
    rng = np.random.default_rng(spec.seed + 10)
    t, b, n = spec.trials, spec.bins, spec.neurons
    extras = dict(spec.extras)
    with h5py.File(path, "w") as f:
        if spec.bin_ms is not None:
            f.attrs["bin_ms"] = np.array(spec.bin_ms) if isinstance(spec.bin_ms, tuple) else spec.bin_ms
        if spec.layout == "nlb":
            f["train_spikes_heldin"] = counts
            if "heldout" in extras:  # NLB held-out neurons: one more column, or a mismatching trial count
                f["train_spikes_heldout"] = rng.poisson(1.0, (t if extras["heldout"] == "good" else t + 1, b, 1))
            if "split" in extras:  # NLB eval trials (the test split)
                f["eval_spikes_heldin"] = rng.poisson(1.0, (max(t // 2, 1), b, n if extras["split"] == "good" else n + 1))
            if "behavior" in extras:
                f["train_behavior"] = rng.normal(size=(t, b if extras["behavior"] == "good" else b + 1, 2))
            return path
        f["spikes"] = counts
        for name, kind in spec.extras:
            good = kind == "good"
            if name == "trial_ids":
                f[name] = np.arange(t if good else t + 1)
            elif name == "unit_ids":
                f[name] = np.arange(n) if good else np.array([b"\xff\xfe"] * max(n, 1))
            elif name == "split":
                labels = np.array(["train", "train", "valid", "test"] * (t // 4 + 1))[:t] if good else ["holdout"] * t
                f[name] = np.array(labels, dtype="S")
            elif name == "heldout":
                f[name] = (np.arange(n) == 0) if good else np.ones(n, dtype=bool)
            elif name == "behavior":
                f[name] = rng.normal(size=(t, b, 2) if good else (t, b + 1, 2))
            elif name == "conditions":
                f[name] = np.arange(t) % 2 if good else np.zeros((t, 2))
            elif name == "truth":
                f["truth/rates"] = np.ones((t, b, n) if good else (t, b))
    return path


JUNK_KINDS = ("empty", "text", "random", "magic_garbage", "truncated_h5", "truncated_nwb", "directory", "missing")


@dataclass(frozen=True)
class Junk:
    kind: str
    suffix: str = ".h5"
    seed: int = 0


def write_junk(path: Path, kind: str, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    if kind == "empty":
        path.write_bytes(b"")
    elif kind == "text":
        path.write_text("unit,spike_time\n1,0.5\n")
    elif kind == "random":
        path.write_bytes(rng.bytes(2048))
    elif kind == "magic_garbage":
        path.write_bytes(b"\x89HDF\r\n\x1a\n" + rng.bytes(1024))
    elif kind in ("truncated_h5", "truncated_nwb"):
        full = path.with_name("full" + path.suffix)
        write_h5(full, H5Spec()) if kind == "truncated_h5" else write_nwb(full, NwbSpec())
        data = full.read_bytes()
        full.unlink()
        path.write_bytes(data[: int(len(data) * rng.uniform(0.1, 0.95))])
    elif kind == "directory":
        path.mkdir()
    # "missing": nothing at `path`
    return path


junk_specs = st.builds(Junk, st.sampled_from(JUNK_KINDS), st.sampled_from([".h5", ".nwb"]), st.integers(0, 2))
any_recording = weighted((45, nwb_specs()), (45, h5_specs()), (10, junk_specs))


def write_recording(folder: Path, spec, name: str = "rec") -> Path:
    """The file (or non-file) `spec` describes, at folder/name+suffix."""
    path = folder / f"{name}{spec.suffix}"
    if isinstance(spec, NwbSpec):
        return write_nwb(path, spec)
    if isinstance(spec, H5Spec):
        return write_h5(path, spec)
    return write_junk(path, spec.kind, spec.seed)


# --------------------------------------------------------------------------------------------------
# Generated configs


# Overrides that work on typical recordings (some only on some: data.intervals=events needs the table)
GOOD_SETS = [
    "data.bin_ms=10", "data.bin_ms=40", "data.bin_ms=5", "data.window_ms=[0,100]", "data.window_ms=[0,60]",
    "data.window_ms=null", "data.intervals=trials", "data.intervals=events", "data.align=stop_time",
    "data.chop_ms=200", "data.overlap_ms=100", 'data.units=quality == "good"', "data.units=not quality",
    "data.behavior=speed", "data.heldout_units=[0]", "data.heldout_fraction=0.25", "data.condition=condition",
    "data.split=[0.5,0.25,0.25]", "data.split=[1,0,0]", "data.split_seed=3", "data.session=renamed",
    "model.latent_dim=1", "model.latent_dim=3", "model.dynamics=gru", "model.dynamics=linear",
    "model.dynamics_layers=0", "model.dynamics_layers=2", "model.likelihood=gaussian", "model.likelihood=bernoulli",
    "model.link=softplus", "model.read_dims=2", "model.rank_local=1", "model.rank_backward=0", "model.samples=1",
    "model.mode=filter", "model.mode=two_filter", "model.init=pca", "model.kind=meta", "model.embed_dim=1",
    "model.hyper_hidden=4", "model.hyper_rank=1", "model.frobenius_weight=0",
    "train.batch_size=1", "train.batch_size=1000", "train.lr=0.1", "train.schedule=exponential", "train.lr_final=1",
    "train.anneal_fraction=1", "train.warmup_steps=0", "train.patience=1", "train.drop_local=0.9",
    "train.drop_local=0", "train.forecast_fraction=1", "train.forecast_fraction=0.5", "train.samples=1",
    "train.samples=null", "train.select=elbo", "train.select=co_bps", "train.select=fp_bps", "train.dtype=float64",
    "train.threads=1", "train.device=cpu", "train.lr_decay=0.5", "train.time_limit_min=5",
    "eval.context_bins=2", "eval.horizon_bins=2", "eval.context_bins=100", "eval.samples=1",
    "eval.behavior_lag_ms=0", "eval.behavior_lag_ms=1e6", "eval.psth_sigma_ms=0", "seed=3",
]
# Overrides that must give a one-line error (or do nothing harmful)
BAD_SETS = [
    "data.bin_ms=7", "data.bin_ms=0", "data.bin_ms=-20", "data.bin_ms=nan", "data.bin_ms=inf", "data.bin_ms=abc",
    "data.bin_ms=1e300", "data.bin_ms=[20]", "data.window_ms=[-50,50]", "data.window_ms=[100,0]",
    "data.window_ms=[0,1e6]", "data.window_ms=5", "data.intervals=nope", "data.align=bogus", "data.chop_ms=0",
    "data.chop_ms=-5", "data.chop_ms=30", "data.chop_ms=nan", "data.overlap_ms=5000", "data.overlap_ms=-1",
    "data.units=quality > 3", "data.units=nonsense ((", "data.units=snr > 1", "data.behavior=[speed, nope]",
    "data.behavior=nope", "data.heldout_units=[99]", "data.heldout_units=[0,1,2,3,4]", "data.heldout_fraction=1",
    "data.heldout_fraction=-0.5", "data.heldout_fraction=2", "data.heldout_column=quality", "data.condition=nope",
    "data.split=[0,0,1]", "data.split=[0.5,0.5]", "data.split=[-1,1,1]", "data.split=[0,0,0]", "data.session=",
    "model.latent_dim=0", "model.latent_dim=-2", "model.latent_dim=2.5", "model.latent_dim=abc",
    "model.dynamics=lstm", "model.likelihood=negbin", "model.link=relu", "model.read_dims=0", "model.rank_local=0",
    "model.samples=0", "model.mode=causal", "model.init=random", "model.kind=other",
    "train.batch_size=0", "train.lr=0", "train.lr=-1", "train.schedule=step", "train.lr_final=2",
    "train.anneal_fraction=0", "train.warmup_steps=-1", "train.grad_clip=0", "train.drop_local=1",
    "train.select=best", "train.dtype=float16", "train.threads=0", "train.lr_decay=1.5", "train.time_limit_min=0",
    "eval.horizon_bins=0", "eval.samples=0", "eval.psth_sigma_ms=-1",
    "seed=-1", "seed=abc", "seed=2.5", "bogus=1", "data.bogus=1", "modle.latent_dim=2", "data=3",
    "data.bin_ms.x=1", "novalue", "=3", "", "train.lr", "data.bin_ms==20", "data.split=[0.5, 0.5",
    "train={lr: 0.1}", "model.latent_dim=[2]", "data.behavior={a: 1}",
]


def _config_keys() -> list[str]:
    import dataclasses

    from xfads_cli.config import Config

    keys = ["seed"]
    for section in ("data", "model", "train", "eval"):
        keys += [f"{section}.{f.name}" for f in dataclasses.fields(getattr(Config(), section))]
    return keys


CONFIG_KEYS = _config_keys()
# Any key with any of these values (nan, inf and sizes too large to build are range errors in config.py).
VALUES = ["0", "-1", "1", "2", "3", "0.5", "2.5", "-0.5", "abc", "true", "null", "[1, 2]", "[0, 100]", "[]",
          "{a: 1}", "''", "[0.5, 0.3, 0.2]", "nan", "inf", "1e300", "1000000000000000"]
random_set = st.builds(lambda k, v: f"{k}={v}", st.sampled_from(CONFIG_KEYS), st.sampled_from(VALUES))
one_set = weighted((75, st.sampled_from(GOOD_SETS)), (15, st.sampled_from(BAD_SETS)), (10, random_set))
set_items = mostly([0, 0, 1, 1, 2], [3], 10).flatmap(lambda n: st.lists(one_set, min_size=n, max_size=n))


def set_args(items: list[str]) -> list[str]:
    return [arg for item in items for arg in ("--set", item)]


@dataclass(frozen=True)
class ConfigFile:
    kind: str  # mapping | text | missing | binary
    content: str = ""


def _nest(items: list[str]) -> dict:
    """The --set items as a YAML mapping, parsed as --set parses them (items it refuses are left out)."""
    from xfads_cli.config import _apply_override
    from xfads_cli.errors import UsageError

    out: dict = {}
    for item in items:
        try:
            _apply_override(out, item)
        except UsageError:
            pass
    return out


CONFIG_TEXTS = ["", "data: [1, 2", "- a\n- b\n", "data:\n  bin_ms: twenty\n", "data: 3\n", "model:\n  latnt_dim: 2\n",
                "\tdata:\n bin_ms: 20", "train:\n  lr: 0.01\n  max_epochs: 1\n", "just text", "data:\n  bin_ms: 10\n",
                "null\n", "{data: {window_ms: [0, 60]}, seed: 4}\n"]
config_files = weighted(
    (70, st.none()),
    (15, st.lists(st.sampled_from(GOOD_SETS + BAD_SETS[:40]), max_size=3)
     .map(lambda items: ConfigFile("mapping", yaml.safe_dump(_nest(items))))),
    (11, st.sampled_from(CONFIG_TEXTS).map(lambda text: ConfigFile("text", text))),
    (4, st.sampled_from([ConfigFile("missing"), ConfigFile("binary")])),
)


def write_config(folder: Path, spec: ConfigFile | None) -> list[str]:
    if spec is None:
        return []
    path = folder / "config.yaml"
    if spec.kind == "binary":
        path.write_bytes(b"\xff\xfe\x00data")
    elif spec.kind != "missing":
        path.write_text(spec.content)
    return ["--config", path]


# --------------------------------------------------------------------------------------------------
# Output locations


@dataclass(frozen=True)
class OutSpec:
    where: str = "fresh"  # fresh | missing_dir | exists | directory | input | checkpoint
    suffix: str = ".h5"
    overwrite: bool = False


out_specs = st.builds(OutSpec, mostly(["fresh"], ["missing_dir", "exists", "exists", "directory", "input", "checkpoint"], 30),
                      mostly([".h5"], [".nwb", ".hdf5", "", ".txt"], 15), st.booleans())


def out_path(tmp: Path, spec: OutSpec, data: Path | None, checkpoint: Path | None = None) -> Path:
    """The --out path of a file-writing command, with the state `spec` asks for set up beforehand
    ('input': the recording read; 'checkpoint': the checkpoint read, when it is a file in tmp)."""
    if spec.where == "input" and data is not None:
        return data
    if spec.where == "checkpoint" and checkpoint is not None:
        return checkpoint
    folder = tmp / "missing" / "deeper" if spec.where == "missing_dir" else tmp / "out"
    path = folder / f"result{spec.suffix}"
    if spec.where == "exists":
        path.write_bytes(b"an older result\n")
    elif spec.where == "directory":
        path.mkdir()
    return path
