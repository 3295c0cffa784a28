"""Known task inputs u_t of trial-aligned recordings (docs/model.md section 11): what the model is told
about each bin besides the counts.

    u_t = [ phi_k(t) ]_k                      clock: bumps over the time since the trial window's start
        ⊕ [ 1{c = j} phi_k(t) ]_{j,k}         condition: the same bumps, one set per condition label
        ⊕ [ psi_k(t - tau_e) ]_{e,k}          events: bumps over the time since each event tau_e (0 before it)

phi are Gaussian bumps of width equal to their spacing, evenly spread over the training trials' bins;
psi the same over EVENT_SPAN_MS after an event. The model uses u_t in its readout (a per-neuron offset
D u_t: the population's trial-locked mean, in log-rate) and in its dynamics (a drive B u_t).

Which inputs are known in advance when forecasting from a context ending at bin t0: the clock and the
condition always (the trial's schedule and its condition are set when it starts); an event only once
it has happened (tau_e < t0): a later event is unknown and its bumps are 0. `known_until` applies that.

`InputSpec` is plain data kept in the checkpoint's spec, so every command rebuilds the same features.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

CLOCK_SPACING_MS = 50.0  # bump spacing (and width): about the resolution of a smoothed PSTH
MAX_CLOCK_BUMPS = 64  # longer trials get wider bumps: the readout's size stays bounded
EVENT_SPAN_MS = 1000.0  # what follows an event is modelled this long after it
KINDS = ("clock", "condition", "events")
# 'auto' gives a recording the clock and condition inputs only when its (condition-aware) trial average
# predicts held-out training trials at least this much better than the mean rate: below it there is no
# trial-locked structure worth modelling, and on autonomous systems the inputs cost smoothing quality
# (benchmarks/README.md, task_structure.py; simulated systems measured -0.007..+0.001, task recordings 0.25-0.36).
MIN_TRIAL_LOCKED_BPS = 0.01


@dataclass(frozen=True)
class InputSpec:
    """The task inputs of a model (plain data; `to_dict`/`from_dict` for checkpoints).

    clock_bins: bins the clock bumps span (the training trials' length); 0: no clock.
    n_clock: number of clock bumps. conditions: the training trials' condition labels (sorted; a
    condition the model has not seen gets no condition term). events: event names. n_event: bumps
    per event over event_bins bins after it."""

    clock_bins: int = 0
    n_clock: int = 0
    conditions: tuple[str, ...] = ()
    events: tuple[str, ...] = ()
    event_bins: int = 0
    n_event: int = 0

    @property
    def dim(self) -> int:
        return self.n_clock * (1 + len(self.conditions)) + len(self.events) * self.n_event

    def names(self) -> list[str]:
        """What `describe` prints: the kinds of input used."""
        out = []
        if self.n_clock:
            out.append("clock")
        if self.conditions:
            out.append(f"condition ({len(self.conditions)} labels)")
        out += [f"event {e}" for e in self.events]
        return out

    def to_dict(self) -> dict:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, raw: dict | None) -> "InputSpec | None":
        if not raw:
            return None
        return cls(int(raw["clock_bins"]), int(raw["n_clock"]), tuple(raw["conditions"]), tuple(raw["events"]),
                   int(raw["event_bins"]), int(raw["n_event"]))


def choose_inputs(requested: tuple[str, ...], data, trial_locked_bps: float) -> InputSpec | None:
    """The InputSpec for `data` (SpikeData) under data.inputs `requested` (None: no inputs). 'auto':
    clock, and condition when the recording has 2+ condition labels, for trial-aligned recordings whose
    trial average predicts held-out trials (trial_locked_bps >= MIN_TRIAL_LOCKED_BPS); nothing for
    windows chopped from a continuous recording or recordings without trial-locked structure.
    trial_locked_bps: scoring/psth.psth_gain_bps of data's training trials (the caller measures it)."""
    from xfads_cli.errors import UsageError, closest

    aligned = data.provenance.get("trials_from") != "chopped"
    kinds = set()
    for item in requested:
        if item == "auto":
            if aligned and trial_locked_bps >= MIN_TRIAL_LOCKED_BPS:
                kinds |= {"clock", "condition"}
        elif item in KINDS:
            if not aligned:
                raise UsageError(f"data.inputs '{item}' needs trial-aligned data (a trials or intervals table); "
                                 "this recording is chopped into windows: use --set data.inputs=[]")
            kinds.add(item)
        elif item not in ("none", "off"):
            raise UsageError(f"data.inputs: unknown input '{item}'{closest(item, KINDS + ('auto',))}; "
                             f"choose from auto, {', '.join(KINDS)} or [] (none)")
    labels = () if data.conditions is None else tuple(sorted({str(c) for c in data.subset("train").conditions}))
    if "condition" in kinds and len(labels) < 2:
        if "condition" in requested:
            raise UsageError("data.inputs 'condition' needs condition labels (data.condition names a trials-table "
                             "column with 2+ labels); set data.condition or drop 'condition' from data.inputs")
        labels = ()
    events = tuple(sorted(data.events)) if "events" in kinds and getattr(data, "events", None) else ()
    if "events" in requested and not events:
        raise UsageError("data.inputs 'events' needs event columns (data.events); this recording has none")
    if not kinds or data.n_time < 2:
        return None
    dt_ms = data.bin_ms
    clock_bins = int(data.n_time) if "clock" in kinds or labels else 0
    n_clock = 0
    if clock_bins:
        n_clock = int(min(MAX_CLOCK_BUMPS, max(2, round(clock_bins * dt_ms / CLOCK_SPACING_MS) + 1)))
    event_bins = max(2, int(round(EVENT_SPAN_MS / dt_ms))) if events else 0
    n_event = int(min(MAX_CLOCK_BUMPS, max(2, round(EVENT_SPAN_MS / CLOCK_SPACING_MS) + 1))) if events else 0
    spec = InputSpec(clock_bins, n_clock, labels if "condition" in kinds else (), events, event_bins, n_event)
    return spec if spec.dim else None


