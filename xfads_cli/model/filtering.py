"""The low-rank nonlinear filter of XFADS (MODEL.md sections 2-4): pure functions, no module state.

    post = low_rank_filter(dynamics, m0, q0, q, k_local, K_local, k_back, K_back,
                           n_samples=20, mode="smoother")
    elbo = loglik(post.samples).mean(0).sum() - post.kl.sum()

The posterior at each bin is the moment-matched prediction N(mbar, Pbar), Pbar = diag(d) + M M^T
(d = q, or q0 at the first bin; M = Mt^T holds the scaled deviations of the S propagated samples),
times a Gaussian potential in information form (k, K K^T). Everything is kept in factored form:

    P = diag(d) + Mt^T Mt - W W^T,     W = Pbar K Lu^{-T},   U = I + K^T Pbar K = Lu Lu^T

so no latent x latent matrix is formed and one step costs O(batch * latent * (sample + rank)^2).

Layouts: public inputs and outputs are [batch, time, ...] and samples [sample, batch, time, latent].
Inside a step the particles are [batch, sample, latent] because that is the layout batched matmuls
want; `dynamics` is always called on [sample, batch, latent] (per-trial dynamics broadcast over the
batch dim, recurrent cells may flatten the leading dims).

Noise: the Matheron sampler consumes standard normals of shape `noise_shape(...)`,
[time, stream, batch, sample, sample + latent + rank] (stream 2 only in two_filter mode): per step
and stream, the first `sample` columns weight the columns of M, the next `latent` the diagonal part,
the last `rank` columns are the pseudo-observation noise u. Pass a tensor for fixed draws or a
torch.Generator.
"""

from __future__ import annotations

import math
from typing import Callable, NamedTuple, Optional, Union

import torch
from torch import Tensor
from torch.utils.checkpoint import checkpoint

Dynamics = Callable[[Tensor], Tensor]
MODES = ("smoother", "two_filter", "filter")
SAMPLERS = ("matheron", "cubature")


class Posterior(NamedTuple):
    """Output of `low_rank_filter`.

    mean, var: [batch, time, latent], marginal mean and diag(P_t) of q(z_t).
    samples:   [sample, batch, time, latent], draws of q(z_t) (the likelihood's Monte Carlo samples).
    kl:        [batch, time], KL_t = KL(q(z_t) || moment-matched prediction from q(z_{t-1})).
    filtered_*: two_filter mode only, the causal filter's q(z_t | y_{1:t}) (same shapes).
    """

    mean: Tensor
    var: Tensor
    samples: Tensor
    kl: Tensor
    filtered_mean: Optional[Tensor] = None
    filtered_var: Optional[Tensor] = None
    filtered_samples: Optional[Tensor] = None


class Update(NamedTuple):
    """Factored result of one information-form update (see `update`), with U = I + K^T Pbar K = chol chol^T.

    mean: [batch, latent]         posterior mean m
    PK:   [batch, latent, rank]   Pbar K
    Z:    [batch, rank, latent]   U^{-1} (Pbar K)^T, so P = Pbar - PK Z
    chol: [batch, rank, rank]     lower Cholesky factor of U
    Ktv:  [batch, rank]           K^T (mbar + Pbar k)
    """

    mean: Tensor
    PK: Tensor
    Z: Tensor
    chol: Tensor
    Ktv: Tensor


# ----------------------------------------------------------------------------------------------
# small linear-algebra helpers


def cholesky_jitter(A: Tensor, max_tries: int = 8) -> Tensor:
    """Lower Cholesky factor of SPD matrices A [..., n, n], adding jitter only to failing ones.

    The jitter starts at 1e-7 x max|diag| of the failing matrix and grows tenfold per retry; the
    matrices this module factors are I + (PSD) in exact arithmetic, so failures mean round-off.
    """
    L, info = torch.linalg.cholesky_ex(A)
    if not bool(info.any()):
        return L
    if not bool(torch.isfinite(A).all()):
        raise FloatingPointError("low_rank_filter: non-finite matrix in Cholesky (NaN/inf upstream)")
    eye = torch.eye(A.shape[-1], dtype=A.dtype, device=A.device)
    scale = A.diagonal(dim1=-2, dim2=-1).abs().amax(-1).detach()
    jitter = torch.zeros_like(scale)
    for _ in range(max_tries):
        bad = info != 0
        jitter = torch.where(bad, torch.where(jitter > 0, jitter * 10, scale * 1e-7), jitter)
        L, info = torch.linalg.cholesky_ex(A + jitter[..., None, None] * eye)
        if not bool(info.any()):
            return L
    raise FloatingPointError("low_rank_filter: Cholesky failed even with jitter")


