"""Library entry points behind the commands: load a run, smooth, forecast, evaluate.

    run = load_run("runs/lorenz")                       # model rebuilt from the checkpoint alone
    data = load_data_for_run("x.nwb", run)              # the run's data options, checked against it
    arrays = smooth_arrays(run.model, tensor(data))     # latents, rates mean and quantiles
    for part in iter_smooth(model, data.counts):        # the same, one block of trials at a time

Arrays are numpy, [trial, time, ...]; rates are expected counts per bin. The smooth and forecast
commands stream: each block of trials is scored and written to HDF5 as it comes.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from xfads_cli.config import Config, load_config, resolved_config
from xfads_cli.data.spikedata import SpikeData
from xfads_cli.errors import UsageError
from xfads_cli.outputs import baselines as B
from xfads_cli.outputs import metrics as M
from xfads_cli.train.checkpoint import Checkpoint

QUANTILES = (0.05, 0.5, 0.95)


@dataclass
class Run:
    model: torch.nn.Module
    config: Config
    checkpoint: Checkpoint
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
    """The model of a run directory's checkpoint (`which`.pt, else last.pt) or of a .pt file, rebuilt
    on `device` from the checkpoint alone (older checkpoints migrated: train/checkpoint.py)."""
    from xfads_cli.data.provenance import file_sha256
    from xfads_cli.train.checkpoint import resolve_checkpoint
    from xfads_cli.train.device import resolve_device

    path = resolve_checkpoint(run, which)
    ckpt = Checkpoint.load(path)
    config = load_config(base=ckpt.config)
    model = build_model(config, ckpt.spec, resolve_device(device))
    model.load_state_dict(ckpt.model)
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
    spec = run.checkpoint.spec
    if spec.get("kind") != "meta":
        return spec
    return spec["sessions"][session_index(run, data)]


def session_index(run: Run, data: SpikeData) -> int:
    specs = run.checkpoint.spec["sessions"]
    names = [s["name"] for s in specs]
    if data.session in names:
        return names.index(data.session)
    hashes = [d.get("sha256") for d in run.checkpoint.data or []]
    if data.provenance.get("sha256") in hashes:
        return hashes.index(data.provenance["sha256"])
    raise UsageError(
        f"session '{data.session}' is not part of this run (sessions: {', '.join(names)}); "
        f"add it with 'xfads adapt {run.path.parent} {data.provenance.get('path', 'DATA')} --trials N --out NEW_RUN'"
    )


def session_model(run: Run, data: SpikeData):
    """The model to use on `data`: XFADS itself, or for a meta run a view of the matching session
    with its embedding pooled over the session's training trials."""
    if run.checkpoint.spec.get("kind") != "meta":
        return run.model
    from xfads_cli.model.meta import SessionView

    index = session_index(run, data)
    shots = run.checkpoint.spec["sessions"][index].get("embed_trial_ids")
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


def _smooth_part(model, y: torch.Tensor, mode: str | None, n_samples: int | None) -> dict[str, np.ndarray]:
    # a function of its own so that the sample tensor is freed on return, not held into the next block
    post = model.posterior(y, mode=mode, n_samples=n_samples)
    part = _quantiles(model.rates(post.samples))
    part["latents_mean"] = post.mean.cpu().numpy().astype(np.float32)
    part["latents_var"] = post.var.cpu().numpy().astype(np.float32)
    return part


def _forecast_part(model, y_context: torch.Tensor, horizon: int, n_samples: int, mode: str,
                   keep_samples: bool) -> dict[str, np.ndarray]:
    fc = model.forecast(y_context, horizon, n_samples=n_samples, mode=mode)
    part = _quantiles(fc.rates)
    part["latents_mean"] = fc.latents.mean(0).cpu().numpy().astype(np.float32)
    if keep_samples:
        part["latent_samples"] = fc.latents.transpose(0, 1).cpu().numpy().astype(np.float32)
    return part


