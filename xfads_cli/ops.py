"""Library entry points behind the commands: load a run, smooth, forecast, evaluate.

    run = load_run("runs/lorenz")                       # model rebuilt from the checkpoint alone
    data = load_data_for_run("x.nwb", run)              # the run's data options, checked against it
    arrays = smooth_arrays(run.model, tensor(data))     # latents, rates mean and quantiles

Arrays are numpy, [trial, time, ...]; rates are expected counts per bin.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from xfads_cli.config import Config, load_config, resolved_config
from xfads_cli.data.spikedata import SpikeData
from xfads_cli.errors import UsageError
from xfads_cli.outputs import metrics as M

QUANTILES = (0.05, 0.5, 0.95)


@dataclass
class Run:
    model: torch.nn.Module
    config: Config
    checkpoint: dict
    path: Path
    sha256: str

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.model.parameters()).dtype


def model_spec(data: SpikeData) -> dict:
    """What rebuilding the model needs besides the config (plain data, stored in checkpoints)."""
    return {
        "n_neurons": data.n_neurons,
        "heldin": (~data.heldout).tolist(),
        "dt": data.dt,
        "bin_ms": data.bin_ms,
        "unit_ids": [str(u) for u in data.unit_ids],
        "session": data.session,
    }


def build_model(config: Config, spec: dict, device="cpu") -> torch.nn.Module:
    """XFADS from a single-session spec, MetaXFADS from {"kind": "meta", "sessions": [spec, ...]}."""
    dtype = torch.float64 if config.train.dtype == "float64" else torch.float32
    if spec.get("kind") == "meta":
        from xfads_cli.model.meta import MetaXFADS

        model = MetaXFADS(config.model, spec["sessions"])
    else:
        from xfads_cli.model.xfads import XFADS

        model = XFADS(config.model, spec["n_neurons"], torch.tensor(spec["heldin"]), spec["dt"])
    return model.to(device=device, dtype=dtype)


def load_run(run: Path, device: str = "auto", which: str = "best") -> Run:
    from xfads_cli.data.provenance import file_sha256
    from xfads_cli.train.checkpoint import load_checkpoint, resolve_checkpoint
    from xfads_cli.train.device import resolve_device

    path = resolve_checkpoint(run, which)
    ckpt = load_checkpoint(path)
    config = load_config(base=ckpt["config"])
    model = build_model(config, ckpt["spec"], resolve_device(device))
    model.load_state_dict(ckpt["model"])
    model.eval()
    return Run(model, config, ckpt, path, file_sha256(path))


def load_data_for_run(path: Path, run: Run, overrides=(), window_ms=None) -> SpikeData:
    """Load `path` with the run's own data options (plus `--set` overrides) and check it is the same
    kind of recording the model was trained on: same neurons in the same order and the same bins."""
    from dataclasses import replace

    from xfads_cli.data.load import load_data

    config = load_config(overrides=overrides, base=resolved_config(run.config))
    data_cfg = config.data if window_ms is None else replace(config.data, window_ms=window_ms)
    data = load_data(path, data_cfg)
    spec = session_spec(run, data)
    if data.n_neurons != spec["n_neurons"]:
        raise UsageError(
            f"{Path(path).name} gives {data.n_neurons} neurons but the checkpoint was trained on {spec['n_neurons']}; "
            "use the recording (and data options) the run was fitted on"
        )
    if [str(u) for u in data.unit_ids] != spec["unit_ids"]:
        raise UsageError(f"the unit ids of {Path(path).name} differ from the checkpoint's; use the recording the run was fitted on")
    if abs(data.bin_ms - spec["bin_ms"]) > 1e-9:
        raise UsageError(f"data.bin_ms={data.bin_ms:g} but the model was trained with {spec['bin_ms']:g} ms bins")
    return data


def session_spec(run: Run, data: SpikeData) -> dict:
    """The checkpoint's spec for `data`'s session: the only one for XFADS; for a meta run the session
    matched by name or by the file's sha256."""
    spec = run.checkpoint["spec"]
    if spec.get("kind") != "meta":
        return spec
    return spec["sessions"][session_index(run, data)]


