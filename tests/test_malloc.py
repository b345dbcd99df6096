"""elmo_jax.malloc: opt-in (ELMO_JAX_MALLOC=keep) glibc tuning; a train step's temporaries stop
being page-faulted in again at every step."""
from __future__ import annotations

import json
import os
import platform
import subprocess
import sys

import pytest

pytestmark = pytest.mark.skipif(platform.system() != "Linux" or platform.libc_ver()[0] != "glibc",
                                reason="glibc malloc tuning (Linux only)")

# One program with large temporaries (XLA:CPU allocates them per execution and frees them after).
SCRIPT = r"""
import json, resource
import elmo_jax
import jax, jax.numpy as jnp
f = jax.jit(lambda x: jnp.cumsum(jnp.sin(x) * 2.0)[-1] + jnp.cumsum(jnp.cos(x))[-1])
x = jnp.ones((16 * 1024 * 1024,), jnp.float32)
for _ in range(3):
    f(x).block_until_ready()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(10):
    f(x).block_until_ready()
faults = (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / 10
print(json.dumps({"applied": elmo_jax.malloc.APPLIED, "faults_per_call": faults}))
"""


def run(env_extra: dict) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_") and k != "ELMO_JAX_MALLOC"}
    env.update(env_extra)
    out = subprocess.run([sys.executable, "-c", SCRIPT], env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_keep_applies_the_settings_and_cuts_page_faults() -> None:
    default = run({})
    keep = run({"ELMO_JAX_MALLOC": "keep"})
    assert default["applied"] == {}
    assert keep["applied"] == {"M_MMAP_MAX": 0, "M_TRIM_THRESHOLD": 2 ** 31 - 1, "M_ARENA_MAX": 1}
    # the temporaries are ~3 x 64 MB (49,000 pages): glibc's defaults map and fault them in afresh
    assert default["faults_per_call"] > 40_000, default
    assert keep["faults_per_call"] < 0.7 * default["faults_per_call"], (keep, default)


def test_the_users_malloc_settings_win() -> None:
    assert run({"ELMO_JAX_MALLOC": "keep", "MALLOC_ARENA_MAX": "4"})["applied"] == {}
    assert run({"ELMO_JAX_MALLOC": "keep", "GLIBC_TUNABLES": "glibc.malloc.hugetlb=1"})["applied"] == {}
