"""Train-step throughput and model-FLOPs utilisation (prints numbers; not a test).

    python benchmarks/train.py [--shapes small,mid,medium,original] [--steps 5]
        [--batch-sizes 128,256,512] [--hoist on,off] [--remat on] [--precision float32]
        [--peak-gflops G | --peak-tflops T] [--set key=value ...] [--isolate] [--jsonl FILE]

One table line per (shape, rows, hoist, remat, precision) combination:

* tokens/s: global batch rows x unroll / median step time (median of `--steps` steps after one
  warm-up step; compile seconds reported apart). One position of each direction counts as one
  token: a 64 x 20 batch is 1,280 tokens whichever way it is read (the unit bilm-tf's logs and LM
  papers use; the old `positions/s` of this script was twice this number).
* MFU: model FLOPs per step (counted below) x steps/s / peak. The peak is `--peak-gflops` /
  `--peak-tflops` when given, else measured here: the median rate of a large jnp matmul
  (2048^3 on CPU, 8192^3 on GPU; default precision; float32 on CPU whatever `--precision` is,
  the run's dtype on GPU), on a CPU raised to NumPy's BLAS rate at 2048^3 / 4096^3 when that is
  higher (it is: ~200 GFLOP/s against XLA's ~150-175 on the 2-core CPU).
* compile s, the compiled step's `memory_analysis()` (temp + argument + output bytes; the output
  aliases the donated state) and, where the backend reports it, the device's
  `memory_stats()['peak_bytes_in_use']` (a process-wide high-water mark: combinations run in
  increasing size so it is about this line's peak; `--isolate` runs each line in a fresh
  process for an exact one).
* on several devices, one more line per combination: the bytes the compiled step all-reduces per
  device (data parallelism's gradient traffic; parsed from the compiled program's text).
* bilm-tf's figure quoted in issue 9 for the 2-core CPU (small 64 x 20: 253 tokens/s, mid
  32 x 20: 957 tokens/s) and our/quoted ratio. It is NOT a like-for-like ratio: the same bilm-tf
  recipe ran at 532-572 (small) and 1,814-2,256 tokens/s (mid) on that CPU on another day. For
  a ratio measured side by side, in alternation, run `benchmarks/vs_bilmtf.py`.

FLOPs counted per train step (multiply-add = 2 FLOPs; matmuls and convolutions only: no
elementwise ops, gathers, the optimizer update, the in-step negative sampler, or any
recomputation: neither remat's nor the gate matmul that the LSTM's fused backward redoes):
    forward =
      char-CNN   sum over filters (w, n): 2 U (C' - w + 1) w D n     U = distinct words actually in
                                                                    the batch (both streams), C' =
                                                                    the char axis after the cut
      highway    n_highway x 2 matmuls x 2 U F^2                     F = sum of filter counts
      projection 2 U F P                                             (only when F != P)
      LSTM       2 directions x N x sum over layers [2 (I_l + P) 4H + 2 H P]
                                                                    N = rows x unroll, I_l = layer
                                                                    input width (P), the 2HP term
                                                                    only with the LSTM projection
      softmax    2 directions x (sampled: 2 N P (S + 1) | full: 2 N P V)
    backward = 2 x forward;  step = 3 x forward.
U counts each distinct word once (the step runs the char-CNN once per distinct word, see
train/batching.py): this is the useful work, not the bucket-padded rows the step computes too.

Shapes:
    small     bilm-tf's small: LSTM 1024 / proj 128, filters up to [7, 1024] (F 2048), 1 highway,
              2 layers + skip, batch 64 x 20, 4096 sampled negatives, vocab 40,000
    mid       LSTM 512 / proj 128, filters [[1,32],[2,32],[3,64],[4,128],[5,256]] (F 512),
              1 highway, 2 layers + skip, batch 32 x 20, 2048 negatives, vocab 40,000
    medium    configs/medium.json (LSTM 2048 / proj 256, full softmax), vocab 40,000
    original  configs/original.json (LSTM 4096 / proj 512, 2 highway, 384 x 20, 8192 negatives),
              vocab 793,471; on a CPU one timed step only
    tiny      configs/tiny.json, vocab 40,000 (smoke tests)
    PATH.json any config file, vocab 40,000
Batches: real text (the built-in corpus through `Batcher`, so words repeat as in a corpus; it
has ~5.8k distinct words, fewer than a 1B-word corpus, so U is on the low side), targets
replaced by uniform random ids over the shape's vocabulary so the softmax has its real size.

`--set char_cnn_scan_rows=0` runs the char-CNN as one convolution per filter width instead of
the CPU default, a scan over blocks of 16 distinct words (README, Performance).
`--remat on|off` sets TrainConfig.remat; it only changes the LSTM together with
`--set fused_backward=false` (the fused backward, the default, saves the gates and carried
states itself). `--hoist on|off` sets TrainConfig.hoist_input: x @ W_x for all steps
outside the LSTM scan.
On a Linux CPU the script restarts itself with `GLIBC_TUNABLES=glibc.malloc.hugetlb=1` where that
helps, as `elmo-jax train` does (`elmo_jax/launch.py`; the header prints the value);
`--malloc-tuning off` (or `ELMO_JAX_MALLOC_TUNING=0`) keeps the environment as it is.
"""
from __future__ import annotations

