"""Configuration: YAML files mapped onto frozen dataclasses, strictly.

    config = load_config("run.yaml", overrides=["train.lr=3e-4", "data.bin_ms=10"])

Unknown keys and wrong types are errors that name the closest valid key; `--set` overrides are applied
last. `resolved_config(config)` is the plain dict saved with every checkpoint and output file, and
`Config.from_dict(resolved_config(config))` rebuilds the same config.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Optional

from xfads_cli.errors import UsageError, closest


@dataclass(frozen=True)
class DataConfig:
    """How a recording becomes binned trials."""

    bin_ms: float = 20.0
    # Interval table that defines trials: 'trials' or the name of any /intervals/<table>.
    # None: the 'trials' table when the file has one, else fixed windows over the whole recording.
    intervals: Optional[str] = None
    # Column of that table giving each trial's alignment time (e.g. 'move_onset_time').
    align: str = "start_time"
    # Window around the alignment time, [start, stop] in ms. None: from the alignment time to the
    # trial's stop_time (trial_lengths: own) or to the shortest trial's duration (shortest).
    window_ms: Optional[tuple[float, float]] = None
    # Trials of an interval table of different durations. 'own': each trial keeps its bins up to its
    # own stop_time (with window_ms: the window clipped to the trial's start_time..stop_time), and all
    # are padded to the longest with NaN (missing bins; SpikeData.lengths). 'shortest': every trial is
    # cut to the same window: the shortest trial's duration (or window_ms, not clipped), as earlier
    # versions did. Chopped windows are all equal either way; HDF5 inputs are kept as stored.
    trial_lengths: Literal["own", "shortest"] = "own"
    # Recordings without trials are chopped into windows of this length and overlap.
    chop_ms: float = 1000.0
    overlap_ms: float = 0.0
    # Unit selection on the units table, e.g. 'quality == "good"', 'is_good' (a boolean column),
    # 'snr > 3'. None keeps every unit.
    units: Optional[str] = None
    # Behaviour series to load by name (searched in processing/* and acquisition), e.g. ['hand_vel'].
    behavior: tuple[str, ...] = ()
    # Held-out neurons (never read by the encoder; scored by co-bps). Priority: an explicit list of
    # unit ids, then a seeded random fraction, then a boolean units column with this name, if present.
    heldout_units: tuple[str, ...] = ()
    heldout_fraction: float = 0.0
    heldout_column: str = "heldout"
    # Trials-table column with a condition label per trial (condition-aware PSTH baseline, psth R2 and
    # the model's task inputs). 'auto': a column named like condition / stimulus / odor / trial_type /
    # target (data/conditions.py) with at least 2 labels, each on 2 or more trials; None: no conditions.
    condition: Optional[str] = "auto"
    # Trials-table columns holding event times (seconds, e.g. 'go_cue_time'), read as per-trial event
    # bins (SpikeData.events) for the forecast score grid and the model's task inputs. ['auto']: every
    # numeric column whose name ends in '_time' (not start_time / stop_time) that falls inside the
    # trial windows; []: none.
    events: tuple[str, ...] = ("auto",)
    # Known inputs the model is given (docs/model.md section 11): 'clock' (time since the trial window's
    # start), 'condition' (the trial's data.condition label), 'events' (data.events: what follows each
    # event, for events already past when forecasting). ['auto']: clock and condition (when the
    # recording has conditions) for trial-aligned recordings, none for windows chopped from a continuous
    # recording; []: none (the autonomous model).
    inputs: tuple[str, ...] = ("auto",)
    # Train / valid / test fractions of trials and the seed of the random split.
    split: tuple[float, float, float] = (0.8, 0.1, 0.1)
    split_seed: int = 0
    # Session name; None uses the file name without its extension.
    session: Optional[str] = None


@dataclass(frozen=True)
class ModelConfig:
    """The state-space model (docs/model.md sections 1-3)."""

    # xfads; meta (several sessions, docs/model.md section 6); or a comparison kind with XFADS's
    # generative model and another inference network (model/comparison.py, section 12).
    kind: Literal["xfads", "meta", "dkf", "dvbf", "latent_sde"] = "xfads"
    latent_dim: int = 8
    dynamics: Literal["mlp", "gru", "linear"] = "mlp"
    dynamics_hidden: int = 128
    dynamics_layers: int = 1
    likelihood: Literal["poisson", "gaussian", "bernoulli"] = "poisson"
    link: Literal["exp", "softplus"] = "exp"
    read_dims: Optional[int] = None
    rank_local: int = 8
    rank_backward: int = 4
    encoder_hidden: int = 64
    # The backward encoder (docs/model.md section 2): a reverse-time GRU, or a diagonal linear state-space
    # layer computed by FFT over all bins at once (model/s4d.py).
    backward_encoder: Literal["gru", "s4d"] = "gru"
    samples: int = 20
    mode: Literal["smoother", "two_filter", "filter"] = "smoother"
    # Readout before training: 'mean' (bias = each neuron's mean, random weights) or 'pca' (also the
    # weights: principal axes of the smoothed, link-transformed training counts, scaled for unit latents;
    # every session, also the meta model's). Not the default: see benchmarks/README.md, recipe ablation.
    init: Literal["mean", "pca"] = "mean"
    # Meta-dynamical model only (kind: meta, docs/model.md section 6).
    embed_dim: int = 2
    read_in_dim: int = 32
    hyper_rank: int = 2
    # Hidden units of the hypernetwork e -> (U_l, V_l); 0: a linear map (see model/meta.py).
    hyper_hidden: int = 0
    frobenius_weight: float = 1.0


@dataclass(frozen=True)
class TrainConfig:
    """The optimisation (docs/model.md section 4)."""

    max_epochs: int = 300
    # Trials per optimisation step (the global batch under torchrun). None: from the number of
    # training trials (`auto_batch_size`), so that small recordings still get several steps per epoch;
    # the resolved number is what the run's config.yaml and checkpoints record.
    batch_size: Optional[int] = None
    lr: float = 1e-2
    # 'cosine': the learning rate stays at lr, then anneals to lr * lr_final along half a cosine over the
    # last `anneal_fraction` of the run's budget (--time-limit and/or --max-epochs, whichever ends
    # first), so a fit ends annealed whatever time it is given; 'exponential': lr * lr_decay**epoch.
    schedule: Literal["cosine", "exponential"] = "cosine"
    lr_final: float = 0.05
    anneal_fraction: float = 0.3
    lr_decay: float = 0.997
    # Linear learning-rate warm-up over the first optimisation steps: the first Adam steps on a freshly
    # initialised readout can push exp-link rates past float range at higher learning rates.
    warmup_steps: int = 50
    grad_clip: float = 1.0
    patience: int = 40
    drop_local: float = 0.2
    # Fraction of training trials per batch scored as forecasts: causal filter up to a random cut point,
    # the dynamics alone after it (no local or backward potentials), as `forecast` and fp-bps use the
    # model. Trains f to predict several steps ahead rather than one (isolated dropped bins).
    forecast_fraction: float = 0.0
    # Coordinated dropout (model/encoders.InputDropout): each held-in count hidden from the encoder with
    # this probability in every training step, the latents' likelihood gradient taken from the hidden
    # ones. Keeps the smoothed rates from following the spikes' noise as training goes on. 0: off.
    input_dropout: float = 0.0
    # ... from the epoch that starts after this many optimisation steps: from the first step it kept a
    # two-rhythm system's fit on one rhythm for most of the run (benchmarks/README.md).
    input_dropout_from_step: int = 400
    # Monte Carlo samples of the filter during training (fewer than model.samples, which smoothing uses:
    # the steps are cheaper and the fits measured as good); None: model.samples.
    samples: Optional[int] = 8
    # best.pt / early stopping by: 'elbo' (validation -ELBO), 'co_bps' (held-out neurons), 'fp_bps'
    # (forecast of the validation trials' last third); 'auto': co_bps with held-out neurons, else fp_bps.
    select: Literal["auto", "elbo", "co_bps", "fp_bps"] = "auto"
    time_limit_min: Optional[float] = None
    # CPU threads of training (train/threads.py): None = $XFADS_THREADS or auto (at most the cores this
    # job may use, the count tuned from timed steps); N = exactly N (bit-identical reruns). --threads wins.
    threads: Optional[int] = None
    # (no train.device: each command takes --device; see REMOVED_KEYS)
    dtype: Literal["float32", "float64"] = "float32"


@dataclass(frozen=True)
class EvalConfig:
    """How results are scored (docs/metrics.md)."""

    # Forecast scored in run summaries (fp-bps): the first `context_bins` bins of each trial are the
    # context, the next `horizon_bins` are forecast. None: context 2/3 of the trial, horizon the rest.
    context_bins: Optional[int] = None
    horizon_bins: Optional[int] = None
    samples: int = 100
    # vel R2: behaviour at t + lag is decoded from rates at t (NLB uses 100 ms).
    behavior_lag_ms: float = 100.0
    psth_sigma_ms: float = 50.0


@dataclass(frozen=True)
class Config:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    seed: int = 0

    @classmethod
    def from_dict(cls, raw: dict | None) -> "Config":
        config = _build(cls, raw or {}, "config")
        _check_ranges(config)
        return config


# Allowed ranges of numeric model/train/eval settings: (lowest, highest, is each bound itself allowed).
# A value outside would otherwise fail deep inside torch with a traceback (e.g. a negative tensor size).
_AT_LEAST_1 = (1, None, True, False)
_AT_LEAST_0 = (0, None, True, False)
_POSITIVE = (0, None, False, False)
# Layer widths and latent sizes: far above any model that fits in memory, low enough that a typo
# (1e15 units) is an error here rather than an allocation failure inside torch.
_SIZE = (1, 1 << 16, True, True)
_SIZE_OR_0 = (0, 1 << 16, True, True)
_RANGES = {
    "model.latent_dim": _SIZE, "model.dynamics_hidden": _SIZE, "model.dynamics_layers": (0, 64, True, True),
    "model.read_dims": _SIZE, "model.rank_local": _SIZE, "model.rank_backward": _SIZE_OR_0,
    "model.encoder_hidden": _SIZE, "model.samples": _SIZE, "model.embed_dim": _SIZE,
    "model.read_in_dim": _SIZE, "model.hyper_rank": _SIZE, "model.hyper_hidden": _SIZE_OR_0,
    "model.frobenius_weight": _AT_LEAST_0,
    "train.max_epochs": _AT_LEAST_1, "train.batch_size": _AT_LEAST_1, "train.lr": (0, 1, False, True),
    "train.lr_decay": (0, 1, False, True), "train.warmup_steps": _AT_LEAST_0, "train.grad_clip": _POSITIVE,
    "train.patience": _AT_LEAST_1, "train.drop_local": (0, 1, True, False), "train.time_limit_min": _POSITIVE,
    "train.lr_final": (0, 1, True, True), "train.anneal_fraction": (0, 1, False, True), "train.forecast_fraction": (0, 1, True, True), "train.input_dropout": (0, 1, True, False), "train.input_dropout_from_step": _AT_LEAST_0, "train.samples": _AT_LEAST_1,
    "train.threads": _AT_LEAST_1,
    "eval.context_bins": _AT_LEAST_1, "eval.horizon_bins": _AT_LEAST_1, "eval.samples": _AT_LEAST_1,
    "eval.behavior_lag_ms": _AT_LEAST_0, "eval.psth_sigma_ms": _AT_LEAST_0,
    "data.heldout_fraction": (0, 1, True, False),
}


def _check_ranges(config: "Config") -> None:
    for section in ("data", "model", "train", "eval"):  # NaN passes every comparison below
        for f in dataclasses.fields(getattr(config, section)):
            value = getattr(getattr(config, section), f.name)
            if isinstance(value, float) and not math.isfinite(value):
                example = getattr(getattr(Config(), section), f.name)
                hint = f"; e.g. --set {section}.{f.name}={example}" if example is not None else ""
                raise UsageError(f"{section}.{f.name} must be a finite number, got {value}{hint}")
    model = config.model
    if model.read_dims is not None and model.read_dims > model.latent_dim:
        raise UsageError(f"model.read_dims ({model.read_dims}) must be at most model.latent_dim "
                         f"({model.latent_dim}); lower it or raise model.latent_dim")
    for key, (low, high, low_ok, high_ok) in _RANGES.items():
        section, name = key.split(".")
        value = getattr(getattr(config, section), name)
        if value is None:
            continue
        if value < low or (value == low and not low_ok) or (high is not None and (value > high or
                                                                                   (value == high and not high_ok))):
            bound = f">= {low}" if low_ok else f"> {low}"
            if high is not None:
                bound += f" and <= {high}" if high_ok else f" and < {high}"
            example = getattr(getattr(Config(), section), name)  # the default
            example = (low if low_ok else low + 1) if example is None else example
            raise UsageError(f"{key} must be {bound}, got {value}; e.g. --set {key}={example}")


def option_items(seed: int | None = None, max_epochs: int | None = None,
                 time_limit_min: float | None = None) -> list[str]:
    """The `--set` items of the commands' --seed, --max-epochs and --time-limit options (None: not given),
    applied last, after the config file and the --set items: seed, train.max_epochs, train.time_limit_min."""
    items = (("seed", seed), ("train.max_epochs", max_epochs), ("train.time_limit_min", time_limit_min))
    return [f"{key}={value}" for key, value in items if value is not None]


def load_config(path: str | Path | None = None, overrides: typing.Sequence[str] = (),
                base: dict | None = None) -> Config:
    """Defaults <- `base` (e.g. a checkpoint's resolved config) <- YAML file <- `section.key=value`
    overrides, validated strictly."""
    import copy

    raw: dict = copy.deepcopy(base) if base else {}
    if path is not None:
        _merge(raw, _read_yaml(Path(path)))
    for item in overrides:
        _apply_override(raw, item)
    return Config.from_dict(raw)


def resolved_config(config: Config) -> dict:
    """The full config as plain YAML/JSON-friendly data (tuples become lists)."""

    def plain(value):
        if isinstance(value, dict):
            return {k: plain(v) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return [plain(v) for v in value]
        return value

    return plain(dataclasses.asdict(config))


def dump_config(config: Config) -> str:
    import yaml

    return yaml.safe_dump(resolved_config(config), sort_keys=False)


# Values YAML aliases (*name) may add by repeating anchored ones. A config file travels between labs, and
# nested aliases let a few hundred bytes stand for hundreds of millions of values ("billion laughs"),
# which any message, copy or loop over them would expand. Real configs repeat a handful of values.
MAX_ALIAS_VALUES = 10_000


def load_yaml(text: str, what: str):
    """yaml.safe_load for YAML a user gives (config files, --set values, sweep spaces): UsageError naming
    `what` when its aliases repeat more than MAX_ALIAS_VALUES values or it is nested too deeply.
    yaml.YAMLError for invalid YAML, as safe_load."""
    import yaml

    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        sizes: dict = {}
        if _expanded_size(node, sizes) - len(sizes) > MAX_ALIAS_VALUES:
            raise UsageError(f"{what}: its YAML aliases (*name) repeat more than {MAX_ALIAS_VALUES} values; "
                             "write the values out instead of nesting aliases")
        return loader.construct_document(node)
    except RecursionError:
        raise UsageError(f"{what}: its YAML is nested too deeply to read; flatten its lists and mappings") from None
    finally:
        loader.dispose()


def _expanded_size(node, sizes: dict) -> int:
    """How many values `node` stands for with every alias expanded; `sizes` gets one entry per distinct
    node, i.e. per value written out in the text."""
    import yaml

    if id(node) not in sizes:
        sizes[id(node)] = 1  # a node inside itself (&a [*a]) counts once, and the recursion ends
        if isinstance(node, yaml.SequenceNode):
            children = node.value
        elif isinstance(node, yaml.MappingNode):
            children = [child for pair in node.value for child in pair]
        else:
            children = []
        sizes[id(node)] = 1 + sum(_expanded_size(child, sizes) for child in children)
    return sizes[id(node)]


def _read_yaml(path: Path) -> dict:
    import yaml

    if not path.is_file():
        raise UsageError(f"config file not found: {path}; pass an existing YAML file to --config")
    try:
        raw = load_yaml(path.read_text(), str(path))
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        where = getattr(exc, "problem_mark", None)
        line = f" at line {where.line + 1}" if where is not None else ""
        raise UsageError(f"{path} is not valid YAML{line}; check its indentation and quoting") from None
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise UsageError(f"{path} must be a mapping of sections (data:, model:, train:), not {type(raw).__name__}")
    return raw


def _merge(into: dict, new: dict) -> None:
    for key, value in new.items():
        if isinstance(value, dict) and isinstance(into.get(key), dict):
            _merge(into[key], value)
        else:
            into[key] = value


def _apply_override(raw: dict, item: str) -> None:
    import yaml

    key, sep, text = item.partition("=")
    key = key.strip()
    if not sep or not key:
        raise UsageError(f"--set expects section.key=value, got '{item}'; e.g. --set train.lr=3e-4")
    try:
        value = load_yaml(text, f"--set {key}") if text.strip() else None
    except yaml.YAMLError:
        value = text
    node = raw
    parts = key.split(".")
    for part in parts[:-1]:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise UsageError(f"--set {key}: '{part}' is a value, not a section")
        node = child
    node[parts[-1]] = value


# Keys that older versions accepted -> what to do instead (a one-line error, not "unknown key"). Checkpoints
# that still hold them are migrated when loaded (runs/checkpoint.py).
REMOVED_KEYS = {
    "train.device": "the device is chosen per command with --device auto|cpu|cuda[:i]",
}


def _build(cls, raw: dict, where: str):
    if not isinstance(raw, dict):
        raise UsageError(f"{where} must be a mapping, got {_describe(raw)}")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    kwargs = {}
    for key, value in raw.items():
        if key not in names:
            removed = f"{where}.{key}" if where != "config" else key
            if removed in REMOVED_KEYS:
                # a config.yaml written by an older fit must still rerun (the key never had an effect)
                warnings.warn(f"{removed} is no longer a config key and is ignored: {REMOVED_KEYS[removed]}",
                              stacklevel=2)
                continue
            raise UsageError(
                f"unknown key '{key}' in {where}{closest(key, names)}; valid keys: {', '.join(names)}"
            )
        kwargs[key] = _coerce(value, hints[key], f"{where}.{key}" if where != "config" else key)
    return cls(**kwargs)


def _coerce(value, hint, where: str):
    """Check `value` against the annotation `hint`, converting only where it is lossless."""
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if dataclasses.is_dataclass(hint):
        return _build(hint, value if value is not None else {}, where)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return _coerce(value, inner[0], where)
    if origin is Literal:
        if value not in args:
            hint_text = closest(value, args) if isinstance(value, (str, int, float)) else ""
            raise UsageError(f"{where} must be one of {', '.join(map(str, args))}; got {short_repr(value)}{hint_text}")
        return value
    if origin is tuple:
        if isinstance(value, (str, int, float)) and args[-1] is Ellipsis:
            value = [value]
        if not isinstance(value, (list, tuple)):
            raise UsageError(f"{where} must be a list, got {_describe(value)}")
        if args[-1] is Ellipsis:
            return tuple(_coerce(v, args[0], f"{where}[{i}]") for i, v in enumerate(value))
        if len(value) != len(args):
            raise UsageError(f"{where} must be a list of {len(args)} values, got {len(value)}")
        return tuple(_coerce(v, a, f"{where}[{i}]") for i, (v, a) in enumerate(zip(value, args)))
    if hint is bool:
        if isinstance(value, bool):
            return value
        raise UsageError(f"{where} must be true or false, got {_describe(value)}")
    if hint is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        raise UsageError(f"{where} must be an integer, got {_describe(value)}")
    if hint is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):  # YAML 1.1 reads '3e-4' (no dot) as a string
            try:
                return float(value)
            except ValueError:
                pass
        raise UsageError(f"{where} must be a number, got {_describe(value)}")
    if hint is str:
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            return str(value)
        raise UsageError(f"{where} must be a string, got {_describe(value)}")
    return value


def _describe(value) -> str:
    return f"{type(value).__name__} {short_repr(value)}" if value is not None else "null"


def short_repr(value) -> str:
    """repr cut to a few elements and characters: the value may be a huge list from the user's file."""
    import reprlib

    short = reprlib.Repr()
    short.maxlevel, short.maxlist, short.maxdict, short.maxstring, short.maxother = 2, 4, 4, 60, 60
    return short.repr(value)
