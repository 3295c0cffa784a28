"""CPU threads: how many torch may use, and a tuner that keeps the count right on a shared machine.

On a lab node or a SLURM allocation other jobs share the cores. torch's intra-op threads meet at a
barrier after every parallel op, and a thread whose core another process holds makes all of them
wait: with 2 threads on 2 cores and one busy process beside it, a fit at the reference size ran 38.9 s
per epoch instead of 1.15 s alone, while 1 thread ran 1.35 s (benchmarks/contention.py). The best count
therefore depends on what else runs, which changes during a fit; `ThreadTuner` measures it.

`--threads auto` (the default): at most the cores this process may run on (its CPU affinity, which
SLURM and taskset set; SLURM_CPUS_PER_TASK and OMP_NUM_THREADS cap it), and during training the count
that gives the fastest steps. `--threads N` (or XFADS_THREADS=N): exactly N, never changed. Results
depend on the thread count in the last bits of floating point, so bit-identical reruns and resumes
need a fixed N.
"""

from __future__ import annotations

import os
import statistics
import time
from typing import Callable

from xfads_cli.errors import UsageError

ENV = "XFADS_THREADS"


def available_cores() -> int:
    """Cores this process may use: its CPU affinity, capped by SLURM_CPUS_PER_TASK and OMP_NUM_THREADS."""
    try:
        n = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not Linux
        n = os.cpu_count() or 1
    for var in ("SLURM_CPUS_PER_TASK", "OMP_NUM_THREADS"):
        value = os.environ.get(var, "")
        if value.isdigit() and int(value) >= 1:
            n = min(n, int(value))
    return max(1, n)


def parse_threads(spec: str | int | None) -> int | None:
    """'auto' / None -> None (tune); a positive integer -> that count. The CLI option wins over XFADS_THREADS."""
    if spec is None:
        spec = os.environ.get(ENV, "auto")
    text = str(spec).strip().lower()
    if text == "auto":
        return None
    if text.isdigit() and int(text) >= 1:
        return int(text)
    raise UsageError(f"--threads must be 'auto' or a positive integer, got '{spec}' (also checked: ${ENV})")


class ThreadTuner:
    """Chooses torch's intra-op thread count from the timed training steps.

    A run starts at 1 thread (the count that cannot collapse). Probe: time `probe_steps` steps at each
    candidate count (1, 2, 4, ... up to the maximum; the current one first, then upwards), giving up
    on a count after one step `slowdown` x slower than the best so far (under contention one step can
    cost 10x); keep the count with the smallest median step. Hold it for `hold_seconds` (doubled, up
    to 8x, while probes keep choosing the same count), or less if the median of the last
    `probe_steps` steps grows past `slowdown` x the chosen median (a job started beside us); then
    probe again. A fixed count (or a maximum of 1) makes every call a no-op.
    """

    def __init__(self, max_threads: int, *, fixed: bool = False, probe_steps: int = 3, hold_seconds: float = 30.0,
                 slowdown: float = 1.5, set_threads: Callable[[int], None] | None = None,
                 clock: Callable[[], float] = time.monotonic):
        if set_threads is None:
            import torch

            set_threads = torch.set_num_threads
        self.max_threads, self.fixed = max(1, int(max_threads)), fixed
        self.probe_steps, self.base_hold, self.slowdown = probe_steps, hold_seconds, slowdown
        self._set, self._clock = set_threads, clock
        powers = {2 ** k for k in range(self.max_threads.bit_length()) if 2 ** k < self.max_threads}
        self.candidates = sorted(powers | {self.max_threads}, reverse=True)
        # tuning starts from the count that cannot collapse, and tries more threads from there
        self.threads = self.candidates[-1] if (not fixed and len(self.candidates) > 1) else self.max_threads
        self._set(self.threads)
        self.steps_at: dict[int, int] = {}
        self.probes = self.switches = 0
        self._hold = hold_seconds
        self._queue: list[int] = []
        self._samples: dict[int, list[float]] = {}
        self._recent: list[float] = []
        self._chosen = float("inf")
        self._last_choice: int | None = None
        self._before = self.threads
        self._until = 0.0
        self._skip = 2  # the first steps of a run pay one-off costs (allocation, lazy init)
        if self.active:
            self._start_probe()

    @property
    def active(self) -> bool:
        return not self.fixed and len(self.candidates) > 1

    def _use(self, n: int) -> None:
        if n != self.threads:
            self.threads = n
            self._set(n)

    def _start_probe(self) -> None:
        self.probes += 1
        self._before = self.threads
        self._queue = [self.threads] + [c for c in reversed(self.candidates) if c != self.threads]
        self._samples = {c: [] for c in self.candidates}

    def after_step(self, seconds: float) -> None:
        """Report the wall time of one optimisation step taken at `self.threads` threads."""
        self.steps_at[self.threads] = self.steps_at.get(self.threads, 0) + 1
        if not self.active:
            return
        if self._skip:
            self._skip -= 1
            return
        if self._queue:  # probing
            samples = self._samples[self.threads]
            samples.append(seconds)
            done = [statistics.median(v) for c, v in self._samples.items() if v and c not in self._queue]
            hopeless = bool(done) and min(samples) > self.slowdown * min(done)
            if len(samples) < self.probe_steps and not hopeless:
                return
            self._queue.pop(0)
            if self._queue:
                self._use(self._queue[0])
                return
            medians = {c: statistics.median(s) for c, s in self._samples.items() if s}
            best = min(medians, key=medians.get)
            if best != self._before:
                self.switches += 1
            self._hold = min(2 * self._hold, 8 * self.base_hold) if self._last_choice == best else self.base_hold
            self._last_choice = best
            self._use(best)
            self._chosen, self._until, self._recent = medians[best], self._clock() + self._hold, []
            return
        self._recent = (self._recent + [seconds])[-self.probe_steps:]
        slower = len(self._recent) == self.probe_steps and statistics.median(self._recent) > self.slowdown * self._chosen
        if slower or self._clock() >= self._until:
            self._start_probe()

    def summary(self) -> dict:
        """For summary.json: the policy, the counts tried and how many steps ran at each."""
        return {"policy": "fixed" if self.fixed else "auto", "max": self.max_threads,
                "steps_at": {str(k): v for k, v in sorted(self.steps_at.items())},
                "probes": self.probes, "switches": self.switches, "final": self.threads}


def configure_threads(spec: str | int | None, *, world: int = 1, tune: bool = True) -> ThreadTuner:
    """Set torch's thread count for this process and return the tuner that keeps it (a no-op when fixed).

    world: ranks of the run (torchrun's WORLD_SIZE); the ranks on this node ($LOCAL_WORLD_SIZE, else
    world) share its cores equally. tune: False for work that must not change its thread count
    (--deterministic, CUDA, inference); never tuned with several ranks (a step's time then includes
    waiting for the others)."""
    n = parse_threads(spec)
    if n is not None:
        return ThreadTuner(n, fixed=True)
    local = os.environ.get("LOCAL_WORLD_SIZE", "")
    on_node = int(local) if local.isdigit() and int(local) >= 1 else world
    world = max(world, on_node)
    return ThreadTuner(max(1, available_cores() // on_node), fixed=not (tune and world == 1))
