"""Throughput of the pretraining input pipeline (prints numbers; not a test).

    python benchmarks/data.py [--batch-size 128] [--unroll 20] [--batches 300] [--depth 4]
                              [--corpus-dir DIR] [--streaming]

Builds (or reuses) the built-in corpus, then times the training `Batcher` (seeded shuffle,
endless) behind its background prefetch thread at the `small` config's batch shape (global
batch 128 rows, unroll 20 by default), as the train loop consumes it: `next()` on the stream,
nothing else. Reports batches/s and target tokens/s (rows x unroll x 2 directions), plus the
synchronous (no thread) rate and the one-off setup time (datasets scan + encode + char table).
"""
from __future__ import annotations

import argparse
import os
import sys
import time

os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batch-size", type=int, default=128, help="global rows (small config: 128)")
    p.add_argument("--unroll", type=int, default=20, help="unroll steps (small config: 20)")
    p.add_argument("--batches", type=int, default=300)
    p.add_argument("--depth", type=int, default=4, help="prefetch depth")
    p.add_argument("--corpus-dir", default=None, help="built-in corpus directory (default: the cache)")
    p.add_argument("--streaming", action="store_true", help="read the shards with streaming=True")
    args = p.parse_args(argv)

    import datasets

    datasets.disable_progress_bars()
    from elmo_jax.corpus import builtin_corpus
    from elmo_jax.data import Batcher

    t0 = time.perf_counter()
    info = builtin_corpus(args.corpus_dir)
    t_corpus = time.perf_counter() - t0
    print(f"corpus: {info['dir']} ({info['n_train_tokens']} train tokens, {info['n_train_sentences']} sentences, "
          f"vocab {info['vocab_size']}; ready in {t_corpus:.1f} s)")

    def make() -> Batcher:
        return Batcher(info["train_files"], info["vocab_file"], global_batch_size=args.batch_size,
                       unroll_steps=args.unroll, seed=0, train=True, streaming=args.streaming)

    t0 = time.perf_counter()
    batcher = make()
    t_setup = time.perf_counter() - t0
    print(f"setup: {t_setup:.2f} s ({batcher.corpus.n_input_words} input words, {batcher.steps_per_epoch} steps/epoch)")

    positions = args.batch_size * args.unroll * 2  # targets per batch, both directions

    # synchronous (no thread)
    next(batcher)
    t0 = time.perf_counter()
    for _ in range(args.batches):
        next(batcher)
    sync = args.batches / (time.perf_counter() - t0)

    # prefetched, as the train loop consumes it
    batcher = make()
    with batcher.prefetch(args.depth) as stream:
        next(stream)
        t0 = time.perf_counter()
        for _ in range(args.batches):
            next(stream)
        rate = args.batches / (time.perf_counter() - t0)
    print(f"synchronous: {sync:.1f} batches/s, {sync * positions:,.0f} tokens/s")
    print(f"prefetched (depth {args.depth}): {rate:.1f} batches/s, {rate * positions:,.0f} tokens/s "
          f"[batch {args.batch_size} x unroll {args.unroll} x 2 directions]")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
