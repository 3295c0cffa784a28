"""The search space: a YAML mapping of config keys to choices or distributions.

    model.latent_dim: [4, 8, 16]                 # categorical: one of the listed values
    train.lr: {log_uniform: [1.0e-3, 3.0e-2]}    # float, uniform in log space
    train.drop_local: {uniform: [0.0, 0.5]}      # float
    model.encoder_hidden: {int: [16, 128]}       # integer, both ends included
    model.dynamics_hidden: {log_int: [16, 256]}  # integer, uniform in log space

Every key is checked against the strict config (with the sweep's --config and --set) by loading it with
each choice, or with both ends of a range, so an unknown key or an impossible value is a one-line
UsageError before anything is created. Keys that change what a trial is scored on are refused.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

from xfads_cli.errors import UsageError, closest

RANGES = ("uniform", "log_uniform", "int", "log_int")
# Keys whose value changes the score itself (which trials or neurons are validation, or which score):
# trials would not be comparable.
FIXED_KEYS = ("train.select", "data.split", "data.split_seed", "data.heldout_units", "data.heldout_fraction",
              "data.heldout_column")


@dataclass(frozen=True)
class Param:
    key: str
    kind: str  # "categorical" or one of RANGES
    values: tuple  # the choices, or (low, high)

    def samples(self) -> tuple:
        """The values checked against the config: every choice, or both ends of the range."""
        return self.values

    def as_dict(self) -> dict:
        return {"kind": self.kind, "values": list(self.values)}


def load_space(path: Path, config_path: Path | None, overrides: list[str]) -> list[Param]:
    """The parameters of the space file at `path`, each checked against the config; UsageError otherwise."""
    import yaml

    from xfads_cli.config import load_yaml

    path = Path(path)
    if not path.is_file():
        raise UsageError(f"space file not found: {path}; pass an existing YAML file to --space")
    try:
        raw = load_yaml(path.read_text(), str(path))
    except (yaml.YAMLError, UnicodeDecodeError):
        raise UsageError(f"{path} is not valid YAML; write the space as 'section.key: [values]' lines") from None
    if not isinstance(raw, dict) or not raw:
        raise UsageError(f"{path} must be a non-empty mapping of config keys to choices, e.g. "
                         "'model.latent_dim: [4, 8, 16]'")
    params = [parse_param(str(key), spec, path) for key, spec in raw.items()]
    for param in params:
        check_against_config(param, config_path, overrides, path)
    return params


def parse_param(key: str, spec, path: Path) -> Param:
    where = f"{path}: {key}"
    if key in FIXED_KEYS:
        raise UsageError(f"{where} cannot be searched: it changes what a trial is scored on; set it with --set "
                         "and remove it from the space")
    if isinstance(spec, list):
        if not spec:
            raise UsageError(f"{where} is an empty list; give at least one value, e.g. [4, 8, 16]")
        if any(isinstance(v, (list, dict)) for v in spec):
            raise UsageError(f"{where}: choices must be numbers, strings, true/false or null, not lists or mappings")
        return Param(key, "categorical", tuple(spec))
    if not isinstance(spec, dict) or len(spec) != 1:
        raise UsageError(f"{where} must be a list of choices or one distribution, e.g. {{log_uniform: [1.0e-4, 1.0e-2]}}")
    (kind, bounds), = spec.items()
    if kind not in RANGES:
        raise UsageError(f"{where}: unknown distribution '{kind}'{closest(kind, RANGES)}; use one of {', '.join(RANGES)} "
                         "or a list of choices")
    return Param(key, kind, parse_bounds(kind, bounds, where))


def parse_bounds(kind: str, bounds, where: str) -> tuple:
    from xfads_cli.config import short_repr

    example = "[1, 64]" if kind.endswith("int") else "[1.0e-4, 1.0e-2]"
    if not isinstance(bounds, list) or len(bounds) != 2:
        raise UsageError(f"{where}: {kind} takes [low, high], e.g. {{{kind}: {example}}}")
    values = []
    for bound in bounds:
        number = as_number(bound)
        if number is None or not math.isfinite(number):
            raise UsageError(f"{where}: the bounds of {kind} must be numbers, got {short_repr(bound)}; e.g. {{{kind}: {example}}}")
        if kind.endswith("int") and not float(number).is_integer():
            raise UsageError(f"{where}: the bounds of {kind} must be integers, got {short_repr(bound)}; e.g. {{{kind}: {example}}}")
        values.append(int(number) if kind.endswith("int") else float(number))
    low, high = values
    if low >= high:
        raise UsageError(f"{where}: low ({low}) must be below high ({high}); e.g. {{{kind}: {example}}}")
    if kind.startswith("log") and low <= 0:
        raise UsageError(f"{where}: {kind} needs low > 0 (got {low}); use uniform/int for ranges that include 0")
    return (low, high)


def as_number(value) -> float | None:
    """A YAML bound as a number: YAML 1.1 reads 1e-3 (no dot) as a string, which is accepted."""
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return value
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return None
    return None


def override(key: str, value) -> str:
    """`key=value` for load_config (JSON is YAML, so strings, numbers, true/false and null survive)."""
    return f"{key}={json.dumps(value)}"


def check_against_config(param: Param, config_path: Path | None, overrides: list[str], path: Path) -> None:
    from xfads_cli.config import load_config

    for value in param.samples():
        try:
            load_config(config_path, [*overrides, override(param.key, value)])
        except UsageError as exc:
            raise UsageError(f"{path}: {param.key}={value}: {exc}") from None


def space_dict(params: list[Param]) -> dict:
    """The space as plain data (stored with the study: a rerun must search the same space)."""
    return {p.key: p.as_dict() for p in params}


def suggest(trial, params: list[Param]) -> dict:
    """The trial's value of every parameter (an enqueued trial gets its fixed values back)."""
    values = {}
    for p in params:
        if p.kind == "categorical":
            values[p.key] = trial.suggest_categorical(p.key, list(p.values))
        elif p.kind in ("int", "log_int"):
            values[p.key] = trial.suggest_int(p.key, p.values[0], p.values[1], log=p.kind == "log_int")
        else:
            values[p.key] = trial.suggest_float(p.key, p.values[0], p.values[1], log=p.kind == "log_uniform")
    return values
