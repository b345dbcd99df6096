"""All device-layout decisions in one place: a 1-D mesh over every device of every host, the batch
split over its 'data' axis, params and optimizer state replicated except (optionally) the softmax,
whose rows are split over the devices when it is too large to replicate (a 793k-word vocabulary).
"""
from __future__ import annotations

import sys
from typing import Any, Optional

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from .configbase import ConfigError

DATA_AXIS = "data"
#: Replicate a softmax up to this many bytes (W + b); larger ones are row-sharded ("auto").
SOFTMAX_REPLICATE_LIMIT = 1 << 30


def make_mesh() -> Mesh:
    """A mesh over all devices (all hosts) with one axis, 'data'."""
    # Auto axes: jit's sharding propagation decides intermediate layouts (no sharding-in-types).
    return jax.make_mesh((jax.device_count(),), (DATA_AXIS,), axis_types=(jax.sharding.AxisType.Auto,))


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, P())


def batch_sharding(mesh: Mesh, ndim: int, axis: int = 0) -> NamedSharding:
    """Split dimension `axis` of an `ndim`-D array over the devices."""
    spec = [None] * ndim
    spec[axis] = DATA_AXIS
    return NamedSharding(mesh, P(*spec))


def should_shard_softmax(setting: str, vocab_size: int, dim: int, mesh: Mesh) -> bool:
    """Split the softmax rows over the devices? Needs the vocabulary size to divide evenly."""
    divisible = vocab_size % mesh.size == 0
    if setting == "true":
        if not divisible:
            raise ConfigError(f"config key 'shard_softmax' is true but the vocabulary size {vocab_size} is not "
                              f"divisible by the {mesh.size} devices (add unused words to the vocabulary, "
                              "or use shard_softmax=auto)")
        return True
    if setting == "false" or mesh.size == 1:
        return False
    big = vocab_size * (dim + 1) * 4 > SOFTMAX_REPLICATE_LIMIT
    if big and not divisible:
        print(f"elmo-jax: note: the softmax ({vocab_size} words) is replicated: its size is not divisible by "
              f"the {mesh.size} devices", file=sys.stderr)
    return big and divisible


def is_softmax_rows(path: Any, shape: tuple, vocab_size: int) -> bool:
    """Is the leaf at `path` (a pytree key path) one of the softmax's [V, ...] row tables: its W, its
    b, or an optimizer slot of either? The one rule for the row-sharded layout and the sparse update."""
    return "'softmax'" in jax.tree_util.keystr(path) and tuple(shape)[:1] == (vocab_size,)


def state_shardings(abstract_state: Any, mesh: Mesh, shard_softmax: bool, vocab_size: int) -> Any:
    """Shardings for a train-state pytree: LSTM carries split on their row axis, softmax rows (and
    their optimizer slots) split if `shard_softmax`, the rest replicated."""

    def choose(path, leaf) -> NamedSharding:
        keys = jax.tree_util.keystr(path)
        shape = getattr(leaf, "shape", ())
        if "'lstm_state'" in keys:
            return batch_sharding(mesh, len(shape), axis=2)  # [L, 2, B, dim]
        if shard_softmax and is_softmax_rows(path, shape, vocab_size):
            return batch_sharding(mesh, len(shape), axis=0)
        return replicated(mesh)

    return jax.tree_util.tree_map_with_path(choose, abstract_state)


#: The pretraining batch's arrays whose rows are not on axis 0: token_index and token_ids (word
#: input), both [Dn, B, T]. Task batches keep rows on axis 0 (their `token_ids` is [B, T]).
LM_BATCH_ROW_AXIS = {"token_index": 1, "token_ids": 1}


def global_batch(local: dict[str, np.ndarray], mesh: Mesh,
                 row_axis: Optional[dict[str, int]] = None) -> dict[str, jax.Array]:
    """Per-host batch arrays (this host's rows) -> global arrays split over 'data' on their row
    axis: `row_axis[k]` (e.g. `LM_BATCH_ROW_AXIS` for pretraining batches), else 0."""
    row_axis = row_axis or {}
    return {k: jax.make_array_from_process_local_data(batch_sharding(mesh, v.ndim, row_axis.get(k, 0)), v)
            for k, v in local.items()}


def host_rows(global_batch_size: int) -> tuple[int, int]:
    """(first row, row count) of this host's slice of the global batch."""
    n_proc, index = jax.process_count(), jax.process_index()
    if global_batch_size % jax.device_count():
        raise ValueError(f"batch_size {global_batch_size} is not divisible by the {jax.device_count()} devices")
    rows = global_batch_size // n_proc
    return index * rows, rows
