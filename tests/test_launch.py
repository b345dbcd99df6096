"""`elmo_jax.launch` and `elmo_jax.malloc`: when the `elmo-jax train` command restarts itself with
glibc's huge-page tunable, that the restart is the same process with the same command line, what
`train` then says, and that the tunable does what the restart is for (fewer page faults on a
large block)."""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from elmo_jax import launch, malloc

TUNABLE = "glibc.malloc.hugetlb=1"


def platform_allows() -> bool:
    """Linux, glibc >= 2.35 and THP in madvise mode, computed here independently of `malloc`."""
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
    assert malloc.hugetlb_helps({}) == platform_allows()
    assert not malloc.hugetlb_helps({"GLIBC_TUNABLES": f"glibc.malloc.arena_max=2:{TUNABLE}"})  # already set
    monkeypatch.setattr(malloc.os, "confstr", lambda name: "glibc 2.34")  # before the tunable existed
    assert not malloc.hugetlb_helps({})


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
    assert env == {**base, "GLIBC_TUNABLES": TUNABLE, malloc.RESTARTED: "1"}
    assert launch.tuned_environment(["demo"], base) == env  # the README's main job pretrains too
    assert "GLIBC_TUNABLES" not in base  # the caller's mapping is left alone
    kept = launch.tuned_environment(["train"], {**base, "GLIBC_TUNABLES": "glibc.malloc.arena_max=2"})
    assert kept["GLIBC_TUNABLES"] == f"glibc.malloc.arena_max=2:{TUNABLE}"
    assert launch.tuned_environment(["train"], {**base, "GLIBC_TUNABLES": TUNABLE}) is None
    assert launch.tuned_environment(["train"], {**base, malloc.OPT_OUT: "0"}) is None
    assert launch.tuned_environment(["train"], {**base, malloc.OPT_OUT: "1"}) is not None
    assert launch.tuned_environment(["train"], {**base, "JAX_PLATFORMS": "cuda"}) is None
    for argv in ([], ["embed", "--input", "x"], ["perplexity"], ["--help"]):
        assert launch.tuned_environment(argv, base) is None, argv
    monkeypatch.setattr(launch, "hugetlb_helps", lambda env: False)
    assert launch.tuned_environment(["train"], base) is None


RESTART = textwrap.dedent("""
    import os, sys
    from elmo_jax import launch, malloc
    print(os.getpid(), os.environ.get("GLIBC_TUNABLES", "-"), sys.argv[1:], flush=True)
    if "GLIBC_TUNABLES" not in os.environ:
        launch.restart_with({**os.environ, "GLIBC_TUNABLES": launch.HUGETLB_TUNABLE})
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
    assert proc.stderr == ""  # silent: `train` says it when it starts


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


@pytest.mark.skipif(not platform_allows(), reason="needs Linux, glibc >= 2.35 and THP in madvise mode")
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


@pytest.mark.slow
def test_train_command_runs_with_the_tunable_where_it_helps(tmp_path):
    """The real command (`python -m elmo_jax train`, one step of the tiny config): where the
    platform allows, it runs with the tunable and says so in one note line; with
    ELMO_JAX_MALLOC_TUNING=0 it runs without and recommends it instead."""
    env = {k: v for k, v in os.environ.items() if k not in ("GLIBC_TUNABLES", malloc.RESTARTED)}
    env.update(JAX_PLATFORMS="cpu", HF_DATASETS_OFFLINE="1")
    tiny = Path(__file__).resolve().parents[1] / "configs" / "tiny.json"

    def run(name, **extra):
        proc = subprocess.run([sys.executable, "-m", "elmo_jax", "train", "--config", str(tiny), "--run-dir",
                               str(tmp_path / name), "--set", "max_steps=1", "--set", "eval_every=0"],
                              capture_output=True, text=True, env={**env, **extra}, timeout=600, cwd=tmp_path)
        assert proc.returncode == 0, proc.stderr[-3000:]
        return [line for line in proc.stderr.splitlines() if "GLIBC_TUNABLES" in line]

    tuned = run("tuned")
    plain = run("plain", **{malloc.OPT_OUT: "0"})
    if platform_allows():
        assert len(tuned) == 1 and f"running with GLIBC_TUNABLES={TUNABLE}" in tuned[0], tuned
        assert len(plain) == 1 and "faster with GLIBC_TUNABLES" in plain[0], plain
    else:
        assert tuned == plain == []
