"""The posterior of a sequence too long to hold, piece by piece (docs/model.md section 3, "Long recordings").

    for piece in stream_posterior(session, read, T, piece_bins=2000):
        piece.start, piece.posterior           # bins [start, start + piece_time) of the sequence

The posterior of bin t depends on the whole sequence through two messages: the filter's draws of
q(z_{t-1}) (forward) and the backward encoder's state (GRU or S4D) summarising y_{t+1:T} (backward). Both are
carried across piece boundaries, so the result is the single-pass posterior of the whole sequence:
the same numbers (to float round-off) given the same standard normals. Two passes:

1. backward, last piece first: run the GRU over each piece in reverse and keep only its state at the
   piece's start (one [batch, hidden] vector per piece);
2. forward: for each piece, recompute its local potentials and its backward potentials from the state
   kept for the piece after it, and continue the filter from the draws the previous piece ended with.

Memory is that of one piece (plus the kept GRU states); the local encoder runs twice and `read` is
called twice per piece. In `filter` mode the backward pass is skipped.
"""

from __future__ import annotations

from typing import Callable, Iterator, NamedTuple

import torch

from xfads_cli.model.filtering import Posterior, filter_state, low_rank_filter


class Piece(NamedTuple):
    """The posterior over bins [start, start + time) of the sequence ([batch, time, ...] fields)."""

    start: int
    posterior: Posterior


def piece_bounds(n_bins: int, piece_bins: int) -> list[tuple[int, int]]:
    """[start, stop) of consecutive pieces of at most piece_bins bins covering n_bins."""
    if piece_bins < 1:
        raise ValueError(f"piece_bins must be >= 1, got {piece_bins}")
    return [(t0, min(n_bins, t0 + piece_bins)) for t0 in range(0, n_bins, piece_bins)]


@torch.no_grad()
def backward_states(session, read: Callable[[int, int], torch.Tensor], bounds: list[tuple[int, int]]) -> list:
    """For each piece, the backward GRU state summarising everything after it (None after the last)."""
    states, h = [None] * len(bounds), None
    for i in range(len(bounds) - 1, -1, -1):
        states[i] = h
        a, A = session.potentials(read(*bounds[i]))
        _, h = session.backward.read_backwards(a, A, h)
    return states


def _backward_potentials(session, a: torch.Tensor, A: torch.Tensor, h_after):
    """beta_t of a piece: out[t + 1], where the bin after the piece's last is the state h_after (zero
    potentials after the sequence's last bin), as BackwardEncoder.forward's shift."""
    out, _ = session.backward.read_backwards(a, A, h_after)
    last = torch.zeros_like(out[:, :1]) if h_after is None else session.backward.state_output(h_after)[:, None]
    return session.backward.split(torch.cat([out[:, 1:], last], dim=1))


def _piece_noise(noise, t0: int, t1: int):
    """The standard normals of bins [t0, t1): a slice of a whole-sequence tensor, or the generator / None."""
    return noise[t0:t1] if isinstance(noise, torch.Tensor) else noise


@torch.no_grad()
def stream_posterior(session, read: Callable[[int, int], torch.Tensor], n_bins: int, *, piece_bins: int = 2000,
                     mode: str | None = None, n_samples: int | None = None,
                     noise: torch.Tensor | torch.Generator | None = None) -> Iterator[Piece]:
    """The posterior of a `session` model (model/base.py SessionModel: `model.session(i, ...)`) over a
    sequence of n_bins bins, yielded piece by piece. read(t0, t1) -> y [batch, t1 - t0, neuron]: the
    counts of bins [t0, t1) (NaN = missing), called twice per piece (smoother modes). noise: None (the
    global RNG), a torch.Generator, or the whole sequence's standard normals (`noise_shape` for n_bins
    bins, sliced along time: then the pieces equal one pass over the whole sequence)."""
    mode = mode or session.cfg.mode
    n_samples = n_samples or session.cfg.samples
    bounds = piece_bounds(n_bins, piece_bins)
    after = backward_states(session, read, bounds) if mode != "filter" else [None] * len(bounds)
    state = None
    for (t0, t1), h_after in zip(bounds, after):
        a, A = session.potentials(read(t0, t1))
        b, B = _backward_potentials(session, a, A, h_after) if mode != "filter" else (None, None)
        post = low_rank_filter(session.transition(a.shape[0]), session.m0, session.q0(), session.q(), a, A, b, B,
                               n_samples=n_samples, mode=mode, noise=_piece_noise(noise, t0, t1), state=state)
        state = filter_state(post)
        yield Piece(t0, post)


def sequence_noise(session, batch: int, n_bins: int, *, mode: str | None = None, n_samples: int | None = None,
                   generator: torch.Generator | None = None) -> torch.Tensor:
    """Standard normals for `stream_posterior` over a whole sequence (tests: equal to one pass)."""
    shape = session.noise_shape(batch, n_bins, mode=mode, n_samples=n_samples)
    return torch.randn(shape, generator=generator, dtype=session.m0.dtype, device=session.m0.device)
