"""The meta-dynamical XFADS model: many sessions, shared dynamics adapted by a session embedding
(docs/model.md section 6).

    session i, trial j:  x_t = Omega_i log1p(y_t[heldin_i])                     (read-in, per session)
    q(e_i) = N(0, I) x prod_j N(e; mu_ij, diag(var_ij))                        (embedding, pooled)
    z_1 ~ N(m0, diag(q0)),  z_t = f(z_{t-1}; e) + eps_t,  eps_t ~ N(0, diag(q))   (shared)
    y_t | z_t ~ p(y_t | C_i z_t[:L_read] + d_i)                                (per-session readout)
    f(z; e) = z + (W_K + dW_K(e)) act(... act((W_1 + dW_1(e)) z + b_1) ...) + b_K,
    dW_l(e) = U_l(e) V_l(e)^T  (rank d_r, U_l, V_l from a hypernetwork on e)

The posterior over z is XFADS's (model/xfads.py, model/filtering.py) run on the read-in sequence
with the trial's f(.; e). Objective for a batch of B trials of session i:

    sum_j ELBO_j(e_j) - KL(q(e_i) || N(0, I)) - lambda * mean_j sum_l ||U_l(e_j) V_l(e_j)^T||_F,
    e_j ~ q(e_i) (one draw per trial)
"""

from __future__ import annotations

from typing import Iterator, NamedTuple, Sequence

import torch
from torch import nn
from torch.nn import functional as F

from xfads_cli.config import ModelConfig
from xfads_cli.model.dynamics import ACTIVATIONS, MLPDynamics
from xfads_cli.model.base import Forecast, Noise, StateSpaceModel, expected_loglik
from xfads_cli.model.encoders import BackwardEncoder, InputDropout, LocalEncoder
from xfads_cli.model.filtering import Posterior
from xfads_cli.model.likelihoods import build_likelihood

# Adapters of one call: for each adapted layer l, (U_l [batch, out_l, rank], V_l [batch, in_l, rank]).
Adapters = list[tuple[torch.Tensor, torch.Tensor]]


# ----------------------------------------------------------------------------------------------
# dynamics


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


# ----------------------------------------------------------------------------------------------
# embedding


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


# ----------------------------------------------------------------------------------------------
# model


class MetaElbo(NamedTuple):
    """elbo, loglik, kl: per trial [batch] (elbo = loglik - kl, the latent part only);
    kl_embed: KL(q(e_i) || N(0, I)), scalar, once per session per batch (0 when e was given);
    frobenius: mean over the batch's trials of sum_l ||U_l V_l^T||_F, scalar."""

    elbo: torch.Tensor
    loglik: torch.Tensor
    kl: torch.Tensor
    kl_embed: torch.Tensor
    frobenius: torch.Tensor
    posterior: Posterior


class Session(nn.Module):
    """Per-session parameters: read-in Omega_i, readout (C_i, d_i) and the likelihood's own."""

    def __init__(self, cfg: ModelConfig, spec: dict, read_dims: int):
        super().__init__()
        self.name = str(spec.get("name", ""))
        self.n_neurons = int(spec["n_neurons"])
        self.dt = float(spec["dt"])
        heldin = spec.get("heldin")
        heldin = torch.ones(self.n_neurons, dtype=torch.bool) if heldin is None else torch.as_tensor(heldin, dtype=torch.bool)
        if heldin.shape != (self.n_neurons,) or not bool(heldin.any()):
            raise ValueError(f"session {self.name!r}: heldin must be {self.n_neurons} booleans with at least one True")
        self.register_buffer("heldin", heldin.clone())
        self.read_in = nn.Linear(int(heldin.sum()), cfg.read_in_dim)
        self.readout = nn.Linear(read_dims, self.n_neurons)
        nn.init.normal_(self.readout.weight, std=1.0 / read_dims**0.5)
        self.likelihood = build_likelihood(cfg.likelihood, self.n_neurons, self.dt, cfg.link)
        # A refined embedding (few-shot adaptation): the mean of q(e_i) is this parameter, fitted by gradient
        # with the session's other parameters, instead of the frozen encoder's pooled mean (docs/model.md section 6).
        # It starts at the prior mean, e = 0 (the shared dynamics).
        if spec.get("refine_embedding"):
            self.embedding = nn.Parameter(torch.zeros(cfg.embed_dim))
        else:
            self.register_parameter("embedding", None)