@torch.no_grad()
def iter_smooth(model, y, *, mode: str | None = None, n_samples: int | None = None,
                batch_size: int = 64) -> Iterator[dict[str, np.ndarray]]:
    """smooth_arrays block by block: for each `batch_size` consecutive trials of y [trial, time, neuron]
    (tensor, or numpy converted one block at a time) the dict of [block, ...] arrays. Memory per block:
    the posterior samples [sample, block, time, neuron] and their sorted copy for the quantiles."""
    for i in range(0, y.shape[0], batch_size):
        yield _smooth_part(model, as_tensor(y[i : i + batch_size], model), mode, n_samples)


@torch.no_grad()
def iter_forecast(model, y_context, horizon: int, *, n_samples: int = 100, mode: str = "filter", batch_size: int = 64,
                  keep_samples: bool = False) -> Iterator[dict[str, np.ndarray]]:
    """forecast_arrays block by block (as iter_smooth) for the contexts y_context [trial, context, neuron]."""
    for i in range(0, y_context.shape[0], batch_size):
        yield _forecast_part(model, as_tensor(y_context[i : i + batch_size], model), horizon, n_samples, mode, keep_samples)


def smooth_arrays(model, y: torch.Tensor, *, mode: str | None = None, n_samples: int | None = None,
                  batch_size: int = 64) -> dict[str, np.ndarray]:
    """Posterior summaries of y [trial, time, neuron]: latents_mean/var [trial, time, latent],
    rates_mean and 5/50/95% quantiles over posterior samples [trial, time, neuron]."""
    return _concat(list(iter_smooth(model, y, mode=mode, n_samples=n_samples, batch_size=batch_size)))


def forecast_arrays(model, y_context: torch.Tensor, horizon: int, *, n_samples: int = 100, mode: str = "filter",
                    batch_size: int = 64, keep_samples: bool = False) -> dict[str, np.ndarray]:
    """Forecast `horizon` bins after each trial's context y_context [trial, context, neuron]:
    rates_mean and quantiles [trial, horizon, neuron], latents_mean [trial, horizon, latent]
    (and latent_samples [trial, sample, horizon, latent] with keep_samples)."""
    return _concat(list(iter_forecast(model, y_context, horizon, n_samples=n_samples, mode=mode, batch_size=batch_size,
                                      keep_samples=keep_samples)))


