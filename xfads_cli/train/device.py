"""Device selection: `--device auto|cpu|cuda[:i]`. Never `.cuda()`: tensors follow the model's device."""

from __future__ import annotations

from xfads_cli.errors import UsageError


def resolve_device(name: str = "auto"):
    import torch

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except (RuntimeError, ValueError):
        raise UsageError(f"unknown device '{name}'; use auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UsageError(f"device '{name}' requested but CUDA is not available here; use --device cpu or auto")
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise UsageError(f"device '{name}' does not exist: {torch.cuda.device_count()} CUDA device(s) visible")
    return device
