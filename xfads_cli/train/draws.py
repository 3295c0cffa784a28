"""What is random in training, keyed so that a run can be continued exactly: the batches of each
epoch (`epoch_batches`: an order drawn from a generator seeded with (seed, epoch), as torch's
DistributedSampler does) and the Monte Carlo draws of each trial's loss (`trial_draws`: a generator
seeded with (seed, epoch, trial), `mix_seed`). So "epoch e, k batches done" is enough to know every
later draw, also from the middle of an epoch, and a trial gets the same draws on whichever rank and
in whichever batch it lands.
"""

from __future__ import annotations

from typing import NamedTuple

import torch

from xfads_cli.model.encoders import InputDropout
from xfads_cli.train.distributed import Dist

_MASK64 = (1 << 64) - 1


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


class TrialDraws(NamedTuple):
    """The random parts of one batch's training loss (`trial_draws`), named as the models' `batch_loss`
    keyword arguments."""

    noise: torch.Tensor  # the filter's standard normals, model.noise_shape for the batch
    local_mask: torch.Tensor | None  # [batch, time] bool: local potentials kept
    backward_mask: torch.Tensor | None  # [batch] bool: backward potentials kept
    input_dropout: InputDropout | None  # coordinated dropout of the encoder's held-in inputs
    embed_noise: torch.Tensor | None  # [batch, embed]: standard normals of the session embedding's draw


def trial_draws(model, y: torch.Tensor, keys: list[int], drop: float = 0.0, forecast: float = 0.0,
                n_samples: int | None = None, input_drop: float = 0.0, session: int = 0) -> TrialDraws:
    """Monte Carlo draws of the training loss of a batch y [batch, time, neuron] of `session`, one
    generator per trial (keys[i] seeds trial i). A trial's draws do not depend on the batch it is in.

    drop: fraction of bins whose local potential is dropped. forecast: probability that a trial is
    trained as a forecast: its local potentials are dropped from a cut point drawn uniformly in the
    middle three fifths of the trial to its end, and its backward potentials everywhere (the causal
    filter up to the cut, the dynamics alone after it). input_drop: coordinated dropout's rate."""
    T = y.shape[1]
    dtype = next(model.parameters()).dtype
    shape = model.noise_shape(len(keys), T, n_samples=n_samples)  # [time, stream, batch, sample, column]
    # each trial's block is drawn contiguously (one generator call), then viewed batch-third
    buf = torch.empty((shape[2], shape[0], shape[1], *shape[3:]), dtype=dtype, device=y.device)
    keep = torch.ones((len(keys), T), dtype=torch.bool, device=y.device) if drop > 0 or forecast > 0 else None
    backward = torch.ones(len(keys), dtype=torch.bool, device=y.device) if forecast > 0 else None
    dropped = embed = None
    if input_drop > 0:
        dropped = torch.zeros((len(keys), T, model.n_inputs(session)), dtype=torch.bool, device=y.device)
    if model.embed_dim:
        embed = torch.empty((len(keys), model.embed_dim), dtype=dtype, device=y.device)
    lo, hi = T // 5, max(T // 5, (4 * T) // 5 - 1)
    # each option draws after those before it in this loop, so turning it on leaves their draws (and
    # so earlier runs' numbers) unchanged
    for i, key in enumerate(keys):
        g = torch.Generator(device=y.device).manual_seed(key)
        torch.randn(buf.shape[1:], generator=g, dtype=dtype, device=y.device, out=buf[i])
        if drop > 0:
            keep[i] = torch.rand(T, generator=g, device=y.device) >= drop
        if forecast > 0:
            u = torch.rand(2, generator=g, device=y.device).tolist()
            if u[0] < forecast:
                keep[i, max(1, lo + int(u[1] * (hi - lo + 1))):] = False
                backward[i] = False
        if input_drop > 0:
            dropped[i] = torch.rand(dropped.shape[1:], generator=g, device=y.device) < input_drop
        if embed is not None:
            torch.randn(embed.shape[1:], generator=g, dtype=dtype, device=y.device, out=embed[i])
    return TrialDraws(buf.permute(1, 2, 0, 3, 4), keep, backward,
                      InputDropout(dropped, input_drop) if input_drop > 0 else None, embed)


def auto_batch_size(n_trials: int) -> int:
    """train.batch_size when unset: about a tenth of the training trials, between 8 and 64. A step
    costs far less than in proportion to its batch on these sizes (the filter's time loop dominates),
    so small recordings gain more from several steps per epoch than from whole-data batches."""
    return int(min(64, max(8, round(n_trials / 10))))


class TrialBatch(NamedTuple):
    """This rank's share of one global batch: the session, trial indices, their weight (0: padding so
    that every rank has a batch) and the size of the global batch."""

    epoch: int
    session: int
    trials: torch.Tensor
    weight: float
    total: int


def epoch_batches(sizes: list[int], batch_size: int | None, seed: int, epoch: int, dist: Dist) -> list[TrialBatch]:
    """This rank's batches of epoch `epoch` over sessions with `sizes` training trials (0: not trained):
    each session's trials in a random order cut into batches (a batch never mixes sessions, whose
    neuron counts differ, so nothing is padded), the batches of all sessions shuffled together so the
    shared parameters see the sessions interleaved; every global batch split over the ranks."""
    gen = epoch_generator(seed, epoch)
    chunks = []
    for i, n in enumerate(sizes):
        if n:
            order = torch.randperm(n, generator=gen)
            size = batch_size or auto_batch_size(n)
            chunks += [(i, order[k : k + size]) for k in range(0, n, size)]
    if sum(1 for n in sizes if n) > 1:  # one session's batches are already in a random order
        chunks = [chunks[j] for j in torch.randperm(len(chunks), generator=gen).tolist()]
    out = []
    for i, chunk in chunks:
        mine, weight = chunk[dist.rank :: dist.world], 1.0
        if len(mine) == 0:  # fewer trials than ranks in the last batch
            mine, weight = chunk[:1], 0.0
        out.append(TrialBatch(epoch, i, mine, weight, len(chunk)))
    return out
