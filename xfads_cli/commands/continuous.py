"""Recordings without trials. `xfads smooth`: one continuous trajectory per segment of the session, on
the recording's time base, streamed piece by piece (inference.iter_recording) into an HDF5 file.
`xfads forecast --at-s`: forecasts that start at given times of the recording (`forecast_at`).

Smooth output datasets (the time axis runs through the segments one after another):
    latents_mean, latents_var   [time, latent]
    rates_mean, rates_q05/q50/q95, counts   [time, neuron]
    timestamps [time]  start of each bin (s, the file's clock);  segments [segment, 2]  first and stop bin
    unit_ids [neuron], heldout [neuron]
"""

from __future__ import annotations

import numpy as np

from xfads_cli.errors import UsageError
from xfads_cli.scoring.bits import BitsPerSpike, HeldoutBits

PIECE_BINS = 2000  # bins filtered at once: memory per piece ~ samples x piece x neurons x 4 bytes x 3


def smooth_recording(run, recording, model, out, *, fmt: str, mode: str | None, samples: int | None,
                     overwrite: bool) -> dict:
    """Smooth every segment of `recording` (data/recording.py) with `model` (the session's SessionModel)
    and write `out` (HDF5); returns the summary."""
    import torch

    from xfads_cli.inference import iter_recording
    from xfads_cli.outputs.h5 import H5Stream
    from xfads_cli.outputs.sinks import output_attrs

    if fmt != "h5":
        raise UsageError("a recording without trials is smoothed as continuous segments, written as HDF5 only; "
                         "use --format h5 (or --windows to smooth the training windows)")
    lengths = [recording.n_bins(s) for s in range(len(recording.segments))]
    if sum(lengths) == 0:
        raise UsageError(f"the recording is shorter than one {recording.bin_ms:g} ms bin; lower data.bin_ms")
    from xfads_cli.heap import serve_large_blocks_by_mmap

    serve_large_blocks_by_mmap()  # hundreds of pieces: keep glibc's heap from growing with them
    torch.manual_seed(run.config.seed)  # the posterior draws: the same file from the same run and data
    score = HeldoutBits(recording.heldout)
    with H5Stream(out, n_rows=sum(lengths), overwrite=overwrite) as sink:
        for segment, b0, part in iter_recording(model, recording, piece_bins=PIECE_BINS, mode=mode, n_samples=samples):
            score.add(part["rates_mean"], part["counts"])
            n = len(part["counts"])
            sink.append(part | {"timestamps": recording.timestamps(segment, b0, b0 + n)})
        ends = np.cumsum(lengths)
        sink.write("segments", np.stack([ends - lengths, ends], axis=1).astype(np.int64))
        sink.write("unit_ids", recording.unit_ids.astype(str))
        sink.write("heldout", recording.heldout)
        metrics = {"co_bps": score.value()} if recording.heldout.any() else {}
        sink.set_attrs(output_attrs(run, recording, "smooth", metrics)
                       | {"mode": mode or run.config.model.mode, "layout": "continuous",
                          "baselines": {"co_bps": "each held-out neuron's mean rate over the recording (0 bits/spike)"}})
    summary = {"out": str(sink.path), "layout": "continuous", "segments": len(lengths), "bins": int(sum(lengths)),
               "trials": 0, "metrics": metrics}
    if not metrics:
        summary["notes"] = ["no quality number: the run has no held-out neurons (fit with --set "
                            "data.heldout_fraction=0.2 for co-bps over the whole recording)"]
    return summary


def parse_times(text: str) -> np.ndarray:
    """--at-s: seconds separated by commas or whitespace, or the path of a text file holding them."""
    from pathlib import Path

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


def forecast_windows(recording, times: np.ndarray, context: int, horizon: int) -> tuple[np.ndarray, np.ndarray]:
    """For each time: the counts of the `context` bins before it and the `horizon` bins from it, on its
    segment's bin grid (the forecast starts at the bin edge nearest the time): [time, context, neuron]
    and [time, horizon, neuron], and the first forecast bin's start time [time]."""
    ctx = np.empty((len(times), context, recording.n_neurons), dtype=np.float32)
    future = np.empty((len(times), horizon, recording.n_neurons), dtype=np.float32)
    starts = np.empty(len(times))
    for i, t in enumerate(times):
        inside = np.flatnonzero((recording.segments[:, 0] <= t) & (t <= recording.segments[:, 1]))
        b = -1 if inside.size == 0 else int(round((t - recording.segments[inside[0], 0]) / recording.bin_s))
        if inside.size == 0 or b < context or b + horizon > recording.n_bins(inside[0]):
            raise UsageError(f"--at-s {t:g}: the {context}-bin context before it and the {horizon}-bin horizon after it "
                             f"must lie in one recorded segment ({_segments_text(recording)}); choose another time or a "
                             "shorter --context/--horizon")
        seg = inside[0]
        counts = recording.counts(seg, b - context, b + horizon)
        ctx[i], future[i], starts[i] = counts[:context], counts[context:], recording.timestamps(seg, b, b + 1)[0]
    return ctx, future, starts


def _segments_text(recording) -> str:
    return ", ".join(f"{a:.3f}-{b:.3f} s" for a, b in recording.segments[:4]) + (" ..." if len(recording.segments) > 4 else "")


def forecast_at(run, recording, model, out, times: np.ndarray, *, context: int, horizon: int, samples: int,
                mode: str, keep_samples: bool, fmt: str, overwrite: bool) -> dict:
    """Forecast `horizon` bins from each of `times` (s) after a `context`-bin context; writes `out`
    (HDF5: rates_mean/qXX [time, horizon, neuron], latents_mean, counts, context_counts, start_s, at_s);
    fp-bps next to a baseline that forecasts each neuron's mean count per bin over the contexts."""
    import torch

    from xfads_cli.inference import iter_forecast
    from xfads_cli.outputs.h5 import H5Stream
    from xfads_cli.outputs.sinks import output_attrs

    if fmt != "h5":
        raise UsageError("forecasts at given times are written as HDF5 only; use --format h5")
    ctx, future, starts = forecast_windows(recording, times, context, horizon)
    score, base = BitsPerSpike(future), BitsPerSpike(future)
    mean = np.nan_to_num(np.nanmean(ctx.reshape(-1, ctx.shape[-1]), axis=0))
    torch.manual_seed(run.config.seed)
    with H5Stream(out, n_rows=len(times), overwrite=overwrite) as sink:
        start = 0
        for part in iter_forecast(model, ctx, horizon, n_samples=samples, mode=mode,
                                  batch_size=run.config.train.batch_size, keep_samples=keep_samples):
            stop = start + len(part["rates_mean"])
            score.add(part["rates_mean"])
            base.add(np.broadcast_to(mean, part["rates_mean"].shape))
            sink.append(part | {"counts": future[start:stop], "context_counts": ctx[start:stop]})
            start = stop
        metrics = {"fp_bps": float(score.value()), "fp_baseline_bps": float(base.value())}
        for name, value in (("start_s", starts), ("at_s", times), ("unit_ids", recording.unit_ids.astype(str))):
            sink.write(name, value)
        attrs = {"context_bins": context, "horizon_bins": horizon, "samples": samples, "mode": mode,
                 "layout": "continuous", "baselines": {"fp_bps": "each neuron's mean count per bin over the contexts"}}
        sink.set_attrs(output_attrs(run, recording, "forecast", metrics) | attrs)
    return {"out": str(sink.path), "trials": len(times), "layout": "continuous", "context_bins": context,
            "horizon_bins": horizon, "metrics": metrics}
