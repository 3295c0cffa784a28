"""Observation models p(y_t | eta_t), eta_t = C z_t + d, as small plug-in modules (docs/model.md section 1).

All share one interface:
    log_prob(eta, y) -> [..., neuron]   log-density per neuron (NaN in y = missing, contributes 0)
    mean(eta)        -> [..., neuron]   expected observation per bin (spike counts for Poisson)
    sample(eta)      -> [..., neuron]
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.autograd.function import once_differentiable
from torch.nn import functional as F


# Beyond this natural parameter (e^30 Hz) the exp link's rate term in the log-likelihood continues
# linearly: exp(c) (1 + eta - c). No fit of real data comes near it, but an untrained model can draw a
# latent that puts eta past float32's exp range (88), and one inf there turns the whole gradient into
# NaN at any learning rate. Continued linearly, the loss stays finite and its gradient still pulls eta
# down (then grad_clip bounds the step).
ETA_MAX = 30.0


def _rate_term(eta: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(exp(eta) continued linearly beyond ETA_MAX, its derivative exp(min(eta, ETA_MAX)))."""
    if not bool((eta > ETA_MAX).any()):
        e = torch.exp(eta)
        return e, e
    slope = torch.exp(eta.clamp(max=ETA_MAX))
    return slope * (1.0 + (eta - ETA_MAX).clamp(min=0.0)), slope


