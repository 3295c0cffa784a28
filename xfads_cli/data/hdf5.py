"""HDF5 spike tensors: the NLB layout and xfads' plain layout (both documented in the README).

NLB layout (what `nlb_tools.make_train_input_tensors` / `make_eval_input_tensors` write):
    train_spikes_heldin  [trial, time, neuron_in]     train_spikes_heldout [trial, time, neuron_out]
    eval_spikes_heldin   [trial, time, neuron_in]     eval_spikes_heldout  (optional)
    train_behavior / eval_behavior [trial, time, dim] (optional)
  Train trials are split into train/valid by `data.split`; eval trials become the test split. Eval
  held-out counts, when absent, are NaN (missing), so co-bps on them must come from NLB's evaluator.

Plain layout:
    spikes     [trial, time, neuron] counts, root attribute bin_ms
    behavior   [trial, time, dim] (optional, attribute `names`)
    trial_ids  [trial], split [trial] ('train'/'valid'/'test'), unit_ids [neuron],
    heldout    [neuron] bool, conditions [trial]      (all optional)
    truth/latents, truth/rates (expected counts per bin), truth/retest_counts (optional, simulated data)
    events/<name> [trial] (optional) time of event <name> in each trial, in seconds FROM THAT TRIAL'S
               START (NaN: the trial has none); read as SpikeData.events (bins) per data.events
               ('auto': every dataset of the group; [] none; names must be datasets of it)
    trial_lengths [trial] (optional) bins of each trial, at the file's bin width: trials of different
               durations stored padded to the longest; whatever the bins past a trial's length hold
               (NaN, zeros) is padding and read as missing (NaN).

Trials of different durations (both layouts): without a trial_lengths dataset a trial's length is
the bins up to its last bin with any observed (non-NaN) count, so NaN padding is recognised as such.
The stored shape is kept whatever data.trial_lengths says (the option cuts interval-table trials of
NWB files); SpikeData.lengths carries the lengths, divided by the rebinning factor (a merged bin
that holds padding is padding).
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np

from xfads_cli.config import DataConfig
from xfads_cli.data.conditions import AUTO, event_bins
from xfads_cli.data.selection import choose_heldout
from xfads_cli.data.spikedata import SPLITS, SpikeData, assign_split, padding_mask, trailing_lengths
from xfads_cli.errors import BadFile, UsageError, closest, dtype_kind, first_line, listing

NLB_KEY = "train_spikes_heldin"
PLAIN_KEY = "spikes"
EVENTS = "events"  # group of [trial] event times, seconds from each trial's start
# Largest believable spike count in one bin. Above 2**24 counts are not even exact in float32, the dtype
# they are modelled in: such values are timestamps, sample indices or corruption, not counts.
MAX_COUNT = 2**24
def _datasets(f) -> list[str]:
    names: list[str] = []
    f.visititems(lambda name, obj: names.append(name) if hasattr(obj, "shape") else None)
    return names


def detect_layout(f) -> str:
    if NLB_KEY in f:
        return "nlb"
    if PLAIN_KEY in f:
        return "plain"
    raise UsageError(
        f"{Path(f.filename).name} has neither '{PLAIN_KEY}' (plain layout) nor '{NLB_KEY}' (NLB layout); "
        f"datasets found: {listing(_datasets(f))}. See the README section 'Data formats'"
    )


def _raw(f, name: str, ndim: int | None = None) -> np.ndarray:
    """Dataset `name` as stored (no conversion), checked to be a dataset with `ndim` dimensions."""
    file = Path(f.filename).name
    ds = f[name]
    if not hasattr(ds, "shape"):
        raise BadFile(f"'{name}' in {file} is a group, expected a dataset")
    if ndim is not None and ds.ndim != ndim:
        raise BadFile(f"'{name}' in {file} has {ds.ndim} dimensions {ds.shape}, expected {ndim}")
    if ds.dtype.kind == "V":
        raise BadFile(f"'{name}' in {file} holds {dtype_kind(ds.dtype)}; it must be a plain array")
    try:
        return np.asarray(ds[()])
    except OSError as exc:
        raise BadFile(f"cannot read '{name}' from {file} ({first_line(exc)}); the file is damaged (truncated or"
                      " corrupt), copy it again") from None



def _read(f, name: str, ndim: int | None = None, dtype=np.float32, check=None) -> np.ndarray:
    """Dataset `name` as `dtype` (None: as stored). Numeric dtypes need numbers in the file (not text,
    complex or records); `check(raw)` runs on the stored values before the conversion."""
    arr = _raw(f, name, ndim)
    if dtype is None:
        return arr
    file = Path(f.filename).name
    target = np.dtype(dtype)
    if target.kind == "b":
        if arr.dtype.kind != "b" and not (arr.dtype.kind in "iu" and np.isin(arr, (0, 1)).all()):
            what = "integers other than 0 and 1" if arr.dtype.kind in "iu" else dtype_kind(arr.dtype)
            raise BadFile(f"'{name}' in {file} holds {what}; it must hold booleans (or 0/1), one per entry")
    elif arr.dtype.kind not in "biuf":
        raise BadFile(f"'{name}' in {file} holds {dtype_kind(arr.dtype)}, not plain numbers; store it as a numeric (integer or float) dataset")
    elif target.kind in "iu" and arr.dtype.kind == "f" and not (np.isfinite(arr).all() and (arr == np.round(arr)).all()):
        raise BadFile(f"'{name}' in {file} holds non-integer values; it must hold whole numbers (ids)")
    if check is not None:
        check(arr)
    with np.errstate(over="ignore", invalid="ignore"):  # e.g. 1e300 behaviour becomes inf in float32
        return arr.astype(target)


def _counts_check(name: str, file: str, observed: bool = True):
    """check(raw) for a spike-count dataset: >= 0, finite (NaN marks a missing bin), believable
    (<= MAX_COUNT) and, when `observed`, not entirely missing."""
    def check(raw: np.ndarray) -> None:
        if raw.size == 0:
            return
        if raw.dtype.kind == "f":  # checked in place: a float64 copy of a large tensor would cost GBs
            if np.isinf(raw).any():
                raise BadFile(f"'{name}' in {file} holds infinite spike counts; counts must be finite numbers >= 0"
                              " (NaN marks a missing bin)")
            if np.isnan(raw).all():
                if observed:
                    raise BadFile(f"'{name}' in {file} is all NaN (every bin missing); it must hold spike counts")
                return
            low, top = float(np.nanmin(raw)), float(np.nanmax(raw))
        else:
            low, top = float(raw.min()), float(raw.max())
        if low < 0:
            raise BadFile(f"'{name}' in {file} holds negative spike counts (e.g. {low:g}); counts must"
                          " be >= 0 (NaN marks a missing bin)")
        if top > MAX_COUNT:
            raise BadFile(
                f"'{name}' in {file} holds {top:g} spikes in one bin, which cannot be a spike count (counts above"
                f" {MAX_COUNT} are not even exact in float32); check that it holds counts per bin, not spike times"
                " or sample indices"
            )
    return check


def _counts(f, name: str, observed: bool = True) -> np.ndarray:
    return _read(f, name, ndim=3, check=_counts_check(name, Path(f.filename).name, observed))


def _same_trials(arr: np.ndarray, n_trial: int, n_time: int, name: str, ref: str) -> None:
    if arr.shape[:2] != (n_trial, n_time):
        raise BadFile(
            f"'{name}' has shape {arr.shape} but '{ref}' has {n_trial} trials x {n_time} bins; "
            "their first two dimensions must match"
        )


def _rebin_factor(file_bin_ms: float, bin_ms: float, path: Path, n_time: int) -> int:
    ratio = bin_ms / file_bin_ms
    factor = int(round(ratio))
    if factor < 1 or abs(ratio - factor) > 1e-6:
        raise UsageError(
            f"{path.name} is binned at {file_bin_ms:g} ms, so data.bin_ms must be a whole multiple of it "
            f"(got {bin_ms:g}); e.g. --set data.bin_ms={file_bin_ms:g}"
        )
    if factor > n_time:
        raise UsageError(
            f"data.bin_ms={bin_ms:g} is longer than a whole trial of {path.name} ({n_time} bins of {file_bin_ms:g} ms"
            f" = {n_time * file_bin_ms:g} ms); lower data.bin_ms, e.g. --set data.bin_ms={file_bin_ms:g}"
        )
    return factor


def rebin(x: np.ndarray, factor: int, reduce: str = "sum") -> np.ndarray:
    """Merge `factor` adjacent bins along axis 1 ([trial, time, ...]); a partial last bin is dropped."""
    if factor == 1:
        return x
    n_time = x.shape[1] // factor
    x = x[:, : n_time * factor].reshape(x.shape[0], n_time, factor, *x.shape[2:])
    return x.sum(axis=2) if reduce == "sum" else x.mean(axis=2)


def read_hdf5(opened, cfg: DataConfig) -> SpikeData:
    """Read the open NLB-layout or plain-layout HDF5 file `opened` (data/opened.py) into SpikeData (see
    the module docstring)."""
    f, path = opened.h5, opened.source
    layout = detect_layout(f)
    data = _load_nlb(f, path, cfg) if layout == "nlb" else _load_plain(f, path, cfg)
    data = _padded(f, path, data)
    events = _events(f, path, cfg.events, data)
    if events:  # (a replace re-checks the whole padding: only when there is something to add)
        data = replace(data, events=events)
    data.provenance.update({**opened.provenance(), "format": f"hdf5-{layout}",
                            "trials_from": f"hdf5-{layout} trial tensors",  # trial-aligned, never chopped
                            "condition": None if data.conditions is None else "conditions",
                            "events": list(data.events)})
    return data


def _events(f, path: Path, names: tuple[str, ...], data: SpikeData) -> dict[str, np.ndarray]:
    """name -> [trial] float64 event bins from each trial's start (NaN: none, or outside the trial's
    0..lengths bins) from the `events/` group's datasets ([trial] seconds from each trial's start),
    for data.events: 'auto' reads them all, names must be datasets of the group."""
    stored = []
    if EVENTS in f:
        if hasattr(f[EVENTS], "shape"):
            raise BadFile(f"'{EVENTS}' in {path.name} is a dataset; it must be a group of [trial] event times"
                          " (seconds from each trial's start), one dataset per event")
        stored = [name for name in f[EVENTS] if hasattr(f[EVENTS][name], "shape")]
    chosen: list[str] = []
    for name in names:
        if name == AUTO:
            chosen += [n for n in stored if n not in chosen]
        elif name not in stored:
            raise UsageError(f"data.events: {path.name} has no dataset '{EVENTS}/{name}'{closest(name, stored)};"
                             f" its events: {listing(stored)}, or --set data.events=[]")
        elif name not in chosen:
            chosen.append(name)
    out = {}
    for name in chosen:
        seconds = _read(f, f"{EVENTS}/{name}", ndim=1, dtype=np.float64)
        if seconds.shape != (data.n_trials,):
            raise BadFile(f"'{EVENTS}/{name}' in {path.name} has {seconds.shape[0]} entries but the file has"
                          f" {data.n_trials} trials; it must hold one time (seconds from the trial's start) per trial")
        out[name] = event_bins(seconds, np.zeros(data.n_trials), data.dt, data.lengths)
    return out


def _file_bin_ms(f, cfg: DataConfig | None) -> float | None:
    """The file's bin width (root attribute bin_ms), else cfg.bin_ms; a malformed attribute is a BadFile."""
    value = f.attrs.get("bin_ms")
    if value is None:
        return None if cfg is None else cfg.bin_ms
    try:
        bin_ms = float(np.asarray(value).item())
    except (TypeError, ValueError):
        bin_ms = float("nan")
    if not (np.isfinite(bin_ms) and bin_ms > 0):
        raise BadFile(
            f"the bin_ms attribute of {Path(f.filename).name} is {_text(value)!r}; it must be the file's bin width"
            " in ms (a number > 0): fix the attribute"
        )
    return bin_ms


