"""The public `Run` and the functions that make one: `fit` (`xfads fit`, fitting.run_fit), `load_run`
(a run directory or .pt checkpoint, runs/run.py), and `simulate` (`xfads simulate`). torch and the
model are imported when one of them is called, not when this module is imported.
"""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path
from typing import Mapping, Sequence, Union

import numpy as np

from xfads_cli.api.results import Forecast, Smoothed
from xfads_cli.errors import UsageError

PathLike = Union[str, Path]
Overrides = Union[Mapping[str, object], Sequence[str], None]


def set_items(overrides: Overrides) -> list[str]:
    """{'model.latent_dim': 4, 'data.split': [0.7, 0.1, 0.2]} (or ['model.latent_dim=4', ...]) -> the
    CLI's --set items (values as YAML: JSON for anything but a string)."""
    if overrides is None:
        return []
    if isinstance(overrides, str):
        raise UsageError(f"overrides: a dict {{'section.key': value}} or a list of 'section.key=value', got the "
                         f"string {overrides!r}")
    if isinstance(overrides, Mapping):
        return [f"{k}={v if isinstance(v, str) else json.dumps(v)}" for k, v in overrides.items()]
    return [str(item) for item in overrides]


class Run:
    """A fitted run: its model, config and training record, applied to recordings with `smooth` and
    `forecast`. Made by `xfads.fit(...)` or `xfads.load_run(path)`.

        run.path        the run directory (or the .pt checkpoint it was loaded from)
        run.config      the resolved config (xfads_cli.config.Config; sections data, model, train, eval, seed)
        run.summary     summary.json as a dict (None for a bare .pt checkpoint)
        run.metrics     metrics.csv: one dict per epoch (numbers as floats, missing ones NaN)
    """

    def __init__(self, inner, path: Path):
        self._run, self.path = inner, Path(path)

    def __repr__(self) -> str:
        return f"xfads.Run({str(self.path)!r}, kind={self.config.model.kind!r}, checkpoint={self._run.path.name!r})"

    @property
    def config(self):
        return self._run.config

    @property
    def checkpoint(self) -> Path:
        """The checkpoint file the model was loaded from (best.pt, else last.pt)."""
        return self._run.path

    @property
    def summary(self) -> dict | None:
        path = self.path / "summary.json"
        return json.loads(path.read_text()) if path.is_file() else None

    @property
    def metrics(self) -> list[dict]:
        path = self.path / "metrics.csv"
        if not path.is_file():
            return []
        with open(path, newline="") as f:
            return [{k: _number(v) for k, v in row.items()} for row in csv.DictReader(f)]

    def smooth(self, data: PathLike, *, split: str = "all", mode: str | None = None, samples: int | None = None,
               windows: bool = False) -> Smoothed:
        """Smoothed latents and rates of `data` (a path or URL of a recording of the run's neurons), as
        `xfads smooth RUN DATA --split SPLIT` computes them (the same numbers). A recording without trials
        is smoothed whole, one trajectory per segment on its own clock (layout 'continuous'), unless
        `windows`. mode: smoother | filter | two_filter (default: the run's); samples: posterior samples."""
        from xfads_cli.api.apply import check_options, smooth_recording, smooth_trials
        from xfads_cli.data.opened import open_file
        from xfads_cli.data.source import parse_source, source_name
        from xfads_cli.runs import read_data_for_run, read_recording_for_run, recording_model

        check_options(split, mode, samples, (None, "smoother", "filter", "two_filter"))
        source = parse_source(str(data))
        with open_file(source) as f:
            recording = None if windows else read_recording_for_run(f, self._run)
            if recording is not None:
                if split != "all":
                    raise UsageError(f"split='{split}' applies to trials, and {source_name(source)} has none: it is "
                                     "smoothed whole; drop split, or pass windows=True to smooth its windows")
                model = recording_model(self._run, f)
            else:
                trials = read_data_for_run(f, self._run)
        if recording is not None:
            return smooth_recording(self._run, recording, model, mode=mode, samples=samples)
        return smooth_trials(self._run, trials, source_name(source), split=split, mode=mode, samples=samples)

    def forecast(self, data: PathLike, *, context: int, horizon: int, split: str = "all", samples: int = 100,
                 mode: str = "filter", at_s: Sequence[float] | None = None) -> Forecast:
        """Forecast `horizon` bins after the first `context` bins of each trial of `split`, as
        `xfads forecast RUN DATA --context C --horizon H --split SPLIT` does (the same numbers; the CLI's
        forecast-grid scores are not computed). at_s: times (s) of a recording without trials to forecast
        from instead, each after the `context` bins before it (`--at-s`). mode: filter (a causal
        context, default) | smoother; samples: forecast samples per trial."""
        from xfads_cli.api.apply import check_options, forecast_at, forecast_trials
        from xfads_cli.commands.forecast import extend_windows, parse_times
        from xfads_cli.data.opened import open_file
        from xfads_cli.data.source import parse_source, source_name
        from xfads_cli.runs import read_data_for_run, read_recording_for_run, recording_model

        check_options(split, mode, samples, ("filter", "smoother"))
        for name, value in (("context", context), ("horizon", horizon)):
            if not isinstance(value, (int, np.integer)) or value < 1:
                raise UsageError(f"{name} must be a whole number of bins >= 1, got {value!r}")
        times = None if at_s is None else parse_times(",".join(str(float(t)) for t in np.atleast_1d(at_s)))
        source = parse_source(str(data))
        with open_file(source) as f:
            if times is not None:
                recording = read_recording_for_run(f, self._run)
                if recording is None:
                    raise UsageError(f"at_s needs a recording without trials, and {source_name(source)} is cut into "
                                     "trials by the run's data options; drop at_s to forecast after each trial's context")
                if split != "all":
                    raise UsageError(f"split='{split}' applies to trials; forecasts at given times have none")
                model = recording_model(self._run, f)
            else:
                trials = read_data_for_run(f, self._run)
                if context + horizon > trials.n_time:
                    trials = extend_windows(f, self._run, trials, context + horizon)
        if times is not None:
            return forecast_at(self._run, recording, model, times, context=int(context), horizon=int(horizon),
                               samples=samples, mode=mode)
        return forecast_trials(self._run, trials, source_name(source), context=int(context), horizon=int(horizon),
                               split=split, samples=samples, mode=mode)


