"""The low-rank filter against dense references (docs/model.md section 7)."""

from __future__ import annotations

import math

import pytest
import torch

from xfads_cli.model import filter_bin, lowrank
from xfads_cli.model import filtering as F
from tests import reference as ref

f64 = torch.float64


def random_prediction(B=2, S=5, L=6, r=3, seed=0, dtype=f64):
    g = torch.Generator().manual_seed(seed)
    mbar = torch.randn(B, L, generator=g, dtype=dtype)
    Mt = torch.randn(B, S, L, generator=g, dtype=dtype) * 0.7
    d = torch.rand(L, generator=g, dtype=dtype) + 0.2
    k = torch.randn(B, L, generator=g, dtype=dtype)
    K = torch.randn(B, L, r, generator=g, dtype=dtype)
    return mbar, Mt, d, k, K


def dense_pbar(Mt, d):
    return torch.diag_embed(d.expand(Mt.shape[0], -1)) + Mt.transpose(1, 2) @ Mt


def dense_post_cov(upd, Mt, d):
    return dense_pbar(Mt, d) - upd.PK @ upd.Z


class LGSSM:
    """A small random linear-Gaussian state-space model with one simulated trial."""

    def __init__(self, L=3, N=4, T=7, seed=0):
        g = torch.Generator().manual_seed(seed)
        rn = lambda *s: torch.randn(*s, generator=g, dtype=f64)
        ru = lambda *s: torch.rand(*s, generator=g, dtype=f64)
        self.L, self.N, self.T = L, N, T
        self.A = torch.linalg.qr(rn(L, L))[0] * 0.9
        self.q, self.q0, self.m0 = ru(L) * 0.3 + 0.1, ru(L) + 0.5, rn(L)
        self.C, self.d, self.R = rn(N, L), rn(N), ru(N) + 0.3
        z = self.m0 + self.q0.sqrt() * rn(L)
        ys = []
        for t in range(T):
            if t:
                z = self.A @ z + self.q.sqrt() * rn(L)
            ys.append(self.C @ z + self.d + self.R.sqrt() * rn(N))
        self.y = torch.stack(ys)
        self.Q = torch.diag(self.q)
        self.kf = ref.kalman_filter(self.A, self.Q, self.C, self.d, self.R, self.m0, torch.diag(self.q0), self.y)

    def dynamics(self, z):
        return z @ self.A.T

    def alpha(self, scale=1.0):
        h, Fa = ref.likelihood_potential(self.C, self.d, self.R, self.y)
        return scale * h[None], math.sqrt(scale) * Fa[None]

    def beta(self):
        hb, Jb = ref.backward_messages(self.A, self.Q, self.C, self.d, self.R, self.y)
        return hb[None], ref.psd_factor(Jb)[None]

    def run(self, mode, alpha_scale=1.0, with_beta=False):
        k, K = self.alpha(alpha_scale)
        kb, Kb = self.beta() if with_beta else (None, None)
        return F.low_rank_filter(self.dynamics, self.m0, self.q0, self.q, k, K, kb, Kb,
                                 n_samples=2 * self.L, mode=mode, sampler="cubature")

    def elbo(self, post):
        """sum_t mean_s log p(y_t | z_t^(s)) - sum_t KL_t; exact for cubature points (quadratic integrand)."""
        eta = post.samples[:, 0] @ self.C.T + self.d
        ll = -0.5 * ((self.y - eta).square() / self.R + torch.log(2 * math.pi * self.R))
        return ll.sum(-1).mean(0).sum() - post.kl[0].sum()


def empirical_cov(samples, mean):
    """samples [sample, time, latent] -> [time, latent, latent] with weights 1/sample."""
    dev = samples - mean
    return torch.einsum("sti,stj->tij", dev, dev) / samples.shape[0]


# ----------------------------------------------------------------------------------------------
# single-step pieces


def potential(k, K):
    """X = [K, k] [batch, latent, rank + 1], the form the filter's steps take."""
    return torch.cat([K, k.unsqueeze(-1)], -1)


