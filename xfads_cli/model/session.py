"""A session's own part of the model (`Session`) and the model bound to one session (`BoundSession`).

Every model (model/xfads.py XFADS) holds one `Session` per recording: the read-in, readout, likelihood,
forecast cap and task-input terms of that session's neurons. Its shared parts (prior, dynamics,
encoders, embedding encoder) see a session only through these. `BoundSession` serves one session with a
fixed embedding to smoothing, forecasting, evaluation and streaming (model/base.py `SessionModel`).
"""

from __future__ import annotations

from typing import Iterator

import torch
from torch import nn

from xfads_cli.config import ModelConfig
from xfads_cli.model.base import Elbo, Forecast
from xfads_cli.model.embedding_init import LADDER, SIGNATURE_SIZE
from xfads_cli.model.filtering import Posterior
from xfads_cli.model.likelihoods import build_likelihood
from xfads_cli.model.readout_init import fit_input_readout, pca_readout
from xfads_cli.model.task_inputs import InputSpec


class Session(nn.Module):
    """The parameters of session i: N_i neurons, N_in,i of them held in (the encoder reads them);
    y_t [batch, time, neuron_i], z [..., latent], u [batch, time, input] the known task inputs.

        x_t   = y_t[heldin_i]                       no read-in: the shared encoder reads the counts
                                                    (the one-session model)
        x_t   = Omega_i log1p(y_t[heldin_i]) + o_i  read-in [read_in, N_in,i] (the meta model; Poisson
                                                    data, other likelihoods read y_t itself)
        eta_t = C_i z_t[:L_read] + d_i + D_i u_t    readout [neuron_i, L_read]; D_i: task inputs
        B_i u_t                                     the task inputs' drive of the shared dynamics
        y_t | z_t ~ p_i(y_t | eta_t)                likelihood (its own parameters, e.g. Gaussian R_i)
        forecast rate <= rate_ceiling_i [neuron_i]  (inf: no cap; set from the training counts for
                                                    Poisson sessions without a read-in)
        e_i                                         a refined embedding (adapted sessions): the mean
                                                    of q(e_i) as a parameter [embed]
        fitted_embedding                            read-in sessions: (mean, var) of q(e_i) over the
                                                    training trials at the end of the fit [2, embed]
                                                    (zeros: unknown)
        o_e,i                                       read-in sessions: an offset added to the encoder's
                                                    pooled mean of q(e_i) (0 for adapted sessions)

    D_i, B_i exist only with task inputs (model/task_inputs.py; one-session model only), e_i only for
    a spec with refine_embedding.
    """

    def __init__(self, cfg: ModelConfig, spec: dict, read_dims: int, *, read_in: bool):
        """spec: plain data (n_neurons, dt, optional heldin, name, inputs (InputSpec.to_dict()),
        refine_embedding). read_in: whether the session has its own read-in Omega_i."""
        super().__init__()
        self.name = str(spec.get("name", ""))
        self.n_neurons = int(spec["n_neurons"])
        self.dt = float(spec["dt"])
        heldin = spec.get("heldin")
        heldin = torch.ones(self.n_neurons, dtype=torch.bool) if heldin is None else torch.as_tensor(heldin, dtype=torch.bool)
        if heldin.shape != (self.n_neurons,) or not bool(heldin.any()):
            raise ValueError(f"session {self.name!r}: heldin must be {self.n_neurons} booleans with at least one True")
        self.register_buffer("heldin", heldin.clone())
        self.read_dims = read_dims
        self.poisson = cfg.likelihood == "poisson"
        # Only a session without a read-in sets its forecast cap from data: capping the meta model's
        # forecasts would change the numbers its fits have always given (tests/test_regression.py).
        self.caps_forecasts = self.poisson and not read_in
        self.pca_init = cfg.init == "pca"
        self.inputs = InputSpec.from_dict(spec.get("inputs"))
        if self.inputs is not None and read_in:
            raise ValueError("task inputs need the one-session model (its encoder reads the session's neurons)")
        self.read_in = nn.Linear(self.n_in, cfg.read_in_dim) if read_in else None
        self.readout = nn.Linear(read_dims, self.n_neurons)
        nn.init.normal_(self.readout.weight, std=1.0 / read_dims**0.5)
        self.likelihood = build_likelihood(cfg.likelihood, self.n_neurons, self.dt, cfg.link)
        # A refined embedding (few-shot adaptation) is fitted by gradient with the session's other
        # parameters instead of the frozen encoder's pooled mean (docs/model.md section 6); it starts at
        # the prior mean, e = 0 (the shared dynamics).
        if spec.get("refine_embedding"):
            self.embedding = nn.Parameter(torch.zeros(cfg.embed_dim))
        else:
            self.register_parameter("embedding", None)
        # Largest expected count per bin a forecast may give each neuron (set from the training counts;
        # inf: no cap). Why: a rollout that leaves the region the dynamics were trained on can grow
        # without bound, and under the exp link one such sample among 20 made a trial's mean forecast
        # 1e9 spikes per bin (fp-bps -1.3e9 on a real recording, benchmarks/README.md).
        self.register_buffer("rate_ceiling", torch.full((self.n_neurons,), float("inf")))
        if read_in:
            # q(e_i) pooled over the session's training trials when the fit ended, rows (mean, var)
            # [2, embed]; zeros (no variance: unknown) until then and for adapted sessions. What `adapt`
            # places a new session among and `embed` measures the embedding against (docs/model.md section 6).
            self.register_buffer("fitted_embedding", torch.zeros(2, cfg.embed_dim))
            # the signature of the session's training counts at each shot count of LADDER
            # (model/embedding_init.py); zeros (unknown) for adapted sessions and runs from before it
            self.register_buffer("signature_ladder", torch.zeros(len(LADDER), SIGNATURE_SIZE))
            # added to the encoder's pooled mean of q(e_i) (model/xfads.py offset_mean); a training
            # session's starts where model/embedding_init.py places it
            self.embedding_offset = nn.Parameter(torch.zeros(cfg.embed_dim))
        else:
            self.register_parameter("embedding_offset", None)

    def add_inputs(self, latent_dim: int) -> None:
        """The task inputs' readout D [neuron, input] and drive B [latent, input], both 0 at first (the
        autonomous model; init_from_data fits D to the training trials). A step of its own because the
        model makes them after its encoder: the random draws of every seed stay those of earlier versions."""
        self.input_readout = nn.Linear(self.inputs.dim, self.n_neurons, bias=False)
        self.input_drive = nn.Linear(self.inputs.dim, latent_dim, bias=False)
        nn.init.zeros_(self.input_readout.weight)
        nn.init.zeros_(self.input_drive.weight)
        # the prior precision of their entries (fit_input_readout chooses it from the data)
        self.register_buffer("input_precision", torch.ones(()))

    @property
    def n_in(self) -> int:
        """How many neurons the encoder (or the read-in) reads."""
        return int(self.heldin.sum())

    def spec(self) -> dict:
        """The plain data that rebuilds this session (model/spec.py keeps richer entries in checkpoints)."""
        out = {"name": self.name, "n_neurons": self.n_neurons, "heldin": [bool(v) for v in self.heldin.tolist()],
               "dt": self.dt}
        if self.inputs is not None:
            out["inputs"] = self.inputs.to_dict()
        return out | ({"refine_embedding": True} if self.embedding is not None else {})

    # -- what the shared encoders read ---------------------------------------------------------
    def read(self, y: torch.Tensor, input_weight: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Read-in sessions: y [batch, time, neuron_i] -> x [batch, time, read_in] (missing inputs
        zero-filled) and observed [batch, time] (every held-in neuron finite). input_weight
        [batch, time, heldin] multiplies the (log) inputs (coordinated dropout)."""
        y = y[..., self.heldin]
        finite = torch.isfinite(y)
        x = torch.where(finite, y, torch.zeros_like(y))
        if self.poisson:
            x = torch.log1p(x.clamp(min=0))
        if input_weight is not None:
            x = x * input_weight
        return self.read_in(x), finite.all(-1)

    def encoder_inputs(self, y: torch.Tensor, input_weight: torch.Tensor | None = None, u: torch.Tensor | None = None
                       ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        """The arguments of the shared LocalEncoder for y [batch, time, neuron_i]: (inputs, input_weight,
        extra). Without a read-in, the held-in counts (and, with task inputs, their offset D u_t, so the
        encoder can tell a trial's departure from the task's mean); with one, the read-in sequence."""
        if self.read_in is not None:
            x, observed = self.read(y, input_weight)
            # NaN marks unobserved bins so the local encoder gives them a zero potential, as without a read-in.
            return torch.where(observed[..., None], x, torch.full_like(x, float("nan"))), None, None
        extra = None
        if self.inputs is not None:
            u = torch.zeros(*y.shape[:2], self.inputs.dim, dtype=y.dtype, device=y.device) if u is None else u
            extra = self.offset(u)[..., self.heldin]
        return y[..., self.heldin], input_weight, extra

    # -- observation model ---------------------------------------------------------------------
    def eta(self, z: torch.Tensor, u: torch.Tensor | None = None) -> torch.Tensor:
        """Natural parameters: z [sample, batch, time, latent] (or any [..., latent] without u)
        -> [..., neuron_i]; u: the bins' task inputs [batch, time, input]."""
        eta = self.readout(z[..., : self.read_dims])
        if u is not None and self.inputs is not None:
            eta = eta + self.offset(u)
        return eta

    def rates(self, z: torch.Tensor, u: torch.Tensor | None = None) -> torch.Tensor:
        """Expected observation per bin: z [..., latent] -> [..., neuron_i] (u as in `eta`)."""
        return self.likelihood.mean(self.eta(z, u))

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
    def init_from_data(self, counts: torch.Tensor, u: torch.Tensor | None = None) -> None:
        """Readout bias from each neuron's mean count per bin (docs/model.md section 1); with cfg.init
        'pca' also its weights (`pca_readout`); the forecast's rate ceiling (`caps_forecasts`); with task
        inputs u [trial, time, input], the input readout D and the bias fitted to the counts with z = 0
        (`fit_input_readout`). counts: [trial, time, neuron_i] (NaN = missing)."""
        counts = counts.to(self.readout.bias.dtype)
        mean = torch.nan_to_num(torch.nanmean(counts.reshape(-1, counts.shape[-1]), dim=0), nan=0.0)
        self.readout.bias.copy_(self.likelihood.init_bias(mean))
        if self.caps_forecasts:  # twice the most spikes seen in one bin, plus one
            top = torch.nan_to_num(counts, nan=0.0).reshape(-1, counts.shape[-1]).amax(0)
            self.rate_ceiling.copy_(2 * top + 1)
        if self.pca_init:
            self.readout.weight.copy_(pca_readout(counts, mean, self.likelihood.init_bias, self.read_dims,
                                                  self.readout.weight))
        if self.inputs is not None and u is not None:
            fit_input_readout(self, counts, u)


class BoundSession:
    """The model serving session i with a fixed embedding e ([embed]: the mean of q(e_i); None for a
    model without an embedding): the `SessionModel` (model/base.py) that smoothing, forecasting,
    evaluation and model/streaming.py use. y [batch, time, neuron_i]; z [..., latent]. It holds no
    state of its own but the session index and e: its parameters are the model's."""

    def __init__(self, model, session: int | str, e: torch.Tensor | None = None):
        self.model, self.index, self.e = model, model.session_index(session), e
        self.cfg = model.cfg
        part = model.sessions[self.index]
        self.heldin, self.inputs = part.heldin, part.inputs

    @classmethod
    def pooled(cls, model, session: int | str, y: torch.Tensor) -> "BoundSession":
        """The session whose e is the mean of q(e_i) pooled over trials y [trial, time, neuron_i]."""
        return cls(model, session, model.session_embedding(y, session)[2])

    def _e(self, y: torch.Tensor) -> torch.Tensor | None:
        return None if self.e is None else self.e.to(y).expand(y.shape[0], -1)

    def noise_shape(self, batch: int, time: int, *, mode: str | None = None, n_samples: int | None = None) -> tuple:
        return self.model.noise_shape(batch, time, mode=mode, n_samples=n_samples)

    def posterior(self, y: torch.Tensor, **options) -> Posterior:
        return self.model.posterior(y, self.index, self._e(y), **options)

    def elbo(self, y: torch.Tensor, **options) -> Elbo:
        return self.model.elbo(y, self.index, self._e(y), **options)

    def rates(self, z: torch.Tensor, u: torch.Tensor | None = None) -> torch.Tensor:
        return self.model.rates(z, self.index, u)

    def forecast(self, y_context: torch.Tensor, horizon: int, **options) -> Forecast:
        return self.model.forecast(y_context, horizon, session=self.index, e=self._e(y_context), **options)

    # the pieces model/streaming.py filters a long recording with
    def potentials(self, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.model.potentials(y, self.index)

    def transition(self, batch: int):
        return self.model.transition(batch, None if self.e is None else self.e.to(self.model.m0))

    @property
    def backward(self) -> nn.Module:
        return self.model.backward

    @property
    def m0(self) -> torch.Tensor:
        return self.model.m0

    def q0(self) -> torch.Tensor:
        return self.model.q0()

    def q(self) -> torch.Tensor:
        return self.model.q()

    # what code holding only the session switches or inspects (scoring/selection.py: eval mode, device)
    @property
    def training(self) -> bool:
        return self.model.training

    def train(self, mode: bool = True) -> "BoundSession":
        self.model.train(mode)
        return self

    def eval(self) -> "BoundSession":
        return self.train(False)

    def parameters(self) -> Iterator[nn.Parameter]:
        return self.model.parameters()
