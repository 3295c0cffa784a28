"""`xfads forecast`: rates forecast after each trial's context, streamed to HDF5 (or a new NWB file); on a
recording without trials, forecasts from given times of it (--at-s)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch

from xfads_cli.data.recording import forecast_windows
from xfads_cli.data.source import source_name
from xfads_cli.data.spikedata import SpikeData
from xfads_cli.errors import UsageError
from xfads_cli.outputs.sinks import check_format, open_output, whole_arrays
from xfads_cli.runs.binding import (
    model_inputs,
    read_data_for_run,
    read_recording_for_run,
    recording_model,
    session_model,
)
from xfads_cli.runs.inference import iter_forecast
from xfads_cli.runs.pipeline import finish, open_input, stream
from xfads_cli.runs.run import Run, run_inputs
from xfads_cli.scoring.baselines import baselines_for
from xfads_cli.scoring.bits import BitsPerSpike
from xfads_cli.scoring.evaluate import grid_scores
from xfads_cli.scoring.streamed import forecast_scoring
from xfads_cli.scoring.summary import judge, trial_labels


def forecast(run_path: Path, data_path: Path, out: Path, *, context: int | None = None, horizon: int | None = None,
             context_ms: float | None = None, horizon_ms: float | None = None, split: str = "all",
             samples: int = 100, mode: str = "filter", keep_samples: bool = False, fmt: str = "h5",
             overwrite: bool = False, overrides=(), device: str = "auto", plot: bool = False,
             at_s: str | None = None, grid: bool = True) -> dict:
    """Forecast `horizon` bins after the first `context` bins of each trial window; writes `out`. With
    `at_s` (times in seconds, or a file of them) on a recording without trials: forecasts from those
    times of the recording instead (`_forecast_at`). grid: on trial-aligned data, also score the
    forecast-grid windows (scoring/evaluate.py grid_windows), each next to its baseline, in the
    metrics as fp_bps@WINDOW / fp_baseline_bps@WINDOW, with one verdict line naming the worst window.

    Trials are forecast `train.batch_size` at a time and each block is written to the HDF5 output and
    scored as it comes: memory does not grow with the trials beyond the recording itself, except with
    --format nwb (gathered in memory, see NwbOutput) and --plot (reads the output back)."""
    if split not in ("all", "train", "valid", "test"):
        raise UsageError(f"--split must be all, train, valid or test, got '{split}'")
    if mode not in ("filter", "smoother"):
        raise UsageError(f"--mode must be filter (causal context, default) or smoother, got '{mode}'")
    check_format(out, fmt, overwrite, run_inputs(run_path, data_path))
    for name, bins, ms in (("context", context, context_ms), ("horizon", horizon, horizon_ms)):
        if (bins is None) == (ms is None):
            raise UsageError(f"give exactly one of --{name} (bins) or --{name}-ms")
    if samples < 1:
        raise UsageError("--samples must be >= 1")
    times = None if at_s is None else parse_times(at_s)
    options = {"samples": samples, "mode": mode, "keep_samples": keep_samples, "fmt": fmt, "overwrite": overwrite}
    with open_input(run_path, data_path, overrides=overrides, device=device) as (run, f):
        if times is not None:
            recording, model = _recording_for_times(run, f, data_path, split, plot)
        else:
            data = read_data_for_run(f, run)
        bin_ms = (recording if times is not None else data).bin_ms
        context, horizon = _bins(context, context_ms, bin_ms, "context"), _bins(horizon, horizon_ms, bin_ms, "horizon")
        if times is None and context + horizon > data.n_time:
            data = extend_windows(f, run, data, context + horizon)
    if times is not None:
        return _forecast_at(run, recording, model, out, times, context=context, horizon=horizon, **options)
    return _forecast_trials(run, data, data_path, out, context=context, horizon=horizon, split=split, plot=plot,
                            grid=grid, **options)


def _forecast_trials(run, data, data_path: Path, out: Path, *, context: int, horizon: int, split: str, samples: int,
                     mode: str, keep_samples: bool, fmt: str, overwrite: bool, plot: bool, grid: bool) -> dict:
    rows = data.subset(split)
    if rows.n_trials == 0:
        raise UsageError(f"{source_name(data_path)} has no '{split}' trials; use --split all")
    base = baselines_for(data)
    rows_index = data.split_index(split)
    # per-trial inputs written next to the results, block by block (views of the recording, no copies)
    scores, inputs = forecast_scoring(base, rows, rows_index, context, horizon)
    start_s = None if rows.start_s is None else rows.start_s + context * rows.bin_ms / 1000.0
    # start_s is the first forecast bin's; the context counts come before it
    with open_output(out, fmt, rows, overwrite, "xfads_forecast", start_s, {"context_counts": -context},
                     first_bin=context) as sink:
        torch.manual_seed(run.config.seed)  # the filter's and rollouts' draws: the same file every time
        model = session_model(run, data)
        u = model_inputs(model, rows, n_time=context + horizon, known_until=context)
        parts = iter_forecast(model, inputs["context_counts"], horizon, n_samples=samples, mode=mode,
                              batch_size=run.config.train.batch_size, keep_samples=keep_samples, u=u)
        stream(sink, parts, inputs, [lambda block: scores.add(block["rates_mean"])])
        metrics = {k: float(v) for k, v in scores.result().items()}
        if grid:
            metrics |= grid_scores(model, rows, run.config, base, rows_index, samples)
        judged = judge(base, metrics, trial_labels(data, split))
        finish(sink, run, rows, "forecast", metrics, {
            "trial_ids": rows.trial_ids, "split": rows.split, "unit_ids": rows.unit_ids.astype(str), "start_s": start_s,
        }, judged | {"context_bins": context, "horizon_bins": horizon, "samples": samples, "mode": mode,
                     "split_selected": split, "future_inputs": future_inputs(model)})
    summary = {"out": str(sink.path), "trials": rows.n_trials, "context_bins": context, "horizon_bins": horizon,
               "future_inputs": future_inputs(model), "metrics": metrics} | judged
    if plot:
        from xfads_cli.outputs.plots import plot_forecast

        arrays = whole_arrays(sink, ["rates_mean", "rates_q05", "rates_q95"])
        summary["plots"] = [str(plot_forecast(
            inputs["context_counts"], inputs["counts"], arrays["rates_mean"], arrays["rates_q05"], arrays["rates_q95"],
            rows.bin_ms, Path(out).with_suffix(".forecast.png"), trial_ids=rows.trial_ids))]
    return summary


def future_inputs(model) -> str:
    """What the forecast knew of the horizon in advance (output attribute `future_inputs`)."""
    inputs = model.inputs
    if inputs is None:
        return "none: the context's counts only (autonomous dynamics)"
    known = [n for n in inputs.names() if not n.startswith("event ")]
    text = ", ".join(known) + " of the horizon bins (set when the trial starts)" if known else ""
    if inputs.events:
        text += ("; " if text else "") + "events only once they occurred within the context: " + ", ".join(inputs.events)
    return text


def _bins(bins: int | None, ms: float | None, bin_ms: float, name: str) -> int:
    if ms is not None and not math.isfinite(ms / bin_ms):
        raise UsageError(f"--{name}-ms must be a finite number of ms, got {ms:g}; e.g. --{name}-ms {10 * bin_ms:g}")
    value = bins if bins is not None else int(round(ms / bin_ms))
    if value < 1:
        raise UsageError(f"--{name} must cover at least one bin ({bin_ms:g} ms), got {value}")
    return value


def extend_windows(f, run: Run, data: SpikeData, n_bins: int) -> SpikeData:
    """Context + horizon longer than the trial window: read the extra bins from the open recording `f`
    when it has spike times (NWB); otherwise it is an error."""
    if data.provenance.get("format") != "nwb" or data.start_s is None:
        raise UsageError(
            f"context + horizon = {n_bins} bins but trials have {data.n_time}; shorten --context/--horizon "
            "(this file has no recording beyond the trial windows)"
        )
    start_ms = run.config.data.window_ms[0] if run.config.data.window_ms else 0.0
    window = (start_ms, start_ms + n_bins * data.bin_ms + 1e-6)
    try:
        return read_data_for_run(f, run, window_ms=window)
    except UsageError as exc:
        raise UsageError(f"context + horizon = {n_bins} bins runs past the recording: {exc}") from None


def parse_times(text: str) -> np.ndarray:
    """--at-s: seconds separated by commas or whitespace, or the path of a text file holding them."""
    source = Path(text)
    if source.is_file():
        text = source.read_text()
    try:
        times = np.array([float(x) for x in text.replace(",", " ").split()], dtype=np.float64)
    except ValueError:
        raise UsageError(f"--at-s takes times in seconds (e.g. --at-s 12.5,30) or a text file of them, got {text[:60]!r}") \
            from None
    if times.size == 0 or not np.isfinite(times).all():
        raise UsageError(f"--at-s needs at least one finite time in seconds, got {text[:60]!r}")
    return times


def _recording_for_times(run: Run, f, data_path: Path, split: str, plot: bool):
    """--at-s: the open file as a recording without trials, and the model serving its session."""
    recording = read_recording_for_run(f, run)
    if recording is None:
        raise UsageError(f"--at-s needs a recording without trials, and {source_name(data_path)} is cut into trials by the "
                         "run's data options; drop --at-s to forecast after each trial's context")
    for given, name in ((split != "all", f"--split {split}"), (plot, "--plot")):
        if given:
            raise UsageError(f"{name} applies to trials; forecasts at given times (--at-s) have none, drop {name}")
    return recording, recording_model(run, f)


def _forecast_at(run: Run, recording, model, out: Path, times: np.ndarray, *, context: int, horizon: int,
                 samples: int, mode: str, keep_samples: bool, fmt: str, overwrite: bool) -> dict:
    """Forecast `horizon` bins from each of `times` (s) of a recording without trials after a
    `context`-bin context; writes `out` (HDF5: rates_mean/qXX [time, horizon, neuron], latents_mean,
    counts, context_counts, start_s, at_s); fp-bps next to a baseline that forecasts each neuron's mean
    count per bin over the contexts."""
    from xfads_cli.outputs.h5 import H5Stream

    if fmt != "h5":
        raise UsageError("forecasts at given times are written as HDF5 only; use --format h5")
    ctx, future, starts = forecast_windows(recording, times, context, horizon)
    score, base = BitsPerSpike(future), BitsPerSpike(future)
    mean = np.nan_to_num(np.nanmean(ctx.reshape(-1, ctx.shape[-1]), axis=0))
    torch.manual_seed(run.config.seed)
    with H5Stream(out, n_rows=len(times), overwrite=overwrite) as sink:
        parts = iter_forecast(model, ctx, horizon, n_samples=samples, mode=mode,
                              batch_size=run.config.train.batch_size, keep_samples=keep_samples)
        stream(sink, parts, {"counts": future, "context_counts": ctx}, [
            lambda block: score.add(block["rates_mean"]),
            lambda block: base.add(np.broadcast_to(mean, block["rates_mean"].shape))])
        metrics = {"fp_bps": float(score.value()), "fp_baseline_bps": float(base.value())}
        finish(sink, run, recording, "forecast", metrics,
               {"start_s": starts, "at_s": times, "unit_ids": recording.unit_ids.astype(str)},
               {"context_bins": context, "horizon_bins": horizon, "samples": samples, "mode": mode,
                "layout": "continuous", "baselines": {"fp_bps": "each neuron's mean count per bin over the contexts"}})
    return {"out": str(sink.path), "trials": len(times), "layout": "continuous", "context_bins": context,
            "horizon_bins": horizon, "metrics": metrics}
