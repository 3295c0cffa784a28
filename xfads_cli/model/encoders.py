"""Amortised encoders producing Gaussian potentials in information form (docs/model.md section 2).

local:    y_t -> alpha_t = (a_t, A_t A_t^T),   a_t: [batch, time, latent], A_t: [batch, time, latent, rank_local]
backward: GRU over reversed time on [a_t, vec(A_t)] -> beta_t = (b_t, B_t B_t^T) that depends on
          y_{t+1:T} only (shifted one step; beta_T = 0).
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import nn


class InputDropout(NamedTuple):
    """Coordinated dropout of one training batch (train.input_dropout): the held-in entries hidden from
    the encoder, `dropped` [batch, time, neuron_in] bool, each with probability `rate`. The encoder reads
    the others scaled by 1 / (1 - rate); the likelihood's gradient comes from the hidden entries only,
    scaled by 1 / rate (its value is unchanged). Why: an entry the encoder read can be "predicted" by
    copying its noise into the latents; one it did not read can only be predicted from the population's
    shared structure, so the posterior stops following the spikes' noise as training goes on."""

    dropped: torch.Tensor
    rate: float

    def input_weight(self, dtype: torch.dtype) -> torch.Tensor:
        return (~self.dropped).to(dtype) / (1.0 - self.rate)


