"""Safe week-long runs: unreadable checkpoints are skipped, failed saves keep the previous
checkpoint, one run per run directory, SIGTERM/SIGINT save and exit 0, a non-finite loss stops
the run naming the step and the last good checkpoint.

The unit tests use real files, real processes and real signals; the `slow` tests run the real
`elmo-jax train` command line in subprocesses."""
from __future__ import annotations

import errno
import json
import os
import re
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from elmo_jax.errors import ElmoError
from elmo_jax.train.checkpoint import CheckpointError, Checkpoints
from elmo_jax.train.preemption import PreemptionGuard
from elmo_jax.train.runlock import RunLock, RunLockedError

REPO = Path(__file__).resolve().parents[1]
# Orbax leaves the read coroutines of a failed restore to the garbage collector.
pytestmark = pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")


# --------------------------------------------------------------------------- checkpoints
def _state(step: int) -> dict:
    """A train-state-like tree whose arrays are large enough to be split over several files."""
    rng = np.random.default_rng(step)
    return {"params": {"w": jnp.asarray(rng.normal(size=(256, 128)), jnp.float32),
                       "b": jnp.asarray(rng.normal(size=(128,)), jnp.float32)},
            "step": jnp.asarray(step, jnp.int32)}


def _data(step: int) -> dict:
    return {"position": np.asarray([step, 7 * step], np.int64)}


ABSTRACT_STATE = jax.eval_shape(lambda: _state(0))
ABSTRACT_DATA = {"position": jax.ShapeDtypeStruct((2,), np.int64)}


def _save_steps(directory: Path, steps, keep: int = 5, async_save: bool = True) -> None:
    ckpts = Checkpoints(str(directory), keep=keep, async_save=async_save)
    try:
        for s in steps:
            assert ckpts.save(s, _state(s), _data(s), {"step": s, "model": "m"}, force=True)
    finally:
        ckpts.close()


def _assert_restored(restored, step: int) -> None:
    assert restored is not None and restored.step == step
    assert restored.meta == {"step": step, "model": "m"}
    for a, b in zip(jax.tree_util.tree_leaves(restored.state), jax.tree_util.tree_leaves(_state(step))):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    np.testing.assert_array_equal(np.asarray(restored.data["position"]), _data(step)["position"])


def _largest_file(directory: Path) -> Path:
    return max((p for p in directory.rglob("*") if p.is_file()), key=lambda p: p.stat().st_size)


