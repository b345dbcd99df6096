"""Orbax checkpoints of the whole train state plus the data position.

Layout: `RUN_DIR/checkpoints/<step>/{state, data, meta}`. Orbax writes each step into a
temporary directory and renames it when complete, so a process killed at any moment (SIGKILL
during a save included) leaves the previous complete checkpoints intact; a restart restores the
latest complete one. `meta` records the model options and vocabulary size, so restoring into a
different model shape is a clear error before any compute.
"""
from __future__ import annotations

import contextlib
import logging
import os
from typing import Any, Iterator, Optional

import jax
import orbax.checkpoint as ocp

from ..errors import ElmoError


@contextlib.contextmanager
def _quiet_partial_restore() -> Iterator[None]:
    """Orbax warns for every saved item a restore does not ask for (reading only `meta` is meant)."""
    logger = logging.getLogger("absl")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


class CheckpointError(ElmoError):
    """A checkpoint that cannot be used with this run (other model shape, corrupt, partial)."""


class Checkpoints:
    """Save/restore `{state, data, meta}` every N steps, keeping the last K."""

    def __init__(self, directory: str, keep: int = 2, async_save: bool = True):
        self.directory = os.path.abspath(directory)
        self.manager = ocp.CheckpointManager(
            self.directory,
            options=ocp.CheckpointManagerOptions(max_to_keep=keep, create=True, cleanup_tmp_directories=True,
                                                 enable_async_checkpointing=async_save))

    def latest_step(self) -> Optional[int]:
        return self.manager.latest_step()

    def all_steps(self) -> list[int]:
        return list(self.manager.all_steps())

    def save(self, step: int, state: Any, data: Any, meta: dict, force: bool = False) -> bool:
        return self.manager.save(step, args=ocp.args.Composite(
            state=ocp.args.StandardSave(state), data=ocp.args.StandardSave(data),
            meta=ocp.args.JsonSave(meta)), force=force)

    def read_meta(self, step: int) -> dict:
        try:
            with _quiet_partial_restore():
                restored = self.manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))
        except Exception as e:
            raise CheckpointError(f"cannot read checkpoint step {step} ({type(e).__name__}: {e})",
                                  os.path.join(self.directory, str(step)))
        return dict(restored["meta"])

    def restore(self, step: int, abstract_state: Any, abstract_data: Any) -> tuple[Any, Any, dict]:
        """Restore into the shapes/shardings of `abstract_*` (jax.ShapeDtypeStruct trees)."""
        where = os.path.join(self.directory, str(step))
        try:
            with _quiet_partial_restore():
                restored = self.manager.restore(step, args=ocp.args.Composite(
                    state=ocp.args.StandardRestore(abstract_state), data=ocp.args.StandardRestore(abstract_data),
                    meta=ocp.args.JsonRestore()))
        except Exception as e:
            raise CheckpointError(f"cannot restore checkpoint ({type(e).__name__}: {str(e)[:300]})", where)
        return restored["state"], restored["data"], dict(restored["meta"])

    def wait(self) -> None:
        self.manager.wait_until_finished()

    def close(self) -> None:
        self.manager.wait_until_finished()
        self.manager.close()


def abstract_tree(tree: Any, shardings: Any) -> Any:
    """ShapeDtypeStructs with shardings describing `tree`: an Orbax restore target."""
    return jax.tree_util.tree_map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), tree, shardings)
