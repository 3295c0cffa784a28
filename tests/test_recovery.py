"""A short fit on simulated data must beat the mean-rate model on an independent retest draw.

The full-length numbers (0.95 of oracle) come from benchmarks/recovery.py; this guards the path
end to end in a few seconds with a deliberately loose bound."""

import numpy as np
import torch

from xfads_cli.config import ModelConfig, TrainConfig
from xfads_cli.data.simulate import simulate_arrays
from xfads_cli.model.xfads import XFADS
from xfads_cli.scoring import bits_per_spike
from xfads_cli.train.loop import train_model


def test_short_fit_recovers_part_of_the_oracle():
    sim = simulate_arrays("vdp", neurons=30, trials=60, bins=40, bin_ms=20.0, seed=3, base_rate_hz=15.0, param=None)
    y = torch.tensor(sim["counts"], dtype=torch.float32)
    torch.manual_seed(0)
    model = XFADS.one_session(ModelConfig(latent_dim=2, samples=10, dynamics_hidden=32, encoder_hidden=32), 30,
                  torch.ones(30, dtype=torch.bool), dt=0.02)
    model.init_from_data(y[:48])
    train_model(model, y[:48], y[48:54], TrainConfig(max_epochs=40, batch_size=12, lr=1e-2), seed=0).run()
    model.eval()
    with torch.no_grad():
        rates = model.rates(model.posterior(y[54:]).samples).mean(0).numpy()
    retest = sim["retest_counts"][54:]
    bps, oracle = bits_per_spike(rates, retest), bits_per_spike(sim["rates"][54:], retest)
    assert oracle > 0.1
    assert bps > 0.6 * oracle, (bps, oracle)
    assert np.isfinite(bps)