def _load_plain(f, path: Path, cfg: DataConfig) -> SpikeData:
    file_bin_ms = _file_bin_ms(f, cfg)
    counts = _counts(f, PLAIN_KEY)
    n_trial, n_time, n_neuron = counts.shape
    if n_trial == 0 or n_neuron == 0 or n_time == 0:
        raise BadFile(f"'{PLAIN_KEY}' in {path.name} is empty (shape {counts.shape}); it needs trials, bins and neurons")

    def optional(name, shape_check, dtype=None):
        if name not in f:
            return None
        arr = _read(f, name, dtype=dtype)
        shape_check(arr, name)
        return arr

    def per_trial(arr, name):
        if arr.ndim != 1:
            raise BadFile(f"'{name}' must be one value per trial, got shape {arr.shape}")
        if arr.shape[:1] != (n_trial,):
            raise BadFile(f"'{name}' has {arr.shape[0] if arr.ndim else 0} entries but '{PLAIN_KEY}' has {n_trial} trials")

    def per_neuron(arr, name):
        if arr.ndim != 1:
            raise BadFile(f"'{name}' must be one value per neuron, got shape {arr.shape}")
        if arr.shape[:1] != (n_neuron,):
            raise BadFile(f"'{name}' has {arr.shape[0] if arr.ndim else 0} entries but '{PLAIN_KEY}' has {n_neuron} neurons")

    def per_bin(arr, name):
        if arr.ndim != 3:
            raise BadFile(f"'{name}' must be [trial, time, dim], got shape {arr.shape}")
        _same_trials(arr, n_trial, n_time, name, PLAIN_KEY)

    trial_ids = optional("trial_ids", per_trial, dtype=np.int64)
    unit_ids = optional("unit_ids", per_neuron, dtype=None)
    heldout_col = optional("heldout", per_neuron, dtype=bool)
    if heldout_col is not None and heldout_col.all():
        raise BadFile(f"'heldout' in {path.name} marks all {n_neuron} neurons as held out, leaving none for the"
                      " encoder; mark only the neurons to score without reading them")
    conditions = optional("conditions", per_trial, dtype=None)
    if conditions is not None and conditions.dtype.kind in "SO":  # h5py gives stored strings as bytes
        conditions = np.array([_text(c) for c in conditions], dtype=object)
    split = optional("split", per_trial, dtype=None)
    behavior = optional("behavior", per_bin, dtype=np.float32)
    names = []
    if behavior is not None:
        raw_names = f["behavior"].attrs.get("names")
        names = [_text(n) for n in raw_names] if raw_names is not None else [f"behavior[{i}]" for i in range(behavior.shape[2])]
    truth = {}
    if "truth" in f:
        for key in f["truth"]:
            arr = _read(f, f"truth/{key}")
            per_bin(arr, f"truth/{key}")
            truth[key] = arr

    if split is not None:
        split = np.array([str(_text(s)) for s in split])
        bad = sorted(set(split) - set(SPLITS))
        if bad:
            raise BadFile(f"'split' holds '{bad[0]}'; allowed values are {', '.join(SPLITS)}")
    else:
        split = assign_split(n_trial, cfg.split, cfg.split_seed)

    factor = _rebin_factor(file_bin_ms, cfg.bin_ms, path, n_time)
    unit_ids = np.arange(n_neuron).astype(str) if unit_ids is None else _unit_ids(unit_ids, path)
    return SpikeData(
        counts=rebin(counts, factor),
        bin_ms=cfg.bin_ms,
        unit_ids=unit_ids,
        trial_ids=np.arange(n_trial) if trial_ids is None else trial_ids,
        split=split,
        session=cfg.session or path.stem,
        heldout=choose_heldout(unit_ids, cfg, heldout_col),
        behavior=None if behavior is None else rebin(behavior, factor, "mean"),
        behavior_names=names,
        truth={k: rebin(v, factor, "mean" if k == "latents" else "sum") for k, v in truth.items()},
        conditions=conditions,
        provenance={"file_bin_ms": file_bin_ms, "attrs": {k: _text(v) for k, v in f.attrs.items()}},
    )


