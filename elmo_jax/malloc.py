"""glibc's huge-page tunable for CPU training: where it takes effect (standard library only).

XLA:CPU allocates each train step's temporaries as one block of hundreds of MiB, which glibc maps
afresh every step, so each of its 4 KiB pages faults on first touch (about 35,000 faults per step
at bilm-tf's mid shape on the 2-core CPU, 95,000 at the small one). With
`GLIBC_TUNABLES=glibc.malloc.hugetlb=1` glibc asks for transparent huge pages on such blocks and
the faults drop about tenfold: side by side with bilm-tf (benchmarks/vs_bilmtf.py) elmo-jax went
from 2,746 to 3,200 tokens/s at mid and from 1,256 to 1,334 at small. glibc reads the tunable
once, at process start: the `elmo-jax` command restarts itself with it (`launch`), `train()`
called from Python recommends it (`runtime.cpu_malloc_hint`).
"""
from __future__ import annotations

import os
import sys
from typing import Mapping

#: The tunable (glibc >= 2.35).
HUGETLB_TUNABLE = "glibc.malloc.hugetlb=1"
#: Set to "1" by the command's restart (`launch`): the tunable in this process is the command's doing.
RESTARTED = "ELMO_JAX_MALLOC_TUNED"
#: "0" turns the command's restart off.
OPT_OUT = "ELMO_JAX_MALLOC_TUNING"


def hugetlb_set(environ: Mapping[str, str] = os.environ) -> bool:
    """Whether `GLIBC_TUNABLES` already asks for huge pages."""
    return "glibc.malloc.hugetlb" in environ.get("GLIBC_TUNABLES", "")


def hugetlb_helps(environ: Mapping[str, str] = os.environ) -> bool:
    """True where the tunable would take effect and is not set yet: Linux, glibc >= 2.35 (its
    first release) and transparent huge pages in `madvise` mode (in `always` mode glibc's blocks
    get huge pages anyway; in `never` mode the tunable does nothing)."""
    if not sys.platform.startswith("linux") or hugetlb_set(environ):
        return False
    try:
        libc = os.confstr("CS_GNU_LIBC_VERSION") or ""  # "glibc 2.36"
        major, minor = (int(v) for v in libc.split()[1].split(".")[:2])
        with open("/sys/kernel/mm/transparent_hugepage/enabled", encoding="ascii") as fh:
            thp = fh.read()
    except (ValueError, IndexError, OSError, AttributeError):
        return False
    return libc.startswith("glibc") and (major, minor) >= (2, 35) and "[madvise]" in thp
