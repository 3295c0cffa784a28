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

DIGITS = 6  # significant digits written: float32 precision, and short lines


def record(t: float | None, latent_mean: np.ndarray, latent_var: np.ndarray, rates: np.ndarray,
           forecast: np.ndarray | None = None) -> dict:
    """One output line's fields: t and the arrays (written by a sink: NaN and infinities become null)."""
    out = {"t": t, "latent_mean": latent_mean, "latent_var": latent_var, "rates": rates}
    if forecast is not None:
        out["forecast"] = forecast
    return out


def json_array(x: np.ndarray) -> str:
    """x (1-D or 2-D) as a JSON array of DIGITS significant digits, NaN and infinities as null. Why not
    json.dumps: it formats each float by repr, 1.5x slower for the thousand rates of a large population."""
    x = np.asarray(x, dtype=np.float64)
    if x.ndim > 1:
        return "[" + ",".join(json_array(row) for row in x) + "]"
    if np.isfinite(x).all():
        return "[" + ",".join(["%.6g" % v for v in x.tolist()]) + "]"
    return "[" + ",".join(["%.6g" % v if v == v and abs(v) != float("inf") else "null" for v in x.tolist()]) + "]"


def json_line(line: dict) -> str:
    """A record as one line of JSON (no spaces), fields in the record's order."""
    def value(v) -> str:
        if v is None or isinstance(v, float) and not math.isfinite(v):
            return "null"
        return json.dumps(v) if isinstance(v, (int, float, str)) else json_array(v)

    return "{" + ",".join(f'"{k}":{value(v)}' for k, v in line.items()) + "}"


class NdjsonSink:
    """One JSON line per bin on a text stream, flushed at once (a reader downstream sees each bin)."""

    def __init__(self, stream: IO[str]):
        self.stream = stream

    def write(self, line: dict) -> None:
        self.stream.write(json_line(line) + "\n")
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
        if "forecast" in line:
            parts.append(np.ravel(line["forecast"]))
        sample = np.concatenate(parts).astype(np.float32).tolist()
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
