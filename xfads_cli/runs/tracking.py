"""Experiment tracking: `xfads fit --log tensorboard|mlflow|csv` (repeatable) and `xfads sweep --log ...`.

What every tracker gets, as training goes (rank 0 only):
    per epoch    the numeric columns of metrics.csv (train_loss, valid_loss, lr, seconds, the validation
                 scores), at step = the epoch number (from 0, as in metrics.csv)
    at the start the resolved config as hyperparameters (dotted keys: train.lr, model.latent_dim, ...;
                 a sweep trial's TensorBoard hparams are its sampled values) and as text
    at the end   best_score, best_epoch and the final metrics of summary.json (as final/<metric>), and the
                 training plot (training.png, with --plot; MLflow also gets summary.json and config.yaml)

Where it goes:
    tensorboard  RUN_DIR/tensorboard/ (event files): `tensorboard --logdir RUN_DIR`, or --logdir SWEEP_DIR
                 for all the trials of a sweep (one run each, trials/NNNN/tensorboard, with its hparams)
    mlflow       $MLFLOW_TRACKING_URI if set, else sqlite:///RUN_DIR/mlflow.db (a sweep: SWEEP_DIR/mlflow.db)
                 with artifacts in mlartifacts/ beside it; experiment $MLFLOW_EXPERIMENT_NAME, else "xfads"
                 (a sweep: the sweep directory's name, one run per trial)
    csv          metrics.csv, which every run writes anyway: accepted so that scripts may list it

A resumed run (--resume, a requeued sweep trial) continues in the same place: TensorBoard's steps go
on from the epoch it resumes at (events of later epochs from the interrupted attempt are purged), and
the MLflow run recorded in RUN_DIR/tracking.json is reopened. The trackers are imported only when asked
for; a tracker failing during training is dropped with a warning (metrics.csv still has every epoch).
"""

from __future__ import annotations

import importlib.util
import json
import math
import os
import re
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

from xfads_cli.atomic import atomic_path
from xfads_cli.errors import RunFailure, UsageError

LOGGERS = ("tensorboard", "mlflow", "csv")
TENSORBOARD_DIR = "tensorboard"
MLFLOW_DB = "mlflow.db"
MLFLOW_ARTIFACTS = "mlartifacts"
STATE_FILE = "tracking.json"
# What the trackers may add to a run directory (a run that resumes or starts afresh looks past them)
TRACKING_FILES = (TENSORBOARD_DIR, MLFLOW_DB, MLFLOW_ARTIFACTS, STATE_FILE)
ARTIFACTS = ("summary.json", "training.png")  # config.yaml is logged at the start


def _installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def _needs_database(uri: str | None) -> bool:
    """Whether MLflow's SQL store (sqlalchemy, alembic) serves this tracking URI (unset: ours, sqlite)."""
    return uri is None or uri.split(":", 1)[0].split("+", 1)[0] in ("sqlite", "postgresql", "mysql", "mssql")


def check_loggers(names) -> tuple[str, ...]:
    """The --log values (repeatable, or comma-separated), checked: a known name whose packages are
    installed, without importing them (a UsageError naming the extra otherwise)."""
    chosen: list[str] = []
    for item in names or ():
        for name in str(item).split(","):
            name = name.strip().lower()
            if name and name not in LOGGERS:
                raise UsageError(f"--log {name}: choose tensorboard, mlflow or csv (repeat --log for several)")
            if name and name not in chosen:
                chosen.append(name)
    for name in chosen:
        needed = {"tensorboard": ["tensorboard"], "mlflow": ["mlflow"]}.get(name, [])
        if name == "mlflow" and _needs_database(os.environ.get("MLFLOW_TRACKING_URI") or None):
            needed += ["sqlalchemy", "alembic"]
        missing = [m for m in needed if not _installed(m)]
        if missing:
            raise UsageError(f"--log {name} needs {' and '.join(missing)}: pip install 'xfads[{name}]'")
    return tuple(chosen)


@dataclass(frozen=True)
class Target:
    """Where a run logs besides RUN_DIR. store: the directory of the default MLflow store (None: RUN_DIR);
    experiment: the MLflow experiment unless $MLFLOW_EXPERIMENT_NAME; run_name (None: RUN_DIR's name);
    params: the values a sweep trial sampled (TensorBoard's hparams; None: the whole config); tags."""

    store: Path | None = None
    experiment: str = "xfads"
    run_name: str | None = None
    params: dict | None = None
    tags: dict = field(default_factory=dict)


def flatten(config: dict, prefix: str = "") -> dict:
    """{"train": {"lr": 0.01}} -> {"train.lr": 0.01}; lists and None as their JSON text."""
    flat = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(flatten(value, f"{name}."))
        elif isinstance(value, (bool, int, float, str)):
            flat[name] = value
        else:
            flat[name] = json.dumps(value)
    return flat