def tril_inverse(L: Tensor, eye: Optional[Tensor] = None) -> Tensor:
    """Inverse of lower-triangular L [..., n, n] (eye: a cached identity [n, n])."""
    if eye is None:
        eye = torch.eye(L.shape[-1], dtype=L.dtype, device=L.device)
    return torch.linalg.solve_triangular(L, eye.expand_as(L), upper=False)


# ----------------------------------------------------------------------------------------------
# the four pieces of a filter step


def propagate(dynamics: Dynamics, z: Tensor) -> Tensor:
    """f applied to particles z [batch, sample, latent] -> [batch, sample, latent]."""
    return dynamics(z.transpose(0, 1)).transpose(0, 1)


def moments(mu: Tensor) -> tuple[Tensor, Tensor]:
    """Moment matching of propagated particles mu [batch, sample, latent].

    Returns mbar [batch, latent] and Mt [batch, sample, latent] (rows (mu_s - mbar) / sqrt(S)), so the
    prediction is N(mbar, diag(q) + Mt^T Mt).
    """
    mbar = mu.mean(1)
    return mbar, (mu - mbar.unsqueeze(1)) * (mu.shape[1] ** -0.5)


def predict_moments(dynamics: Dynamics, z: Tensor) -> tuple[Tensor, Tensor]:
    """Moment-matched prediction from particles z [batch, sample, latent] of q(z_{t-1}).

    Returns mbar [batch, latent], Mt [batch, sample, latent]; Pbar = diag(q) + Mt^T Mt.
    """
    return moments(propagate(dynamics, z))


def update(mbar: Tensor, Mt: Tensor, d: Tensor, k: Tensor, K: Tensor) -> Update:
    """Information-form update of N(mbar, Pbar) with the potential (k, K K^T), Pbar = diag(d) + Mt^T Mt.

    mbar [batch, latent], Mt [batch, sample, latent], d [latent], k [batch, latent],
    K [batch, latent, rank] -> Update (P^{-1} = Pbar^{-1} + K K^T, m = P (Pbar^{-1} mbar + k)).
    """
    Kx = torch.cat([K, k.unsqueeze(-1)], -1)
    eye = torch.eye(K.shape[-1], dtype=K.dtype, device=K.device)
    return _update(mbar, Mt, K, Kx, d.unsqueeze(-1) * Kx, eye)


def _update(mbar: Tensor, Mt: Tensor, K: Tensor, Kx: Tensor, dKx: Tensor, eye: Tensor) -> Update:
    """`update` with the per-step constants prepared by the caller (the filter hoists them out of
    the time loop): Kx = [K, k] [batch, latent, rank + 1], dKx = diag(d) Kx, eye [rank, rank]."""
    r = K.shape[-1]
    # Pbar [K, k] in one product: diag(d) Kx + Mt^T (Mt Kx)
    PKx = torch.baddbmm(dKx, Mt.transpose(1, 2), torch.bmm(Mt, Kx))
    PK = PKx[..., :r]
    v = PKx[..., r:] + mbar.unsqueeze(-1)  # mbar + Pbar k, [batch, latent, 1]
    Kt = K.transpose(1, 2)
    chol = cholesky_jitter(torch.baddbmm(eye, Kt, PK))
    Z = torch.cholesky_solve(PK.transpose(1, 2), chol)
    Ktv = torch.bmm(Kt, v)
    # m = v - Pbar K U^{-1} K^T v
    mean = torch.baddbmm(v, Z.transpose(1, 2), Ktv, alpha=-1.0).squeeze(-1)
    return Update(mean, PK, Z, chol, Ktv.squeeze(-1))


def marginal_var(Mt: Tensor, d: Tensor, upd: Update) -> Tensor:
    """diag(P) for P = diag(d) + Mt^T Mt - PK Z.

    Mt [batch, sample, latent], d [latent], upd from `update` -> [batch, latent]
    """
    return _var(d, Mt.square().sum(1), _wsq(upd))


def _wsq(upd: Update) -> Tensor:
    """diag(Pbar K U^{-1} K^T Pbar) [batch, latent]."""
    return (upd.PK * upd.Z.transpose(1, 2)).sum(-1)


def _var(d: Tensor, msq: Tensor, wsq: Tensor) -> Tensor:
    # round-off can push a tightly constrained variance just below zero in float32
    return (d + msq - wsq).clamp_min(0.0)


