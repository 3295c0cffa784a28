"""Training loop of the meta-dynamical model (MODEL.md section 6) over many sessions at once.

    result = fit_meta(model, [y_1, y_2, ...], [v_1, v_2, ...], cfg, seed=0)

Each epoch every session's training trials are cut into batches of cfg.batch_size (a batch never mixes
sessions, whose neuron counts differ, so nothing is padded) and all batches of all sessions are
shuffled together, so the shared parameters see the sessions interleaved. Everything else (Adam,
exponential lr decay, clipping, early stopping, divergence handling, hooks, resume) is
`train.loop.run_epochs`, the single-session loop.

Few-shot adaptation trains one new session with the shared parameters frozen:

    i = model.add_session(spec, y_new); model.freeze_shared()
    fit_meta(model, [None] * i + [y_new], [None] * i + [v_new], cfg, parameters=model.session_parameters(i))
"""

from __future__ import annotations

import math
from typing import Callable, Iterable, Sequence

import torch

from xfads_cli.config import TrainConfig
from xfads_cli.train.loop import FitResult, run_epochs


@torch.no_grad()
def evaluate_meta_loss(model, y: torch.Tensor, session: int, batch_size: int) -> float:
    """Mean loss per bin (model.loss, eval mode: e = pooled mean of each chunk) over the trials of
    one session, y [trial, time, neuron_i]."""
    was_training = model.training
    model.eval()
    total = 0.0
    for start in range(0, y.shape[0], batch_size):
        chunk = y[start : start + batch_size]
        total += float(model.loss(chunk, session)) * chunk.shape[0]
    model.train(was_training)
    return total / max(y.shape[0], 1)


def _present(y: torch.Tensor | None) -> bool:
    return y is not None and len(y) > 0


def fit_meta(
    model: torch.nn.Module,
    sessions_train: Sequence[torch.Tensor | None],
    sessions_valid: Sequence[torch.Tensor | None],
    cfg: TrainConfig,
    *,
    seed: int = 0,
    callback: Callable[[dict], None] | None = None,
    evaluate: Callable[[torch.nn.Module], dict] | None = None,
    on_epoch: Callable[[dict, bool, Callable[[], dict]], None] | None = None,
    parameters: Iterable[torch.nn.Parameter] | None = None,
    resume: dict | None = None,
    max_epochs: int | None = None,
) -> FitResult:
    """Train a MetaXFADS on sessions_train[i] [trial, time, neuron_i] (session i of the model; None or
    empty: not trained on), early-stopping on the mean over sessions of the validation loss per bin.
    parameters: what to train (default: every parameter with requires_grad). Returns the history and
    loads the best parameters into the model, as `train.loop.fit`."""
    if len(sessions_train) > len(model.sessions):
        raise ValueError(f"{len(sessions_train)} training sessions for a model with {len(model.sessions)}")
    if parameters is None:
        parameters = [p for p in model.parameters() if p.requires_grad]
    trained = [i for i, y in enumerate(sessions_train) if _present(y)]
    if not trained:
        raise ValueError("fit_meta: no session has training trials")
    valid = [(i, y) for i, y in enumerate(sessions_valid) if _present(y)]

    def batches(gen: torch.Generator):
        chunks = []
        for i in trained:
            y = sessions_train[i]
            order = torch.randperm(y.shape[0], generator=gen)
            chunks += [(i, order[k : k + cfg.batch_size]) for k in range(0, len(order), cfg.batch_size)]
        mix = torch.randperm(len(chunks), generator=gen).tolist()
        # Lazy indexing: only one batch is materialised at a time.
        return ((chunks[j][0], sessions_train[chunks[j][0]][chunks[j][1].to(sessions_train[chunks[j][0]].device)])
                for j in mix)

    def valid_loss() -> float:
        if not valid:
            return math.nan
        return sum(evaluate_meta_loss(model, y, i, cfg.batch_size) for i, y in valid) / len(valid)

    return run_epochs(
        model, cfg, batches=batches,
        batch_loss=lambda batch: model.loss(batch[1], batch[0], drop_local=cfg.drop_local),
        valid_loss=valid_loss, parameters=parameters, seed=seed, callback=callback, evaluate=evaluate,
        on_epoch=on_epoch, resume=resume, max_epochs=max_epochs,
    )
