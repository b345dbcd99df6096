"""Training throughput (prints numbers; not a test).

    python benchmarks/train.py [--configs tiny,small,original] [--steps 5]

For each config: the compiled train step's positions/s (forward + backward streams: 2 x batch x
unroll per step; median of `--steps` steps after one warm-up step, compile time reported apart)
on a batch of the built-in corpus at the config's shape, and the input pipeline's batches/s on the built-in
corpus at that shape. `original` runs one step (it is big for a CPU) with a synthetic
793,471-word vocabulary so that its 8192 negatives are valid.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

CONFIGS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "configs")


def bench_step(name: str, steps: int) -> None:
    import jax
    import jax.numpy as jnp

    from elmo_jax import sharding as shd
    from elmo_jax.config import TrainConfig
    from elmo_jax.loss import LogUniformSampler
    from elmo_jax.train.step import init_state, make_train_step

    cfg = TrainConfig.from_json(os.path.join(CONFIGS, f"{name}.json"))
    vocab_size = 793_471 if name == "original" else 5_755
    if name == "original":
        steps = 1
    mesh = shd.make_mesh()
    b, t, c = cfg.batch_size, cfg.unroll_steps, cfg.model.max_characters_per_token
    from elmo_jax.corpus import build_builtin_corpus
    from elmo_jax.data import Batcher
    from elmo_jax.train.batching import prepare_batch
    from elmo_jax.vocab import Vocabulary

    corpus = build_builtin_corpus()  # real text, so words repeat as they do in a corpus
    batcher = Batcher(corpus["train_files"], Vocabulary.from_file(corpus["vocab_file"]), global_batch_size=b,
                      unroll_steps=t)
    batch = next(batcher)
    if name == "original":  # targets over a 1B-Word-sized vocabulary
        rng = np.random.default_rng(0)
        batch["targets_fwd"] = rng.integers(0, vocab_size, (b, t)).astype(np.int32)
        batch["targets_bwd"] = rng.integers(0, vocab_size, (b, t)).astype(np.int32)
    max_width = max(w for w, _ in cfg.model.filters)
    key = jax.random.key(0)
    abstract = jax.eval_shape(lambda k: init_state(cfg, vocab_size, k), key)
    state_sh = shd.state_shardings(abstract, mesh, False, vocab_size)
    state = jax.jit(lambda k: init_state(cfg, vocab_size, k), out_shardings=state_sh)(key)
    sampler = LogUniformSampler(vocab_size, cfg.n_negative_samples) if cfg.n_negative_samples else None

    def negatives(i):
        if sampler is None:
            return None
        ids, tries = sampler.sample(np.random.default_rng(i))
        return {"ids": jnp.asarray(ids), "num_tries": jnp.asarray(tries, jnp.int32)}

    step = jax.jit(make_train_step(cfg, vocab_size), donate_argnums=0)
    t0 = time.perf_counter()
    gbatch = shd.global_batch(prepare_batch(batch, max_width), mesh)
    prep_ms = (time.perf_counter() - t0) * 1e3
    t0 = time.perf_counter()
    compiled = step.lower(state, gbatch, negatives(0)).compile()
    compile_s = time.perf_counter() - t0
    state, m = compiled(state, gbatch, negatives(0))
    jax.block_until_ready(m)
    times = []
    for i in range(steps):
        t0 = time.perf_counter()
        state, m = compiled(state, gbatch, negatives(i + 1))
        float(m["loss"])
        times.append(time.perf_counter() - t0)
    med = statistics.median(times)
    softmax = f"sampled softmax ({cfg.n_negative_samples} of {vocab_size})" if sampler else f"full softmax ({vocab_size})"
    print(f"{name:8s} train step: batch {b} x unroll {t}, {softmax}: {2 * b * t / med:8.0f} positions/s "
          f"({1 / med:.2f} steps/s, median of {steps}); compile {compile_s:.1f} s; "
          f"host batch prep {prep_ms:.0f} ms")


def bench_data(name: str, n_batches: int = 200) -> None:
    from elmo_jax.config import TrainConfig
    from elmo_jax.corpus import build_builtin_corpus
    from elmo_jax.data import Batcher
    from elmo_jax.vocab import Vocabulary

    cfg = TrainConfig.from_json(os.path.join(CONFIGS, f"{name}.json"))
    corpus = build_builtin_corpus()
    batcher = Batcher(corpus["train_files"], Vocabulary.from_file(corpus["vocab_file"]),
                      global_batch_size=cfg.batch_size, unroll_steps=cfg.unroll_steps)
    stream = batcher.prefetch(depth=4)
    next(stream)
    t0 = time.perf_counter()
    for _ in range(n_batches):
        next(stream)
    dt = time.perf_counter() - t0
    stream.close()
    print(f"{name:8s} input pipeline (prefetched, batch {cfg.batch_size} x unroll {cfg.unroll_steps}): "
          f"{n_batches / dt:8.1f} batches/s")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--configs", default="tiny,small,original")
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--no-data", action="store_true")
    args = ap.parse_args()
    import jax

    print(f"jax {jax.__version__}, {jax.device_count()} {jax.devices()[0].platform} device(s), "
          f"{os.cpu_count()} cpus")
    for name in args.configs.split(","):
        bench_step(name, args.steps)
        if not args.no_data and name != "original":
            bench_data(name)


if __name__ == "__main__":
    main()
