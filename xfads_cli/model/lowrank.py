"""The Gaussian algebra of the low-rank filter (docs/model.md sections 3-4), on factors only: SPD
inverses of the small rank x rank systems (`spd_inverse`, Cholesky with a jitter fallback), the
moment-matched prediction of propagated particles (`moments`), and the per-bin summaries the filter
computes for all bins at once after its scan (`marginal_var`, and the KLs `kl_step` and `kl_lowrank`).
No latent x latent matrix is formed.
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable


def cholesky_jitter(A: Tensor, max_tries: int = 8) -> Tensor:
    """Lower Cholesky factor of SPD matrices A [..., n, n], adding jitter only to failing ones.

    The jitter starts at 1e-7 x max|diag| of the failing matrix and grows tenfold per retry; the
    matrices the filter factors are I + (PSD) in exact arithmetic, so failures mean round-off.
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


def moments(mu: Tensor) -> tuple[Tensor, Tensor]:
    """Moment matching of propagated particles mu [batch, sample, latent].

    Returns mbar [batch, latent] and Mt [batch, sample, latent] (rows (mu_s - mbar) / sqrt(S)), so the
    prediction is N(mbar, diag(q) + Mt^T Mt).
    """
    mbar = mu.mean(1)
    return mbar, (mu - mbar.unsqueeze(1)) * (mu.shape[1] ** -0.5)


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
