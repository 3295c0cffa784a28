"""Dynamics adapted by a session embedding e (docs/model.md section 6, "Hypernetwork" and "Baselines"):
the f(z; e) of the meta model, each with `adapters(e)` (computed once per batch) and
`forward(z, adapters)` (every filter step), and `frobenius(adapters)`, the size of the adaptation.
"""

from __future__ import annotations

import torch
from torch import nn

from xfads_cli.config import ModelConfig
from xfads_cli.model.dynamics import ACTIVATIONS, MLPDynamics

# Adapters of one call: for each adapted layer l, (U_l [batch, out_l, rank], V_l [batch, in_l, rank]).
Adapters = list[tuple[torch.Tensor, torch.Tensor]]


class HyperMLPDynamics(nn.Module):
    """Residual MLP whose every linear layer is adapted by a low-rank, embedding-dependent term:

        f(z; e) = z + (W_K + U_K V_K^T) h_{K-1} + b_K,
        h_l = act((W_l + U_l V_l^T) h_{l-1} + b_l),  h_0 = z,
        [U_l(e), V_l(e) - V0_l]_l = hyper(e)     U_l: [out_l, rank], V_l: [in_l, rank]

    The base (W_l, b_l) is exactly `MLPDynamics` (its init: f starts near the identity). The
    hypernetwork is bias-free (linear, or an MLP with hyper_hidden units), so hyper(0) = 0 and f(z; 0)
    is the plain residual MLP: e = 0 is "the shared dynamics", and its output layer starts small so
    early adaptation is a small perturbation. The low-rank term is applied as (h @ V) @ U^T per trial, never as a full weight.
    """

    def __init__(self, latent_dim: int, hidden: int = 128, layers: int = 1, *, embed_dim: int = 2,
                 rank: int = 2, hyper_hidden: int = 0, activation: str = "silu"):
        super().__init__()
        self.base = MLPDynamics(latent_dim, hidden, layers, activation)
        self.linears: list[nn.Linear] = [m for m in self.base.hidden if isinstance(m, nn.Linear)] + [self.base.out]
        self.act = ACTIVATIONS[activation]()
        self.rank = rank
        # (out_l, in_l) per adapted layer; the hypernetwork emits [U_1, V_1, U_2, V_2, ...] flattened.
        self.shapes = [(lin.out_features, lin.in_features) for lin in self.linears]
        n_out = sum((o + i) * rank for o, i in self.shapes)
        if hyper_hidden > 0:
            self.hyper = nn.Sequential(
                nn.Linear(embed_dim, hyper_hidden, bias=False), nn.SiLU(),
                nn.Linear(hyper_hidden, n_out, bias=False),
            )
            # U V^T is a product of two outputs: small but not tiny, or both factors start in a flat region.
            nn.init.normal_(self.hyper[-1].weight, std=0.1 / hyper_hidden**0.5)
        else:
            # Linear: U V^T is nearly linear in e (plus an e^2 term through V), so sessions cannot fold back
            # onto each other along the embedding; nothing saturates, so a large |e| can make f expansive.
            self.hyper = nn.Sequential(nn.Linear(embed_dim, n_out, bias=False))
            nn.init.normal_(self.hyper[-1].weight, std=0.05 / embed_dim**0.5)
        # V_l(e) = V0_l + g_l(e) with a learned offset V0_l: were both factors zero at e = 0, U V^T would be
        # quadratic in e, with a zero gradient at the prior mean that the embedding could not leave.
        # U(0) = 0 still, so f(z; 0) is the plain residual MLP.
        self.v_offset = nn.Parameter(torch.cat([torch.randn(i * rank) / i**0.5 for _, i in self.shapes]))

    def adapters(self, e: torch.Tensor) -> Adapters:
        """e: [batch, embed] -> per layer (U [batch, out, rank], V [batch, in, rank])."""
        flat = self.hyper(e)
        out, start, v_start = [], 0, 0
        for o, i in self.shapes:
            U = flat[:, start : start + o * self.rank].unflatten(-1, (o, self.rank))
            start += o * self.rank
            v0 = self.v_offset[v_start : v_start + i * self.rank]
            V = (flat[:, start : start + i * self.rank] + v0).unflatten(-1, (i, self.rank))
            start += i * self.rank
            v_start += i * self.rank
            out.append((U, V))
        return out

    def forward(self, z: torch.Tensor, adapters: Adapters | None = None) -> torch.Tensor:
        """z: [..., batch, latent] (the filter passes [sample, batch, latent]); adapters from
        `adapters(e)` with the same batch, or None for the base MLP (e = 0)."""
        h = z
        for k, lin in enumerate(self.linears):
            out = lin(h)
            if adapters is not None:
                U, V = adapters[k]
                # (h V) U^T per trial: O((in + out) rank) per particle instead of a per-trial weight.
                out = out + _lowrank(h, U, V)
            h = self.act(out) if k < len(self.linears) - 1 else out
        return z + h

    @staticmethod
    def frobenius(adapters: Adapters) -> torch.Tensor:
        """sum_l ||U_l V_l^T||_F per trial, [batch], via ||U V^T||_F^2 = tr((U^T U)(V^T V)) (rank x rank)."""
        total = 0.0
        for U, V in adapters:
            sq = ((U.transpose(-1, -2) @ U) * (V.transpose(-1, -2) @ V)).sum((-1, -2))
            # Clamp: round-off can make sq a hair negative, and sqrt has an infinite slope at 0 (e = 0).
            total = total + sq.clamp(min=1e-12).sqrt()
        return total


