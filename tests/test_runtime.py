"""`elmo_jax.runtime.cpu_malloc_hint`: when it recommends glibc's huge-page tunable."""
from __future__ import annotations

import os
import sys

import jax

from elmo_jax import runtime


def _conditions_hold() -> bool:
    """The hint's conditions, computed independently of `cpu_malloc_hint`."""
    if not sys.platform.startswith("linux") or jax.default_backend() != "cpu":
        return False
    try:
        name, version = os.confstr("CS_GNU_LIBC_VERSION").split()
        thp = open("/sys/kernel/mm/transparent_hugepage/enabled").read()
    except (OSError, ValueError, AttributeError):
        return False
    return name == "glibc" and tuple(map(int, version.split(".")[:2])) >= (2, 35) and "[madvise]" in thp


def test_hint_only_where_the_tunable_would_help(monkeypatch):
    monkeypatch.delenv("GLIBC_TUNABLES", raising=False)
    hint = runtime.cpu_malloc_hint()
    if _conditions_hold():
        assert hint is not None and "GLIBC_TUNABLES=glibc.malloc.hugetlb=1" in hint
    else:
        assert hint is None
    monkeypatch.setenv("GLIBC_TUNABLES", "glibc.malloc.arena_max=2:glibc.malloc.hugetlb=1")
    assert runtime.cpu_malloc_hint() is None  # already set
    monkeypatch.delenv("GLIBC_TUNABLES")
    monkeypatch.setattr(runtime.os, "confstr", lambda name: "glibc 2.34")  # before the tunable existed
    assert runtime.cpu_malloc_hint() is None