def _truncate_state(step_dir: Path) -> None:
    big = _largest_file(step_dir / "state")
    with open(big, "r+b") as fh:
        fh.truncate(big.stat().st_size // 3)


def _delete_meta(step_dir: Path) -> None:
    (step_dir / "meta" / "metadata").unlink()


def _garble_state_metadata(step_dir: Path) -> None:
    (step_dir / "state" / "_METADATA").write_text("{not json")


def _delete_state_data(step_dir: Path) -> None:
    _largest_file(step_dir / "state").unlink()


def _warning_lines(err: str) -> list[str]:
    return [line for line in err.splitlines() if line.startswith("elmo-jax: warning: skipping unreadable")]


@pytest.mark.parametrize("corrupt", [_truncate_state, _delete_state_data, _delete_meta, _garble_state_metadata])
def test_unreadable_latest_checkpoint_falls_back_to_previous(tmp_path, capsys, corrupt):
    directory = tmp_path / "checkpoints"
    _save_steps(directory, [1, 2, 3])
    corrupt(directory / "3")
    ckpts = Checkpoints(str(directory), async_save=False)
    try:
        assert ckpts.all_steps() == [1, 2, 3]
        restored = ckpts.restore_latest(ABSTRACT_STATE, ABSTRACT_DATA)
        _assert_restored(restored, 2)
        warnings = _warning_lines(capsys.readouterr().err)
        assert len(warnings) == 1, warnings
        assert str(directory / "3") in warnings[0] and "falling back to step 2" in warnings[0]
        # set aside, so the run can save step 3 again
        assert ckpts.all_steps() == [1, 2]
        assert (tmp_path / "checkpoints.unreadable" / "3").is_dir()
        assert ckpts.save(3, _state(3), _data(3), {"step": 3, "model": "m"}, force=True)
        ckpts.wait()
    finally:
        ckpts.close()
    again = Checkpoints(str(directory), async_save=False)
    try:
        _assert_restored(again.restore_latest(ABSTRACT_STATE, ABSTRACT_DATA), 3)
    finally:
        again.close()


def test_two_unreadable_steps_fall_back_twice(tmp_path, capsys):
    directory = tmp_path / "checkpoints"
    _save_steps(directory, [1, 2, 3])
    _truncate_state(directory / "3")
    _delete_meta(directory / "2")
    ckpts = Checkpoints(str(directory), async_save=False)
    try:
        _assert_restored(ckpts.restore_latest(ABSTRACT_STATE, ABSTRACT_DATA), 1)
    finally:
        ckpts.close()
    warnings = _warning_lines(capsys.readouterr().err)
    assert len(warnings) == 2 and "/3 " in warnings[0] and "/2 " in warnings[1], warnings


def test_no_readable_checkpoint_is_a_clear_error(tmp_path):
    directory = tmp_path / "checkpoints"
    _save_steps(directory, [1, 2])
    _truncate_state(directory / "2")
    _delete_meta(directory / "1")
    ckpts = Checkpoints(str(directory), async_save=False)
    try:
        with pytest.raises(CheckpointError) as info:
            ckpts.restore_latest(ABSTRACT_STATE, ABSTRACT_DATA)
        message = str(info.value)
        assert str(directory) in message and "no readable checkpoint" in message
        assert "step 2" in message and "step 1" in message
        assert ckpts.all_steps() == [1, 2], "nothing may be moved aside when nothing could be restored"
    finally:
        ckpts.close()


def test_no_checkpoint_is_none(tmp_path):
    ckpts = Checkpoints(str(tmp_path / "checkpoints"), async_save=False)
    try:
        assert ckpts.restore_latest(ABSTRACT_STATE, ABSTRACT_DATA) is None
        assert ckpts.latest_readable_meta() is None
        assert ckpts.describe_latest() == "none"
    finally:
        ckpts.close()


def test_half_written_checkpoint_is_ignored(tmp_path, capsys):
    """A save killed before its rename leaves `<step>.orbax-checkpoint-tmp-<n>`: never a step."""
    directory = tmp_path / "checkpoints"
    _save_steps(directory, [1, 2])
    half = directory / "3.orbax-checkpoint-tmp-1234567"
    (half / "state").mkdir(parents=True)
    (half / "state" / "_METADATA").write_text("{partial")
    ckpts = Checkpoints(str(directory), async_save=False)
    try:
        assert ckpts.latest_step() == 2
        _assert_restored(ckpts.restore_latest(ABSTRACT_STATE, ABSTRACT_DATA), 2)
    finally:
        ckpts.close()
    assert not _warning_lines(capsys.readouterr().err)


def test_meta_first_then_restore_from_the_same_step(tmp_path, capsys):
    """`latest_readable_meta` (cheap, for the model-shape check) skips an unreadable meta with one
    warning; `restore_latest` then starts from that step without warning again; `check` sees each
    candidate's meta and what it raises propagates (another model is not a corrupt file)."""
    directory = tmp_path / "checkpoints"
    _save_steps(directory, [1, 2, 3])
    _delete_meta(directory / "3")
    ckpts = Checkpoints(str(directory), async_save=False)
    try:
        step, meta = ckpts.latest_readable_meta()
        assert (step, meta) == (2, {"step": 2, "model": "m"})
        seen = []
        restored = ckpts.restore_latest(ABSTRACT_STATE, ABSTRACT_DATA, check=lambda m, where: seen.append((m, where)))
        _assert_restored(restored, 2)
        assert seen == [({"step": 2, "model": "m"}, str(directory / "2"))]
        assert len(_warning_lines(capsys.readouterr().err)) == 1

        def wrong_model(m, where):
            raise CheckpointError("checkpoint is from a different model shape", where)

        with pytest.raises(CheckpointError, match="different model shape"):
            ckpts.restore_latest(ABSTRACT_STATE, ABSTRACT_DATA, check=wrong_model)
        assert ckpts.all_steps() == [1, 2]
    finally:
        ckpts.close()


FSIZE_WORKER = textwrap.dedent("""
    import json, os, resource, signal, sys
    import numpy as np, jax, jax.numpy as jnp
    from elmo_jax.train.checkpoint import CheckpointError, Checkpoints
    directory, async_save = sys.argv[1], sys.argv[2] == "async"
    ckpts = Checkpoints(directory, keep=1, async_save=async_save)
    state = lambda s: {"w": jnp.asarray(np.random.default_rng(s).normal(size=(256, 256)), jnp.float32)}
    ckpts.save(1, state(1), {"p": np.arange(2)}, {"step": 1}, force=True)
    ckpts.wait()
    # From here every write past 64 KiB fails as on a full disk (EFBIG instead of ENOSPC): the
    # real write path, TensorStore's C++ writers included.
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (64 * 1024, hard))
    result = {}
    try:
        ckpts.save(2, state(2), {"p": np.arange(2)}, {"step": 2}, force=True)
        ckpts.wait()
    except CheckpointError as e:
        result["error"] = str(e)
    resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
    result["steps"] = ckpts.all_steps()
    ckpts.close()
    print("RESULT " + json.dumps(result))
""")


@pytest.mark.parametrize("mode", ["async", "sync"])
def test_failed_save_keeps_previous_checkpoint(tmp_path, mode):
    """A save that fails on a real write error (file-size limit, as a full disk) is a
    CheckpointError naming the step and the reason; with keep=1 the previous checkpoint is still
    there (Orbax deletes old steps only after the new one is complete) and restores, and the
    failed step leaves no directory behind."""
    directory = tmp_path / "checkpoints"
    proc = subprocess.run([sys.executable, "-c", FSIZE_WORKER, str(directory), mode], capture_output=True,
                          text=True, timeout=300, env={**os.environ, "JAX_PLATFORMS": "cpu"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.split("RESULT ", 1)[1])
    assert "error" in result, "the save past the file-size limit did not fail"
    assert "saving checkpoint step 2 failed" in result["error"] and "File too large" in result["error"]
    assert "previous checkpoint is kept: step 1" in result["error"]
    assert result["steps"] == [1]
    assert sorted(os.listdir(directory)) == ["1"], "a failed save must leave nothing but the previous step"
    ckpts = Checkpoints(str(directory), async_save=False)
    try:
        restored = ckpts.restore_latest({"w": jax.ShapeDtypeStruct((256, 256), jnp.float32)}, None)
        assert restored.step == 1
        np.testing.assert_array_equal(np.asarray(restored.state["w"]),
                                      np.random.default_rng(1).normal(size=(256, 256)).astype(np.float32))
    finally:
        ckpts.close()


def test_disk_full_during_async_save_surfaces_as_checkpoint_error(tmp_path, monkeypatch):
    """ENOSPC in the background part of an asynchronous save (the meta file's write) surfaces at
    the next `wait` as a CheckpointError saying 'No space left on device'; the previous step stays
    and is the latest."""
    from orbax.checkpoint._src.handlers import json_checkpoint_handler

    directory = tmp_path / "checkpoints"
    ckpts = Checkpoints(str(directory), keep=1, async_save=True)
    try:
        ckpts.save(1, _state(1), _data(1), {"step": 1, "model": "m"}, force=True)
        ckpts.wait()

        async def disk_full(self, x, path):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))

        monkeypatch.setattr(json_checkpoint_handler.JsonCheckpointHandler, "_save_fn", disk_full)
        with pytest.raises(CheckpointError) as info:
            ckpts.save(2, _state(2), _data(2), {"step": 2, "model": "m"}, force=True)
            ckpts.wait()
        monkeypatch.undo()
        message = str(info.value)
        assert "step 2" in message and "No space left on device" in message and "step 1" in message
        assert ckpts.latest_step() == 1 and ckpts.all_steps() == [1]
        # the run can go on saving once there is space again
        ckpts.save(2, _state(2), _data(2), {"step": 2, "model": "m"}, force=True)
        ckpts.wait()
        assert ckpts.all_steps() == [2]
    finally:
        ckpts.close()
    assert sorted(os.listdir(directory)) == ["2"]


