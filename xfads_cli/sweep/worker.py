"""A sweep worker: while fewer than N trials are finished or taken, ask for a trial and run it.

Any number of workers, on any nodes that see SWEEP_DIR, may run at once (`xfads sweep ... --worker`).
Each holds SWEEP_DIR/workers/<host>-<pid>-<id>.lock for its lifetime, so a worker killed outright
(SIGKILL, a lost node) is noticed by the next worker that asks for a trial: its RUNNING trial is
requeued and continued from the last completed epoch's last.pt (study.requeue_dead).

SIGTERM / SIGUSR1 during a fit: the fit saves its exact state and the trial is requeued; outside a
fit: the worker stops before its next trial. Either way the worker returns "preempted". The sweep's
--time-limit works the same way (a SIGUSR1 to itself at the deadline) and returns "time limit".
"""

from __future__ import annotations

import os
import signal
import socket
import sys
import threading
import time
import uuid
from contextlib import contextmanager
from typing import Iterator

from xfads_cli.sweep.locks import Liveness
from xfads_cli.sweep.study import load, next_trial, worker_lock
from xfads_cli.sweep.trial import Setup, Stop, run_trial

# MedianPruner: a trial is stopped after an epoch when its best score so far is worse than the median of
# the other trials' at that epoch; never during its first WARMUP_EPOCHS epochs, nor before
# STARTUP_TRIALS trials have finished.
STARTUP_TRIALS = 3
WARMUP_EPOCHS = 10


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def sampler_and_pruner(seed: int, n_trials: int):
    import optuna

    # constant_liar: running trials count as bad guesses, so concurrent workers do not all sample the
    # same point; random search for the first third of the trials (at most 10).
    sampler = optuna.samplers.TPESampler(seed=seed, n_startup_trials=max(2, min(10, n_trials // 3)),
                                         constant_liar=True)
    pruner = optuna.pruners.MedianPruner(n_startup_trials=STARTUP_TRIALS, n_warmup_steps=WARMUP_EPOCHS)
    return sampler, pruner


@contextmanager
def stop_signals(time_limit_min: float | None) -> Iterator[Stop]:
    """Stop on SIGTERM / SIGUSR1 (between fits; a fit handles them itself) and at the deadline."""
    stop = Stop()

    def handler(signum, frame):  # noqa: ARG001 - signal handler signature
        stop.reason = stop.reason or f"preempted ({signal.Signals(signum).name})"

    def deadline():
        stop.reason = stop.reason or "time limit"
        os.kill(os.getpid(), signal.SIGUSR1)  # a fit in progress saves its exact state and stops

    main = threading.current_thread() is threading.main_thread()
    previous = {s: signal.signal(s, handler) for s in (signal.SIGTERM, signal.SIGUSR1)} if main else {}
    timer = threading.Timer(time_limit_min * 60, deadline) if time_limit_min and main else None
    if timer is not None:
        timer.daemon = True
        timer.start()
    try:
        yield stop
    finally:
        if timer is not None:
            timer.cancel()
        for sig, old in previous.items():
            signal.signal(sig, old)


def run_worker(setup: Setup, index: int, seed: int, time_limit_min: float | None = None) -> str:
    """Run trials until none is left; returns why it stopped: done, time limit, preempted, interrupted."""
    sampler, pruner = sampler_and_pruner(seed + index, setup.n_trials)
    study = load(setup.dir, sampler=sampler, pruner=pruner)
    name = f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
    liveness = Liveness(worker_lock(setup.dir, name))
    tag = f"[worker {index}]"
    try:
        with stop_signals(time_limit_min) as stop:
            while stop.reason is None:
                trial = next_trial(study, setup.dir, setup.n_trials, name)
                if trial is None:
                    return "done"
                started = time.monotonic()
                resumes = trial.user_attrs.get("resume_dir")
                log(f"{tag} trial {trial.number} " + (f"resumes {resumes}" if resumes else "starts"))
                state = run_trial(study, trial, setup, stop)
                log(f"{tag} trial {trial.number} {state}{outcome(study, trial.number)} "
                    f"({time.monotonic() - started:.1f} s; {describe(study.trials[trial.number].params)})")
            return "time limit" if stop.reason == "time limit" else "preempted"
    finally:
        liveness.close()


def describe(params: dict) -> str:
    return " ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in params.items())


def outcome(study, number: int) -> str:
    attrs = study.trials[number].user_attrs
    if attrs.get("score") is not None:
        return f": {attrs.get('selected_on')}={attrs['score']:.4g} after {attrs.get('epochs')} epochs"
    if attrs.get("error"):
        return f": {attrs['error']}"
    return f" after {attrs.get('epochs')} epochs" if attrs.get("epochs") else ""