def session_index(run: Run, data: SpikeData) -> int:
    specs = run.checkpoint["spec"]["sessions"]
    names = [s["name"] for s in specs]
    if data.session in names:
        return names.index(data.session)
    hashes = [d.get("sha256") for d in run.checkpoint.get("data", [])]
    if data.provenance.get("sha256") in hashes:
        return hashes.index(data.provenance["sha256"])
    raise UsageError(
        f"session '{data.session}' is not part of this run (sessions: {', '.join(names)}); "
        f"add it with 'xfads adapt {run.path.parent} {data.provenance.get('path', 'DATA')} --trials N --out NEW_RUN'"
    )


def session_model(run: Run, data: SpikeData):
    """The model to use on `data`: XFADS itself, or for a meta run a view of the matching session
    with its embedding pooled over the session's training trials."""
    if run.checkpoint["spec"].get("kind") != "meta":
        return run.model
    from xfads_cli.model.meta import SessionView

    index = session_index(run, data)
    shots = run.checkpoint["spec"]["sessions"][index].get("embed_trial_ids")
    # adapted sessions pool their embedding over the few-shot trials they were adapted on
    rows = data.select(np.isin(data.trial_ids, shots)) if shots else data.subset("train")
    y = as_tensor(rows.counts if rows.n_trials else data.counts, run)
    return SessionView.pooled(run.model, index, y)


def as_tensor(counts: np.ndarray, like: Run | torch.nn.Module) -> torch.Tensor:
    param = next((like.model if isinstance(like, Run) else like).parameters())
    return torch.as_tensor(counts, dtype=param.dtype, device=param.device)


def _quantiles(samples: torch.Tensor) -> dict[str, np.ndarray]:
    """samples [sample, batch, time, neuron] -> rates_mean and rates_qXX [batch, time, neuron]."""
    arr = samples.cpu().numpy()  # numpy: torch.quantile refuses inputs above 16M elements
    out = {"rates_mean": arr.mean(0)}
    for q, value in zip(QUANTILES, np.quantile(arr, QUANTILES, axis=0)):
        out[f"rates_q{int(round(q * 100)):02d}"] = value
    return {k: v.astype(np.float32) for k, v in out.items()}


def _concat(parts: list[dict]) -> dict[str, np.ndarray]:
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]} if parts else {}


@torch.no_grad()
def smooth_arrays(model, y: torch.Tensor, *, mode: str | None = None, n_samples: int | None = None,
                  batch_size: int = 64) -> dict[str, np.ndarray]:
    """Posterior summaries of y [trial, time, neuron]: latents_mean/var [trial, time, latent],
    rates_mean and 5/50/95% quantiles over posterior samples [trial, time, neuron]."""
    parts = []
    for i in range(0, y.shape[0], batch_size):
        post = model.posterior(y[i : i + batch_size], mode=mode, n_samples=n_samples)
        part = _quantiles(model.rates(post.samples))
        part["latents_mean"] = post.mean.cpu().numpy().astype(np.float32)
        part["latents_var"] = post.var.cpu().numpy().astype(np.float32)
        parts.append(part)
    return _concat(parts)


@torch.no_grad()
def forecast_arrays(model, y_context: torch.Tensor, horizon: int, *, n_samples: int = 100, mode: str = "filter",
                    batch_size: int = 64, keep_samples: bool = False) -> dict[str, np.ndarray]:
    """Forecast `horizon` bins after each trial's context y_context [trial, context, neuron]:
    rates_mean and quantiles [trial, horizon, neuron], latents_mean [trial, horizon, latent]
    (and latent_samples [trial, sample, horizon, latent] with keep_samples)."""
    parts = []
    for i in range(0, y_context.shape[0], batch_size):
        fc = model.forecast(y_context[i : i + batch_size], horizon, n_samples=n_samples, mode=mode)
        part = _quantiles(fc.rates)
        part["latents_mean"] = fc.latents.mean(0).cpu().numpy().astype(np.float32)
        if keep_samples:
            part["latent_samples"] = fc.latents.transpose(0, 1).cpu().numpy().astype(np.float32)
        parts.append(part)
    return _concat(parts)