def test_update_equals_dense_information_form():
    mbar, Mt, d, k, K = random_prediction()
    upd = filter_bin.update(mbar, Mt, d, potential(k, K))
    P = dense_post_cov(upd, Mt, d)
    for b in range(mbar.shape[0]):
        m_ref, P_ref = ref.info_update(mbar[b], dense_pbar(Mt, d)[b], k[b], K[b])
        torch.testing.assert_close(upd.mean[b], m_ref, rtol=1e-10, atol=1e-10)
        torch.testing.assert_close(P[b], P_ref, rtol=1e-10, atol=1e-10)
    U = torch.eye(K.shape[-1], dtype=f64) + K.transpose(1, 2) @ dense_pbar(Mt, d) @ K
    torch.testing.assert_close(upd.Uinv, torch.linalg.inv(U))
    torch.testing.assert_close(upd.logdet_U, torch.logdet(U))
    # the filter's step: the same update, and the marginal variances from its per-bin sums
    step = filter_bin.filter_step(mbar, Mt, d, potential(k, K), None)
    torch.testing.assert_close(step.mean, upd.mean)
    torch.testing.assert_close(lowrank.marginal_var(d, step.msq, step.wsq), P.diagonal(dim1=-2, dim2=-1))


def test_kl_step_equals_dense_kl():
    mbar, Mt, d, k, K = random_prediction(seed=1)
    upd = filter_bin.update(mbar, Mt, d, potential(k, K))
    kl = lowrank.kl_step(upd.mean - mbar, k, K, upd.Ktv, upd.Uinv, upd.logdet_U)
    P, Pbar = dense_post_cov(upd, Mt, d), dense_pbar(Mt, d)
    for b in range(mbar.shape[0]):
        torch.testing.assert_close(kl[b], ref.gaussian_kl(upd.mean[b], P[b], mbar[b], Pbar[b]),
                                   rtol=1e-10, atol=1e-10)


def test_kl_lowrank_equals_dense_kl():
    mbar, Mt, d, k, K = random_prediction(seed=2)
    upd = filter_bin.update(mbar, Mt, d, potential(k, K))
    m2 = torch.randn_like(mbar)
    Mt2 = torch.randn(mbar.shape[0], 4, mbar.shape[1], dtype=f64)
    kl = lowrank.kl_lowrank(upd.mean - m2, d, Mt, upd.PK, upd.Z, upd.logdet_U, Mt2)
    P, P2 = dense_post_cov(upd, Mt, d), dense_pbar(Mt2, d)
    for b in range(mbar.shape[0]):
        torch.testing.assert_close(kl[b], ref.gaussian_kl(upd.mean[b], P[b], m2[b], P2[b]),
                                   rtol=1e-10, atol=1e-10)


def test_matheron_samples_have_covariance_P():
    mbar, Mt, d, k, K = random_prediction(B=1, S=3, L=4, r=2, seed=3)
    upd = filter_bin.update(mbar, Mt, d, potential(k, K))
    n = 200_000
    g = torch.Generator().manual_seed(4)
    # the filter's noise layout [time, stream, batch, n, sample + latent + rank], split as the filter does
    noise = torch.randn(1, 1, 1, n, 3 + 4 + 2, generator=g, dtype=f64)
    (draws,), = F.split_noise(noise, d[None], 3, [2])
    z = filter_bin.sample_posterior(upd, Mt, K, draws)[0]
    P = dense_post_cov(upd, Mt, d)[0]
    # Monte Carlo standard errors of a Gaussian's sample mean and covariance entries
    mean_se = (P.diagonal() / n).sqrt()
    cov_se = ((P.diagonal()[:, None] * P.diagonal()[None, :] + P.square()) / n).sqrt()
    emp = torch.cov(z.T, correction=0)
    assert ((z.mean(0) - upd.mean[0]).abs() < 5 * mean_se).all()
    assert ((emp - P).abs() < 5 * cov_se).all()
    # the variant without Pbar in the correction, z = m + zt - K U^{-1} (K^T zt + u), has a covariance
    # far outside this tolerance, so the test would catch that bug
    Pbar, Kb = dense_pbar(Mt, d)[0], K[0]
    Uinv = torch.linalg.inv(torch.eye(2, dtype=f64) + Kb.T @ Pbar @ Kb)
    G = torch.eye(4, dtype=f64) - Kb @ Uinv @ Kb.T
    P_bug = G @ Pbar @ G.T + Kb @ Uinv @ Uinv @ Kb.T
    assert ((P_bug - P).abs() > 5 * cov_se).any()


