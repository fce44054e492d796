"""The loss curve of a run as a PNG (matplotlib, Agg; imported only when a plot is asked for): the
training loss per step, and the held-out evaluation loss (``"kind": "eval"`` records) as points
over it."""

from __future__ import annotations

import io
import math
from collections.abc import Sequence
from typing import Any

import fsspec
from fsspec.implementations.local import LocalFileSystem

from tunix_trainer.metric_record import EVAL_KIND

INSTALL_HINT = "pip install 'tunix-rt[plot]'"


class PlotUnavailable(RuntimeError):
    """matplotlib is not installed."""


def require_matplotlib() -> None:
    """Raise PlotUnavailable with an install hint when matplotlib cannot be imported."""
    try:
        import matplotlib  # noqa: F401
    except ImportError as exc:
        raise PlotUnavailable(f"plotting needs matplotlib ({INSTALL_HINT})") from exc


def loss_series(records: Sequence[dict[str, Any]], kind: str | None = None) -> tuple[list[int], list[float]]:
    """(steps, losses) of the step records (``kind`` None) or of the records of ``kind`` (e.g.
    ``"eval"``) with a finite loss, in step order."""
    points = sorted(
        (int(r["step"]), float(r["loss"]))
        for r in records
        if r.get("kind") == kind and isinstance(r.get("loss"), int | float) and math.isfinite(r["loss"])
    )
    return [step for step, _ in points], [loss for _, loss in points]


def ema(values: Sequence[float], alpha: float = 0.1) -> list[float]:
    """Exponential moving average (bias-corrected, so the first values are not pulled to 0)."""
    out, average, weight = [], 0.0, 0.0
    for value in values:
        average = (1 - alpha) * average + alpha * value
        weight = (1 - alpha) * weight + alpha
        out.append(average / weight)
    return out


def render_loss_png(records: Sequence[dict[str, Any]], *, title: str | None = None) -> bytes:
    """A PNG of loss against step (raw and smoothed), the best step marked, evaluations as points."""
    steps, losses = loss_series(records)
    eval_steps, eval_losses = loss_series(records, EVAL_KIND)
    if not steps:
        raise ValueError("no finite loss values to plot")
    require_matplotlib()
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(8, 4.5), dpi=100)
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    axes.plot(steps, losses, color="tab:blue", alpha=0.35, linewidth=1, label="loss")
    alpha = min(1.0, max(0.01, 10 / len(losses)))  # a window of about a tenth of the run
    axes.plot(steps, ema(losses, alpha), color="tab:blue", linewidth=2, label="loss (EMA)")
    best = min(range(len(losses)), key=losses.__getitem__)
    axes.scatter(
        [steps[best]],
        [losses[best]],
        color="tab:red",
        zorder=3,
        label=f"best {losses[best]:.4f} @ {steps[best]}",
    )
    if eval_steps:
        best_eval = min(range(len(eval_losses)), key=eval_losses.__getitem__)
        axes.plot(
            eval_steps,
            eval_losses,
            color="tab:orange",
            marker="o",
            linewidth=1.5,
            label=f"eval loss (best {eval_losses[best_eval]:.4f} @ {eval_steps[best_eval]})",
        )
    axes.set_xlabel("step")
    axes.set_ylabel("loss")
    axes.set_title(title or "training loss")
    axes.grid(True, alpha=0.3)
    axes.legend()
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    return buffer.getvalue()


def plot_loss(
    records: Sequence[dict[str, Any]],
    out: str,
    *,
    title: str | None = None,
    storage_options: dict | None = None,
) -> str:
    """Write the loss curve to ``out`` (a path or any fsspec URI); returns ``out``."""
    data = render_loss_png(records, title=title)
    fs, path = fsspec.core.url_to_fs(out, **(storage_options or {}))
    if isinstance(fs, LocalFileSystem):
        fs.makedirs(fs._parent(path), exist_ok=True)
    fs.pipe_file(path, data)
    return out
