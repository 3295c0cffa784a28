"""Model family: dynamics, likelihoods, encoders, the low-rank filter and the XFADS model."""