# --------------------------------------------------------------------------- run lock
LOCK_HOLDER = textwrap.dedent("""
    import sys, time
    from elmo_jax.train.runlock import RunLock
    with RunLock(sys.argv[1]):
        print("locked", flush=True)
        time.sleep(600)
""")


def test_run_lock_held_by_another_process(tmp_path):
    run = tmp_path / "run"
    holder = subprocess.Popen([sys.executable, "-c", LOCK_HOLDER, str(run)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(RunLockedError) as info:
            RunLock(str(run)).acquire()
        message = str(info.value)
        assert isinstance(info.value, ElmoError)
        assert "another elmo-jax run is using this run directory" in message
        assert f"pid {holder.pid} on host " in message and str(run) in message
        RunLock(str(run), enabled=False).acquire()  # not process 0 of a multi-host job: no lock
    finally:
        holder.kill()  # SIGKILL: no cleanup code runs; the kernel drops the lock
        holder.wait()
    with RunLock(str(run)) as lock:
        assert lock.held
        assert f"pid {os.getpid()} on host" in lock.holder()
    assert not lock.held


def test_run_lock_is_exclusive_within_a_process_too(tmp_path):
    with RunLock(str(tmp_path / "run")):
        with pytest.raises(RunLockedError, match=f"pid {os.getpid()}"):
            RunLock(str(tmp_path / "run")).acquire()
    with RunLock(str(tmp_path / "run")):  # released on exit
        pass


# --------------------------------------------------------------------------- preemption
def _wait_for(predicate, timeout: float = 5.0) -> bool:
    deadline = time.time() + timeout
    while not predicate() and time.time() < deadline:
        time.sleep(0.01)
    return predicate()


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_preemption_guard_sets_flag_on_a_real_signal(sig, capsys):
    before = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT)}
    with PreemptionGuard() as guard:
        assert not guard.requested
        os.kill(os.getpid(), sig)
        assert _wait_for(lambda: guard.requested), "the signal did not set the flag"
        assert guard.signal_name == sig.name
        os.kill(os.getpid(), signal.SIGTERM)  # a repeated SIGTERM is only noted
        time.sleep(0.05)
    assert {s: signal.getsignal(s) for s in before} == before, "previous handlers not restored"
    assert sig.name in capsys.readouterr().err


