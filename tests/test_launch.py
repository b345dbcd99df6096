"""`elmo_jax.launch`: when the `elmo-jax train` command restarts itself with glibc's huge-page
tunable, that the restart is the same process with the same command line, and that the tunable
does what the restart is for (fewer page faults on a large block)."""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

from elmo_jax import launch

TUNABLE = "glibc.malloc.hugetlb=1"


def _platform_allows() -> bool:
    """Linux, glibc >= 2.35 and THP in madvise mode, computed here independently of `launch`."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        name, version = os.confstr("CS_GNU_LIBC_VERSION").split()
        thp = open("/sys/kernel/mm/transparent_hugepage/enabled").read()
    except (OSError, ValueError, AttributeError):
        return False
    return name == "glibc" and tuple(map(int, version.split(".")[:2])) >= (2, 35) and "[madvise]" in thp


class _Dist:
    def __init__(self, name):
        self.metadata = {"Name": name}


def test_hugetlb_helps_matches_the_platform(monkeypatch):
    assert launch.hugetlb_helps({}) == _platform_allows()
    assert not launch.hugetlb_helps({"GLIBC_TUNABLES": f"glibc.malloc.arena_max=2:{TUNABLE}"})  # already set
    monkeypatch.setattr(launch.os, "confstr", lambda name: "glibc 2.34")  # before the tunable existed
    assert not launch.hugetlb_helps({})


def test_accelerator_expected(monkeypatch):
    assert launch.accelerator_expected({"JAX_PLATFORMS": "cuda"})
    assert launch.accelerator_expected({"JAX_PLATFORMS": "tpu,cpu"})
    assert not launch.accelerator_expected({"JAX_PLATFORMS": "cpu"})
    monkeypatch.setattr(launch.importlib.metadata, "distributions", lambda: [_Dist("numpy"), _Dist("jax")])
    assert not launch.accelerator_expected({})
    monkeypatch.setattr(launch.importlib.metadata, "distributions",
                        lambda: [_Dist("numpy"), _Dist("jax-cuda12-plugin")])
    assert launch.accelerator_expected({})
    assert not launch.accelerator_expected({"JAX_PLATFORMS": "cpu"})  # the user's choice wins


def test_tuned_environment_decisions(monkeypatch):
    monkeypatch.setattr(launch, "hugetlb_helps", lambda env: "glibc.malloc.hugetlb" not in env.get("GLIBC_TUNABLES", ""))
    base = {"PATH": "/bin", "JAX_PLATFORMS": "cpu"}
    env = launch.tuned_environment(["train", "--config", "c.json"], base)
    assert env == {**base, "GLIBC_TUNABLES": TUNABLE}
    assert launch.tuned_environment(["demo"], base) == env  # the README's main job pretrains too
    assert "GLIBC_TUNABLES" not in base  # the caller's mapping is left alone
    kept = launch.tuned_environment(["train"], {**base, "GLIBC_TUNABLES": "glibc.malloc.arena_max=2"})
    assert kept["GLIBC_TUNABLES"] == f"glibc.malloc.arena_max=2:{TUNABLE}"
    assert launch.tuned_environment(["train"], {**base, "GLIBC_TUNABLES": TUNABLE}) is None
    assert launch.tuned_environment(["train"], {**base, launch.OPT_OUT: "0"}) is None
    assert launch.tuned_environment(["train"], {**base, launch.OPT_OUT: "1"}) is not None
    assert launch.tuned_environment(["train"], {**base, "JAX_PLATFORMS": "cuda"}) is None
    for argv in ([], ["embed", "--input", "x"], ["perplexity"], ["--help"]):
        assert launch.tuned_environment(argv, base) is None, argv
    monkeypatch.setattr(launch, "hugetlb_helps", lambda env: False)
    assert launch.tuned_environment(["train"], base) is None


RESTART = textwrap.dedent("""
    import os, sys
    from elmo_jax import launch
    print(os.getpid(), os.environ.get("GLIBC_TUNABLES", "-"), sys.argv[1:], flush=True)
    if "GLIBC_TUNABLES" not in os.environ:
        launch.restart_with({**os.environ, "GLIBC_TUNABLES": launch.HUGETLB_TUNABLE}, quiet=False)
        print("not restarted", flush=True)
""")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="exec restart: Linux only")
def test_restart_is_the_same_process_and_command_line():
    env = {k: v for k, v in os.environ.items() if k != "GLIBC_TUNABLES"}
    proc = subprocess.run([sys.executable, "-c", RESTART, "a b", "--c"], capture_output=True, text=True, env=env,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    first, second = proc.stdout.splitlines()
    pid1, tun1, args1 = first.split(" ", 2)
    pid2, tun2, args2 = second.split(" ", 2)
    assert pid1 == pid2 and tun1 == "-" and tun2 == TUNABLE and args1 == args2 == "['a b', '--c']", proc.stdout
    assert f"restarting with GLIBC_TUNABLES={TUNABLE}" in proc.stderr
    assert f"{launch.OPT_OUT}=0" in proc.stderr


FAULTS = textwrap.dedent("""
    import ctypes, resource
    libc = ctypes.CDLL(None)
    libc.malloc.restype = ctypes.c_void_p
    size = 64 << 20   # 64 MiB: above glibc's mmap threshold (as XLA's per-step block is)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    block = libc.malloc(ctypes.c_size_t(size))
    ctypes.memset(block, 1, size)   # first touch of every page
    print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
""")


@pytest.mark.skipif(not _platform_allows(), reason="needs Linux, glibc >= 2.35 and THP in madvise mode")
def test_the_tunable_cuts_page_faults_on_a_large_block():
    """What the restart is for: a 64 MiB block from glibc's malloc faults per 4 KiB page (16,384)
    without the tunable and per 2 MiB huge page with it. (NumPy asks for huge pages for its own
    arrays; XLA's buffers come from plain malloc.)"""
    plain = {k: v for k, v in os.environ.items() if k != "GLIBC_TUNABLES"}
    faults = {}
    for name, env in (("plain", plain), ("tuned", {**plain, "GLIBC_TUNABLES": TUNABLE})):
        proc = subprocess.run([sys.executable, "-c", FAULTS], capture_output=True, text=True, env=env, timeout=120)
        assert proc.returncode == 0, proc.stderr
        faults[name] = int(proc.stdout.split()[-1])
    assert faults["plain"] >= 8000, faults
    assert faults["tuned"] * 4 < faults["plain"], faults


def test_train_command_restarts_only_where_it_helps(tmp_path):
    """`python -m elmo_jax train --help` (the real entry point): the note where the platform allows
    and no opt-out; never with ELMO_JAX_MALLOC_TUNING=0 or for other commands."""
    env = {k: v for k, v in os.environ.items() if k != "GLIBC_TUNABLES"}
    env["JAX_PLATFORMS"] = "cpu"

    def run(*args, **extra):
        proc = subprocess.run([sys.executable, "-m", "elmo_jax", *args], capture_output=True, text=True,
                              env={**env, **extra}, timeout=300, cwd=tmp_path)
        assert proc.returncode == 0, proc.stderr
        return proc

    note = "restarting with GLIBC_TUNABLES"
    assert (note in run("train", "--help").stderr) == _platform_allows()
    assert note not in run("train", "--help", **{launch.OPT_OUT: "0"}).stderr
    assert note not in run("models", "--help").stderr
