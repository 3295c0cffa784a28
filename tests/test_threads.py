"""The CPU thread policy (train/threads.py): parsing, the cores a job may use, and the tuner's choices."""

from __future__ import annotations

import json

import pytest

from xfads_cli.errors import UsageError
from xfads_cli.train import threads as th


class FakeMachine:
    """Step times as a function of the thread count; a clock that advances by each step's time."""

    def __init__(self, seconds_at: dict[int, float]):
        self.seconds_at, self.now, self.threads, self.calls = dict(seconds_at), 0.0, None, []

    def set_threads(self, n: int) -> None:
        self.threads = n
        self.calls.append(n)

    def clock(self) -> float:
        return self.now

    def run(self, tuner: th.ThreadTuner, steps: int) -> None:
        for _ in range(steps):
            s = self.seconds_at[tuner.threads]
            self.now += s
            tuner.after_step(s)


def tuner_on(machine: FakeMachine, max_threads: int, **kw) -> th.ThreadTuner:
    return th.ThreadTuner(max_threads, set_threads=machine.set_threads, clock=machine.clock, **kw)


def test_parse_threads(monkeypatch):
    monkeypatch.delenv(th.ENV, raising=False)
    assert th.parse_threads(None) is None
    assert th.parse_threads("auto") is None
    assert th.parse_threads("3") == 3
    monkeypatch.setenv(th.ENV, "2")
    assert th.parse_threads(None) == 2
    assert th.parse_threads("auto") is None  # the option wins over the environment
    for bad in ("0", "-1", "two", "1.5"):
        with pytest.raises(UsageError, match="--threads must be 'auto' or a positive integer"):
            th.parse_threads(bad)


def test_available_cores_respects_affinity_and_caps(monkeypatch):
    monkeypatch.setattr(th.os, "sched_getaffinity", lambda pid: {0, 1, 2, 3, 4, 5, 6, 7}, raising=False)
    monkeypatch.delenv("SLURM_CPUS_PER_TASK", raising=False)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    assert th.available_cores() == 8
    monkeypatch.setenv("SLURM_CPUS_PER_TASK", "4")
    assert th.available_cores() == 4
    monkeypatch.setenv("OMP_NUM_THREADS", "2")
    assert th.available_cores() == 2
    monkeypatch.setenv("OMP_NUM_THREADS", "garbage")  # ignored, not fatal
    assert th.available_cores() == 4


def test_auto_shares_cores_between_ranks(monkeypatch):
    monkeypatch.setattr(th, "available_cores", lambda: 8)
    monkeypatch.setattr(th.ThreadTuner, "__init__", lambda self, n, fixed=False: setattr(self, "got", (n, fixed)))
    monkeypatch.delenv(th.ENV, raising=False)
    monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False)
    assert th.configure_threads("auto").got == (8, False)
    assert th.configure_threads("auto", world=2).got == (4, True)  # ranks: a share each, never tuned
    assert th.configure_threads("auto", tune=False).got == (8, True)
    assert th.configure_threads("3").got == (3, True)
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "4")
    assert th.configure_threads("auto").got == (2, True)
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")  # 8 ranks on 4 nodes: the node's cores go to its 2 ranks
    assert th.configure_threads("auto", world=8).got == (4, True)


def test_candidates():
    m = FakeMachine({})
    assert tuner_on(m, 1).candidates == [1]
    assert tuner_on(m, 2).candidates == [2, 1]
    assert tuner_on(m, 6).candidates == [6, 4, 2, 1]
    assert tuner_on(m, 8).candidates == [8, 4, 2, 1]


def test_fixed_never_changes():
    m = FakeMachine({3: 1.0})
    tuner = tuner_on(m, 3, fixed=True)
    m.run(tuner, 50)
    assert m.calls == [3] and tuner.summary()["steps_at"] == {"3": 50} and tuner.probes == 0


def test_keeps_more_threads_when_they_are_faster():
    m = FakeMachine({2: 0.1, 1: 0.18})
    tuner = tuner_on(m, 2, probe_steps=3, hold_seconds=30.0)
    m.run(tuner, 30)
    assert m.calls[0] == 1  # starts at the count that cannot collapse
    assert tuner.threads == 2 and tuner.probes == 1 and tuner.switches == 1
    assert tuner.steps_at[1] == 5  # two warm-up steps + 3 timed


def test_moves_to_one_thread_when_cores_are_shared():
    m = FakeMachine({2: 0.5, 1: 0.12})  # a second job: 2 threads wait for each other
    tuner = tuner_on(m, 2, probe_steps=3)
    m.run(tuner, 200)
    assert tuner.threads == 1 and tuner.switches == 0
    assert tuner.steps_at[2] == tuner.probes  # each probe gives up on 2 threads after one step


def test_reprobes_when_steps_slow_down_and_when_the_hold_ends():
    m = FakeMachine({2: 0.1, 1: 0.18})
    tuner = tuner_on(m, 2, probe_steps=3, hold_seconds=30.0)
    m.run(tuner, 20)
    assert tuner.threads == 2 and tuner.probes == 1
    m.seconds_at[2] = 0.6  # another job starts: steps at 2 threads 6x slower, well before the hold ends
    m.run(tuner, 15)
    assert tuner.threads == 1 and tuner.probes == 2 and m.now < 30
    m.seconds_at[2] = 0.1  # the job ends: found again at the next scheduled probe
    m.run(tuner, 400)
    assert tuner.threads == 2 and tuner.probes >= 3


def test_hold_grows_while_the_choice_is_stable():
    m = FakeMachine({2: 0.1, 1: 0.3})
    tuner = tuner_on(m, 2, probe_steps=3, hold_seconds=10.0)
    m.run(tuner, 3000)  # 300 s: holds 10, 20, 40, 80, 80, ... s
    assert 4 <= tuner.probes <= 7
    # the cost of probing the slower count stays a few percent of the steps
    assert tuner.steps_at[1] / sum(tuner.steps_at.values()) < 0.02


def test_fit_records_its_thread_policy(tmp_path, fixtures_dir):
    from typer.testing import CliRunner

    from xfads_cli.cli import app

    out = tmp_path / "run"
    res = CliRunner().invoke(app, ["fit", str(fixtures_dir / "vdp_small.h5"), "--out", str(out), "--max-epochs", "2",
                                   "--threads", "1", "--quiet", "--json"])
    assert res.exit_code == 0, res.output
    summary = json.loads(res.stdout)
    assert summary["threads"]["policy"] == "fixed" and summary["threads"]["final"] == 1
    assert sum(summary["threads"]["steps_at"].values()) > 0
    res = CliRunner().invoke(app, ["fit", str(fixtures_dir / "vdp_small.h5"), "--out", str(tmp_path / "cfg"),
                                   "--max-epochs", "1", "--set", "train.threads=2", "--quiet", "--json"])
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["threads"] == json.loads(res.stdout)["threads"] | {"policy": "fixed", "max": 2}
    res = CliRunner().invoke(app, ["fit", str(fixtures_dir / "vdp_small.h5"), "--out", str(tmp_path / "bad"),
                                   "--threads", "many"])
    assert res.exit_code == 2 and "--threads must be 'auto' or a positive integer" in res.output
    assert not (tmp_path / "bad").exists()
