"""Latent dynamics f: [..., latent] -> [..., latent] (docs/model.md section 1).

Each module maps any leading shape (sample, batch, ...) so the filter can push all particles of all
trials through f in one call. The process noise lives with the model, not here. `rowwise = True`: f
acts on each latent vector independently (no per-trial parameters), so the filter may pass the
particles in whatever leading layout it keeps them in (filtering.propagate).
"""

from __future__ import annotations

import torch
from torch import nn

ACTIVATIONS = {"silu": nn.SiLU, "tanh": nn.Tanh, "relu": nn.ReLU}


class MLPDynamics(nn.Module):
    """Residual MLP: f(z) = z + W_k act(... act(W_1 z + b_1) ...) + b_k.

    The last layer starts near zero so f starts near the identity: a slowly varying latent is the
    right prior before any data has been seen, and it keeps early rollouts stable.
    """

    rowwise = True

    def __init__(self, latent_dim: int, hidden: int = 128, layers: int = 1, activation: str = "silu"):
        super().__init__()
        dims = [latent_dim] + [hidden] * layers
        blocks: list[nn.Module] = []
        for d_in, d_out in zip(dims[:-1], dims[1:]):
            blocks += [nn.Linear(d_in, d_out), ACTIVATIONS[activation]()]
        self.hidden = nn.Sequential(*blocks)
        self.out = nn.Linear(dims[-1], latent_dim)
        nn.init.normal_(self.out.weight, std=1e-3)
        nn.init.zeros_(self.out.bias)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return z + self.out(self.hidden(z))


class GRUDynamics(nn.Module):
    """f(z) = W_out GRU(h = W_in z + b_in) with no external input (the authors' default).

    With no input the GRU update reduces to gates computed from h alone:
        r = sigmoid(W_r h + c_r),  u = sigmoid(W_u h + c_u),  n = tanh(W_n (r * h) + c_n)
        h' = (1 - u) * n + u * h
    """

    rowwise = True

    def __init__(self, latent_dim: int, hidden: int = 128):
        super().__init__()
        self.inp = nn.Linear(latent_dim, hidden)
        self.gates = nn.Linear(hidden, 2 * hidden)
        self.cand = nn.Linear(hidden, hidden)
        self.out = nn.Linear(hidden, latent_dim)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        h = self.inp(z)
        r, u = torch.sigmoid(self.gates(h)).chunk(2, dim=-1)
        n = torch.tanh(self.cand(r * h))
        return self.out((1 - u) * n + u * h)


class LinearDynamics(nn.Module):
    """f(z) = A z + b, A initialised at 0.95 I (stable, slow). With `max_radius`, A's singular values
    are clipped on the fly so rollouts cannot explode."""

    rowwise = True

    def __init__(self, latent_dim: int, max_radius: float | None = None):
        super().__init__()
        self.A = nn.Parameter(0.95 * torch.eye(latent_dim))
        self.b = nn.Parameter(torch.zeros(latent_dim))
        self.max_radius = max_radius

    def matrix(self) -> torch.Tensor:
        if self.max_radius is None:
            return self.A
        u, s, vh = torch.linalg.svd(self.A)
        return u @ torch.diag(s.clamp(max=self.max_radius)) @ vh

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return z @ self.matrix().T + self.b


def build_dynamics(kind: str, latent_dim: int, hidden: int, layers: int) -> nn.Module:
    if kind == "mlp":
        return MLPDynamics(latent_dim, hidden, layers)
    if kind == "gru":
        return GRUDynamics(latent_dim, hidden)
    if kind == "linear":
        return LinearDynamics(latent_dim)
    raise ValueError(f"unknown dynamics '{kind}'")
