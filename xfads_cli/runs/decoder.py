"""Causal decoding one bin at a time (`xfads stream`): the run's filter, its carried state kept from one
bin to the next (model/filtering.py `filter_state`), so that bin t's posterior is q(z_t | y_{1:t}) of
the offline causal filter over the whole sequence (the same numbers given the same standard normals).

    decoder = CausalDecoder(session_model, n_samples=20, horizon=10)
    out = decoder.step(counts)      # counts [neuron] (NaN = missing) -> Decoded (numpy arrays)
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import torch

from xfads_cli.model.filtering import filter_next


class Decoded(NamedTuple):
    """One bin: latent_mean, latent_var [latent] (diagonal of q(z_t | y_{1:t})); rates [neuron], the
    expected count per bin averaged over the posterior's samples; forecast [horizon, neuron] of the
    rates in the bins ahead (the dynamics rolled forward from those samples), or None."""

    latent_mean: np.ndarray
    latent_var: np.ndarray
    rates: np.ndarray
    forecast: np.ndarray | None


class CausalDecoder:
    """The causal filter of a session model (model/base.py SessionModel), one bin at a time:

        q(z_t | y_{1:t}) from the samples of q(z_{t-1} | y_{1:t-1}) pushed through f and the local
        potential of y_t (a missing count: no information from that unit in that bin),
        rates_t = E_q[E(y_t | z_t)],  forecast_{t+h} = E[min(E(y_{t+h} | z_{t+h}), cap)], z rolled by
        the prior, cap the session's rate ceiling (as `xfads forecast`).

    Task inputs of a run that has them are not streamed: they enter as absent (zero)."""

    def __init__(self, session, *, n_samples: int, horizon: int = 0, generator: torch.Generator | None = None):
        self.session, self.n_samples, self.horizon, self.generator = session, n_samples, horizon, generator
        self.f = session.transition(1)  # the session's dynamics (a meta model's adapters built once)
        self.m0, self.q0, self.q = session.m0, session.q0(), session.q()
        self.z = None  # the draws of the last bin's posterior [1, sample, latent]
        self.cap = session.model.sessions[session.index].rate_ceiling  # [neuron], the forecast's rate cap

    @torch.inference_mode()
    def step(self, counts: np.ndarray, noise: torch.Tensor | None = None) -> Decoded:
        """counts [neuron] of the next bin (NaN = missing). noise: that bin's standard normals (a slice
        of `noise_shape` along time, for tests); None draws them from the decoder's generator."""
        m0 = self.m0
        y = torch.as_tensor(counts, dtype=m0.dtype, device=m0.device).view(1, 1, -1)
        a, A = self.session.potentials(y)
        S, L, r = self.n_samples, a.shape[-1], A.shape[-1]
        if noise is None:
            eps = torch.randn((1, S, S + L + r), generator=self.generator, dtype=m0.dtype, device=m0.device)
        else:
            eps = noise.to(m0)[0, 0]
        mean, var, self.z = filter_next(self.f, self.z, m0, self.q0, self.q, a[:, 0], A[:, 0], eps)
        z = self.z.transpose(0, 1)  # [sample, 1, latent]
        forecast = None
        if self.horizon:
            ahead = self.session.model.rollout_through(self.f, z, self.horizon, self.generator)
            # capped as offline forecasts are (a rollout that leaves the trained region can explode)
            forecast = torch.minimum(self.session.rates(ahead), self.cap).mean(0)[0].cpu().numpy()
        return Decoded(mean[0].cpu().numpy(), var[0].cpu().numpy(), self.session.rates(z).mean(0)[0].cpu().numpy(),
                       forecast)
