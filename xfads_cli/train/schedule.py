"""The learning-rate schedule and the run's budget: how fast each update steps (`warmup_factor` x
`anneal_factor`), how much of the budget is used (`Budget`), and when a run ends for lack of progress
(`stalled`) or epochs (`max_epochs_reached`). Pure functions of the config and the counters, so that
train/loop.py only asks them and a resumed run continues the same schedule.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from xfads_cli.config import TrainConfig


def warmup_factor(updates: int, warmup_steps: int) -> float:
    """Linear learning-rate warm-up: update k (0-based) runs at min(1, (k + 1) / warmup_steps) x the
    scheduled rate."""
    return 1.0 if warmup_steps <= 0 else min(1.0, (updates + 1) / warmup_steps)


def anneal_factor(cfg: TrainConfig, epoch: int, progress: float) -> float:
    """The schedule's multiple of cfg.lr. 'exponential': lr_decay**epoch; 'cosine': 1 until the last
    `anneal_fraction` of the budget, then down to lr_final at progress >= 1 along half a cosine,
    progress being the used fraction of the budget."""
    if cfg.schedule == "exponential":
        return cfg.lr_decay ** epoch
    start = 1.0 - cfg.anneal_fraction
    p = min(max((progress - start) / max(cfg.anneal_fraction, 1e-12), 0.0), 1.0)
    return cfg.lr_final + (1.0 - cfg.lr_final) * 0.5 * (1.0 + math.cos(math.pi * p))


@dataclass
class Budget:
    """What the cosine schedule anneals over: `epochs` epochs and/or `minutes` of training counted
    from (epoch0, seconds0); whichever is used up first ends it. Saved with the training state so that
    a resumed run keeps its schedule; a run resumed after its schedule ended starts a new one."""

    epochs: int
    minutes: float | None
    epoch0: int = 0
    seconds0: float = 0.0

    def progress(self, epoch: float, seconds: float) -> float:
        """epoch: epochs done (fractional mid-epoch); seconds: training seconds so far."""
        by_epochs = (epoch - self.epoch0) / max(self.epochs, 1)
        by_time = (seconds - self.seconds0) / (60.0 * self.minutes) if self.minutes else 0.0
        return max(by_epochs, by_time)


def stalled(cfg: TrainConfig, since_best: int, progress: float, best_progress: float) -> bool:
    """Early stopping: `cfg.patience` epochs without a better validation score and, with the cosine
    schedule, no new best in the first half of the anneal either (progress: share of the budget used;
    best_progress: at the best epoch). Why: at the peak learning rate a noisy validation score (a few
    dozen trials) easily goes 40 epochs without a new best while the model still improves, and the
    anneal is where a fit gains most; stopping at patience alone ended 5-minute fits after 2.5 minutes
    at full learning rate, never annealed (benchmarks/README.md, quality run)."""
    if since_best < cfg.patience:
        return False
    if cfg.schedule != "cosine":
        return True
    anneal_start = 1.0 - cfg.anneal_fraction
    return progress - max(best_progress, anneal_start) >= 0.5 * cfg.anneal_fraction


def max_epochs_reached(last_epoch: int, done_before: int) -> str:
    """Why a run that ran up to max_epochs stopped. max_epochs counts the run's epochs from its start,
    also when resuming (done_before: the epochs completed before this resume): said, because a user
    giving --max-epochs 3 to a resumed run may expect 3 more."""
    if not done_before:
        return f"max_epochs={last_epoch} reached"
    if done_before >= last_epoch:
        return (f"max_epochs={last_epoch} reached before this resume: the run already had {done_before} epochs "
                "(max_epochs counts the run's epochs from its start; give more to train on)")
    return (f"max_epochs={last_epoch} reached (it counts the run's epochs from its start: {done_before} before "
            f"this resume, {last_epoch - done_before} in it)")
