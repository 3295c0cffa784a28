"""One readable training loop (nanoGPT-style): Adam, exponential lr decay, gradient clipping, early
stopping on the validation loss, a time limit, divergence handling, preemption, resumable state,
data-parallel ranks and hooks.

    result = fit(model, train_y, valid_y, cfg, seed=0, evaluate=fn, on_epoch=fn, resume=state)

`run_epochs` is the loop itself, parameterised by what a batch is (the meta model's loop reuses it).

Reproducibility: the batch order of epoch e is a permutation drawn from a generator seeded with
(seed, e) (as torch's DistributedSampler does), and the Monte Carlo draws of the training loss are
keyed by (seed, e, trial) (`trial_draws`), so the state "epoch e, k batches done" (plus optimizer,
scheduler, counters and the global RNG, which validation uses) is enough to continue a run exactly,
also from the middle of an epoch, and a trial gets the same draws on whichever rank it lands.

Hooks: `on_epoch(record, is_best, state)` after every epoch and `on_interrupt(state)` when
`should_stop()` turns true (a preemption signal, train/signals.py; checked after every step, the loop
then raises `Preempted`). `state()` returns the resumable training state as tensors and plain data:
the caller decides where checkpoints go.

Divergence: a step whose loss or total gradient norm is not finite is skipped, the parameters and
the optimizer's moments are rolled back to where the epoch started (the last point known to give
finite losses for a whole epoch: parameters that just produced a non-finite loss usually keep doing
so, e.g. dynamics that became expansive), and the learning rate is halved; after MAX_DIVERGENCES
such halvings the next one raises RunFailure. A run resumed mid-epoch rolls back to where it resumed.
"""

from __future__ import annotations

import copy
import itertools
import math
import os
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, NamedTuple, Optional

import torch

from xfads_cli.config import TrainConfig
from xfads_cli.errors import RunFailure
from xfads_cli.train.distributed import SINGLE, Dist
from xfads_cli.train.signals import Preempted, signal_hook_for_tests

MAX_DIVERGENCES = 3
_MASK64 = (1 << 64) - 1


@dataclass
class FitResult:
    """history: one dict per epoch (epoch, train_loss, valid_loss, lr, seconds, + evaluate's metrics);
    losses are -ELBO per bin."""

    history: list[dict] = field(default_factory=list)
    best_epoch: int = -1
    best_valid_loss: float = math.inf
    best_state: Optional[dict] = None
    stopped: str = ""


def mix_seed(*values: int) -> int:
    """A 63-bit generator seed from a tuple of integers (splitmix64 chained over the values)."""
    h = 0
    for v in values:
        z = ((h ^ (int(v) & _MASK64)) + 0x9E3779B97F4A7C15) & _MASK64
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK64
        h = z ^ (z >> 31)
    return h & ((1 << 63) - 1)


def epoch_generator(seed: int, epoch: int) -> torch.Generator:
    """The CPU generator that shuffles epoch `epoch`: a function of (seed, epoch) only."""
    return torch.Generator().manual_seed(mix_seed(seed, epoch))


def trial_draws(model, y: torch.Tensor, keys: list[int], drop: float = 0.0):
    """Monte Carlo draws of XFADS's training loss, one generator per trial (keys[i] seeds trial i):
    (noise of model.noise_shape for the batch, keep mask [batch, time] of the local potentials or
    None when drop <= 0). A trial's draws do not depend on the batch it is in."""
    T = y.shape[1]
    dtype = next(model.parameters()).dtype
    shape = model.noise_shape(len(keys), T)  # [time, stream, batch, sample, column]
    # each trial's block is drawn contiguously (one generator call), then viewed batch-third
    buf = torch.empty((shape[2], shape[0], shape[1], *shape[3:]), dtype=dtype, device=y.device)
    keep = torch.empty((len(keys), T), dtype=torch.bool, device=y.device) if drop > 0 else None
    for i, key in enumerate(keys):
        g = torch.Generator(device=y.device).manual_seed(key)
        torch.randn(buf.shape[1:], generator=g, dtype=dtype, device=y.device, out=buf[i])
        if keep is not None:
            keep[i] = torch.rand(T, generator=g, device=y.device) >= drop
    return buf.permute(1, 2, 0, 3, 4), keep


def elbo_loss(model, y: torch.Tensor, drop_local: float = 0.0) -> torch.Tensor:
    """-ELBO per bin of a batch y: [batch, time, neuron] (Monte Carlo draws from the global RNG)."""
    terms = model.elbo(y, drop_local=drop_local)
    return -terms.elbo.sum() / (y.shape[0] * y.shape[1])