import argparse
import gc
import json
import os
import re
import statistics
import subprocess
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

HERE = os.path.dirname(os.path.abspath(__file__))
CONFIGS = os.path.join(HERE, "..", "configs")

SMALL_MODEL = {"lstm": {"dim": 1024, "projection_dim": 128, "n_layers": 2, "use_skip_connections": True},
               "char_cnn": {"filters": [[1, 32], [2, 32], [3, 64], [4, 128], [5, 256], [6, 512], [7, 1024]],
                            "n_highway": 1}}
MID_MODEL = {"lstm": {"dim": 512, "projection_dim": 128, "n_layers": 2, "use_skip_connections": True},
             "char_cnn": {"filters": [[1, 32], [2, 32], [3, 64], [4, 128], [5, 256]], "n_highway": 1}}

# name -> (base config, model overrides, train overrides, vocab size, bilm-tf tokens/s quoted in issue 9)
SHAPES = {
    "small": ("small.json", SMALL_MODEL, {"batch_size": 64, "unroll_steps": 20, "n_negative_samples": 4096},
              40_000, 253.0),
    "mid": ("small.json", MID_MODEL, {"batch_size": 32, "unroll_steps": 20, "n_negative_samples": 2048},
            40_000, 957.0),
    "medium": ("medium.json", {}, {}, 40_000, None),
    "original": ("original.json", {}, {}, 793_471, None),
    "tiny": ("tiny.json", {}, {}, 40_000, None),
}


# ------------------------------------------------------------------------------- config
def _merge(dst: dict, src: dict) -> dict:
    for k, v in src.items():
        if isinstance(v, dict) and isinstance(dst.get(k), dict):
            _merge(dst[k], v)
        else:
            dst[k] = v
    return dst


def shape_config(name: str, overrides: list[str]):
    """(TrainConfig, vocab size, bilm-tf reference tokens/s or None) of a shape name or a .json path."""
    from elmo_jax.config import TrainConfig, apply_overrides

    if name.endswith(".json"):
        base, model, train, vocab, ref = name, {}, {}, 40_000, None
    elif name in SHAPES:
        base, model, train, vocab, ref = SHAPES[name]
        base = os.path.join(CONFIGS, base)
    else:
        raise SystemExit(f"unknown shape {name!r} (known: {', '.join(SHAPES)}, or a config .json path)")
    with open(base, encoding="utf-8") as fh:
        data = json.load(fh)
    _merge(data.setdefault("model", {}), json.loads(json.dumps(model)))
    data.update(train)
    cfg = TrainConfig.from_dict(apply_overrides(data, overrides, base), source=base)
    return cfg.replace(model=cfg.model.for_training()), vocab, ref


# ------------------------------------------------------------------------------- FLOPs
def step_flops(opts, n_words: int, char_len: int, rows: int, unroll: int, n_negatives: int,
               vocab_size: int) -> dict[str, float]:
    """Forward FLOPs by part and the train-step total (3 x forward); see the module docstring."""
    d, f, p, h = opts.char_embed_dim, opts.n_filters, opts.projection_dim, opts.lstm_dim
    out_dim = p if opts.has_lstm_projection else h
    n = rows * unroll
    parts = {
        "char_cnn": sum(2.0 * n_words * max(char_len - w + 1, 0) * w * d * k for w, k in opts.filters),
        "highway": opts.n_highway * 2 * 2.0 * n_words * f * f,
        "projection": 2.0 * n_words * f * p if opts.has_token_projection else 0.0,
    }
    lstm, width = 0.0, p
    for _ in range(opts.n_layers):
        lstm += 2.0 * (width + out_dim) * 4 * h + (2.0 * h * p if opts.has_lstm_projection else 0.0)
        width = out_dim
    parts["lstm"] = 2 * n * lstm
    if n_negatives:
        parts["softmax"] = 2 * 2.0 * n * out_dim * (n_negatives + 1)
    else:
        parts["softmax"] = 2 * 2.0 * n * out_dim * vocab_size
    parts["forward"] = sum(parts.values())
    parts["step"] = 3 * parts["forward"]
    return parts


