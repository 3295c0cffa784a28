"""`--workers K`: K worker processes on this machine (`python -m xfads_cli sweep ... --worker`), each with
its share of the CPUs, waited for; SIGTERM / SIGUSR1 / Ctrl-C to this process are passed on to them
(Ctrl-C as SIGTERM, so that each saves its trial's exact state)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from xfads_cli.errors import RunFailure
from xfads_cli.train.signals import EXIT_PREEMPTED


def available_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def worker_args(paths: list[Path], space: Path, out: Path, n_trials: int, *, config_path: Path | None,
                overrides: list[str], device: str, threads: str, log: tuple[str, ...] = ()) -> list[str]:
    """The command line of one worker (without --worker-index and --time-limit)."""
    args = [*map(str, paths), "--space", str(space), "--out", str(out), "--trials", str(n_trials), "--worker",
            "--device", device, "--threads", threads]
    if config_path is not None:
        args += ["--config", str(config_path)]
    for item in overrides:
        args += ["--set", item]
    for name in log:
        args += ["--log", name]
    return args


def run_local(args: list[str], workers: int, time_limit_min: float | None) -> str:
    """Start `workers` workers with `args`, wait for all; why they stopped (done, time limit, preempted)."""
    started = time.monotonic()
    procs = []
    for index in range(workers):
        extra = ["--worker-index", str(index)]
        if time_limit_min:
            extra += ["--time-limit", str(time_limit_min)]
        # a session of its own: a terminal's Ctrl-C reaches the workers once, through the handler below
        procs.append(subprocess.Popen([sys.executable, "-m", "xfads_cli", "sweep", *args, *extra],
                                      stdout=subprocess.DEVNULL, start_new_session=True))
    signalled = []

    def forward(signum, frame):  # noqa: ARG001 - signal handler signature
        signalled.append(signum)
        sig = signal.SIGUSR1 if signum == signal.SIGUSR1 else signal.SIGTERM
        for p in procs:
            if p.poll() is None:
                p.send_signal(sig)

    previous = {s: signal.signal(s, forward) for s in (signal.SIGTERM, signal.SIGUSR1, signal.SIGINT)}
    try:
        codes = [p.wait() for p in procs]
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)
    failed = [(i, c) for i, c in enumerate(codes) if c not in (0, EXIT_PREEMPTED)]
    if failed:
        raise RunFailure(f"{len(failed)} of {workers} workers failed (worker, exit code: {failed}); see their "
                         "messages above; rerun the same command to continue the sweep")
    if signalled or EXIT_PREEMPTED in codes:
        return "preempted"
    late = time_limit_min and time.monotonic() - started >= time_limit_min * 60
    return "time limit" if late else "done"