def default_forecast_window(n_time: int, config: Config) -> tuple[int, int] | None:
    """(context, horizon) bins of the scored forecast (eval.context_bins / horizon_bins; default: the
    first 2/3 of the trial, then the rest), or None when they leave no forecast inside n_time bins."""
    context = config.eval.context_bins or max(1, (2 * n_time) // 3)
    horizon = config.eval.horizon_bins or n_time - context
    if horizon < 1 or context + horizon > n_time:
        return None
    return context, horizon


EVAL_SPLITS = ("valid", "test")


def evaluate(model, data: SpikeData, config: Config, splits=EVAL_SPLITS, forecast: bool = True,
             decode: bool = True, smoothed: np.ndarray | None = None, baselines: bool = True) -> dict:
    """Honest metrics (docs/metrics.md) for the trials of each split in `splits`, keyed `{split}_{metric}`:
    co_bps (held-out neurons), retest_bps + retest_oracle_bps (simulated data), fp_bps (+ oracle),
    and with `decode`: behavior_r2 (R^2 of the data.behavior series, whatever it is, decoded linearly
    from the rates by NLB's vel_r2 procedure, decoder fit on train-split rates), psth_r2 (conditions).
    With `baselines`, co_baseline_bps and fp_baseline_bps next to co_bps and fp_bps: what the trivial
    baselines of `Baselines` score on the same trials and bins (fitted once per `data`, see
    baselines_for; baseline_summary describes them and says whether the model beats them).
    smoothed: rates_mean [trial, time, neuron] of every trial of `data` when already computed.
    Smoothed rates_mean of the splits are held whole (the decoders need them); forecasts are scored
    block by block."""
    out: dict = {}
    base = baselines_for(data) if baselines else None
    decode_behavior = decode and data.behavior is not None
    need = set(splits) | ({"train"} if decode_behavior else set())
    rates = {}
    for split in need:
        sub = data.subset(split)
        if sub.n_trials and smoothed is not None:
            rates[split] = smoothed[data.split == split]
        elif sub.n_trials:
            rates[split] = np.concatenate([part["rates_mean"] for part in
                                           iter_smooth(model, sub.counts, batch_size=config.train.batch_size)])
    for split in splits:
        sub = data.subset(split)
        if split not in rates:
            continue
        index = np.flatnonzero(data.split == split)
        smoothed_scores = SmoothedScores(sub, co_baseline=None if base is None else base.co_source(index))
        for start in range(0, sub.n_trials, M.BLOCK_TRIALS):  # baseline rates are made one block at a time
            smoothed_scores.add(rates[split][start : start + M.BLOCK_TRIALS])
        out.update({f"{split}_{k}": v for k, v in smoothed_scores.result().items()})
        lag = int(round(config.eval.behavior_lag_ms / data.bin_ms))
        # A lag as long as the trial leaves no (rate, behaviour) pair inside any trial: no score.
        if decode_behavior and "train" in rates and split != "train" and 0 <= lag < data.n_time:
            out[f"{split}_behavior_r2"] = M.vel_r2(rates["train"], data.subset("train").behavior, rates[split], sub.behavior, lag_bins=lag)
        if decode and data.conditions is not None:
            out[f"{split}_psth_r2"] = M.psth_r2(rates[split], sub.counts, sub.conditions, data.bin_ms, config.eval.psth_sigma_ms)
        window = default_forecast_window(data.n_time, config)
        if forecast and window is not None:  # else no fp-bps
            context, horizon = window
            scores = ForecastScores(sub, context, horizon,
                                    fp_baseline=None if base is None else base.fp_source(index, context, horizon))
            for part in iter_forecast(model, sub.counts[:, :context], horizon, n_samples=config.eval.samples,
                                      batch_size=config.train.batch_size):
                scores.add(part["rates_mean"])
            out.update({f"{split}_{k}": v for k, v in scores.result().items()})
    return {k: float(v) for k, v in out.items()}


def score_smoothed(rates: np.ndarray, data: SpikeData, baselines: bool = False) -> dict:
    """co-bps on held-out neurons, and test-retest bps when the data hold a second draw; with
    `baselines`, co_baseline_bps of the smoothing baseline fitted on `data`'s train split."""
    scores = SmoothedScores(data, co_baseline=baselines_for(data).co_source(np.arange(data.n_trials)) if baselines else None)
    for start in range(0, len(rates), M.BLOCK_TRIALS):
        scores.add(rates[start : start + M.BLOCK_TRIALS])
    return scores.result()


def score_forecast(rates: np.ndarray, data: SpikeData, context: int, baselines: bool = False) -> dict:
    """fp-bps of forecast rates [trial, horizon, neuron] against the observed bins after the context;
    with `baselines`, fp_baseline_bps of the fp baseline of `data` (all its trials)."""
    horizon = rates.shape[1]
    source = baselines_for(data).fp_source(np.arange(data.n_trials), context, horizon) if baselines else None
    scores = ForecastScores(data, context, horizon, fp_baseline=source)
    for start in range(0, len(rates), M.BLOCK_TRIALS):
        scores.add(rates[start : start + M.BLOCK_TRIALS])
    return scores.result()


class SmoothedScores:
    """score_smoothed fed block by block: add(rates_mean [block, time, neuron]) for consecutive
    trials of `data`, then result(). trials: optional [trial] mask of the trials scored (one split),
    the others' rates are passed over. The inputs (counts, truth) are used in place, never copied.
    co_baseline: optional callable(positions) -> baseline rates [len(positions), time, neuron] of
    those trials of `data` (Baselines.co_source), scored as co_baseline_bps on the same trials."""

    def __init__(self, data: SpikeData, trials: np.ndarray | None = None, co_baseline=None):
        self.data, self.trials = data, trials
        self.scores = {}
        self.baseline = co_baseline if data.heldout.any() else None
        self.position = 0
        if data.heldout.any():
            self.scores["co_bps"] = M.BitsPerSpike(data.counts, neurons=data.heldout, trials=trials)
        if self.baseline is not None:
            self.scores["co_baseline_bps"] = M.BitsPerSpike(data.counts, neurons=data.heldout, trials=trials)
        if "retest_counts" in data.truth:
            self.scores["retest_bps"] = M.BitsPerSpike(data.truth["retest_counts"], trials=trials)

    def add(self, rates: np.ndarray) -> None:
        start, self.position = self.position, self.position + len(rates)
        for key, score in self.scores.items():
            if key != "co_baseline_bps":
                score.add(rates)
        if self.baseline is not None:
            self.scores["co_baseline_bps"].add(_baseline_block(self.baseline, start, self.position, self.trials,
                                                               rates.shape))

    def result(self) -> dict:
        out = {k: score.value() for k, score in self.scores.items()}
        if "retest_counts" in self.data.truth:
            out["retest_oracle_bps"] = M.bits_per_spike_blocked(self.data.truth["rates"], self.data.truth["retest_counts"],
                                                                self.trials)
        return out


class ForecastScores:
    """score_forecast fed block by block: add(rates_mean [block, horizon, neuron]) of forecasts after
    the first `context` bins of consecutive trials of `data`, then result(); no scores when the
    trials end before context + horizon. fp_baseline: optional callable(positions) -> baseline rates
    [len(positions), horizon, neuron] for those trials (Baselines.fp_source): fp_baseline_bps."""

    def __init__(self, data: SpikeData, context: int, horizon: int, fp_baseline=None):
        self.observed = data.counts[:, context : context + horizon]  # a view
        self.scored = self.observed.shape[1] == horizon
        self.fp = M.BitsPerSpike(self.observed) if self.scored else None
        self.baseline = fp_baseline if self.scored else None
        self.fp_baseline = M.BitsPerSpike(self.observed) if self.baseline is not None else None
        self.position = 0
        self.truth = data.truth["rates"][:, context : context + horizon] if "rates" in data.truth else None

    def add(self, rates: np.ndarray) -> None:
        start, self.position = self.position, self.position + len(rates)
        if self.scored:
            self.fp.add(rates)
        if self.baseline is not None:
            self.fp_baseline.add(_baseline_block(self.baseline, start, self.position, None, rates.shape))

    def result(self) -> dict:
        if not self.scored:
            return {}
        out = {"fp_bps": self.fp.value()}
        if self.fp_baseline is not None:
            out["fp_baseline_bps"] = self.fp_baseline.value()
        if self.truth is not None:
            out["fp_oracle_bps"] = M.bits_per_spike_blocked(self.truth, self.observed)
        return out


def _baseline_block(source, start: int, stop: int, trials: np.ndarray | None, shape) -> np.ndarray:
    """Baseline rates for trials start..stop-1 shaped like the model's block; only the trials of the
    `trials` mask are computed (the others are passed over by the scores: ones)."""
    keep = np.arange(start, stop) if trials is None else start + np.flatnonzero(trials[start:stop])
    if len(keep) == stop - start:
        return source(keep)
    block = np.ones(shape)
    block[keep - start] = source(keep) if len(keep) else 0.0
    return block


class Baselines:
    """The trivial baselines of one recording `data` (all its trials; outputs/baselines.py), each
    fitted on first use and kept (baselines_for keeps one per SpikeData):

    fp: the leave-one-out PSTH over all other trials (smoothing width chosen on the train split) for
        trial-aligned windows, each neuron's train-split mean rate for windows chopped out of a
        continuous recording (provenance["trials_from"] == "chopped");
    co: the smoothing baseline, a Poisson GLM from smoothed held-in counts to the held-out neurons
        fitted on the train split (None without held-out neurons or training trials).

    fp_source / co_source give callables(positions) -> rates for the trials index[positions] of
    `data`: what ForecastScores / SmoothedScores take, one block at a time."""

    def __init__(self, data: SpikeData):
        import weakref

        self._data = weakref.ref(data)  # no cycle: baselines_for's cache must not keep a recording alive
        self.aligned = B.trial_aligned(data.provenance)
        self.source = str(data.provenance.get("trials_from", "trials"))

    @property
    def data(self) -> SpikeData:
        data = self._data()
        if data is None:
            raise RuntimeError("the recording of these baselines is gone")
        return data

    @functools.cached_property
    def fp(self):
        """("psth", sigma_bins, PsthPool) or ("mean", [neuron] rates), or None (no training trials)."""
        data = self.data
        train = data.split == "train"
        if self.aligned:
            sigma, _ = B.choose_psth_sigma(data.counts, train) if train.sum() >= 2 else (0.0, {})
            return "psth", sigma, B.psth_pool(data.counts)
        if not train.any():
            return None
        return "mean", B.mean_rate(data.counts, train)

    @functools.cached_property
    def co(self):
        data = self.data
        return B.fit_smoothing_glm(data.counts, data.heldout, data.split == "train", data.bin_ms)

    def fp_source(self, index: np.ndarray, context: int, horizon: int):
        """callable(positions) -> fp baseline rates [len(positions), horizon, neuron] of the trials
        index[positions] at bins context .. context + horizon - 1; None without a baseline."""
        if self.fp is None:
            return None
        counts = self.data.counts

        def rates(positions: np.ndarray) -> np.ndarray:
            if self.fp[0] == "mean":
                return np.broadcast_to(self.fp[1], (len(positions), horizon, counts.shape[2]))
            return B.loo_psth(counts, index[positions], self.fp[1], self.fp[2])[:, context : context + horizon]

        return rates

    def co_source(self, index: np.ndarray):
        """callable(positions) -> co baseline rates [len(positions), time, neuron] (held-out columns
        from the GLM, held-in ones 1: never scored) of the trials index[positions]; None without one."""
        if not self.data.heldout.any() or self.co is None:
            return None
        counts, model = self.data.counts, self.co

        def rates(positions: np.ndarray) -> np.ndarray:
            rows = index[positions]
            out = np.ones((len(rows), counts.shape[1], counts.shape[2]))
            out[..., model.heldout] = B.smoothing_glm_rates(model, counts[rows])
            return out

        return rates

    def describe(self) -> dict:
        """{"fp": ..., "co": ...}: which baseline each score used (only those computed so far)."""
        out = {}
        if self.__dict__.get("fp") is not None:
            if self.fp[0] == "psth":
                out["fp"] = (f"{B.FP_PSTH} (each trial predicted by all other trials of the recording at the same bins, "
                             f"plus one pseudo-trial at the neuron's mean rate; Gaussian smoothing sigma {self.fp[1]:g} "
                             f"bins chosen on the train split; trial-aligned windows from '{self.source}')")
            else:
                out["fp"] = f"{B.FP_MEAN} (each neuron's mean over the training trials; windows chopped from the recording)"
        if self.__dict__.get("co") is not None:
            out["co"] = self.co.describe()
        return out


_BASELINES: dict[int, Baselines] = {}


def baselines_for(data: SpikeData) -> Baselines:
    """The Baselines of `data`, one per SpikeData object while it lives (so the per-epoch, final and
    summary calls share one fit)."""
    import weakref

    key = id(data)
    entry = _BASELINES.get(key)
    if entry is None or entry._data() is not data:
        entry = _BASELINES[key] = Baselines(data)
        weakref.finalize(data, _BASELINES.pop, key, None)
    return entry


def trial_labels(data: SpikeData, scored: str = "all") -> dict[str, str]:
    """How verdicts name the judged trials: {"valid": "12 valid trials", ..., "": <the scored trials>}."""
    labels = {s: f"{int(np.sum(data.split == s))} {s} trials" for s in ("train", "valid", "test")}
    labels[""] = f"all {data.n_trials} trials" if scored == "all" else labels.get(scored, f"the {scored} trials")
    return labels


def baseline_summary(sessions, metrics: dict, meta: bool = False) -> dict:
    """{"baselines": which baseline each score used, "verdicts": one line per score saying whether the
    model beats it} for a summary (fit: the test split when it has trials, else valid). sessions: the
    SpikeData of a single-session run (or a list of one), or every session of a meta run with
    meta=True (metrics keyed "session/metric"); metrics from evaluate (with baselines)."""
    sessions = sessions if isinstance(sessions, (list, tuple)) else [sessions]
    if meta:
        described = {d.session: baselines_for(d).describe() for d in sessions}
        labels = {d.session: trial_labels(d) for d in sessions}
    else:
        described, labels = baselines_for(sessions[0]).describe(), trial_labels(sessions[0])
    return {"baselines": described, "verdicts": B.verdicts(metrics, described, labels)}


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


def _open_output(out: Path, fmt: str, rows: SpikeData, overwrite: bool, module: str, start_s: np.ndarray | None,
                 offsets: dict[str, int] | None = None):
    """The writer of a command's results, used as `with ... as sink:` then sink.append(block of
    trials) / sink.write(name, whole array) / sink.set_attrs(attrs): an H5Stream for --format h5, which
    writes each block as it comes; for --format nwb a _NwbOutput, which gathers them in memory."""
    from xfads_cli.outputs.h5 import H5Stream

    if fmt == "h5":
        return H5Stream(out, n_rows=rows.n_trials, overwrite=overwrite)
    source = Path(rows.provenance.get("path", ""))
    if rows.provenance.get("format") != "nwb" or start_s is None:
        raise UsageError("--format nwb needs an NWB input file (trial times are taken from it); use --format h5")
    return _NwbOutput(source, Path(out), module, start_s, rows.bin_ms, overwrite, offsets)


class _NwbOutput:
    """--format nwb, NOT streamed: pynwb writes each TimeSeries from one array, so the blocks are
    gathered in memory and the copy of the input with the module added is written when the `with`
    block ends without an exception. Series are the [trial, time, dim] arrays, in the order given."""

    def __init__(self, source: Path, out: Path, module: str, start_s: np.ndarray, bin_ms: float, overwrite: bool,
                 offsets: dict[str, int] | None = None):
        self.source, self.path, self.module, self.offsets = source, out, module, offsets
        self.start_s, self.bin_ms, self.overwrite = start_s, bin_ms, overwrite
        self.parts: list[dict] = []
        self.whole: dict[str, np.ndarray] = {}
        self.attrs: dict = {}

    def __enter__(self) -> "_NwbOutput":
        return self

    def append(self, part: dict) -> None:
        self.parts.append(part)

    def write(self, name: str, value) -> None:
        self.whole[name] = np.asarray(value)

    def set_attrs(self, attrs: dict) -> None:
        self.attrs = attrs

    def arrays(self) -> dict[str, np.ndarray]:
        return _concat(self.parts) | self.whole

    def __exit__(self, exc_type, exc, tb) -> bool:
        if exc_type is None:
            from xfads_cli.outputs.nwb import write_nwb_copy

            series = {k: v for k, v in self.arrays().items() if v.ndim == 3}
            write_nwb_copy(self.source, self.path, self.module, series, self.start_s, self.bin_ms,
                           f"xfads {self.module}", self.attrs, self.overwrite, offsets=self.offsets)
        return False


def _whole_arrays(sink, names: list[str]) -> dict[str, np.ndarray]:
    """Whole arrays of a written output, for --plot (plots average over all trials): the NWB output
    still has them in memory, an HDF5 output is read back (so --plot costs memory in the trials)."""
    if isinstance(sink, _NwbOutput):
        arrays = sink.arrays()
        return {name: arrays[name] for name in names}
    import h5py

    with h5py.File(sink.path, "r") as f:
        return {name: f[name][()] for name in names}


def run_inputs(run_path: Path, *data_paths: Path) -> list[Path]:
    """The files a command reading the run `run_path` (a directory or a .pt file) and `data_paths` must
    never write to: the recordings and the checkpoints."""
    run_path = Path(run_path)
    return [*map(Path, data_paths), run_path, run_path / "best.pt", run_path / "last.pt"]


def _check_format(out: Path, fmt: str, overwrite: bool, inputs=()) -> None:
    from xfads_cli.outputs.h5 import check_output

    if fmt not in ("h5", "nwb"):
        raise UsageError(f"--format must be h5 or nwb, got '{fmt}'")
    check_output(out, overwrite, inputs)


def smooth(run_path: Path, data_path: Path, out: Path, *, split: str = "all", mode: str | None = None,
           samples: int | None = None, fmt: str = "h5", overwrite: bool = False, overrides=(), device: str = "auto",
           plot: bool = False) -> dict:
    """Smoothed latents and rates for the trials of `split`; writes `out`, returns a summary.

    Trials are smoothed `train.batch_size` at a time and each block is written to the HDF5 output and
    scored as it comes, so memory does not grow with the trials beyond the recording itself, with
    three exceptions: --format nwb (gathered in memory, see _NwbOutput), --plot (reads the output
    back) and --split all on data with behaviour or conditions, where rates_mean of every trial
    (float32, as large as the counts) is kept for the behavior_r2 / psth_r2 decoders of `evaluate`."""
    if split not in ("all", "train", "valid", "test"):
        raise UsageError(f"--split must be all, train, valid or test, got '{split}'")
    if mode not in (None, "smoother", "filter", "two_filter"):
        raise UsageError(f"--mode must be smoother, filter or two_filter, got '{mode}'")
    if samples is not None and samples < 1:
        raise UsageError("--samples must be >= 1")
    _check_format(out, fmt, overwrite, run_inputs(run_path, data_path))
    run = load_run(run_path, device)
    data = load_data_for_run(data_path, run, overrides)
    rows = data.subset(split)
    if rows.n_trials == 0:
        raise UsageError(f"{Path(data_path).name} has no '{split}' trials; use --split all")
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
    with _open_output(out, fmt, rows, overwrite, "xfads_smooth", rows.start_s) as sink:
        start = 0
        for part in iter_smooth(model, rows.counts, mode=mode, n_samples=samples, batch_size=run.config.train.batch_size):
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
        judged = _judge(base, metrics, trial_labels(data, split))
        sink.set_attrs(_output_attrs(run, rows, "smooth", metrics) | judged | {"mode": mode or run.config.model.mode,
                                                                               "split_selected": split})
    summary = {"out": str(sink.path), "trials": rows.n_trials, "bins": rows.n_time, "metrics": metrics} | judged
    if not any(np.isfinite(v) for v in metrics.values()):
        summary["notes"] = [
            "no quality number for smoothing here: the run has no held-out neurons and the file no ground truth, "
            "and rates scored on the counts the encoder read reward fitting noise; fit with --set "
            "data.heldout_fraction=0.2 for co-bps, or run 'xfads forecast' for fp-bps next to the PSTH baseline"]
    if plot:
        from xfads_cli.outputs.plots import plot_latents, plot_psth

        arrays = _whole_arrays(sink, ["rates_mean", "rates_q05", "rates_q95", "latents_mean", "latents_var"])
        truth = rows.truth.get("latents")
        summary["plots"] = [str(plot_latents(arrays["latents_mean"], Path(out).with_suffix(".latents.png"),
                                             variances=arrays["latents_var"], truth=truth))]
        if rows.provenance.get("trials_from") != "chopped":  # a PSTH of windows cut at arbitrary times means nothing
            summary["plots"].insert(0, str(plot_psth(
                rows.counts, arrays["rates_mean"], arrays["rates_q05"], arrays["rates_q95"], rows.bin_ms,
                Path(out).with_suffix(".psth.png"), conditions=rows.conditions)))
    return summary


def forecast(run_path: Path, data_path: Path, out: Path, *, context: int | None = None, horizon: int | None = None,
             context_ms: float | None = None, horizon_ms: float | None = None, split: str = "all",
             samples: int = 100, mode: str = "filter", keep_samples: bool = False, fmt: str = "h5",
             overwrite: bool = False, overrides=(), device: str = "auto", plot: bool = False) -> dict:
    """Forecast `horizon` bins after the first `context` bins of each trial window; writes `out`.

    Trials are forecast `train.batch_size` at a time and each block is written to the HDF5 output and
    scored as it comes: memory does not grow with the trials beyond the recording itself, except with
    --format nwb (gathered in memory, see _NwbOutput) and --plot (reads the output back)."""
    if split not in ("all", "train", "valid", "test"):
        raise UsageError(f"--split must be all, train, valid or test, got '{split}'")
    if mode not in ("filter", "smoother"):
        raise UsageError(f"--mode must be filter (causal context, default) or smoother, got '{mode}'")
    _check_format(out, fmt, overwrite, run_inputs(run_path, data_path))
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
    base = baselines_for(data)
    rows_index = np.arange(data.n_trials) if split == "all" else np.flatnonzero(data.split == split)
    scores = ForecastScores(rows, context, horizon, fp_baseline=base.fp_source(rows_index, context, horizon))
    # per-trial inputs written next to the results, block by block (views of the recording, no copies)
    inputs = {"counts": rows.counts[:, context : context + horizon], "context_counts": rows.counts[:, :context]}
    if "rates" in rows.truth:
        inputs["true_rates"] = rows.truth["rates"][:, context : context + horizon]
    start_s = None if rows.start_s is None else rows.start_s + context * rows.bin_ms / 1000.0
    # start_s is the first forecast bin's; the context counts come before it
    with _open_output(out, fmt, rows, overwrite, "xfads_forecast", start_s, {"context_counts": -context}) as sink:
        start = 0
        torch.manual_seed(run.config.seed)  # the filter's and rollouts' draws: the same file every time
        for part in iter_forecast(session_model(run, data), inputs["context_counts"], horizon, n_samples=samples,
                                  mode=mode, batch_size=run.config.train.batch_size, keep_samples=keep_samples):
            stop = start + len(part["rates_mean"])
            scores.add(part["rates_mean"])
            sink.append(part | {k: v[start:stop] for k, v in inputs.items()})
            start = stop
        metrics = {k: float(v) for k, v in scores.result().items()}
        for name, value in (("trial_ids", rows.trial_ids), ("split", rows.split), ("unit_ids", rows.unit_ids.astype(str)),
                            ("start_s", start_s)):
            if value is not None:
                sink.write(name, value)
        judged = _judge(base, metrics, trial_labels(data, split))
        sink.set_attrs(_output_attrs(run, rows, "forecast", metrics) | judged | {
            "context_bins": context, "horizon_bins": horizon, "samples": samples, "mode": mode, "split_selected": split})
    summary = {"out": str(sink.path), "trials": rows.n_trials, "context_bins": context, "horizon_bins": horizon,
               "metrics": metrics} | judged
    if plot:
        from xfads_cli.outputs.plots import plot_forecast

        arrays = _whole_arrays(sink, ["rates_mean", "rates_q05", "rates_q95"])
        summary["plots"] = [str(plot_forecast(
            inputs["context_counts"], inputs["counts"], arrays["rates_mean"], arrays["rates_q05"], arrays["rates_q95"],
            rows.bin_ms, Path(out).with_suffix(".forecast.png")))]
    return summary


def _judge(base: Baselines, metrics: dict, labels: dict) -> dict:
    """{"baselines": ..., "verdicts": [...]} for a command's summary and output attributes."""
    described = base.describe()
    return {"baselines": described, "verdicts": B.verdicts(metrics, described, labels)}


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
