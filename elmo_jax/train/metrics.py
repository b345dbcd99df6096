"""Training metrics: interval averages from per-step sums, and one writer for metrics.jsonl and
TensorBoard (process 0 only). Shared by pretraining and task training."""
from __future__ import annotations

import json
from typing import Mapping, Optional

import jax

from .tensorboard import TensorBoardWriter


class IntervalMeans:
    """Sums and counts over a logging interval -> exact means.

    `add(sums, counts)` per step, with per-name loss sums and their token counts (`loss_fwd`:
    sum of losses, `tokens_fwd`: positions); `add_scalar(name, value)` for per-step values
    averaged over steps (grad_norm). `means()` returns the interval's averages and resets."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self._sums: dict[str, float] = {}
        self._counts: dict[str, float] = {}
        self._scalars: dict[str, float] = {}
        self.steps = 0

    def add(self, sums: Mapping[str, float], counts: Mapping[str, float]) -> None:
        for k, v in sums.items():
            self._sums[k] = self._sums.get(k, 0.0) + float(v)
            self._counts[k] = self._counts.get(k, 0.0) + float(counts[k])

    def add_scalar(self, name: str, value: float) -> None:
        self._scalars[name] = self._scalars.get(name, 0.0) + float(value)

    def step_done(self) -> None:
        self.steps += 1

    def state(self) -> dict:
        """The running sums as JSON (a checkpoint's meta); `restore` puts them back."""
        return {"sums": dict(self._sums), "counts": dict(self._counts), "scalars": dict(self._scalars),
                "steps": self.steps}

    def restore(self, state: dict) -> "IntervalMeans":
        self._sums, self._counts = dict(state["sums"]), dict(state["counts"])
        self._scalars, self.steps = dict(state["scalars"]), int(state["steps"])
        return self

    def means(self) -> dict[str, float]:
        out = {k: self._sums[k] / max(self._counts[k], 1.0) for k in self._sums}
        out.update({k: v / max(self.steps, 1) for k, v in self._scalars.items()})
        out["steps"] = self.steps
        self.reset()
        return out


class MetricsWriter:
    """Append-only JSONL records plus the same scalars as TensorBoard events, on process 0 only."""

    def __init__(self, path: str, tensorboard_dir: str, purge_step: Optional[int] = None):
        self.path = path
        self.enabled = jax.process_index() == 0
        self.tb = TensorBoardWriter(tensorboard_dir, enabled=self.enabled, purge_step=purge_step)

    def write(self, record: dict) -> None:
        if not self.enabled:
            return
        with open(self.path, "a", encoding="utf-8") as fh:
            fh.write(json.dumps(record) + "\n")
        self.tb.scalars(int(record["step"]), record)

    def flush(self) -> None:
        self.tb.flush()

    def close(self) -> None:
        self.tb.close()
