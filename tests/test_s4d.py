"""The S4D backward encoder (model/s4d.py): its FFT convolution equals the recurrence run bin by bin,
a sequence read in pieces (carrying the state) equals it read whole, padding after a trial's last
observed bin changes nothing, and a model with it trains."""

import math

import torch

from test_models_table import tiny_data
from xfads_cli.config import ModelConfig, TrainConfig
from xfads_cli.model.s4d import S4DBackwardEncoder
from xfads_cli.model.xfads import XFADS
from xfads_cli.train.loop import train_model

f64 = torch.float64


def encoder(seed=0) -> S4DBackwardEncoder:
    torch.manual_seed(seed)
    return S4DBackwardEncoder(latent_dim=3, rank_local=2, rank=1, hidden=8).double()


def test_fft_states_equal_the_recurrence_bin_by_bin():
    enc = encoder()
    with torch.no_grad():
        enc.log_dt.fill_(math.log(0.3))  # decays that matter within the sequence
    x = torch.randn(2, 9, 9, dtype=f64)
    h = torch.randn(2, 4, dtype=torch.complex128)
    lam = enc.log_lambda().exp()
    u = torch.complex(*enc.B(x).chunk(2, -1))
    s, expected = h, []
    for t in range(8, -1, -1):  # s_t = lam s_{t+1} + B x_t, from the state after the sequence
        s = lam * s + u[:, t]
        expected.append(s)
    expected = torch.stack(expected[::-1], 1)
    torch.testing.assert_close(enc.states(x, h), expected)


def test_pieces_with_the_carried_state_equal_the_whole_sequence():
    enc = encoder(1)
    a, A = torch.randn(2, 10, 3, dtype=f64), torch.randn(2, 10, 3, 2, dtype=f64)
    whole, first = enc.read_backwards(a, A)
    late, h = enc.read_backwards(a[:, 6:], A[:, 6:])
    early, h0 = enc.read_backwards(a[:, :6], A[:, :6], h)
    torch.testing.assert_close(torch.cat([early, late], 1), whole)
    torch.testing.assert_close(h0, first)
    torch.testing.assert_close(enc.state_output(h), whole[:, 6])


def test_padding_after_the_last_observed_bin_changes_nothing():
    enc = encoder(2)
    a, A = torch.randn(1, 6, 3, dtype=f64), torch.randn(1, 6, 3, 2, dtype=f64)
    pad_a = torch.cat([a, torch.zeros(1, 4, 3, dtype=f64)], 1)
    pad_A = torch.cat([A, torch.zeros(1, 4, 3, 2, dtype=f64)], 1)
    b, B = enc(a, A)
    pb, pB = enc(pad_a, pad_A)
    torch.testing.assert_close(pb[:, :6], b)
    torch.testing.assert_close(pB[:, :6], B)
    assert not pb[:, 5:].any() and not pB[:, 5:].any()  # nothing after the last observed bin


def test_a_model_with_the_s4d_encoder_trains():
    torch.manual_seed(0)
    y = tiny_data("poisson")
    cfg = ModelConfig(latent_dim=3, dynamics_hidden=16, rank_local=2, rank_backward=1, encoder_hidden=16, samples=4,
                      backward_encoder="s4d")
    model = XFADS.one_session(cfg, n_neurons=6, heldin=torch.ones(6, dtype=torch.bool), dt=1.0)
    model.init_from_data(y)
    result = train_model(model, y[:10], y[10:], TrainConfig(max_epochs=12, batch_size=5, lr=1e-2), seed=0).run()
    losses = [r["train_loss"] for r in result.history]
    assert all(math.isfinite(v) for v in losses) and sum(losses[-3:]) < sum(losses[:3])
