"""The low-rank nonlinear filter of XFADS (docs/model.md sections 2-4): pure functions, no module state.

    post = low_rank_filter(dynamics, m0, q0, q, k_local, K_local, k_back, K_back,
                           n_samples=20, mode="smoother")
    elbo = loglik(post.samples).mean(0).sum() - post.kl.sum()

The posterior at each bin is the moment-matched prediction N(mbar, Pbar), Pbar = diag(d) + Mt^T Mt
(d = q, or q0 at the first bin; the rows of Mt are the scaled deviations of the S propagated
samples), times a Gaussian potential in information form (k, K K^T). Everything stays factored:

    U = I + K^T Pbar K (rank x rank),   Z = U^{-1} (Pbar K)^T,   P = diag(d) + Mt^T Mt - (Pbar K) Z

so no latent x latent matrix is formed and one step costs O(batch * latent * (sample + rank)^2).

One bin is `filter_step` (docs/model.md section 3): `update`, then `sample_posterior` (Matheron's rule)
or `cubature_points`; `low_rank_filter` scans it over time (`scan`) and computes the KL
(`kl_step`, or `kl_lowrank` in two_filter mode; docs/model.md section 4) and the marginal variances
(`marginal_var`) for all bins at once afterwards. Training runs the same step as one autograd node
with a hand-written backward (`_FilterStep`); tests/test_filtering.py checks it against `filter_step`.

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

import math
from typing import Callable, NamedTuple, Optional, Sequence, Union

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable
from torch.utils.checkpoint import checkpoint

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


class Update(NamedTuple):
    """Factored result of one information-form update (see `update`).

    mean:     [batch, latent]         posterior mean m
    PK:       [batch, latent, rank]   Pbar K
    Z:        [batch, rank, latent]   U^{-1} (Pbar K)^T, so P = Pbar - PK Z
    Uinv:     [batch, rank, rank]     U^{-1}, U = I + K^T Pbar K
    logdet_U: [batch]                 log det U
    Ktv:      [batch, rank]           K^T (mbar + Pbar k)
    """

    mean: Tensor
    PK: Tensor
    Z: Tensor
    Uinv: Tensor
    logdet_U: Tensor
    Ktv: Tensor


class Draws(NamedTuple):
    """The standard normals of one step's Matheron draws (`split_noise`), n draws per trial.

    w1:  [batch, n, sample]  weights of the rows of Mt
    dw2: [batch, n, latent]  d^{1/2} w2, the diagonal part
    u:   [batch, n, rank]    pseudo-observation noise
    """

    w1: Tensor
    dw2: Tensor
    u: Tensor


class Step(NamedTuple):
    """Everything one filter step produces (`filter_step`, `_FilterStep`), all [batch, ...].

    mean [batch, latent], z [batch, n, latent] (the draws), Uinv [batch, rank, rank], logdet_U [batch],
    Ktv [batch, rank], PK [batch, latent, rank], Z [batch, rank, latent]: as in `Update`;
    wsq [batch, latent] = diag(PK Z), msq [batch, latent] = diag(Mt^T Mt) (`marginal_var`);
    mbar [batch, latent], Mt [batch, sample, latent]: the prediction the step updated.
    """

    mean: Tensor
    z: Tensor
    Uinv: Tensor
    logdet_U: Tensor
    Ktv: Tensor
    PK: Tensor
    Z: Tensor
    wsq: Tensor
    msq: Tensor
    mbar: Tensor
    Mt: Tensor


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


def tril_inverse(L: Tensor) -> Tensor:
    """Inverse of lower-triangular L [..., n, n]."""
    eye = torch.eye(L.shape[-1], dtype=L.dtype, device=L.device)
    return torch.linalg.solve_triangular(L, eye.expand_as(L), upper=False)


class _SPDInverse(torch.autograd.Function):
    """(U^{-1}, log det U) of symmetric positive definite U through its Cholesky factor.

    The backward is two small matmuls (dU = -U^{-1} dX U^{-1} + g U^{-1}); letting autograd
    differentiate cholesky_ex and a triangular solve instead costs several times more for the small
    r x r systems of the filter, and batched LAPACK solves are slower than matmuls at these sizes.
    """

    @staticmethod
    def forward(ctx, U: Tensor):
        ctx.set_materialize_grads(False)
        chol = cholesky_jitter(U)
        Linv = tril_inverse(chol)
        Uinv = Linv.transpose(-1, -2) @ Linv
        ctx.save_for_backward(Uinv)
        return Uinv, 2.0 * chol.diagonal(dim1=-2, dim2=-1).log().sum(-1)

    @staticmethod
    @once_differentiable
    def backward(ctx, g_inv: Optional[Tensor], g_logdet: Optional[Tensor]):
        (Uinv,) = ctx.saved_tensors
        dU = torch.zeros_like(Uinv) if g_inv is None else -(Uinv @ g_inv @ Uinv)
        if g_logdet is not None:
            dU = dU + g_logdet[..., None, None] * Uinv
        return dU


def spd_inverse(U: Tensor) -> tuple[Tensor, Tensor]:
    """(U^{-1} [..., n, n], log det U [...]) for SPD U [..., n, n] (Cholesky with jitter fallback)."""
    return _SPDInverse.apply(U)


# ----------------------------------------------------------------------------------------------
# one filter step: predict (propagate, moments), update, draw


def propagate(dynamics: Dynamics, z: Tensor) -> Tensor:
    """f applied to particles z [batch, sample, latent] -> [batch, sample, latent].

    f is called on [sample, batch, latent] (per-trial dynamics broadcast over the batch dim), except
    for dynamics that declare `rowwise = True` (f maps each latent vector on its own, model/dynamics.py):
    those get the particles in their own layout, which spares two transposes and a copy per step."""
    if getattr(dynamics, "rowwise", False):
        return dynamics(z)
    return dynamics(z.transpose(0, 1)).transpose(0, 1)


def moments(mu: Tensor) -> tuple[Tensor, Tensor]:
    """Moment matching of propagated particles mu [batch, sample, latent].

    Returns mbar [batch, latent] and Mt [batch, sample, latent] (rows (mu_s - mbar) / sqrt(S)), so the
    prediction is N(mbar, diag(q) + Mt^T Mt).
    """
    mbar = mu.mean(1)
    return mbar, (mu - mbar.unsqueeze(1)) * (mu.shape[1] ** -0.5)


def update(mbar: Tensor, Mt: Tensor, d: Tensor, X: Tensor) -> Update:
    """Information-form update of N(mbar, Pbar) with the potential (k, K K^T), Pbar = diag(d) + Mt^T Mt.

    mbar [batch, latent], Mt [batch, sample, latent], d [latent], X = [K, k] [batch, latent, rank + 1]
    -> Update (P^{-1} = Pbar^{-1} + K K^T, m = P (Pbar^{-1} mbar + k)).
    """
    r = X.shape[-1] - 1
    # Pbar [K, k] in one product: diag(d) X + Mt^T (Mt X)
    PX = torch.baddbmm(d.unsqueeze(-1) * X, Mt.transpose(1, 2), torch.bmm(Mt, X))
    PK = PX[..., :r]
    v = PX[..., r:] + mbar.unsqueeze(-1)  # mbar + Pbar k, [batch, latent, 1]
    Kt = X[..., :r].transpose(1, 2)
    Uinv, logdet_U = spd_inverse(torch.baddbmm(torch.eye(r, dtype=X.dtype, device=X.device), Kt, PK))
    Z = torch.bmm(Uinv, PK.transpose(1, 2))
    Ktv = torch.bmm(Kt, v)
    # m = v - Pbar K U^{-1} K^T v
    mean = torch.baddbmm(v, Z.transpose(1, 2), Ktv, alpha=-1.0).squeeze(-1)
    return Update(mean, PK, Z, Uinv, logdet_U, Ktv.squeeze(-1))


def sample_posterior(upd: Update, Mt: Tensor, K: Tensor, draws: Draws) -> Tensor:
    """Matheron's rule: draws of N(m, P) without forming P.

    upd from `update`, Mt [batch, sample, latent], K [batch, latent, rank], draws (`Draws`, n per
    trial) -> z [batch, n, latent].

    ztilde = M w1 + d^{1/2} w2 ~ N(0, Pbar);  z = m + ztilde - Pbar K U^{-1} (K^T ztilde + u).
    The Pbar in the correction is what makes Cov(z) = P (it is easy to drop by mistake).
    """
    zt = torch.baddbmm(draws.dw2, draws.w1, Mt)
    # rows: (ztilde^T K + u^T) U^{-1} (Pbar K)^T = (...) Z
    return torch.baddbmm(zt + upd.mean.unsqueeze(1), torch.baddbmm(draws.u, zt, K), upd.Z, alpha=-1.0)


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


def filter_step(mbar: Tensor, Mt: Tensor, d: Tensor, X: Tensor, draws: Optional[Draws]) -> Step:
    """Update the prediction N(mbar, diag(d) + Mt^T Mt) with the potential X = [K, k] and draw from it.

    mbar [batch, latent], Mt [batch, sample, latent] (zeros at the first bin), d [latent],
    X [batch, latent, rank + 1], draws: Matheron's noise (`Draws`), or None for cubature points -> Step.
    `_FilterStep` computes the same quantities by the same products as one autograd node.
    """
    upd = update(mbar, Mt, d, X)
    z = cubature_points(upd, Mt, d) if draws is None else sample_posterior(upd, Mt, X[..., :-1], draws)
    wsq = (upd.PK * upd.Z.transpose(1, 2)).sum(-1)
    return Step(upd.mean, z, upd.Uinv, upd.logdet_U, upd.Ktv, upd.PK, upd.Z, wsq, Mt.square().sum(1), mbar, Mt)


# ----------------------------------------------------------------------------------------------
# per-bin summaries, computed for all bins at once after the scan


def marginal_var(d: Tensor, msq: Tensor, wsq: Tensor) -> Tensor:
    """diag(P) = d + diag(Mt^T Mt) - diag(PK Z) (docs/model.md section 3, "Marginal variances").

    d [..., latent] (broadcast), msq and wsq [..., latent] as in `Step` -> [..., latent].
    """
    # round-off can push a tightly constrained variance just below zero in float32
    return (d + msq - wsq).clamp_min(0.0)


def kl_step(delta: Tensor, k: Tensor, K: Tensor, Ktv: Tensor, Uinv: Tensor, logdet_U: Tensor) -> Tensor:
    """KL(N(m, P) || N(mbar, Pbar)) for P^{-1} = Pbar^{-1} + K K^T, in closed form (docs/model.md section 4).

    delta = m - mbar [..., latent], k [..., latent], K [..., latent, rank]; Ktv [..., rank],
    Uinv [..., rank, rank], logdet_U [...] as in `Update` -> [...]; e.g. [batch, time, ...] for all bins.

    KL = 1/2 [tr(U^{-1}) - r + delta^T Pbar^{-1} delta + log det U], and Pbar^{-1} delta = k - K c with
    c = U^{-1} K^T (mbar + Pbar k), so no Pbar^{-1} (and no sample x sample factor) is needed.
    """
    # matrix-vector products as elementwise products: their backward is then elementwise too
    c = (Uinv * Ktv.unsqueeze(-2)).sum(-1)
    w = k - (K * c.unsqueeze(-2)).sum(-1)  # Pbar^{-1} delta
    trace = Uinv.diagonal(dim1=-2, dim2=-1).sum(-1)
    return 0.5 * (trace - Uinv.shape[-1] + (delta * w).sum(-1) + logdet_U)


def kl_lowrank(delta: Tensor, d: Tensor, Mt1: Tensor, PK1: Tensor, Z1: Tensor, logdet_U1: Tensor, Mt2: Tensor) -> Tensor:
    """KL(N(m1, P1) || N(m2, P2)) for P1 = diag(d) + Mt1^T Mt1 - PK1 Z1 and P2 = diag(d) + Mt2^T Mt2.

    delta = m1 - m2 [batch, latent], d [latent] or [batch, latent], Mt1 [batch, sample, latent],
    PK1 [batch, latent, rank], Z1 [batch, rank, latent], logdet_U1 [batch] (as in `Update`, so
    log det(diag(d) + Mt1^T Mt1) - log det P1 = logdet_U1), Mt2 [batch, sample2, latent] -> [batch].
    Woodbury with G = I + Mt D^{-1} Mt^T: O(latent * sample^2) per trial. two_filter mode's KL_t
    (docs/model.md section 3): q(z_t) against the prediction from the smoothed particles of t - 1.
    """
    dinv = 1.0 / d
    eye1 = torch.eye(Mt1.shape[1], dtype=d.dtype, device=d.device)
    eye2 = torch.eye(Mt2.shape[1], dtype=d.dtype, device=d.device)
    Mt2d = Mt2 * dinv.unsqueeze(-2)
    G2inv, logdet_G2 = spd_inverse(torch.baddbmm(eye2, Mt2d, Mt2.transpose(1, 2)))
    logdet_G1 = spd_inverse(torch.baddbmm(eye1, Mt1 * dinv.unsqueeze(-2), Mt1.transpose(1, 2)))[1]

    def inner(X: Tensor, Y: Tensor) -> Tensor:
        """tr(X^T P2^{-1} Y) for X, Y [batch, latent, n], by Woodbury."""
        return ((X * dinv.unsqueeze(-1)) * Y).sum((-2, -1)) - ((Mt2d @ X) * (G2inv @ (Mt2d @ Y))).sum((-2, -1))

    Mt1T, dl = Mt1.transpose(1, 2), delta.unsqueeze(-1)
    # tr(P2^{-1} P1) - L = -S2 + tr(G2^{-1}) + tr(Mt1 P2^{-1} Mt1^T) - tr(P2^{-1} PK1 Z1)
    trace = (G2inv.diagonal(dim1=-2, dim2=-1).sum(-1) - Mt2.shape[1] + inner(Mt1T, Mt1T)
             - inner(PK1, Z1.transpose(1, 2)))
    logdet = logdet_G2 - logdet_G1 + logdet_U1
    return 0.5 * (trace + inner(dl, dl) + logdet)


# ----------------------------------------------------------------------------------------------
# the fused step


class _FilterStep(torch.autograd.Function):
    """`moments` + `filter_step` with Matheron draws as ONE autograd node with a hand-written backward.

    forward(mu [B, S, L] or None, mbar [B, L] or None, X = [K, k] [B, L, r + 1], DX = diag(d) X,
            w1 [B, n, S], dw2 = d^{1/2} w2 [B, n, L], u [B, n, r], eye [B, r, r])
        -> the fields of `Step`, the same quantities, by the same products, as `filter_step`; mu None:
    the first bin, whose prediction is N(mbar, diag(d)) (M = 0). eye: the identity, broadcast over the batch.

    This is the filter's time loop minus f: autograd through the composable functions records ~45
    small ops per step and runs ~20 batched matmuls backward; here the forward records nothing and
    the backward shares products (U^{-1} dZ gives both the PK and the U gradient). The noise w1, u gets
    no gradient (the filter takes the composable path for noise that requires one). The filter
    prepares X, DX and dw2 for all bins at once, so their gradients w.r.t. K, k and d are also taken
    once for all bins.

    Backward, with PX = [Pbar K, v] (v = mbar + Pbar k) and KP = K^T PX = [U - I, Ktv]:
        z = zt + mean - c Z, c = u + zt K, zt = dw2 + w1 Mt, mean = v - Z^T Ktv, Z = U^{-1} PK^T,
        PX = DX + Mt^T (Mt X) + [0, mbar];  dU from Z is -U^{-1} dZ PK U^{-1} = -(U^{-1} dZ) Z^T.
    Signs are folded into the products where possible (nZ = -dZ, nW = -U^{-1} dZ).
    """

    @staticmethod
    def forward(ctx, mu, mbar, X, DX, w1, dw2, u, eye):
        ctx.set_materialize_grads(False)
        ctx.first = mu is None
        bmm, baddbmm = torch.bmm, torch.baddbmm
        if mu is None:  # the first bin: prediction N(mbar, diag(d)), M = 0
            Mt = X.new_zeros(X.shape[0], w1.shape[-1], X.shape[1])
        else:
            mbar, Mt = moments(mu)
        r = X.shape[-1] - 1
        K = X[..., :r]
        MX = bmm(Mt, X)
        PX = baddbmm(DX, Mt.transpose(1, 2), MX)  # Pbar [K, k]
        PX[..., r] += mbar  # [Pbar K, v]
        KP = bmm(K.transpose(1, 2), PX)
        U = KP[..., :r]
        U.diagonal(dim1=-2, dim2=-1).add_(1.0)  # I + K^T Pbar K
        chol = cholesky_jitter(U)
        Linv = torch.linalg.solve_triangular(chol, eye, upper=False)
        Uinv = Linv.transpose(-1, -2) @ Linv
        logdet = chol.diagonal(dim1=-2, dim2=-1).log().sum(-1).mul_(2.0)
        PK = PX[..., :r]
        Z = bmm(Uinv, PK.transpose(1, 2))
        Zt = Z.transpose(1, 2)
        mean = baddbmm(PX[..., r:], Zt, KP[..., r:], alpha=-1.0).transpose(1, 2)  # [B, 1, L]
        zt = baddbmm(dw2, w1, Mt)
        c = baddbmm(u, zt, K)
        z = baddbmm(zt + mean, c, Z, alpha=-1.0)
        wsq = (PK * Zt).sum(-1)
        msq = Mt.square().sum(1)
        ctx.save_for_backward(Mt, X, w1, MX, PX, KP, Uinv, Z, zt, c)
        return mean.squeeze(1), z, Uinv, logdet, KP[..., r], PK, Z, wsq, msq, mbar, Mt

    @staticmethod
    @once_differentiable
    def backward(ctx, g_mean, g_z, g_Uinv, g_logdet, g_Ktv, g_PK, g_Z, g_wsq, g_msq, g_mbar, g_Mt):
        Mt, X, w1, MX, PX, KP, Uinv, Z, zt, c = ctx.saved_tensors
        bmm, baddbmm = torch.bmm, torch.baddbmm
        r = X.shape[-1] - 1
        K, PK, Ktv = X[..., :r], PX[..., :r], KP[..., r:]
        Zt = Z.transpose(1, 2)
        B, L = X.shape[0], X.shape[1]
        zeros = X.new_zeros
        gm = None if g_mean is None else g_mean.unsqueeze(-1)  # [B, L, 1]: total gradient of mean
        gK = gMt = gzt = None
        nZ = None if g_Z is None else -g_Z  # -dZ
        if g_z is not None:
            gm = g_z.sum(1).unsqueeze(-1) if gm is None else gm + g_z.sum(1).unsqueeze(-1)
            ngc = bmm(g_z, Zt)  # -dc
            nZ = bmm(c.transpose(1, 2), g_z) if nZ is None else baddbmm(nZ, c.transpose(1, 2), g_z)
            gzt = baddbmm(g_z, ngc, K.transpose(1, 2), alpha=-1.0)
            gK = bmm(zt.transpose(1, 2), ngc).neg_()
            gMt = bmm(w1.transpose(1, 2), gzt)
        gKtv = None if g_Ktv is None else g_Ktv.unsqueeze(-1)  # [B, r, 1]
        if gm is not None:
            nZ = Ktv * gm.transpose(1, 2) if nZ is None else torch.addcmul(nZ, Ktv, gm.transpose(1, 2))
            gKtv = bmm(Z, gm).neg_() if gKtv is None else baddbmm(gKtv, Z, gm, alpha=-1.0)
        gPK = g_PK
        if g_wsq is not None:
            gPK = g_wsq.unsqueeze(-1) * Zt if gPK is None else torch.addcmul(gPK, g_wsq.unsqueeze(-1), Zt)
            nZ = torch.addcmul(zeros(B, r, L) if nZ is None else nZ, g_wsq.unsqueeze(1), PK.transpose(1, 2), value=-1.0)
        # U^{-1} and log det U as outputs: dU = -U^{-1} dUinv U^{-1} + dlogdet U^{-1}
        gU = None if g_logdet is None else g_logdet[:, None, None] * Uinv
        if g_Uinv is not None:
            gU = bmm(Uinv, bmm(g_Uinv, Uinv)).neg_() if gU is None else baddbmm(gU, Uinv, bmm(g_Uinv, Uinv), alpha=-1.0)
        if nZ is not None:
            nW = bmm(Uinv, nZ)  # -U^{-1} dZ: dPK += -nW^T, dU += nW Z^T
            gPK = nW.transpose(1, 2).neg() if gPK is None else gPK - nW.transpose(1, 2)
            gU = bmm(nW, Zt) if gU is None else baddbmm(gU, nW, Zt)
        # KP = K^T PX: [gU, gKtv] -> PX and K
        G0 = torch.cat([zeros(B, L, r) if gPK is None else gPK, zeros(B, L, 1) if gm is None else gm], -1)
        if gU is None and gKtv is None:
            gPX = G0
        else:
            gKP = torch.cat([zeros(B, r, r) if gU is None else gU, zeros(B, r, 1) if gKtv is None else gKtv], -1)
            gPX = baddbmm(G0, K, gKP)
            gK = bmm(PX, gKP.transpose(1, 2)) if gK is None else baddbmm(gK, PX, gKP.transpose(1, 2))
        gmbar = gPX[..., r] if g_mbar is None else gPX[..., r] + g_mbar
        # PX = DX + Mt^T (Mt X) (+ mbar in the last column)
        gMt = bmm(MX, gPX.transpose(1, 2)) if gMt is None else baddbmm(gMt, MX, gPX.transpose(1, 2))
        gMX = bmm(Mt, gPX)
        gMt = baddbmm(gMt, gMX, X.transpose(1, 2))
        gX = bmm(Mt.transpose(1, 2), gMX)
        if g_msq is not None:
            gMt = torch.addcmul(gMt, Mt, g_msq.unsqueeze(1), value=2.0)
        if g_Mt is not None:
            gMt = gMt + g_Mt
        if gK is not None:
            gX[..., :r] += gK
        if ctx.first:
            return None, gmbar, gX, gPX, None, gzt, None, None
        # back through mbar = mean_s mu_s, Mt = (mu - mbar) / sqrt(S)
        S = Mt.shape[1]
        gmu = (gMt - gMt.mean(1, keepdim=True)).mul_(S ** -0.5).add_((gmbar / S).unsqueeze(1))
        return gmu, None, gX, gPX, None, gzt, None, None


# ----------------------------------------------------------------------------------------------
# the filter: a step per stream, scanned over time


BinStep = Callable[[Optional[Tensor], int], Step]


def noise_shape(mode: str, time: int, batch: int, n_samples: int, latent: int, rank: int) -> tuple[int, ...]:
    """Shape of the standard normals `low_rank_filter` consumes (rank = r_a + r_b, or r_a in filter mode)."""
    return (time, 2 if mode == "two_filter" else 1, batch, n_samples, n_samples + latent + rank)


def split_noise(eps: Tensor, d: Tensor, n_samples: int, ranks: Sequence[int]) -> list[list[Draws]]:
    """Per stream and bin, the `Draws` in standard normals eps [time, stream, batch, n, sample + latent + rank']
    (d [time, latent]: each bin's diagonal; ranks: each stream's rank <= rank'; n_samples = sample)."""
    S, L = n_samples, d.shape[-1]
    # d^{1/2} w2 of every bin at once (one op forward and backward instead of one per bin)
    dw2 = d.sqrt()[:, None, None, None] * eps[..., S:S + L]
    return [[Draws(*x) for x in zip(e[..., :S].unbind(0), w.unbind(0), e[..., S + L:S + L + rk].unbind(0))]
            for e, w, rk in zip(eps.unbind(1), dw2.unbind(1), ranks)]


def bin_step(X: Tensor, d: Tensor, draws: Optional[Sequence[Draws]], m0: Tensor, n_samples: int,
             fused: bool) -> BinStep:
    """The step of one stream: (mu [batch, sample, latent], the propagated particles, or None at the
    first bin, whose prediction is N(m0, diag(d_0)); bin t) -> Step.

    X [batch, time, latent, rank + 1]: the stream's potentials [K, k]; d [time, latent]; draws: per
    bin, or None for cubature points. fused: run `_FilterStep` (Matheron draws whose noise needs no
    gradient) instead of `filter_step`.
    """
    B, _, L, r1 = X.shape
    mbar0 = m0.expand(B, L)
    # per-bin views made once: indexing [:, t] in the loop would make each bin's backward zero a
    # gradient the size of the whole sequence
    Xs = X.unbind(1)
    if fused:
        # each bin's node keeps its diag(d) [K, k] for backward anyway, so it is made for all bins at once
        DXs = (d[:, :, None] * X).unbind(1)
        eye = torch.eye(r1 - 1, dtype=X.dtype, device=X.device).expand(B, r1 - 1, r1 - 1)

        def step(mu: Optional[Tensor], t: int) -> Step:
            return Step(*_FilterStep.apply(mu, mbar0 if mu is None else None, Xs[t], DXs[t], *draws[t], eye))

        return step
    zeros = X.new_zeros(B, n_samples, L)

    def step(mu: Optional[Tensor], t: int) -> Step:
        mbar, Mt = (mbar0, zeros) if mu is None else moments(mu)
        return filter_step(mbar, Mt, d[t], Xs[t], None if draws is None else draws[t])

    return step


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
    """Draws stacked over time [batch, time, sample, latent] -> [sample, batch, time, latent]."""
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


def filter_state(post: Posterior) -> FilterState:
    """What the filter carries out of the last bin of `post` into a next piece (`low_rank_filter`'s
    state): the propagated draws of that bin, [batch, sample, latent]; in two_filter mode the causal
    and the smoothed ones."""
    last = post.samples[:, :, -1].transpose(0, 1)
    return last if post.filtered_samples is None else (post.filtered_samples[:, :, -1].transpose(0, 1), last)
