"""Training: the fit loop and checkpoints."""