def sample_posterior(upd: Update, Mt: Tensor, d: Tensor, K: Tensor, noise: Tensor) -> Tensor:
    """Matheron's rule: draws of N(m, P) without forming P.

    upd from `update`, Mt [batch, sample, latent], d [latent], K [batch, latent, rank],
    noise [batch, n, sample + latent + rank'] standard normals (rank' >= rank, extra columns unused)
    -> z [batch, n, latent].

    ztilde = M w1 + d^{1/2} w2 ~ N(0, Pbar);  z = m + ztilde - Pbar K U^{-1} (K^T ztilde + u).
    The Pbar in the correction is what makes Cov(z) = P (it is easy to drop by mistake).
    """
    S, L, r = Mt.shape[1], Mt.shape[2], K.shape[-1]
    w1, w2, u = noise[..., :S], noise[..., S:S + L], noise[..., S + L:S + L + r]
    return _sample(upd, Mt, K, w1, d.sqrt() * w2, u)


def _sample(upd: Update, Mt: Tensor, K: Tensor, w1: Tensor, dw2: Tensor, u: Tensor) -> Tensor:
    """`sample_posterior` with the noise split by the caller: w1 [batch, n, sample],
    dw2 = d^{1/2} w2 [batch, n, latent], u [batch, n, rank]."""
    zt = torch.baddbmm(dw2, w1, Mt)
    # rows: (ztilde^T K + u^T) U^{-1} (Pbar K)^T = (...) Z
    return torch.baddbmm(zt + upd.mean.unsqueeze(1), torch.baddbmm(u, zt, K), upd.Z, alpha=-1.0)


def cubature_points(upd: Update, Mt: Tensor, d: Tensor) -> Tensor:
    """Spherical-radial cubature points of N(m, P): m +- sqrt(latent) * columns of chol(P).

    upd from `update`, Mt [batch, sample, latent], d [latent] -> z [batch, 2 * latent, latent].
    Their empirical mean and covariance (weights 1 / (2 latent)) equal m and P exactly, so with a
    linear f the next predict step is exact (the cubature Kalman filter). Forms P densely: O(latent^3),
    for tests and small latent only.
    """
    L = Mt.shape[-1]
    P = torch.diag_embed(d.expand_as(upd.mean)) + Mt.transpose(1, 2) @ Mt - upd.PK @ upd.Z
    dev = cholesky_jitter(P).transpose(1, 2) * math.sqrt(L)
    return upd.mean.unsqueeze(1) + torch.cat([dev, -dev], 1)


def kl_step(delta: Tensor, k: Tensor, K: Tensor, Ktv: Tensor, chol: Tensor) -> Tensor:
    """KL(N(m, P) || N(mbar, Pbar)) for P^{-1} = Pbar^{-1} + K K^T, in closed form.

    delta = m - mbar [..., latent], k [..., latent], K [..., latent, rank], Ktv and chol from `update`
    ([..., rank], [..., rank, rank]) -> [...].

    KL = 1/2 [tr(U^{-1}) - r + delta^T Pbar^{-1} delta + log det U], and Pbar^{-1} delta = k - K c with
    c = U^{-1} K^T (mbar + Pbar k), so no Pbar^{-1} (and no sample x sample factor) is needed.
    """
    c = torch.cholesky_solve(Ktv.unsqueeze(-1), chol)
    w = k - (K @ c).squeeze(-1)
    quad = (delta * w).sum(-1)
    logdet_U = 2.0 * chol.diagonal(dim1=-2, dim2=-1).log().sum(-1)
    return 0.5 * (tril_inverse(chol).square().sum((-2, -1)) - K.shape[-1] + quad + logdet_U)


