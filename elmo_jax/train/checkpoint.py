"""Orbax checkpoints of the whole train state plus the data position.

Layout: `RUN_DIR/checkpoints/<step>/{state, data, meta}`. `meta` records the model options and
vocabulary size, so restoring into a different model shape is a clear error before any compute.

Safety, for runs that last weeks:

- Half-written checkpoints are never used. Orbax writes each step into
  `<step>.orbax-checkpoint-tmp-<n>` and renames it when every file is complete, so a process
  killed at any moment (SIGKILL during a save included) leaves the previous complete checkpoints
  intact; the tmp directory is not a step and is cleaned up at the next start.
- An unreadable checkpoint (a file truncated or deleted afterwards, a disk error) is skipped:
  `restore_latest` warns on stderr, one line naming the step directory and the reason, and falls
  back to the previous step; the skipped directories are moved aside to `checkpoints.unreadable/`
  so that the run can later save those step numbers again. Only when no step is readable is it
  an error (`CheckpointError` naming the directory).
- A failed save (disk full, quota, read-only directory) is a `CheckpointError` naming the step
  and the reason, raised by `save` (or, saves being asynchronous, by the next `save`, `wait` or
  `close`). The previous checkpoints stay: Orbax deletes the ones beyond `keep` only after the new
  one is complete, and a failed save never becomes a step (its tmp directory is removed).
"""
from __future__ import annotations

import contextlib
import glob
import logging
import os
import re
import shutil
import sys
import time
from typing import Any, Callable, Iterator, NamedTuple, Optional

import jax
import numpy as np
import orbax.checkpoint as ocp
from jax.experimental import multihost_utils

from ..errors import ElmoError

UNREADABLE_SUFFIX = ".unreadable"


@contextlib.contextmanager
def quiet_partial_restore() -> Iterator[None]:
    """Orbax warns for every saved item a restore does not ask for (reading only `meta` is meant),
    and logs a traceback for each failed read (`restore_latest` reports those in one line)."""
    logger = logging.getLogger("absl")
    level = logger.level
    logger.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        logger.setLevel(level)


class CheckpointError(ElmoError):
    """A checkpoint that cannot be used with this run (other model shape, corrupt, partial), or a
    checkpoint that could not be saved."""


class Restored(NamedTuple):
    step: int
    state: Any
    data: Any
    meta: dict


def _reason(e: BaseException, limit: int = 240) -> str:
    """One line: the OS error if there is one (also inside TensorStore's messages), the exception
    type and the start of its message."""
    text = " ".join(str(e).split())
    if isinstance(e, OSError) and e.strerror:
        text = f"{e.strerror}{': ' + str(e.filename) if e.filename else ''}"
        return f"{type(e).__name__}: {text}"
    text = text if len(text) <= limit else text[:limit] + "..."
    text = f"{type(e).__name__}: {text}" if text else type(e).__name__
    code = re.search(r"os_error_code='(\d+)'", str(e))
    if code:  # TensorStore: "... Failed to write N bytes to file 7: No space left on device [os_error_code='28']"
        text = f"{os.strerror(int(code.group(1)))}; {text}"
    return text


def _all_hosts(ok: bool) -> bool:
    """True when `ok` holds on every host (the same answer everywhere; no-op on one host)."""
    if jax.process_count() == 1:
        return ok
    flags = multihost_utils.process_allgather(np.asarray(int(ok), np.int32))
    return bool(np.all(np.asarray(flags)))


def warn(message: str) -> None:
    """One warning line on stderr (process 0 only)."""
    if jax.process_index() == 0:
        print(f"elmo-jax: warning: {message}", file=sys.stderr, flush=True)


