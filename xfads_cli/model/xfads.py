"""The XFADS model: generative model + amortised low-rank posterior (docs/model.md sections 1-5).

    z_1 ~ N(m0, diag(q0)),  z_t = f(z_{t-1}) + e_t,  e_t ~ N(0, diag(q))
    y_t | z_t ~ p(y_t | C z_t[:L_read] + d)
    q(z_{1:T}) = filter of the potentials alpha_t (local encoder on held-in y_t) and
                 beta_t (backward encoder, y_{t+1:T}) through f            (model/filtering.py)
    ELBO = sum_t E_q log p(y_t | z_t) - sum_t KL_t

Learned state lives here; inference is the pure `low_rank_filter`. The encoder reads only the held-in
neurons; the likelihood covers every neuron, so held-out neurons are predicted from the latents.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

from xfads_cli.config import ModelConfig
from xfads_cli.model.base import Elbo, Forecast, Noise, StateSpaceModel, expected_loglik
from xfads_cli.model.dynamics import build_dynamics
from xfads_cli.model.encoders import BackwardEncoder, InputDropout, LocalEncoder
from xfads_cli.model.filtering import Posterior
from xfads_cli.model.likelihoods import build_likelihood
from xfads_cli.model.task_inputs import InputSpec

__all__ = ["XFADS", "Elbo", "Forecast", "pca_readout"]


class XFADS(StateSpaceModel):
    """One session; implements `SessionModel` itself (`session(0)` is the model)."""

    embed_dim = 0  # no session embedding: the one-session case of MetaXFADS
    n_sessions = 1

    def __init__(self, cfg: ModelConfig, n_neurons: int, heldin: torch.Tensor, dt: float,
                 inputs: InputSpec | None = None):
        """heldin: [neuron] bool, the neurons the encoder may read. inputs: the known task inputs u_t
        (model/task_inputs.py; None: the autonomous model), which enter the readout as a per-neuron
        offset D u_t and the dynamics as a drive B u_t (docs/model.md section 11)."""
        super().__init__()
        self.inputs = inputs
        self.cfg = cfg
        L = cfg.latent_dim
        self.read_dims = cfg.read_dims or L
        self.register_buffer("heldin", torch.as_tensor(heldin, dtype=torch.bool).clone())
        n_in = int(self.heldin.sum())
        self.dynamics = build_dynamics(cfg.dynamics, L, cfg.dynamics_hidden, cfg.dynamics_layers)
        self.likelihood = build_likelihood(cfg.likelihood, n_neurons, dt, cfg.link)
        self.readout = nn.Linear(self.read_dims, n_neurons)
        nn.init.normal_(self.readout.weight, std=1.0 / self.read_dims**0.5)
        self.local = LocalEncoder(n_in, L, cfg.rank_local, cfg.encoder_hidden, log_inputs=cfg.likelihood == "poisson",
                                  n_extra=n_in if inputs is not None else 0)
        if inputs is not None:
            # Both start at 0 (the autonomous model); init_from_data fits D to the training trials.
            self.input_readout = nn.Linear(inputs.dim, n_neurons, bias=False)
            self.input_drive = nn.Linear(inputs.dim, L, bias=False)
            nn.init.zeros_(self.input_readout.weight)
            nn.init.zeros_(self.input_drive.weight)
            # the prior precision of their entries (fit_input_readout chooses it from the data)
            self.register_buffer("input_precision", torch.ones(()))
        self.backward = BackwardEncoder(L, cfg.rank_local, cfg.rank_backward, cfg.encoder_hidden)
        self.init_prior(L)
        # Largest expected count per bin a forecast may give each neuron (set from the training counts;
        # inf: no cap). Why: a rollout that leaves the region the dynamics were trained on can grow
        # without bound, and under the exp link one such sample among 20 made a trial's mean forecast
        # 1e9 spikes per bin (fp-bps -1.3e9 on a real recording, benchmarks/README.md).
        self.register_buffer("rate_ceiling", torch.full((n_neurons,), float("inf")))

    # -- sessions (the interface MetaXFADS shares) ----------------------------------------------
    def session(self, index: int = 0, trials=None) -> "XFADS":
        """The model serving session `index`: XFADS has one session, itself; `trials` (a callable giving
        the session's counts, which the meta model pools its embedding over) is not needed."""
        return self

    def n_inputs(self, session: int = 0) -> int:
        """How many neurons the encoder reads."""
        return int(self.heldin.sum())

    # -- generative model ---------------------------------------------------------------------
    def eta(self, z: torch.Tensor) -> torch.Tensor:
        """z: [..., latent] -> natural parameters [..., neuron]."""
        return self.readout(z[..., : self.read_dims])

    def rates(self, z: torch.Tensor, u: torch.Tensor | None = None) -> torch.Tensor:
        """Expected observation per bin for latents z: [sample, batch, time, latent] (or any [..., latent]
        without inputs) -> [..., neuron]; u: the bins' task inputs [batch, time, input]."""
        return self.likelihood.mean(self.eta(z) + self.offset(u))

    def offset(self, u: torch.Tensor | None) -> torch.Tensor | float:
        """The task inputs' readout term D u_t: u [batch, time, input] -> [batch, time, neuron] (0 without)."""
        if u is None or self.inputs is None:
            return 0.0
        return self.input_readout(u.to(self.input_readout.weight.dtype))

    def drive(self, u: torch.Tensor | None) -> torch.Tensor | None:
        """The task inputs' drive of the dynamics B u_t: [batch, time, input] -> [batch, time, latent]."""
        if u is None or self.inputs is None:
            return None
        return self.input_drive(u.to(self.input_drive.weight.dtype))

    def input_prior(self) -> torch.Tensor | float:
        """-log N(D; 0, I / p) and -log N(B; 0, I / p) up to constants, p = input_precision (chosen with
        D before training): the prior on the input weights, once per pass over the training trials."""
        if self.inputs is None:
            return 0.0
        return 0.5 * self.input_precision * (self.input_readout.weight.square().sum()
                                             + self.input_drive.weight.square().sum())

    @torch.no_grad()
    def init_from_data(self, counts: torch.Tensor, session: int = 0, u: torch.Tensor | None = None) -> None:
        """Readout bias from each neuron's mean count per bin (docs/model.md section 1); with cfg.init 'pca'
        also its weights (`pca_readout`); the forecast's rate ceiling; with task inputs u [trial, time,
        input], the input readout D and the bias fitted to the counts with z = 0 (`fit_input_readout`).
        counts: [trial, time, neuron]; session: the one session XFADS has (the signature MetaXFADS shares)."""
        mean = torch.nan_to_num(torch.nanmean(counts.reshape(-1, counts.shape[-1]), dim=0), nan=0.0)
        self.readout.bias.copy_(self.likelihood.init_bias(mean))
        if self.cfg.likelihood == "poisson":  # twice the most spikes seen in one bin, plus one
            top = torch.nan_to_num(counts, nan=0.0).reshape(-1, counts.shape[-1]).amax(0)
            self.rate_ceiling.copy_(2 * top + 1)
        if self.cfg.init == "pca":
            self.readout.weight.copy_(pca_readout(counts, mean, self.likelihood.init_bias, self.read_dims,
                                                  self.readout.weight))
        if self.inputs is not None and u is not None:
            fit_input_readout(self, counts, u)

    # -- inference ----------------------------------------------------------------------------
    def posterior(self, y: torch.Tensor, *, mode: str | None = None, n_samples: int | None = None,
                  drop_local: float = 0.0, local_mask: torch.Tensor | None = None,
                  backward_mask: torch.Tensor | None = None, input_dropout: InputDropout | None = None,
                  noise: Noise = None, u: torch.Tensor | None = None) -> Posterior:
        """y: [batch, time, neuron] (all neurons; NaN = missing) -> Posterior over [batch, time, latent].
        u: the task inputs [batch, time, input] (model/task_inputs.py), when the model has inputs.

        drop_local: during training, the fraction of bins whose local potential is dropped at random so
        that the dynamics learn to predict (docs/model.md section 2). local_mask [batch, time] bool keeps
        alpha_t only where True (used for forecasting contexts). backward_mask [batch] bool keeps the
        backward potentials of a trial only where True (False: that trial is filtered causally, as in
        mode "filter", within a smoother batch). noise: the filter's standard normals
        (`noise_shape(...)`) or a torch.Generator; None draws from the global RNG.
        """
        a, A = self.potentials(y, None if input_dropout is None else input_dropout.input_weight(y.dtype), u)
        return self.filter_potentials(self.dynamics, a, A, mode=mode, n_samples=n_samples, drop_local=drop_local,
                                      local_mask=local_mask, backward_mask=backward_mask, noise=noise,
                                      drive=self.drive(u))

    def potentials(self, y: torch.Tensor, input_weight: torch.Tensor | None = None,
                   u: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """The local potentials of y [batch, time, neuron]: a [batch, time, latent], A [..., rank_local].
        With task inputs the encoder also reads the held-in neurons' input offset D u_t."""
        extra = None
        if self.inputs is not None:
            u = torch.zeros(*y.shape[:2], self.inputs.dim, dtype=y.dtype, device=y.device) if u is None else u
            extra = self.offset(u)[..., self.heldin]
        a, A, _ = self.local(y[..., self.heldin], input_weight, extra)
        return a, A

    def transition(self, batch: int):
        """f, the prior dynamics (the same for every trial of the batch)."""
        return self.dynamics

    def elbo(self, y: torch.Tensor, *, mode: str | None = None, n_samples: int | None = None,
             drop_local: float = 0.0, local_mask: torch.Tensor | None = None,
             backward_mask: torch.Tensor | None = None, input_dropout: InputDropout | None = None,
             noise: Noise = None, u: torch.Tensor | None = None) -> Elbo:
        """Monte Carlo ELBO per trial. y: [batch, time, neuron]. local_mask, backward_mask, input_dropout,
        noise, u: as in `posterior` (the training loop passes per-trial draws, train/draws.py)."""
        post = self.posterior(y, mode=mode, n_samples=n_samples, drop_local=drop_local, local_mask=local_mask,
                              backward_mask=backward_mask, input_dropout=input_dropout, noise=noise, u=u)
        eta = self.eta(post.samples) + self.offset(u)
        loglik = expected_loglik(self.likelihood, eta, y, self.heldin, input_dropout)
        kl = post.kl.sum(-1)
        return Elbo(loglik - kl, loglik, kl, post)

    def batch_loss(self, y: torch.Tensor, session: int = 0, *, share: float = 1.0, embed_noise: None = None,
                   **draws) -> torch.Tensor:
        """-sum of the ELBOs of a batch of trials y [batch, time, neuron] (the objective both model kinds
        train with, train/loop.py). draws: `elbo`'s keyword arguments; share and embed_noise are the meta
        model's (XFADS has no per-session term; share weighs the task inputs' prior, counted once per
        pass over the training trials)."""
        return -self.elbo(y, **draws).elbo.sum() + share * self.input_prior()

    # -- forecasting --------------------------------------------------------------------------
    def rollout(self, z: torch.Tensor, horizon: int, generator: torch.Generator | None = None,
                u: torch.Tensor | None = None) -> torch.Tensor:
        """Sample z_{t+1:t+H} from the prior dynamics. z: [sample, batch, latent] -> [sample, batch, horizon, latent];
        u: the horizon's task inputs [batch, horizon, input]."""
        return self.rollout_through(self.dynamics, z, horizon, generator, self.drive(u))

    @torch.no_grad()
    def forecast(self, y_context: torch.Tensor, horizon: int, *, n_samples: int | None = None,
                 mode: str = "filter", generator: torch.Generator | None = None,
                 u: torch.Tensor | None = None) -> Forecast:
        """Filter the context y_{1:t0} [batch, t0, neuron], then roll the samples of q(z_t0) forward.
        The causal filter is the default: the posterior at t0 then depends on the context only.
        generator: for every draw (None: the global RNG). u: task inputs [batch, t0 + horizon, input] of
        the context and the horizon (what is known in advance: model/task_inputs.py)."""
        t0 = y_context.shape[1]
        u_context, u_ahead = (None, None) if u is None else (u[:, :t0], u[:, t0 : t0 + horizon])
        post = self.posterior(y_context, mode=mode, n_samples=n_samples, noise=generator, u=u_context)
        z = self.rollout(post.samples[:, :, -1], horizon, generator, u_ahead)
        return Forecast(z, torch.minimum(self.rates(z, u_ahead), self.rate_ceiling))

    def load_state_dict(self, state_dict, *args, **kwargs):
        if "rate_ceiling" not in state_dict:  # a checkpoint from before the ceiling: no cap, as then
            state_dict = {**state_dict, "rate_ceiling": torch.full_like(self.rate_ceiling, float("inf"))}
        return super().load_state_dict(state_dict, *args, **kwargs)


def pca_readout(counts: torch.Tensor, mean: torch.Tensor, inverse_link, k: int, fallback: torch.Tensor,
                sigma_bins: float = 2.0) -> torch.Tensor:
    """Readout weights [neuron, k] from the training counts [trial, time, neuron]: the top k principal
    axes of the counts smoothed in time (Gaussian, sigma_bins) and mapped through the inverse link
    (log rate for Poisson), each scaled by its component's standard deviation, so that unit-variance
    latents reproduce the smoothed counts' main modes. Columns beyond the data's rank keep `fallback`'s.
    Why: the encoder and dynamics then start from a readout that already spans the population's
    main co-fluctuations instead of a random one."""
    y = torch.where(torch.isfinite(counts), counts, mean)
    half = int(3 * sigma_bins)
    t = torch.arange(-half, half + 1, dtype=y.dtype, device=y.device)
    kernel = torch.exp(-0.5 * (t / sigma_bins) ** 2)
    n, T, N = y.shape
    flat = y.permute(0, 2, 1).reshape(n * N, 1, T)
    ones = torch.ones(1, 1, T, dtype=y.dtype, device=y.device)
    w = kernel.view(1, 1, -1)
    smooth = F.conv1d(flat, w, padding=half) / F.conv1d(ones, w, padding=half)  # edge-corrected
    smooth = smooth.reshape(n, N, T).permute(0, 2, 1).reshape(-1, N)
    # a floor of a tenth of the mean: log(0) of a silent stretch would otherwise dominate the variance
    x = inverse_link(torch.maximum(smooth, 0.1 * mean.clamp(min=1e-6)))
    x = x - x.mean(0)
    _, S, Vh = torch.linalg.svd(x, full_matrices=False)
    out = fallback.detach().clone()
    r = min(k, int((S > 1e-6 * S[0]).sum()) if S.numel() else 0)
    out[:, :r] = Vh[:r].T * (S[:r] / (x.shape[0] - 1) ** 0.5)
    return out


INIT_TRIALS = 256  # at most this many training trials fit the input readout before training
INIT_STEPS = 100
# Candidate precisions of the prior N(0, 1 / precision) on the input readout's entries (in log-rate),
# chosen on held-out training trials: a recording with few trials per condition needs a stronger pull
# of the condition terms towards the shared time course than one with many.
INPUT_PRECISIONS = (0.1, 1.0, 10.0, 100.0, 1000.0)
HOLDOUT_EVERY = 5  # every 5th training trial scores the candidates


def fit_input_readout(model: XFADS, counts: torch.Tensor, u: torch.Tensor) -> None:
    """The input readout D and the bias d of `model` fitted to counts [trial, time, neuron] with the
    latents at 0: eta_t = d + D u_t (u [trial, time, input]), maximum a posteriori under the model's
    likelihood and a prior N(0, 1 / precision) on D's entries, the precision chosen among
    INPUT_PRECISIONS by the likelihood of held-out training trials (and kept in model.input_precision,
    the prior training uses). For Poisson counts with a clock and condition inputs this is a smooth
    per-condition trial average in log-rate: the model starts from what the trial average knows, and
    its latents learn how single trials depart from it. NaN bins are ignored."""
    step = max(1, counts.shape[0] // INIT_TRIALS)
    y, x = counts[::step], u[::step].to(counts.dtype)
    weight = counts.shape[0] / y.shape[0]  # the subsample stands for all training trials
    held = torch.arange(y.shape[0], device=y.device) % HOLDOUT_EVERY == HOLDOUT_EVERY - 1
    precision = INPUT_PRECISIONS[1]
    if held.sum() >= 2:
        scores = []
        for candidate in INPUT_PRECISIONS:
            D, d = _map_readout(model, y[~held], x[~held], candidate, weight)
            scores.append(float(_loglik(model, y[held], x[held], D, d)))
        finite = [(s, p) for s, p in zip(scores, INPUT_PRECISIONS) if math.isfinite(s)]
        precision = max(finite)[1] if finite else precision
    D, d = _map_readout(model, y, x, precision, weight)
    with torch.no_grad():
        if torch.isfinite(D).all() and torch.isfinite(d).all():
            model.input_readout.weight.copy_(D)
            model.readout.bias.copy_(d)
            model.input_precision.fill_(precision)


def _loglik(model: XFADS, y: torch.Tensor, x: torch.Tensor, D: torch.Tensor, d: torch.Tensor) -> torch.Tensor:
    """sum of log p(y | eta = d + D u) over the observed entries of y [trial, time, neuron]."""
    observed = torch.isfinite(y)
    lp = model.likelihood.log_prob((x @ D.T + d)[None], torch.where(observed, y, torch.zeros_like(y)))[0]
    return (lp * observed).sum()


def _map_readout(model: XFADS, y: torch.Tensor, x: torch.Tensor, precision: float, weight: float
                 ) -> tuple[torch.Tensor, torch.Tensor]:
    """(D, d) maximising weight * loglik(y | d + D u) - precision / 2 |D|^2 (L-BFGS from the model's own)."""
    D = model.input_readout.weight.detach().clone().requires_grad_(True)
    d = model.readout.bias.detach().clone().requires_grad_(True)
    opt = torch.optim.LBFGS([D, d], lr=1.0, max_iter=INIT_STEPS, line_search_fn="strong_wolfe")
    scale = float(torch.isfinite(y).sum()) * weight  # a loss of order 1: L-BFGS's tolerances are absolute

    def closure():
        opt.zero_grad()
        loss = (-weight * _loglik(model, y, x, D, d) + 0.5 * precision * D.square().sum()) / scale
        loss.backward()
        return loss

    with torch.enable_grad():
        opt.step(closure)
    return D.detach(), d.detach()