def kl_lowrank(delta: Tensor, d: Tensor, Mt1: Tensor, W1: Tensor, logdet_U1: Tensor, Mt2: Tensor) -> Tensor:
    """KL(N(m1, P1) || N(m2, P2)) for P1 = diag(d) + Mt1^T Mt1 - W1 W1^T and P2 = diag(d) + Mt2^T Mt2.

    delta = m1 - m2 [batch, latent], d [latent], Mt1 [batch, sample, latent], W1 [batch, latent, rank],
    logdet_U1 [batch] (= log det(diag(d) + Mt1^T Mt1) - log det P1), Mt2 [batch, sample2, latent]
    -> [batch]. Woodbury with G = I + Mt D^{-1} Mt^T: O(latent * sample^2) per trial.
    """
    S1, S2, r = Mt1.shape[1], Mt2.shape[1], W1.shape[-1]
    dinv = 1.0 / d
    eye1 = torch.eye(S1, dtype=d.dtype, device=d.device)
    eye2 = torch.eye(S2, dtype=d.dtype, device=d.device)
    Mt2d = Mt2 * dinv
    Lg2 = cholesky_jitter(torch.baddbmm(eye2, Mt2d, Mt2.transpose(1, 2)))
    Lg1 = cholesky_jitter(torch.baddbmm(eye1, Mt1 * dinv, Mt1.transpose(1, 2)))
    X = torch.cat([Mt1.transpose(1, 2), W1, delta.unsqueeze(-1)], -1)
    # one triangular solve gives both Lg2^{-1} Mt2 D^{-1} X and Lg2^{-1} (for tr G2^{-1})
    Y = torch.linalg.solve_triangular(Lg2, torch.cat([Mt2d @ X, eye2.expand(Mt2.shape[0], S2, S2)], -1),
                                      upper=False)
    Yx, Yi = Y[..., :X.shape[-1]], Y[..., X.shape[-1]:]
    # diag(X^T P2^{-1} X) per column of X
    xpx = (X.square() * dinv.unsqueeze(-1)).sum(1) - Yx.square().sum(1)
    trace = -S2 + Yi.square().sum((-2, -1)) + xpx[:, :S1].sum(-1) - xpx[:, S1:S1 + r].sum(-1)
    logdet = (2.0 * (Lg2.diagonal(dim1=-2, dim2=-1).log().sum(-1) - Lg1.diagonal(dim1=-2, dim2=-1).log().sum(-1))
              + logdet_U1)
    return 0.5 * (trace + xpx[:, -1] + logdet)


# ----------------------------------------------------------------------------------------------
# the filter


