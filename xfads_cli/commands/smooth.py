"""`xfads smooth`: smoothed latents and rates, streamed to HDF5 (or a new NWB file). The input's type
decides the rows: the trials of a split, or (a recording without trials) one continuous trajectory per
segment of the session on the recording's time base.

Continuous output datasets (the time axis runs through the segments one after another):
    latents_mean, latents_var   [time, latent]
    rates_mean, rates_q05/q50/q95, counts   [time, neuron]
    timestamps [time]  start of each bin (s, the file's clock);  segments [segment, 2]  first and stop bin
    unit_ids [neuron], heldout [neuron]
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from xfads_cli.data.source import source_name
from xfads_cli.errors import UsageError
from xfads_cli.outputs.sinks import check_format, open_output, whole_arrays
from xfads_cli.runs.binding import (
    model_inputs,
    read_data_for_run,
    read_recording_for_run,
    recording_model,
    session_model,
)
from xfads_cli.runs.inference import iter_recording, iter_smooth
from xfads_cli.runs.pipeline import Gather, finish, open_input, stream
from xfads_cli.runs.run import run_inputs
from xfads_cli.scoring.baselines import baselines_for
from xfads_cli.scoring.bits import HeldoutBits
from xfads_cli.scoring.evaluate import EVAL_SPLITS, evaluate
from xfads_cli.scoring.streamed import SmoothedScores
from xfads_cli.scoring.summary import judge, trial_labels

PIECE_BINS = 2000  # bins of a continuous recording filtered at once: memory ~ samples x piece x neurons x 12 bytes


def smooth(run_path: Path, data_path: Path, out: Path, *, split: str = "all", mode: str | None = None,
           samples: int | None = None, fmt: str = "h5", overwrite: bool = False, overrides=(), device: str = "auto",
           plot: bool = False, windows: bool = False) -> dict:
    """Smoothed latents and rates for the trials of `split`; writes `out`, returns a summary. A recording
    without trials is smoothed whole, one trajectory per segment, unless `windows` asks for the windows
    it is chopped into for training.

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
    with open_input(run_path, data_path, overrides=overrides, device=device) as (run, f):
        recording = None if windows else read_recording_for_run(f, run)
        if recording is not None:
            for given, name in ((split != "all", f"--split {split}"), (plot, "--plot")):
                if given:
                    raise UsageError(f"{name} applies to trials, and {source_name(data_path)} has none: it is smoothed "
                                     "whole, one trajectory per segment; drop the option, or pass --windows to smooth "
                                     "its windows")
            model = recording_model(run, f)
        else:
            data = read_data_for_run(f, run)
    if recording is not None:
        return _smooth_recording(run, recording, model, out, fmt=fmt, mode=mode, samples=samples, overwrite=overwrite)
    return _smooth_trials(run, data, data_path, out, split=split, mode=mode, samples=samples, fmt=fmt,
                          overwrite=overwrite, plot=plot)


def _smooth_trials(run, data, data_path: Path, out: Path, *, split: str, mode: str | None, samples: int | None,
                   fmt: str, overwrite: bool, plot: bool) -> dict:
    rows = data.subset(split)
    if rows.n_trials == 0:
        raise UsageError(f"{source_name(data_path)} has no '{split}' trials; use --split all")
    model = session_model(run, data)
    torch.manual_seed(run.config.seed)  # the posterior draws: the same file from the same run and data
    base = baselines_for(data)
    rows_index = data.split_index(split)
    scores = {"": SmoothedScores(rows, co_baseline=base.co_source(rows_index))}
    # --split all also reports evaluate's per-split scores; the decoders among them need whole arrays
    decoders = split == "all" and (data.behavior is not None or data.conditions is not None)
    if split == "all" and not decoders:
        scores |= {f"{s}_": SmoothedScores(data, trials=data.split == s, co_baseline=base.co_source(rows_index))
                   for s in EVAL_SPLITS if (data.split == s).any()}
    readers = [lambda block, s=s: s.add(block["rates_mean"]) for s in scores.values()]
    kept = Gather("rates_mean", rows.counts.shape) if decoders else None
    readers += [kept] if kept is not None else []
    with open_output(out, fmt, rows, overwrite, "xfads_smooth", rows.start_s) as sink:
        parts = iter_smooth(model, rows.counts, mode=mode, n_samples=samples, batch_size=run.config.train.batch_size,
                            u=model_inputs(model, rows))
        stream(sink, parts, {"counts": rows.counts}, readers)
        metrics = {prefix + k: float(v) for prefix, score in scores.items() for k, v in score.result().items()}
        if decoders:
            metrics.update(evaluate(model, data, run.config, forecast=False, smoothed=kept.array))
        del kept  # freed before --plot reads the output back
        judged = judge(base, metrics, trial_labels(data, split))
        finish(sink, run, rows, "smooth", metrics, {
            "trial_ids": rows.trial_ids, "split": rows.split, "unit_ids": rows.unit_ids.astype(str),
            "heldout": rows.heldout, "start_s": rows.start_s,
        }, judged | {"mode": mode or run.config.model.mode, "split_selected": split})
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


def _smooth_recording(run, recording, model, out, *, fmt: str, mode: str | None, samples: int | None,
                      overwrite: bool) -> dict:
    """Smooth every segment of `recording` (data/recording.py) with `model` (the session's model) into
    `out` (HDF5), scored by co-bps when the run has held-out neurons; returns the summary."""
    from xfads_cli.heap import serve_large_blocks_by_mmap
    from xfads_cli.outputs.h5 import H5Stream

    if fmt != "h5":
        raise UsageError("a recording without trials is smoothed as continuous segments, written as HDF5 only; "
                         "use --format h5 (or --windows to smooth the training windows)")
    lengths = [recording.n_bins(s) for s in range(len(recording.segments))]
    if sum(lengths) == 0:
        raise UsageError(f"the recording is shorter than one {recording.bin_ms:g} ms bin; lower data.bin_ms")
    serve_large_blocks_by_mmap()  # hundreds of pieces: keep glibc's heap from growing with them
    torch.manual_seed(run.config.seed)  # the posterior draws: the same file from the same run and data
    score = HeldoutBits(recording.heldout)
    parts = (part | {"timestamps": recording.timestamps(segment, b0, b0 + len(part["counts"]))}
             for segment, b0, part in iter_recording(model, recording, piece_bins=PIECE_BINS, mode=mode,
                                                     n_samples=samples))
    with H5Stream(out, n_rows=sum(lengths), overwrite=overwrite) as sink:
        stream(sink, parts, {}, [lambda block: score.add(block["rates_mean"], block["counts"])])
        ends = np.cumsum(lengths)
        metrics = {"co_bps": score.value()} if recording.heldout.any() else {}
        finish(sink, run, recording, "smooth", metrics, {
            "segments": np.stack([ends - lengths, ends], axis=1).astype(np.int64),
            "unit_ids": recording.unit_ids.astype(str), "heldout": recording.heldout,
        }, {"mode": mode or run.config.model.mode, "layout": "continuous",
            "baselines": {"co_bps": "each held-out neuron's mean rate over the recording (0 bits/spike)"}})
    summary = {"out": str(sink.path), "layout": "continuous", "segments": len(lengths), "bins": int(sum(lengths)),
               "trials": 0, "metrics": metrics}
    if not metrics:
        summary["notes"] = ["no quality number: the run has no held-out neurons (fit with --set "
                            "data.heldout_fraction=0.2 for co-bps over the whole recording)"]
    return summary
