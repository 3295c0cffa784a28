"""A run applied to a recording, in memory: what `xfads smooth` and `xfads forecast` compute, through the
same library calls (runs/binding.py, runs/inference.py, runs/pipeline.py's stream, the same seeding and
padding), gathered into `Smoothed` / `Forecast` instead of streamed to a file. Same run, recording and
options => the same numbers as the CLI's HDF5 output (tests/test_api.py).

The CLI adds what a file needs (provenance attributes), --split all's per-split scores and decoders, and
forecast's grid scores; the API keeps the scores of the rows it returns.
"""

from __future__ import annotations

from contextlib import contextmanager

import numpy as np

from xfads_cli.api.results import Forecast, Smoothed
from xfads_cli.errors import UsageError

SPLITS = ("all", "train", "valid", "test")


class MemorySink:
    """The sink interface of outputs/sinks.py (append / write / set_attrs) into memory, blanking the
    appended arrays past each trial's length as the HDF5 output does (data/spikedata.py Padding)."""

    def __init__(self, padding=None):
        self.padding, self.parts, self.whole = padding, [], {}

    def append(self, part: dict) -> None:
        self.parts.append(part if self.padding is None else self.padding.blank(part))

    def write(self, name: str, value) -> None:
        self.whole[name] = np.asarray(value)

    def arrays(self) -> dict[str, np.ndarray]:
        from xfads_cli.outputs.sinks import concat_parts

        return concat_parts(self.parts) | self.whole


@contextmanager
def seeded(run):
    """The run's seed for the posterior and forecast draws (as the CLI: the same numbers every call),
    without disturbing the caller's torch random state."""
    import torch

    devices = [run.device] if run.device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(run.config.seed)
        yield


def check_options(split: str, mode: str | None, samples: int | None, modes: tuple) -> None:
    if split not in SPLITS:
        raise UsageError(f"split must be all, train, valid or test, got '{split}'")
    if mode not in modes:
        raise UsageError(f"mode must be one of {', '.join(m for m in modes if m)}, got '{mode}'")
    if samples is not None and samples < 1:
        raise UsageError("samples must be >= 1")


def rows_of(data, split: str, name: str):
    rows = data.subset(split)
    if rows.n_trials == 0:
        raise UsageError(f"{name} has no '{split}' trials; use split='all'")
    return rows


def smooth_trials(run, data, name: str, *, split: str, mode: str | None, samples: int | None) -> Smoothed:
    """`xfads smooth` of the trials of `split` (commands/smooth.py), in memory."""
    from xfads_cli.data.spikedata import Padding
    from xfads_cli.runs import model_inputs, session_model
    from xfads_cli.runs.inference import iter_smooth
    from xfads_cli.runs.pipeline import stream
    from xfads_cli.scoring.baselines import baselines_for
    from xfads_cli.scoring.streamed import SmoothedScores

    rows = rows_of(data, split, name)
    model = session_model(run, data)
    with seeded(run):
        base = baselines_for(data)
        rows_index = data.split_index(split)
        score = SmoothedScores(rows, co_baseline=base.co_source(rows_index))
        sink = MemorySink(Padding(rows.lengths))
        parts = iter_smooth(model, rows.counts, mode=mode, n_samples=samples, batch_size=run.config.train.batch_size,
                            u=model_inputs(model, rows))
        stream(sink, parts, {"counts": rows.counts}, [lambda block: score.add(block["rates_mean"])])
    arrays = sink.arrays()
    return Smoothed(layout="trials", **{k: arrays[k] for k in SMOOTHED}, times=np.arange(rows.n_time) * rows.bin_ms / 1e3,
                    unit_ids=rows.unit_ids.astype(str), heldout=rows.heldout, bin_ms=rows.bin_ms,
                    metrics={k: float(v) for k, v in score.result().items()}, trial_ids=rows.trial_ids,
                    split=rows.split, lengths=rows.lengths, start_s=rows.start_s, truth=dict(rows.truth))


SMOOTHED = ("rates_mean", "rates_q05", "rates_q50", "rates_q95", "latents_mean", "latents_var", "counts")