class MetaXFADS(StateSpaceModel):
    """Shared XFADS encoders and embedding-adapted dynamics, per-session read-in and readout.

    Shapes: y [batch, time, neuron_i] holds trials of ONE session (NaN = missing); e [batch, embed];
    latents z [..., latent]. Sessions are addressed by index (or name) in `self.sessions`;
    `session(i, trials)` is the `SessionModel` (model/base.py) serving session i.
    """

    def __init__(self, cfg: ModelConfig, sessions: Sequence[dict], *, adaptation: str = "hyper"):
        """adaptation: how e enters the dynamics. "hyper" (the model): low-rank hypernetwork weights;
        "input": f(z; e) = z + MLP([z, e]); "none": f(z) = z + MLP(z), e ignored (the last two are
        the paper's baselines, benchmarks/meta_fewshot.py)."""
        super().__init__()
        if cfg.dynamics != "mlp":
            raise ValueError(f"the meta model adapts MLP dynamics only; got dynamics '{cfg.dynamics}'")
        if adaptation not in ADAPTATIONS:
            raise ValueError(f"adaptation must be one of {', '.join(ADAPTATIONS)}; got {adaptation!r}")
        self.cfg = cfg
        self.adaptation = adaptation
        self.embed_dim = cfg.embed_dim
        L = cfg.latent_dim
        self.read_dims = cfg.read_dims or L
        if adaptation == "hyper":
            self.dynamics = HyperMLPDynamics(L, cfg.dynamics_hidden, cfg.dynamics_layers, embed_dim=cfg.embed_dim,
                                             rank=cfg.hyper_rank, hyper_hidden=cfg.hyper_hidden)
        else:
            self.dynamics = InputMLPDynamics(L, cfg.dynamics_hidden, cfg.dynamics_layers, embed_dim=cfg.embed_dim,
                                             use_embedding=adaptation == "input")
        self.embedder = EmbeddingEncoder(cfg.read_in_dim, cfg.embed_dim, cfg.encoder_hidden)
        self.local = LocalEncoder(cfg.read_in_dim, L, cfg.rank_local, cfg.encoder_hidden, log_inputs=False)
        self.backward = BackwardEncoder(L, cfg.rank_local, cfg.rank_backward, cfg.encoder_hidden)
        self.init_prior(L)
        self.sessions = nn.ModuleList()
        self.session_specs: list[dict] = []
        for spec in sessions:
            self.add_session(spec)

    # -- sessions -----------------------------------------------------------------------------
    def add_session(self, spec: dict, y: torch.Tensor | None = None) -> int:
        """New read-in, readout and likelihood (few-shot adaptation); y [trial, time, neuron] sets the
        readout bias from the mean counts. Returns the new session's index."""
        ref = self.m0
        self.sessions.append(Session(self.cfg, spec, self.read_dims).to(device=ref.device, dtype=ref.dtype))
        self.session_specs.append({"name": str(spec.get("name", "")), "n_neurons": int(spec["n_neurons"]),
                                   "heldin": [bool(v) for v in self.sessions[-1].heldin.tolist()],
                                   "dt": float(spec["dt"])}
                                  | ({"refine_embedding": True} if spec.get("refine_embedding") else {}))
        index = len(self.sessions) - 1
        if y is not None:
            self.init_from_data(y, index)
        return index

    @property
    def n_sessions(self) -> int:
        return len(self.sessions)

    def session(self, index: int | str, trials) -> "MetaSession":
        """The model serving one session: bound to the session and the mean of q(e_i) pooled over
        trials() [trial, time, neuron_i]."""
        return MetaSession.pooled(self, index, trials())

    def session_index(self, session: int | str) -> int:
        if isinstance(session, str):
            names = [s.name for s in self.sessions]
            if session not in names:
                raise KeyError(f"unknown session {session!r}; sessions: {', '.join(names)}")
            return names.index(session)
        return int(session)

    def session_module(self, session: int | str) -> Session:
        """The per-session parameters (read-in, readout, likelihood) of session index or name."""
        return self.sessions[self.session_index(session)]

    def n_inputs(self, session: int | str) -> int:
        """How many neurons of the session the read-in takes."""
        return int(self.session_module(session).heldin.sum())

    def shared_parameters(self) -> Iterator[nn.Parameter]:
        for name, p in self.named_parameters():
            if not name.startswith("sessions."):
                yield p

    def session_parameters(self, session: int | str) -> Iterator[nn.Parameter]:
        return self.session_module(session).parameters()

    def freeze_shared(self) -> None:
        """Stop gradients to every shared parameter (adapt trains only a session's own)."""
        for p in self.shared_parameters():
            p.requires_grad_(False)

    @torch.no_grad()
    def init_from_data(self, counts: torch.Tensor, session: int | str) -> None:
        """Readout bias of a session from each neuron's mean count per bin (docs/model.md section 1).
        counts: [trial, time, neuron_session]."""
        s = self.session_module(session)
        mean = torch.nanmean(counts.reshape(-1, counts.shape[-1]).to(s.readout.bias.dtype), dim=0)
        s.readout.bias.copy_(s.likelihood.init_bias(torch.nan_to_num(mean, nan=0.0)))

    # -- generative model ---------------------------------------------------------------------
    def eta(self, z: torch.Tensor, session: int | str) -> torch.Tensor:
        """z: [..., latent] -> natural parameters [..., neuron_i]."""
        return self.session_module(session).readout(z[..., : self.read_dims])

    def rates(self, z: torch.Tensor, session: int | str) -> torch.Tensor:
        """Expected observation per bin: z [..., latent] -> [..., neuron_i]."""
        return self.session_module(session).likelihood.mean(self.eta(z, session))

    def dynamics_fn(self, e: torch.Tensor):
        """f(.; e) as the callable the filter wants: [sample, batch, latent] -> same, e [batch, embed]."""
        adapters = self.dynamics.adapters(e)
        return lambda z: self.dynamics(z, adapters)

    # -- inference ----------------------------------------------------------------------------
    def read_in(self, y: torch.Tensor, session: int | str, input_weight: torch.Tensor | None = None
                ) -> tuple[torch.Tensor, torch.Tensor]:
        """y [batch, time, neuron_i] -> read-in x [batch, time, read_in] (missing inputs zero-filled)
        and observed [batch, time] (every held-in neuron finite). input_weight [batch, time, heldin]
        multiplies the (log) inputs (coordinated dropout)."""
        s = self.session_module(session)
        y = y[..., s.heldin]
        finite = torch.isfinite(y)
        x = torch.where(finite, y, torch.zeros_like(y))
        if self.cfg.likelihood == "poisson":
            x = torch.log1p(x.clamp(min=0))
        if input_weight is not None:
            x = x * input_weight
        return s.read_in(x), finite.all(-1)

    def embed(self, y: torch.Tensor, session: int | str):
        """y [batch, time, neuron_i] -> (mu_trial, var_trial) [batch, embed], each trial's q(e | y_j),
        and (mu, var) [embed], q(e_i) pooled over all given trials."""
        mu_f, var_f = self.embedding_factors(y, session)
        mu_trial, var_trial = pool_gaussians(mu_f[None], var_f[None])
        mu, var = pool_gaussians(mu_f, var_f)
        return mu_trial, var_trial, self.refined_mean(session, mu), var

    def refined_mean(self, session: int | str, mu: torch.Tensor) -> torch.Tensor:
        """The session's refined embedding mean if it has one (adapted sessions), else mu [embed]."""
        refined = self.session_module(session).embedding
        return mu if refined is None else refined.to(mu)

    def embedding_factors(self, y: torch.Tensor, session: int | str) -> tuple[torch.Tensor, torch.Tensor]:
        """Each trial's Gaussian factor (mu_f, var_f) [batch, embed] before pooling with the prior."""
        x, observed = self.read_in(y, session)
        return self.embedder(x, observed)

    def embedding_sample(self, y: torch.Tensor, session: int | str, noise: torch.Tensor | None = None):
        """e [batch, embed]: one draw of q(e_i) per trial in training (noise [batch, embed]: its standard
        normals; None: the global RNG), the mean in eval; plus (mu, var) of q(e_i)."""
        _, _, mu, var = self.embed(y, session)
        e = mu.expand(y.shape[0], -1)
        if self.training:
            if noise is None:
                noise = torch.randn(e.shape, dtype=e.dtype, device=e.device)
            e = e + var.sqrt() * noise.to(e)
        return e, mu, var

    def posterior(self, y: torch.Tensor, session: int | str, e: torch.Tensor | None = None, *,
                  mode: str | None = None, n_samples: int | None = None, drop_local: float = 0.0,
                  local_mask: torch.Tensor | None = None, backward_mask: torch.Tensor | None = None,
                  input_dropout: InputDropout | None = None, noise: Noise = None) -> Posterior:
        """y [batch, time, neuron_i] -> Posterior over [batch, time, latent]. e: [batch, embed] (or [embed]);
        None infers q(e_i) from y itself (a draw per trial in training, the mean in eval). The other
        arguments as in XFADS.posterior."""
        if e is None:
            e, _, _ = self.embedding_sample(y, session)
        return self.filter_adapted(y, session, e, mode=mode, n_samples=n_samples, drop_local=drop_local,
                                   local_mask=local_mask, backward_mask=backward_mask,
                                   input_dropout=input_dropout, noise=noise)[0]

    def potentials(self, y: torch.Tensor, session: int | str, input_weight: torch.Tensor | None = None
                   ) -> tuple[torch.Tensor, torch.Tensor]:
        """The local potentials of y [batch, time, neuron_i]: a [batch, time, latent], A [..., rank_local]."""
        x, observed = self.read_in(y, session, input_weight)
        # NaN marks unobserved bins so the local encoder gives them a zero potential, as in XFADS.
        x = torch.where(observed[..., None], x, torch.full_like(x, float("nan")))
        a, A, _ = self.local(x)
        return a, A

    def filter_adapted(self, y: torch.Tensor, session: int | str, e: torch.Tensor, *,
                       input_dropout: InputDropout | None = None, **options) -> tuple[Posterior, list]:
        """The posterior with f(.; e) and the adapters of e [batch, embed] (or [embed]); options:
        `filter_potentials`' keyword arguments."""
        a, A = self.potentials(y, session, None if input_dropout is None else input_dropout.input_weight(y.dtype))
        adapters = self.dynamics.adapters(e.to(a.dtype).expand(y.shape[0], -1))
        post = self.filter_potentials(lambda z: self.dynamics(z, adapters), a, A, **options)
        return post, adapters

    def elbo(self, y: torch.Tensor, session: int | str, e: torch.Tensor | None = None, *,
             input_dropout: InputDropout | None = None, embed_noise: torch.Tensor | None = None,
             **options) -> MetaElbo:
        """Monte Carlo ELBO terms for a batch of one session, y [batch, time, neuron_i]. e: None draws it
        from q(e_i) (`embedding_sample`, embed_noise its standard normals); options: as in `posterior`."""
        e_given = e is not None
        if e is None:
            e, mu, var = self.embedding_sample(y, session, embed_noise)
        post, adapters = self.filter_adapted(y, session, e, input_dropout=input_dropout, **options)
        s = self.session_module(session)
        loglik = expected_loglik(s.likelihood, s.readout(post.samples[..., : self.read_dims]), y, s.heldin,
                                 input_dropout)
        kl = post.kl.sum(-1)
        kl_embed = torch.zeros((), dtype=kl.dtype, device=kl.device) if e_given else kl_std_normal(mu, var)
        return MetaElbo(loglik - kl, loglik, kl, kl_embed, self.dynamics.frobenius(adapters).mean(), post)

    def batch_loss(self, y: torch.Tensor, session: int | str, *, share: float = 1.0, **draws) -> torch.Tensor:
        """The training objective of a batch of one session, y [batch, time, neuron_i]:

            -sum_j elbo_j + share * [KL(q(e_i) || p(e)) + lambda * frobenius]

        The per-session terms enter once per batch (docs/model.md section 6); share: the fraction of the
        batch these trials are (data-parallel ranks each hold a part). draws: `elbo`'s keyword arguments."""
        t = self.elbo(y, session, **draws)
        return -t.elbo.sum() + share * (t.kl_embed + self.cfg.frobenius_weight * t.frobenius)

    # -- forecasting --------------------------------------------------------------------------
    def rollout(self, z: torch.Tensor, horizon: int, e: torch.Tensor,
                generator: torch.Generator | None = None) -> torch.Tensor:
        """Sample z_{t+1:t+H} from f(.; e). z [sample, batch, latent], e [batch, embed]
        -> [sample, batch, horizon, latent]."""
        return self.rollout_through(self.dynamics_fn(e.to(z.dtype).expand(z.shape[1], -1)), z, horizon, generator)

    @torch.no_grad()
    def forecast(self, y_context: torch.Tensor, session: int | str, horizon: int, *,
                 n_samples: int | None = None, mode: str = "filter", e: torch.Tensor | None = None,
                 generator: torch.Generator | None = None) -> Forecast:
        """Filter the context [batch, t0, neuron_i] and roll q(z_t0)'s samples forward H steps.
        e: [batch, embed] or [embed]; None: the mean of q(e_i) pooled over the context trials.
        generator: source of the filter's and the rollout's draws (None: the global RNG)."""
        if e is None:
            e = self.embed(y_context, session)[2]
        e = e.expand(y_context.shape[0], -1)
        post = self.filter_adapted(y_context, session, e, mode=mode, n_samples=n_samples, noise=generator)[0]
        z = self.rollout(post.samples[:, :, -1], horizon, e, generator)
        return Forecast(z, self.rates(z, session))


