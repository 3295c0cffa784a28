"""`xfads smooth` on a recording without trials: one continuous trajectory per segment of the session,
on the recording's time base, streamed piece by piece (inference.iter_recording) into an HDF5 file.

Output datasets (the time axis runs through the segments one after another):
    latents_mean, latents_var   [time, latent]
    rates_mean, rates_q05/q50/q95, counts   [time, neuron]
    timestamps [time]  start of each bin (s, the file's clock);  segments [segment, 2]  first and stop bin
    unit_ids [neuron], heldout [neuron]
"""

from __future__ import annotations

import math

import numpy as np

from xfads_cli.errors import UsageError
from xfads_cli.scores import bits_from_nll, poisson_nll

PIECE_BINS = 2000  # bins filtered at once: memory per piece ~ samples x piece x neurons x 4 bytes x 3


class HeldoutBits:
    """co-bps of a whole recording fed piece by piece: bits per spike of the held-out neurons' rates
    over their mean rate in the session (the null model; its NLL from the totals at the end)."""

    def __init__(self, heldout: np.ndarray):
        self.heldout = np.asarray(heldout, dtype=bool)
        self.nll_model = 0.0
        self.spikes = np.zeros(int(self.heldout.sum()))
        self.bins = np.zeros(int(self.heldout.sum()))

    def add(self, rates: np.ndarray, counts: np.ndarray) -> None:
        """rates, counts: [time, neuron] of consecutive bins."""
        n = counts[:, self.heldout]
        self.nll_model += poisson_nll(rates[:, self.heldout], n, constant=False)
        self.spikes += np.nansum(n, axis=0)
        self.bins += np.sum(~np.isnan(n), axis=0)

    def value(self) -> float:
        if not self.heldout.any():
            return math.nan
        # sum_t [rbar - n_t ln rbar] with rbar = spikes / bins: spikes - spikes ln rbar per neuron
        rbar = np.where(self.bins > 0, self.spikes / np.maximum(self.bins, 1), 0.0)
        null = float(np.sum(self.spikes - self.spikes * np.log(np.where(self.spikes > 0, rbar, 1.0))))
        return bits_from_nll(null, self.nll_model, float(self.spikes.sum()))


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
