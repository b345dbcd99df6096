"""Process set-up shared by every command: the cache directory (`$ELMO_JAX_CACHE_DIR`, default
~/.cache/elmo-jax: compiled XLA programs in `xla/`, downloaded models in `models/`), the persistent
XLA compile cache, multi-host `jax.distributed` initialisation (flags or ELMO_JAX_* environment
variables) and the CPU allocator hint."""
from __future__ import annotations

import os
from typing import Optional

import jax

from .errors import ElmoError
from .malloc import HUGETLB_TUNABLE, OPT_OUT, RESTARTED, hugetlb_helps, hugetlb_set


def cache_dir(*parts: str) -> str:
    """`$ELMO_JAX_CACHE_DIR` (default ~/.cache/elmo-jax), joined with `parts`; not created here."""
    root = os.environ.get("ELMO_JAX_CACHE_DIR") or os.path.join(os.path.expanduser("~"), ".cache", "elmo-jax")
    return os.path.join(os.path.expanduser(root), *parts)


def enable_compilation_cache() -> None:
    """Persist XLA programs across runs (`cache_dir('xla')`), so repeated runs skip compiling."""
    xla_dir = cache_dir("xla")
    try:
        os.makedirs(xla_dir, exist_ok=True)
        jax.config.update("jax_compilation_cache_dir", xla_dir)
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)
    except Exception:  # noqa: BLE001 - a read-only home directory must not stop the command
        pass


def init_distributed(coordinator: Optional[str] = None, num_processes: Optional[int] = None,
                     process_id: Optional[int] = None) -> None:
    """Multi-host: `jax.distributed.initialize` from arguments or the environment (before any jax op)."""
    coordinator = coordinator or os.environ.get("ELMO_JAX_COORDINATOR")
    n_proc = num_processes or os.environ.get("ELMO_JAX_NUM_PROCESSES")
    proc_id = process_id if process_id is not None else os.environ.get("ELMO_JAX_PROCESS_ID")
    if coordinator or n_proc:
        if not (coordinator and n_proc and proc_id is not None):
            raise ElmoError("multi-host needs --coordinator, --num-processes and --process-id "
                            "(or ELMO_JAX_COORDINATOR, ELMO_JAX_NUM_PROCESSES, ELMO_JAX_PROCESS_ID)")
        jax.distributed.initialize(coordinator_address=coordinator, num_processes=int(n_proc),
                                   process_id=int(proc_id))


def cpu_malloc_hint() -> Optional[str]:
    """The one line `train` prints about glibc's huge-page tunable (`elmo_jax.malloc`), or None:
    a note that it is on where the `elmo-jax` command restarted with it; a recommendation where it
    would help and is not set (Linux, glibc >= 2.35, transparent huge pages in `madvise` mode) on
    a CPU backend, e.g. for `train` called from Python, which cannot restart its caller."""
    if os.environ.get(RESTARTED) == "1" and hugetlb_set():
        return (f"elmo-jax: note: running with GLIBC_TUNABLES={HUGETLB_TUNABLE} (fewer page faults on this CPU; "
                f"{OPT_OUT}=0 turns it off)")
    if not hugetlb_helps() or jax.default_backend() != "cpu":
        return None
    return (f"elmo-jax: note: training on this CPU runs up to ~15% faster with GLIBC_TUNABLES={HUGETLB_TUNABLE} "
            "in the environment at start (fewer page faults; the elmo-jax command sets it itself; see the "
            "README's Performance section)")
