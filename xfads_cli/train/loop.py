"""One readable training loop (nanoGPT-style): Adam, exponential lr decay, gradient clipping, early
stopping on the validation loss, a time limit, divergence handling, resumable state and hooks.

    result = fit(model, train_y, valid_y, cfg, seed=0, evaluate=fn, on_epoch=fn, resume=state)

`run_epochs` is the loop itself, parameterised by what a batch is (the meta model's loop reuses it).

`on_epoch(record, is_best, state)` is called after every epoch with `state()` returning the
resumable training state (optimizer, scheduler, counters, RNG) as tensors and plain data: the
caller decides where checkpoints go.
"""

from __future__ import annotations

import copy
import math
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Optional

import torch

from xfads_cli.config import TrainConfig
from xfads_cli.errors import RunFailure

MAX_DIVERGENCES = 3


@dataclass
class FitResult:
    """history: one dict per epoch (epoch, train_loss, valid_loss, lr, seconds, + evaluate's metrics);
    losses are -ELBO per bin."""

    history: list[dict] = field(default_factory=list)
    best_epoch: int = -1
    best_valid_loss: float = math.inf
    best_state: Optional[dict] = None
    stopped: str = ""


def elbo_loss(model, y: torch.Tensor, drop_local: float = 0.0) -> torch.Tensor:
    """-ELBO per bin of a batch y: [batch, time, neuron]."""
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
) -> FitResult:
    """Train `model` on train_y [trial, time, neuron] (on the model's device), early-stopping on the
    -ELBO per bin of valid_y [trial, time, neuron]. Returns the history and the best parameters
    (already loaded into the model). `resume` is a state from `on_epoch` to continue from."""

    def batches(gen: torch.Generator) -> Iterable[torch.Tensor]:
        order = torch.randperm(train_y.shape[0], generator=gen)
        return (train_y[order[i : i + cfg.batch_size].to(train_y.device)] for i in range(0, len(order), cfg.batch_size))

    has_valid = valid_y is not None and len(valid_y) > 0
    return run_epochs(
        model, cfg, batches=batches,
        batch_loss=lambda batch: elbo_loss(model, batch, drop_local=cfg.drop_local),
        valid_loss=lambda: evaluate_loss(model, valid_y, cfg.batch_size) if has_valid else float("nan"),
        seed=seed, callback=callback, evaluate=evaluate, on_epoch=on_epoch, resume=resume, max_epochs=max_epochs,
    )


def run_epochs(
    model: torch.nn.Module,
    cfg: TrainConfig,
    *,
    batches: Callable[[torch.Generator], Iterable[Any]],
    batch_loss: Callable[[Any], torch.Tensor],
    valid_loss: Callable[[], float],
    parameters: Iterable[torch.nn.Parameter] | None = None,
    seed: int = 0,
    callback: Callable[[dict], None] | None = None,
    evaluate: Callable[[torch.nn.Module], dict] | None = None,
    on_epoch: Callable[[dict, bool, Callable[[], dict]], None] | None = None,
    resume: dict | None = None,
    max_epochs: int | None = None,
) -> FitResult:
    """The epoch loop shared by `fit` and `fit_meta` (train/meta_loop.py), agnostic of what a batch is.

    batches(gen): one epoch's batches in order (shuffled with `gen`, the loop's seeded generator);
    batch_loss(batch): scalar loss to minimise; valid_loss(): validation score (NaN: none, the train
    loss is used for early stopping); parameters: what Adam trains (default: all of model's)."""
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    params = list(model.parameters()) if parameters is None else list(parameters)
    opt = torch.optim.Adam(params, lr=cfg.lr)
    sched = torch.optim.lr_scheduler.ExponentialLR(opt, gamma=cfg.lr_decay)
    result = FitResult()
    first_epoch, divergences, since_best = 0, 0, 0
    if resume is not None:
        opt.load_state_dict(resume["optimizer"])
        sched.load_state_dict(resume["scheduler"])
        gen.set_state(resume["rng"]["shuffle"])
        torch.set_rng_state(resume["rng"]["torch"])
        first_epoch = resume["epoch"] + 1
        divergences, since_best = resume["divergences"], resume["since_best"]
        result.history = list(resume["history"])
        result.best_epoch, result.best_valid_loss = resume["best"]["epoch"], resume["best"]["valid_loss"]
        result.best_state = resume.get("best_model")

    def state(epoch: int) -> dict:
        return {
            "optimizer": opt.state_dict(),
            "scheduler": sched.state_dict(),
            "epoch": epoch,
            "divergences": divergences,
            "since_best": since_best,
            "history": result.history,
            "best": {"epoch": result.best_epoch, "valid_loss": result.best_valid_loss},
            "rng": {"shuffle": gen.get_state(), "torch": torch.get_rng_state()},
        }

    start = time.monotonic()
    last_epoch = cfg.max_epochs if max_epochs is None else max_epochs
    model.train()
    result.stopped = f"max_epochs={last_epoch} reached"
    for epoch in range(first_epoch, last_epoch):
        t0 = time.monotonic()
        losses = []
        for batch in batches(gen):
            loss = batch_loss(batch)
            opt.zero_grad(set_to_none=True)
            if not torch.isfinite(loss):
                divergences += 1
                if divergences > MAX_DIVERGENCES:
                    raise RunFailure(f"the loss diverged {divergences} times (last at epoch {epoch}); lower train.lr")
                for group in opt.param_groups:
                    group["lr"] *= 0.5
                continue
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
            opt.step()
            losses.append(loss.item())
        sched.step()
        record = {
            "epoch": epoch,
            "train_loss": sum(losses) / max(len(losses), 1),
            "valid_loss": valid_loss(),
            "lr": opt.param_groups[0]["lr"],
        }
        if evaluate is not None:
            record.update(evaluate(model))
        record["seconds"] = time.monotonic() - t0
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
        if since_best >= cfg.patience:
            result.stopped = f"no validation improvement for {cfg.patience} epochs"
            break
        if cfg.time_limit_min is not None and time.monotonic() - start > 60 * cfg.time_limit_min:
            result.stopped = f"time limit of {cfg.time_limit_min:g} min reached"
            break
    if result.best_state is not None:
        model.load_state_dict(result.best_state)
    return result