def _observed(y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    mask = torch.isfinite(y)
    return torch.where(mask, y, torch.zeros_like(y)), mask


class Poisson(nn.Module):
    """y ~ Poisson(dt * g(eta)), g = exp (default) or softplus; rates in Hz, `dt` the bin in seconds."""

    def __init__(self, n_neurons: int, dt: float, link: str = "exp"):
        super().__init__()
        self.dt = dt
        self.link = link

    def rate_hz(self, eta: torch.Tensor) -> torch.Tensor:
        return torch.exp(eta) if self.link == "exp" else F.softplus(eta)

    def mean(self, eta: torch.Tensor) -> torch.Tensor:
        return self.dt * self.rate_hz(eta)

    def log_prob(self, eta: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        if self.link == "exp" and not y.requires_grad:
            return _PoissonExpLogProb.apply(eta, y, self.dt)
        y, mask = _observed(y)
        if self.link == "exp":
            log_rate, mean = eta + math.log(self.dt), self.dt * _rate_term(eta)[0]
        else:
            mean = self.mean(eta)
            log_rate = torch.log(mean + 1e-8)
        lp = y * log_rate - mean - torch.lgamma(y + 1)
        return torch.where(mask, lp, torch.zeros_like(lp))

    def sample(self, eta: torch.Tensor) -> torch.Tensor:
        return torch.poisson(self.mean(eta))

    def init_bias(self, mean_counts: torch.Tensor) -> torch.Tensor:
        """Readout bias d that makes the initial model predict each neuron's mean count per bin."""
        rate = mean_counts.clamp(min=1e-3) / self.dt
        return torch.log(rate) if self.link == "exp" else rate + torch.log(-torch.expm1(-rate))


class _PoissonExpLogProb(torch.autograd.Function):
    """Poisson log p(y | eta) with the exp link, y * (eta + log dt) - dt * exp(eta) - lgamma(y + 1),
    as one autograd node: d/d eta = y - dt * exp(eta) (exp continued linearly beyond ETA_MAX).

    The eta here is the [sample, batch, time, neuron] tensor of the training loss, the largest one of a
    step; autograd through the elementwise expression makes about eight passes over it forward and
    as many backward (and a zero-filled tensor for the mask). This makes three forward and two backward.
    y (data, no gradient) broadcasts against eta; NaN in y = missing: contributes 0, gradient 0.
    """

    @staticmethod
    def forward(ctx, eta: torch.Tensor, y: torch.Tensor, dt: float):
        y, mask = _observed(y)
        complete = bool(mask.all())
        rate, exp_eta = _rate_term(eta)
        # y * eta + (y log dt - lgamma(y + 1)) - dt * exp(eta), the eta-free part computed on y's shape
        lp = torch.addcmul(y * math.log(dt) - torch.lgamma(y + 1), y, eta).sub_(rate, alpha=dt)
        if not complete:
            lp = torch.where(mask, lp, torch.zeros((), dtype=lp.dtype, device=lp.device))
        ctx.save_for_backward(exp_eta, y, None if complete else mask)
        ctx.dt, ctx.eta_shape = dt, eta.shape
        return lp

    @staticmethod
    @once_differentiable
    def backward(ctx, g: torch.Tensor):
        exp_eta, y, mask = ctx.saved_tensors
        grad = torch.sub(y, exp_eta, alpha=ctx.dt).mul_(g)  # (y - dt exp(eta)) g
        if mask is not None:
            grad = torch.where(mask, grad, torch.zeros((), dtype=grad.dtype, device=grad.device))
        if grad.shape != ctx.eta_shape:  # eta broadcast against a larger y
            grad = grad.sum_to_size(ctx.eta_shape)
        return grad, None, None


class Gaussian(nn.Module):
    """y ~ N(eta, diag(R)), R = softplus(raw_R) (rates, calcium, behaviour)."""

    def __init__(self, n_neurons: int, dt: float = 1.0, link: str = "identity"):
        super().__init__()
        self.raw_R = nn.Parameter(torch.zeros(n_neurons))

    def variance(self) -> torch.Tensor:
        return F.softplus(self.raw_R) + 1e-4

    def mean(self, eta: torch.Tensor) -> torch.Tensor:
        return eta

    def log_prob(self, eta: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        y, mask = _observed(y)
        var = self.variance()
        lp = -0.5 * ((y - eta) ** 2 / var + torch.log(2 * math.pi * var))
        return torch.where(mask, lp, torch.zeros_like(lp))

    def sample(self, eta: torch.Tensor) -> torch.Tensor:
        return eta + self.variance().sqrt() * torch.randn_like(eta)

    def init_bias(self, mean_obs: torch.Tensor) -> torch.Tensor:
        return mean_obs


class Bernoulli(nn.Module):
    """y ~ Bernoulli(sigmoid(eta)) (binary rasters)."""

    def __init__(self, n_neurons: int, dt: float = 1.0, link: str = "logit"):
        super().__init__()

    def mean(self, eta: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(eta)

    def log_prob(self, eta: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        y, mask = _observed(y)
        y = y.clamp(0, 1).expand_as(eta)  # broadcast over leading sample dims
        lp = y * eta - F.softplus(eta)
        return torch.where(mask, lp, torch.zeros_like(lp))

    def sample(self, eta: torch.Tensor) -> torch.Tensor:
        return torch.bernoulli(torch.sigmoid(eta))

    def init_bias(self, mean_obs: torch.Tensor) -> torch.Tensor:
        p = mean_obs.clamp(1e-3, 1 - 1e-3)
        return torch.log(p) - torch.log1p(-p)


LIKELIHOODS = {"poisson": Poisson, "gaussian": Gaussian, "bernoulli": Bernoulli}


def build_likelihood(kind: str, n_neurons: int, dt: float, link: str = "exp") -> nn.Module:
    return LIKELIHOODS[kind](n_neurons, dt, link)


def support_problem(kind: str, counts) -> str | None:
    """Why `counts` (numpy [trial, time, neuron], NaN = missing) cannot come from likelihood `kind`, or
    None. A Poisson model of 0.5 spikes fits without complaint and scores nonsense, so fit refuses it."""
    import numpy as np

    values = counts[np.isfinite(counts)] if counts.dtype.kind == "f" else counts.ravel()
    if kind == "poisson" and counts.dtype.kind == "f":
        bad = values != np.round(values)
        if bad.any():
            return (f"holds non-integer counts (e.g. {values[bad][0]:g}) but model.likelihood is poisson; give spike "
                    "counts per bin, or --set model.likelihood=gaussian for continuous data")
    if kind == "bernoulli":
        bad = (values != 0) & (values != 1)
        if bad.any():
            return (f"holds values other than 0 and 1 (e.g. {values[bad][0]:g}) but model.likelihood is bernoulli; "
                    "binarise the counts, or --set model.likelihood=poisson")
    return None