class MetaSession:
    """MetaXFADS serving one session with a fixed embedding e (the mean of q(e_i)): the `SessionModel`
    (model/base.py) that smoothing, forecasting and evaluation use, as XFADS serves its one session.
    Its parameters are the model's (it holds no state of its own but the session index and e)."""

    def __init__(self, model: MetaXFADS, session: int | str, e: torch.Tensor):
        self.model, self.index, self.e = model, model.session_index(session), e
        self.cfg = model.cfg
        self.heldin = model.session_module(self.index).heldin

    @classmethod
    def pooled(cls, model: MetaXFADS, session: int | str, y: torch.Tensor) -> "MetaSession":
        """The session whose e is the mean of q(e_i) pooled over trials y [trial, time, neuron_i]."""
        return cls(model, session, session_embedding(model, y, session)[2])

    def _e(self, y: torch.Tensor) -> torch.Tensor:
        return self.e.to(y).expand(y.shape[0], -1)

    def noise_shape(self, batch: int, time: int, *, mode: str | None = None, n_samples: int | None = None) -> tuple:
        return self.model.noise_shape(batch, time, mode=mode, n_samples=n_samples)

    def posterior(self, y: torch.Tensor, **options) -> Posterior:
        return self.model.posterior(y, self.index, self._e(y), **options)

    def elbo(self, y: torch.Tensor, **options) -> MetaElbo:
        return self.model.elbo(y, self.index, self._e(y), **options)

    def rates(self, z: torch.Tensor) -> torch.Tensor:
        return self.model.rates(z, self.index)

    def forecast(self, y_context: torch.Tensor, horizon: int, **options) -> Forecast:
        return self.model.forecast(y_context, self.index, horizon, e=self._e(y_context), **options)

    # the pieces model/streaming.py filters a long recording with
    def potentials(self, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.model.potentials(y, self.index)

    def transition(self, batch: int):
        return self.model.dynamics_fn(self.e.to(self.model.m0).expand(batch, -1))

    @property
    def backward(self):
        return self.model.backward

    @property
    def m0(self) -> torch.Tensor:
        return self.model.m0

    def q0(self) -> torch.Tensor:
        return self.model.q0()

    def q(self) -> torch.Tensor:
        return self.model.q()


@torch.no_grad()
def session_embedding(model: MetaXFADS, y: torch.Tensor, session: int | str, batch_size: int = 256):
    """q(e_i) pooled over all trials y [trial, time, neuron_i] (in batches to bound memory):
    returns per-trial (mu, var) [trial, embed] and pooled (mu, var) [embed]."""
    factors = [model.embedding_factors(y[i : i + batch_size], session) for i in range(0, y.shape[0], batch_size)]
    mu_f, var_f = torch.cat([f[0] for f in factors]), torch.cat([f[1] for f in factors])
    mu_t, var_t = pool_gaussians(mu_f[None], var_f[None])
    mu, var = pool_gaussians(mu_f, var_f)
    return mu_t, var_t, model.refined_mean(session, mu).detach(), var