def _number(text: str):
    try:
        return float(text) if text != "" else math.nan
    except ValueError:
        return text


def load_run(path: PathLike, *, device: str = "auto", overrides: Overrides = None) -> Run:
    """The run in `path` (a run directory of `xfads fit`, or a .pt checkpoint): its best.pt (else
    last.pt) model on `device` (auto | cpu | cuda[:i]). overrides: how recordings are read and drawn
    from, as the CLI's --set on smooth/forecast (data.*, eval.*, seed, train.batch_size, model.mode,
    model.samples), e.g. {'data.bin_ms': 20}."""
    from xfads_cli.runs import load_run as load

    path = Path(path)
    if not path.exists():
        raise UsageError(f"{path} does not exist; give a run directory written by xfads.fit / 'xfads fit' or a .pt file")
    return Run(load(path, device, overrides=set_items(overrides)), path)


def fit(data: PathLike | Sequence[PathLike], out: PathLike, *, config: PathLike | None = None,
        overrides: Overrides = None, seed: int | None = None, max_epochs: int | None = None,
        time_limit: float | None = None, device: str = "auto", threads: int | str | None = None,
        overwrite: bool = False, resume: bool | str = False, progress: bool = False,
        log: Sequence[str] = ()) -> Run:
    """`xfads fit DATA --out OUT`: fit XFADS to a recording (a path or URL; several, or model.kind=meta:
    the multi-session model) and write the run directory `out`; returns the fitted Run.

    config: a YAML config file; overrides: {'section.key': value} applied after it (--set); seed,
    max_epochs, time_limit (minutes) as the CLI's options; threads: 'auto', N, or None ($XFADS_THREADS,
    else auto); resume: True / 'auto' as --resume / --resume-auto; progress: show the progress bar
    (stderr); log: experiment trackers as --log ('tensorboard', 'mlflow', 'csv'; README "Experiment tracking"). Raises xfads_cli.errors.UsageError on bad input (nothing written) and RunFailure when
    training fails."""
    from xfads_cli.config import load_config, option_items
    from xfads_cli.data.source import parse_source
    from xfads_cli.fitting import run_fit
    from xfads_cli.progress import EpochProgress

    paths = [data] if isinstance(data, (str, Path)) else list(data)
    # as cli.py's fit: the options are --set items applied last
    cfg = load_config(config, [*set_items(overrides), *option_items(seed, max_epochs, time_limit)])
    with EpochProgress(cfg.train.max_epochs, quiet=not progress) as bar:
        run_fit([parse_source(str(p)) for p in paths], cfg, Path(out), log=tuple(log), device=device, overwrite=overwrite,
                resume=resume, max_epochs=max_epochs, progress=bar, threads=None if threads is None else str(threads),
                handle_signals=False)
    return load_run(out, device=device)


def simulate(system: str, out: PathLike, *, neurons: int = 50, trials: int = 100, bins: int = 100,
             bin_ms: float = 20.0, seed: int = 0, base_rate: float = 10.0, param: float | None = None,
             overwrite: bool = False) -> Path:
    """`xfads simulate SYSTEM --out OUT`: a synthetic recording with known latents and rates (lorenz, vdp,
    ring, duffing, hopf, task) written to `out` (.nwb or .h5); returns its path."""
    from xfads_cli.commands.simulate import simulate as write

    write(system, Path(out), neurons=neurons, trials=trials, bins=bins, bin_ms=bin_ms, seed=seed,
          base_rate_hz=base_rate, param=param, overwrite=overwrite)
    return Path(out)