# ------------------------------------------------------------------------------- peak
def measure_peak(dtype_name: str) -> float:
    """Median FLOP/s of a large jnp matmul (default precision) on device 0; on a CPU the larger of
    that and NumPy's BLAS at 2048^3 and 4096^3 (XLA:CPU's own matmul runs below the BLAS peak, and
    the machine's peak is the higher figure: MFU is then a conservative fraction)."""
    import jax
    import jax.numpy as jnp

    gpu = jax.devices()[0].platform != "cpu"
    n = 8192 if gpu else 2048
    dtype = jnp.bfloat16 if (gpu and dtype_name == "bfloat16") else jnp.float32
    k1, k2 = jax.random.split(jax.random.key(0))
    a = jax.random.normal(k1, (n, n), dtype)
    b = jax.random.normal(k2, (n, n), dtype)
    f = jax.jit(jnp.matmul)
    f(a, b).block_until_ready()
    times = []
    for _ in range(10 if gpu else 5):
        t0 = time.perf_counter()
        f(a, b).block_until_ready()
        times.append(time.perf_counter() - t0)
    rate = 2.0 * n ** 3 / statistics.median(times)
    if not gpu:
        for m in (2048, 4096):
            x = np.random.default_rng(0).standard_normal((m, m), dtype=np.float32)
            x @ x
            t = []
            for _ in range(5):
                t0 = time.perf_counter()
                x @ x
                t.append(time.perf_counter() - t0)
            rate = max(rate, 2.0 * m ** 3 / statistics.median(t))
    return rate


# ------------------------------------------------------------------------------- data
_BATCHES: dict = {}
_CORPUS: dict = {}


def corpus_batch(rows: int, unroll: int, max_chars: int) -> tuple:
    """(Batcher, one batch of it) of the built-in corpus at this shape (cached per shape)."""
    key = (rows, unroll, max_chars)
    if key not in _BATCHES:
        from elmo_jax.corpus import builtin_corpus
        from elmo_jax.data import Batcher
        from elmo_jax.vocab import Vocabulary

        if not _CORPUS:
            c = builtin_corpus()
            _CORPUS.update(c, vocab=Vocabulary.from_file(c["vocab_file"]))
        batcher = Batcher(_CORPUS["train_files"], _CORPUS["vocab"], global_batch_size=rows,
                          unroll_steps=unroll, max_characters_per_token=max_chars)
        next(batcher)  # the second batch: rows are mid-sentence, as in steady training
        _BATCHES[key] = (batcher, next(batcher))
    return _BATCHES[key]


def step_input_fn(batcher, max_width: int, rows: int):
    """batch -> this host's step arrays (unique_chars, token_index, targets_*, weights_*): the
    training loop's own `StepInputs` (distinct words from ids, exact char cut, size buckets)."""
    import jax

    from elmo_jax.train.batching import StepInputs

    make = StepInputs(batcher.corpus.input_chars, max_width, global_rows=rows, n_hosts=jax.process_count(),
                      host_index=jax.process_index(), n_local_devices=jax.local_device_count())
    return lambda batch: make(batch)[0]


def bench_pipeline(rows: int, unroll: int, max_chars: int, max_width: int, n_batches: int) -> dict:
    """Host input pipeline: prefetched Batcher batches/s, and the step-input preparation
    (distinct words, char cut) in ms per batch."""
    from elmo_jax.data import Batcher

    corpus_batch(rows, unroll, max_chars)  # corpus + vocab loaded
    batcher = Batcher(_CORPUS["train_files"], _CORPUS["vocab"], global_batch_size=rows, unroll_steps=unroll,
                      max_characters_per_token=max_chars)
    prepare = step_input_fn(batcher, max_width, rows)
    stream = batcher.prefetch(depth=4)
    next(stream)
    t0 = time.perf_counter()
    batches = [next(stream) for _ in range(n_batches)]
    dt = time.perf_counter() - t0
    stream.close()
    t0 = time.perf_counter()
    for b in batches:
        prepare(b)
    prep = (time.perf_counter() - t0) / n_batches
    return {"batches_per_s": n_batches / dt, "prepare_ms": prep * 1e3}


