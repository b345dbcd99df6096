"""One run per run directory: an exclusive lock on `RUN_DIR/.lock`.

Two processes training into the same run directory would interleave checkpoints and metrics and
corrupt each other's resume; the second one refuses to start instead:

    with RunLock(run_dir, enabled=jax.process_index() == 0):
        ...train...

The lock is `flock(LOCK_EX | LOCK_NB)` on an open file, so the kernel releases it whenever the
holder exits, however it exits (SIGKILL and power loss of the holder's host included): there is
no stale lock to clean up by hand. The file keeps the holder's pid and host for the error message
(and stays after the run; it is not the lock, the `flock` is). Only process 0 of a multi-host job
takes the lock (`enabled`); the other processes of the same job share its directory by design.
The descriptor is not inherited by subprocesses started with exec. On NFS, `flock` is emulated
with POSIX byte-range locks, which are visible across clients (NFSv4, and NFSv3 with lockd).
"""
from __future__ import annotations

import errno
import fcntl
import os
import socket
from typing import Optional

from ..errors import ElmoError

LOCK_FILE = ".lock"


class RunLockedError(ElmoError):
    """Another live process holds the run directory's lock."""


class RunLock:
    """Exclusive, non-blocking lock of a run directory (a context manager; also `acquire()` /
    `release()`). Creates the directory if needed."""

    def __init__(self, run_dir: str, enabled: bool = True):
        self.run_dir = os.path.abspath(run_dir)
        self.path = os.path.join(self.run_dir, LOCK_FILE)
        self.enabled = enabled
        self._fd: Optional[int] = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def holder(self) -> str:
        """'pid N on host H' as the holder wrote it (or 'unknown' while it is being written)."""
        try:
            with open(self.path, encoding="utf-8", errors="replace") as fh:
                fields = dict(line.split("=", 1) for line in fh.read().splitlines() if "=" in line)
        except OSError:
            fields = {}
        if "pid" in fields:
            return f"pid {fields['pid']} on host {fields.get('host', '?')}"
        return "unknown process"

    def acquire(self) -> "RunLock":
        if not self.enabled or self._fd is not None:
            return self
        os.makedirs(self.run_dir, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)  # no O_TRUNC: the holder's details stay
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            os.close(fd)
            if e.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise RunLockedError(f"another elmo-jax run is using this run directory ({self.holder()}); "
                                     "wait for it to finish, stop it, or use another --run-dir", self.run_dir)
            raise RunLockedError(f"cannot lock the run directory ({e.strerror or e})", self.path)
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid={os.getpid()}\nhost={socket.gethostname()}\n".encode(), 0)
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is not None:
            fd, self._fd = self._fd, None
            try:
                fcntl.flock(fd, fcntl.LOCK_UN)
            finally:
                os.close(fd)

    def __enter__(self) -> "RunLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()
