"""model/streaming.py: the posterior of a long sequence filtered piece by piece equals one pass over it."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from xfads_cli.config import ModelConfig
from xfads_cli.model.meta import MetaXFADS
from xfads_cli.model.streaming import piece_bounds, sequence_noise, stream_posterior
from xfads_cli.model.xfads import XFADS

CFG = ModelConfig(latent_dim=3, rank_local=2, rank_backward=2, samples=5, encoder_hidden=8, dynamics_hidden=8)


def counts(batch: int, time: int, n: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(1)
    y = torch.poisson(torch.full((batch, time, n), 0.7), generator=g).double()
    y[0, 5] = float("nan")  # missing bins, one at a piece boundary
    y[1, 20, 2] = float("nan")
    return y


def stitched(session, y: torch.Tensor, piece_bins: int, mode: str, noise: torch.Tensor):
    pieces = list(stream_posterior(session, lambda t0, t1: y[:, t0:t1], y.shape[1], piece_bins=piece_bins, mode=mode,
                                   noise=noise))
    assert [p.start for p in pieces] == [b[0] for b in piece_bounds(y.shape[1], piece_bins)]
    return {name: torch.cat([getattr(p.posterior, name) for p in pieces], dim=2 if name == "samples" else 1)
            for name in ("mean", "var", "samples", "kl")}


@pytest.mark.parametrize("mode", ["smoother", "two_filter", "filter"])
@pytest.mark.parametrize("piece_bins", [1, 7, 10, 100])
def test_pieces_equal_one_pass_of_xfads(mode, piece_bins):
    torch.manual_seed(0)
    model = XFADS.one_session(CFG, 4, torch.tensor([True, True, True, False]), 0.02).double().eval()
    torch.nn.init.normal_(model.backward.proj.weight, std=0.3)  # backward messages that matter
    y = counts(2, 30, 4)
    session = model.session(0)
    noise = sequence_noise(session, 2, 30, mode=mode, generator=torch.Generator().manual_seed(3))
    whole = model.posterior(y, mode=mode, noise=noise)
    got = stitched(session, y, piece_bins, mode, noise)
    for name, value in got.items():
        torch.testing.assert_close(value, getattr(whole, name), rtol=1e-10, atol=1e-10, msg=name)


@pytest.mark.parametrize("piece_bins", [1, 7])
def test_pieces_equal_one_pass_with_the_s4d_backward_encoder(piece_bins):
    torch.manual_seed(0)
    model = XFADS.one_session(replace(CFG, backward_encoder="s4d"), 4, torch.tensor([True, True, True, False]),
                              0.02).double().eval()
    torch.nn.init.normal_(model.backward.proj.weight, std=0.3)
    y = counts(2, 30, 4)
    session = model.session(0)
    noise = sequence_noise(session, 2, 30, mode="smoother", generator=torch.Generator().manual_seed(3))
    whole = model.posterior(y, mode="smoother", noise=noise)
    got = stitched(session, y, piece_bins, "smoother", noise)
    for name, value in got.items():  # FFT round-off instead of the GRU's identical steps
        torch.testing.assert_close(value, getattr(whole, name), rtol=1e-8, atol=1e-8, msg=name)


def test_pieces_equal_one_pass_of_a_meta_session():
    torch.manual_seed(0)
    cfg = replace(CFG, kind="meta", embed_dim=2, read_in_dim=4)
    meta = MetaXFADS(cfg, [{"name": "a", "n_neurons": 5, "dt": 0.02}, {"name": "b", "n_neurons": 4, "dt": 0.02}])
    meta = meta.double().eval()
    torch.nn.init.normal_(meta.backward.proj.weight, std=0.3)
    y = counts(2, 25, 4)
    session = meta.session(1, lambda: y)
    noise = sequence_noise(session, 2, 25, generator=torch.Generator().manual_seed(4))
    whole = session.posterior(y, noise=noise)
    got = stitched(session, y, 6, "smoother", noise)
    for name, value in got.items():
        torch.testing.assert_close(value, getattr(whole, name), rtol=1e-10, atol=1e-10, msg=name)


def test_each_piece_reads_only_its_bins():
    torch.manual_seed(0)
    model = XFADS.one_session(CFG, 3, torch.ones(3, dtype=torch.bool), 0.02).eval()
    y = counts(2, 23, 3).float()
    asked = []

    def read(t0, t1):
        asked.append((t0, t1))
        return y[:, t0:t1]

    pieces = list(stream_posterior(model.session(0), read, 23, piece_bins=10))
    assert [p.posterior.mean.shape[1] for p in pieces] == [10, 10, 3]
    assert sorted(set(asked)) == [(0, 10), (10, 20), (20, 23)] and len(asked) == 6  # backward pass + forward pass
    with pytest.raises(ValueError, match="piece_bins"):
        piece_bounds(10, 0)
