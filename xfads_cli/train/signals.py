"""Preemption: SIGTERM / SIGUSR1 (what SLURM sends before killing or requeueing a job) make `fit`
finish the current optimisation step, write a resumable last.pt and exit with EXIT_PREEMPTED.

    with catch_preemption() as stop:          # handlers installed only inside the block
        for event in fit(..., should_stop=stop):   # polled after every step; the loop yields
            ...                                     # the state to save, then raises Preempted

The handler only sets a flag: nothing is written from inside a signal handler, so a checkpoint can
never be half-written by a signal arriving mid-save.
"""

from __future__ import annotations

import signal
import threading
from contextlib import contextmanager
from typing import Iterator

# 75 = EX_TEMPFAIL (sysexits.h): "temporary failure, try again" -- the job was stopped on request
# and left a resumable last.pt; requeue it with `xfads fit ... --resume` (or --resume-auto).
EXIT_PREEMPTED = 75
PREEMPT_SIGNALS = ("SIGTERM", "SIGUSR1")


class Preempted(Exception):
    """Training stopped on a preemption signal after saving a resumable last.pt (exit code 75)."""

    exit_code = EXIT_PREEMPTED


class StopFlag:
    """Callable flag: True once one of the signals arrived; `.signal` names the first one."""

    def __init__(self) -> None:
        self.signal: str | None = None

    def handler(self, signum, frame) -> None:  # noqa: ARG002 - signal handler signature
        if self.signal is None:
            self.signal = signal.Signals(signum).name

    def __call__(self) -> bool:
        return self.signal is not None


@contextmanager
def catch_preemption(names: tuple[str, ...] = PREEMPT_SIGNALS) -> Iterator[StopFlag]:
    """Install flag-setting handlers for `names` for the duration of the block, then restore the
    previous handlers. Outside the main thread (where Python cannot install handlers) the flag
    simply never fires."""
    flag = StopFlag()
    previous = {}
    if threading.current_thread() is threading.main_thread():
        for name in names:
            sig = getattr(signal, name, None)
            if sig is not None:
                previous[sig] = signal.signal(sig, flag.handler)
    try:
        yield flag
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