def _unit_ids(raw: np.ndarray, path: Path) -> np.ndarray:
    """[neuron] unit ids as str: numbers or UTF-8 text, all different."""
    if raw.dtype.kind not in "iufSUO":
        raise BadFile(f"'unit_ids' in {path.name} holds {dtype_kind(raw.dtype)}; unit ids must be numbers or text")
    ids = []
    for i, value in enumerate(raw.tolist()):
        if isinstance(value, bytes):
            try:
                value = value.decode("utf-8")
            except UnicodeDecodeError:
                raise BadFile(f"'unit_ids' entry {i} in {path.name} ({value[:20]!r}) is not UTF-8 text; store unit ids"
                              " as numbers or UTF-8 strings") from None
        ids.append(str(value))
    ids = np.array(ids)
    values, counts = np.unique(ids, return_counts=True)
    if (counts > 1).any():
        dup = values[np.argmax(counts > 1)]
        raise BadFile(f"'unit_ids' in {path.name} holds '{dup}' {counts.max()} times; every neuron needs its own id")
    return ids


def _load_nlb(f, path: Path, cfg: DataConfig) -> SpikeData:
    parts = {}
    for stage in ("train", "eval"):
        key_in = f"{stage}_spikes_heldin"
        if key_in not in f:
            continue
        heldin = _counts(f, key_in)
        key_out = f"{stage}_spikes_heldout"
        if key_out in f:
            heldout = _counts(f, key_out, observed=False)
            _same_trials(heldout, heldin.shape[0], heldin.shape[1], key_out, key_in)
        else:
            heldout = None
        beh = _read(f, f"{stage}_behavior", ndim=3) if f"{stage}_behavior" in f else None
        if beh is not None:
            _same_trials(beh, heldin.shape[0], heldin.shape[1], f"{stage}_behavior", key_in)
        parts[stage] = (heldin, heldout, beh)

    n_in = {p[0].shape[2] for p in parts.values()}
    n_out = {p[1].shape[2] for p in parts.values() if p[1] is not None}
    times = {p[0].shape[1] for p in parts.values()}
    if len(n_in) > 1 or len(n_out) > 1 or len(times) > 1:
        raise BadFile(
            f"train and eval tensors in {path.name} disagree in neuron or bin counts ({_shapes(f)}); they must match"
        )
    if min(p[0].size for p in parts.values()) == 0:
        raise BadFile(f"the spike tensors in {path.name} are empty ({_shapes(f)}); they need trials, bins and neurons")
    n_out_count = n_out.pop() if n_out else 0

    counts, behavior, split = [], [], []
    has_behavior = all(p[2] is not None for p in parts.values())
    train_split = None
    for stage, (heldin, heldout, beh) in parts.items():
        if heldout is None:
            heldout = np.full(heldin.shape[:2] + (n_out_count,), np.nan, dtype=np.float32)
        counts.append(np.concatenate([heldin, heldout], axis=2))
        if has_behavior:
            behavior.append(beh)
        if stage == "train":
            # NLB's eval trials are the test set, so train trials are shared between train and valid.
            frac = (cfg.split[0], cfg.split[1], 0.0)
            train_split = assign_split(heldin.shape[0], frac, cfg.split_seed)
            split.append(train_split)
        else:
            split.append(np.full(heldin.shape[0], "test", dtype="<U5"))
    counts = np.concatenate(counts)
    n_in_count = counts.shape[2] - n_out_count
    unit_ids = np.array([f"in{i}" for i in range(n_in_count)] + [f"out{i}" for i in range(n_out_count)])
    column = np.arange(counts.shape[2]) >= n_in_count
    file_bin_ms = _file_bin_ms(f, cfg)
    factor = _rebin_factor(file_bin_ms, cfg.bin_ms, path, counts.shape[1])
    beh = np.concatenate(behavior) if has_behavior else None
    return SpikeData(
        counts=rebin(counts, factor),
        bin_ms=cfg.bin_ms,
        unit_ids=unit_ids,
        trial_ids=np.arange(counts.shape[0]),
        split=np.concatenate(split),
        session=cfg.session or path.stem,
        heldout=choose_heldout(unit_ids, cfg, column),
        behavior=None if beh is None else rebin(beh, factor, "mean"),
        behavior_names=[] if beh is None else [f"behavior[{i}]" for i in range(beh.shape[2])],
        provenance={"file_bin_ms": file_bin_ms},
    )


