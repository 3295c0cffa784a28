"""Progress and summaries on stderr: a rich progress bar on a TTY, plain log lines otherwise."""

from __future__ import annotations

import math
import sys


def _fmt(value) -> str:
    if isinstance(value, float):
        return "nan" if not math.isfinite(value) else f"{value:.4g}"
    return str(value)


class EpochProgress:
    """Context manager fed one record per epoch (epoch, train_loss, valid_loss, ...). An epoch is named
    by its record's number, from 0 as in metrics.csv, summary.json and the checkpoints, so that "best
    at epoch 52" is the row epoch=52 of metrics.csv; the (done/total) beside it is a count."""

    def __init__(self, total: int, quiet: bool = False, first: int = 0):
        self.total, self.quiet, self.first = total, quiet, first
        # the record key that picks best.pt (set by the fit before training): shown with its best so far
        self.select: str | None = None
        self._best: tuple[float, int] | None = None
        self.tty = sys.stderr.isatty()
        self._bar = None

    def __enter__(self):
        if not self.quiet and self.tty:
            from rich.console import Console
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

            self._bar = Progress(
                TextColumn("[bold]fit[/bold]"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[info]}"),
                TimeElapsedColumn(), TimeRemainingColumn(), console=Console(stderr=True), transient=False,
            )
            self._bar.start()
            self._task = self._bar.add_task("fit", total=self.total or None, completed=self.first, info="")
        return self

    def resume(self, select: str, best: dict | None, total: int | None = None) -> None:
        """Continue a resumed run's display: the key that selects best.pt and the best so far
        (train_state["best"]: epoch, score, key), so "best ... at epoch N" does not restart; total: the
        run's max_epochs (a resumed run's comes from its own config, not the command line's defaults)."""
        self.select = select
        if total:
            self.total = total
            if self._bar is not None:
                self._bar.update(self._task, total=total)
        if best and best.get("key") == select and best.get("epoch", -1) >= 0 and math.isfinite(best.get("score", math.nan)):
            self._best = (float(best["score"]), int(best["epoch"]))

    def update(self, record: dict) -> None:
        if self.quiet:
            return
        keys = ("train_loss", "valid_loss", "valid_co_bps", "valid_fp_bps", "valid_retest_bps")
        info = "  ".join(f"{k.replace('_loss', '')}={_fmt(record[k])}" for k in keys if k in record and k != self.select)
        value = record.get(self.select) if self.select else None
        if value is not None and math.isfinite(value):
            higher = not self.select.endswith("_loss")
            if self._best is None or (value > self._best[0] if higher else value < self._best[0]):
                self._best = (value, record["epoch"])
            info = (f"{self.select.replace('_loss', '')}={_fmt(value)} (best {_fmt(self._best[0])} at epoch "
                    f"{self._best[1]}, selects best.pt)  {info}")
        done = record["epoch"] + 1
        if self._bar is not None:
            self._bar.update(self._task, completed=done, info=f"epoch {record['epoch']}  {info}")
        else:
            of = f" ({done}/{self.total})" if self.total else ""
            print(f"epoch {record['epoch']}{of}  {info}  ({record.get('seconds', 0):.2f} s)", file=sys.stderr, flush=True)

    def __exit__(self, *exc):
        if self._bar is not None:
            self._bar.stop()
        return False


def log(message: str, quiet: bool = False) -> None:
    if not quiet:
        print(message, file=sys.stderr, flush=True)


def print_metrics(title: str, metrics: dict, quiet: bool = False) -> None:
    """A rich table of scalar metrics on stderr (stdout stays free for --json)."""
    if quiet:
        return
    from rich.console import Console
    from rich.table import Table

    console = Console(stderr=True)
    console.print(f"[bold]{title}[/bold]")
    if not any(isinstance(v, (int, float)) for v in metrics.values()):
        return  # no empty table: the command says why it has no number (a 'note:' line)
    table = Table()
    table.add_column("metric", style="bold cyan")
    table.add_column("value", justify="right")
    for key, value in metrics.items():
        if isinstance(value, (int, float)):
            table.add_row(key, _fmt(value))
    console.print(table)


def print_verdicts(lines: list[str], quiet: bool = False) -> None:
    """The model-vs-baseline lines after the metrics table: 'warning: ...' lines (the model does not
    beat a trivial baseline) are printed even with --quiet, like other warnings; the others not."""
    for line in lines:
        if not quiet or line.startswith("warning:"):
            print(line, file=sys.stderr, flush=True)