@torch.no_grad()
def evaluate_loss(model, y: torch.Tensor, batch_size: int) -> float:
    """Mean -ELBO per bin over all trials of y (no dropout)."""
    was_training = model.training
    model.eval()
    total = 0.0
    for start in range(0, y.shape[0], batch_size):
        chunk = y[start : start + batch_size]
        total += float(elbo_loss(model, chunk)) * chunk.shape[0]
    model.train(was_training)
    return total / max(y.shape[0], 1)


class TrialBatch(NamedTuple):
    """This rank's share of one global batch: trial indices, their weight (0: padding so that every
    rank has a batch) and the size of the global batch."""

    epoch: int
    trials: torch.Tensor
    weight: float
    total: int


def fit(
    model: torch.nn.Module,
    train_y: torch.Tensor,
    valid_y: torch.Tensor | None,
    cfg: TrainConfig,
    *,
    seed: int = 0,
    callback: Callable[[dict], None] | None = None,
    evaluate: Callable[[torch.nn.Module], dict] | None = None,
    on_epoch: Callable[[dict, bool, Callable[[], dict]], None] | None = None,
    resume: dict | None = None,
    max_epochs: int | None = None,
    dist: Dist | None = None,
    should_stop: Callable[[], bool] | None = None,
    on_interrupt: Callable[[Callable[[], dict]], None] | None = None,
) -> FitResult:
    """Train `model` on train_y [trial, time, neuron] (on the model's device), early-stopping on the
    -ELBO per bin of valid_y [trial, time, neuron]. Returns the history and the best parameters
    (already loaded into the model). `resume` is a state from `on_epoch`/`on_interrupt` to continue
    from; `dist` this process's rank (train/distributed.py), cfg.batch_size being the global batch."""
    d = dist or SINGLE
    n, T = train_y.shape[0], train_y.shape[1]
    keyed = hasattr(model, "noise_shape")  # XFADS: per-trial draws; other models: the global RNG

    def batches(epoch: int) -> Iterable[TrialBatch]:
        order = torch.randperm(n, generator=epoch_generator(seed, epoch))
        for start in range(0, n, cfg.batch_size):
            chunk = order[start : start + cfg.batch_size]
            mine, weight = chunk[d.rank :: d.world], 1.0
            if len(mine) == 0:  # fewer trials than ranks in the last batch
                mine, weight = chunk[:1], 0.0
            yield TrialBatch(epoch, mine, weight, len(chunk))

    def batch_loss(b: TrialBatch) -> torch.Tensor:
        y = train_y[b.trials.to(train_y.device)]
        if keyed:
            noise, keep = trial_draws(model, y, [mix_seed(seed, b.epoch, t) for t in b.trials.tolist()], cfg.drop_local)
            terms = model.elbo(y, noise=noise, local_mask=keep)
        else:
            terms = model.elbo(y, drop_local=cfg.drop_local)
        # sum over this rank's trials / (global batch x time), x world: DDP's average over ranks
        # then equals the single-process loss of the global batch
        return -terms.elbo.sum() * (b.weight * d.world / (b.total * T))

    has_valid = valid_y is not None and len(valid_y) > 0
    unused = getattr(getattr(model, "cfg", None), "mode", None) == "filter"  # no backward encoder
    return run_epochs(
        model, cfg, batches=batches, batch_loss=batch_loss,
        valid_loss=lambda: evaluate_loss(model, valid_y, cfg.batch_size) if has_valid else float("nan"),
        seed=seed, callback=callback, evaluate=evaluate, on_epoch=on_epoch, resume=resume, max_epochs=max_epochs,
        dist=d, should_stop=should_stop, on_interrupt=on_interrupt, find_unused_parameters=unused,
    )


class _BatchLoss(torch.nn.Module):
    """forward(batch) = the batch's loss, so that DDP (which hooks forward) wraps the real computation
    (model.elbo / model.loss, not model.forward). A FloatingPointError (a Cholesky of a non-finite
    matrix) becomes a NaN loss still connected to every parameter: it is then handled as any
    non-finite loss, identically on every rank."""

    def __init__(self, model: torch.nn.Module, fn: Callable[[Any], torch.Tensor], params: list):
        super().__init__()
        self.model = model
        self._fn, self._params = fn, params

    def forward(self, batch):
        try:
            return self._fn(batch)
        except FloatingPointError:
            return sum(p.sum() for p in self._params) * math.nan


def warmup_factor(updates: int, warmup_steps: int) -> float:
    """Linear learning-rate warm-up: update k (0-based) runs at min(1, (k + 1) / warmup_steps) x the
    scheduled rate."""
    return 1.0 if warmup_steps <= 0 else min(1.0, (updates + 1) / warmup_steps)