def test_cubature_points_match_moments():
    mbar, Mt, d, k, K = random_prediction(B=2, S=4, L=5, r=2, seed=5)
    upd = filter_bin.update(mbar, Mt, d, potential(k, K))
    z = filter_bin.cubature_points(upd, Mt, d)
    assert z.shape == (2, 10, 5)
    torch.testing.assert_close(z.mean(1), upd.mean)
    dev = z - upd.mean.unsqueeze(1)
    torch.testing.assert_close(dev.transpose(1, 2) @ dev / 10, dense_post_cov(upd, Mt, d))


def test_cholesky_jitter_only_touches_failing_matrices():
    good = torch.tensor([[2.0, 0.5], [0.5, 1.0]])
    singular = torch.tensor([[1.0, 1.0], [1.0, 1.0]])
    Lc = lowrank.cholesky_jitter(torch.stack([good, singular, good]))
    torch.testing.assert_close(Lc[0], torch.linalg.cholesky(good))
    torch.testing.assert_close(Lc[1] @ Lc[1].T, singular, atol=1e-4, rtol=0)
    with pytest.raises(FloatingPointError):
        lowrank.cholesky_jitter(torch.full((1, 2, 2), float("nan")))


# ----------------------------------------------------------------------------------------------
# gradients


def test_spd_inverse_values_and_gradcheck():
    g = torch.Generator().manual_seed(6)
    X = torch.randn(3, 4, 6, generator=g, dtype=f64, requires_grad=True)

    def fn(X):
        # symmetric U as a function of X, so gradcheck perturbs only symmetric directions
        return lowrank.spd_inverse(torch.eye(4, dtype=f64) + X @ X.transpose(1, 2))

    Uinv, logdet = fn(X)
    U = torch.eye(4, dtype=f64) + X @ X.transpose(1, 2)
    torch.testing.assert_close(Uinv, torch.linalg.inv(U))
    torch.testing.assert_close(logdet, torch.logdet(U))
    assert torch.autograd.gradcheck(fn, (X,))
    assert torch.autograd.gradcheck(lambda X: fn(X)[1], (X,))


def small_problem(mode, seed=0, T=3, B=2, L=3, S=3, r_a=2, r_b=1, H=4):
    g = torch.Generator().manual_seed(seed)
    rn = lambda *s: torch.randn(*s, generator=g, dtype=f64)
    params = dict(
        m0=rn(L), q0=torch.rand(L, generator=g, dtype=f64) + 0.5, q=torch.rand(L, generator=g, dtype=f64) + 0.1,
        k_local=rn(B, T, L), K_local=rn(B, T, L, r_a), k_back=rn(B, T, L), K_back=rn(B, T, L, r_b),
        W1=rn(H, L) * 0.5, W2=rn(L, H) * 0.5,
    )
    noise = torch.randn(F.noise_shape(mode, T, B, S, L, r_a + r_b), generator=g, dtype=f64)
    return params, noise


def run_small(params, noise, mode, checkpoint_steps=0):
    p = params
    dyn = lambda z: z + torch.tanh(z @ p["W1"].T) @ p["W2"].T
    return F.low_rank_filter(dyn, p["m0"], p["q0"], p["q"], p["k_local"], p["K_local"], p["k_back"], p["K_back"],
                             n_samples=noise.shape[3], mode=mode, noise=noise, checkpoint_steps=checkpoint_steps)


