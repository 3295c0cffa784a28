"""The session embedding of the meta model (docs/model.md section 6, "Embedding"): a Gaussian factor
per trial from its read-in sequence, pooled with the prior N(0, I) over a session's trials.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F


class EmbeddingEncoder(nn.Module):
    """GRU over a trial's read-in sequence -> a Gaussian factor N(e; mu_j, diag(var_j)) per trial.

    Pooling (product of Gaussian experts, prior counted once): the factors are treated as independent
    likelihood terms for e, so over a set J of trials

        q(e) = N(0, I) prod_{j in J} N(e; mu_j, var_j)
        precision = 1 + sum_j 1 / var_j,   mean = (sum_j mu_j / var_j) / precision.

    The per-trial embedding reported is the same rule with J = {j}. More trials give a sharper q(e):
    a few-shot session keeps its uncertainty. (Dividing the prior out of per-trial posteriors instead
    could produce negative precisions; the mean of natural parameters ignores how many trials there are.)
    """

    def __init__(self, n_inputs: int, embed_dim: int, hidden: int = 64):
        super().__init__()
        self.embed_dim = embed_dim
        # +1 input: the bin's observed flag, so zero-filled missing bins are not mistaken for silence.
        self.gru = nn.GRU(n_inputs + 1, hidden, batch_first=True)
        self.proj = nn.Linear(hidden, 2 * embed_dim)

    def forward(self, x: torch.Tensor, observed: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x: [batch, time, read_in] (zero-filled), observed [batch, time] bool
        -> factor mean and variance, each [batch, embed]."""
        _, h = self.gru(torch.cat([x, observed[..., None].to(x.dtype)], dim=-1))
        mu, raw = self.proj(h[-1]).chunk(2, dim=-1)
        return mu, F.softplus(raw) + 1e-4


def pool_gaussians(mu: torch.Tensor, var: torch.Tensor, dim: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Product of the N(0, I) prior and the factors N(mu_j, var_j) along `dim` (see EmbeddingEncoder)."""
    prec = 1.0 + (1.0 / var).sum(dim)
    return (mu / var).sum(dim) / prec, 1.0 / prec


def kl_std_normal(mu: torch.Tensor, var: torch.Tensor) -> torch.Tensor:
    """KL(N(mu, diag(var)) || N(0, I)) over the last dim: mu, var [..., embed] -> [...]."""
    return 0.5 * (var + mu**2 - 1.0 - torch.log(var)).sum(-1)