def smooth_recording(run, recording, model, *, mode: str | None, samples: int | None) -> Smoothed:
    """`xfads smooth` of a recording without trials (commands/smooth.py): every segment whole, one
    trajectory each, in pieces of PIECE_BINS bins, on the recording's clock."""
    from xfads_cli.commands.smooth import PIECE_BINS
    from xfads_cli.runs.inference import iter_recording
    from xfads_cli.runs.pipeline import stream
    from xfads_cli.scoring.bits import HeldoutBits

    lengths = [recording.n_bins(s) for s in range(len(recording.segments))]
    if sum(lengths) == 0:
        raise UsageError(f"the recording is shorter than one {recording.bin_ms:g} ms bin; lower data.bin_ms")
    score, sink = HeldoutBits(recording.heldout), MemorySink()
    with seeded(run):
        parts = (part | {"timestamps": recording.timestamps(segment, b0, b0 + len(part["counts"]))}
                 for segment, b0, part in iter_recording(model, recording, piece_bins=PIECE_BINS, mode=mode,
                                                         n_samples=samples))
        stream(sink, parts, {}, [lambda block: score.add(block["rates_mean"], block["counts"])])
    arrays, ends = sink.arrays(), np.cumsum(lengths)
    return Smoothed(layout="continuous", **{k: arrays[k] for k in SMOOTHED}, times=arrays["timestamps"],
                    unit_ids=recording.unit_ids.astype(str), heldout=recording.heldout, bin_ms=recording.bin_ms,
                    metrics={"co_bps": float(score.value())} if recording.heldout.any() else {},
                    segments=np.stack([ends - lengths, ends], axis=1).astype(np.int64))


FORECAST = ("rates_mean", "rates_q05", "rates_q50", "rates_q95", "latents_mean", "counts", "context_counts")


def forecast_trials(run, data, name: str, *, context: int, horizon: int, split: str, samples: int,
                    mode: str) -> Forecast:
    """`xfads forecast` after the first `context` bins of each trial of `split` (commands/forecast.py),
    in memory (without the forecast grid's scores)."""
    from xfads_cli.data.spikedata import Padding
    from xfads_cli.runs import model_inputs, session_model
    from xfads_cli.runs.inference import iter_forecast
    from xfads_cli.runs.pipeline import stream
    from xfads_cli.scoring.baselines import baselines_for
    from xfads_cli.scoring.streamed import forecast_scoring

    rows = rows_of(data, split, name)
    rows_index = data.split_index(split)
    score, inputs = forecast_scoring(baselines_for(data), rows, rows_index, context, horizon)
    sink = MemorySink(Padding(rows.lengths, context, skip={"context_counts"}))
    with seeded(run):
        model = session_model(run, data)
        u = model_inputs(model, rows, n_time=context + horizon, known_until=context)
        parts = iter_forecast(model, inputs["context_counts"], horizon, n_samples=samples, mode=mode,
                              batch_size=run.config.train.batch_size, u=u)
        stream(sink, parts, inputs, [lambda block: score.add(block["rates_mean"])])
    arrays = sink.arrays()
    start_s = None if rows.start_s is None else rows.start_s + context * rows.bin_ms / 1000.0
    return Forecast(layout="trials", **{k: arrays[k] for k in FORECAST}, true_rates=arrays.get("true_rates"),
                    times=np.arange(horizon) * rows.bin_ms / 1e3, unit_ids=rows.unit_ids.astype(str), context=context,
                    horizon=horizon, bin_ms=rows.bin_ms, metrics={k: float(v) for k, v in score.result().items()},
                    trial_ids=rows.trial_ids, split=rows.split, lengths=rows.lengths, start_s=start_s)


def forecast_at(run, recording, model, times: np.ndarray, *, context: int, horizon: int, samples: int,
                mode: str) -> Forecast:
    """`xfads forecast --at-s` (commands/forecast.py): forecasts from given times of a recording without
    trials, each after the `context` bins before it; fp-bps next to each neuron's mean over the contexts."""
    from xfads_cli.data.recording import forecast_windows
    from xfads_cli.runs.inference import iter_forecast
    from xfads_cli.runs.pipeline import stream
    from xfads_cli.scoring.bits import BitsPerSpike

    ctx, future, starts = forecast_windows(recording, times, context, horizon)
    score, base = BitsPerSpike(future), BitsPerSpike(future)
    mean = np.nan_to_num(np.nanmean(ctx.reshape(-1, ctx.shape[-1]), axis=0))
    sink = MemorySink()
    with seeded(run):
        parts = iter_forecast(model, ctx, horizon, n_samples=samples, mode=mode, batch_size=run.config.train.batch_size)
        stream(sink, parts, {"counts": future, "context_counts": ctx}, [
            lambda block: score.add(block["rates_mean"]),
            lambda block: base.add(np.broadcast_to(mean, block["rates_mean"].shape))])
    arrays = sink.arrays()
    return Forecast(layout="continuous", **{k: arrays[k] for k in FORECAST}, times=np.arange(horizon) * recording.bin_s,
                    unit_ids=recording.unit_ids.astype(str), context=context, horizon=horizon,
                    bin_ms=recording.bin_ms, metrics={"fp_bps": float(score.value()), "fp_baseline_bps": float(base.value())},
                    start_s=starts, at_s=np.asarray(times, dtype=np.float64))