def encoder_input(y: torch.Tensor, log_inputs: bool, input_weight: torch.Tensor | None = None,
                  extra: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """What an encoder reads of y [batch, time, neuron]: missing entries zeroed, log1p of counts (if
    log_inputs), times coordinated dropout's input_weight, extra [batch, time, n_extra] appended; and
    observed [batch, time] (every neuron finite)."""
    observed = torch.isfinite(y).all(dim=-1)
    x = torch.where(torch.isfinite(y), y, torch.zeros_like(y))
    if log_inputs:
        x = torch.log1p(x.clamp(min=0))
    if input_weight is not None:
        x = x * input_weight
    if extra is not None:
        x = torch.cat([x, extra], dim=-1)
    return x, observed


class LocalEncoder(nn.Module):
    """MLP on one bin's observations: y_t -> (a_t, A_t). Missing bins (any NaN) give a zero potential."""

    def __init__(self, n_inputs: int, latent_dim: int, rank: int, hidden: int = 64, log_inputs: bool = True,
                 n_extra: int = 0):
        """n_extra: known values per bin read beside the counts (the task inputs' expected log-rate of
        each held-in neuron, so that the encoder can tell a trial's deviation from the task's mean)."""
        super().__init__()
        self.latent_dim, self.rank, self.log_inputs = latent_dim, rank, log_inputs
        self.net = nn.Sequential(
            nn.Linear(n_inputs + n_extra, hidden), nn.SiLU(),
            nn.Linear(hidden, hidden), nn.SiLU(),
            nn.Linear(hidden, latent_dim * (rank + 1)),
        )

    def forward(self, y: torch.Tensor, input_weight: torch.Tensor | None = None, extra: torch.Tensor | None = None
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """y: [batch, time, neuron] -> a [batch, time, latent], A [batch, time, latent, rank],
        observed [batch, time] bool. input_weight [batch, time, neuron] multiplies the (log) inputs:
        coordinated dropout's 0 / 1 / (1 - p) mask during training. extra: [batch, time, n_extra]."""
        x, observed = encoder_input(y, self.log_inputs, input_weight, extra)
        out = self.net(x)
        a = out[..., : self.latent_dim]
        A = out[..., self.latent_dim :].unflatten(-1, (self.latent_dim, self.rank))
        keep = observed[..., None].to(out.dtype)
        return a * keep, A * keep[..., None], observed


class BackwardEncoder(nn.Module):
    """Reverse-time GRU over the local potentials: beta_t summarises y_{t+1:T}."""

    def __init__(self, latent_dim: int, rank_local: int, rank: int, hidden: int = 64):
        super().__init__()
        self.latent_dim, self.rank = latent_dim, rank
        self.gru = nn.GRU(latent_dim * (rank_local + 1), hidden, batch_first=True)
        self.proj = nn.Linear(hidden, latent_dim * (rank + 1))
        # Start with weak backward messages: early training then relies on the local potentials.
        nn.init.normal_(self.proj.weight, std=1e-2)
        nn.init.zeros_(self.proj.bias)

    def forward(self, a: torch.Tensor, A: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """a: [batch, time, latent], A: [batch, time, latent, rank_local]
        -> b [batch, time, latent], B [batch, time, latent, rank].

        Each trial is read backwards from its last observed bin (the last with a non-zero potential):
        the missing bins after it (a shorter trial's padding) carry nothing, so a trial's messages are
        the same padded or not, and beta is 0 from its last observed bin on."""
        ends = observed_ends(a, A)
        if bool((ends == a.shape[1]).all()):
            out, _ = self.read_backwards(a, A)  # out[:, t] has seen y_{t:T}
        else:
            out = self._read_trials_backwards(a, A, ends)
        # Shift one step so that beta_t carries y_{t+1:T} only; nothing comes after the last bin.
        return self.split(torch.cat([out[:, 1:], torch.zeros_like(out[:, :1])], dim=1))

    def _read_trials_backwards(self, a: torch.Tensor, A: torch.Tensor, ends: torch.Tensor) -> torch.Tensor:
        """read_backwards with trial b reversed over its bins [0, ends[b]) only; out is 0 from ends[b] on."""
        T = a.shape[1]
        t = torch.arange(T, device=a.device)
        inside = t[None] < ends[:, None]  # [batch, time]
        # bin t of the reversed trial is bin ends - 1 - t; the bins after the end stay in place (an
        # involution: the same index maps the GRU's output back)
        index = torch.where(inside, ends[:, None] - 1 - t[None], t[None])
        x = torch.cat([a, A.flatten(-2)], dim=-1)
        x = torch.gather(x, 1, index[..., None].expand_as(x)) * inside[..., None].to(x.dtype)
        hs, _ = self.gru(x)
        out = self.proj(hs) * inside[..., None].to(x.dtype)
        return torch.gather(out, 1, index[..., None].expand_as(out))

    def read_backwards(self, a: torch.Tensor, A: torch.Tensor, h: torch.Tensor | None = None
                       ) -> tuple[torch.Tensor, torch.Tensor]:
        """The GRU over a piece of a sequence in reverse time, from the state h [1, batch, hidden] that
        summarises what comes after the piece (None: nothing). Returns out [batch, time, latent *
        (rank + 1)], out[:, t] having seen the piece from bin t on (and h), and the state after the
        piece's first bin, which summarises the piece and what comes after it."""
        x = torch.cat([a, A.flatten(-2)], dim=-1)
        hs, h = self.gru(torch.flip(x, dims=[1]), h)
        return self.proj(torch.flip(hs, dims=[1])), h

    def state_output(self, h: torch.Tensor) -> torch.Tensor:
        """out of the bin whose GRU state is h [layers, batch, hidden] (read_backwards' second result)."""
        return self.proj(h[-1])

    def split(self, out: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """out [..., latent * (rank + 1)] -> b [..., latent], B [..., latent, rank]."""
        return out[..., : self.latent_dim], out[..., self.latent_dim :].unflatten(-1, (self.latent_dim, self.rank))


def observed_ends(a: torch.Tensor, A: torch.Tensor) -> torch.Tensor:
    """[batch] long: 1 + the last bin whose local potential is not zero (missing bins have zero
    potentials, `LocalEncoder`), 0 for a trial without any."""
    seen = (a != 0).any(-1) | (A != 0).flatten(-2).any(-1)  # [batch, time]
    T = a.shape[1]
    last = torch.where(seen, torch.arange(1, T + 1, device=a.device), torch.zeros((), dtype=torch.long, device=a.device))
    return last.amax(1)


def drop_local_potentials(a: torch.Tensor, A: torch.Tensor, drop: float = 0.0,
                          keep_mask: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Zero the local potential alpha_t on a random fraction `drop` of bins (training: the posterior
    there is carried by the dynamics alone, which trains f to predict) and wherever `keep_mask`
    [batch, time] is False (e.g. forecast contexts). a: [batch, time, latent], A: [batch, time, latent, rank]."""
    if drop <= 0 and keep_mask is None:
        return a, A
    keep = torch.ones(a.shape[:2], dtype=torch.bool, device=a.device)
    if drop > 0:
        keep = keep & (torch.rand(a.shape[:2], device=a.device) >= drop)
    if keep_mask is not None:
        keep = keep & keep_mask
    w = keep.to(a.dtype)
    return a * w[..., None], A * w[..., None, None]


class _ScaleGrad(torch.autograd.Function):
    """Identity forward; the incoming gradient multiplied by `weight` backward."""

    @staticmethod
    def forward(ctx, x, weight):
        ctx.save_for_backward(weight)
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad):
        (weight,) = ctx.saved_tensors
        return grad * weight, None


def scale_grad(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """x unchanged, its gradient times `weight` (broadcast against x)."""
    return _ScaleGrad.apply(x, weight)
