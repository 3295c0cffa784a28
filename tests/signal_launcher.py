"""Run the xfads CLI in a process that signals itself after its K-th optimisation step (test-only).

    python tests/signal_launcher.py K:SIGNAME[:RANK] fit DATA --out RUN ...
    torchrun --nproc-per-node 2 tests/signal_launcher.py 3:SIGTERM:1 fit DATA --out RUN ...

Kill/resume tests need the signal to land at an exact step rather than after a sleep; the package has
no hook for it. This launcher wraps `torch.nn.utils.clip_grad_norm_`, which the training loop calls
once per step right after the backward pass and before it checks its stop flag, so the signal is seen
at the end of step K exactly. With RANK, only the process whose torchrun RANK matches signals.
"""

from __future__ import annotations

import os
import signal
import sys


def install(spec: str) -> None:
    import torch

    step, _, rest = spec.partition(":")
    name, _, rank = rest.partition(":")
    if rank and rank != os.environ.get("RANK", "0"):
        return
    at, sig = int(step), getattr(signal, name or "SIGTERM")
    clip = torch.nn.utils.clip_grad_norm_
    calls = [0]

    def clip_then_signal(*args, **kwargs):
        norm = clip(*args, **kwargs)
        calls[0] += 1
        if calls[0] == at:
            os.kill(os.getpid(), sig)
        return norm

    torch.nn.utils.clip_grad_norm_ = clip_then_signal


if __name__ == "__main__":
    install(sys.argv[1])
    from xfads_cli.cli import main

    sys.argv = ["xfads", *sys.argv[2:]]
    main()