def shape_batch(cfg, vocab_size: int, seed: int) -> tuple:
    """(Batcher, one corpus batch at cfg's rows x unroll) with its targets replaced by uniform
    random ids over `vocab_size` (the softmax at the shape's real size)."""
    batcher, raw = corpus_batch(cfg.batch_size, cfg.unroll_steps, cfg.model.max_characters_per_token)
    raw = dict(raw)
    rng = np.random.default_rng(seed)
    for d in ("fwd", "bwd"):
        raw[f"targets_{d}"] = rng.integers(0, vocab_size, raw[f"targets_{d}"].shape).astype(np.int32)
    return batcher, raw


def compiled_step(cfg, vocab_size: int, local: dict, mesh, seed: int, n_negative_sets: int,
                  compiler_options: dict | None = None) -> tuple:
    """(compiled train step, fresh state, global batch, `n_negative_sets` negative sets on device,
    compile seconds): the step compiled as the training loop does (explicit shardings, state donated);
    `compiler_options` are XLA options for this executable alone (e.g. {"xla_cpu_...": value})."""
    import jax

    from elmo_jax import sharding as shd
    from elmo_jax.loss import LogUniformSampler
    from elmo_jax.train.loop import draw_negatives
    from elmo_jax.train.step import init_state, make_train_step

    key = jax.random.key(seed)
    abstract = jax.eval_shape(lambda k: init_state(cfg, vocab_size, k), key)
    shard_softmax = shd.should_shard_softmax(cfg.shard_softmax, vocab_size, cfg.model.projection_dim, mesh)
    state_sh = shd.state_shardings(abstract, mesh, shard_softmax, vocab_size)
    state = jax.jit(lambda k: init_state(cfg, vocab_size, k), out_shardings=state_sh)(key)
    sampler = LogUniformSampler(vocab_size, cfg.n_negative_samples) if cfg.n_negative_samples else None
    negatives = []
    for i in range(n_negative_sets):
        negs = draw_negatives(sampler, seed, i)
        negatives.append(None if negs is None else jax.device_put(negs, shd.replicated(mesh)))
    gbatch = shd.global_batch(local, mesh, shd.LM_BATCH_ROW_AXIS)
    step = jax.jit(make_train_step(cfg, vocab_size), donate_argnums=0,
                   in_shardings=(state_sh, None, shd.replicated(mesh)),
                   out_shardings=(state_sh, shd.replicated(mesh)))
    t0 = time.perf_counter()
    compiled = step.lower(state, gbatch, negatives[0]).compile(compiler_options=compiler_options or None)
    return compiled, state, gbatch, negatives, time.perf_counter() - t0


