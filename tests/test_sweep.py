"""`xfads sweep` (issue 15): workers sharing one SWEEP_DIR, preemption and hard kills, failing and pruned
trials, bad space files, --status, and the missing optional dependency.

Every fit is tiny (6 neurons, 16 trials of 12 bins, 2-4 epochs) and runs with one thread. Multi-process
behaviour runs real worker subprocesses (`python -m xfads_cli sweep ... --worker`); a worker is stopped at
an exact optimisation step by tests/signal_launcher.py ("K:SIGNAME"), not by timing.
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from xfads_cli.cli import app
from xfads_cli.train.signals import EXIT_PREEMPTED

pytest.importorskip("optuna")

runner = CliRunner()
HERE = Path(__file__).resolve().parent
FAST = ["--set", "model.samples=3", "--set", "model.dynamics_hidden=8", "--set", "model.encoder_hidden=8",
        "--set", "train.batch_size=4", "--set", "train.patience=100", "--seed", "3"]
SPACE = "model.latent_dim: [2, 3]\ntrain.lr: {log_uniform: [1.0e-3, 2.0e-2]}\n"


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


def sweep_args(recording, space, out, trials, epochs=2):
    return ["sweep", recording, "--space", space, "--out", out, "--trials", trials, *FAST,
            "--set", f"train.max_epochs={epochs}"]


def worker(recording, space, out, trials, *extra, epochs=2, signal_at=None, index=0) -> subprocess.Popen:
    """One `--worker` process; signal_at 'K:SIGNAME': it signals itself after optimisation step K."""
    env = {**os.environ, "XFADS_THREADS": "1", "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    program = ["-m", "xfads_cli"] if signal_at is None else [str(HERE / "signal_launcher.py"), signal_at]
    cmd = [sys.executable, *program, *map(str, sweep_args(recording, space, out, trials, epochs)), "--worker",
           "--worker-index", str(index), "--threads", "1", *extra]
    return subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def finish(proc: subprocess.Popen) -> tuple[int, str]:
    _, err = proc.communicate(timeout=300)
    return proc.returncode, err


def status(out) -> dict:
    result = invoke("sweep", "--status", out, "--json")
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def epochs_in(run_dir: Path) -> list[int]:
    with open(run_dir / "metrics.csv") as f:
        return [int(row["epoch"]) for row in csv.DictReader(f)]


@pytest.fixture(scope="module")
def recording(tmp_path_factory):
    from xfads_cli.commands.simulate import simulate

    path = tmp_path_factory.mktemp("data") / "ring.h5"
    simulate("ring", path, neurons=6, trials=16, bins=12, seed=2)
    return path


@pytest.fixture(scope="module")
def space(tmp_path_factory):
    path = tmp_path_factory.mktemp("space") / "space.yaml"
    path.write_text(SPACE)
    return path


@pytest.fixture(scope="module")
def shared_sweep(recording, space, tmp_path_factory):
    """Two worker processes started together on one SWEEP_DIR, 6 trials."""
    out = tmp_path_factory.mktemp("sweeps") / "two"
    procs = [worker(recording, space, out, 6, index=i) for i in range(2)]
    results = [finish(p) for p in procs]
    for code, err in results:
        assert code == 0, err
    return out, results


def test_two_workers_share_a_sweep_without_duplicates_or_losses(shared_sweep):
    out, results = shared_sweep
    summary = status(out)
    assert summary["finished"] == 6 and summary["counts"] == {"COMPLETE": 6}
    assert sorted(t["number"] for t in summary["trials"]) == list(range(6))
    dirs = sorted(t["run_dir"] for t in summary["trials"])
    assert dirs == [f"trials/{n:04d}" for n in range(6)]
    assert sorted(p.name for p in (out / "trials").iterdir()) == [f"{n:04d}" for n in range(6)]
    for d in dirs:
        assert (out / d / "summary.json").is_file() and epochs_in(out / d) == [0, 1]
    ran = [line for _, err in results for line in err.splitlines() if line.startswith("[worker") and " COMPLETE" in line]
    assert len(ran) == 6, ran
    assert all(any(line.startswith(f"[worker {i}]") for line in ran) for i in range(2)), "both workers ran trials"
    assert os.readlink(out / "best") == summary["best"]["run_dir"]
    assert not list((out / "workers").iterdir()), "a worker that ended cleanly leaves no lock"


def test_status_json_and_plots(shared_sweep):
    out, _ = shared_sweep
    result = invoke("sweep", "--status", out, "--json", "--plot")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["selected_on"] == "valid_fp_bps" and summary["direction"] == "maximize"
    assert summary["n_trials"] == 6 and summary["finished"] == 6
    best = summary["best"]
    assert best["score"] == max(t["score"] for t in summary["trials"])
    assert set(best["params"]) == {"model.latent_dim", "train.lr"} and best["epochs"] == 2 and best["seconds"] > 0
    assert (out / "history.png").is_file() and (out / "importances.png").is_file()


def test_rerun_continues_and_a_changed_space_is_refused(shared_sweep, recording, space, tmp_path):
    out, _ = shared_sweep
    other = tmp_path / "other.yaml"
    other.write_text("model.latent_dim: [2, 4]\n")
    result = invoke(*sweep_args(recording, other, out, 7))
    assert result.exit_code == 2 and "another --space" in result.stderr, result.output
    assert len(result.stderr.strip().splitlines()) == 1
    result = invoke(*sweep_args(recording, space, out, 7), "--threads", 1, "--json")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["finished"] == 7 and summary["trials"][-1]["run_dir"] == "trials/0006"


def test_sigterm_mid_trial_is_resumed_by_the_next_worker(recording, space, tmp_path):
    # 12-13 training trials / batch 4 = 3-4 steps per epoch: step 9 is inside the third epoch
    out = tmp_path / "sweep"
    code, err = finish(worker(recording, space, out, 1, epochs=4, signal_at="9:SIGTERM"))
    assert code == EXIT_PREEMPTED, err
    mid = status(out)
    assert mid["finished"] == 0 and [t["state"] for t in mid["trials"]] == ["WAITING"]
    assert mid["trials"][0]["resumes"] == 0 and epochs_in(out / "trials" / "0000") == [0, 1]
    code, err = finish(worker(recording, space, out, 1, epochs=4, index=1))
    assert code == 0, err
    assert "resumes trials/0000" in err
    done = status(out)
    assert done["finished"] == 1 and done["counts"] == {"COMPLETE": 1}
    assert sorted(p.name for p in (out / "trials").iterdir()) == ["0000"]
    assert epochs_in(out / "trials" / "0000") == [0, 1, 2, 3]
    assert json.loads((out / "trials" / "0000" / "summary.json").read_text())["epochs"] == 4


def test_a_killed_worker_s_trial_is_requeued_not_lost(recording, space, tmp_path):
    out = tmp_path / "sweep"
    code, _ = finish(worker(recording, space, out, 1, epochs=4, signal_at="9:SIGKILL"))
    assert code == -9
    assert [t["state"] for t in status(out)["trials"]] == ["RUNNING"]
    code, err = finish(worker(recording, space, out, 1, epochs=4, index=1))
    assert code == 0, err
    done = status(out)
    assert done["counts"] == {"COMPLETE": 1} and done["trials"][0]["resumes"] == 0
    assert epochs_in(out / "trials" / "0000") == [0, 1, 2, 3]  # epochs 0-1 from the killed worker's last.pt
    assert not list((out / "workers").iterdir()), "the dead worker's lock file is removed with its trial requeued"


def test_a_failing_trial_does_not_stop_the_study(recording, space, tmp_path, monkeypatch):
    import xfads_cli.fitting as fit_module
    from xfads_cli.errors import RunFailure

    real = fit_module.run_fit

    def flaky(paths, config, out, **options):
        if Path(out).name == "0001":
            raise RunFailure("the loss diverged (test)")
        return real(paths, config, out, **options)

    monkeypatch.setattr(fit_module, "run_fit", flaky)
    out = tmp_path / "sweep"
    result = invoke(*sweep_args(recording, space, out, 3), "--threads", 1, "--json")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert [t["state"] for t in summary["trials"]] == ["COMPLETE", "FAIL", "COMPLETE"]
    assert "RunFailure: the loss diverged (test)" in summary["trials"][1]["error"]
    assert summary["finished"] == 3 and summary["best"]["number"] in (0, 2)


def test_values_that_make_an_invalid_config_fail_the_trial(recording, tmp_path):
    space = tmp_path / "space.yaml"
    space.write_text("model.latent_dim: [2]\nmodel.read_dims: [3]\n")  # each valid alone, not together
    result = invoke(*sweep_args(recording, space, tmp_path / "sweep", 1), "--json")
    assert result.exit_code == 0, result.output
    trial = json.loads(result.stdout)["trials"][0]
    assert trial["state"] == "FAIL" and "invalid config" in trial["error"] and "read_dims" in trial["error"]


def test_a_pruned_trial_keeps_a_usable_run_dir(recording, space, tmp_path, monkeypatch):
    import optuna

    import xfads_cli.sweep.worker as worker_module

    def always_prune(seed, n_trials):
        return optuna.samplers.RandomSampler(seed=seed), optuna.pruners.ThresholdPruner(lower=1e9)

    monkeypatch.setattr(worker_module, "sampler_and_pruner", always_prune)
    out = tmp_path / "sweep"
    result = invoke(*sweep_args(recording, space, out, 1), "--threads", 1, "--json")
    assert result.exit_code == 0, result.output
    trial = json.loads(result.stdout)["trials"][0]
    assert trial["state"] == "PRUNED" and trial["epochs"] == 1
    run = out / trial["run_dir"]
    assert {"best.pt", "last.pt", "metrics.csv", "config.yaml"} <= {p.name for p in run.iterdir()}
    assert not (run / "summary.json").exists() and not (out / "best").exists()


def test_local_workers_share_the_cores(recording, space, tmp_path, monkeypatch):
    import xfads_cli.sweep.local as local

    monkeypatch.setattr(local, "available_cores", lambda: 4)  # 2 workers -> 2 threads each
    out = tmp_path / "sweep"
    result = invoke(*sweep_args(recording, space, out, 2), "--workers", 2, "--json")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["counts"] == {"COMPLETE": 2} and summary["stopped"] == "done"
    for t in summary["trials"]:
        assert json.loads((out / t["run_dir"] / "summary.json").read_text())["threads"]["max"] == 2


def test_status_plot_without_matplotlib(shared_sweep, monkeypatch):
    out, _ = shared_sweep
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    result = invoke("sweep", "--status", out, "--plot")
    assert result.exit_code == 2 and result.stderr.strip() == "error: --plot needs matplotlib: pip install 'xfads[plot]'"


BAD_SPACES = [
    ("model.latent_dim: [4, 8", "not valid YAML"),
    ("- model.latent_dim", "must be a non-empty mapping"),
    ("modle.latent_dim: [4, 8]", "unknown key 'modle'"),
    ("model.latent_dims: [4, 8]", "unknown key 'latent_dims'"),
    ("model.latent_dim: []", "empty list"),
    ("train.lr: {loguniform: [1.0e-4, 1.0e-2]}", "unknown distribution 'loguniform'"),
    ("train.lr: {uniform: [0.1, 0.01]}", "must be below high"),
    ("train.lr: {log_uniform: [0, 0.01]}", "needs low > 0"),
    ("model.latent_dim: {int: [two, 8]}", "must be numbers"),
    ("train.lr: [0.01, 2.0]", "train.lr=2.0"),
    ("train.select: [elbo, co_bps]", "cannot be searched"),
]


@pytest.mark.parametrize("text,fragment", BAD_SPACES, ids=[b[1] for b in BAD_SPACES])
def test_bad_space_is_one_line_exit_2_and_creates_nothing(recording, tmp_path, text, fragment):
    space = tmp_path / "space.yaml"
    space.write_text(text + "\n")
    result = invoke(*sweep_args(recording, space, tmp_path / "sweep", 2))
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and fragment in lines[0], result.stderr
    assert not (tmp_path / "sweep").exists()


def test_bad_data_and_usage_create_nothing(recording, space, tmp_path):
    out = tmp_path / "sweep"
    for args, fragment in ((sweep_args(tmp_path / "missing.h5", space, out, 2), "DATA not found"),
                           (sweep_args(recording, space, out, 0), "--trials must be at least 1"),
                           ([*sweep_args(recording, space, out, 2), "--set", "train.lrr=1"], "unknown key 'lrr'")):
        result = invoke(*args)
        assert result.exit_code == 2 and fragment in result.stderr, result.output
        assert not out.exists()


def test_without_optuna_exit_2_with_the_install_hint(recording, space, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "optuna", None)  # `import optuna` raises ImportError
    for args in (sweep_args(recording, space, tmp_path / "sweep", 2), ["sweep", "--status", tmp_path]):
        result = invoke(*args)
        assert result.exit_code == 2, result.output
        assert result.stderr.strip() == "error: xfads sweep needs optuna: pip install 'xfads[sweep]'"
    assert not (tmp_path / "sweep").exists()


@pytest.mark.parametrize("name", ["sweep_xfads.yaml", "sweep_meta.yaml"])
def test_sample_spaces_load(name):
    from conftest import ROOT

    from xfads_cli.sweep.space import load_space

    params = load_space(ROOT / "sample_configs" / name, None, [])
    assert len(params) >= 4
