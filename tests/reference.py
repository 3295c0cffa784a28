"""Dense reference implementations for tests (float64, small sizes, clarity over speed).

Linear-Gaussian state-space model:
    z_1 ~ N(m0, P0),  z_t = A z_{t-1} + e_t, e_t ~ N(0, Q),  y_t = C z_t + d + v_t, v_t ~ N(0, diag(R))
with y [time, neuron]; everything is for a single trial.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
from torch import Tensor


class KalmanResult(NamedTuple):
    pred_mean: Tensor  # [time, latent]  E[z_t | y_{1:t-1}]
    pred_cov: Tensor   # [time, latent, latent]
    mean: Tensor       # [time, latent]  E[z_t | y_{1:t}]
    cov: Tensor        # [time, latent, latent]
    loglik: Tensor     # []  log p(y_{1:T})


def gaussian_logpdf(x: Tensor, mean: Tensor, cov: Tensor) -> Tensor:
    """log N(x; mean, cov) for x, mean [n], cov [n, n]."""
    n = x.shape[-1]
    Lc = torch.linalg.cholesky(cov)
    z = torch.linalg.solve_triangular(Lc, (x - mean).unsqueeze(-1), upper=False).squeeze(-1)
    return -0.5 * (z @ z) - Lc.diagonal().log().sum() - 0.5 * n * math.log(2 * math.pi)


def kalman_filter(A, Q, C, d, R, m0, P0, y, drive=None) -> KalmanResult:
    """Dense Kalman filter with exact log marginal likelihood. R [neuron] diagonal, y [time, neuron];
    drive [time, latent]: a known input added to the prediction, z_t = A z_{t-1} + drive_t + noise."""
    T = y.shape[0]
    pm, pc, fm, fc = [], [], [], []
    ll = y.new_zeros(())
    m, P = m0, P0
    for t in range(T):
        if t > 0:
            m, P = A @ m + (0 if drive is None else drive[t]), A @ P @ A.T + Q
        pm.append(m)
        pc.append(P)
        S = C @ P @ C.T + torch.diag(R)
        ll = ll + gaussian_logpdf(y[t], C @ m + d, S)
        G = P @ C.T @ torch.linalg.inv(S)
        m = m + G @ (y[t] - C @ m - d)
        P = P - G @ S @ G.T
        P = 0.5 * (P + P.T)
        fm.append(m)
        fc.append(P)
    return KalmanResult(torch.stack(pm), torch.stack(pc), torch.stack(fm), torch.stack(fc), ll)


def rts_smoother(A, Q, kf: KalmanResult) -> tuple[Tensor, Tensor]:
    """Rauch-Tung-Striebel smoother: (mean [time, latent], cov [time, latent, latent])."""
    T = kf.mean.shape[0]
    ms, Ps = [kf.mean[-1]], [kf.cov[-1]]
    for t in range(T - 2, -1, -1):
        J = kf.cov[t] @ A.T @ torch.linalg.inv(kf.pred_cov[t + 1])
        ms.insert(0, kf.mean[t] + J @ (ms[0] - kf.pred_mean[t + 1]))
        Ps.insert(0, kf.cov[t] + J @ (Ps[0] - kf.pred_cov[t + 1]) @ J.T)
    return torch.stack(ms), torch.stack(Ps)


def likelihood_potential(C, d, R, y) -> tuple[Tensor, Tensor]:
    """Exact Gaussian likelihood as information-form potentials: h [time, latent], factor [time, latent, neuron]
    with h = C^T R^{-1} (y - d) and C^T R^{-1} C = factor factor^T."""
    h = (y - d) / R @ C
    factor = (C / R.sqrt().unsqueeze(-1)).T
    return h, factor.expand(y.shape[0], *factor.shape)


def backward_messages(A, Q, C, d, R, y) -> tuple[Tensor, Tensor]:
    """Information form (h_t, J_t) of p(y_{t+1:T} | z_t) ∝ exp(h^T z - z^T J z / 2); zero at t = T."""
    T, L = y.shape[0], A.shape[0]
    hs = [y.new_zeros(L)]
    Js = [y.new_zeros(L, L)]
    lik_h, lik_F = likelihood_potential(C, d, R, y)
    eye = torch.eye(L, dtype=y.dtype)
    for t in range(T - 2, -1, -1):
        Jt = lik_F[t + 1] @ lik_F[t + 1].T + Js[0]
        ht = lik_h[t + 1] + hs[0]
        inv = torch.linalg.inv(eye + Jt @ Q)
        J = A.T @ inv @ Jt @ A
        hs.insert(0, A.T @ inv @ ht)
        Js.insert(0, 0.5 * (J + J.T))
    return torch.stack(hs), torch.stack(Js)


def psd_factor(J: Tensor) -> Tensor:
    """F [..., n, n] with F F^T = J for symmetric PSD J (eigenvalues clipped at 0)."""
    evals, evecs = torch.linalg.eigh(J)
    return evecs * evals.clamp_min(0).sqrt().unsqueeze(-2)


def info_update(mbar, Pbar, k, K) -> tuple[Tensor, Tensor]:
    """Dense information-form update: P = (Pbar^{-1} + K K^T)^{-1}, m = P (Pbar^{-1} mbar + k)."""
    Pinv = torch.linalg.inv(Pbar)
    P = torch.linalg.inv(Pinv + K @ K.T)
    return P @ (Pinv @ mbar + k), P


def gaussian_kl(m1, P1, m2, P2) -> Tensor:
    """KL(N(m1, P1) || N(m2, P2)), dense."""
    n = m1.shape[-1]
    P2inv = torch.linalg.inv(P2)
    dm = m2 - m1
    return 0.5 * (torch.trace(P2inv @ P1) - n + dm @ P2inv @ dm
                  + torch.logdet(P2) - torch.logdet(P1))
