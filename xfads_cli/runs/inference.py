"""Inference as arrays: posterior and forecast summaries of a model on counts, block by block.

Arrays are numpy, [trial, time, ...]; rates are expected counts per bin; each block of
`batch_size` trials is computed (and can be written) on its own, so memory does not grow with the trials.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch

from xfads_cli.outputs.sinks import concat_parts
from xfads_cli.runs.binding import as_tensor

QUANTILES = (0.05, 0.5, 0.95)
RATE_BLOCK_VALUES = 4_000_000  # sample x bin x neuron values of rates summarised at once (iter_recording)


def _quantiles(samples: torch.Tensor) -> dict[str, np.ndarray]:
    """samples [sample, batch, time, neuron] -> rates_mean and rates_qXX [batch, time, neuron]."""
    arr = samples.cpu().numpy()  # numpy: torch.quantile refuses inputs above 16M elements
    out = {"rates_mean": arr.mean(0)}
    for q, value in zip(QUANTILES, np.quantile(arr, QUANTILES, axis=0)):
        out[f"rates_q{int(round(q * 100)):02d}"] = value
    return {k: v.astype(np.float32) for k, v in out.items()}


def _with_inputs(u: torch.Tensor | None) -> dict:
    """The task inputs as a keyword argument of the model's methods (none for a model without them)."""
    return {} if u is None else {"u": u}


def _smooth_part(model, y: torch.Tensor, mode: str | None, n_samples: int | None,
                 u: torch.Tensor | None = None) -> dict[str, np.ndarray]:
    # a function of its own so that the sample tensor is freed on return, not held into the next block
    post = model.posterior(y, mode=mode, n_samples=n_samples, **_with_inputs(u))
    part = _quantiles(model.rates(post.samples, **_with_inputs(u)))
    part["latents_mean"] = post.mean.cpu().numpy().astype(np.float32)
    part["latents_var"] = post.var.cpu().numpy().astype(np.float32)
    return part


def _forecast_part(model, y_context: torch.Tensor, horizon: int, n_samples: int, mode: str,
                   keep_samples: bool, u: torch.Tensor | None = None) -> dict[str, np.ndarray]:
    fc = model.forecast(y_context, horizon, n_samples=n_samples, mode=mode, **_with_inputs(u))
    part = _quantiles(fc.rates)
    part["latents_mean"] = fc.latents.mean(0).cpu().numpy().astype(np.float32)
    if keep_samples:
        part["latent_samples"] = fc.latents.transpose(0, 1).cpu().numpy().astype(np.float32)
    return part


@torch.no_grad()
def iter_smooth(model, y, *, mode: str | None = None, n_samples: int | None = None,
                batch_size: int = 64, u=None) -> Iterator[dict[str, np.ndarray]]:
    """smooth_arrays block by block: for each `batch_size` consecutive trials of y [trial, time, neuron]
    (tensor, or numpy converted one block at a time) the dict of [block, ...] arrays. Memory per block:
    the posterior samples [sample, block, time, neuron] and their sorted copy for the quantiles.
    u: the trials' task inputs [trial, time, input] (runs.model_inputs), or None."""
    for i in range(0, y.shape[0], batch_size):
        ui = None if u is None else as_tensor(u[i : i + batch_size], model)
        yield _smooth_part(model, as_tensor(y[i : i + batch_size], model), mode, n_samples, ui)


@torch.no_grad()
def iter_forecast(model, y_context, horizon: int, *, n_samples: int = 100, mode: str = "filter", batch_size: int = 64,
                  keep_samples: bool = False, u=None) -> Iterator[dict[str, np.ndarray]]:
    """forecast_arrays block by block (as iter_smooth) for the contexts y_context [trial, context, neuron];
    u: task inputs [trial, context + horizon, input] (what is known in advance, runs.model_inputs), or None."""
    for i in range(0, y_context.shape[0], batch_size):
        ui = None if u is None else as_tensor(u[i : i + batch_size], model)
        yield _forecast_part(model, as_tensor(y_context[i : i + batch_size], model), horizon, n_samples, mode,
                             keep_samples, ui)


def smooth_arrays(model, y: torch.Tensor, *, mode: str | None = None, n_samples: int | None = None,
                  batch_size: int = 64) -> dict[str, np.ndarray]:
    """Posterior summaries of y [trial, time, neuron]: latents_mean/var [trial, time, latent],
    rates_mean and 5/50/95% quantiles over posterior samples [trial, time, neuron]."""
    return concat_parts(list(iter_smooth(model, y, mode=mode, n_samples=n_samples, batch_size=batch_size)))


def forecast_arrays(model, y_context: torch.Tensor, horizon: int, *, n_samples: int = 100, mode: str = "filter",
                    batch_size: int = 64, keep_samples: bool = False) -> dict[str, np.ndarray]:
    """Forecast `horizon` bins after each trial's context y_context [trial, context, neuron]:
    rates_mean and quantiles [trial, horizon, neuron], latents_mean [trial, horizon, latent]
    (and latent_samples [trial, sample, horizon, latent] with keep_samples)."""
    return concat_parts(list(iter_forecast(model, y_context, horizon, n_samples=n_samples, mode=mode, batch_size=batch_size,
                                      keep_samples=keep_samples)))


@torch.no_grad()
def iter_recording(model, recording, *, piece_bins: int = 2000, mode: str | None = None,
                   n_samples: int | None = None) -> Iterator[tuple[int, int, dict[str, np.ndarray]]]:
    """The posterior of a continuous `recording` (data/recording.py), segment by segment, each segment
    one sequence filtered piece by piece (model/streaming.py: the same as one pass over the segment):
    (segment, first bin, part) with part's arrays [piece_time, ...]: latents_mean/var [time, latent],
    rates_mean and quantiles [time, neuron] and the counts [time, neuron]. model: the SessionModel
    serving the recording's session. Memory: one piece's samples, whatever the segment's length."""
    from xfads_cli.model.streaming import stream_posterior

    for segment in range(len(recording.segments)):
        def read(t0: int, t1: int, segment=segment) -> torch.Tensor:
            return as_tensor(recording.counts(segment, t0, t1)[None], model)

        for piece in stream_posterior(model, read, recording.n_bins(segment), piece_bins=piece_bins, mode=mode,
                                      n_samples=n_samples):
            post = piece.posterior
            # rates and their quantiles a few hundred bins at a time: [sample, bins, neuron] and its sorted
            # copy would otherwise be the largest arrays of the run (hundreds of MB for 1000 neurons)
            S, T = post.samples.shape[0], post.samples.shape[2]
            step = max(1, RATE_BLOCK_VALUES // (S * recording.n_neurons))
            for b0 in range(0, T, step):
                part = {k: v[0] for k, v in _quantiles(model.rates(post.samples[:, :, b0 : b0 + step])).items()}
                part["latents_mean"] = post.mean[0, b0 : b0 + step].cpu().numpy().astype(np.float32)
                part["latents_var"] = post.var[0, b0 : b0 + step].cpu().numpy().astype(np.float32)
                start = piece.start + b0
                part["counts"] = recording.counts(segment, start, start + len(part["latents_mean"]))
                yield segment, start, part
