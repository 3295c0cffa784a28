"""`xfads fit` as a library function: data -> model -> training -> RUN_DIR.

    RUN_DIR/config.yaml   resolved config
    RUN_DIR/last.pt       latest state (model, optimizer, scheduler, RNG, history): resumable
    RUN_DIR/best.pt       best validation loss so far
    RUN_DIR/metrics.csv   one row per epoch
    RUN_DIR/summary.json  final metrics, provenance, versions
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import time
from pathlib import Path

from xfads_cli.config import Config, dump_config, load_config, resolved_config
from xfads_cli.errors import UsageError
from xfads_cli.train.checkpoint import FORMAT


def _atomic_text(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(text)
    os.replace(tmp, path)


def _metrics_csv(history: list[dict]) -> str:
    keys: list[str] = []
    for record in history:
        keys += [k for k in record if k not in keys]
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=keys, restval="")
    writer.writeheader()
    writer.writerows(history)
    return buf.getvalue()


def _prepare_out(out: Path, overwrite: bool, resume: bool) -> None:
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {out} is a file; fit writes a run directory")
    if resume:
        if not (out / "last.pt").is_file():
            raise UsageError(f"--resume: {out} holds no last.pt to resume from; drop --resume to start a new run")
        return
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise UsageError(f"{out} already holds a run; pass --overwrite to replace it or --resume to continue it")
    out.mkdir(parents=True, exist_ok=True)
    for name in ("last.pt", "best.pt", "metrics.csv", "summary.json", "config.yaml", "training.png"):
        if (out / name).exists():
            (out / name).unlink()


def data_provenance(data) -> dict:
    return {
        "path": data.provenance.get("path"),
        "sha256": data.provenance.get("sha256"),
        "format": data.provenance.get("format"),
        "session": data.session,
        "bin_ms": data.bin_ms,
        "unit_ids": [str(u) for u in data.unit_ids],
        "heldout": data.heldout.tolist(),
        "trial_ids": [int(t) for t in data.trial_ids],
        "split": [str(s) for s in data.split],
    }


def run_fit(paths: list[Path], config: Config, out: Path, *, device: str = "auto", overwrite: bool = False,
            resume: bool = False, max_epochs: int | None = None, progress=None, plot: bool = False) -> dict:
    """Fit XFADS to one recording and write RUN_DIR; returns the summary (also in summary.json)."""
    import torch

    from xfads_cli.data.load import load_data
    from xfads_cli.data.provenance import package_versions
    from xfads_cli.ops import as_tensor, build_model, evaluate, model_spec
    from xfads_cli.train.checkpoint import atomic_torch_save, load_checkpoint
    from xfads_cli.train.device import resolve_device
    from xfads_cli.train.loop import fit

    out = Path(out)
    if len(paths) != 1 or config.model.kind == "meta":
        raise UsageError("fitting several sessions (model.kind: meta) is not available yet; pass one recording")
    _prepare_out(out, overwrite, resume)
    state = None
    if resume:
        ckpt = load_checkpoint(out / "last.pt")
        config = load_config(base=ckpt["config"])
        state = ckpt["train_state"]
        state["best_model"] = ckpt.get("best_model")
    if plot:
        from xfads_cli.outputs.plots import require_matplotlib

        require_matplotlib()

    data = load_data(paths[0], config.data)
    train, valid = data.subset("train"), data.subset("valid")
    if train.n_trials == 0:
        raise UsageError(f"{paths[0]} gives no training trials; check data.split or the trial options")
    dev = resolve_device(device)
    torch.manual_seed(config.seed)
    spec = model_spec(data)
    model = build_model(config, spec, dev)
    train_y = as_tensor(train.counts, model)
    valid_y = as_tensor(valid.counts, model) if valid.n_trials else None
    if state is None:
        model.init_from_data(train_y)
    else:
        model.load_state_dict(ckpt["model"])
    _atomic_text(out / "config.yaml", dump_config(config))

    base = {
        "format": FORMAT,
        "config": resolved_config(config),
        "spec": spec,
        "data": data_provenance(data),
        "versions": package_versions(),
    }

    def evaluate_epoch(m) -> dict:
        if valid_y is None:
            return {}
        # cheap per-epoch scores only: no forecast pass, no decoder fit on the training trials
        metrics = evaluate(m, data, config, splits=("valid",), forecast=False, decode=False)
        return {k: v for k, v in metrics.items() if math.isfinite(v)}

    # The best parameters also travel inside last.pt, so a resumed run can still return them.
    best = {"model": state.get("best_model") if state else None}

    def on_epoch(record: dict, is_best: bool, train_state) -> None:
        st = train_state()
        if is_best:
            best["model"] = {k: v.detach().clone() for k, v in model.state_dict().items()}
            atomic_torch_save({**base, "model": best["model"], "epoch": record["epoch"], "best": st["best"]}, out / "best.pt")
        last = {**base, "model": model.state_dict(), "train_state": st, "epoch": record["epoch"], "best": st["best"],
                "best_model": best["model"]}
        atomic_torch_save(last, out / "last.pt")
        _atomic_text(out / "metrics.csv", _metrics_csv(st["history"]))

    t0 = time.monotonic()
    result = fit(model, train_y, valid_y, config.train, seed=config.seed, evaluate=evaluate_epoch,
                 on_epoch=on_epoch, resume=state, max_epochs=max_epochs,
                 callback=progress.update if progress is not None else None)
    metrics = evaluate(model, data, config)
    summary = {
        "run_dir": str(out),
        "epochs": len(result.history),
        "best_epoch": result.best_epoch,
        "best_valid_loss": result.best_valid_loss,
        "stopped": result.stopped,
        "seconds": time.monotonic() - t0,
        "metrics": metrics,
        "data": {k: v for k, v in base["data"].items() if k in ("path", "sha256", "session", "bin_ms")}
        | {"trials": data.n_trials, "neurons": data.n_neurons, "bins": data.n_time,
           "heldout_neurons": int(data.heldout.sum())},
        "device": str(dev),
        "versions": base["versions"],
    }
    _atomic_text(out / "summary.json", json.dumps(summary, indent=2, default=str))
    if plot:
        from xfads_cli.outputs.plots import plot_training

        summary["plots"] = [str(plot_training(result.history, out / "training.png"))]
    return summary

