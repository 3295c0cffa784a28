"""The low-rank nonlinear filter of XFADS (docs/model.md sections 2-4): pure functions, no module state.

    post = low_rank_filter(dynamics, m0, q0, q, k_local, K_local, k_back, K_back,
                           n_samples=20, mode="smoother")
    elbo = loglik(post.samples).mean(0).sum() - post.kl.sum()

The posterior at each bin is the moment-matched prediction N(mbar, Pbar), Pbar = diag(d) + Mt^T Mt
(d = q, or q0 at the first bin; the rows of Mt are the scaled deviations of the S propagated
samples), times a Gaussian potential in information form (k, K K^T). Everything stays factored:

    U = I + K^T Pbar K (rank x rank),   Z = U^{-1} (Pbar K)^T,   P = diag(d) + Mt^T Mt - (Pbar K) Z

so no latent x latent matrix is formed and one step costs O(batch * latent * (sample + rank)^2).

This module is the filter over time: `low_rank_filter` runs one bin (model/filter_bin.py: the update
and the draws) per time step and stream (`scan`), predicting each bin from the draws of the one before
(`propagate`), and afterwards computes the KL (`kl_step`, or `kl_lowrank` in two_filter mode;
docs/model.md section 4) and the marginal variances (`marginal_var`) for all bins at once
(model/lowrank.py).

Layouts: public inputs and outputs are [batch, time, ...] and samples [sample, batch, time, latent].
Inside a step the particles are [batch, sample, latent] because that is the layout batched matmuls
want; `dynamics` is always called on [sample, batch, latent] (per-trial dynamics broadcast over the
batch dim, recurrent cells may flatten the leading dims).

Noise: the Matheron sampler consumes standard normals of shape `noise_shape(...)`,
[time, stream, batch, sample, sample + latent + rank] (two streams, filtered and smoothed, in
two_filter mode; one otherwise): per step and stream, the first `sample` columns weight the columns
of M, the next `latent` the diagonal part, the last `rank` columns are the pseudo-observation noise u
(`split_noise`). Pass a tensor for fixed draws or a torch.Generator.
"""

from __future__ import annotations

from typing import Callable, NamedTuple, Optional, Sequence, Union

import torch
from torch import Tensor
from torch.utils.checkpoint import checkpoint

from xfads_cli.model.filter_bin import BinStep, StepNoise, bin_step, filter_step
from xfads_cli.model.lowrank import kl_lowrank, kl_step, marginal_var, moments

Dynamics = Callable[[Tensor], Tensor]
MODES = ("smoother", "two_filter", "filter")
SAMPLERS = ("matheron", "cubature")


class Posterior(NamedTuple):
    """Output of `low_rank_filter`.

    mean, var: [batch, time, latent], marginal mean and diag(P_t) of q(z_t).
    samples:   [sample, batch, time, latent], draws of q(z_t) (the likelihood's Monte Carlo samples).
    kl:        [batch, time], KL_t = KL(q(z_t) || moment-matched prediction from q(z_{t-1})).
               For a linear-Gaussian model sum_t KL_t <= KL(q(z_{1:T}) || p(z_{1:T})) (data
               processing), so the ELBO built from it equals log p(y) for the causal filter with
               exact potentials but can exceed log p(y) in the smoothing modes (see the tests).
    filtered_*: two_filter mode only, the causal filter's q(z_t | y_{1:t}) (same shapes).
    """

    mean: Tensor
    var: Tensor
    samples: Tensor
    kl: Tensor
    filtered_mean: Optional[Tensor] = None
    filtered_var: Optional[Tensor] = None
    filtered_samples: Optional[Tensor] = None


# What the filter carries from one bin to the next: the draws of q(z_t) [batch, sample, latent] that are
# propagated (two_filter mode: the causal and the smoothed ones).
FilterState = Union[Tensor, tuple[Tensor, Tensor]]


def propagate(dynamics: Dynamics, z: Tensor) -> Tensor:
    """f applied to particles z [batch, sample, latent] -> [batch, sample, latent].

    f is called on [sample, batch, latent] (per-trial dynamics broadcast over the batch dim), except
    for dynamics that declare `rowwise = True` (f maps each latent vector on its own, model/dynamics.py):
    those get the particles in their own layout, which spares two transposes and a copy per step."""
    if getattr(dynamics, "rowwise", False):
        return dynamics(z)
    return dynamics(z.transpose(0, 1)).transpose(0, 1)


def noise_shape(mode: str, time: int, batch: int, n_samples: int, latent: int, rank: int) -> tuple[int, ...]:
    """Shape of the standard normals `low_rank_filter` consumes (rank = r_a + r_b, or r_a in filter mode)."""
    return (time, 2 if mode == "two_filter" else 1, batch, n_samples, n_samples + latent + rank)


