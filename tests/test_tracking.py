"""`xfads fit --log tensorboard|mlflow|csv` and `xfads sweep --log ...` (issue 29): what the trackers
were given, read back with their own readers (TensorBoard's EventAccumulator, MlflowClient); a resumed
run continuing in the same place; a missing extra as one line, exit 2, before anything is written.

Every fit is tiny (the bundled vdp_small.h5, small networks, 1-2 epochs, one thread).
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from conftest import FIXTURES
from typer.testing import CliRunner

from xfads_cli.cli import app

pytest.importorskip("tensorboard")
pytest.importorskip("mlflow")

runner = CliRunner()
FAST = ["--set", "model.samples=3", "--set", "model.dynamics_hidden=8", "--set", "model.encoder_hidden=8",
        "--set", "model.latent_dim=2", "--seed", "3"]


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


def events(logdir):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    accumulator = EventAccumulator(str(logdir), size_guidance={"scalars": 0, "images": 0})
    accumulator.Reload()
    return accumulator


def steps(accumulator, tag) -> list[int]:
    return [e.step for e in accumulator.Scalars(tag)]


def hparams_in(logdir) -> dict:
    """The hyperparameters of the run's TensorBoard session (the HPARAMS tab)."""
    from tensorboard.backend.event_processing.event_file_loader import EventFileLoader
    from tensorboard.plugins.hparams import plugin_data_pb2

    for path in sorted(logdir.glob("events.out.tfevents.*")):
        for event in EventFileLoader(str(path)).Load():
            for value in event.summary.value:
                if value.tag == "_hparams_/session_start_info":
                    data = plugin_data_pb2.HParamsPluginData.FromString(value.metadata.plugin_data.content)
                    return {k: v.WhichOneof("kind") and getattr(v, v.WhichOneof("kind"))
                            for k, v in data.session_start_info.hparams.items()}
    return {}


def mlflow_runs(store):
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{store.resolve() / 'mlflow.db'}")
    experiments = client.search_experiments()
    runs = client.search_runs([e.experiment_id for e in experiments])
    return client, experiments, runs