def test_second_sigint_while_stopping_force_quits():
    with PreemptionGuard() as guard:
        os.kill(os.getpid(), signal.SIGTERM)
        assert _wait_for(lambda: guard.requested)
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(1.0)


# --------------------------------------------------------------------------- the real CLI
CLI_ENV = {**os.environ, "JAX_PLATFORMS": "cpu", "HF_DATASETS_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}
STARTUP_S = 300  # first compile on 2 shared CPU cores


def _train_cmd(run: Path, *sets: str, resume: bool = False) -> list[str]:
    cmd = [sys.executable, "-m", "elmo_jax", "train", "--config", str(REPO / "configs" / "tiny.json"),
           "--run-dir", str(run), "--quiet"]
    for item in ("eval_every=0", *sets):
        cmd += ["--set", item]
    return cmd + (["--resume"] if resume else [])


def _start(run: Path, *sets: str, resume: bool = False) -> subprocess.Popen:
    return subprocess.Popen(_train_cmd(run, *sets, resume=resume), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=CLI_ENV, cwd=REPO)


def _metrics(run: Path) -> list[dict]:
    path = run / "metrics.jsonl"
    if not path.exists():
        return []
    lines = path.read_text().splitlines()
    out = []
    for line in lines:
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:  # a line being written
            pass
    return out


def _wait_metrics(proc: subprocess.Popen, run: Path, n: int, timeout: float = STARTUP_S) -> list[dict]:
    deadline = time.time() + timeout
    while time.time() < deadline:
        records = [r for r in _metrics(run) if "loss" in r]
        if len(records) >= n:
            return records
        if proc.poll() is not None:
            _, err = proc.communicate()
            pytest.fail(f"training exited {proc.returncode} before {n} metrics lines:\n{err[-3000:]}")
        time.sleep(0.2)
    proc.kill()
    pytest.fail(f"no {n} metrics lines within {timeout}s")


def _steps_on_disk(run: Path) -> list[int]:
    ckpt_dir = run / "checkpoints"
    return sorted(int(p.name) for p in ckpt_dir.iterdir() if p.name.isdigit()) if ckpt_dir.exists() else []


def _stop(proc: subprocess.Popen, sig: int, timeout: float = 120) -> tuple[int, str]:
    proc.send_signal(sig)
    try:
        _, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        _, err = proc.communicate()
        pytest.fail(f"no exit within {timeout}s of {signal.Signals(sig).name}:\n{err[-3000:]}")
    return proc.returncode, err


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signal_saves_a_checkpoint_exits_0_and_resumes(tmp_path, sig):
    run = tmp_path / "run"
    proc = _start(run, "max_steps=100000", "log_every=1", "checkpoint_every=100000")
    _wait_metrics(proc, run, 3)
    rc, err = _stop(proc, sig)
    assert rc == 0, f"exit status {rc} after {sig.name}:\n{err[-3000:]}"
    assert re.search(rf"{sig.name}|preempt", err, re.I), err[-3000:]
    last_logged = max(r["step"] for r in _metrics(run) if "loss" in r)
    steps = _steps_on_disk(run)
    assert steps and steps[-1] >= last_logged, (steps, last_logged)
    saved = steps[-1]
    assert not list((run / "checkpoints").glob("*.orbax-checkpoint-tmp*")), "the final save did not complete"

    more = _start(run, f"max_steps={saved + 2}", "log_every=1", "checkpoint_every=100000", resume=True)
    _, err2 = more.communicate(timeout=STARTUP_S + 120)
    assert more.returncode == 0, err2[-3000:]
    assert f"resumed from step {saved}" in err2
    after = [r["step"] for r in _metrics(run) if "loss" in r and r["step"] > saved]
    assert after[:2] == [saved + 1, saved + 2], after
    assert _steps_on_disk(run)[-1] == saved + 2


@pytest.mark.slow
def test_second_run_on_the_same_directory_refuses_to_start(tmp_path):
    run = tmp_path / "run"
    first = _start(run, "max_steps=100000", "log_every=1", "checkpoint_every=100000")
    try:
        seen = len(_wait_metrics(first, run, 2))
        second = _start(run, "max_steps=100000", "log_every=1", "checkpoint_every=100000")
        _, err = second.communicate(timeout=STARTUP_S)
        assert second.returncode == 1, err[-3000:]
        lines = [line for line in err.splitlines() if line.startswith("elmo-jax: error:")]
        assert len(lines) == 1 and "another elmo-jax run is using this run directory" in lines[0], err[-3000:]
        assert f"pid {first.pid} " in lines[0]
        assert "Traceback" not in err
        # the first run is undisturbed: still running, still logging
        assert first.poll() is None
        _wait_metrics(first, run, max(seen, len([r for r in _metrics(run) if "loss" in r])) + 2, timeout=120)
        assert first.poll() is None
    finally:
        rc, err = _stop(first, signal.SIGTERM)
    assert rc == 0, err[-3000:]


@pytest.mark.slow
def test_non_finite_loss_stops_naming_the_step_and_the_last_good_checkpoint(tmp_path):
    """2 good steps (checkpointed), then a learning rate of 1e30: the parameters blow up in the
    first step and the loss is NaN by the next. The run exits 1 with one error line naming the
    step and the last good checkpoint; that checkpoint's parameters are finite."""
    from elmo_jax.train.export import load_run_params

    run = tmp_path / "run"
    good = _start(run, "max_steps=2", "log_every=1", "checkpoint_every=1")
    _, err = good.communicate(timeout=STARTUP_S)
    assert good.returncode == 0, err[-3000:]
    bad = _start(run, "max_steps=50", "log_every=1", "checkpoint_every=1", "learning_rate=1e30", resume=True)
    _, err = bad.communicate(timeout=STARTUP_S + 120)
    assert bad.returncode == 1, err[-3000:]
    lines = [line for line in err.splitlines() if line.startswith("elmo-jax: error:")]
    assert len(lines) == 1 and "non-finite" in lines[0], err[-3000:]
    step = int(re.search(r"non-finite \w+ at step (\d+)", lines[0]).group(1))
    assert step >= 3
    steps = _steps_on_disk(run)
    last_good = steps[-1]
    assert last_good < step and last_good >= 2, (steps, step)
    named = str(run / "checkpoints" / str(last_good)) in lines[0] or re.search(rf"step {last_good}\b", lines[0])
    assert named, f"the last good checkpoint (step {last_good}) is not named: {lines[0]}"
    _, params, _, _ = load_run_params(str(run), last_good)
    assert all(np.isfinite(np.asarray(p)).all() for p in jax.tree_util.tree_leaves(params)), \
        f"the checkpoint named as last good (step {last_good}) holds non-finite parameters"
