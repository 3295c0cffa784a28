"""xfads: fit and forecast neural population recordings with low-rank nonlinear state-space models."""

__version__ = "0.1.0"
