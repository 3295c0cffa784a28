"""What every model shares (docs/model.md sections 1-5): the latent Gaussian Markov prior, the posterior
as the low-rank filter of the encoders' potentials through the dynamics, the ELBO's likelihood term,
rollouts from the prior; and `SessionModel`, the interface a model serving ONE session offers to
smoothing, forecasting, evaluation and training code.

    z_1 ~ N(m0, diag(q0)),  z_t = f(z_{t-1}) + e_t,  e_t ~ N(0, diag(q))
    q(z_{1:T}) = filter of alpha_t (local encoder) and beta_t (backward encoder) through f

The model (model/xfads.py XFADS) holds these shared parts and one model/session.py `Session` per
recording; `model.session(i, trials)` is a `BoundSession`, the model bound to session i and (with a
session embedding) the mean of its q(e_i) pooled over trials(). The single-session model is the case of
one session, no read-in (the local encoder reads the counts) and no embedding.
"""

from __future__ import annotations

from typing import Callable, NamedTuple, Protocol, runtime_checkable

import torch
from torch import nn
from torch.nn import functional as F

from xfads_cli.config import ModelConfig
from xfads_cli.model.encoders import InputDropout, drop_local_potentials, scale_grad
from xfads_cli.model.filtering import Posterior, low_rank_filter, noise_shape

Noise = torch.Tensor | torch.Generator | None


class Elbo(NamedTuple):
    """elbo, loglik, kl: per trial [batch] (elbo = loglik - kl, the latent part only). A model with a
    session embedding also gives kl_embed = KL(q(e_i) || N(0, I)), scalar, once per session per batch
    (0 when e was given), and frobenius = the mean over the batch's trials of sum_l ||U_l V_l^T||_F,
    scalar; without an embedding both are 0.0."""

    elbo: torch.Tensor
    loglik: torch.Tensor
    kl: torch.Tensor
    posterior: Posterior
    kl_embed: torch.Tensor | float = 0.0
    frobenius: torch.Tensor | float = 0.0


class Forecast(NamedTuple):
    """latents [sample, batch, horizon, latent]; rates [sample, batch, horizon, neuron] (expected per bin)."""

    latents: torch.Tensor
    rates: torch.Tensor


@runtime_checkable
class SessionModel(Protocol):
    """A model serving one session: y [batch, time, neuron] holds that session's trials (NaN = missing).

    noise: the filter's standard normals (`noise_shape(...)`), a torch.Generator, or None (global RNG).
    local_mask [batch, time] / backward_mask [batch] keep the local / backward potentials where True;
    input_dropout: coordinated dropout of the encoder's inputs (training)."""

    cfg: ModelConfig
    heldin: torch.Tensor  # [neuron] bool: the neurons the encoder reads

    def noise_shape(self, batch: int, time: int, *, mode: str | None = None,
                    n_samples: int | None = None) -> tuple: ...

    def posterior(self, y: torch.Tensor, *, mode: str | None = None, n_samples: int | None = None,
                  drop_local: float = 0.0, local_mask: torch.Tensor | None = None,
                  backward_mask: torch.Tensor | None = None, input_dropout: InputDropout | None = None,
                  noise: Noise = None) -> Posterior: ...

    def elbo(self, y: torch.Tensor, *, mode: str | None = None, n_samples: int | None = None,
             drop_local: float = 0.0, local_mask: torch.Tensor | None = None,
             backward_mask: torch.Tensor | None = None, input_dropout: InputDropout | None = None,
             noise: Noise = None) -> Elbo: ...

    def rates(self, z: torch.Tensor) -> torch.Tensor: ...

    def forecast(self, y_context: torch.Tensor, horizon: int, *, n_samples: int | None = None,
                 mode: str = "filter", generator: torch.Generator | None = None) -> Forecast: ...


