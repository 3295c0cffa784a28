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
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from xfads_cli.config import DataConfig
from xfads_cli.data.provenance import file_sha256
from xfads_cli.data.selection import choose_heldout
from xfads_cli.data.spikedata import SPLITS, SpikeData, assign_split
from xfads_cli.errors import UsageError, listing

NLB_KEY = "train_spikes_heldin"
PLAIN_KEY = "spikes"


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


def _read(f, name: str, ndim: int | None = None, dtype=np.float32) -> np.ndarray:
    ds = f[name]
    if not hasattr(ds, "shape"):
        raise UsageError(f"'{name}' in {Path(f.filename).name} is a group, expected a dataset")
    if ndim is not None and ds.ndim != ndim:
        raise UsageError(f"'{name}' in {Path(f.filename).name} has {ds.ndim} dimensions {ds.shape}, expected {ndim}")
    try:
        arr = ds[()]
        return np.asarray(arr, dtype=dtype) if dtype is not None else np.asarray(arr)
    except (TypeError, ValueError) as exc:
        raise UsageError(f"'{name}' in {Path(f.filename).name} cannot be read as numbers ({exc})") from None


def _check_counts(counts: np.ndarray, name: str) -> None:
    finite = counts[np.isfinite(counts)]
    if finite.size and (finite.min() < 0):
        raise UsageError(f"'{name}' holds negative spike counts; counts must be >= 0 (NaN marks missing bins)")


def _same_trials(arr: np.ndarray, n_trial: int, n_time: int, name: str, ref: str) -> None:
    if arr.shape[:2] != (n_trial, n_time):
        raise UsageError(
            f"'{name}' has shape {arr.shape} but '{ref}' has {n_trial} trials x {n_time} bins; "
            "their first two dimensions must match"
        )


def _rebin_factor(file_bin_ms: float, bin_ms: float, path: Path) -> int:
    ratio = bin_ms / file_bin_ms
    factor = int(round(ratio))
    if factor < 1 or abs(ratio - factor) > 1e-6:
        raise UsageError(
            f"{path.name} is binned at {file_bin_ms:g} ms, so data.bin_ms must be a whole multiple of it "
            f"(got {bin_ms:g}); e.g. --set data.bin_ms={file_bin_ms:g}"
        )
    return factor


def rebin(x: np.ndarray, factor: int, reduce: str = "sum") -> np.ndarray:
    """Merge `factor` adjacent bins along axis 1 ([trial, time, ...]); a partial last bin is dropped."""
    if factor == 1:
        return x
    n_time = x.shape[1] // factor
    x = x[:, : n_time * factor].reshape(x.shape[0], n_time, factor, *x.shape[2:])
    return x.sum(axis=2) if reduce == "sum" else x.mean(axis=2)


def load_hdf5(path: Path, cfg: DataConfig) -> SpikeData:
    """Read an NLB-layout or plain-layout HDF5 file into SpikeData (see the module docstring)."""
    import h5py

    with h5py.File(path, "r") as f:
        layout = detect_layout(f)
        data = _load_nlb(f, path, cfg) if layout == "nlb" else _load_plain(f, path, cfg)
    data.provenance.update({"path": str(Path(path).resolve()), "sha256": file_sha256(path), "format": f"hdf5-{layout}"})
    return data


def _file_bin_ms(f, cfg: DataConfig) -> float:
    value = f.attrs.get("bin_ms")
    return float(value) if value is not None else cfg.bin_ms


def _load_plain(f, path: Path, cfg: DataConfig) -> SpikeData:
    counts = _read(f, PLAIN_KEY, ndim=3)
    _check_counts(counts, PLAIN_KEY)
    n_trial, n_time, n_neuron = counts.shape
    if n_trial == 0 or n_neuron == 0 or n_time == 0:
        raise UsageError(f"'{PLAIN_KEY}' in {path.name} is empty (shape {counts.shape}); it needs trials, bins and neurons")

    def optional(name, shape_check, dtype=None):
        if name not in f:
            return None
        arr = _read(f, name, dtype=dtype)
        shape_check(arr, name)
        return arr

    def per_trial(arr, name):
        if arr.shape[:1] != (n_trial,):
            raise UsageError(f"'{name}' has {arr.shape[0] if arr.ndim else 0} entries but '{PLAIN_KEY}' has {n_trial} trials")

    def per_neuron(arr, name):
        if arr.shape[:1] != (n_neuron,):
            raise UsageError(f"'{name}' has {arr.shape[0] if arr.ndim else 0} entries but '{PLAIN_KEY}' has {n_neuron} neurons")

    def per_bin(arr, name):
        if arr.ndim != 3:
            raise UsageError(f"'{name}' must be [trial, time, dim], got shape {arr.shape}")
        _same_trials(arr, n_trial, n_time, name, PLAIN_KEY)

    trial_ids = optional("trial_ids", per_trial, dtype=np.int64)
    unit_ids = optional("unit_ids", per_neuron, dtype=None)
    heldout_col = optional("heldout", per_neuron, dtype=bool)
    conditions = optional("conditions", per_trial, dtype=None)
    split = optional("split", per_trial, dtype=None)
    behavior = optional("behavior", per_bin)
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
        split = np.array([_text(s) for s in split])
        bad = sorted(set(split) - set(SPLITS))
        if bad:
            raise UsageError(f"'split' holds '{bad[0]}'; allowed values are {', '.join(SPLITS)}")
    else:
        split = assign_split(n_trial, cfg.split, cfg.split_seed)

    factor = _rebin_factor(_file_bin_ms(f, cfg), cfg.bin_ms, path)
    unit_ids = np.arange(n_neuron).astype(str) if unit_ids is None else np.array([_text(u) for u in unit_ids])
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
        provenance={"file_bin_ms": _file_bin_ms(f, cfg), "attrs": {k: _text(v) for k, v in f.attrs.items()}},
    )


def _load_nlb(f, path: Path, cfg: DataConfig) -> SpikeData:
    parts = {}
    for stage in ("train", "eval"):
        key_in = f"{stage}_spikes_heldin"
        if key_in not in f:
            continue
        heldin = _read(f, key_in, ndim=3)
        key_out = f"{stage}_spikes_heldout"
        if key_out in f:
            heldout = _read(f, key_out, ndim=3)
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
        raise UsageError(f"train and eval tensors in {path.name} disagree in neuron or bin counts; they must match")
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
    _check_counts(counts, "spikes")
    n_in_count = counts.shape[2] - n_out_count
    unit_ids = np.array([f"in{i}" for i in range(n_in_count)] + [f"out{i}" for i in range(n_out_count)])
    column = np.arange(counts.shape[2]) >= n_in_count
    factor = _rebin_factor(_file_bin_ms(f, cfg), cfg.bin_ms, path)
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
        provenance={"file_bin_ms": _file_bin_ms(f, cfg)},
    )


def describe_hdf5(path: Path) -> dict:
    """Plain-data summary of an HDF5 spike file for `xfads inspect`."""
    import h5py

    with h5py.File(path, "r") as f:
        layout = detect_layout(f)
        datasets = {name: list(f[name].shape) for name in _datasets(f)}
        key = NLB_KEY if layout == "nlb" else PLAIN_KEY
        bin_ms = f.attrs.get("bin_ms")
        attrs = {k: _text(v) for k, v in f.attrs.items()}
    return {
        "format": f"hdf5-{layout}",
        "datasets": datasets,
        "bin_ms": None if bin_ms is None else float(bin_ms),
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