@pytest.mark.parametrize("mode", ["smoother", "two_filter"])
def test_gradcheck(mode):
    # two steps: the first bin's update and one full predict + update + sample step
    params, noise = small_problem(mode, T=2)
    names = list(params)

    def fn(*xs):
        post = run_small(dict(zip(names, xs)), noise, mode)
        return post.samples, post.kl, post.mean, post.var

    inputs = tuple(v.clone().requires_grad_(True) for v in params.values())
    assert torch.autograd.gradcheck(fn, inputs, eps=1e-6, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("mode", ["smoother", "two_filter"])
def test_checkpointing_gives_identical_gradients(mode):
    params, noise = small_problem(mode, T=5)
    grads = []
    for steps in (0, 2):
        leaves = {n: v.clone().requires_grad_(True) for n, v in params.items()}
        post = run_small(leaves, noise, mode, checkpoint_steps=steps)
        loss = post.samples.sin().sum() + post.kl.sum() + post.var.sum()
        grads.append(torch.autograd.grad(loss, list(leaves.values())))
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("first", [True, False])
def test_fused_step_equals_composable_step(first):
    # _FilterStep (training's path) against filter_step (the functions checked against dense forms
    # above): every output of a step and the gradients of all of them, at the first bin (prediction
    # N(m0, diag(q0))) and at a later one (moments of propagated particles)
    g = torch.Generator().manual_seed(8)
    B, T, S, L, r = 2, 2, 4, 3, 3
    rn = lambda *s: torch.randn(*s, generator=g, dtype=f64)
    X, d, m0, mu = rn(B, T, L, r + 1), torch.rand(T, L, generator=g, dtype=f64) + 0.2, rn(L), rn(B, S, L)
    noise = rn(T, 1, B, S, S + L + r)
    weights = [rn(*x.shape) for x in filter_bin.filter_step(rn(B, L), rn(B, S, L), d[0], X[:, 0],
                                                            F.split_noise(noise, d, S, [r])[0][0])]
    results = []
    for fused in (True, False):
        leaves = [x.clone().requires_grad_(True) for x in (X, d, m0, mu)]
        Xl, dl, m0l, mul = leaves
        draws = F.split_noise(noise, dl, S, [r])[0]
        step = filter_bin.bin_step(Xl, dl, draws, m0l, S, fused)(None if first else mul, 0 if first else 1)
        loss = sum((w * x).sum() for w, x in zip(weights, step))
        grads = torch.autograd.grad(loss, leaves, allow_unused=True)
        results.append((step, grads))
    (fused_step, fused_grads), (step, grads) = results
    for name, a, b in zip(filter_bin.Step._fields, fused_step, step):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12, msg=name)
    for a, b in zip(fused_grads, grads):
        assert (a is None) == (b is None)
        if a is not None:
            torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("mode", ["smoother", "two_filter", "filter"])
def test_fused_filter_equals_composable_filter(mode):
    # noise that requires a gradient sends the filter down the composable path
    params, noise = small_problem(mode, T=4)
    results = []
    for eps in (noise, noise.clone().requires_grad_(True)):
        leaves = {n: v.clone().requires_grad_(True) for n, v in params.items()}
        post = run_small(leaves, eps, mode)
        loss = sum((x.sin() * (i + 1)).sum() for i, x in enumerate(post) if x is not None)
        results.append((post, torch.autograd.grad(loss, list(leaves.values()), allow_unused=True)))
    (fused, fused_grads), (composable, grads) = results
    for name, a, b in zip(F.Posterior._fields, fused, composable):
        if a is not None or b is not None:
            torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12, msg=name)
    for name, a, b in zip(params, fused_grads, grads):
        assert (a is None) == (b is None) == (mode == "filter" and name in ("k_back", "K_back"))
        if a is not None:
            torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12, msg=name)


# ----------------------------------------------------------------------------------------------
# linear-Gaussian model: exact identities


def test_filter_mode_equals_kalman_filter():
    m = LGSSM()
    post = m.run("filter")
    torch.testing.assert_close(post.mean[0], m.kf.mean, rtol=0, atol=1e-8)
    torch.testing.assert_close(empirical_cov(post.samples[:, 0], post.mean[0]), m.kf.cov, rtol=0, atol=1e-8)
    torch.testing.assert_close(post.var[0], m.kf.cov.diagonal(dim1=-2, dim2=-1), rtol=0, atol=1e-8)


def test_two_filter_equals_rts_smoother():
    m = LGSSM()
    post = m.run("two_filter", with_beta=True)
    ms, Ps = ref.rts_smoother(m.A, m.Q, m.kf)
    torch.testing.assert_close(post.mean[0], ms, rtol=0, atol=1e-8)
    torch.testing.assert_close(empirical_cov(post.samples[:, 0], post.mean[0]), Ps, rtol=0, atol=1e-8)
    torch.testing.assert_close(post.var[0], Ps.diagonal(dim1=-2, dim2=-1), rtol=0, atol=1e-8)
    torch.testing.assert_close(post.filtered_mean[0], m.kf.mean, rtol=0, atol=1e-8)
    torch.testing.assert_close(post.filtered_var[0], m.kf.cov.diagonal(dim1=-2, dim2=-1), rtol=0, atol=1e-8)