def _adam_step(opt: torch.optim.Optimizer, factor: float) -> None:
    """One optimiser step at `factor` x the scheduled learning rate, leaving the schedule untouched."""
    if factor >= 1.0:
        opt.step()
        return
    scheduled = [group["lr"] for group in opt.param_groups]
    for group in opt.param_groups:
        group["lr"] *= factor
    opt.step()
    for group, lr in zip(opt.param_groups, scheduled):
        group["lr"] = lr


class _Snapshot:
    """Parameters and optimizer state at one point, to roll back to after a non-finite step."""

    def __init__(self, params: list, opt: torch.optim.Optimizer):
        self.params, self.opt = params, opt
        self.values = [p.detach().clone() for p in params]
        self.opt_state = copy.deepcopy(opt.state_dict())

    def restore(self, lr_factor: float) -> None:
        """Back to the snapshot's parameters and moments, at lr_factor x the CURRENT learning rates (so
        successive halvings within one epoch compound)."""
        lrs = [group["lr"] * lr_factor for group in self.opt.param_groups]
        with torch.no_grad():
            for p, v in zip(self.params, self.values):
                p.copy_(v)
        # a copy each time: load_state_dict adopts the given tensors and Adam then updates them in place
        self.opt.load_state_dict(copy.deepcopy(self.opt_state))
        for group, lr in zip(self.opt.param_groups, lrs):
            group["lr"] = lr


