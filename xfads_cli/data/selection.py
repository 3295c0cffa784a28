"""Choices made on top of a file's contents: held-out neurons."""

from __future__ import annotations

import numpy as np

from xfads_cli.config import DataConfig
from xfads_cli.errors import UsageError, closest, listing


def choose_heldout(unit_ids: np.ndarray, cfg: DataConfig, column: np.ndarray | None = None) -> np.ndarray:
    """[neuron] bool mask of held-out neurons.

    Priority: the explicit `cfg.heldout_units` list, then a seeded random `cfg.heldout_fraction`,
    then the file's own boolean column (`column`, e.g. NWB units.heldout), else none. Holding out
    every neuron is an error: the encoder would read nothing.
    """
    mask = _choose(np.asarray(unit_ids).astype(str), cfg, column)
    if mask.size and mask.all():
        raise UsageError(f"all {mask.size} units are held out, leaving none for the encoder; hold out fewer units")
    return mask


def _choose(ids: np.ndarray, cfg: DataConfig, column: np.ndarray | None) -> np.ndarray:
    n = len(ids)
    if cfg.heldout_units:
        wanted = [str(u) for u in cfg.heldout_units]
        unknown = [u for u in wanted if u not in set(ids)]
        if unknown:
            raise UsageError(
                f"data.heldout_units names unit '{unknown[0]}' which is not in the file{closest(unknown[0], ids)}; "
                f"unit ids: {listing(ids)}"
            )
        return np.isin(ids, wanted)
    if cfg.heldout_fraction > 0:
        if not cfg.heldout_fraction < 1:
            raise UsageError(f"data.heldout_fraction must be in [0, 1), got {cfg.heldout_fraction}")
        k = min(max(1, int(round(cfg.heldout_fraction * n))), n - 1)
        mask = np.zeros(n, dtype=bool)
        mask[np.random.default_rng(cfg.split_seed).choice(n, size=k, replace=False)] = True
        return mask
    if column is not None:
        return np.asarray(column).astype(bool).reshape(n)
    return np.zeros(n, dtype=bool)
