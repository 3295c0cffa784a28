"""Spike counts arriving bin by bin (`xfads stream`): NDJSON lines from a pipe or file, or a Lab
Streaming Layer inlet.

    for bin in ndjson_bins(sys.stdin, n_units=96):
        bin.counts      [neuron] float64, NaN where a unit's count is missing (null) or the line was bad
        bin.t           the line's "t" (seconds), else None
        bin.error       why the line could not be read (None when it could): the bin is then all missing
        bin.received    time.perf_counter() when the line was read (the start of its latency)

An input line is `{"counts": [n_1, ..., n_N], "t": 12.34}` in the run's unit order; "t" is optional.
A bad line (not JSON, no "counts", the wrong length, a value that is not a number or null) does not
stop the stream: it becomes an all-missing bin with an `error`, so the decoder keeps its clock.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass
from typing import IO, Iterator

import numpy as np

from xfads_cli.errors import UsageError


@dataclass(frozen=True)
class LiveBin:
    counts: np.ndarray  # [neuron] float64, NaN = missing
    t: float | None
    error: str | None
    received: float


def parse_bin(line: str, n_units: int, received: float | None = None) -> LiveBin:
    """One NDJSON input line -> LiveBin (see the module docstring)."""
    received = time.perf_counter() if received is None else received
    missing = np.full(n_units, np.nan)
    try:
        record = json.loads(line)
    except ValueError as exc:
        return LiveBin(missing, None, f"not a JSON line ({exc.msg})", received)
    if not isinstance(record, dict) or "counts" not in record:
        return LiveBin(missing, None, 'expected an object {"counts": [...]}', received)
    t = record.get("t")
    t = float(t) if isinstance(t, (int, float)) and not isinstance(t, bool) and math.isfinite(t) else None
    counts = record["counts"]
    if not isinstance(counts, list) or len(counts) != n_units:
        size = len(counts) if isinstance(counts, list) else type(counts).__name__
        return LiveBin(missing, t, f"counts must be a list of {n_units} numbers (the run's units), got {size}",
                       received)
    # exact types (a bool is an int, and numpy would read "1" as a number) before one conversion of the
    # whole line, in which None (a missing count) becomes NaN
    values = np.array(counts, dtype=np.float64) if all(type(v) in _SCALARS for v in counts) else None
    if values is None or np.isinf(values).any():
        i, value = next((i, v) for i, v in enumerate(counts) if not _count(v))
        return LiveBin(missing, t, f"count {i} is {json.dumps(value)[:40]}, not a number or null", received)
    return LiveBin(values, t, None, received)


_SCALARS = (int, float, type(None))


def _count(value) -> bool:
    """A valid count: null, or a finite number (not a boolean)."""
    return value is None or (isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value))


def ndjson_bins(lines: IO[str], n_units: int) -> Iterator[LiveBin]:
    """The bins of an NDJSON text stream, one per non-blank line, as each line arrives."""
    for line in iter(lines.readline, ""):
        received = time.perf_counter()
        if line.strip():
            yield parse_bin(line, n_units, received)


def lsl_bins(name: str, n_units: int, timeout_s: float = 10.0) -> Iterator[LiveBin]:
    """The samples of the Lab Streaming Layer stream `name` (one sample per bin, one channel per unit,
    NaN = missing), with the sample's LSL timestamp as t. Needs pylsl (the `lsl` extra)."""
    pylsl = import_pylsl()
    found = pylsl.resolve_byprop("name", name, minimum=1, timeout=timeout_s)
    if not found:
        raise UsageError(f"no Lab Streaming Layer stream named '{name}' found within {timeout_s:g} s; start the "
                         "outlet first, or check its name")
    info = found[0]
    if info.channel_count() != n_units:
        raise UsageError(f"LSL stream '{name}' has {info.channel_count()} channels but the run has {n_units} units; "
                         "send one channel per unit, in the run's unit order (xfads stream RUN --describe)")
    inlet = pylsl.StreamInlet(info, max_buflen=1, recover=True)
    try:
        while True:
            sample, stamp = inlet.pull_sample(timeout=1.0)
            if sample is None:
                continue
            yield LiveBin(np.asarray(sample, dtype=np.float64), float(stamp), None, time.perf_counter())
    finally:
        inlet.close_stream()


def import_pylsl():
    try:
        import pylsl
    except ImportError:
        raise UsageError("lsl: streams need pylsl; install it with: pip install 'xfads[lsl]'") from None
    return pylsl