def split_noise(eps: Tensor, d: Tensor, n_samples: int, ranks: Sequence[int]) -> list[list[StepNoise]]:
    """Per stream and bin, the `StepNoise` in standard normals eps [time, stream, batch, n, sample + latent + rank']
    (d [time, latent]: each bin's diagonal; ranks: each stream's rank <= rank'; n_samples = sample)."""
    S, L = n_samples, d.shape[-1]
    # d^{1/2} w2 of every bin at once (one op forward and backward instead of one per bin)
    dw2 = d.sqrt()[:, None, None, None] * eps[..., S:S + L]
    return [[StepNoise(*x) for x in zip(e[..., :S].unbind(0), w.unbind(0), e[..., S + L:S + L + rk].unbind(0))]
            for e, w, rk in zip(eps.unbind(1), dw2.unbind(1), ranks)]


def scan(advance: Callable, T: int, checkpoint_steps: int = 0, state=None) -> NamedTuple:
    """Run `advance(t, state) -> (record, state)` for t = 0..T-1 from `state` (None: the first bin).

    record: a NamedTuple of [batch, ...] tensors; returns them stacked field by field along dim 1,
    [batch, time, ...]. checkpoint_steps > 0: chunks of this many
    bins are recomputed in backward instead of storing their intermediates.
    """

    def chunk(t0: int, t1: int, state):
        records = []
        for t in range(t0, t1):
            rec, state = advance(t, state)
            records.append(rec)
        return type(records[0])(*(torch.stack(xs, 1) for xs in zip(*records))), state

    size = checkpoint_steps if checkpoint_steps > 0 else T
    pieces = []
    for t0 in range(0, T, size):
        if checkpoint_steps > 0 and torch.is_grad_enabled():
            piece, state = checkpoint(chunk, t0, min(T, t0 + size), state, use_reentrant=False)
        else:
            piece, state = chunk(t0, min(T, t0 + size), state)
        pieces.append(piece)
    return pieces[0] if len(pieces) == 1 else type(pieces[0])(*(torch.cat(xs, 1) for xs in zip(*pieces)))


def _samples(z: Tensor) -> Tensor:
    """The draws stacked over time [batch, time, sample, latent] -> [sample, batch, time, latent]."""
    return z.permute(2, 0, 1, 3).contiguous()


class _Bin(NamedTuple):
    """What smoother and filter mode keep of a bin (fields of `Step`, [batch, ...])."""

    mean: Tensor
    z: Tensor
    msq: Tensor
    wsq: Tensor
    mbar: Tensor
    Ktv: Tensor
    Uinv: Tensor
    logdet_U: Tensor


def _driven(dynamics: Dynamics, drive: Optional[Tensor]) -> Callable[[Tensor, int], Tensor]:
    """(z [batch, sample, latent], t) -> f(z) + drive[:, t]: the prediction of bin t from the draws of
    bin t - 1, with the known input's drive of bin t (drive [batch, time, latent] or None)."""
    if drive is None:
        return lambda z, t: propagate(dynamics, z)
    steps = drive.unbind(1)  # per-bin views made once (see bin_step)
    return lambda z, t: propagate(dynamics, z) + steps[t][:, None]


def _filter(dynamics: Dynamics, step: BinStep, k: Tensor, K: Tensor, d: Tensor, checkpoint_steps: int,
            state: Optional[Tensor] = None, drive: Optional[Tensor] = None) -> Posterior:
    """smoother and filter modes: one stream, whose draws are propagated (docs/model.md section 3).
    k [batch, time, latent], K [batch, time, latent, rank]: the potentials `step` updates with.
    state: the draws of the bin before the first (None: the first bin of the sequence). drive:
    [batch, time, latent] added to f's prediction of each bin (known inputs), or None."""
    predict = _driven(dynamics, drive)

    def advance(t: int, z: Optional[Tensor]):
        s = step(None if z is None else predict(z, t), t)
        return _Bin(s.mean, s.z, s.msq, s.wsq, s.mbar, s.Ktv, s.Uinv, s.logdet_U), s.z

    b = scan(advance, k.shape[1], checkpoint_steps, state)
    # the KL needs nothing sequential, so it is computed for all bins at once
    kl = kl_step(b.mean - b.mbar, k, K, b.Ktv, b.Uinv, b.logdet_U)
    return Posterior(b.mean, marginal_var(d, b.msq, b.wsq), _samples(b.z), kl)