def test_elbo_against_exact_log_marginal_likelihood():
    m = LGSSM()
    loglik = m.kf.loglik
    # exact causal posterior: each bin's term is log p(y_t | y_{1:t-1}), so the bound is tight
    torch.testing.assert_close(m.elbo(m.run("filter")), loglik, rtol=0, atol=1e-8)
    # the prior as posterior (zero potentials): a valid bound by Jensen, and a loose one
    assert m.elbo(m.run("filter", alpha_scale=0.0)) < loglik - 1.0
    # the exact smoothed marginals: docs/model.md's objective uses marginal KLs, and
    # sum_t KL(q_t || prediction from q_{t-1}) <= KL(q(z_{1:T}) || p(z_{1:T})) (data processing),
    # so with the exact posterior it lies ABOVE log p(y); it is not a bound in smoothing modes
    assert m.elbo(m.run("two_filter", with_beta=True)) > loglik


def test_zero_potentials_give_the_prior():
    torch.manual_seed(0)
    B, T, L, S = 3, 6, 5, 16
    W = torch.randn(L, L) * 0.3
    dyn = lambda z: z + torch.tanh(z @ W.T)
    m0, q0, q = torch.randn(L), torch.full((L,), 0.5), torch.full((L,), 0.05)
    zeros_k, zeros_K = torch.zeros(B, T, L), torch.zeros(B, T, L, 4)
    post = F.low_rank_filter(dyn, m0, q0, q, zeros_k, zeros_K, zeros_k, zeros_K[..., :2], n_samples=S)
    assert post.samples.dtype == torch.float32
    for x in post:
        assert x is None or torch.isfinite(x).all()
    assert post.kl.abs().max() < 1e-5
    torch.testing.assert_close(post.mean[:, 0], m0.expand(B, L))
    torch.testing.assert_close(post.var[:, 0], q0.expand(B, L))
    # the mean at t is the moment-matched prediction: the average of f over the samples at t-1
    torch.testing.assert_close(post.mean[:, 1:], dyn(post.samples[:, :, :-1]).mean(0), rtol=1e-5, atol=1e-5)
    # dropped bins (zero potential) among informative ones: the posterior there is the prediction
    g = torch.Generator().manual_seed(1)
    k, K = torch.randn(B, T, L, generator=g), torch.randn(B, T, L, 4, generator=g)
    keep = torch.rand(B, T, generator=g) > 0.5
    k, K = k * keep[..., None], K * keep[..., None, None]
    post = F.low_rank_filter(dyn, m0, q0, q, k, K, n_samples=S, noise=g)
    assert all(torch.isfinite(x).all() for x in post[:4])
    pred = torch.cat([m0.expand(B, 1, L), dyn(post.samples[:, :, :-1]).mean(0)], 1)
    torch.testing.assert_close(post.mean[~keep], pred[~keep], rtol=1e-5, atol=1e-5)
    assert post.kl[~keep].abs().max() < 1e-5 and post.kl[keep].min() > 0
    # linear f with cubature points: the mean follows f exactly
    A = torch.eye(L, dtype=f64) * 0.9
    post = F.low_rank_filter(lambda z: z @ A.T, m0.double(), q0.double(), q.double(), zeros_k.double(),
                             zeros_K.double(), n_samples=2 * L, mode="filter", sampler="cubature")
    torch.testing.assert_close(post.mean[0], m0.double() * 0.9 ** torch.arange(T, dtype=f64)[:, None])


def test_modes_and_noise_options():
    params, noise = small_problem("smoother", T=4)
    p = params
    dyn = lambda z: z + torch.tanh(z @ p["W1"].T) @ p["W2"].T
    args = (dyn, p["m0"], p["q0"], p["q"], p["k_local"], p["K_local"])
    filt = F.low_rank_filter(*args, p["k_back"], p["K_back"], n_samples=3, mode="filter", noise=noise[..., :-1])
    local_only = F.low_rank_filter(*args, n_samples=3, mode="smoother", noise=noise[..., :-1])
    torch.testing.assert_close(filt.mean, local_only.mean)
    runs = [F.low_rank_filter(*args, p["k_back"], p["K_back"], n_samples=3,
                              noise=torch.Generator().manual_seed(7)) for _ in range(2)]
    torch.testing.assert_close(runs[0].samples, runs[1].samples)
    assert runs[0].samples.shape == (3, 2, 4, 3) and runs[0].kl.shape == (2, 4)
    with pytest.raises(ValueError):
        F.low_rank_filter(*args, n_samples=3, mode="smooth")
    with pytest.raises(ValueError):
        F.low_rank_filter(*args, n_samples=3, sampler="cubature")
    with pytest.raises(ValueError):
        F.low_rank_filter(*args, n_samples=3, noise=noise[:, :, :, :2])
