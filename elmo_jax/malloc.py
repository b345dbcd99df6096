"""Opt-in glibc malloc tuning that keeps freed memory in the process: `ELMO_JAX_MALLOC=keep`.

XLA:CPU allocates a step's large temporaries (tens of MB each) with malloc and frees them after the
step. With glibc's defaults each one is a fresh `mmap`, so every step page-faults its temporaries
in again: about 150,000 faults (600 MB zeroed by the kernel) per train step at bilm-tf's small
shape, 8-16% of the step's wall time on a 2-core CPU (`benchmarks/train.py`, interleaved runs).
With `ELMO_JAX_MALLOC=keep` in the environment, importing `elmo_jax` makes glibc serve large
blocks from its heap and never hand freed memory back (`mallopt`: M_MMAP_MAX 0, M_TRIM_THRESHOLD
2 GiB, one arena so that XLA's worker threads share the heap the main thread grew). It must run
before those threads start, hence at import.

Off by default, because what it buys depends on the shape and the cost is memory. Measured on a
2-core CPU (interleaved runs; `benchmarks/train.py`): the small shape's step 8-16% faster (faults
per step 118,000 -> 400), the mid shape's within the run-to-run noise or slower (its temporaries
are smaller; the single arena's lock costs its many small allocations), and the resident set
grows by the heap's high-water mark (+100-200 MB at the mid shape) and never shrinks. A
microbenchmark that allocates a fresh 64 MB output per call grew the heap to 1.4 GB: fragmentation
is possible. Nothing happens off Linux/glibc, or when `MALLOC_*` variables or a `glibc.malloc`
tunable are set (the user's settings win).
"""
from __future__ import annotations

import ctypes
import os
import platform

# mallopt parameters (glibc malloc.h)
M_TRIM_THRESHOLD = -1
M_MMAP_MAX = -4
M_ARENA_MAX = -8

#: The settings applied, {name: value}; empty when untouched (see `tune`).
APPLIED: dict[str, int] = {}


def _user_has_settings() -> bool:
    if any(k.startswith("MALLOC_") for k in os.environ):
        return True
    return "glibc.malloc" in os.environ.get("GLIBC_TUNABLES", "")


def tune() -> dict[str, int]:
    """Apply the settings once when `ELMO_JAX_MALLOC=keep` (idempotent); returns what was applied."""
    if APPLIED or os.environ.get("ELMO_JAX_MALLOC", "").lower() != "keep" or _user_has_settings():
        return APPLIED
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return APPLIED
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return APPLIED
    settings = {"M_MMAP_MAX": (M_MMAP_MAX, 0), "M_TRIM_THRESHOLD": (M_TRIM_THRESHOLD, 2 ** 31 - 1),
                "M_ARENA_MAX": (M_ARENA_MAX, 1)}
    for name, (param, value) in settings.items():
        if libc.mallopt(param, value) == 1:
            APPLIED[name] = value
    return APPLIED
