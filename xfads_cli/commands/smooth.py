"""`xfads smooth`: smoothed latents and rates of every trial, streamed to HDF5 (or a new NWB file)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from xfads_cli.data.source import source_name
from xfads_cli.errors import UsageError
from xfads_cli.inference import iter_smooth
from xfads_cli.outputs.sinks import (
    check_format,
    open_output,
    output_attrs,
    whole_arrays,
)
from xfads_cli.runs import (
    load_data_for_run,
    load_recording_for_run,
    load_run,
    model_inputs,
    recording_model,
    run_inputs,
    session_model,
)
from xfads_cli.scoring.baselines import baselines_for
from xfads_cli.scoring.evaluate import EVAL_SPLITS, evaluate
from xfads_cli.scoring.streamed import SmoothedScores
from xfads_cli.scoring.summary import judge, trial_labels


def smooth(run_path: Path, data_path: Path, out: Path, *, split: str = "all", mode: str | None = None,
           samples: int | None = None, fmt: str = "h5", overwrite: bool = False, overrides=(), device: str = "auto",
           plot: bool = False, windows: bool = False) -> dict:
    """Smoothed latents and rates for the trials of `split`; writes `out`, returns a summary. A recording
    without trials is smoothed whole, one trajectory per segment (commands/continuous.py), unless
    `windows` asks for the windows it is chopped into for training.

    Trials are smoothed `train.batch_size` at a time and each block is written to the HDF5 output and
    scored as it comes, so memory does not grow with the trials beyond the recording itself, with
    three exceptions: --format nwb (gathered in memory, see NwbOutput), --plot (reads the output
    back) and --split all on data with behaviour or conditions, where rates_mean of every trial
    (float32, as large as the counts) is kept for the behavior_r2 / psth_r2 decoders of `evaluate`."""
    if split not in ("all", "train", "valid", "test"):
        raise UsageError(f"--split must be all, train, valid or test, got '{split}'")
    if mode not in (None, "smoother", "filter", "two_filter"):
        raise UsageError(f"--mode must be smoother, filter or two_filter, got '{mode}'")
    if samples is not None and samples < 1:
        raise UsageError("--samples must be >= 1")
    check_format(out, fmt, overwrite, run_inputs(run_path, data_path))
    run = load_run(run_path, device)
    recording = None if windows else load_recording_for_run(data_path, run, overrides)
    if recording is not None:
        return _smooth_recording(run, recording, data_path, out, split=split, mode=mode, samples=samples, fmt=fmt,
                                 overwrite=overwrite, overrides=overrides, plot=plot)
    data = load_data_for_run(data_path, run, overrides)
    rows = data.subset(split)
    if rows.n_trials == 0:
        raise UsageError(f"{source_name(data_path)} has no '{split}' trials; use --split all")
    model = session_model(run, data)
    torch.manual_seed(run.config.seed)  # the posterior draws: the same file from the same run and data
    base = baselines_for(data)
    rows_index = np.arange(data.n_trials) if split == "all" else np.flatnonzero(data.split == split)
    scores = SmoothedScores(rows, co_baseline=base.co_source(rows_index))
    # --split all also reports evaluate's per-split scores; the decoders among them need whole arrays
    decoders = split == "all" and (data.behavior is not None or data.conditions is not None)
    split_scores = {} if split != "all" or decoders else {
        s: SmoothedScores(data, trials=data.split == s, co_baseline=base.co_source(rows_index))
        for s in EVAL_SPLITS if (data.split == s).any()}
    kept = np.empty(rows.counts.shape, dtype=np.float32) if decoders else None
    with open_output(out, fmt, rows, overwrite, "xfads_smooth", rows.start_s) as sink:
        start = 0
        for part in iter_smooth(model, rows.counts, mode=mode, n_samples=samples, batch_size=run.config.train.batch_size,
                                u=model_inputs(model, rows)):
            stop = start + len(part["rates_mean"])
            for score in (scores, *split_scores.values()):
                score.add(part["rates_mean"])
            if kept is not None:
                kept[start:stop] = part["rates_mean"]
            sink.append(part | {"counts": rows.counts[start:stop]})
            start = stop
        metrics = {k: float(v) for k, v in scores.result().items()}
        for s, score in split_scores.items():
            metrics.update({f"{s}_{k}": float(v) for k, v in score.result().items()})
        if decoders:
            metrics.update(evaluate(model, data, run.config, forecast=False, smoothed=kept))
        del kept  # freed before --plot reads the output back
        for name, value in (("trial_ids", rows.trial_ids), ("split", rows.split), ("unit_ids", rows.unit_ids.astype(str)),
                            ("heldout", rows.heldout), ("start_s", rows.start_s)):
            if value is not None:
                sink.write(name, value)
        judged = judge(base, metrics, trial_labels(data, split))
        sink.set_attrs(output_attrs(run, rows, "smooth", metrics) | judged | {"mode": mode or run.config.model.mode,
                                                                               "split_selected": split})
    summary = {"out": str(sink.path), "trials": rows.n_trials, "bins": rows.n_time, "metrics": metrics} | judged
    if not any(np.isfinite(v) for v in metrics.values()):
        summary["notes"] = [
            "no quality number for smoothing here: the run has no held-out neurons and the file no ground truth, "
            "and rates scored on the counts the encoder read reward fitting noise; fit with --set "
            "data.heldout_fraction=0.2 for co-bps, or run 'xfads forecast' for fp-bps next to the PSTH baseline"]
    if plot:
        summary["plots"] = _plots(sink, rows, out)
    return summary


def _plots(sink, rows, out: Path) -> list[str]:
    """smooth --plot: the latents and (trial-aligned data) the PSTH of the written output."""
    from xfads_cli.outputs.plots import plot_latents, plot_psth

    arrays = whole_arrays(sink, ["rates_mean", "rates_q05", "rates_q95", "latents_mean", "latents_var"])
    truth = rows.truth.get("latents")
    plots = [str(plot_latents(arrays["latents_mean"], Path(out).with_suffix(".latents.png"),
                              variances=arrays["latents_var"], truth=truth, bin_ms=rows.bin_ms,
                              trial_ids=rows.trial_ids))]
    if rows.provenance.get("trials_from") != "chopped":  # a PSTH of windows cut at arbitrary times means nothing
        plots.insert(0, str(plot_psth(
            rows.counts, arrays["rates_mean"], arrays["rates_q05"], arrays["rates_q95"], rows.bin_ms,
            Path(out).with_suffix(".psth.png"), conditions=rows.conditions)))
    return plots


def _smooth_recording(run, recording, data_path: Path, out: Path, *, split: str, plot: bool, overrides, **options):
    from xfads_cli.commands.continuous import smooth_recording

    for given, name in ((split != "all", f"--split {split}"), (plot, "--plot")):
        if given:
            raise UsageError(f"{name} applies to trials, and {source_name(data_path)} has none: it is smoothed whole, "
                             "one trajectory per segment; drop the option, or pass --windows to smooth its windows")
    return smooth_recording(run, recording, recording_model(run, recording, data_path, overrides), out, **options)
