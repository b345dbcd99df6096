"""The training kit shared by pretraining (`train/loop.py`) and task training (`tasks/loop.py`):
plain functions, each loop keeps its own control flow.

    tx = with_clipping(optax.adam(lr), cfg.clip_norm)           # optimizer chain
    abstract, sh = plan_state(init, shardings_of, key)           # eval_shape -> shardings
    restored = ckpts.restore_latest(abstract, data_abstract)     # resume (None: nothing saved yet)
    state = restored.state if restored else create_state(init, sh, key)   # jit(out_shardings)
    step = compile_step(train_step, sh, mesh)                    # explicit shardings, state donated
    bar = progress_bar(total, enabled=progress)                  # process 0 only
    flight = InFlight()
    for ...:
        batch["stop"] = stop_input(guard.requested, mesh)        # preemption: every host's flag
        state, metrics = step(state, batch)                      # metrics["stop"] = stop_output(batch)
        previous = flight.push((step_no, metrics))               # lag-1: read the step before
        if previous: values = read_metrics(previous[1]); check_finite(values, ...)

Metrics records (interval averages, process 0 only) are `train/metrics.py`'s `IntervalMeans`
and `MetricsWriter`.
"""
from __future__ import annotations

import math
import sys
from typing import Any, Callable, Iterable, Optional

import jax
import jax.numpy as jnp
import numpy as np
import optax
from tqdm import tqdm

from .. import sharding as shd
from ..errors import ElmoError
from .checkpoint import Checkpoints, abstract_tree


def with_clipping(tx: optax.GradientTransformation, clip_norm: float) -> optax.GradientTransformation:
    """Global-norm clipping of the gradients to `clip_norm` (0: none), then `tx`."""
    return optax.chain(optax.clip_by_global_norm(clip_norm), tx) if clip_norm > 0 else tx


def plan_state(init: Callable[..., Any], shardings_of: Callable[[Any], Any], key: jax.Array,
               *args: Any) -> tuple[Any, Any]:
    """(abstract state carrying its shardings, shardings) of `init(key, *args)`, without computing
    it: `jax.eval_shape` gives the shapes, `shardings_of(abstract)` places each leaf. The abstract
    state is the Orbax restore target (`Checkpoints.restore_latest`) and the AOT-compilation input."""
    abstract = jax.eval_shape(init, key, *args)
    shardings = shardings_of(abstract)
    return abstract_tree(abstract, shardings), shardings


def create_state(init: Callable[..., Any], shardings: Any, key: jax.Array, *args: Any) -> Any:
    """`init(key, *args)` created directly in place on the devices (`jit(out_shardings=...)`):
    no host copy, no re-layout."""
    return jax.jit(init, out_shardings=shardings)(key, *args)


def replicated_shardings(mesh) -> Callable[[Any], Any]:
    """A `shardings_of` for `plan_state`: every leaf replicated (data parallelism)."""
    return lambda abstract: jax.tree_util.tree_map(lambda _: shd.replicated(mesh), abstract)


def compile_step(step: Callable, state_sharding: Any, mesh, **jit_kwargs: Any):
    """`step(state, ...) -> (state, metrics)` jitted with explicit output shardings (the state's
    own, metrics replicated) and the old state donated: updated in place, never two copies."""
    return jax.jit(step, donate_argnums=0, out_shardings=(state_sharding, shd.replicated(mesh)), **jit_kwargs)


def progress_bar(total: int, *, enabled: bool, initial: int = 0, desc: Optional[str] = None,
                 unit: str = "step", leave: bool = True) -> tqdm:
    """A tqdm bar on stderr, shown on process 0 only (disabled elsewhere, or when not `enabled`)."""
    return tqdm(total=total, initial=initial, desc=desc, unit=unit, leave=leave, file=sys.stderr,
                dynamic_ncols=True, disable=not enabled or jax.process_index() != 0)


class InFlight:
    """At most one step in flight: `push(item)` (the step's number and metrics on device, ...) hands
    back the previous step's item, which the loop reads while the pushed step runs (lag-1; it also
    keeps XLA's collectives from piling up); `pop()` takes the pending one (at the end, or before a
    synchronous point such as an evaluation or a checkpoint)."""

    def __init__(self) -> None:
        self.pending: Optional[tuple] = None

    def push(self, item: tuple) -> Optional[tuple]:
        previous, self.pending = self.pending, item
        return previous

    def pop(self) -> Optional[tuple]:
        previous, self.pending = self.pending, None
        return previous


def stop_input(requested: bool, mesh) -> jax.Array:
    """This host's stop request (`PreemptionGuard.requested`), one value per local device, as a
    global [devices] array over 'data': a step input whose maximum (`stop_output`) every host reads
    back from the same step's metrics, so all hosts stop after the same step (preemption.py)."""
    flags = np.full((jax.local_device_count(),), float(requested), np.float32)
    return shd.global_batch({"stop": flags}, mesh)["stop"]


def stop_output(batch: dict) -> jax.Array:
    """Inside a step: the maximum stop request over all hosts (0 without a 'stop' input)."""
    return jnp.max(batch["stop"]) if "stop" in batch else jnp.zeros((), jnp.float32)


def read_metrics(metrics: Any) -> dict[str, float]:
    """A finished step's metrics as Python floats (one device-to-host transfer)."""
    return {k: float(v) for k, v in jax.device_get(metrics).items()}


#: How `check_finite` names a metric in its message.
METRIC_NAMES = {"grad_norm": "gradient norm", "param_norm": "parameter norm"}


def check_finite(values: dict[str, float], step: int, keys: Iterable[str], ckpts: Checkpoints,
                 path: Optional[str], advice: str) -> None:
    """ElmoError naming the step, the values and the last good checkpoint when any of `keys` is
    not finite (after waiting for a save in flight, so that the one named is complete)."""
    keys = list(keys)
    if all(math.isfinite(values[k]) for k in keys):
        return
    ckpts.wait()
    shown = ", ".join(f"{METRIC_NAMES.get(k, k)} {values[k]}" for k in keys)
    raise ElmoError(f"non-finite loss at step {step} ({shown}); the last good checkpoint is "
                    f"{ckpts.describe_latest()}; {advice}", path)
