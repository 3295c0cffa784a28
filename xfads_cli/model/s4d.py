"""A structured state-space layer as XFADS's backward encoder (`model.backward_encoder: s4d`, docs/model.md
section 2): the reverse-time GRU replaced by a diagonal linear recurrence computed for all bins at once.

    x_t = [a_t, vec(A_t)]                                  the local potentials, as the GRU reads them
    s_t = lam * s_{t+1} + B x_t,   s_{T+1} = 0             [state] complex, reverse time
    lam = exp(dt (-exp(log_a) + i omega))                  S4D-Lin: decay rates and frequencies, learned
    out_t = proj(SiLU(W [Re s_t, Im s_t] + b))             -> beta_{t-1} = (b, B) after the one-bin shift

s_t = sum_{j >= 0} lam^j B x_{t+j} is a convolution of the reversed sequence with the kernel lam^j, done by
FFT (O(T log T), no loop over bins); the GRU takes T sequential steps. A missing bin has a zero potential
and contributes nothing, so the bins after a trial's last observed one (a shorter trial's padding) leave
the state at zero: no per-trial reversal is needed, and the output is masked to 0 there as the GRU's is.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from xfads_cli.model.encoders import observed_ends


class S4DBackwardEncoder(nn.Module):
    """Same interface as encoders.BackwardEncoder: forward(a, A) -> (b, B) depending on y_{t+1:T};
    read_backwards(a, A, h) over a piece with the state after it; state_output(h), split(out)."""

    def __init__(self, latent_dim: int, rank_local: int, rank: int, hidden: int = 64):
        super().__init__()
        self.latent_dim, self.rank = latent_dim, rank
        n_in, n_state = latent_dim * (rank_local + 1), max(hidden // 2, 1)
        self.B = nn.Linear(n_in, 2 * n_state, bias=False)  # real and imaginary parts of B x
        # S4D-Lin initialisation: decay rates 1/2, frequencies pi n, time steps log-uniform in [1e-3, 1e-1]
        self.log_a = nn.Parameter(torch.full((n_state,), math.log(0.5)))
        self.omega = nn.Parameter(math.pi * torch.arange(n_state, dtype=torch.float32))
        self.log_dt = nn.Parameter(torch.empty(n_state).uniform_(math.log(1e-3), math.log(1e-1)))
        self.mix = nn.Linear(2 * n_state, hidden)
        self.proj = nn.Linear(hidden, latent_dim * (rank + 1))
        # weak backward messages at the start, as the GRU encoder's
        nn.init.normal_(self.proj.weight, std=1e-2)
        nn.init.zeros_(self.proj.bias)

    def log_lambda(self) -> torch.Tensor:
        """log lam [state] (complex): dt (-a + i omega); |lam| < 1."""
        dt = self.log_dt.exp()
        return torch.complex(-dt * self.log_a.exp(), dt * self.omega)

    def states(self, x: torch.Tensor, h: torch.Tensor | None = None) -> torch.Tensor:
        """s [batch, time, state] (complex) of x [batch, time, n_in] read in reverse time, starting from
        the state h [batch, state] (complex) of the bin after the piece (None: zero)."""
        T = x.shape[1]
        u = torch.complex(*self.B(x).chunk(2, -1)).flip(1)  # [batch, time, state], reversed
        log_lam = self.log_lambda()
        kernel = torch.exp(torch.arange(T, device=x.device, dtype=x.dtype)[:, None] * log_lam)  # [time, state]
        n = 2 * T
        s = torch.fft.ifft(torch.fft.fft(u, n=n, dim=1) * torch.fft.fft(kernel, n=n, dim=0), n=n, dim=1)[:, :T]
        s = s.flip(1)  # s[:, t] = sum_{j >= 0} lam^j u_{t + j}
        if h is not None:  # what comes after the piece, decayed to each bin: lam^(T - t) h
            s = s + torch.exp((T - torch.arange(T, device=x.device, dtype=x.dtype))[:, None] * log_lam) * h[:, None]
        return s

    def state_output(self, h: torch.Tensor) -> torch.Tensor:
        """out of the bin whose state is h [batch, state] (read_backwards' second result)."""
        return self.output(h)

    def output(self, s: torch.Tensor) -> torch.Tensor:
        """out [..., latent * (rank + 1)] of states s [..., state] (complex)."""
        return self.proj(torch.nn.functional.silu(self.mix(torch.cat([s.real, s.imag], -1))))

    def forward(self, a: torch.Tensor, A: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """a [batch, time, latent], A [batch, time, latent, rank_local] -> b [batch, time, latent],
        B [batch, time, latent, rank]; beta_t from y_{t+1:T}, 0 from each trial's last observed bin on."""
        out, _ = self.read_backwards(a, A)
        ends = observed_ends(a, A)
        inside = torch.arange(a.shape[1], device=a.device)[None] < ends[:, None]
        out = out * inside[..., None].to(out.dtype)
        return self.split(torch.cat([out[:, 1:], torch.zeros_like(out[:, :1])], dim=1))

    def read_backwards(self, a: torch.Tensor, A: torch.Tensor, h: torch.Tensor | None = None
                       ) -> tuple[torch.Tensor, torch.Tensor]:
        """out [batch, time, latent * (rank + 1)] over a piece, out[:, t] having seen the piece from bin t
        on (and the state h after it), and the state at the piece's first bin (what the piece before
        continues from)."""
        s = self.states(torch.cat([a, A.flatten(-2)], dim=-1), h)
        return self.output(s), s[:, 0]

    def split(self, out: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """out [..., latent * (rank + 1)] -> b [..., latent], B [..., latent, rank]."""
        return out[..., : self.latent_dim], out[..., self.latent_dim :].unflatten(-1, (self.latent_dim, self.rank))