# ------------------------------------------------------------------------------- one combination
def run_combo(shape: str, rows_per_device: int | None, hoist: bool, remat: bool, precision: str,
              steps: int, overrides: list[str], seed: int = 0) -> dict:
    import jax

    from elmo_jax import sharding as shd

    cfg, vocab_size, ref = shape_config(shape, overrides)
    n_dev = jax.device_count()
    rows = (rows_per_device * n_dev) if rows_per_device else cfg.batch_size
    platform = jax.devices()[0].platform
    own_batch = rows == cfg.batch_size and platform == "cpu"  # bilm-tf's figure is for this case
    cfg = cfg.replace(batch_size=rows, remat=remat, precision=precision, hoist_input=hoist)
    if shape == "original" and platform == "cpu":
        steps = 1  # minutes per step on a CPU
    t, opts = cfg.unroll_steps, cfg.model
    max_width = max(w for w, _ in opts.filters)

    batcher, raw = shape_batch(cfg, vocab_size, seed)
    t0 = time.perf_counter()
    local = step_input_fn(batcher, max_width, rows)(raw)
    prep_ms = (time.perf_counter() - t0) * 1e3
    if "token_index" in local:
        n_words = int(np.unique(local["token_index"]).size)
        n_rows_padded = int(local["unique_chars"].shape[0])
        char_len = int(local["unique_chars"].shape[-1])
    else:  # a batch without dedup: the char-CNN runs on every position
        n_words = n_rows_padded = 2 * rows * t
        char_len = opts.max_characters_per_token
    flops = step_flops(opts, n_words, char_len, rows, t, cfg.n_negative_samples, vocab_size)

    mesh = shd.make_mesh()
    # negatives drawn before timing (the loop draws them in its prefetch thread)
    compiled, state, gbatch, negatives, compile_s = compiled_step(cfg, vocab_size, local, mesh, seed, steps + 1)
    mem = {}
    try:
        ma = compiled.memory_analysis()
        if ma is not None:
            mem = {k: int(getattr(ma, f"{k}_size_in_bytes", 0) or 0)
                   for k in ("temp", "argument", "output", "alias", "generated_code")}
    except Exception as e:  # noqa: BLE001 - a backend without it
        mem = {"error": str(e)}
    reduced = all_reduce_bytes(compiled.as_text()) if n_dev > 1 else 0
    t0 = time.perf_counter()
    state, m = compiled(state, gbatch, negatives[0])
    loss0 = float(m["loss"])
    warm_s = time.perf_counter() - t0
    times = []
    for i in range(steps):
        t0 = time.perf_counter()
        state, m = compiled(state, gbatch, negatives[i + 1])
        float(m["loss"])
        times.append(time.perf_counter() - t0)
    med = statistics.median(times)
    peak_bytes = None
    try:
        stats = jax.devices()[0].memory_stats()
        if stats:
            peak_bytes = stats.get("peak_bytes_in_use")
    except Exception:  # noqa: BLE001
        pass
    del state, m, compiled, gbatch
    gc.collect()
    softmax = f"sampled {cfg.n_negative_samples}/{vocab_size}" if cfg.n_negative_samples else f"full {vocab_size}"
    return {
        "shape": shape, "rows_per_device": rows // n_dev, "rows": rows, "unroll": t, "own_batch": own_batch,
        "hoist": hoist, "hoist_via": "config", "fused_backward": cfg.fused_backward,
        "remat": remat, "precision": precision, "softmax": softmax, "vocab_size": vocab_size,
        "distinct_words": n_words, "word_rows_padded": n_rows_padded, "char_len": char_len,
        "steps": steps, "compile_s": compile_s, "warmup_step_s": warm_s, "step_s": med,
        "step_s_all": times, "tokens_per_s": rows * t / med, "flops": flops,
        "flops_per_s": flops["step"] / med, "memory_analysis": mem, "peak_bytes_in_use": peak_bytes,
        "prepare_ms": prep_ms, "first_loss": loss0, "bilm_tf_tokens_per_s": ref, "sets": list(overrides),
        "all_reduce_bytes": reduced,
    }


def all_reduce_bytes(hlo_text: str) -> int:
    """Bytes a compiled step all-reduces (each device's share of every all-reduce's operands): the
    gradient traffic of data parallelism, e.g. a dense [V, P] softmax gradient (`sparse_softmax_update`)."""
    total = 0
    for line in hlo_text.splitlines():
        m = re.search(r"= (.*?) all-reduce(?:-start)?\(", line)
        if m:
            for dtype, dims in re.findall(r"\b(f64|f32|bf16|f16|s32|u32)\[([\d,]*)\]", m.group(1)):
                count = int(np.prod([int(d) for d in dims.split(",") if d], dtype=np.int64))
                total += count * (8 if dtype == "f64" else 2 if dtype in ("bf16", "f16") else 4)
    return total


# ------------------------------------------------------------------------------- output
HEADER = (f"{'shape':8s} {'rows':>5s} {'hoist':>5s} {'remat':>5s} {'prec':>4s} {'U/rows':>9s} {'C':>2s} "
          f"{'compile_s':>9s} {'step_ms':>9s} {'tokens/s':>9s} {'GFLOP/step':>10s} {'GFLOP/s':>9s} "
          f"{'MFU':>6s} {'mem_GB':>7s} {'peak_GB':>7s} {'bilm-tf':>8s} {'ratio':>6s}")


