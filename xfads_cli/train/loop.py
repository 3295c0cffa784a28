"""One readable training loop (nanoGPT-style): Adam, gradient clipping, model selection and early
stopping on a validation score, a time limit checked after every step, divergence handling,
preemption, resumable state and data-parallel ranks.

    training = train_model(model, train_y, valid_y, cfg, seed=0, evaluate=fn, resume=state)  # or per-session lists
    for event in training:            # EpochEnd(record, is_best, state) after every epoch,
        ...                           # Interrupted(state) when a stop was requested mid-epoch
    result = training.result          # or: result = train_model(...).run()

`train_model` trains either model kind (a batch is some trials of one session) by handing `run_epochs` an
`Objective` (the batches of an epoch, a batch's loss, the validation loss) and the caller's `Hooks`.
`run_epochs` builds the Training: per epoch `_Loop.train_epoch` (the optimisation steps) then
`_Loop.end_epoch` (validate, record, select, decide whether to stop); `LoopState` holds the counters a
resumed run continues from. The learning rate and the budget are train/schedule.py's; the batch order
and the Monte Carlo draws are keyed by (seed, epoch, trial) in train/draws.py, so the state "epoch e,
k batches done" (plus optimizer, schedule budget, counters and the global RNG, which validation uses)
is enough to continue a run exactly, also from the middle of an epoch.

Events, not callbacks: the loop yields and the caller decides where checkpoints, progress and logs go.
`state()` of an event returns the resumable training state as tensors and plain data. When
`should_stop()` turns true (a preemption signal, train/signals.py; polled after every step) the loop
yields the state to save, then raises `Preempted` on every rank.

Divergence: a step whose loss or total gradient norm is not finite is skipped, the parameters and
the optimizer's moments are rolled back to where the epoch started (the last point known to give
finite losses for a whole epoch: parameters that just produced a non-finite loss usually keep doing
so, e.g. dynamics that became expansive), and the learning rate is halved; after MAX_DIVERGENCES
such halvings the next one raises RunFailure. A run resumed mid-epoch rolls back to where it resumed.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Iterator, NamedTuple, Optional, Sequence

import torch

from xfads_cli.config import TrainConfig
from xfads_cli.errors import RunFailure
from xfads_cli.train.distributed import SINGLE, Dist
from xfads_cli.train.draws import TrialBatch, auto_batch_size, epoch_batches, mix_seed, trial_draws
from xfads_cli.train.schedule import Budget, anneal_factor, max_epochs_reached, stalled, warmup_factor
from xfads_cli.train.signals import Preempted
from xfads_cli.train.threads import ThreadTuner

MAX_DIVERGENCES = 3


@dataclass
class FitResult:
    """history: one dict per epoch (epoch, train_loss, valid_loss, lr, seconds, + evaluate's metrics);
    losses are -ELBO per bin."""

    history: list[dict] = field(default_factory=list)
    best_epoch: int = -1
    best_score: float = math.inf  # the value of `select` at best_epoch
    best_state: Optional[dict] = None
    stopped: str = ""
    select: str = "valid_loss"  # the record key the best epoch was chosen by


@dataclass(frozen=True)
class Objective:
    """What a run optimises, whatever a batch is. batches(epoch): that epoch's batches in order, a
    function of (seed, epoch) only (the loop skips the first k when resuming mid-epoch);
    batch_loss(batch): the scalar loss to minimise; valid_loss(): validation -ELBO per bin (NaN: none);
    parameters: what Adam trains (None: all of the model's); find_unused_parameters: some parameters
    may get no gradient from a step (DDP must then look for them)."""

    batches: Callable[[int], Iterable[Any]]
    batch_loss: Callable[[Any], torch.Tensor]
    valid_loss: Callable[[], float]
    parameters: Optional[Sequence[torch.nn.Parameter]] = None
    find_unused_parameters: bool = False


@dataclass(frozen=True)
class Hooks:
    """What the caller adds to a run. evaluate(model): extra metrics for each epoch's record (rank 0
    only); should_stop(): polled after every step (a preemption signal, train/signals.py); threads:
    told the wall time of every step (train/threads.py)."""

    evaluate: Optional[Callable[[torch.nn.Module], dict]] = None
    should_stop: Optional[Callable[[], bool]] = None
    threads: Optional[ThreadTuner] = None


@torch.no_grad()
def evaluate_loss(model, y: torch.Tensor, batch_size: int, session: int = 0, u: torch.Tensor | None = None) -> float:
    """Mean -ELBO per bin (model.batch_loss in eval mode, draws from the global RNG) over all trials
    y [trial, time, neuron] of `session` (u: their task inputs [trial, time, input], or None)."""
    was_training = model.training
    model.eval()
    total = 0.0
    for start in range(0, y.shape[0], batch_size):
        chunk = y[start : start + batch_size]
        extra = {} if u is None else {"u": u[start : start + batch_size]}
        loss = model.batch_loss(chunk, session, share=0.0, **extra) if extra else model.batch_loss(chunk, session)
        total += float(loss / (chunk.shape[0] * chunk.shape[1])) * chunk.shape[0]
    model.train(was_training)
    return total / max(y.shape[0], 1)


def _present(y: torch.Tensor | None) -> bool:
    return y is not None and len(y) > 0


def train_model(
    model: torch.nn.Module,
    train: torch.Tensor | Sequence[torch.Tensor | None],
    valid: torch.Tensor | Sequence[torch.Tensor | None] | None,
    cfg: TrainConfig,
    *,
    seed: int = 0,
    parameters: Iterable[torch.nn.Parameter] | None = None,
    dist: Dist | None = None,
    inputs: tuple[Sequence[torch.Tensor | None], Sequence[torch.Tensor | None]] | None = None,
    select: str = "valid_loss",
    resume: dict | None = None,
    max_epochs: int | None = None,
    evaluate: Callable[[torch.nn.Module], dict] | None = None,
    should_stop: Callable[[], bool] | None = None,
    threads: ThreadTuner | None = None,
) -> Training:
    """Training of `model` (XFADS: one session, or many with a session embedding) on train
    [trial, time, neuron] or, per session, train[i] [trial, time, neuron_i] (None or empty: not
    trained on), early-stopping on the -ELBO per bin of the validation trials (mean over sessions) or
    on `select`. Iterate it, or `.run()` it for the FitResult (history; the best parameters are then
    loaded into the model).

    parameters: what to train (default: every parameter with requires_grad; few-shot adaptation passes
    one session's). dist: this process's rank (train/distributed.py), cfg.batch_size being the global
    batch. inputs: (train, valid) task inputs per session, [trial, time, input] aligned with the trials
    (None entries: that session has none; model/task_inputs.py). select, resume (a state an event's
    `state()` returned, to continue from), max_epochs: as in `run_epochs`; evaluate, should_stop,
    threads: its `Hooks`.

    Monte Carlo draws: trial k of the concatenated sessions in epoch e draws from mix_seed(seed, e, k)."""
    d = dist or SINGLE
    trains = [train] if torch.is_tensor(train) else list(train)
    valids = [valid] if valid is None or torch.is_tensor(valid) else list(valid)
    if len(trains) > model.n_sessions:
        raise ValueError(f"{len(trains)} training sessions for a model with {model.n_sessions}")
    sizes = [len(y) if _present(y) else 0 for y in trains]
    if not any(sizes):
        raise ValueError("train_model: no session has training trials")
    offsets = [sum(sizes[:i]) for i in range(len(sizes))]
    train_u, valid_u = inputs if inputs is not None else ([None] * len(trains), [None] * len(valids))
    steps_per_epoch = len(epoch_batches(sizes, cfg.batch_size, seed, 0, SINGLE))

    def batch_loss(b: TrialBatch) -> torch.Tensor:
        y = trains[b.session][b.trials.to(trains[b.session].device)]
        input_drop = cfg.input_dropout if b.epoch * steps_per_epoch >= cfg.input_dropout_from_step else 0.0
        keys = [mix_seed(seed, b.epoch, offsets[b.session] + t) for t in b.trials.tolist()]
        draws = trial_draws(model, y, keys, cfg.drop_local, cfg.forecast_fraction, cfg.samples, input_drop, b.session)
        u = train_u[b.session]
        extra = {} if u is None else {"u": u[b.trials.to(u.device)]}
        # share: this batch's part of one pass over the session's training trials (per-session terms)
        share = len(b.trials) / (b.total if model.embed_dim else sizes[b.session])
        loss = model.batch_loss(y, b.session, share=share, n_samples=cfg.samples, **draws._asdict(), **extra)
        # sum over this rank's trials / (global batch x time), x world: DDP's average over ranks
        # then equals the single-process loss of the global batch
        return loss * (b.weight * d.world / (b.total * y.shape[1]))

    scored = [(i, y) for i, y in enumerate(valids) if _present(y)]

    def valid_loss() -> float:
        losses = [evaluate_loss(model, y, cfg.batch_size or auto_batch_size(sizes[i] or len(y)), i, valid_u[i])
                  for i, y in scored]
        return sum(losses) / len(losses) if losses else math.nan

    objective = Objective(
        batches=lambda epoch: epoch_batches(sizes, cfg.batch_size, seed, epoch, d), batch_loss=batch_loss,
        valid_loss=valid_loss,
        parameters=[p for p in model.parameters() if p.requires_grad] if parameters is None else list(parameters),
        # parameters a step may not reach: the backward encoder (filter mode), other sessions' read-in/readout
        find_unused_parameters=model.cfg.mode == "filter" or model.n_sessions > 1,
    )
    hooks = Hooks(evaluate=evaluate, should_stop=should_stop, threads=threads)
    return run_epochs(model, cfg, objective, hooks, seed=seed, select=select, resume=resume, max_epochs=max_epochs,
                      dist=d)


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


def _set_lr(opt: torch.optim.Optimizer, lr: float) -> None:
    for group in opt.param_groups:
        group["lr"] = lr


class _Snapshot:
    """Parameters and optimizer state at one point, to roll back to after a non-finite step."""

    def __init__(self, params: list, opt: torch.optim.Optimizer):
        self.params, self.opt = params, opt
        self.values = [p.detach().clone() for p in params]
        self.opt_state = copy.deepcopy(opt.state_dict())

    def restore(self) -> None:
        """Back to the snapshot's parameters and moments (the loop sets the learning rate per step)."""
        with torch.no_grad():
            for p, v in zip(self.params, self.values):
                p.copy_(v)
        # a copy each time: load_state_dict adopts the given tensors and Adam then updates them in place
        self.opt.load_state_dict(copy.deepcopy(self.opt_state))


@dataclass
class LoopState:
    """The loop's counters: with the parameters, Adam's moments, the global RNG and the FitResult so
    far, what a resumed run needs to continue exactly (saved by `_Loop.state` under these names)."""

    budget: Budget
    first_epoch: int = 0
    partial: Optional[dict] = None  # the position inside an interrupted epoch
    divergences: int = 0
    since_best: int = 0
    best_progress: float = 0.0  # budget progress at the best epoch (early stopping, see `stalled`)
    updates: int = 0
    seconds_before: float = 0.0  # training seconds before this invocation
    seconds: float = 0.0  # training seconds of the whole run, the same number on every rank
    lr_scale: float = 1.0

    @classmethod
    def resumed(cls, resume: dict, budget: Budget, cfg: TrainConfig, last_epoch: int) -> "LoopState":
        first_epoch, partial = resume["epoch"] + 1, resume.get("partial")
        divergences, seconds = resume["divergences"], float(resume.get("seconds", 0.0))
        if resume.get("budget") is not None:
            saved = Budget(**resume["budget"])
            done = partial["epoch"] + partial["step"] / max(partial.get("steps", 1), 1) if partial else first_epoch
            if saved.progress(done, seconds) < 1.0:
                budget = saved  # the run's own schedule goes on
            else:  # its schedule had ended: a new one over this invocation's budget
                budget = Budget(last_epoch - first_epoch, cfg.time_limit_min, first_epoch, seconds)
        return cls(budget, first_epoch, partial, divergences, resume["since_best"],
                   float(resume.get("best_progress", 0.0)), int(resume.get("updates", 0)), seconds, seconds,
                   float(resume.get("lr_scale", 0.5 ** divergences)))


class _Loop:
    """One run of `run_epochs`: the optimiser, the DDP-wrapped loss, the counters and the result, with
    one method per phase (`train_epoch`, `end_epoch`) and the resumable `state`."""

    def __init__(self, model, cfg: TrainConfig, params: list, step_loss, *, objective: Objective, hooks: Hooks,
                 select: str, dist: Dist):
        self.model, self.cfg, self.params, self.step_loss, self.d = model, cfg, params, step_loss, dist
        self.objective, self.hooks, self.select = objective, hooks, select
        self.device = params[0].device if params else torch.device("cpu")
        self.opt = torch.optim.Adam(params, lr=cfg.lr)
        self.result = FitResult(select=select)
        self.minimise = select.endswith("_loss")
        self.start = time.monotonic()

    def restore(self, resume: Optional[dict], budget: Budget, last_epoch: int) -> LoopState:
        """Adam's moments, the RNG and the result so far from a resumable state; the counters to go on with."""
        if resume is None:
            self.result.best_score = math.inf if self.minimise else -math.inf
            return LoopState(budget)
        self.opt.load_state_dict(resume["optimizer"])
        torch.set_rng_state(resume["rng"]["torch"])
        if self.device.type == "cuda" and resume["rng"].get("cuda") is not None:
            torch.cuda.set_rng_state(resume["rng"]["cuda"], self.device)
        r, best = self.result, resume["best"]
        r.history, r.best_epoch, r.best_state = list(resume["history"]), best["epoch"], resume.get("best_model")
        r.best_score = best.get("score", best.get("valid_loss", math.inf))
        if r.best_epoch < 0:
            r.best_score = math.inf if self.minimise else -math.inf
        return LoopState.resumed(resume, budget, self.cfg, last_epoch)

    def state(self, done_epoch: int, in_epoch: Optional[dict] = None) -> dict:
        """done_epoch: the last completed epoch; in_epoch: progress in the next one (mid-epoch save)."""
        ls, r = self.ls, self.result
        rng = {"torch": torch.get_rng_state()}
        if self.device.type == "cuda":
            rng["cuda"] = torch.cuda.get_rng_state(self.device)
        return {
            "optimizer": self.opt.state_dict(), "epoch": done_epoch, "partial": in_epoch,
            "divergences": ls.divergences, "updates": ls.updates, "lr_scale": ls.lr_scale, "seconds": ls.seconds,
            "budget": dataclasses.asdict(ls.budget), "since_best": ls.since_best, "best_progress": ls.best_progress,
            "history": r.history, "best": {"epoch": r.best_epoch, "score": r.best_score, "key": self.select},
            "rng": rng,
        }

    def _stop_requested(self) -> bool:
        return self.hooks.should_stop is not None and self.hooks.should_stop()

    def out_of_time(self) -> bool:
        return self.cfg.time_limit_min is not None and time.monotonic() - self.start > 60 * self.cfg.time_limit_min

    def train_epoch(self, epoch: int) -> tuple[list[float], float, bool, Optional[dict]]:
        """The optimisation steps of `epoch` (from where an interrupted run stopped): (the steps' losses,
        the epoch's start on the monotonic clock, whether the time limit ended it, and when a stop was
        requested the position reached, for the mid-epoch state)."""
        ls, cfg, d = self.ls, self.cfg, self.d
        skip, losses, elapsed = 0, [], 0.0
        if ls.partial is not None and ls.partial["epoch"] == epoch:
            skip, losses, elapsed = int(ls.partial["step"]), list(ls.partial["losses"]), float(ls.partial["seconds"])
        ls.partial = None
        t0 = time.monotonic() - elapsed
        rollback = _Snapshot(self.params, self.opt)
        batches = list(self.objective.batches(epoch))
        step, time_up = skip, False
        for batch in batches[skip:]:
            step_start = time.monotonic()
            progress = ls.budget.progress(epoch + step / len(batches), ls.seconds)
            _set_lr(self.opt, cfg.lr * ls.lr_scale * warmup_factor(ls.updates, cfg.warmup_steps)
                    * anneal_factor(cfg, epoch, progress))
            self.opt.zero_grad(set_to_none=True)
            loss = self.step_loss(batch)
            loss.backward()
            norm = torch.nn.utils.clip_grad_norm_(self.params, cfg.grad_clip)
            step += 1
            value, bad_grad = loss.item(), not bool(torch.isfinite(norm))
            stop = self._stop_requested()
            time_up = self.out_of_time()
            ls.seconds = ls.seconds_before + time.monotonic() - self.start
            if d.active:  # one collective per step: everyone skips, steps, stops and anneals together
                total, bad, stops, ups, secs = d.all_sum([value, float(bad_grad), float(stop), float(time_up), ls.seconds])
                value, bad_grad, stop, time_up, ls.seconds = total / d.world, bad > 0, stops > 0, ups > 0, secs / d.world
            if math.isfinite(value) and not bad_grad:
                self.opt.step()
                ls.updates += 1
                losses.append(value)
                if self.hooks.threads is not None:
                    self.hooks.threads.after_step(time.monotonic() - step_start)
            else:
                self._diverged(value, epoch, step, rollback)
            if stop:
                return losses, t0, time_up, {"epoch": epoch, "step": step, "steps": len(batches),
                                             "losses": list(losses), "seconds": time.monotonic() - t0}
            schedule_done = cfg.schedule == "cosine" and ls.budget.progress(
                epoch + step / len(batches), ls.seconds) >= 1
            if time_up or schedule_done:
                break
        return losses, t0, time_up, None

    def _diverged(self, value: float, epoch: int, step: int, rollback: "_Snapshot") -> None:
        """A non-finite loss or gradient: skip the step, roll back, halve the learning rate."""
        self.opt.zero_grad(set_to_none=True)
        self.ls.divergences += 1
        if self.ls.divergences > MAX_DIVERGENCES:
            what = "gradient" if math.isfinite(value) else "loss"
            raise RunFailure(f"non-finite {what} {self.ls.divergences} times (last at epoch {epoch}, step {step}) "
                             f"although the learning rate was halved {MAX_DIVERGENCES} times; lower train.lr")
        rollback.restore()
        self.ls.lr_scale *= 0.5

    def end_epoch(self, epoch: int, losses: list[float], t0: float, time_up: bool,
                  last_epoch: int) -> tuple[dict, bool, bool, bool]:
        """Validate, record and select after `epoch`: (its record, whether it is the best so far, whether
        a stop was requested, whether the run ends here)."""
        ls, r, d = self.ls, self.result, self.d
        if not bool(torch.stack([torch.isfinite(p).all() for p in self.params]).all()):
            raise RunFailure(f"parameters became non-finite during epoch {epoch}; lower train.lr")
        record = stop = None
        if d.is_main:
            record = {"epoch": epoch, "train_loss": sum(losses) / len(losses) if losses else math.nan,
                      "valid_loss": self.objective.valid_loss(), "lr": self.opt.param_groups[0]["lr"]}
            if self.hooks.evaluate is not None:
                record.update(self.hooks.evaluate(self.model))
            record["seconds"] = time.monotonic() - t0
            stop = self._stop_requested()
        record, stop, time_up_end = d.broadcast((record, stop, self.out_of_time() if d.is_main else None))
        r.history.append(record)
        ls.seconds = ls.seconds_before + time.monotonic() - self.start
        if d.active:  # rank 0's clock, so that every rank anneals and stops alike
            ls.seconds = d.broadcast(ls.seconds)
        is_best = self._select(record, epoch)
        return record, is_best, bool(stop), self._ends(epoch, time_up or time_up_end, last_epoch)

    def _ends(self, epoch: int, time_up: bool, last_epoch: int) -> bool:
        """Whether the run ends after `epoch` (early stopping, time limit, schedule done), saying why."""
        ls, r, cfg = self.ls, self.result, self.cfg
        progress = ls.budget.progress(epoch + 1, ls.seconds)
        if stalled(cfg, ls.since_best, progress, ls.best_progress):
            r.stopped = f"no validation improvement for {cfg.patience} epochs" + (
                " nor in the first half of the learning-rate anneal" if cfg.schedule == "cosine" else "")
            return True
        if time_up:
            r.stopped = f"time limit of {cfg.time_limit_min:g} min reached"
            return True
        if cfg.schedule == "cosine" and progress >= 1 and epoch + 1 < last_epoch:
            r.stopped = "learning-rate schedule completed (the run's time budget)"
            return True
        return False

    def _select(self, record: dict, epoch: int) -> bool:
        """Whether `epoch` is the best so far by `select` (keeping its parameters if so)."""
        ls, r = self.ls, self.result
        score, higher = _selection_score(record, self.select)
        if higher != self.minimise:
            is_best = score > r.best_score if higher else score < r.best_score
        else:  # the selected score is missing this epoch (e.g. a forecast that blew up): not an improvement
            is_best, score = r.best_epoch < 0, (math.inf if self.minimise else -math.inf)
        if is_best:
            r.best_score, r.best_epoch, ls.since_best = score, epoch, 0
            ls.best_progress = ls.budget.progress(epoch + 1, ls.seconds)
            r.best_state = copy.deepcopy(self.model.state_dict())
        else:
            ls.since_best += 1
        return is_best


class EpochEnd(NamedTuple):
    """Yielded after every epoch: its record, whether it is the best so far, and the resumable state
    (a call, so that only a caller that saves pays for it). A stop requested during the epoch raises
    Preempted when the caller asks for the next event, after it has saved this one."""

    record: dict
    is_best: bool
    state: Callable[[], dict]


class Interrupted(NamedTuple):
    """Yielded when a stop was requested mid-epoch: the exact mid-epoch state to save; asking for the
    next event raises Preempted (on every rank together)."""

    state: Callable[[], dict]


class Training:
    """A training run to iterate: `for event in training` yields EpochEnd / Interrupted while the caller
    saves checkpoints, draws progress and logs (train/loop.py's module docstring); `result` once it
    ended (the best parameters then loaded into the model). `run()` iterates without looking."""

    def __init__(self, loop: _Loop, first_epoch: int, last_epoch: int):
        self.loop, self.first_epoch, self.last_epoch = loop, first_epoch, last_epoch
        self.result = loop.result

    def __iter__(self) -> Iterator[EpochEnd | Interrupted]:
        loop, d = self.loop, self.loop.d
        loop.model.train()
        for epoch in range(self.first_epoch, self.last_epoch):
            losses, t0, time_up, interrupted = loop.train_epoch(epoch)
            if interrupted is not None:
                yield Interrupted(lambda: loop.state(epoch - 1, interrupted))
                d.barrier()
                raise Preempted(f"stopped at epoch {epoch}, step {interrupted['step']}")
            record, is_best, stop, ends = loop.end_epoch(epoch, losses, t0, time_up, self.last_epoch)
            yield EpochEnd(record, is_best, lambda: loop.state(epoch))
            if stop:
                d.barrier()
                raise Preempted(f"stopped after epoch {epoch}")
            if ends:
                break
        if self.result.best_state is not None:
            loop.model.load_state_dict(self.result.best_state)

    def run(self) -> FitResult:
        for _ in self:
            pass
        return self.result


def run_epochs(
    model: torch.nn.Module,
    cfg: TrainConfig,
    objective: Objective,
    hooks: Hooks = Hooks(),
    *,
    seed: int = 0,
    select: str = "valid_loss",
    resume: dict | None = None,
    max_epochs: int | None = None,
    dist: Dist | None = None,
) -> Training:
    """The training `train_model` runs, agnostic of what a batch is: returns the Training of `objective` to
    iterate (nothing runs before that), `hooks` called as it goes.

    select: the epoch record's key that picks the best epoch and drives early stopping: a loss
    ("*_loss", lower is better) or a score (higher is better, e.g. "valid_fp_bps" from `evaluate`);
    epochs where it is missing or not finite fall back to valid_loss, then train_loss.
    The learning rate of each update is cfg.lr x warm-up x schedule (`anneal_factor`) x 0.5 per
    divergence. The budget (`Budget`: max_epochs and cfg.time_limit_min) is checked after every step:
    a time limit ends the epoch early, which is then validated and recorded as usual. max_epochs
    (default cfg.max_epochs) counts the run's epochs from its start, those before a resume included.
    With an active `dist`, valid_loss and evaluate run on rank 0 only and its decisions (and records)
    are broadcast."""
    d = dist or SINGLE
    torch.manual_seed(seed)
    params = list(model.parameters()) if objective.parameters is None else list(objective.parameters)
    step_loss = d.wrap(_BatchLoss(model, objective.batch_loss, params), objective.find_unused_parameters)
    loop = _Loop(model, cfg, params, step_loss, objective=objective, hooks=hooks, select=select, dist=d)
    last_epoch = cfg.max_epochs if max_epochs is None else max_epochs
    loop.ls = ls = loop.restore(resume, Budget(last_epoch, cfg.time_limit_min), last_epoch)
    result = loop.result
    first_epoch = ls.first_epoch
    result.stopped = max_epochs_reached(last_epoch, first_epoch if resume is not None else 0)
    if resume is not None and ls.partial is None and result.history and stalled(
            cfg, ls.since_best, ls.budget.progress(first_epoch, ls.seconds_before), ls.best_progress):
        result.stopped = f"no validation improvement for {cfg.patience} epochs"  # a finished run, resumed
        first_epoch = max(first_epoch, last_epoch)
    return Training(loop, first_epoch, last_epoch)


def _selection_score(record: dict, select: str) -> tuple[float, bool]:
    """(score, higher_is_better) of an epoch record: record[select] when finite, else the validation
    loss, else the training loss (losses: lower is better)."""
    for key in (select, "valid_loss", "train_loss"):
        value = record.get(key)
        if value is not None and math.isfinite(value):
            return float(value), not key.endswith("_loss")
    return math.inf, False
