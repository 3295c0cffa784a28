"""The XFADS model: generative model + amortised low-rank posterior over one or many sessions
(docs/model.md sections 1-6). Learned state lives here and in the per-session modules
(model/session.py); inference is the pure `low_rank_filter` (model/filtering.py).
"""

from __future__ import annotations

from typing import Iterator, Sequence

import torch
from torch import nn

from xfads_cli.config import ModelConfig
from xfads_cli.model.adapted_dynamics import build_adapted_dynamics
from xfads_cli.model.base import Elbo, Forecast, StateSpaceModel, expected_loglik
from xfads_cli.model.dynamics import build_dynamics
from xfads_cli.model.embedding import EmbeddingEncoder, kl_std_normal, pool_gaussians
from xfads_cli.model.encoders import BackwardEncoder, InputDropout, LocalEncoder
from xfads_cli.model.filtering import Posterior
from xfads_cli.model.session import BoundSession, Session
from xfads_cli.model.task_inputs import InputSpec

__all__ = ["XFADS", "Elbo", "Forecast", "BoundSession", "Session"]


class XFADS(StateSpaceModel):
    """Shared prior, dynamics and encoders; per-session read-in, readout and likelihood (`sessions[i]`,
    model/session.py). Session i, trial j, bin t; y_t [batch, time, neuron_i] holds trials of ONE
    session (NaN = missing); z [..., latent]; e [batch, embed]; u [batch, time, input] task inputs:

        x_t = R_i(y_t)                        read-in: y_t[heldin_i] itself (no embedding, one session)
                                              or Omega_i log1p(y_t[heldin_i]) (the meta model)
        q(e_i) = N(0, I) prod_j N(e; mu_ij, diag(var_ij))           embedding, meta model only
        z_1 ~ N(m0, diag(q0)),  z_t = f(z_{t-1}; e) + B_i u_t + eps_t,  eps_t ~ N(0, diag(q))
        y_t | z_t ~ p_i(y_t | C_i z_t[:L_read] + d_i + D_i u_t)
        q(z_{1:T}) = filter of alpha_t = local(x_t) and beta_t = backward(alpha_{t+1:T}) through f(.; e)

    f(z; e) is `build_dynamics`' f(z) without an embedding, else an adapted MLP
    (model/adapted_dynamics.py). Objective for a batch of B trials of session i (train/loop.py):

        -sum_j ELBO_j(e_j) + share * [KL(q(e_i) || N(0, I)) + lambda * mean_j sum_l ||U_l(e_j) V_l(e_j)^T||_F
                                      + prior of D_i, B_i],      e_j ~ q(e_i) (one draw per trial)
        ELBO_j = sum_t E_q log p(y_t | z_t) - sum_t KL_t

    The encoder never reads held-out neurons; the likelihood covers every neuron, so they are predicted
    from the latents. `session(i, trials)` is the `SessionModel` (model/base.py) serving session i.
    """

    def __init__(self, cfg: ModelConfig, sessions: Sequence[dict], *, adaptation: str | None = None):
        """sessions: one plain-data spec per session (model/session.py Session). adaptation: None for the
        model without a session embedding (exactly one session, which the local encoder reads directly;
        f = cfg.dynamics), else how the embedding adapts f, which makes the meta model (per-session
        read-in, embedding encoder): "hyper", "input" or "none" (model/adapted_dynamics.py)."""
        super().__init__()
        self.cfg, self.adaptation = cfg, adaptation
        self.embed_dim = 0 if adaptation is None else cfg.embed_dim
        L = cfg.latent_dim
        self.read_dims = cfg.read_dims or L
        sessions = list(sessions)
        # The parts are made (random draws) and registered (parameter order, which a saved optimizer
        # state follows) in the order of the two model classes this one replaced: checkpoints and
        # fixed seeds give the numbers they always gave.
        if adaptation is None:
            if len(sessions) != 1:
                raise ValueError(f"a model without a session embedding serves one session; got {len(sessions)}")
            self.dynamics = build_dynamics(cfg.dynamics, L, cfg.dynamics_hidden, cfg.dynamics_layers)
            self.sessions = nn.ModuleList([Session(cfg, sessions[0], self.read_dims, read_in=False)])
            one = self.sessions[0]
            self.local = LocalEncoder(one.n_in, L, cfg.rank_local, cfg.encoder_hidden, log_inputs=one.poisson,
                                      n_extra=one.n_in if one.inputs is not None else 0)
            if one.inputs is not None:
                one.add_inputs(L)
        else:
            self.dynamics = build_adapted_dynamics(cfg, adaptation)
            self.embedder = EmbeddingEncoder(cfg.read_in_dim, cfg.embed_dim, cfg.encoder_hidden)
            self.local = LocalEncoder(cfg.read_in_dim, L, cfg.rank_local, cfg.encoder_hidden, log_inputs=False)
        if cfg.backward_encoder == "s4d":
            from xfads_cli.model.s4d import S4DBackwardEncoder

            self.backward = S4DBackwardEncoder(L, cfg.rank_local, cfg.rank_backward, cfg.encoder_hidden)
        else:
            self.backward = BackwardEncoder(L, cfg.rank_local, cfg.rank_backward, cfg.encoder_hidden)
        self.init_prior(L)
        if adaptation is not None:
            self.sessions = nn.ModuleList()
            for spec in sessions:
                self.add_session(spec)

    @classmethod
    def one_session(cls, cfg: ModelConfig, n_neurons: int, heldin, dt: float,
                    inputs: InputSpec | None = None) -> "XFADS":
        """The single-session model: heldin [neuron] bool, the neurons the encoder reads; inputs: the
        known task inputs u_t (model/task_inputs.py; None: the autonomous model), which enter the
        readout as D u_t and the dynamics as a drive B u_t (docs/model.md section 11)."""
        spec = {"n_neurons": n_neurons, "heldin": heldin, "dt": dt,
                "inputs": None if inputs is None else inputs.to_dict()}
        return cls(cfg, [spec])

    # -- sessions -----------------------------------------------------------------------------
    def add_session(self, spec: dict, y: torch.Tensor | None = None) -> int:
        """A new session with its own read-in, readout and likelihood (few-shot adaptation; meta model
        only); y [trial, time, neuron] initialises its readout (`init_from_data`). Returns its index."""
        if not self.embed_dim:
            raise ValueError("a model without a session embedding serves one session: its encoder reads "
                             "that session's neurons")
        ref = self.m0
        self.sessions.append(Session(self.cfg, spec, self.read_dims, read_in=True).to(device=ref.device, dtype=ref.dtype))
        index = len(self.sessions) - 1
        # a new session's embedding is the encoder's (or its refined mean), not placed by an offset
        self.sessions[index].embedding_offset.requires_grad_(False)
        if y is not None:
            self.init_from_data(y, index)
        return index

    @property
    def n_sessions(self) -> int:
        return len(self.sessions)

    @property
    def session_specs(self) -> list[dict]:
        """The plain data that rebuilds each session (with the config: the whole model's shape)."""
        return [s.spec() for s in self.sessions]

    @property
    def inputs(self) -> InputSpec | None:
        """The task inputs of the one-session model (what fit builds u_t from); a model with a session
        embedding has none."""
        return None if self.embed_dim else self.sessions[0].inputs

    def session(self, index: int | str = 0, trials=None) -> BoundSession:
        """The model serving one session: bound to it and, with an embedding, to the mean of q(e_i)
        pooled over trials() [trial, time, neuron_i] (not called without an embedding)."""
        if not self.embed_dim:
            return BoundSession(self, index)
        return BoundSession.pooled(self, index, trials())

    def session_index(self, session: int | str) -> int:
        if isinstance(session, str):
            names = [s.name for s in self.sessions]
            if session not in names:
                raise KeyError(f"unknown session {session!r}; sessions: {', '.join(names)}")
            return names.index(session)
        return int(session)

    def session_module(self, session: int | str) -> Session:
        """The per-session parameters of session index or name."""
        return self.sessions[self.session_index(session)]

    def n_inputs(self, session: int | str = 0) -> int:
        """How many neurons of the session the encoder (or the read-in) reads."""
        return self.session_module(session).n_in

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

    def init_from_data(self, counts: torch.Tensor, session: int | str = 0, u: torch.Tensor | None = None) -> None:
        """A session's readout (and forecast cap, input readout) from its training counts
        [trial, time, neuron_i] and task inputs u [trial, time, input] (Session.init_from_data)."""
        self.session_module(session).init_from_data(counts, u)

    # -- generative model ---------------------------------------------------------------------
    def eta(self, z: torch.Tensor, session: int | str = 0, u: torch.Tensor | None = None) -> torch.Tensor:
        """z: [..., latent] -> natural parameters [..., neuron_i] (u: task inputs [batch, time, input])."""
        return self.session_module(session).eta(z, u)

    def rates(self, z: torch.Tensor, session: int | str = 0, u: torch.Tensor | None = None) -> torch.Tensor:
        """Expected observation per bin: z [..., latent] -> [..., neuron_i]."""
        return self.session_module(session).rates(z, u)

    def transition(self, batch: int, e: torch.Tensor | None = None):
        """f(.; e) as the callable the filter wants, [sample, batch, latent] -> same; e: [embed] or
        [batch, embed] in the model's dtype (None, or a model without an embedding: f itself)."""
        if e is None or not self.embed_dim:
            return self.dynamics
        adapters = self.dynamics.adapters(e.expand(batch, -1))
        return lambda z: self.dynamics(z, adapters)

    # -- embedding (meta model) ---------------------------------------------------------------
    def embedding_factors(self, y: torch.Tensor, session: int | str) -> tuple[torch.Tensor, torch.Tensor]:
        """Each trial's Gaussian factor (mu_f, var_f) [batch, embed] before pooling with the prior."""
        x, observed = self.session_module(session).read(y)
        return self.embedder(x, observed)

    def embed(self, y: torch.Tensor, session: int | str):
        """y [batch, time, neuron_i] -> (mu_trial, var_trial) [batch, embed], each trial's q(e | y_j),
        and (mu, var) [embed], q(e_i) pooled over all given trials."""
        mu_f, var_f = self.embedding_factors(y, session)
        mu_trial, var_trial = pool_gaussians(mu_f[None], var_f[None])
        mu, var = pool_gaussians(mu_f, var_f)
        return self.offset_mean(session, mu_trial), var_trial, self.refined_mean(session, mu), var

    def offset_mean(self, session: int | str, mu: torch.Tensor) -> torch.Tensor:
        """The encoder's pooled mean mu [..., embed] plus the session's learned offset (training
        sessions: it starts where model/embedding_init.py places the session; 0 for adapted ones)."""
        offset = self.session_module(session).embedding_offset
        return mu if offset is None else mu + offset.to(mu)

    def refined_mean(self, session: int | str, mu: torch.Tensor) -> torch.Tensor:
        """The session's refined embedding mean if it has one (adapted sessions), else mu [embed] plus
        the session's offset (`offset_mean`)."""
        refined = self.session_module(session).embedding
        return self.offset_mean(session, mu) if refined is None else refined.to(mu)

    @torch.no_grad()
    def init_embeddings(self, trains: list[torch.Tensor]) -> None:
        """Each training session's embedding offset from the signature of its counts trains[i] [trial,
        time, neuron_i] compared across sessions (model/embedding_init.py), so that the sessions start
        apart, in an order that follows their dynamics where the data show it."""
        from xfads_cli.model.embedding_init import dynamics_signature, signature_ladder, starting_embeddings

        signatures = [dynamics_signature(y.detach().cpu().numpy()) for y in trains]
        start = torch.as_tensor(starting_embeddings(signatures, self.embed_dim))
        for s, e, y in zip(self.sessions, start, trains):
            if s.embedding_offset is not None:
                s.embedding_offset.copy_(e.to(s.embedding_offset))
                s.signature_ladder.copy_(torch.as_tensor(signature_ladder(y.detach().cpu().numpy())))

    @torch.no_grad()
    def signature_start(self, y: torch.Tensor) -> torch.Tensor | None:
        """Where a new session with shots y [trial, time, neuron] goes among the training sessions by its
        counts' signature (model/embedding_init.py place_by_signature): [embed], or None when the run
        does not record the training sessions' fitted embeddings and signatures."""
        from xfads_cli.model.embedding_init import dynamics_signature, ladder_row, place_by_signature

        known = [s for s in self.sessions if s.read_in is not None and bool((s.fitted_embedding[1] > 0).all())
                 and bool(s.signature_ladder.abs().sum() > 0)]
        if len(known) < 2:
            return None
        row = ladder_row(y.shape[0])
        signatures = torch.stack([s.signature_ladder[row] for s in known]).double().cpu().numpy()
        means = torch.stack([s.fitted_embedding[0] for s in known]).double().cpu().numpy()
        placed = place_by_signature(dynamics_signature(y.detach().cpu().numpy()), signatures, means)
        return torch.as_tensor(placed).to(self.m0)

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

    @torch.no_grad()
    def session_embedding(self, y: torch.Tensor, session: int | str, batch_size: int = 256):
        """q(e_i) pooled over all trials y [trial, time, neuron_i] (in batches to bound memory):
        returns per-trial (mu, var) [trial, embed] and pooled (mu, var) [embed]."""
        factors = [self.embedding_factors(y[i : i + batch_size], session) for i in range(0, y.shape[0], batch_size)]
        mu_f, var_f = torch.cat([f[0] for f in factors]), torch.cat([f[1] for f in factors])
        mu_t, var_t = pool_gaussians(mu_f[None], var_f[None])
        mu, var = pool_gaussians(mu_f, var_f)
        return self.offset_mean(session, mu_t), var_t, self.refined_mean(session, mu).detach(), var

    @torch.no_grad()
    def keep_fitted_embeddings(self, trains: list[torch.Tensor]) -> list[str]:
        """Store q(e_i) pooled over each read-in session's training trials trains[i] [trial, time,
        neuron_i] (None: left as it is) in its `fitted_embedding`; returns the state_dict keys set."""
        keys = []
        for i, y in enumerate(trains):
            s = self.sessions[i]
            if y is None or s.read_in is None or not y.shape[0]:
                continue
            _, _, mu, var = self.session_embedding(y, i)
            s.fitted_embedding.copy_(torch.stack([mu, var]))
            keys.append(f"sessions.{i}.fitted_embedding")
        return keys

    def fitted_embeddings(self) -> tuple[torch.Tensor, torch.Tensor] | None:
        """(means, variances) [session, embed] of the sessions whose fitted embedding is known (see
        `keep_fitted_embeddings`), or None when none is."""
        rows = [s.fitted_embedding for s in self.sessions if s.read_in is not None
                and bool((s.fitted_embedding[1] > 0).all())]
        if not rows:
            return None
        table = torch.stack(rows)
        return table[:, 0], table[:, 1]

    # -- inference ----------------------------------------------------------------------------
    def potentials(self, y: torch.Tensor, session: int | str = 0, input_weight: torch.Tensor | None = None,
                   u: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """The local potentials of y [batch, time, neuron_i]: a [batch, time, latent], A [..., rank_local].
        input_weight [batch, time, heldin]: coordinated dropout's; u: task inputs [batch, time, input]."""
        a, A, _ = self.local(*self.session_module(session).encoder_inputs(y, input_weight, u))
        return a, A

    def filter_session(self, y: torch.Tensor, session: int, e: torch.Tensor | None, *,
                       input_dropout: InputDropout | None = None, u: torch.Tensor | None = None,
                       **options) -> tuple[Posterior, list | None]:
        """The posterior of session `session` (an index) with f(.; e) (e [batch, embed] or [embed]; None
        without an embedding) and the adapters of e (None without); options: `filter_potentials`' keywords."""
        a, A = self.potentials(y, session, None if input_dropout is None else input_dropout.input_weight(y.dtype), u)
        adapters = None
        if self.embed_dim:
            adapters = self.dynamics.adapters(e.to(a.dtype).expand(y.shape[0], -1))
        f = self.dynamics if adapters is None else lambda z: self.dynamics(z, adapters)
        return self.filter_potentials(f, a, A, drive=self.sessions[session].drive(u), **options), adapters

    def posterior(self, y: torch.Tensor, session: int | str = 0, e: torch.Tensor | None = None, *,
                  input_dropout: InputDropout | None = None, u: torch.Tensor | None = None, **options) -> Posterior:
        """y: [batch, time, neuron_i] (all neurons; NaN = missing) -> Posterior over [batch, time, latent].
        e: [batch, embed] or [embed]; None infers q(e_i) from y itself (a draw per trial in training,
        the mean in eval; ignored without an embedding). u: the task inputs [batch, time, input].
        options (`filter_potentials`): mode, n_samples; drop_local: the fraction of bins whose local
        potential is dropped at random in training, so that the dynamics learn to predict (docs/model.md
        section 2); local_mask [batch, time] bool keeps alpha_t only where True (forecast contexts);
        backward_mask [batch] bool keeps a trial's backward potentials only where True (False: filtered
        causally within a smoother batch); noise: the filter's standard normals (`noise_shape(...)`) or
        a torch.Generator (None: the global RNG). input_dropout: coordinated dropout (training)."""
        index = self.session_index(session)
        if e is None and self.embed_dim:
            e, _, _ = self.embedding_sample(y, index)
        return self.filter_session(y, index, e, input_dropout=input_dropout, u=u, **options)[0]

    def elbo(self, y: torch.Tensor, session: int | str = 0, e: torch.Tensor | None = None, *,
             input_dropout: InputDropout | None = None, embed_noise: torch.Tensor | None = None,
             u: torch.Tensor | None = None, **options) -> Elbo:
        """Monte Carlo ELBO terms of a batch of one session, y [batch, time, neuron_i]. e: None draws it
        from q(e_i) (`embedding_sample`, embed_noise its standard normals); the rest as in `posterior`
        (the training loop passes per-trial draws, train/draws.py)."""
        index = self.session_index(session)
        e_given = e is not None
        if e is None and self.embed_dim:
            e, mu, var = self.embedding_sample(y, index, embed_noise)
        post, adapters = self.filter_session(y, index, e, input_dropout=input_dropout, u=u, **options)
        s = self.sessions[index]
        loglik = expected_loglik(s.likelihood, s.eta(post.samples, u), y, s.heldin, input_dropout)
        kl = post.kl.sum(-1)
        if not self.embed_dim:
            return Elbo(loglik - kl, loglik, kl, post)
        kl_embed = torch.zeros((), dtype=kl.dtype, device=kl.device) if e_given else kl_std_normal(mu, var)
        return Elbo(loglik - kl, loglik, kl, post, kl_embed, self.dynamics.frobenius(adapters).mean())

    def batch_loss(self, y: torch.Tensor, session: int | str = 0, *, share: float = 1.0, **draws) -> torch.Tensor:
        """The training objective of a batch of one session, y [batch, time, neuron_i] (the class
        docstring): -sum_j elbo_j plus `share` of the per-session terms, which enter once per pass
        (docs/model.md sections 6, 11); share: the fraction of that pass these trials are. draws:
        `elbo`'s keyword arguments."""
        t = self.elbo(y, session, **draws)
        penalty = self.session_module(session).input_prior()
        if self.embed_dim:
            penalty = t.kl_embed + self.cfg.frobenius_weight * t.frobenius + penalty
        return -t.elbo.sum() + share * penalty

    # -- forecasting --------------------------------------------------------------------------
    def rollout(self, z: torch.Tensor, horizon: int, *, session: int | str = 0, e: torch.Tensor | None = None,
                generator: torch.Generator | None = None, u: torch.Tensor | None = None) -> torch.Tensor:
        """Sample z_{t+1:t+H} from f(.; e). z [sample, batch, latent], e [batch, embed] (or None)
        -> [sample, batch, horizon, latent]; u: the horizon's task inputs [batch, horizon, input]."""
        f = self.transition(z.shape[1], None if e is None else e.to(z.dtype))
        return self.rollout_through(f, z, horizon, generator, self.session_module(session).drive(u))

    @torch.no_grad()
    def forecast(self, y_context: torch.Tensor, horizon: int, *, session: int | str = 0,
                 e: torch.Tensor | None = None, n_samples: int | None = None, mode: str = "filter",
                 generator: torch.Generator | None = None, u: torch.Tensor | None = None) -> Forecast:
        """Filter the context y_{1:t0} [batch, t0, neuron_i], then roll the samples of q(z_t0) forward
        (the causal filter by default: the posterior at t0 then depends on the context only); rates are
        capped at the session's rate_ceiling. e: [batch, embed] or [embed]; None: the mean of q(e_i)
        pooled over the context trials. generator: for every draw (None: the global RNG). u: task inputs
        [batch, t0 + horizon, input] of the context and the horizon (model/task_inputs.py)."""
        index = self.session_index(session)
        if e is None and self.embed_dim:
            e = self.embed(y_context, index)[2]
        if e is not None:
            e = e.expand(y_context.shape[0], -1)
        t0 = y_context.shape[1]
        u_context, u_ahead = (None, None) if u is None else (u[:, :t0], u[:, t0 : t0 + horizon])
        post = self.filter_session(y_context, index, e, mode=mode, n_samples=n_samples, noise=generator,
                                   u=u_context)[0]
        z = self.rollout(post.samples[:, :, -1], horizon, session=index, e=e, generator=generator, u=u_ahead)
        s = self.sessions[index]
        return Forecast(z, torch.minimum(s.rates(z, u_ahead), s.rate_ceiling))