def run_epochs(
    model: torch.nn.Module,
    cfg: TrainConfig,
    *,
    batches: Callable[[int], Iterable[Any]],
    batch_loss: Callable[[Any], torch.Tensor],
    valid_loss: Callable[[], float],
    parameters: Iterable[torch.nn.Parameter] | None = None,
    seed: int = 0,
    callback: Callable[[dict], None] | None = None,
    evaluate: Callable[[torch.nn.Module], dict] | None = None,
    on_epoch: Callable[[dict, bool, Callable[[], dict]], None] | None = None,
    resume: dict | None = None,
    max_epochs: int | None = None,
    dist: Dist | None = None,
    should_stop: Callable[[], bool] | None = None,
    on_interrupt: Callable[[Callable[[], dict]], None] | None = None,
    find_unused_parameters: bool = False,
) -> FitResult:
    """The epoch loop shared by `fit` and `fit_meta` (train/meta_loop.py), agnostic of what a batch is.

    batches(epoch): that epoch's batches in order, a function of (seed, epoch) only (the loop skips
    the first k when resuming mid-epoch); batch_loss(batch): scalar loss to minimise; valid_loss():
    validation score (NaN: none, the train loss is used for early stopping); parameters: what Adam
    trains (default: all of model's). With an active `dist`, valid_loss, evaluate, callback and the
    hooks run on rank 0 only and its decisions are broadcast."""
    d = dist or SINGLE
    torch.manual_seed(seed)
    params = list(model.parameters()) if parameters is None else list(parameters)
    device = params[0].device if params else torch.device("cpu")
    opt = torch.optim.Adam(params, lr=cfg.lr)
    sched = torch.optim.lr_scheduler.ExponentialLR(opt, gamma=cfg.lr_decay)
    result = FitResult()
    first_epoch, divergences, since_best, partial, updates = 0, 0, 0, None, 0
    if resume is not None:
        opt.load_state_dict(resume["optimizer"])
        sched.load_state_dict(resume["scheduler"])
        torch.set_rng_state(resume["rng"]["torch"])
        if device.type == "cuda" and resume["rng"].get("cuda") is not None:
            torch.cuda.set_rng_state(resume["rng"]["cuda"], device)
        first_epoch = resume["epoch"] + 1
        partial = resume.get("partial")
        divergences, since_best = resume["divergences"], resume["since_best"]
        updates = int(resume.get("updates", 0))
        result.history = list(resume["history"])
        result.best_epoch, result.best_valid_loss = resume["best"]["epoch"], resume["best"]["valid_loss"]
        result.best_state = resume.get("best_model")

    def state(done_epoch: int, in_epoch: dict | None = None) -> dict:
        """done_epoch: the last completed epoch; in_epoch: progress in the next one (mid-epoch save)."""
        rng = {"torch": torch.get_rng_state()}
        if device.type == "cuda":
            rng["cuda"] = torch.cuda.get_rng_state(device)
        return {
            "optimizer": opt.state_dict(),
            "scheduler": sched.state_dict(),
            "epoch": done_epoch,
            "partial": in_epoch,
            "divergences": divergences,
            "updates": updates,
            "since_best": since_best,
            "history": result.history,
            "best": {"epoch": result.best_epoch, "valid_loss": result.best_valid_loss},
            "rng": rng,
        }

    step_loss = d.wrap(_BatchLoss(model, batch_loss, params), find_unused_parameters)
    hook = signal_hook_for_tests()
    steps_done = 0
    start = time.monotonic()
    last_epoch = cfg.max_epochs if max_epochs is None else max_epochs
    model.train()
    result.stopped = f"max_epochs={last_epoch} reached"
    if resume is not None and partial is None and result.history and since_best >= cfg.patience:
        result.stopped = f"no validation improvement for {cfg.patience} epochs"  # a finished run, resumed
        first_epoch = max(first_epoch, last_epoch)
    for epoch in range(first_epoch, last_epoch):
        skip, losses, elapsed = 0, [], 0.0
        if partial is not None and partial["epoch"] == epoch:
            skip, losses, elapsed = int(partial["step"]), list(partial["losses"]), float(partial["seconds"])
        partial = None
        t0 = time.monotonic() - elapsed
        rollback = _Snapshot(params, opt)
        step = skip
        for batch in itertools.islice(batches(epoch), skip, None):
            opt.zero_grad(set_to_none=True)
            loss = step_loss(batch)
            loss.backward()
            norm = torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
            step += 1
            steps_done += 1
            if hook is not None and steps_done == hook[0]:
                os.kill(os.getpid(), hook[1])  # test-only (signals.TEST_SIGNAL_ENV)
            value, bad_grad = loss.item(), not bool(torch.isfinite(norm))
            stop = should_stop is not None and should_stop()
            if d.active:  # one collective per step: everyone skips, steps and stops together
                total, bad, stops = d.all_sum([value, float(bad_grad), float(stop)])
                value, bad_grad, stop = total / d.world, bad > 0, stops > 0
            if math.isfinite(value) and not bad_grad:
                _adam_step(opt, warmup_factor(updates, cfg.warmup_steps))
                updates += 1
                losses.append(value)
            else:
                opt.zero_grad(set_to_none=True)
                divergences += 1
                if divergences > MAX_DIVERGENCES:
                    what = "gradient" if math.isfinite(value) else "loss"
                    raise RunFailure(f"non-finite {what} {divergences} times (last at epoch {epoch}, step {step}) "
                                     f"although the learning rate was halved {MAX_DIVERGENCES} times; lower train.lr")
                rollback.restore(lr_factor=0.5)
            if stop:
                snapshot = {"epoch": epoch, "step": step, "losses": list(losses), "seconds": time.monotonic() - t0}
                if on_interrupt is not None:
                    on_interrupt(lambda: state(epoch - 1, snapshot))
                d.barrier()
                raise Preempted(f"stopped at epoch {epoch}, step {step}")
        sched.step()
        if not bool(torch.stack([torch.isfinite(p).all() for p in params]).all()):
            raise RunFailure(f"parameters became non-finite during epoch {epoch}; lower train.lr")
        record = time_up = stop = None
        if d.is_main:
            record = {
                "epoch": epoch,
                "train_loss": sum(losses) / len(losses) if losses else math.nan,
                "valid_loss": valid_loss(),
                "lr": opt.param_groups[0]["lr"],
            }
            if evaluate is not None:
                record.update(evaluate(model))
            record["seconds"] = time.monotonic() - t0
            time_up = cfg.time_limit_min is not None and time.monotonic() - start > 60 * cfg.time_limit_min
            stop = should_stop is not None and should_stop()
        record, time_up, stop = d.broadcast((record, time_up, stop))
        result.history.append(record)
        score = record["valid_loss"] if math.isfinite(record["valid_loss"]) else record["train_loss"]
        is_best = score < result.best_valid_loss
        if is_best:
            result.best_valid_loss, result.best_epoch, since_best = score, epoch, 0
            result.best_state = copy.deepcopy(model.state_dict())
        else:
            since_best += 1
        if callback is not None:
            callback(record)
        if on_epoch is not None:
            on_epoch(record, is_best, lambda: state(epoch))
        elif stop and on_interrupt is not None:
            on_interrupt(lambda: state(epoch))
        if stop:
            d.barrier()
            raise Preempted(f"stopped after epoch {epoch}")
        if since_best >= cfg.patience:
            result.stopped = f"no validation improvement for {cfg.patience} epochs"
            break
        if time_up:
            result.stopped = f"time limit of {cfg.time_limit_min:g} min reached"
            break
    if result.best_state is not None:
        model.load_state_dict(result.best_state)
    return result
