"""`xfads forecast`: rates forecast after each trial's context, streamed to HDF5 (or a new NWB file)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch

from xfads_cli.config import load_config, resolved_config
from xfads_cli.data.source import source_name
from xfads_cli.data.spikedata import SpikeData
from xfads_cli.errors import UsageError
from xfads_cli.inference import iter_forecast
from xfads_cli.outputs.sinks import (
    check_format,
    open_output,
    output_attrs,
    whole_arrays,
)
from xfads_cli.runs import (
    Run,
    load_data_for_run,
    load_recording_for_run,
    load_run,
    model_inputs,
    recording_model,
    run_inputs,
    session_model,
)
from xfads_cli.scoring.baselines import baselines_for
from xfads_cli.scoring.evaluate import grid_scores
from xfads_cli.scoring.streamed import ForecastScores
from xfads_cli.scoring.summary import judge, trial_labels


def forecast(run_path: Path, data_path: Path, out: Path, *, context: int | None = None, horizon: int | None = None,
             context_ms: float | None = None, horizon_ms: float | None = None, split: str = "all",
             samples: int = 100, mode: str = "filter", keep_samples: bool = False, fmt: str = "h5",
             overwrite: bool = False, overrides=(), device: str = "auto", plot: bool = False,
             at_s: str | None = None, grid: bool = True) -> dict:
    """Forecast `horizon` bins after the first `context` bins of each trial window; writes `out`. With
    `at_s` (times in seconds, or a file of them) on a recording without trials: forecasts from those
    times of the recording instead (commands/continuous.py forecast_at). grid: on trial-aligned data,
    also score the forecast-grid windows (scoring/evaluate.py grid_windows), each next to its baseline, in the
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
    run = load_run(run_path, device)
    if at_s is not None:
        return _forecast_at(run, data_path, out, at_s, context=(context, context_ms), horizon=(horizon, horizon_ms),
                            split=split, plot=plot, overrides=overrides, samples=samples, mode=mode,
                            keep_samples=keep_samples, fmt=fmt, overwrite=overwrite)
    data = load_data_for_run(data_path, run, overrides)
    context = _bins(context, context_ms, data.bin_ms, "context")
    horizon = _bins(horizon, horizon_ms, data.bin_ms, "horizon")
    if context + horizon > data.n_time:
        data = _extend_windows(data_path, run, overrides, data, context + horizon)
    rows = data.subset(split)
    if rows.n_trials == 0:
        raise UsageError(f"{source_name(data_path)} has no '{split}' trials; use --split all")
    base = baselines_for(data)
    rows_index = np.arange(data.n_trials) if split == "all" else np.flatnonzero(data.split == split)
    scores = ForecastScores(rows, context, horizon, fp_baseline=base.fp_source(rows_index, context, horizon))
    # per-trial inputs written next to the results, block by block (views of the recording, no copies)
    inputs = {"counts": rows.counts[:, context : context + horizon], "context_counts": rows.counts[:, :context]}
    if "rates" in rows.truth:
        inputs["true_rates"] = rows.truth["rates"][:, context : context + horizon]
    start_s = None if rows.start_s is None else rows.start_s + context * rows.bin_ms / 1000.0
    # start_s is the first forecast bin's; the context counts come before it
    with open_output(out, fmt, rows, overwrite, "xfads_forecast", start_s, {"context_counts": -context},
                     first_bin=context) as sink:
        start = 0
        torch.manual_seed(run.config.seed)  # the filter's and rollouts' draws: the same file every time
        model = session_model(run, data)
        u = model_inputs(model, rows, n_time=context + horizon, known_until=context)
        for part in iter_forecast(model, inputs["context_counts"], horizon, n_samples=samples,
                                  mode=mode, batch_size=run.config.train.batch_size, keep_samples=keep_samples, u=u):
            stop = start + len(part["rates_mean"])
            scores.add(part["rates_mean"])
            sink.append(part | {k: v[start:stop] for k, v in inputs.items()})
            start = stop
        metrics = {k: float(v) for k, v in scores.result().items()}
        if grid:
            metrics |= grid_scores(model, rows, run.config, base, rows_index, samples)
        for name, value in (("trial_ids", rows.trial_ids), ("split", rows.split), ("unit_ids", rows.unit_ids.astype(str)),
                            ("start_s", start_s)):
            if value is not None:
                sink.write(name, value)
        judged = judge(base, metrics, trial_labels(data, split))
        sink.set_attrs(output_attrs(run, rows, "forecast", metrics) | judged | {
            "context_bins": context, "horizon_bins": horizon, "samples": samples, "mode": mode, "split_selected": split,
            "future_inputs": future_inputs(model)})
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
    inputs = getattr(model, "inputs", None)
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


def _extend_windows(data_path: Path, run: Run, overrides, data: SpikeData, n_bins: int) -> SpikeData:
    """Context + horizon longer than the trial window: read the extra bins from the recording when
    the file has spike times (NWB); otherwise it is an error."""
    if data.provenance.get("format") != "nwb" or data.start_s is None:
        raise UsageError(
            f"context + horizon = {n_bins} bins but trials have {data.n_time}; shorten --context/--horizon "
            "(this file has no recording beyond the trial windows)"
        )
    config = load_config(overrides=overrides, base=resolved_config(run.config))
    start_ms = config.data.window_ms[0] if config.data.window_ms else 0.0
    window = (start_ms, start_ms + n_bins * data.bin_ms + 1e-6)
    try:
        return load_data_for_run(data_path, run, overrides, window_ms=window)
    except UsageError as exc:
        raise UsageError(f"context + horizon = {n_bins} bins runs past the recording: {exc}") from None


def _forecast_at(run, data_path: Path, out: Path, at_s: str, *, context, horizon, split: str, plot: bool, overrides,
                 **options) -> dict:
    """--at-s: forecasts from given times of a recording without trials."""
    from xfads_cli.commands.continuous import forecast_at, parse_times

    times = parse_times(at_s)
    recording = load_recording_for_run(data_path, run, overrides)
    if recording is None:
        raise UsageError(f"--at-s needs a recording without trials, and {source_name(data_path)} is cut into trials by the "
                         "run's data options; drop --at-s to forecast after each trial's context")
    for given, name in ((split != "all", f"--split {split}"), (plot, "--plot")):
        if given:
            raise UsageError(f"{name} applies to trials; forecasts at given times (--at-s) have none, drop {name}")
    bins = [_bins(b, ms, recording.bin_ms, name) for (b, ms), name in ((context, "context"), (horizon, "horizon"))]
    model = recording_model(run, recording, data_path, overrides)
    return forecast_at(run, recording, model, out, times, context=bins[0], horizon=bins[1], **options)