def scalars(values: dict) -> dict:
    """The finite numbers of a record (metrics.csv row, summary metrics)."""
    out = {}
    for key, value in values.items():
        if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
            out[key] = float(value)
    return out


class Tracking:
    """The trackers of one run. start() once RUN_DIR exists, on_epoch() after each epoch's files are
    written, finish() when summary.json is, close() always (with the exception that ended the run)."""

    def __init__(self, loggers, out: Path, target: Target | None = None):
        self.loggers = check_loggers(loggers)
        self.out, self.target = Path(out), target or Target()
        self.trackers: list = []

    def __bool__(self) -> bool:
        return bool(self.loggers)

    def start(self, config: dict, done_epochs: int | None = None) -> None:
        """done_epochs: the epochs of the run being resumed (None: a new run)."""
        state = _read_state(self.out) if done_epochs is not None else {}
        name = self.target.run_name or self.out.resolve().name
        text = _config_text(config)
        for logger in self.loggers:
            try:
                if logger == "tensorboard":
                    tracker = TensorBoard(self.out / TENSORBOARD_DIR, done_epochs)
                elif logger == "mlflow":
                    tracker = MLflow(self.target.store or self.out, self.target.experiment, name, state.get("mlflow"))
                else:
                    continue
                self.trackers.append(tracker)
                tracker.start(flatten(config), self.target.params, text, self.target.tags,
                              resumed=done_epochs is not None)
            except Exception as exc:  # noqa: BLE001 - e.g. an unreachable MLFLOW_TRACKING_URI: before training
                raise RunFailure(f"--log {logger} could not start: {type(exc).__name__}: "
                                 f"{' '.join(str(exc).split())[:300]}") from None
        saved = {k: v for k, v in ((t.key, t.state()) for t in self.trackers) if v}
        if saved:
            with atomic_path(self.out / STATE_FILE) as tmp:
                tmp.write_text(json.dumps(saved, indent=2))

    def on_epoch(self, record: dict) -> None:
        values = scalars({k: v for k, v in record.items() if k != "epoch"})
        self._each("log", values, int(record["epoch"]))

    def finish(self, summary: dict) -> None:
        values = scalars({"best_score": summary.get("best_score"), "best_epoch": summary.get("best_epoch")})
        values.update({f"final/{k}": v for k, v in scalars(summary.get("metrics", {})).items()})
        files = [self.out / name for name in ARTIFACTS if (self.out / name).is_file()]
        self._each("finish", values, max(int(summary.get("epochs") or 0) - 1, 0), files)

    def close(self, error: BaseException | None = None) -> None:
        status = "FINISHED" if error is None else getattr(error, "tracking_status", None) or (
            "KILLED" if type(error).__name__ in ("Preempted", "KeyboardInterrupt") else "FAILED")
        self._each("close", status)
        self.trackers = []

    def _each(self, method: str, *args) -> None:
        """Call every tracker; one that fails is dropped with a warning, training goes on."""
        for tracker in list(self.trackers):
            try:
                getattr(tracker, method)(*args)
            except Exception as exc:  # noqa: BLE001 - a logging backend must not end a fit
                self.trackers.remove(tracker)
                warnings.warn(f"--log {tracker.key}: {type(exc).__name__}: {' '.join(str(exc).split())[:300]}; "
                              "no more logging to it in this run (metrics.csv has every epoch)")


def _read_state(out: Path) -> dict:
    try:
        return json.loads((out / STATE_FILE).read_text())
    except (OSError, ValueError):
        return {}


def _config_text(config: dict) -> str:
    import yaml

    return yaml.safe_dump(config, sort_keys=False)


class TensorBoard:
    """Event files in RUN_DIR/tensorboard (torch.utils.tensorboard.SummaryWriter)."""

    key = "tensorboard"

    def __init__(self, logdir: Path, done_epochs: int | None):
        from torch.utils.tensorboard import SummaryWriter

        # purge_step: a resumed run hides what an interrupted attempt logged past the epoch it resumes at
        self.writer = SummaryWriter(log_dir=str(logdir), purge_step=done_epochs or None)

    def state(self) -> dict:
        return {}

    def start(self, flat: dict, params: dict | None, text: str, tags: dict, resumed: bool) -> None:
        if resumed:
            return
        from torch.utils.tensorboard.summary import hparams

        chosen = flatten(params) if params is not None else flat
        _, session_start, _ = hparams(chosen, {})
        # only the session's start: TensorBoard's HPARAMS tab then lists every scalar tag as a metric
        self.writer.file_writer.add_summary(session_start)
        self.writer.add_text("config", "```\n" + text + "```", 0)
        for key, value in tags.items():
            self.writer.add_text(str(key), str(value), 0)
        self.writer.flush()

    def log(self, values: dict, step: int) -> None:
        for key, value in values.items():
            self.writer.add_scalar(key, value, step)
        self.writer.flush()

    def finish(self, values: dict, step: int, files: list[Path]) -> None:
        self.log(values, step)
        for path in files:
            if path.suffix == ".png":
                self.writer.file_writer.add_summary(_png_summary(path.stem, path.read_bytes()), step)
        self.writer.flush()

    def close(self, status: str) -> None:  # noqa: ARG002 - the trackers' interface
        self.writer.close()


