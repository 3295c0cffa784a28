"""Verdicts: one plain sentence per score saying whether the model beats its trivial baseline, for
summaries, printed output and output-file attributes.

`verdicts` reads the `{split}_{fp,co}_bps` / `{split}_{fp,co}_baseline_bps` pairs of a metrics dict;
`grid_verdict_line` the forecast grid's `fp_bps@{window}` scores; `baseline_summary` (fit) and
`judge` (smooth, forecast) put them next to the descriptions of the baselines used.
"""

from __future__ import annotations

import math
import re

import numpy as np

from xfads_cli.data.spikedata import SpikeData
from xfads_cli.scoring.baselines import Baselines, baselines_for
from xfads_cli.scoring.grid import GRID_MARK, grid_verdict

_KEY = re.compile(r"^(?:(?P<session>.+)/)?(?:(?P<split>train|valid|test)_)?(?P<score>fp|co)_bps$")
_JUDGE_ORDER = ("test", "valid", "", "train")  # the most honest split present is judged
_WHAT = {"fp": ("forecast", "forecasts"), "co": ("held-out neurons", "predicts the held-out neurons")}


def _name(description: str | None) -> str:
    """A baseline's short name: its description up to the details in brackets."""
    return description.split(" (")[0] if description else "trivial baseline"


def verdicts(metrics: dict, baselines: dict | None = None, trials: dict | None = None) -> list[str]:
    """One plain line per score that has a baseline next to it: fp (forecast) and co (held-out
    neurons), judged on the test split when the metrics have it, else valid, else the unprefixed
    (selected trials) score, else train. A model that does not beat its baseline gets a line starting
    'warning: '.

    metrics: {[session/][split_]fp_bps, ..._fp_baseline_bps, ...co_bps, ...co_baseline_bps};
    baselines: {"fp": description, "co": description} (names the baseline: the text before " ("),
    or {session: {...}} for several sessions; trials: {split: "25 test trials"} (split "" for
    unprefixed scores), or {session: {...}}: how the judged trials are described."""
    groups: dict[str, dict[str, dict[str, tuple[float, float]]]] = {}
    for key, value in metrics.items():
        match = _KEY.match(key)
        if not match:
            continue
        base_key = key[: -len("_bps")] + "_baseline_bps"
        if base_key not in metrics:
            continue
        session, split, score = match.group("session") or "", match.group("split") or "", match.group("score")
        groups.setdefault(session, {}).setdefault(score, {})[split] = (float(value), float(metrics[base_key]))
    lines = []
    for session, scores in groups.items():
        names = (baselines or {}).get(session, baselines) if session else baselines
        labels = (trials or {}).get(session, trials) if session else trials
        prefix = f"{session}: " if session else ""
        for score in ("fp", "co"):
            found = scores.get(score, {})
            split = next((s for s in _JUDGE_ORDER if s in found and math.isfinite(found[s][1])), None)
            if split is None:
                continue
            model, base = found[split]
            name = _name((names or {}).get(score) if isinstance(names, dict) else None)
            label = (labels or {}).get(split) if isinstance(labels, dict) else None
            where = label or (f"the {split} trials" if split else "the selected trials")
            noun, verb = _WHAT[score]
            if math.isnan(model):  # e.g. a Gaussian mean below 0 where spikes were counted: no Poisson score
                lines.append(f"warning: {prefix}the model's {score}-bps on {where} is undefined (nan; the "
                             f"{name} gets {base:.3f} bits/spike); see docs/metrics.md, 'When a number is missing'")
            elif math.isfinite(model) and model > base:
                ratio = f" ({model / base:.2f}x)" if base > 0 else ""
                lines.append(f"{prefix}{noun}: model {model:.3f} bits/spike vs {name} {base:.3f}{ratio} "
                             f"on {where}: the model is better")
            else:
                lines.append(f"warning: {prefix}the model {verb} {'no better than' if model == base else 'worse than'} "
                             f"the {name} on {where} ({model:.3f} vs {base:.3f} bits/spike); "
                             "train longer (xfads fit --time-limit) or check the data options")
    return lines


def grid_verdict_line(metrics: dict, baseline: str | None, split: str = "") -> str | None:
    """grid.grid_verdict over the grid scores of `split` in metrics ('' : unprefixed keys,
    as forecast's), or None without grid scores."""
    prefix = f"{split}_" if split else ""
    scores = {}
    for key, value in metrics.items():
        if key.startswith(f"{prefix}fp_bps{GRID_MARK}"):
            name = key.split(GRID_MARK, 1)[1]
            scores[name] = (value, metrics.get(f"{prefix}fp_baseline_bps{GRID_MARK}{name}", float("nan")))
    return grid_verdict(scores, baseline) if scores else None


def trial_labels(data: SpikeData, scored: str = "all") -> dict[str, str]:
    """How verdicts name the judged trials: {"valid": "12 valid trials", ..., "": <the scored trials>}."""
    labels = {s: f"{int(np.sum(data.split == s))} {s} trials" for s in ("train", "valid", "test")}
    labels[""] = f"all {data.n_trials} trials" if scored == "all" else labels.get(scored, f"the {scored} trials")
    return labels


def baseline_summary(sessions, metrics: dict, meta: bool = False) -> dict:
    """{"baselines": which baseline each score used, "verdicts": one line per score saying whether the
    model beats it} for a summary (fit: the test split when it has trials, else valid). sessions: the
    SpikeData of a single-session run (or a list of one), or every session of a meta run with
    meta=True (metrics keyed "session/metric"); metrics from evaluate (with baselines)."""
    sessions = sessions if isinstance(sessions, (list, tuple)) else [sessions]
    if meta:
        described = {d.session: baselines_for(d).describe() for d in sessions}
        labels = {d.session: trial_labels(d) for d in sessions}
    else:
        described, labels = baselines_for(sessions[0]).describe(), trial_labels(sessions[0])
    lines = verdicts(metrics, described, labels)
    if not meta:  # the forecast grid of the most honest split that has one
        for split in ("test", "valid"):
            line = grid_verdict_line(metrics, described.get("fp"), split)
            if line is not None:
                lines.append(f"{line} ({labels[split]})")
                break
    return {"baselines": described, "verdicts": lines}


def judge(base: Baselines, metrics: dict, labels: dict) -> dict:
    """{"baselines": ..., "verdicts": [...]} for a command's summary and output attributes (with the
    forecast grid's line when metrics hold grid scores)."""
    described = base.describe()
    lines = verdicts(metrics, described, labels)
    line = grid_verdict_line(metrics, described.get("fp"))
    if line is not None:
        lines.append(f"{line} ({labels['']})")
    return {"baselines": described, "verdicts": lines}
