"""`elmo-jax plot RUN_DIR`: the learning curve of a run as a PNG, drawn with matplotlib.

Train perplexity and validation perplexity (the average of the two LMs, and the forward and
backward LMs when logged) against step, log-scale y axis, axis labels, the run's name as title,
a legend and a grid. matplotlib is an optional extra (`pip install 'elmo-jax[plot]'`); it is
imported only when a figure is made, so the rest of the package never needs it.
"""
from __future__ import annotations

import math
import os
from typing import TYPE_CHECKING, Iterable, Optional

from ..errors import ElmoError
from ..io_utils import atomic_output, check_output_file, read_json_objects

if TYPE_CHECKING:  # pragma: no cover
    from matplotlib.figure import Figure

METRICS_FILE = "metrics.jsonl"
INSTALL_HINT = "pip install 'elmo-jax[plot]'"

# (metrics key, legend label, matplotlib style) in drawing order
SERIES = (
    ("perplexity", "train", dict(color="tab:blue", linewidth=1.5)),
    ("val_perplexity", "validation", dict(color="tab:orange", linewidth=2, marker="o", markersize=4)),
    ("val_perplexity_fwd", "validation, forward LM",
     dict(color="tab:green", linewidth=1, linestyle="--", marker=".", markersize=4)),
    ("val_perplexity_bwd", "validation, backward LM",
     dict(color="tab:red", linewidth=1, linestyle="--", marker=".", markersize=4)),
)


def read_metrics(run_dir: str) -> list[dict]:
    """The records of RUN_DIR/metrics.jsonl, in file order (blank lines skipped).

    Raises `ElmoError` naming the file (and the line) for a missing file, a line that is not a
    JSON object, or a record without an integer `step`."""
    path = os.path.join(run_dir, METRICS_FILE)
    if not os.path.isdir(run_dir):
        raise ElmoError("run directory not found", run_dir)
    if not os.path.exists(path):
        raise ElmoError("no metrics.jsonl: not a training run directory, or nothing logged yet", run_dir)
    records = []
    for lineno, rec in read_json_objects(path):
        step = rec.get("step")
        if isinstance(step, bool) or not isinstance(step, (int, float)) or step != int(step):
            raise ElmoError(f"line {lineno}: no integer 'step' (got {step!r})", path)
        records.append(rec)
    return records


def series(records: Iterable[dict], key: str) -> tuple[list[int], list[float]]:
    """(steps, values) of `key`, sorted by step. A step logged twice (a run resumed from an earlier
    checkpoint logs its steps again) keeps its last value; values that a log axis cannot show
    (non-numeric, non-finite, <= 0) are left out."""
    by_step: dict[int, float] = {}
    for rec in records:
        value = rec.get(key)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            continue
        if math.isfinite(value) and value > 0:
            by_step[int(rec["step"])] = float(value)
        else:
            by_step.pop(int(rec["step"]), None)
    steps = sorted(by_step)
    return steps, [by_step[s] for s in steps]


def _matplotlib():
    try:  # lazy: matplotlib is the optional `plot` extra; without it only plotting fails
        import matplotlib

        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        raise ElmoError(f"plotting needs matplotlib, which is not installed: {INSTALL_HINT}")
    return matplotlib, Figure, FigureCanvasAgg


def make_figure(records: list[dict], title: str, size: tuple[float, float] = (8.0, 5.0),
                dpi: int = 100) -> "Figure":
    """A matplotlib Figure (Agg canvas, no pyplot state) of the perplexities in `records`."""
    _, Figure, FigureCanvasAgg = _matplotlib()
    fig = Figure(figsize=size, dpi=dpi)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    drawn: list[float] = []
    for key, label, style in SERIES:
        steps, values = series(records, key)
        if steps:
            ax.plot(steps, values, label=label, **style)
            drawn += values
    if not drawn:
        raise ElmoError("metrics.jsonl has no perplexity values yet")
    ax.set_yscale("log")
    from matplotlib.ticker import (  # lazy: the optional `plot` extra (see _matplotlib)
        LogFormatter, MaxNLocator, NullLocator, ScalarFormatter)

    if max(drawn) / min(drawn) < 3:  # too narrow for decade ticks: evenly spaced plain numbers
        ax.yaxis.set_major_locator(MaxNLocator(nbins=6))
        ax.yaxis.set_major_formatter(ScalarFormatter(useOffset=False))
        ax.yaxis.set_minor_locator(NullLocator())
    else:  # plain numbers (100, 200, 500 rather than 10^2); minor ticks labelled below ~2 decades
        ax.yaxis.set_major_formatter(LogFormatter(labelOnlyBase=False))
        ax.yaxis.set_minor_formatter(LogFormatter(labelOnlyBase=False, minor_thresholds=(2, 0.5)))
    ax.set_xlabel("step")
    ax.set_ylabel("perplexity (log scale)")
    ax.set_title(title)
    ax.grid(True, which="major", alpha=0.5)
    ax.grid(True, which="minor", alpha=0.15)
    ax.legend(loc="upper right")
    fig.tight_layout()
    return fig


def plot_run(run_dir: str, output: Optional[str] = None, size: tuple[float, float] = (8.0, 5.0),
             dpi: int = 100, overwrite: bool = False) -> str:
    """Draw the learning curve of `run_dir` into a PNG of size[0]*dpi x size[1]*dpi pixels; returns
    its path. The default, RUN_DIR/learning_curve.png, is replaced at each call; an `output` that
    exists is replaced only with `overwrite`, and never when it is the metrics file read."""
    if output is not None:
        check_output_file(output, inputs=(os.path.join(run_dir, METRICS_FILE),), overwrite=overwrite)
    records = read_metrics(run_dir)
    name = os.path.basename(os.path.normpath(os.path.abspath(run_dir)))
    if not any(series(records, key)[0] for key, _, _ in SERIES):
        raise ElmoError("no perplexity values logged yet", os.path.join(run_dir, METRICS_FILE))
    fig = make_figure(records, name, size=size, dpi=dpi)
    output = output or os.path.join(run_dir, "learning_curve.png")
    with atomic_output(output, suffix=".png.tmp") as tmp:
        fig.savefig(tmp, format="png", dpi=dpi)
    return output