def fmt_line(r: dict, peak: float) -> str:
    mem = r["memory_analysis"]
    mem_gb = (mem.get("temp", 0) + mem.get("argument", 0) + mem.get("output", 0)) / 1e9 if "temp" in mem else None
    peak_gb = r["peak_bytes_in_use"] / 1e9 if r.get("peak_bytes_in_use") else None
    ref = r["bilm_tf_tokens_per_s"]
    ratio = f"{r['tokens_per_s'] / ref:5.2f}{'' if r['own_batch'] else '~'}" if ref else "-"
    return (f"{r['shape']:8s} {r['rows']:5d} {'on' if r['hoist'] else 'off':>5s} "
            f"{'on' if r['remat'] else 'off':>5s} {'bf16' if r['precision'] == 'bfloat16' else 'f32':>4s} "
            f"{r['distinct_words']:>4d}/{r['word_rows_padded']:<4d} {r['char_len']:2d} "
            f"{r['compile_s']:9.1f} {r['step_s'] * 1e3:9.1f} {r['tokens_per_s']:9.0f} "
            f"{r['flops']['step'] / 1e9:10.1f} {r['flops_per_s'] / 1e9:9.1f} {r['flops_per_s'] / peak:6.1%} "
            f"{mem_gb if mem_gb is not None else float('nan'):7.2f} "
            f"{peak_gb if peak_gb is not None else float('nan'):7.2f} "
            f"{ref if ref else float('nan'):8.0f} {ratio:>6s}")


