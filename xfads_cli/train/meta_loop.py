"""Training loop of the meta-dynamical model (docs/model.md section 6) over many sessions at once.

    result = fit_meta(model, [y_1, y_2, ...], [v_1, v_2, ...], cfg, seed=0).run()   # or iterate its events

Each epoch every session's training trials are cut into batches of cfg.batch_size (a batch never mixes
sessions, whose neuron counts differ, so nothing is padded) and all batches of all sessions are
shuffled together, so the shared parameters see the sessions interleaved. The order is a function of
(seed, epoch) and each chunk's Monte Carlo draws come from a generator keyed by (seed, epoch, chunk).
Everything else (Adam, the learning-rate schedule, clipping, early stopping, divergence handling, events,
preemption, resume) is `train.loop.run_epochs`, the single-session loop.

Data-parallel (train/distributed.py): the chunks of an epoch are dealt to the K ranks in turn, so
each step trains K chunks at once (one per rank, each normalised as on one process; DDP averages).
The last step is padded with zero-weight repeats so that every rank runs the same number of steps.

Few-shot adaptation trains one new session with the shared parameters frozen:

    i = model.add_session(spec, y_new); model.freeze_shared()
    fit_meta(model, [None] * i + [y_new], [None] * i + [v_new], cfg, parameters=model.session_parameters(i)).run()
"""

from __future__ import annotations

import math
from typing import Iterable, Sequence

import torch

from xfads_cli.config import TrainConfig
from xfads_cli.train.distributed import SINGLE, Dist
from xfads_cli.train.loop import Training, auto_batch_size, epoch_generator, mix_seed, run_epochs


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
    parameters: Iterable[torch.nn.Parameter] | None = None,
    dist: Dist | None = None,
    **options,
) -> Training:
    """Training of a MetaXFADS on sessions_train[i] [trial, time, neuron_i] (session i of the model; None or
    empty: not trained on), early-stopping on the mean over sessions of the validation loss per bin.
    parameters: what to train (default: every parameter with requires_grad); options: run_epochs' select,
    evaluate, resume, max_epochs, should_stop and threads. Iterate it, or `.run()` it, as `train.loop.fit`'s."""
    if len(sessions_train) > len(model.sessions):
        raise ValueError(f"{len(sessions_train)} training sessions for a model with {len(model.sessions)}")
    if parameters is None:
        parameters = [p for p in model.parameters() if p.requires_grad]
    trained = [i for i, y in enumerate(sessions_train) if _present(y)]
    if not trained:
        raise ValueError("fit_meta: no session has training trials")
    valid = [(i, y) for i, y in enumerate(sessions_valid) if _present(y)]

    d = dist or SINGLE
    device = next(model.parameters()).device

    def batches(epoch: int):
        """(epoch, chunk id, session, trial indices, weight, chunks in this global step) per step;
        the trials are indexed lazily in batch_loss."""
        gen = epoch_generator(seed, epoch)
        chunks = []
        for i in trained:
            y = sessions_train[i]
            order = torch.randperm(y.shape[0], generator=gen)
            size = cfg.batch_size or auto_batch_size(len(order))
            chunks += [(i, order[k : k + size]) for k in range(0, len(order), size)]
        mix = torch.randperm(len(chunks), generator=gen).tolist()
        for start in range(0, len(mix), d.world):
            group = mix[start : start + d.world]
            j, weight = (group[d.rank], 1.0) if d.rank < len(group) else (group[0], 0.0)
            yield epoch, j, chunks[j][0], chunks[j][1], weight, len(group)

    def batch_loss(batch) -> torch.Tensor:
        epoch, j, i, trials, weight, n_chunks = batch
        y = sessions_train[i][trials.to(sessions_train[i].device)]
        gen = torch.Generator(device=device).manual_seed(mix_seed(seed, epoch, j))
        # x world / chunks: DDP's average over ranks is then the mean loss of this step's real chunks
        return model.loss(y, i, drop_local=cfg.drop_local, generator=gen) * (weight * d.world / n_chunks)

    def valid_loss() -> float:
        if not valid:
            return math.nan
        return sum(evaluate_meta_loss(model, y, i, cfg.batch_size or 64) for i, y in valid) / len(valid)

    return run_epochs(
        model, cfg, batches=batches, batch_loss=batch_loss,
        valid_loss=valid_loss, parameters=parameters, seed=seed, dist=d,
        find_unused_parameters=True,  # other sessions' read-in/readout idle
        **options,
    )
