"""Embedding throughput of `ElmoEmbedder.embed_sentences` (prints numbers; not a test).

    python benchmarks/embed.py [--shapes fixture,small,original] [--sentences 1000] [--batch-size 64]

Sentences: natural English words taken from the docstrings of the Python standard library,
lengths uniform in 10..40 tokens, fixed seed. For each model: the first pass (compiles
included) and the median of `--repeats` later passes (compiled, token cache cleared before
each pass so the char-CNN work is counted), in tokens/s.
"""
from __future__ import annotations

import argparse
import ast
import os
import statistics
import sys
import sysconfig
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

FIXTURES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "shared", "fixtures", "bilm-tf")


def stdlib_words(limit: int = 400_000) -> list[str]:
    """Whitespace tokens of standard-library docstrings (deterministic order)."""
    root = sysconfig.get_paths()["stdlib"]
    words: list[str] = []
    for name in sorted(os.listdir(root)):
        if not name.endswith(".py"):
            continue
        try:
            tree = ast.parse(open(os.path.join(root, name), encoding="utf-8").read())
        except (SyntaxError, UnicodeDecodeError):
            continue
        for node in ast.walk(tree):
            if isinstance(node, (ast.Module, ast.FunctionDef, ast.ClassDef, ast.AsyncFunctionDef)):
                doc = ast.get_docstring(node)
                if doc:
                    words.extend(doc.split())
        if len(words) >= limit:
            break
    return words


def make_sentences(n: int, seed: int = 0, lo: int = 10, hi: int = 40) -> list[list[str]]:
    words = stdlib_words()
    rng = np.random.default_rng(seed)
    out, pos = [], 0
    for _ in range(n):
        k = int(rng.integers(lo, hi + 1))
        if pos + k > len(words):
            pos = 0
        out.append(words[pos:pos + k])
        pos += k
    return out


def build(shape: str):
    import jax
    import jax.numpy as jnp

    from elmo_jax.chars import batch_to_ids
    from elmo_jax.modules import BiLM
    from elmo_jax.options import original_options, small_options
    from elmo_jax.weights import load_model

    if shape == "fixture":
        options, params, _ = load_model(os.path.join(FIXTURES, "options.json"),
                                        os.path.join(FIXTURES, "lm_weights.hdf5"))
        return options, params
    options = {"small": small_options(), "original": original_options()}[shape]
    ids, _ = batch_to_ids([["a"]])
    params = BiLM(options).init(jax.random.key(0), jnp.asarray(ids))["params"]
    return options, params


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shapes", default="fixture,small,original")
    ap.add_argument("--sentences", type=int, default=1000)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--no-token-cache", action="store_true", help="run the char-CNN inside every batch")
    ap.add_argument("--hoist-input", action="store_true", help="precompute x @ W_x outside the scan")
    ap.add_argument("--scan-unroll", type=int, default=1,
                    help="LSTM time steps per scan iteration (ElmoEmbedder(scan_unroll=...))")
    ap.add_argument("--cli", action="store_true",
                    help="instead: time `elmo-jax embed` as a whole process on the small shape "
                         "(start-up and compilation included), cold and warm compilation cache")
    args = ap.parse_args()
    if args.cli:
        return time_cli(args)

    import jax

    from elmo_jax.embed import ElmoEmbedder

    sentences = make_sentences(args.sentences)
    n_tokens = sum(len(s) for s in sentences)
    print(f"{len(sentences)} sentences, {n_tokens} tokens, {len({w for s in sentences for w in s})} distinct; "
          f"batch {args.batch_size}; jax {jax.__version__} on {jax.devices()[0].platform} "
          f"({os.cpu_count()} cpus)")
    for shape in args.shapes.split(","):
        if shape == "fixture" and not os.path.exists(FIXTURES):
            print(f"{shape}: skipped ({FIXTURES} missing)")
            continue
        options, params = build(shape)
        embedder = ElmoEmbedder(options, params, batch_size=args.batch_size,
                                cache_tokens=not args.no_token_cache, hoist_input=args.hoist_input,
                                scan_unroll=args.scan_unroll)
        t0 = time.perf_counter()
        embedder.embed_sentences(sentences)
        first = time.perf_counter() - t0
        times = []
        for _ in range(args.repeats):
            embedder._token_index.clear()
            embedder._token_table = embedder._token_table[:0]
            t0 = time.perf_counter()
            embedder.embed_sentences(sentences)
            times.append(time.perf_counter() - t0)
        med = statistics.median(times)
        print(f"{shape:9s} L={options.n_layers} H={options.lstm_dim} P={options.projection_dim}: "
              f"{n_tokens / med:8.0f} tokens/s compiled (median of {args.repeats}: {med:.2f} s); "
              f"first pass {first:.2f} s incl. compiles ~{max(first - med, 0):.2f} s")


def time_cli(args: argparse.Namespace) -> None:
    """Whole-process `elmo-jax embed` timing, as a user runs it (the AllenNLP comparison setting)."""
    import subprocess
    import tempfile

    from elmo_jax.weights import write_bilm_hdf5

    sentences = make_sentences(args.sentences)
    n_tokens = sum(len(s) for s in sentences)
    options, params = build("small")
    with tempfile.TemporaryDirectory() as tmp:
        options.to_json(os.path.join(tmp, "options.json"))
        write_bilm_hdf5(os.path.join(tmp, "weights.hdf5"), params, options)
        text = os.path.join(tmp, "input.txt")
        with open(text, "w", encoding="utf-8") as fh:
            fh.writelines(" ".join(s) + "\n" for s in sentences)
        env = {**os.environ, "ELMO_JAX_CACHE_DIR": os.path.join(tmp, "xla-cache")}
        cmd = [sys.executable, "-m", "elmo_jax", "embed", "--options", os.path.join(tmp, "options.json"),
               "--weights", os.path.join(tmp, "weights.hdf5"), "--input", text,
               "--output", os.path.join(tmp, "out.hdf5"), "--batch-size", str(args.batch_size), "--quiet"]
        for label in ("cold compilation cache", "warm compilation cache"):
            t0 = time.perf_counter()
            subprocess.run(cmd, check=True, env=env)
            wall = time.perf_counter() - t0
            print(f"elmo-jax embed, small shape, {n_tokens} tokens, batch {args.batch_size}, {label}: "
                  f"{wall:.1f} s whole process = {n_tokens / wall:.0f} tokens/s")


if __name__ == "__main__":
    main()
