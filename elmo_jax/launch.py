"""How the `elmo-jax` command starts (`elmo-jax`, `python -m elmo_jax`, `python train.py`).

`elmo-jax train` (and `demo`, which pretrains) on a Linux CPU restarts itself once, before the
training stack is imported, with glibc's huge-page tunable added to its environment
(`GLIBC_TUNABLES=glibc.malloc.hugetlb=1`; why and what it gains: `elmo_jax.malloc`). glibc reads
the tunable once, at process start, so a running process cannot set it for itself; the restart
is an `exec` of the same command line: same process id, arguments, standard streams and working
directory. It is silent; `train` prints a one-line note when it starts (so that bad input still
gives one line). `ELMO_JAX_MALLOC_TUNING=0` keeps the environment as it is. Only the command
restarts: `elmo_jax.cli.main` and `elmo_jax.train.loop.train`, called from Python, never do.

This module imports only the standard library. The package's `__init__` has loaded jax by the
time it runs (about 1 s, spent twice on a restart); the command's own modules (datasets, the
training stack) load after the restart.
"""
from __future__ import annotations

import importlib.metadata
import os
import sys
from typing import Mapping, Optional, Sequence

from .malloc import HUGETLB_TUNABLE, OPT_OUT, RESTARTED, hugetlb_helps

#: Commands that restart with the tunable: those that pretrain (where it was measured).
TUNED_COMMANDS = ("train", "demo")
#: Distributions that bring a jax accelerator backend (then the CPU allocator matters little).
ACCELERATOR_PLUGINS = ("jax-cuda", "jax_cuda", "jax-rocm", "jax_rocm", "jax-metal", "jax_metal", "libtpu")


def accelerator_expected(environ: Mapping[str, str] = os.environ) -> bool:
    """Whether jax will likely run on an accelerator, decided without importing jax: from
    `JAX_PLATFORMS` when set (anything but `cpu` first), else from an installed accelerator plugin."""
    platforms = [p.strip() for p in environ.get("JAX_PLATFORMS", "").split(",") if p.strip()]
    if platforms:
        return platforms[0] != "cpu"
    try:
        names = {(dist.metadata["Name"] or "").lower() for dist in importlib.metadata.distributions()}
    except Exception:  # noqa: BLE001 - a broken installation record must not stop the command
        return False
    return any(name.startswith(ACCELERATOR_PLUGINS) for name in names)


def tuned_environment(argv: Sequence[str], environ: Mapping[str, str] = os.environ) -> Optional[dict]:
    """The environment to restart `elmo-jax ARGV` with, or None to run as is: a command of
    `TUNED_COMMANDS`, not turned off by `ELMO_JAX_MALLOC_TUNING=0`, where `hugetlb_helps` and no
    accelerator is expected. Other tunables already in `GLIBC_TUNABLES` are kept."""
    if not argv or argv[0] not in TUNED_COMMANDS or environ.get(OPT_OUT, "").strip() == "0":
        return None
    if not hugetlb_helps(environ) or accelerator_expected(environ):
        return None
    env = dict(environ)
    env["GLIBC_TUNABLES"] = ":".join(t for t in (environ.get("GLIBC_TUNABLES", ""), HUGETLB_TUNABLE) if t)
    env[RESTARTED] = "1"
    return env


def restart_with(env: dict) -> None:
    """Replace this process by the same command line under `env` (returns only if that fails)."""
    orig_argv = getattr(sys, "orig_argv", None)  # Python >= 3.10: the interpreter's own arguments
    if not orig_argv or not sys.executable:
        return
    sys.stdout.flush()
    sys.stderr.flush()
    try:
        os.execve(sys.executable, [sys.executable, *orig_argv[1:]], env)
    except OSError as e:  # the run goes on without the tunable
        print(f"elmo-jax: note: could not restart with GLIBC_TUNABLES={env.get('GLIBC_TUNABLES')} ({e}); "
              "continuing without it", file=sys.stderr)


def restart_where_it_helps(argv: Sequence[str]) -> None:
    """Restart this process with `tuned_environment(argv)` where that is not None (the command's
    entry point; `benchmarks/train.py` as `train`); otherwise return at once."""
    env = tuned_environment(argv)
    if env is not None:
        restart_with(env)


def main(prefix: Sequence[str] = ()) -> int:
    """The command's entry point: `elmo_jax.cli.main([*prefix, *sys.argv[1:]])`, after the restart
    above where it applies."""
    argv = [*prefix, *sys.argv[1:]]
    restart_where_it_helps(argv)
    from .cli import main as cli_main  # noqa: PLC0415 - the training stack loads after the restart

    return cli_main(argv)