def onoff(text: str) -> list[bool]:
    vals = []
    for v in text.split(","):
        v = v.strip().lower()
        if v not in ("on", "off", "true", "false", "1", "0"):
            raise SystemExit(f"expected on/off, got {v!r}")
        vals.append(v in ("on", "true", "1"))
    return vals


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shapes", default="small,mid")
    ap.add_argument("--steps", type=int, default=5, help="timed steps per line (median), after one warm-up")
    ap.add_argument("--batch-sizes", default="", help="per-device rows, comma list (default: the shape's batch)")
    ap.add_argument("--hoist", default="off", help="on, off or on,off")
    ap.add_argument("--remat", default="on", help="on, off or on,off")
    ap.add_argument("--precision", default="float32", help="float32, bfloat16 or both (comma list)")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="TrainConfig override")
    ap.add_argument("--peak-gflops", type=float, default=None, help="peak for MFU (default: measured)")
    ap.add_argument("--peak-tflops", type=float, default=None, help="peak for MFU, in TFLOP/s")
    ap.add_argument("--no-data", action="store_true", help="skip the input-pipeline lines")
    ap.add_argument("--data-batches", type=int, default=100)
    ap.add_argument("--isolate", action="store_true", help="each line in a fresh process (exact peak memory)")
    ap.add_argument("--jsonl", default=None, help="also append one JSON record per line to this file")
    ap.add_argument("--malloc-tuning", choices=("on", "off"), default="on",
                    help="on: restart with GLIBC_TUNABLES=glibc.malloc.hugetlb=1 where it helps, as `elmo-jax "
                         "train` does (elmo_jax/launch.py); off: keep the environment")
    ap.add_argument("--one", action="store_true", help=argparse.SUPPRESS)  # child of --isolate
    args = ap.parse_args()
    if args.malloc_tuning == "on":
        from elmo_jax.launch import restart_where_it_helps

        restart_where_it_helps(["train"])

    import jax

    peak_given = (args.peak_tflops * 1e12 if args.peak_tflops else None) or (
        args.peak_gflops * 1e9 if args.peak_gflops else None)
    shapes = [s for s in args.shapes.split(",") if s]
    batch_sizes = [int(b) for b in args.batch_sizes.split(",") if b] or [None]
    hoists, remats = onoff(args.hoist), onoff(args.remat)
    precisions = [p.strip() for p in args.precision.split(",") if p.strip()]
    for p in precisions:
        if p not in ("float32", "bfloat16"):
            raise SystemExit(f"--precision must be float32 or bfloat16, got {p!r}")
    dev = jax.devices()[0]

    peaks: dict[str, float] = {}

    def peak_for(prec: str) -> float:
        if peak_given:
            return peak_given
        if prec not in peaks:
            peaks[prec] = measure_peak(prec)
        return peaks[prec]

    if not args.one:
        print(f"jax {jax.__version__}, {jax.device_count()} x {dev.platform} ({getattr(dev, 'device_kind', '?')}), "
              f"{os.cpu_count()} cpus, GLIBC_TUNABLES={os.environ.get('GLIBC_TUNABLES', '(unset)')}", flush=True)
        for prec in precisions:
            measured = measure_peak(prec)
            peaks.setdefault(prec, measured)
            what = "bfloat16" if (dev.platform != "cpu" and prec == "bfloat16") else "float32"
            note = f"; MFU uses the given peak {peak_given / 1e9:,.0f} GFLOP/s" if peak_given else "; MFU uses it"
            print(f"peak ({prec} runs): measured {what} matmul {measured / 1e9:,.0f} GFLOP/s{note}", flush=True)
        print("hoist: TrainConfig.hoist_input; LSTM backward: TrainConfig.fused_backward (on unless --set "
              "fused_backward=false; remat only matters with it off). FLOPs: matmuls/convs only, backward = "
              "2 x forward, no recompute; "
              "U = distinct words in the batch (/ padded rows computed), C = cut char axis.", flush=True)
        print("bilm-tf: tokens/s quoted in issue 9 for the 2-core CPU, another day; ratio = ours / that ('~': "
              "other batch size or device). Side by side on this machine: benchmarks/vs_bilmtf.py", flush=True)
        print(HEADER, flush=True)

    results = []
    for shape in shapes:
        for rows in batch_sizes:
            for hoist in hoists:
                for remat in remats:
                    for prec in precisions:
                        if args.isolate and not args.one:
                            cmd = [sys.executable, os.path.abspath(__file__), "--one", "--no-data",
                                   "--shapes", shape, "--hoist", "on" if hoist else "off",
                                   "--remat", "on" if remat else "off", "--precision", prec,
                                   "--steps", str(args.steps), "--peak-gflops", str(peak_for(prec) / 1e9)]
                            if rows:
                                cmd += ["--batch-sizes", str(rows)]
                            for s in args.set:
                                cmd += ["--set", s]
                            if args.jsonl:
                                cmd += ["--jsonl", args.jsonl]
                            rc = subprocess.call(cmd)
                            if rc:
                                print(f"{shape:8s} {rows or '-':>5} FAILED (exit {rc})", flush=True)
                            continue
                        try:
                            r = run_combo(shape, rows, hoist, remat, prec, args.steps, args.set)
                        except Exception as e:  # noqa: BLE001 - one failing line (e.g. out of memory) is reported
                            msg = str(e).splitlines()[0][:200] if str(e) else type(e).__name__
                            print(f"{shape:8s} {rows or '-':>5} hoist {'on' if hoist else 'off'}: FAILED "
                                  f"{type(e).__name__}: {msg}", flush=True)
                            gc.collect()
                            continue
                        r["peak_flops"] = peak_for(prec)
                        r["peak_source"] = "given" if peak_given else "measured"
                        r["mfu"] = r["flops_per_s"] / r["peak_flops"]
                        results.append(r)
                        print(fmt_line(r, r["peak_flops"]), flush=True)
                        if args.jsonl:
                            with open(args.jsonl, "a", encoding="utf-8") as fh:
                                fh.write(json.dumps(r) + "\n")

    if args.one:
        return
    if results:
        r = results[0]
        parts = ", ".join(f"{k} {v / 1e9:.2f}" for k, v in r["flops"].items() if k not in ("forward", "step"))
        print(f"FLOPs of the first line, forward GFLOP by part: {parts}", flush=True)
        for r in results:
            if r["all_reduce_bytes"]:
                print(f"{r['shape']} {r['rows']} rows: all-reduce {r['all_reduce_bytes'] / 2 ** 20:,.1f} MiB per step "
                      "(operands of the compiled step's all-reduces, per device)", flush=True)
    if not args.no_data:
        print("input pipeline (host): prefetched Batcher batches/s; step-input preparation (distinct words, "
              "char cut) ms/batch", flush=True)
        seen = set()
        for shape in shapes:
            cfg, _, _ = shape_config(shape, args.set)
            for rows in batch_sizes:
                b = (rows * jax.device_count()) if rows else cfg.batch_size
                key = (b, cfg.unroll_steps, cfg.model.max_characters_per_token)
                if key in seen:
                    continue
                seen.add(key)
                p = bench_pipeline(b, cfg.unroll_steps, cfg.model.max_characters_per_token,
                                   max(w for w, _ in cfg.model.filters), args.data_batches)
                print(f"  rows {b:4d} x unroll {cfg.unroll_steps}: {p['batches_per_s']:8.1f} batches/s, "
                      f"step inputs {p['prepare_ms']:6.1f} ms", flush=True)


if __name__ == "__main__":
    main()