def _padded(f, path: Path, data: SpikeData) -> SpikeData:
    """`data` with its per-trial lengths (see the module docstring) and NaN in every bin past them."""
    if "trial_lengths" in f:
        stored = _read(f, "trial_lengths", ndim=1, dtype=np.int64)
        file_bins = f[PLAIN_KEY if PLAIN_KEY in f else NLB_KEY].shape[1]
        if stored.shape != (data.n_trials,):
            raise BadFile(f"'trial_lengths' in {path.name} has {stored.shape[0]} entries but the file has"
                          f" {data.n_trials} trials; it must hold one length (bins) per trial")
        if stored.min() < 0 or stored.max() > file_bins:
            raise BadFile(f"'trial_lengths' in {path.name} holds lengths from {stored.min()} to {stored.max()} bins;"
                          f" each must lie in 0..{file_bins}, the bins stored per trial")
        factor = int(round(data.bin_ms / data.provenance.get("file_bin_ms", data.bin_ms)))
        lengths = stored // factor
    else:
        lengths = trailing_lengths(data.counts)
    pad = padding_mask(lengths, data.n_time)
    if not pad.any():
        return replace(data, lengths=lengths)
    for arr in (data.counts, data.behavior, *data.truth.values()):
        if arr is not None:
            arr[pad] = np.nan
    return replace(data, lengths=lengths)


