"""bilm-tf fixture embeddings: max |difference| to the reference per compute dtype (prints numbers).

    python benchmarks/fixture_check.py [--fixture-dir DIR] [--dtypes float32,bfloat16]

Loads the bilm-tf test model (`options.json` + `lm_weights.hdf5`) and embeds the 30 sentences of
`lm_embeddings_sentences.json` statefully, 3 at a time, in the order the reference fed them
(sentence i of each of the 3 lists: s0[0], s1[0], s2[0], s0[1], ...; the LSTM state carried
from batch to batch, row r continuing row r), exactly as tests/test_embed.py does, then compares
the top layer ([forward top; backward top]) with `lm_embeddings_{0,1,2}.hdf5`. Prints the max
absolute difference over all sentences for each dtype (token cache on; `--token-cache on,off`
for both paths); float32 must stay within 1e-5 (format.md section 5), bfloat16 is reported only.

The fixture directory is the first of: --fixture-dir, $ELMO_JAX_FIXTURES, <repo>/../shared/
fixtures/bilm-tf, <repo>/shared/fixtures/bilm-tf, <repo>/.device/fixtures/bilm-tf (where
`benchmarks/device_check.sh --prepare` stages it for a device machine). Exit status 0 when
float32 is within tolerance, 1 when not, 2 when the fixtures are missing.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

FILES = ("options.json", "lm_weights.hdf5", "lm_embeddings_sentences.json",
         "lm_embeddings_0.hdf5", "lm_embeddings_1.hdf5", "lm_embeddings_2.hdf5")
TOL_FLOAT32 = 1e-5


def find_fixtures(given: str | None) -> str | None:
    candidates = [given, os.environ.get("ELMO_JAX_FIXTURES"),
                  os.path.join(REPO, "..", "shared", "fixtures", "bilm-tf"),
                  os.path.join(REPO, "shared", "fixtures", "bilm-tf"),
                  os.path.join(REPO, ".device", "fixtures", "bilm-tf")]
    for c in candidates:
        if c and all(os.path.isfile(os.path.join(c, f)) for f in FILES):
            return os.path.abspath(c)
    return None


def fixture_lines(d: str) -> list[list[str]]:
    """The 30 fixture sentences in the order the references fed them (as tests/test_embed.py)."""
    with open(os.path.join(d, "lm_embeddings_sentences.json"), encoding="utf-8") as fh:
        sentences = json.load(fh)
    return [sentences[k][i].strip().split() for i in range(10) for k in range(3)]


def expected_top(d: str, k: int, i: int) -> np.ndarray:
    import h5py

    with h5py.File(os.path.join(d, f"lm_embeddings_{k}.hdf5"), "r") as f:
        e = f[str(i)][()]
    return np.concatenate([e[0], e[1]], axis=-1)  # (n, 2P): [forward top; backward top]


def max_diff(d: str, dtype_name: str, cache_tokens: bool) -> tuple[float, float]:
    """(max |ours - reference| over the 30 sentences' top layers, seconds)."""
    import jax.numpy as jnp

    from elmo_jax import ElmoEmbedder

    dtype = jnp.bfloat16 if dtype_name == "bfloat16" else jnp.float32
    t0 = time.perf_counter()
    embedder = ElmoEmbedder.from_files(os.path.join(d, "options.json"), os.path.join(d, "lm_weights.hdf5"),
                                       stateful=True, batch_size=3, cache_tokens=cache_tokens, dtype=dtype)
    vectors = embedder.embed_sentences(fixture_lines(d))
    worst = 0.0
    for j, v in enumerate(vectors):
        i, k = divmod(j, 3)
        want = expected_top(d, k, i)
        worst = max(worst, float(np.abs(np.asarray(v[2], np.float64) - want).max()))
    return worst, time.perf_counter() - t0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--fixture-dir", default=None)
    ap.add_argument("--dtypes", default="float32,bfloat16")
    ap.add_argument("--token-cache", default="on", help="on, off or on,off (the embedder's cache_tokens)")
    args = ap.parse_args()
    d = find_fixtures(args.fixture_dir)
    if d is None:
        print("fixture check: bilm-tf fixtures not found (give --fixture-dir, or stage them with "
              "benchmarks/device_check.sh --prepare)", flush=True)
        return 2
    import jax

    dev = jax.devices()[0]
    print(f"fixture check: {d} on {dev.platform} ({getattr(dev, 'device_kind', '?')}), jax {jax.__version__}",
          flush=True)
    ok = True
    for dtype_name in [s.strip() for s in args.dtypes.split(",") if s.strip()]:
        for cache in [v.strip() == "on" for v in args.token_cache.split(",") if v.strip()]:
            worst, secs = max_diff(d, dtype_name, cache)
            verdict = ""
            if dtype_name == "float32":
                good = worst <= TOL_FLOAT32
                ok &= good
                verdict = f"  {'ok' if good else 'FAIL'} (tolerance {TOL_FLOAT32:g})"
            print(f"  {dtype_name:8s} token cache {'on ' if cache else 'off'}: max |diff| = {worst:.3e}  "
                  f"({secs:.1f} s){verdict}", flush=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