class _TwoFilterBin(NamedTuple):
    """What two_filter mode keeps of a bin, [batch, ...]: the smoothed update (mean, z, wsq, PK, Z,
    logdet_U), the causal one (filtered_*), their common prediction (msq, Mt) and the prediction from
    the smoothed particles (mbar_s, Mt_s) that the KL compares with."""

    mean: Tensor
    z: Tensor
    wsq: Tensor
    PK: Tensor
    Z: Tensor
    logdet_U: Tensor
    filtered_mean: Tensor
    filtered_z: Tensor
    filtered_wsq: Tensor
    msq: Tensor
    Mt: Tensor
    mbar_s: Tensor
    Mt_s: Tensor


def _two_filter(dynamics: Dynamics, causal: BinStep, full: BinStep, d: Tensor, n_samples: int,
                checkpoint_steps: int, state: Optional[tuple[Tensor, Tensor]] = None,
                drive: Optional[Tensor] = None) -> Posterior:
    """two_filter mode: the causal stream's draws are propagated, and the same prediction is updated
    with the full potential for the smoothed marginal (docs/model.md section 3). state: (filtered,
    smoothed) draws of the bin before the first, as `_filter`'s; drive as `_filter`'s."""
    S = n_samples
    predict = _driven(dynamics, drive)

    def advance(t: int, state: Optional[tuple[Tensor, Tensor]]):
        mu = mu_s = None
        if state is not None:
            # one pass of f over both particle sets: filtered (to propagate) and smoothed (for the KL)
            mu = predict(torch.cat(state, 1), t)
            mu, mu_s = mu[:, :S], mu[:, S:]
        f, s = causal(mu, t), full(mu, t)
        mbar_s, Mt_s = (f.mbar, f.Mt) if mu_s is None else moments(mu_s)
        return _TwoFilterBin(s.mean, s.z, s.wsq, s.PK, s.Z, s.logdet_U, f.mean, f.z, f.wsq, f.msq, f.Mt,
                             mbar_s, Mt_s), (f.z, s.z)

    b = scan(advance, d.shape[0], checkpoint_steps, state)
    B, T, L = b.mean.shape
    flat = lambda x: x.flatten(0, 1)
    kl = kl_lowrank(flat(b.mean - b.mbar_s), flat(d.expand(B, T, L)), flat(b.Mt), flat(b.PK), flat(b.Z),
                    flat(b.logdet_U), flat(b.Mt_s)).unflatten(0, (B, T))
    return Posterior(b.mean, marginal_var(d, b.msq, b.wsq), _samples(b.z), kl,
                     b.filtered_mean, marginal_var(d, b.msq, b.filtered_wsq), _samples(b.filtered_z))


def _standard_normals(noise: Union[None, Tensor, torch.Generator], shape: tuple[int, ...], like: Tensor) -> Tensor:
    """The noise as a tensor of `shape` (rank' >= rank columns accepted) in like's dtype and device."""
    if not isinstance(noise, Tensor):
        return torch.randn(shape, generator=noise, dtype=like.dtype, device=like.device)
    eps = noise.to(like)
    if eps.shape[:-1] != shape[:-1] or eps.shape[-1] < shape[-1]:
        raise ValueError(f"noise has shape {tuple(eps.shape)}, expected {shape}")
    return eps


