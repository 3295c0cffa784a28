"""Where `xfads stream` writes each decoded bin: NDJSON lines (stdout or a file, flushed per line) or a
Lab Streaming Layer outlet; and the latency statistics of `--stats`.

An NDJSON output line: {"t": ..., "latent_mean": [L], "latent_var": [L], "rates": [N]} plus, with a
forecast horizon K, "forecast": [K][N] (expected counts per bin). An LSL outlet carries the same
numbers as one float32 sample per bin: latent_mean, latent_var, rates, then the forecast bins, in that
order (channel labels in the stream's description), stamped with the input bin's t when it has one.
"""

from __future__ import annotations

import json
import math
from typing import IO

import numpy as np

DIGITS = 6  # decimals written: float32 precision for rates of order 1, and short lines


def record(t: float | None, latent_mean: np.ndarray, latent_var: np.ndarray, rates: np.ndarray,
           forecast: np.ndarray | None = None) -> dict:
    """One output line's fields (plain lists; NaN becomes null)."""
    out = {"t": t, "latent_mean": _plain(latent_mean), "latent_var": _plain(latent_var), "rates": _plain(rates)}
    if forecast is not None:
        out["forecast"] = _plain(forecast)
    return out


def _plain(x: np.ndarray) -> list:
    """Nested lists of x rounded to DIGITS decimals, NaN as None (JSON null)."""
    values = np.round(np.asarray(x, dtype=np.float64), DIGITS)
    if np.isnan(values).any():
        values = np.where(np.isnan(values), None, values)
    return values.tolist()


class NdjsonSink:
    """One JSON line per bin on a text stream, flushed at once (a reader downstream sees each bin)."""

    def __init__(self, stream: IO[str]):
        self.stream = stream

    def write(self, line: dict) -> None:
        self.stream.write(json.dumps(line, allow_nan=False, separators=(",", ":")) + "\n")
        self.stream.flush()

    def close(self) -> None:
        self.stream.flush()


class LslSink:
    """An LSL outlet named `name` whose float32 samples are the record's numbers (module docstring)."""

    def __init__(self, name: str, n_latent: int, n_units: int, horizon: int, pylsl):
        self.pylsl = pylsl
        labels = ([f"latent_mean_{i}" for i in range(n_latent)] + [f"latent_var_{i}" for i in range(n_latent)]
                  + [f"rate_{j}" for j in range(n_units)]
                  + [f"forecast_{k}_{j}" for k in range(horizon) for j in range(n_units)])
        info = pylsl.StreamInfo(name, "xfads", len(labels), pylsl.IRREGULAR_RATE, pylsl.cf_float32, f"xfads-{name}")
        channels = info.desc().append_child("channels")
        for label in labels:
            channels.append_child("channel").append_child_value("label", label)
        self.outlet = pylsl.StreamOutlet(info)

    def write(self, line: dict) -> None:
        parts = [line["latent_mean"], line["latent_var"], line["rates"]]
        parts += line.get("forecast", [])
        sample = [math.nan if v is None else v for part in parts for v in part]
        if line.get("t") is None:
            self.outlet.push_sample(sample)
        else:
            self.outlet.push_sample(sample, line["t"])

    def close(self) -> None:
        del self.outlet


class Latency:
    """Per-bin latencies (ms from reading a bin to writing its line): p50, p99 and max."""

    def __init__(self):
        self.ms: list[float] = []

    def add(self, ms: float) -> None:
        self.ms.append(ms)

    def summary(self) -> dict:
        if not self.ms:
            return {"p50": None, "p99": None, "max": None}
        x = np.asarray(self.ms)
        return {"p50": float(np.percentile(x, 50)), "p99": float(np.percentile(x, 99)), "max": float(x.max())}