class Checkpoints:
    """Save/restore `{state, data, meta}` every N steps, keeping the last K."""

    def __init__(self, directory: str, keep: int = 2, async_save: bool = True, use_ocdbt: bool = True,
                 read_only: bool = False):
        """`read_only`: for readers of a finished run (export, perplexity, init_from): the directory
        must exist, nothing is created or cleaned up there. `use_ocdbt=False` writes the state's arrays as plain zarr files, chunk by chunk (with
        `save(chunk_bytes=...)`): memory stays bounded when the state is memory-mapped host arrays
        (OCDBT holds a whole save's data until it commits). Restoring reads either format."""
        self.directory = os.path.abspath(directory)
        if read_only and not os.path.isdir(self.directory):
            raise CheckpointError("no complete checkpoint in the run directory", os.path.dirname(self.directory))
        handlers = None if use_ocdbt else {"state": ocp.StandardCheckpointHandler(use_ocdbt=False),
                                           "data": ocp.StandardCheckpointHandler(),
                                           "meta": ocp.JsonCheckpointHandler()}
        self.manager = ocp.CheckpointManager(
            self.directory,
            options=ocp.CheckpointManagerOptions(max_to_keep=keep, create=not read_only,
                                                 cleanup_tmp_directories=not read_only,
                                                 enable_async_checkpointing=async_save and not read_only),
            item_handlers=handlers)
        self._pending: Optional[int] = None  # step of an asynchronous save not yet known complete
        self._unreadable: dict[int, str] = {}  # step -> reason, found by this process

    # ------------------------------------------------------------------ listing
    def latest_step(self) -> Optional[int]:
        """The newest complete step (readable or not; see `restore_latest`)."""
        return self.manager.latest_step()

    def all_steps(self) -> list[int]:
        return sorted(self.manager.all_steps())

    def step_dir(self, step: int) -> str:
        return os.path.join(self.directory, str(step))

    def describe_latest(self) -> str:
        """'step N (DIR)' of the newest complete checkpoint, or 'none': for error messages."""
        step = self.latest_step()
        return "none" if step is None else f"step {step} ({self.step_dir(step)})"

    # ------------------------------------------------------------------ reading
    def read_meta(self, step: int) -> dict:
        try:
            with quiet_partial_restore():
                restored = self.manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))
            meta = restored["meta"]
            if not isinstance(meta, dict):
                raise ValueError(f"meta is a {type(meta).__name__}, not a JSON object")
        except Exception as e:
            raise CheckpointError(f"cannot read checkpoint step {step} ({_reason(e)})", self.step_dir(step))
        return dict(meta)

    def restore(self, step: int, abstract_state: Any, abstract_data: Any) -> tuple[Any, Any, dict]:
        """Restore into the shapes/shardings of `abstract_*` (jax.ShapeDtypeStruct trees)."""
        try:
            with quiet_partial_restore():
                restored = self.manager.restore(step, args=ocp.args.Composite(
                    state=ocp.args.StandardRestore(abstract_state), data=ocp.args.StandardRestore(abstract_data),
                    meta=ocp.args.JsonRestore()))
        except Exception as e:
            raise CheckpointError(f"cannot restore checkpoint ({_reason(e)})", self.step_dir(step))
        return restored["state"], restored["data"], dict(restored["meta"])

    def restore_part(self, step: int, abstract_part: dict) -> dict:
        """Only the state's top-level entries in `abstract_part` (e.g. all but the optimizer state,
        whose Adagrad slots for a 793k-word softmax are 1.6 GB); the rest is not read."""
        try:
            with quiet_partial_restore():
                restored = self.manager.restore(step, args=ocp.args.Composite(state=ocp.args.PyTreeRestore(
                    item=abstract_part, restore_args=ocp.checkpoint_utils.construct_restore_args(abstract_part),
                    partial_restore=True)))
        except Exception as e:
            raise CheckpointError(f"cannot restore checkpoint ({_reason(e)})", self.step_dir(step))
        return dict(restored["state"])

    def _skip(self, step: int, reason: str, steps: list[int]) -> None:
        self._unreadable[step] = reason
        older = [s for s in steps if s < step and s not in self._unreadable]
        then = f"falling back to step {max(older)}" if older else "no earlier checkpoint"
        warn(f"skipping unreadable checkpoint {self.step_dir(step)} ({reason}); {then}")

    def _candidates(self) -> list[int]:
        return [s for s in sorted(self.all_steps(), reverse=True) if s not in self._unreadable]

    def _none_readable(self, steps: list[int]) -> CheckpointError:
        reasons = "; ".join(f"step {s}: {self._unreadable[s]}" for s in sorted(steps, reverse=True)
                            if s in self._unreadable)
        return CheckpointError(f"no readable checkpoint (steps {sorted(steps)} are all unreadable: {reasons}); "
                               "move the directory aside to start afresh", self.directory)

    def latest_readable_meta(self) -> Optional[tuple[int, dict]]:
        """(step, meta) of the newest checkpoint whose meta reads, warning for each newer one that
        does not; None when there is no checkpoint; CheckpointError when none reads. Cheap (JSON
        only): for checking the model shape before building anything. `restore_latest` then starts
        from the same step (steps found unreadable here are not tried again)."""
        steps = self.all_steps()
        if not steps:
            return None
        for step in self._candidates():
            reason = None
            try:
                meta, ok = self.read_meta(step), True
            except CheckpointError as e:
                meta, ok, reason = None, False, e.detail
            if not _all_hosts(ok):
                self._skip(step, reason if not ok else "unreadable on another host", steps)
                continue
            return step, meta
        raise self._none_readable(steps)

    def restore_latest(self, abstract_state: Any, abstract_data: Any,
                       check: Optional[Callable[[dict, str], None]] = None,
                       set_aside: bool = True) -> Optional[Restored]:
        """Restore the newest readable checkpoint: `Restored(step, state, data, meta)`, or None when
        there is no checkpoint at all.

        A step that cannot be read (a truncated or missing file, unreadable metadata) is skipped
        with a one-line warning on stderr naming its directory and the reason, and the previous
        step is tried; when none can be read, CheckpointError naming the directory. `check(meta,
        step_dir)` runs on each candidate's meta before its arrays are read; what it raises (e.g.
        a CheckpointError for another model shape) propagates: a wrong model is not a corrupt
        file. With `set_aside`, the skipped steps newer than the one restored are moved to
        `<directory>.unreadable/<step>` (process 0), so that the run can save those steps again
        and the next start does not trip over them. All hosts agree on the step restored."""
        steps = self.all_steps()
        if not steps:
            return None
        for step in self._candidates():
            where = self.step_dir(step)
            reason = None
            try:
                meta = self.read_meta(step)
            except CheckpointError as e:
                meta, reason = None, e.detail
            if _all_hosts(reason is None):
                if check is not None:
                    check(meta, where)
                try:
                    state, data, _ = self.restore(step, abstract_state, abstract_data)
                except CheckpointError as e:
                    reason = e.detail
                if _all_hosts(reason is None):
                    if set_aside:
                        self._set_aside([s for s in self._unreadable if s > step])
                    return Restored(step, state, data, meta)
            self._skip(step, reason or "unreadable on another host", steps)
        raise self._none_readable(steps)

    def _set_aside(self, steps: list[int]) -> None:
        if steps and jax.process_index() == 0:
            aside = self.directory.rstrip(os.sep) + UNREADABLE_SUFFIX
            os.makedirs(aside, exist_ok=True)
            for step in sorted(steps):
                target = os.path.join(aside, str(step))
                if os.path.exists(target):
                    target = f"{target}.{int(time.time())}"
                try:
                    os.rename(self.step_dir(step), target)
                    warn(f"moved unreadable checkpoint {self.step_dir(step)} to {target}")
                except OSError as e:
                    raise CheckpointError(f"cannot move unreadable checkpoint step {step} aside to {target} "
                                          f"({_reason(e)}); move or delete it by hand", self.step_dir(step))
        if steps:
            if jax.process_count() > 1:
                multihost_utils.sync_global_devices("elmo_jax:checkpoints_set_aside")
            for step in steps:
                self._unreadable.pop(step, None)
            self.manager.reload()

    # ------------------------------------------------------------------ saving
    def save(self, step: int, state: Any, data: Any, meta: dict, force: bool = False,
             chunk_bytes: Optional[int] = None) -> bool:
        """Start saving `step` (asynchronously unless `async_save=False`). Raises CheckpointError if
        this save, or the previous asynchronous one, failed; the checkpoints before it are kept.
        `chunk_bytes` bounds the size of each stored chunk of the state's arrays."""
        self.wait()
        save_args = None if chunk_bytes is None else jax.tree_util.tree_map(
            lambda _: ocp.SaveArgs(chunk_byte_size=chunk_bytes), state)
        try:
            saved = self.manager.save(step, args=ocp.args.Composite(
                state=ocp.args.StandardSave(state, save_args=save_args), data=ocp.args.StandardSave(data),
                meta=ocp.args.JsonSave(meta)), force=force)
        except Exception as e:
            raise self._save_failed(step, e) from e
        self._pending = step if saved else None
        return saved

    def wait(self) -> None:
        """Block until the asynchronous save in flight is complete; CheckpointError if it failed."""
        step, self._pending = self._pending, None
        try:
            self.manager.wait_until_finished()
        except Exception as e:
            raise self._save_failed(step, e) from e

    def _save_failed(self, step: Optional[int], e: BaseException) -> CheckpointError:
        """Clean up after a failed save (its tmp directory; Orbax's in-memory step list); the error."""
        if jax.process_index() == 0 and step is not None:
            for tmp in glob.glob(os.path.join(glob.escape(self.directory), f"{step}.orbax-checkpoint-tmp*")):
                shutil.rmtree(tmp, ignore_errors=True)
        with contextlib.suppress(Exception):
            self.manager.reload()
        kept = self.describe_latest()
        what = f"step {step}" if step is not None else "a checkpoint"
        return CheckpointError(f"saving checkpoint {what} failed ({_reason(e)}); the previous checkpoint is kept: "
                               f"{kept}", self.directory)

    def close(self) -> None:
        """Wait for the save in flight (CheckpointError if it failed) and release Orbax's threads."""
        try:
            self.wait()
        finally:
            with contextlib.suppress(Exception):
                self.manager.close()


def abstract_tree(tree: Any, shardings: Any) -> Any:
    """ShapeDtypeStructs with shardings describing `tree`: an Orbax restore target."""
    return jax.tree_util.tree_map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), tree, shardings)
