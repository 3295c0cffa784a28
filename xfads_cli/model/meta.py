"""The meta-dynamical model (docs/model.md section 6): XFADS (model/xfads.py) over many sessions, each
with its own read-in, the shared dynamics adapted by a session embedding.

    session i, trial j:  x_t = Omega_i log1p(y_t[heldin_i])                     (read-in, per session)
    q(e_i) = N(0, I) x prod_j N(e; mu_ij, diag(var_ij))                        (embedding, pooled)
    z_1 ~ N(m0, diag(q0)),  z_t = f(z_{t-1}; e) + eps_t,  eps_t ~ N(0, diag(q))   (shared)
    y_t | z_t ~ p(y_t | C_i z_t[:L_read] + d_i)                                (per-session readout)
    f(z; e) = z + (W_K + dW_K(e)) act(... act((W_1 + dW_1(e)) z + b_1) ...) + b_K,
    dW_l(e) = U_l(e) V_l(e)^T  (rank d_r, U_l, V_l from a hypernetwork on e)

One model class serves both kinds; this module names the meta kind's constructor and keeps the names
its callers import. The parts live in model/adapted_dynamics.py (f(z; e)), model/embedding.py (q(e_i)),
model/session.py (per-session parameters, the bound session) and model/xfads.py (the model).
"""

from __future__ import annotations

from typing import Sequence

from xfads_cli.config import ModelConfig
from xfads_cli.model.adapted_dynamics import ADAPTATIONS, HyperMLPDynamics, InputMLPDynamics
from xfads_cli.model.embedding import EmbeddingEncoder, kl_std_normal, pool_gaussians
from xfads_cli.model.session import Session
from xfads_cli.model.xfads import XFADS

__all__ = ["ADAPTATIONS", "EmbeddingEncoder", "HyperMLPDynamics", "InputMLPDynamics", "MetaXFADS", "Session",
           "kl_std_normal", "pool_gaussians"]


def MetaXFADS(cfg: ModelConfig, sessions: Sequence[dict], *, adaptation: str = "hyper") -> XFADS:
    """The meta model over `sessions` (plain-data specs, model/session.py Session). adaptation: how e
    enters the dynamics: "hyper" (the model), "input" or "none" (the paper's baselines)."""
    return XFADS(cfg, sessions, adaptation=adaptation)

