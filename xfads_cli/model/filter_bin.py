"""One bin of the low-rank filter (docs/model.md section 3): the prediction N(mbar, diag(d) + Mt^T Mt)
updated with the bin's potential in information form (`update`), then drawn from by Matheron's rule
(`sample_posterior`) or by cubature points (`cubature_points`); `filter_step` is the whole bin.
Training runs the same bin as one autograd node with a hand-written backward (`_FilterStep`);
`bin_step` picks one of the two for a stream of bins. tests/test_filtering.py checks the fused node
against `filter_step`.

Inside a step the particles are [batch, sample, latent], the layout batched matmuls want.
"""

from __future__ import annotations

import math
from typing import Callable, NamedTuple, Optional, Sequence

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

from xfads_cli.model.lowrank import cholesky_jitter, moments, spd_inverse


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


class StepNoise(NamedTuple):
    """The standard normals of one step's Matheron draws (cut from the filter's noise by
    model/filtering.py's `split_noise`), n draws per trial.

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


def sample_posterior(upd: Update, Mt: Tensor, K: Tensor, draws: StepNoise) -> Tensor:
    """Matheron's rule: draws of N(m, P) without forming P.

    upd from `update`, Mt [batch, sample, latent], K [batch, latent, rank], draws (`StepNoise`, n per
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


def filter_step(mbar: Tensor, Mt: Tensor, d: Tensor, X: Tensor, draws: Optional[StepNoise]) -> Step:
    """Update the prediction N(mbar, diag(d) + Mt^T Mt) with the potential X = [K, k] and draw from it.

    mbar [batch, latent], Mt [batch, sample, latent] (zeros at the first bin), d [latent],
    X [batch, latent, rank + 1], draws: Matheron's noise (`StepNoise`), or None for cubature points -> Step.
    `_FilterStep` computes the same quantities by the same products as one autograd node.
    """
    upd = update(mbar, Mt, d, X)
    z = cubature_points(upd, Mt, d) if draws is None else sample_posterior(upd, Mt, X[..., :-1], draws)
    wsq = (upd.PK * upd.Z.transpose(1, 2)).sum(-1)
    return Step(upd.mean, z, upd.Uinv, upd.logdet_U, upd.Ktv, upd.PK, upd.Z, wsq, Mt.square().sum(1), mbar, Mt)


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


BinStep = Callable[[Optional[Tensor], int], Step]


def bin_step(X: Tensor, d: Tensor, draws: Optional[Sequence[StepNoise]], m0: Tensor, n_samples: int,
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