def _bumps(t: np.ndarray, span: int, n: int) -> np.ndarray:
    """Gaussian bumps of t (bins, any shape) -> [..., n]: centres evenly over [0, span - 1], width = spacing."""
    centres = np.linspace(0.0, max(span - 1, 1), n)
    width = centres[1] - centres[0] if n > 1 else float(span)
    return np.exp(-0.5 * ((t[..., None] - centres) / width) ** 2)


def task_features(spec: InputSpec, n_time: int, n_trial: int, conditions=None, events: dict | None = None,
                  known_until: int | None = None, first_bin: int = 0) -> np.ndarray:
    """u for n_trial trials: [trial, n_time, spec.dim] float32, bin i being bin first_bin + i of the trial.

    conditions: [trial] labels (None: no condition term); events: name -> [trial] event bins from the
    trial's start (NaN: none); known_until: forecasting from a context of this many bins: events at or
    after it are not known yet (their bumps are 0)."""
    t = np.arange(first_bin, first_bin + n_time, dtype=np.float64)
    parts = []
    if spec.n_clock:
        clock = np.broadcast_to(_bumps(t, spec.clock_bins, spec.n_clock), (n_trial, n_time, spec.n_clock))
        parts.append(clock)
        if spec.conditions:
            onehot = np.zeros((n_trial, len(spec.conditions)))
            if conditions is not None:
                index = {c: j for j, c in enumerate(spec.conditions)}
                for k, c in enumerate(conditions):
                    if str(c) in index:
                        onehot[k, index[str(c)]] = 1.0
            parts.append((onehot[:, None, :, None] * clock[:, :, None, :]).reshape(n_trial, n_time, -1))
    for name in spec.events:
        tau = np.full(n_trial, np.nan)
        if events is not None and name in events:
            tau = np.asarray(events[name], dtype=np.float64)
        if known_until is not None:
            tau = np.where(tau < known_until, tau, np.nan)
        lag = t[None, :] - tau[:, None]  # [trial, time]; NaN: no (known) event
        after = np.isfinite(lag) & (lag >= 0)
        parts.append(np.where(after[..., None], _bumps(np.nan_to_num(lag), spec.event_bins, spec.n_event), 0.0))
    return np.concatenate(parts, axis=-1).astype(np.float32) if parts else np.zeros((n_trial, n_time, 0), np.float32)


def features_for(spec: InputSpec | None, data, rows=None, n_time: int | None = None,
                 known_until: int | None = None) -> np.ndarray | None:
    """task_features of `data`'s trials `rows` (SpikeData; default all) over n_time bins (default its
    own), or None when the model has no inputs."""
    if spec is None:
        return None
    rows = np.arange(data.n_trials) if rows is None else np.asarray(rows)
    conditions = None if data.conditions is None else np.asarray(data.conditions)[rows]
    events = {k: np.asarray(v)[rows] for k, v in (getattr(data, "events", None) or {}).items()}
    return task_features(spec, n_time or data.n_time, len(rows), conditions, events, known_until)
