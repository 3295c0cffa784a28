"""Data layer (numpy only): read recordings, bin spikes, align trials, split -> `SpikeData`."""

from xfads_cli.data.spikedata import SpikeData

__all__ = ["SpikeData"]
