"""`elmo_jax.runtime.cpu_malloc_hint`: when it recommends glibc's huge-page tunable, and the note
where the command restarted with it."""
from __future__ import annotations

import os
import sys

import jax

from elmo_jax import malloc, runtime


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
    monkeypatch.delenv(malloc.RESTARTED, raising=False)
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


def test_note_where_the_command_restarted_with_the_tunable(monkeypatch):
    monkeypatch.setenv(malloc.RESTARTED, "1")
    monkeypatch.setenv("GLIBC_TUNABLES", "glibc.malloc.hugetlb=1")
    note = runtime.cpu_malloc_hint()
    assert note is not None and "running with GLIBC_TUNABLES=glibc.malloc.hugetlb=1" in note
    assert f"{malloc.OPT_OUT}=0" in note
    monkeypatch.delenv("GLIBC_TUNABLES")  # the marker alone (e.g. inherited) claims nothing
    assert "running with" not in (runtime.cpu_malloc_hint() or "")