class InputMLPDynamics(nn.Module):
    """Baselines of the meta model (docs/model.md section 6, "Baselines"), with HyperMLPDynamics' interface:

        use_embedding=True:   f(z; e) = z + MLP([z, e])    (the embedding fed as an input to f)
        use_embedding=False:  f(z; e) = z + MLP(z)         (shared dynamics, the embedding ignored)

    `adapters(e)` just carries e to `forward`; there is no low-rank term, so `frobenius` is zero.
    """

    def __init__(self, latent_dim: int, hidden: int = 128, layers: int = 1, *, embed_dim: int = 2,
                 use_embedding: bool = True, activation: str = "silu"):
        super().__init__()
        self.use_embedding = use_embedding
        dims = [latent_dim + (embed_dim if use_embedding else 0)] + [hidden] * layers
        blocks: list[nn.Module] = []
        for d_in, d_out in zip(dims[:-1], dims[1:]):
            blocks += [nn.Linear(d_in, d_out), ACTIVATIONS[activation]()]
        self.hidden = nn.Sequential(*blocks)
        self.out = nn.Linear(dims[-1], latent_dim)
        nn.init.normal_(self.out.weight, std=1e-3)  # f starts near the identity, as MLPDynamics
        nn.init.zeros_(self.out.bias)

    def adapters(self, e: torch.Tensor) -> list:
        """e: [batch, embed] -> [(e,)] (or [] when the embedding is ignored)."""
        return [(e,)] if self.use_embedding else []

    def forward(self, z: torch.Tensor, adapters: list | None = None) -> torch.Tensor:
        """z: [..., batch, latent]; adapters from `adapters(e)` (None: e = 0)."""
        h = z
        if self.use_embedding:
            n_e = self.hidden[0].in_features - z.shape[-1]
            e = adapters[0][0] if adapters else z.new_zeros(z.shape[-2], n_e)
            h = torch.cat([z, e.to(z.dtype).expand(*z.shape[:-1], n_e)], dim=-1)
        return z + self.out(self.hidden(h))

    @staticmethod
    def frobenius(adapters: list) -> torch.Tensor:
        """No low-rank adaptation: zero per trial, [batch] (scalar 0 without an embedding)."""
        return adapters[0][0].new_zeros(adapters[0][0].shape[0]) if adapters else torch.zeros(())


ADAPTATIONS = ("hyper", "none", "input")


def _lowrank(h: torch.Tensor, U: torch.Tensor, V: torch.Tensor) -> torch.Tensor:
    """h [..., batch, in], U [batch, out, rank], V [batch, in, rank] -> h V U^T [..., batch, out]."""
    hv = (h.unsqueeze(-2) @ V).squeeze(-2)  # [..., batch, rank]
    return (hv.unsqueeze(-2) @ U.transpose(-1, -2)).squeeze(-2)


def build_adapted_dynamics(cfg: ModelConfig, adaptation: str) -> nn.Module:
    """f(z; e) of the meta model: "hyper" (the model: low-rank hypernetwork weights), "input"
    (f(z; e) = z + MLP([z, e])) or "none" (f(z) = z + MLP(z), e ignored); the last two are the paper's
    baselines (benchmarks/meta_fewshot.py)."""
    if cfg.dynamics != "mlp":
        raise ValueError(f"the meta model adapts MLP dynamics only; got dynamics '{cfg.dynamics}'")
    if adaptation not in ADAPTATIONS:
        raise ValueError(f"adaptation must be one of {', '.join(ADAPTATIONS)}; got {adaptation!r}")
    L = cfg.latent_dim
    if adaptation == "hyper":
        return HyperMLPDynamics(L, cfg.dynamics_hidden, cfg.dynamics_layers, embed_dim=cfg.embed_dim,
                                rank=cfg.hyper_rank, hyper_hidden=cfg.hyper_hidden)
    return InputMLPDynamics(L, cfg.dynamics_hidden, cfg.dynamics_layers, embed_dim=cfg.embed_dim,
                            use_embedding=adaptation == "input")