def noise_shape(mode: str, time: int, batch: int, n_samples: int, latent: int, rank: int) -> tuple[int, ...]:
    """Shape of the standard normals `low_rank_filter` consumes (rank = r_a + r_b, or r_a in filter mode)."""
    return (time, 2 if mode == "two_filter" else 1, batch, n_samples, n_samples + latent + rank)


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
) -> Posterior:
    """Filter the potentials through the prior dynamics (MODEL.md section 3).

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

    Returns Posterior; in two_filter mode mean/var/samples/kl are the smoothed ones and filtered_*
    the causal filter's.
    """
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    if sampler not in SAMPLERS:
        raise ValueError(f"sampler must be one of {SAMPLERS}, got {sampler!r}")
    B, T, L = k_local.shape
    S = n_samples
    if sampler == "cubature" and S != 2 * L:
        raise ValueError(f"sampler='cubature' needs n_samples == 2 * latent = {2 * L}, got {S}")
    if mode == "filter":
        k_back = K_back = None
    k = k_local if k_back is None else k_local + k_back
    K = K_local if K_back is None else torch.cat([K_local, K_back], -1)
    r_a, r = K_local.shape[-1], K.shape[-1]
    like = dict(dtype=k_local.dtype, device=k_local.device)

    # Everything that does not depend on the recursion is computed for all bins before the loop and
    # then split into per-step views: this keeps small ops out of the loop, and indexing [:, t]
    # inside it would make each step's backward zero a gradient the size of the whole sequence.
    d_all = torch.cat([q0.unsqueeze(0), q.expand(T - 1, L)])  # [time, latent], diag of the noise
    eye = torch.eye(r, **like)
    full = _per_step(k, K, d_all)
    causal = _per_step(k_local, K_local, d_all) if mode == "two_filter" else full

    if sampler == "cubature":
        eps = None
    else:
        if isinstance(noise, Tensor):
            eps = noise.to(k_local)
        else:
            shape = noise_shape(mode, T, B, S, L, r)
            eps = torch.randn(shape, generator=noise, **like)
        w1 = eps[..., :S].unbind(0)
        dw2 = (eps[..., S:S + L] * d_all.sqrt()[:, None, None, None]).unbind(0)
        u = eps[..., S + L:S + L + r].unbind(0)

    def draw(upd: Update, Mt: Tensor, t: int, stream: int) -> Tensor:
        if eps is None:
            return cubature_points(upd, Mt, d_all[t])
        rank = upd.chol.shape[-1]
        return _sample(upd, Mt, (causal if stream == 0 else full)[0][t], w1[t][stream], dw2[t][stream],
                       u[t][stream][..., :rank])

    def prior() -> tuple[Tensor, Tensor]:
        # the first bin's prediction N(m0, diag(q0)) is the general form with M = 0
        return m0.expand(B, L), torch.zeros(B, S, L, **like)

    if mode == "two_filter":
        def chunk(t0: int, t1: int, zf: Optional[Tensor], zs: Optional[Tensor]):
            out = []
            for t in range(t0, t1):
                if t == 0:
                    mbar_f, Mt_f = mbar_2, Mt_2 = prior()
                else:
                    # one pass of f over both particle sets: filtered (to propagate) and smoothed (for KL)
                    mu = propagate(dynamics, torch.cat([zf, zs], 1))
                    (mbar_f, Mt_f), (mbar_2, Mt_2) = moments(mu[:, :S]), moments(mu[:, S:])
                upd_f = _update(mbar_f, Mt_f, *(x[t] for x in causal), eye[:r_a, :r_a])
                upd_s = _update(mbar_f, Mt_f, *(x[t] for x in full), eye)
                zf, zs = draw(upd_f, Mt_f, t, 0), draw(upd_s, Mt_f, t, 1)
                logdet_U = 2.0 * upd_s.chol.diagonal(dim1=-2, dim2=-1).log().sum(-1)
                W = torch.linalg.solve_triangular(upd_s.chol, upd_s.PK.transpose(1, 2), upper=False)
                kl = kl_lowrank(upd_s.mean - mbar_2, d_all[t], Mt_f, W.transpose(1, 2), logdet_U, Mt_2)
                out.append((upd_s.mean, _wsq(upd_s), zs.transpose(0, 1), kl,
                            upd_f.mean, _wsq(upd_f), zf.transpose(0, 1), Mt_f.square().sum(1)))
            return tuple(torch.stack(x, dim) for x, dim in zip(zip(*out), dims)) + (zf, zs)

        dims = (1, 1, 2, 1, 1, 1, 2, 1)
        mean, wsq, samples, kl, fmean, fwsq, fsamples, msq = _run_chunks(chunk, T, checkpoint_steps, 2, dims)
        return Posterior(mean, _var(d_all, msq, wsq), samples, kl, fmean, _var(d_all, msq, fwsq), fsamples)

    def chunk(t0: int, t1: int, z: Optional[Tensor]):
        out = []
        for t in range(t0, t1):
            mbar, Mt = prior() if t == 0 else predict_moments(dynamics, z)
            upd = _update(mbar, Mt, *(x[t] for x in full), eye)
            z = draw(upd, Mt, t, 0)
            out.append((upd.mean, Mt.square().sum(1), _wsq(upd), z.transpose(0, 1), mbar, upd.Ktv, upd.chol))
        return tuple(torch.stack(x, dim) for x, dim in zip(zip(*out), dims)) + (z,)

    dims = (1, 1, 1, 2, 1, 1, 1)
    mean, msq, wsq, samples, mbar, Ktv, chol = _run_chunks(chunk, T, checkpoint_steps, 1, dims)
    # the KL needs nothing sequential, so it is computed for all bins at once
    kl = kl_step(mean - mbar, k, K, Ktv, chol)
    return Posterior(mean, _var(d_all, msq, wsq), samples, kl)


def _per_step(k: Tensor, K: Tensor, d_all: Tensor) -> tuple[tuple[Tensor, ...], ...]:
    """Per-bin views (K, [K, k], diag(d) [K, k]) of k [batch, time, latent], K [batch, time, latent, rank],
    d_all [time, latent]; each a tuple over time of [batch, latent, rank (+1)]."""
    Kx = torch.cat([K, k.unsqueeze(-1)], -1)
    return K.unbind(1), Kx.unbind(1), (d_all.unsqueeze(-1) * Kx).unbind(1)


def _run_chunks(chunk, T: int, checkpoint_steps: int, n_state: int, dims: tuple[int, ...]):
    """Run `chunk(t0, t1, *state) -> (*outputs stacked over time along dims, *state)` over [0, T)."""
    step = checkpoint_steps if checkpoint_steps > 0 else T
    state: tuple = (None,) * n_state
    pieces = []
    for t0 in range(0, T, step):
        t1 = min(T, t0 + step)
        if checkpoint_steps > 0 and torch.is_grad_enabled():
            res = checkpoint(chunk, t0, t1, *state, use_reentrant=False)
        else:
            res = chunk(t0, t1, *state)
        pieces.append(res[:-n_state])
        state = res[-n_state:]
    if len(pieces) == 1:
        return pieces[0]
    return tuple(torch.cat(xs, dim) for xs, dim in zip(zip(*pieces), dims))
