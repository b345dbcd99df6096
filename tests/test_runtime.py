"""`elmo_jax.runtime.cpu_malloc_hint`: when it recommends glibc's huge-page tunable, and the note
where the command restarted with it."""
from __future__ import annotations

import jax

from elmo_jax import malloc, runtime

from test_launch import platform_allows


def _conditions_hold() -> bool:
    """The hint's conditions, computed independently of `cpu_malloc_hint`: the platform's (shared
    with test_launch) and a CPU backend."""
    return platform_allows() and jax.default_backend() == "cpu"


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