@pytest.fixture(autouse=True)
def no_tracking_env(monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("MLFLOW_EXPERIMENT_NAME", raising=False)


@pytest.fixture(scope="module")
def resumed_run(tmp_path_factory):
    """One epoch logged to both trackers (and csv), then --resume to a second one, with --plot."""
    out = tmp_path_factory.mktemp("tracking") / "run"
    common = ["fit", FIXTURES / "vdp_small.h5", "--out", out, *FAST, "--log", "tensorboard", "--log", "mlflow",
              "--log", "csv", "--quiet"]
    first = invoke(*common, "--max-epochs", 1)
    assert first.exit_code == 0, first.output
    second = invoke(*common, "--resume", "--max-epochs", 2, "--plot", "--json")
    assert second.exit_code == 0, second.output
    assert "--log" not in first.stderr + second.stderr  # no tracker failed (each would warn)
    return out, json.loads(second.stdout)


def test_tensorboard_events_load_with_the_logged_scalars(resumed_run):
    out, summary = resumed_run
    accumulator = events(out / "tensorboard")
    scalars = accumulator.Tags()["scalars"]
    for tag in ("train_loss", "valid_loss", "lr", summary["selected_on"]):
        assert tag in scalars
        assert steps(accumulator, tag) == [0, 1]  # the resumed run's epoch continues the first run's steps
    assert accumulator.Scalars("lr")[0].value > 0
    assert "best_score" in scalars and any(t.startswith("final/") for t in scalars)
    assert "training" in accumulator.Tags()["images"]  # the training plot
    assert "config/text_summary" in accumulator.Tags()["tensors"]  # the resolved config as text
    hparams = hparams_in(out / "tensorboard")
    assert hparams["train.lr"] == pytest.approx(0.01) and hparams["model.latent_dim"] == 2


def test_mlflow_run_has_the_epochs_params_and_artifacts(resumed_run):
    out, summary = resumed_run
    client, experiments, runs = mlflow_runs(out)
    assert [e.name for e in experiments if e.name != "Default"] == ["xfads"]
    assert len(runs) == 1  # the resumed fit reopened the run it started
    run = runs[0]
    assert run.info.status == "FINISHED" and run.info.run_name == "run"
    assert json.loads((out / "tracking.json").read_text())["mlflow"]["run_id"] == run.info.run_id
    for key in ("train_loss", "valid_loss", "lr"):
        assert [m.step for m in client.get_metric_history(run.info.run_id, key)] == [0, 1]
    assert run.data.params["train.lr"] == "0.01" and run.data.params["model.latent_dim"] == "2"
    assert run.data.metrics["best_score"] == pytest.approx(summary["best_score"])
    assert {a.path for a in client.list_artifacts(run.info.run_id)} >= {"config.yaml", "summary.json", "training.png"}


def test_a_fresh_run_replaces_the_old_events(resumed_run, fixtures_dir, tmp_path):
    """--overwrite starts new TensorBoard events (the MLflow store keeps the old run beside the new)."""
    import shutil

    out = tmp_path / "run"
    shutil.copytree(resumed_run[0], out)
    result = invoke("fit", fixtures_dir / "vdp_small.h5", "--out", out, *FAST, "--max-epochs", 1, "--overwrite",
                    "--log", "tensorboard", "--quiet")
    assert result.exit_code == 0, result.output
    assert steps(events(out / "tensorboard"), "train_loss") == [0]
    assert not (out / "tracking.json").exists() and not (out / "training.png").exists()


def test_mlflow_follows_the_tracking_uri_and_experiment_name(fixtures_dir, tmp_path, monkeypatch):
    from mlflow.tracking import MlflowClient

    monkeypatch.chdir(tmp_path)  # MLflow's default artifact root for a user's sqlite store: ./mlartifacts
    uri = f"sqlite:///{tmp_path / 'lab.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.setenv("MLFLOW_EXPERIMENT_NAME", "lab")
    out = tmp_path / "run"
    result = invoke("fit", fixtures_dir / "vdp_small.h5", "--out", out, *FAST, "--max-epochs", 1, "--log", "mlflow",
                    "--quiet")
    assert result.exit_code == 0, result.output
    assert not (out / "mlflow.db").exists()
    client = MlflowClient(tracking_uri=uri)
    runs = client.search_runs([client.get_experiment_by_name("lab").experiment_id])
    assert [r.info.run_name for r in runs] == ["run"] and runs[0].info.status == "FINISHED"
    assert "train_loss" in runs[0].data.metrics


@pytest.mark.parametrize("name, module", [("tensorboard", "tensorboard"), ("mlflow", "mlflow"), ("mlflow", "sqlalchemy")])
def test_missing_extra_is_one_line_exit_2_and_creates_nothing(fixtures_dir, tmp_path, monkeypatch, name, module):
    monkeypatch.setitem(sys.modules, module, None)  # as if not installed
    out = tmp_path / "run"
    result = invoke("fit", fixtures_dir / "vdp_small.h5", "--out", out, "--log", name, "--max-epochs", 1)
    assert result.exit_code == 2, result.output
    assert result.stderr.strip() == f"error: --log {name} needs {module}: pip install 'xfads[{name}]'"
    assert not out.exists()


def test_unknown_tracker_is_a_usage_error(fixtures_dir, tmp_path):
    result = invoke("fit", fixtures_dir / "vdp_small.h5", "--out", tmp_path / "run", "--log", "wandb")
    assert result.exit_code == 2 and "choose tensorboard, mlflow or csv" in result.stderr
    assert not (tmp_path / "run").exists()


def test_trackers_are_imported_only_when_asked_for():
    code = ("import sys; import xfads_cli.fitting, xfads_cli.sweep.trial; "
            "found = {'mlflow', 'tensorboard', 'torch.utils.tensorboard'} & set(sys.modules); assert not found, found")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_sweep_trials_log_under_one_experiment(fixtures_dir, tmp_path):
    pytest.importorskip("optuna")
    space = tmp_path / "space.yaml"
    space.write_text("train.lr: {log_uniform: [1.0e-3, 2.0e-2]}\n")
    out = tmp_path / "sweep"
    result = invoke("sweep", fixtures_dir / "vdp_small.h5", "--space", space, "--out", out, "--trials", 2, *FAST,
                    "--set", "train.max_epochs=1", "--log", "tensorboard", "--log", "mlflow", "--threads", 1)
    assert result.exit_code == 0, result.output
    assert "--log" not in result.stderr
    client, experiments, runs = mlflow_runs(out)
    assert [e.name for e in experiments if e.name != "Default"] == ["sweep"]
    assert sorted(r.info.run_name for r in runs) == ["trial 0000", "trial 0001"]
    for run in runs:
        trial = run.data.tags["trial"]
        assert run.info.status == "FINISHED"
        assert [m.step for m in client.get_metric_history(run.info.run_id, "train_loss")] == [0]
        sampled = hparams_in(out / "trials" / trial / "tensorboard")
        assert list(sampled) == ["train.lr"]  # TensorBoard's hparams: the trial's sampled values
        assert float(run.data.params["train.lr"]) == pytest.approx(sampled["train.lr"])
        assert steps(events(out / "trials" / trial / "tensorboard"), "train_loss") == [0]