def _png_summary(tag: str, png: bytes):
    """An image summary of a PNG file as it is (width and height from its IHDR chunk)."""
    from tensorboard.compat.proto.summary_pb2 import Summary

    width, height = int.from_bytes(png[16:20], "big"), int.from_bytes(png[20:24], "big")
    image = Summary.Image(height=height, width=width, colorspace=4, encoded_image_string=png)
    return Summary(value=[Summary.Value(tag=tag, image=image)])


def mlflow_client(store: Path):
    """(MlflowClient, its tracking URI, the artifact location new experiments get (None: the server's
    default)) for $MLFLOW_TRACKING_URI, else for sqlite:///STORE/mlflow.db."""
    import logging

    uri = os.environ.get("MLFLOW_TRACKING_URI") or None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from mlflow.tracking import MlflowClient

        for name in ("mlflow", "alembic"):  # its store's setup would talk on stderr
            logging.getLogger(name).setLevel(logging.WARNING)
        if uri is None:
            store = Path(store).resolve()
            store.mkdir(parents=True, exist_ok=True)
            uri = f"sqlite:///{store / MLFLOW_DB}"
            return MlflowClient(tracking_uri=uri), uri, (store / MLFLOW_ARTIFACTS).as_uri()
        return MlflowClient(tracking_uri=uri), uri, None


def mlflow_experiment(client, name: str, artifacts: str | None) -> str:
    """The id of experiment `name` ($MLFLOW_EXPERIMENT_NAME overrides it), created if need be."""
    name = os.environ.get("MLFLOW_EXPERIMENT_NAME") or name
    found = client.get_experiment_by_name(name)
    if found is not None:
        return found.experiment_id
    try:
        return client.create_experiment(name, artifact_location=artifacts)
    except Exception:  # noqa: BLE001 - another worker created it meanwhile
        found = client.get_experiment_by_name(name)
        if found is None:
            raise
        return found.experiment_id


def metric_name(key: str) -> str:
    """A metric key as MLflow allows it: test_fp_bps@t10 -> test_fp_bps_at_t10."""
    return re.sub(r"[^\w\-. :/]", "_", key.replace("@", "_at_"))


class MLflow:
    """One MLflow run (MlflowClient, no global active run: a sweep worker runs many fits)."""

    key = "mlflow"

    def __init__(self, store: Path, experiment: str, run_name: str, saved: dict | None):
        from mlflow.entities import Metric, Param

        self.Metric, self.Param = Metric, Param
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            self.client, self.uri, artifacts = mlflow_client(store)
            self.run_id = self._reopen(saved)
            if self.run_id is None:
                experiment_id = mlflow_experiment(self.client, experiment, artifacts)
                self.run_id = self.client.create_run(experiment_id, run_name=run_name).info.run_id

    def _reopen(self, saved: dict | None) -> str | None:
        """The run a resumed run logged to, set running again (None: none, or another store's)."""
        if not saved or saved.get("tracking_uri") != self.uri:
            return None
        try:
            self.client.update_run(saved["run_id"], status="RUNNING")
        except Exception:  # noqa: BLE001 - deleted meanwhile: a new run
            return None
        return saved["run_id"]

    def state(self) -> dict:
        return {"tracking_uri": self.uri, "run_id": self.run_id}

    def start(self, flat: dict, params: dict | None, text: str, tags: dict, resumed: bool) -> None:
        from mlflow.entities import RunTag

        run_tags = [RunTag(str(k), str(v)) for k, v in tags.items()]
        if resumed:  # the params are logged already (and may not change)
            self.client.log_batch(self.run_id, tags=run_tags)
            return
        values = [self.Param(k, str(v)[:6000]) for k, v in flat.items()]
        self.client.log_batch(self.run_id, params=values, tags=run_tags)
        self.client.log_text(self.run_id, text, "config.yaml")

    def log(self, values: dict, step: int) -> None:
        stamp = int(time.time() * 1000)
        self.client.log_batch(self.run_id, metrics=[self.Metric(metric_name(k), v, stamp, step)
                                                    for k, v in values.items()])

    def finish(self, values: dict, step: int, files: list[Path]) -> None:
        self.log(values, step)
        for path in files:
            self.client.log_artifact(self.run_id, str(path))

    def close(self, status: str) -> None:
        self.client.set_terminated(self.run_id, status=status)


def prepare_mlflow(store: Path, experiment: str) -> None:
    """Create the MLflow store and experiment now (a sweep, under its lock, before its workers log)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        client, _, artifacts = mlflow_client(store)
        mlflow_experiment(client, experiment, artifacts)