class StateSpaceModel(nn.Module):
    """The parts of the model that do not depend on the session: prior parameters (m0, q0, q; the
    names are checkpoint keys) and the filter call. The subclass owns `dynamics`, `local`, `backward`."""

    cfg: ModelConfig

    def init_prior(self, latent_dim: int) -> None:
        self.m0 = nn.Parameter(torch.zeros(latent_dim))
        self.raw_q0 = nn.Parameter(torch.full((latent_dim,), softplus_inv(1.0)))
        self.raw_q = nn.Parameter(torch.full((latent_dim,), softplus_inv(0.05)))

    def q(self) -> torch.Tensor:
        return F.softplus(self.raw_q).clamp(min=1e-4)

    def q0(self) -> torch.Tensor:
        return F.softplus(self.raw_q0).clamp(min=1e-2)

    def noise_shape(self, batch: int, time: int, *, mode: str | None = None, n_samples: int | None = None) -> tuple:
        """Shape of the standard normals `posterior(..., noise=)` consumes for [batch, time] (filtering.noise_shape)."""
        mode = mode or self.cfg.mode
        rank = self.cfg.rank_local + (0 if mode == "filter" else self.cfg.rank_backward)
        return noise_shape(mode, time, batch, n_samples or self.cfg.samples, self.cfg.latent_dim, rank)

    def filter_potentials(self, f: Callable, a: torch.Tensor, A: torch.Tensor, *, mode: str | None = None,
                          n_samples: int | None = None, drop_local: float = 0.0, local_mask: torch.Tensor | None = None,
                          backward_mask: torch.Tensor | None = None, noise: Noise = None,
                          drive: torch.Tensor | None = None) -> Posterior:
        """The posterior from the local potentials a [batch, time, latent], A [batch, time, latent, rank]:
        backward potentials from them (unless mode is "filter"), masks applied, filtered through f
        (plus the known inputs' drive [batch, time, latent], if any)."""
        mode = mode or self.cfg.mode
        b = B = None
        if mode != "filter":
            b, B = self.backward(a, A)
            if backward_mask is not None:
                w = backward_mask.to(b.dtype)
                b, B = b * w[:, None, None], B * w[:, None, None, None]
        a, A = drop_local_potentials(a, A, drop_local, local_mask)
        return low_rank_filter(f, self.m0, self.q0(), self.q(), a, A, b, B,
                               n_samples=n_samples or self.cfg.samples, mode=mode, noise=noise, drive=drive)

    def rollout_through(self, f: Callable, z: torch.Tensor, horizon: int,
                        generator: torch.Generator | None = None, drive: torch.Tensor | None = None) -> torch.Tensor:
        """Sample z_{t+1:t+H} from the prior with dynamics f. z: [sample, batch, latent]
        -> [sample, batch, horizon, latent]. drive: [batch, horizon, latent] known inputs' drive, or None."""
        std = self.q().sqrt()
        out = []
        for h in range(horizon):
            eps = torch.randn(z.shape, generator=generator, dtype=z.dtype, device=z.device)
            z = f(z) + std * eps if drive is None else f(z) + drive[:, h] + std * eps
            out.append(z)
        return torch.stack(out, dim=2)


def expected_loglik(likelihood: nn.Module, eta: torch.Tensor, y: torch.Tensor, heldin: torch.Tensor,
                    input_dropout: InputDropout | None = None) -> torch.Tensor:
    """Monte Carlo E_q log p(y | z) per trial [batch]; eta [sample, batch, time, neuron], y [batch, time, neuron].
    With coordinated dropout the gradient comes from the held-in entries the encoder did not read (and
    every held-out one); the value is unchanged."""
    lp = likelihood.log_prob(eta, y)  # [sample, batch, time, neuron]
    if input_dropout is not None:
        w = torch.ones(y.shape, dtype=lp.dtype, device=lp.device)
        w[..., heldin] = input_dropout.dropped.to(lp.dtype) / input_dropout.rate
        lp = scale_grad(lp, w)
    return lp.sum(-1).mean(0).sum(-1)


def softplus_inv(x: float) -> float:
    """The raw parameter whose softplus is x > 0 (variances are stored softplus-inverted)."""
    return float(torch.log(torch.expm1(torch.tensor(x))))