def _shapes(f) -> str:
    return ", ".join(f"{k} {f[k].shape}" for k in f if "spikes" in k and hasattr(f[k], "shape"))


def describe_hdf5(path: Path) -> dict:
    """Plain-data summary of an HDF5 spike file for `xfads inspect`."""
    from xfads_cli.data.remote import open_hdf5

    with open_hdf5(path) as f:
        layout = detect_layout(f)
        # Read everything once at the file's own bin width, so that broken content is an error here
        # (inspect rejects it) while option problems are left to the load with the user's config.
        bin_ms = _file_bin_ms(f, None)
        own = DataConfig(bin_ms=bin_ms or DataConfig().bin_ms)
        loaded = _padded(f, path, _load_nlb(f, path, own) if layout == "nlb" else _load_plain(f, path, own))
        _events(f, path, own.events, loaded)
        datasets = {name: list(f[name].shape) for name in _datasets(f)}
        key = NLB_KEY if layout == "nlb" else PLAIN_KEY
        attrs = {k: _text(v) for k, v in f.attrs.items()}
    return {
        "format": f"hdf5-{layout}",
        "datasets": datasets,
        "bin_ms": bin_ms,
        "trials": datasets[key][0],
        "bins_per_trial": datasets[key][1],
        "attrs": attrs,
        "truth": sorted(k.split("/", 1)[1] for k in datasets if k.startswith("truth/")),
    }


def _text(value):
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return [_text(v) for v in value.tolist()]
    return value
