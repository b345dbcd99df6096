"""Process set-up shared by every command: the cache directory (`$ELMO_JAX_CACHE_DIR`, default
~/.cache/elmo-jax: compiled XLA programs in `xla/`, downloaded models in `models/`), the persistent
XLA compile cache, multi-host `jax.distributed` initialisation (flags or ELMO_JAX_* environment
variables) and the CPU allocator hint."""
from __future__ import annotations

import os
import sys
from typing import Optional

import jax

from .errors import ElmoError


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


#: What `cpu_malloc_hint` recommends. XLA:CPU mallocs each train step's temporaries as one block
#: (hundreds of MiB) that glibc maps fresh every step, so every page of it faults on first touch
#: (~35,000 faults per mid-shape step on the 2-core CPU); with this tunable glibc asks for
#: transparent huge pages on such blocks and the faults drop ~10-fold. Measured with
#: benchmarks/vs_bilmtf.py, both trainers with and without it: elmo-jax mid 2,746 -> 3,200 tokens/s,
#: small 1,256 -> 1,334 (bilm-tf 1,863 -> 1,912 and 559 -> 547).
HUGETLB_TUNABLE = "glibc.malloc.hugetlb=1"


def cpu_malloc_hint() -> Optional[str]:
    """One line recommending `GLIBC_TUNABLES=glibc.malloc.hugetlb=1` where it would help: a CPU
    backend, Linux with glibc >= 2.35 (the tunable's first release), transparent huge pages in
    `madvise` mode, and the tunable not already set; else None. It must be set before the process
    starts (glibc reads it once)."""
    if not sys.platform.startswith("linux") or "glibc.malloc.hugetlb" in os.environ.get("GLIBC_TUNABLES", ""):
        return None
    try:
        libc = os.confstr("CS_GNU_LIBC_VERSION") or ""  # "glibc 2.36"
        major, minor = (int(v) for v in libc.split()[1].split(".")[:2])
        with open("/sys/kernel/mm/transparent_hugepage/enabled", encoding="ascii") as fh:
            thp = fh.read()
    except (ValueError, IndexError, OSError):
        return None
    if not libc.startswith("glibc") or (major, minor) < (2, 35) or "[madvise]" not in thp:
        return None
    if jax.default_backend() != "cpu":
        return None
    return (f"elmo-jax: note: training on this CPU runs up to ~15% faster with GLIBC_TUNABLES={HUGETLB_TUNABLE} "
            "in the environment (fewer page faults; see the README's Performance section)")
