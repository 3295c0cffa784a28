"""What rebuilds a model besides its config: the plain-data spec a checkpoint stores, and the model
built from the two."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from xfads_cli.config import Config


@dataclass(frozen=True)
class ModelSpec:
    """What rebuilds a model besides the config: one plain-data entry per session (neuron count,
    held-in mask, bin width, unit ids, session name; an adapted session also the trial ids of its
    shots; a single-session run with task inputs also their `InputSpec`, key "inputs"). A single-session
    XFADS run is the one-session case. On disk (checkpoint["spec"]) the
    single-session form stays the flat dict older checkpoints hold, the meta form is
    {"kind": "meta", "sessions": [...]}."""

    sessions: tuple[dict, ...]
    meta: bool

    @classmethod
    def of(cls, raw: dict) -> "ModelSpec":
        if raw.get("kind") == "meta":
            return cls(tuple(raw["sessions"]), True)
        return cls((raw,), False)

    def to_dict(self) -> dict:
        return {"kind": "meta", "sessions": list(self.sessions)} if self.meta else dict(self.sessions[0])

    @property
    def names(self) -> list[str]:
        return [s.get("name", s.get("session")) for s in self.sessions]


def build_model(config: Config, spec: dict, device="cpu") -> torch.nn.Module:
    """The model of a checkpoint's spec (ModelSpec's on-disk form): XFADS over its sessions, with a
    session embedding (the hypernetwork-adapted dynamics) for the meta kind; a comparison kind's
    model (model/comparison.py) for one session."""
    from xfads_cli.model.comparison import KINDS, ComparisonModel
    from xfads_cli.model.xfads import XFADS

    dtype = torch.float64 if config.train.dtype == "float64" else torch.float32
    spec = ModelSpec.of(spec)
    if config.model.kind in KINDS and not spec.meta:
        model = ComparisonModel(config.model, list(spec.sessions))
    else:
        model = XFADS(config.model, list(spec.sessions), adaptation="hyper" if spec.meta else None)
    return model.to(device=device, dtype=dtype)