def default_forecast_window(n_time: int, config: Config) -> tuple[int, int]:
    context = config.eval.context_bins or max(1, (2 * n_time) // 3)
    horizon = config.eval.horizon_bins or n_time - context
    return context, horizon


def evaluate(model, data: SpikeData, config: Config, splits=("valid", "test"), forecast: bool = True,
             decode: bool = True, smoothed: np.ndarray | None = None) -> dict:
    """Honest metrics (METRICS.md) for the trials of each split in `splits`, keyed `{split}_{metric}`:
    co_bps (held-out neurons), retest_bps + retest_oracle_bps (simulated data), fp_bps (+ oracle),
    and with `decode`: vel_r2 (behaviour; decoder fit on train-split rates), psth_r2 (conditions).
    smoothed: rates_mean [trial, time, neuron] of every trial of `data` when already computed."""
    out: dict = {}
    decode_behavior = decode and data.behavior is not None
    need = set(splits) | ({"train"} if decode_behavior else set())
    rates = {}
    for split in need:
        sub = data.subset(split)
        if sub.n_trials and smoothed is not None:
            rates[split] = smoothed[data.split == split]
        elif sub.n_trials:
            rates[split] = smooth_arrays(model, as_tensor(sub.counts, model), batch_size=config.train.batch_size)["rates_mean"]
    for split in splits:
        sub = data.subset(split)
        if split not in rates:
            continue
        out.update({f"{split}_{k}": v for k, v in score_smoothed(rates[split], sub).items()})
        if decode_behavior and "train" in rates and split != "train":
            lag = int(round(config.eval.behavior_lag_ms / data.bin_ms))
            out[f"{split}_vel_r2"] = M.vel_r2(rates["train"], data.subset("train").behavior, rates[split], sub.behavior, lag_bins=lag)
        if decode and data.conditions is not None:
            out[f"{split}_psth_r2"] = M.psth_r2(rates[split], sub.counts, sub.conditions, data.bin_ms, config.eval.psth_sigma_ms)
        if forecast and data.n_time >= 2:
            context, horizon = default_forecast_window(data.n_time, config)
            fc = forecast_arrays(model, as_tensor(sub.counts[:, :context], model), horizon, n_samples=config.eval.samples,
                                 batch_size=config.train.batch_size)
            out.update({f"{split}_{k}": v for k, v in score_forecast(fc["rates_mean"], sub, context).items()})
    return {k: float(v) for k, v in out.items()}


def score_smoothed(rates: np.ndarray, data: SpikeData) -> dict:
    """co-bps on held-out neurons, and test-retest bps when the data hold a second draw."""
    out = {}
    if data.heldout.any():
        out["co_bps"] = M.co_bps(rates, data.counts, data.heldout)
    if "retest_counts" in data.truth:
        out["retest_bps"] = M.bits_per_spike(rates, data.truth["retest_counts"])
        out["retest_oracle_bps"] = M.oracle_bps(data.truth["rates"], data.truth["retest_counts"])
    return out


def score_forecast(rates: np.ndarray, data: SpikeData, context: int) -> dict:
    """fp-bps of forecast rates [trial, horizon, neuron] against the observed bins after the context."""
    horizon = rates.shape[1]
    observed = data.counts[:, context : context + horizon]
    if observed.shape[1] < horizon:
        return {}
    out = {"fp_bps": M.fp_bps(rates, observed)}
    if "rates" in data.truth:
        out["fp_oracle_bps"] = M.oracle_bps(data.truth["rates"][:, context : context + horizon], observed)
    return out


# -- commands -----------------------------------------------------------------------------------

def _output_attrs(run: Run, data: SpikeData, command: str, metrics: dict) -> dict:
    from xfads_cli.config import dump_config
    from xfads_cli.data.provenance import package_versions

    return {
        "command": command,
        "config": dump_config(run.config),
        "checkpoint": str(run.path),
        "checkpoint_sha256": run.sha256,
        "input_path": str(data.provenance.get("path", "")),
        "input_sha256": str(data.provenance.get("sha256", "")),
        "session": data.session,
        "bin_ms": data.bin_ms,
        "versions": package_versions(),
        "metrics": metrics,
    }


def _write(out: Path, fmt: str, arrays: dict, rows: SpikeData, attrs: dict, overwrite: bool, module: str,
           series_start_s: np.ndarray | None) -> Path:
    from xfads_cli.outputs.h5 import write_h5

    if fmt == "h5":
        return write_h5(out, arrays, attrs, overwrite)
    from xfads_cli.outputs.nwb import write_nwb_copy

    source = Path(rows.provenance.get("path", ""))
    if rows.provenance.get("format") != "nwb" or series_start_s is None:
        raise UsageError("--format nwb needs an NWB input file (trial times are taken from it); use --format h5")
    series = {k: v for k, v in arrays.items() if np.asarray(v).ndim == 3}
    return write_nwb_copy(source, out, module, series, series_start_s, rows.bin_ms, f"xfads {module}", attrs, overwrite)


def _check_format(out: Path, fmt: str, overwrite: bool) -> None:
    from xfads_cli.outputs.h5 import check_output

    if fmt not in ("h5", "nwb"):
        raise UsageError(f"--format must be h5 or nwb, got '{fmt}'")
    check_output(out, overwrite)


def smooth(run_path: Path, data_path: Path, out: Path, *, split: str = "all", mode: str | None = None,
           samples: int | None = None, fmt: str = "h5", overwrite: bool = False, overrides=(), device: str = "auto",
           plot: bool = False) -> dict:
    """Smoothed latents and rates for the trials of `split`; writes `out`, returns a summary."""
    if split not in ("all", "train", "valid", "test"):
        raise UsageError(f"--split must be all, train, valid or test, got '{split}'")
    if mode not in (None, "smoother", "filter", "two_filter"):
        raise UsageError(f"--mode must be smoother, filter or two_filter, got '{mode}'")
    _check_format(out, fmt, overwrite)
    run = load_run(run_path, device)
    data = load_data_for_run(data_path, run, overrides)
    rows = data.subset(split)
    if rows.n_trials == 0:
        raise UsageError(f"{Path(data_path).name} has no '{split}' trials; use --split all")
    model = session_model(run, data)
    arrays = smooth_arrays(model, as_tensor(rows.counts, run), mode=mode, n_samples=samples,
                           batch_size=run.config.train.batch_size)
    metrics = {k: float(v) for k, v in score_smoothed(arrays["rates_mean"], rows).items()}
    if split == "all":
        metrics.update(evaluate(model, data, run.config, forecast=False, smoothed=arrays["rates_mean"]))
    arrays.update({
        "counts": rows.counts, "trial_ids": rows.trial_ids, "split": rows.split,
        "unit_ids": rows.unit_ids.astype(str), "heldout": rows.heldout,
    })
    if rows.start_s is not None:
        arrays["start_s"] = rows.start_s
    attrs = _output_attrs(run, rows, "smooth", metrics) | {"mode": mode or run.config.model.mode, "split_selected": split}
    path = _write(out, fmt, arrays, rows, attrs, overwrite, "xfads_smooth", rows.start_s)
    summary = {"out": str(path), "trials": rows.n_trials, "bins": rows.n_time, "metrics": metrics}
    if plot:
        from xfads_cli.outputs.plots import plot_latents, plot_psth

        truth = rows.truth.get("latents")
        summary["plots"] = [
            str(plot_psth(rows.counts, arrays["rates_mean"], arrays["rates_q05"], arrays["rates_q95"], rows.bin_ms,
                          Path(out).with_suffix(".psth.png"), conditions=rows.conditions)),
            str(plot_latents(arrays["latents_mean"], Path(out).with_suffix(".latents.png"),
                             variances=arrays["latents_var"], truth=truth)),
        ]
    return summary


def forecast(run_path: Path, data_path: Path, out: Path, *, context: int | None = None, horizon: int | None = None,
             context_ms: float | None = None, horizon_ms: float | None = None, split: str = "all",
             samples: int = 100, mode: str = "filter", keep_samples: bool = False, fmt: str = "h5",
             overwrite: bool = False, overrides=(), device: str = "auto", plot: bool = False) -> dict:
    """Forecast `horizon` bins after the first `context` bins of each trial window; writes `out`."""
    if split not in ("all", "train", "valid", "test"):
        raise UsageError(f"--split must be all, train, valid or test, got '{split}'")
    if mode not in ("filter", "smoother"):
        raise UsageError(f"--mode must be filter (causal context, default) or smoother, got '{mode}'")
    _check_format(out, fmt, overwrite)
    for name, bins, ms in (("context", context, context_ms), ("horizon", horizon, horizon_ms)):
        if (bins is None) == (ms is None):
            raise UsageError(f"give exactly one of --{name} (bins) or --{name}-ms")
    if samples < 1:
        raise UsageError("--samples must be >= 1")
    run = load_run(run_path, device)
    data = load_data_for_run(data_path, run, overrides)
    context = _bins(context, context_ms, data.bin_ms, "context")
    horizon = _bins(horizon, horizon_ms, data.bin_ms, "horizon")
    if context + horizon > data.n_time:
        data = _extend_windows(data_path, run, overrides, data, context + horizon)
    rows = data.subset(split)
    if rows.n_trials == 0:
        raise UsageError(f"{Path(data_path).name} has no '{split}' trials; use --split all")
    arrays = forecast_arrays(session_model(run, data), as_tensor(rows.counts[:, :context], run), horizon, n_samples=samples,
                             mode=mode, batch_size=run.config.train.batch_size, keep_samples=keep_samples)
    metrics = {k: float(v) for k, v in score_forecast(arrays["rates_mean"], rows, context).items()}
    arrays.update({
        "counts": rows.counts[:, context : context + horizon], "context_counts": rows.counts[:, :context],
        "trial_ids": rows.trial_ids, "split": rows.split, "unit_ids": rows.unit_ids.astype(str),
    })
    if "rates" in rows.truth:
        arrays["true_rates"] = rows.truth["rates"][:, context : context + horizon]
    start = None if rows.start_s is None else rows.start_s + context * rows.bin_ms / 1000.0
    if start is not None:
        arrays["start_s"] = start
    attrs = _output_attrs(run, rows, "forecast", metrics) | {
        "context_bins": context, "horizon_bins": horizon, "samples": samples, "mode": mode, "split_selected": split}
    path = _write(out, fmt, arrays, rows, attrs, overwrite, "xfads_forecast", start)
    summary = {"out": str(path), "trials": rows.n_trials, "context_bins": context, "horizon_bins": horizon,
               "metrics": metrics}
    if plot:
        from xfads_cli.outputs.plots import plot_forecast

        summary["plots"] = [str(plot_forecast(
            arrays["context_counts"], arrays["counts"], arrays["rates_mean"], arrays["rates_q05"], arrays["rates_q95"],
            rows.bin_ms, Path(out).with_suffix(".forecast.png")))]
    return summary


def _bins(bins: int | None, ms: float | None, bin_ms: float, name: str) -> int:
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