def low_rank_filter(
    dynamics: Dynamics,
    m0: Tensor,
    q0: Tensor,
    q: Tensor,
    k_local: Tensor,
    K_local: Tensor,
    k_back: Optional[Tensor] = None,
    K_back: Optional[Tensor] = None,
    *,
    n_samples: int,
    mode: str = "smoother",
    noise: Union[None, Tensor, torch.Generator] = None,
    sampler: str = "matheron",
    checkpoint_steps: int = 0,
    state: Optional[FilterState] = None,
    drive: Optional[Tensor] = None,
) -> Posterior:
    """Filter the potentials through the prior dynamics (docs/model.md section 3).

    dynamics: f, maps [sample, batch, latent] -> [sample, batch, latent].
    m0, q0, q: [latent] initial mean, initial and process variances (positive).
    k_local [batch, time, latent], K_local [batch, time, latent, r_a]: local potential alpha_t.
    k_back [batch, time, latent], K_back [batch, time, latent, r_b]: backward potential beta_t
        (either may be None: no mean / no precision part). Dropped or missing bins are zeros.
    mode: "smoother" propagates samples of the update with k = k_local + k_back, K = [K_local, K_back];
        "two_filter" propagates the causal update (k_local, K_local) and applies the full one to the
        same prediction for the smoothed marginal; "filter" ignores the backward potential.
    noise: None (global RNG), a torch.Generator, or standard normals of `noise_shape(...)`.
    sampler: "matheron" (random, default) or "cubature" (deterministic sigma points, requires
        n_samples == 2 * latent and forms latent x latent matrices: exact moments for linear f).
    checkpoint_steps: if > 0, recompute chunks of this many steps in backward instead of storing their
        intermediates (less memory, ~1 extra forward pass).
    state: for a piece of a longer sequence, what the filter carried out of the previous piece
        (`filter_state` of its posterior); None: the first bin is the sequence's, predicted by
        N(m0, diag(q0)). Filtering pieces one after another this way gives the posterior of the whole
        sequence (the same with the same noise, sliced along time) in memory bounded by the piece
        (model/streaming.py).
    drive: [batch, time, latent] or None: known inputs' drive, added to f's prediction of every bin
        after the sequence's first (z_t = f(z_{t-1}) + drive_t + e_t; docs/model.md section 11).

    Returns Posterior; in two_filter mode mean/var/samples/kl are the smoothed ones and filtered_*
    the causal filter's (in filter mode the main fields are already the filtered ones).
    """
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    if sampler not in SAMPLERS:
        raise ValueError(f"sampler must be one of {SAMPLERS}, got {sampler!r}")
    B, T, L = k_local.shape
    if sampler == "cubature" and n_samples != 2 * L:
        raise ValueError(f"sampler='cubature' needs n_samples == 2 * latent = {2 * L}, got {n_samples}")
    if mode == "filter":
        k_back = K_back = None
    k = k_local if k_back is None else k_local + k_back
    X = torch.cat([K_local] + ([] if K_back is None else [K_back]) + [k.unsqueeze(-1)], -1)  # [K, k]
    K, r = X[..., :-1], X.shape[-1] - 1  # [batch, time, latent, r]
    # [time, latent], diag of each bin's noise: q0 for the sequence's first bin, q after it
    d = q.expand(T, L) if state is not None else torch.cat([q0.unsqueeze(0), q.expand(T - 1, L)])
    ranks = [K_local.shape[-1], r] if mode == "two_filter" else [r]
    draws, fused = [None] * len(ranks), False
    if sampler == "matheron":
        eps = _standard_normals(noise, noise_shape(mode, T, B, n_samples, L, r), k_local)
        draws, fused = split_noise(eps, d, n_samples, ranks), not eps.requires_grad
    full = bin_step(X, d, draws[-1], m0, n_samples, fused)
    if mode != "two_filter":
        return _filter(dynamics, full, k, K, d, checkpoint_steps, state, drive)
    causal = bin_step(torch.cat([K_local, k_local.unsqueeze(-1)], -1), d, draws[0], m0, n_samples, fused)
    return _two_filter(dynamics, causal, full, d, n_samples, checkpoint_steps, state, drive)


def filter_next(dynamics: Dynamics, z: Optional[Tensor], m0: Tensor, q0: Tensor, q: Tensor, k: Tensor, K: Tensor,
                eps: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """One bin of the causal filter after the draws z [batch, sample, latent] of the bin before (None:
    the sequence's first bin): what `low_rank_filter(mode="filter", state=z)` gives for a one-bin
    piece, without its KL and its bookkeeping over time, for decoding bin by bin (runs/decoder.py).
    k [batch, latent], K [batch, latent, rank]: the bin's local potential; eps [batch, sample, sample +
    latent + rank'] its standard normals (bin t, stream 0 of `noise_shape("filter", ...)`).
    Returns the mean and diag(P) [batch, latent] of q(z_t | y_1..t) and its draws [batch, sample, latent]."""
    B, L = k.shape
    S, r = eps.shape[1], K.shape[-1]
    d = q0 if z is None else q
    X = torch.cat([K, k.unsqueeze(-1)], -1)
    mbar, Mt = (m0.expand(B, L), X.new_zeros(B, S, L)) if z is None else moments(propagate(dynamics, z))
    draws = StepNoise(eps[..., :S], d.sqrt() * eps[..., S:S + L], eps[..., S + L:S + L + r])
    s = filter_step(mbar, Mt, d, X, draws)
    return s.mean, marginal_var(d, s.msq, s.wsq), s.z


def filter_state(post: Posterior) -> FilterState:
    """What the filter carries out of the last bin of `post` into a next piece (`low_rank_filter`'s
    state): the propagated draws of that bin, [batch, sample, latent]; in two_filter mode the causal
    and the smoothed ones."""
    last = post.samples[:, :, -1].transpose(0, 1)
    return last if post.filtered_samples is None else (post.filtered_samples[:, :, -1].transpose(0, 1), last)
