"""The comparison model kinds (docs/model.md section 12): the deep state-space models a lab would fit
instead of XFADS, written so that the comparison isolates the one thing they differ in, inference.

Every kind keeps XFADS's generative model, built by the same code (model/xfads.py XFADS with one session):

    z_1 ~ N(m0, diag(q0)),  z_t = f(z_{t-1}) + B u_t + eps_t,  eps_t ~ N(0, diag(q)),
    y_t | z_t ~ p(y_t | C z_t + d + D u_t)

(the same dynamics module f, readout, likelihood and task inputs), so forecasting, smoothing, baselines
and scoring are XFADS's. What differs is q(z_{1:T} | y) and how its KL is estimated:

    dkf         (Krishnan et al. 2017, "ST-R"/DKS): ctx_t = reverse-time GRU over per-bin features of
                y_{t:T}; h_t = (tanh(W z_{t-1} + b) + ctx_t) / 2 (the combiner);
                q(z_t | z_{t-1}, y_{t:T}) = N(mu(h_t), diag(sigma^2(h_t)));
                KL_t = KL(q(z_t | .) || N(f(z_{t-1}) + B u_t, diag(q))), in closed form given the draw z_{t-1}.
    dvbf        (Karl et al. 2017): the transition carries the posterior: z_t = f(z_{t-1}) + B u_t + w_t with
                the innovation w_t ~ q(w_t | z_{t-1}, y_t) = N(mu, diag(sigma^2)) from the bin's features
                (the paper's fusion reads the current observation only) and z_1 from the whole trial's
                GRU summary (its initial network); KL_t = KL(q(w_t) || N(0, diag(q))).
    latent_sde  (Li et al. 2020): posterior SDE dz = h(z, ctx_t) dt + g dW against the prior dz =
                (f(z) - z + B u) dt + g dW, g = sqrt(q), Euler-Maruyama on the bin grid (dt = 1 bin):
                z_t = z_{t-1} + h(z_{t-1}, ctx_t) + g eps_t; KL_t = |(h - (f(z_{t-1}) - z_{t-1} + B u_t)) / g|^2 / 2
                at the draw (Girsanov), plus KL(q(z_1) || N(m0, diag(q0))) at t = 1.

Departures from the papers, for a like-for-like comparison: the transition is XFADS's f (MLP, GRU or
linear, `model.dynamics`) with a learned diagonal process noise, not DKF's gated transition, DVBF's
locally linear mixture or a separate diffusion network; the per-bin features read log1p of the held-in
counts (the XFADS encoder's input) and an "observed" flag, so missing and masked bins (forecast
contexts, `train.drop_local`) are hidden from the inference network, never filled in; the training
loop, its Monte Carlo samples (`model.samples` trajectories per trial) and coordinated dropout are
XFADS's. A forecast filters the context only, so the state at the cut depends on the context only
(the inference network is a smoother over the bins it is given; `mode` does not change it).
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn
from torch.nn import functional as F

from xfads_cli.config import ModelConfig
from xfads_cli.model.encoders import InputDropout, encoder_input
from xfads_cli.model.filtering import Posterior
from xfads_cli.model.xfads import XFADS

KINDS = ("dkf", "dvbf", "latent_sde")


def gaussian_kl(mu: torch.Tensor, var: torch.Tensor, mu_p: torch.Tensor, var_p: torch.Tensor) -> torch.Tensor:
    """KL(N(mu, diag(var)) || N(mu_p, diag(var_p))) summed over the last dim."""
    return 0.5 * (torch.log(var_p / var) + (var + (mu - mu_p) ** 2) / var_p - 1.0).sum(-1)


class SequenceEncoder(nn.Module):
    """Per-bin features of the held-in counts and a reverse-time GRU over them:
    y [batch, time, neuron_in] -> feat [batch, time, hidden] (bin t alone), ctx [batch, time, hidden]
    (bins t..T). Unobserved or masked bins give zero features and observed = 0."""

    def __init__(self, n_inputs: int, hidden: int, log_inputs: bool, n_extra: int = 0):
        super().__init__()
        self.log_inputs = log_inputs
        self.net = nn.Sequential(nn.Linear(n_inputs + n_extra, hidden), nn.SiLU(), nn.Linear(hidden, hidden), nn.SiLU())
        self.gru = nn.GRU(hidden + 1, hidden, batch_first=True)

    def forward(self, y: torch.Tensor, keep: torch.Tensor | None, input_weight: torch.Tensor | None = None,
                extra: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        x, observed = encoder_input(y, self.log_inputs, input_weight, extra)
        if keep is not None:
            observed = observed & keep
        w = observed[..., None].to(x.dtype)
        feat = self.net(x) * w
        ctx, _ = self.gru(torch.cat([feat, w], -1).flip(1))
        return feat, ctx.flip(1), observed


class GaussianHead(nn.Module):
    """h [..., in] -> (mean, variance) [..., latent] of a diagonal Gaussian; starts near N(0, init_var)."""

    def __init__(self, n_in: int, latent: int, init_var: float = 1.0):
        super().__init__()
        self.lin = nn.Linear(n_in, 2 * latent)
        nn.init.normal_(self.lin.weight, std=1e-2)
        nn.init.zeros_(self.lin.bias)
        with torch.no_grad():
            self.lin.bias[latent:] = float(torch.log(torch.expm1(torch.tensor(init_var))))

    def forward(self, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mu, raw = self.lin(h).chunk(2, -1)
        return mu, F.softplus(raw) + 1e-4


def _mlp(n_in: int, hidden: int, n_out: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(n_in, hidden), nn.SiLU(), nn.Linear(hidden, n_out))


class ComparisonModel(XFADS):
    """XFADS's generative model (one session) with another kind's inference network (module docstring).
    y [batch, time, neuron]; samples [sample, batch, time, latent]; the filter's standard normals
    (`noise_shape`) are [time, 1, batch, sample, latent], one column per latent coordinate and bin."""

    def __init__(self, cfg: ModelConfig, sessions: Sequence[dict]):
        if cfg.kind not in KINDS:
            raise ValueError(f"unknown comparison kind {cfg.kind!r}; one of {', '.join(KINDS)}")
        super().__init__(cfg, sessions)
        # XFADS's own encoders are not used by this kind
        del self.local, self.backward
        one, L, H = self.sessions[0], cfg.latent_dim, cfg.encoder_hidden
        self.kind = cfg.kind
        self.encoder = SequenceEncoder(one.n_in, H, one.poisson, n_extra=one.n_in if one.inputs is not None else 0)
        if self.kind == "dkf":
            self.combiner = nn.Linear(L, H)
            # starts at the process noise's starting variance: a wider q(z_t | .) costs ~1/q nats per bin in
            # KL at the first step and the posterior collapses onto the prior before it learns to read y
            self.head = GaussianHead(H, L, init_var=0.05)
        elif self.kind == "dvbf":
            self.initial = GaussianHead(H, L)
            self.innovation = nn.Sequential(nn.Linear(L + H + 1, H), nn.SiLU(), GaussianHead(H, L, init_var=0.05))
        else:
            self.initial = GaussianHead(H, L)
            self.drift = _mlp(L + H, H, L)
            nn.init.zeros_(self.drift[-1].weight)
            nn.init.zeros_(self.drift[-1].bias)

    def noise_shape(self, batch: int, time: int, *, mode: str | None = None, n_samples: int | None = None) -> tuple:
        return (time, 1, batch, n_samples or self.cfg.samples, self.cfg.latent_dim)

    def potentials(self, *args, **kwargs):
        raise NotImplementedError(f"a {self.kind} run has no XFADS potentials (xfads stream needs an XFADS run)")

    def filter_session(self, y: torch.Tensor, session: int, e: torch.Tensor | None, *,
                       input_dropout: InputDropout | None = None, u: torch.Tensor | None = None, mode: str | None = None,
                       n_samples: int | None = None, drop_local: float = 0.0, local_mask: torch.Tensor | None = None,
                       backward_mask: torch.Tensor | None = None, noise=None) -> tuple[Posterior, None]:
        """The posterior of y [batch, time, neuron] by this kind's inference network. local_mask
        [batch, time] hides bins from it (False); backward_mask is implied by the mask (a trial trained
        as a forecast hides every bin after its cut, so the state there depends on the bins before it);
        drop_local hides that fraction of bins at random (global RNG). mode is ignored (module docstring)."""
        s = self.sessions[session]
        B, T = y.shape[:2]
        S, L = n_samples or self.cfg.samples, self.cfg.latent_dim
        keep = local_mask
        if drop_local > 0 and self.training:
            drop = torch.rand(B, T, device=y.device) < drop_local
            keep = ~drop if keep is None else keep & ~drop
        inputs, weight, extra = s.encoder_inputs(y, None if input_dropout is None else input_dropout.input_weight(y.dtype), u)
        feat, ctx, observed = self.encoder(inputs, keep, weight, extra)
        eps = self._noise(noise, (T, B, S, L), y)  # [time, batch, sample, latent]
        drive = s.drive(u)
        q, f = self.q(), self.dynamics
        z, kls, out = None, [], []
        for t in range(T):
            e_t = eps[t].transpose(0, 1)  # [sample, batch, latent]
            if t == 0:
                prior_mu, prior_var = self.m0.expand(S, B, L), self.q0().expand(S, B, L)
            else:
                prior_mu, prior_var = f(z), q.expand(S, B, L)
            if drive is not None:
                prior_mu = prior_mu + drive[:, t] if t else prior_mu
            z, kl = self._step(t, z, e_t, prior_mu, prior_var, feat[:, t], ctx[:, t], observed[:, t])
            out.append(z)
            kls.append(kl.mean(0))
        samples = torch.stack(out, 2)  # [sample, batch, time, latent]
        var = samples.var(0, unbiased=False) if S > 1 else torch.zeros_like(samples[0])
        return Posterior(samples.mean(0), var, samples, torch.stack(kls, 1)), None

    def _step(self, t: int, z_prev, eps, prior_mu, prior_var, feat, ctx, observed):
        """One bin: z_t [sample, batch, latent] and its KL term [sample, batch]."""
        S = eps.shape[0]
        ctx = ctx.expand(S, *ctx.shape)
        if self.kind == "dkf":
            prev = self.m0.expand_as(eps) if z_prev is None else z_prev
            mu, var = self.head(0.5 * (torch.tanh(self.combiner(prev)) + ctx))
            return mu + var.sqrt() * eps, gaussian_kl(mu, var, prior_mu, prior_var)
        if t == 0:
            mu, var = self.initial(ctx)
            return mu + var.sqrt() * eps, gaussian_kl(mu, var, prior_mu, prior_var)
        if self.kind == "dvbf":
            flag = observed[None, :, None].to(eps.dtype).expand(S, -1, 1)
            mu, var = self.innovation(torch.cat([z_prev, feat.expand(S, *feat.shape), flag], -1))
            return prior_mu + mu + var.sqrt() * eps, gaussian_kl(mu, var, torch.zeros_like(mu), prior_var)
        # latent SDE: the prior's drift is prior_mu - z_prev; the posterior's, the drift network's
        h = self.drift(torch.cat([z_prev, ctx], -1))
        g2 = prior_var
        return z_prev + h + g2.sqrt() * eps, 0.5 * ((h - (prior_mu - z_prev)) ** 2 / g2).sum(-1)

    @staticmethod
    def _noise(noise, shape: tuple, like: torch.Tensor) -> torch.Tensor:
        if isinstance(noise, torch.Tensor):
            return noise[:, 0].to(like)
        gen = noise if isinstance(noise, torch.Generator) else None
        return torch.randn(shape, generator=gen, dtype=like.dtype, device=like.device)
