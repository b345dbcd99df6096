"""The pretraining loop: `train(cfg, run_dir)`.

Everything is checked before any compute (files, vocabulary, config, an existing checkpoint's
model shape, the run-directory lock). Then:

- Host work runs in a prefetch thread, off the step's critical path: the next batches' word ids,
  their distinct words and char rows (`StepInputs`), and each step's negative samples.
- The train step is compiled ahead of time, before step 1, for every size bucket the first
  batches need (one line each: compile seconds and memory); a bucket met later is compiled when
  first met, once. Validation reuses one evaluation program per bucket across the whole run.
- At most one step is in flight: the loop reads the previous step's metrics while the current
  step runs (lag-1), which also keeps XLA's collectives from piling up.
- Logged metrics are averages over the logging interval (loss sums / token counts), written to
  metrics.jsonl and TensorBoard. Validation perplexity every `eval_every` steps and at the end,
  with a warning when it looks broken (far above training perplexity, rising, or one direction
  far worse than the other).
- Safe long runs: SIGTERM/SIGINT save a checkpoint and return (exit 0), decided identically on
  every host (each host's flag enters the step, which returns the maximum); a non-finite loss or
  parameter norm stops the run naming the step and the last good checkpoint; an unreadable
  latest checkpoint falls back to the previous one; a second run on the same directory is
  refused; a failed save is an error that keeps the previous checkpoint.
"""
from __future__ import annotations

import math
import os
import sys
import time
from typing import Any, Iterator, Optional

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import multihost_utils

from .. import runtime
from .. import sharding as shd
from ..config import ConfigError, TrainConfig
from ..data import Batcher
from ..hub import resolve_model
from ..io_utils import check_output_dir
from ..loss import LogUniformSampler
from ..modules.lstm import zero_state
from ..modules.matmul import unfused_bf16_matmuls
from ..prefetch import Prefetcher
from ..vectors import initial_word_table
from ..vocab import Vocabulary, resolve_files
from ..weights import import_npz, load_model
from . import kit
from .batching import Bucket, StepInputs
from .checkpoint import CheckpointError, Checkpoints, abstract_tree
from .metrics import IntervalMeans, MetricsWriter
from .plot import METRICS_FILE
from .preemption import PreemptionGuard
from .rundir import (CHECKPOINT_DIR, CONFIG_FILE, IMPORTED_KEY, check_compatible, checkpoint_meta, data_abstract,
                     load_run_params, load_run_state, resolve_data, resolve_tokenizer,
                     resolve_vocab_path)
from .runlock import RunLock
from .step import init_state, make_eval_step, make_optimizer, make_train_step
from .tensorboard import TENSORBOARD_DIR

#: Batches whose sizes are scanned before step 1 to compile their buckets ahead of time.
PRESCAN_BATCHES = 200
#: Validation warnings: validation perplexity above this multiple of the training perplexity, or
#: one direction's above this multiple of the other's.
WARN_VAL_OVER_TRAIN = 3.0
WARN_DIRECTION_RATIO = 5.0


def make_batcher(files: list[str], vocab, cfg: TrainConfig, *, train: bool, rows: int,
                 unroll_steps: int) -> Batcher:
    """A batcher of ALL `rows` global rows (every host computes every host's sizes; see batching.py)."""
    return Batcher(files, vocab, global_batch_size=rows, unroll_steps=unroll_steps, seed=cfg.seed, train=train,
                   streaming=cfg.streaming, max_characters_per_token=cfg.model.max_characters_per_token,
                   tokenizer=resolve_tokenizer(cfg))


def step_inputs(batcher: Batcher, cfg: TrainConfig, rows: int) -> StepInputs:
    return StepInputs(batcher.corpus.input_chars, max(w for w, _ in cfg.model.filters), global_rows=rows,
                      n_hosts=jax.process_count(), host_index=jax.process_index(),
                      n_local_devices=jax.local_device_count(), options=cfg.model,
                      input_to_target=batcher.corpus.input_to_target)


def total_steps(cfg: TrainConfig, steps_per_epoch: int) -> int:
    """`max_steps`, or epochs x (training targets / (batch x unroll)), counted from the data."""
    if cfg.max_steps is not None:
        return cfg.max_steps
    return max(1, math.ceil(cfg.n_epochs * steps_per_epoch))


def abstract_batch(inputs: StepInputs, bucket: Bucket, unroll: int, mesh) -> dict[str, jax.ShapeDtypeStruct]:
    """Global shapes and shardings of a step's batch for a size bucket (AOT compilation)."""

    def spec(shape, dtype, axis=0):
        return jax.ShapeDtypeStruct(shape, dtype, sharding=shd.batch_sharding(mesh, len(shape), axis))

    out = {name: spec(shape, dtype, axis) for name, (shape, dtype, axis) in inputs.shapes(bucket, unroll).items()}
    out["stop"] = spec((jax.device_count(),), jnp.float32)
    return out


def abstract_negatives(n_sampled: int, mesh) -> Optional[dict]:
    if not n_sampled:
        return None
    rep = shd.replicated(mesh)
    return {"ids": jax.ShapeDtypeStruct((2, n_sampled), jnp.int32, sharding=rep),
            "num_tries": jax.ShapeDtypeStruct((2,), jnp.int32, sharding=rep)}


def draw_negatives(sampler: Optional[LogUniformSampler], seed: int, step: int) -> Optional[dict]:
    """One independent negative set per direction (bilm-tf samples in each direction's loss), the
    same on every host: seeded by (seed, step, direction)."""
    if sampler is None:
        return None
    ids, tries = zip(*(sampler.sample(np.random.default_rng([seed, step, d])) for d in range(2)))
    return {"ids": np.stack(ids).astype(np.int32), "num_tries": np.asarray(tries, np.int32)}


class CompiledSteps:
    """The train step compiled once per size bucket (ahead of time), with explicit shardings and
    the old state donated. `compiles` counts compilations per bucket."""

    def __init__(self, cfg: TrainConfig, vocab_size: int, state_sh, abstract_state, mesh, inputs: StepInputs,
                 quiet: bool = False):
        self.inputs = inputs
        self.jitted = kit.compile_step(make_train_step(cfg, vocab_size), state_sh, mesh)
        self.abstract_state = abstract_state
        self.cfg, self.mesh, self.quiet = cfg, mesh, quiet
        self.programs: dict[Bucket, Any] = {}
        self.compiles: dict[Bucket, int] = {}

    def get(self, bucket: Bucket):
        program = self.programs.get(bucket)
        if program is None:
            t0 = time.perf_counter()
            lowered = self.jitted.lower(self.abstract_state,
                                        abstract_batch(self.inputs, bucket, self.cfg.unroll_steps, self.mesh),
                                        abstract_negatives(self.cfg.n_negative_samples, self.mesh))
            program = lowered.compile()
            if self.cfg.matmul_precision == "bfloat16" and self.cfg.precision == "float32" \
                    and jax.default_backend() == "cpu":
                unfused = unfused_bf16_matmuls(program.as_text())
                if unfused:
                    raise ConfigError(f"this XLA:CPU (jax {jax.__version__}) cannot run {len(unfused)} of the train "
                                      f"step's bfloat16 matmuls ({', '.join(unfused[:3])}); set matmul_precision to "
                                      f"\"float32\"", "matmul_precision")
            self.programs[bucket] = program
            self.compiles[bucket] = self.compiles.get(bucket, 0) + 1
            if not self.quiet and jax.process_index() == 0:
                what = f"{bucket.rows} distinct words x {bucket.chars} chars" if bucket.rows else "word input"
                print(f"elmo-jax: compiled the train step for {what} "
                      f"in {time.perf_counter() - t0:.1f} s; {_memory_line(program)}", file=sys.stderr)
        return program


def _memory_line(compiled) -> str:
    try:
        m = compiled.memory_analysis()
        mib = lambda b: f"{b / 2 ** 20:.0f} MiB"  # noqa: E731
        return (f"memory: arguments {mib(m.argument_size_in_bytes)}, outputs {mib(m.output_size_in_bytes)}, "
                f"temporaries {mib(m.temp_size_in_bytes)}")
    except Exception:  # noqa: BLE001 - not every backend reports it
        return "memory: not reported by this backend"


def prescan_buckets(batcher: Batcher, inputs: StepInputs, n: int) -> list[Bucket]:
    """The size buckets of the next `n` batches (integer work only), leaving the batcher where it was."""
    saved = batcher.state()
    seen: set[Bucket] = set()
    try:
        for _ in range(n):
            try:
                seen.add(inputs.bucket(next(batcher)))
            except StopIteration:
                break
    finally:
        batcher.restore(saved)
    return sorted(seen)


def host_steps(batcher: Batcher, inputs: StepInputs, sampler, seed: int, first_step: int) -> Iterator[tuple]:
    """Prefetch-thread work: (step, this host's arrays, negatives, bucket, data position after it)."""
    step = first_step
    for batch, data_state in batcher.iter_with_state():
        step += 1
        local, bucket = inputs(batch)
        yield step, local, draw_negatives(sampler, seed, step), bucket, data_state


def to_global(local: dict[str, np.ndarray], stop: bool, mesh) -> dict[str, jax.Array]:
    """This host's arrays (+ its stop flag, one per local device) -> global arrays over 'data'."""
    return dict(shd.global_batch(local, mesh, shd.LM_BATCH_ROW_AXIS), stop=kit.stop_input(stop, mesh))


# --------------------------------------------------------------------------- evaluation
class Evaluator:
    """Full-softmax perplexity of the forward LM, the backward LM and their geometric mean (exp of
    the mean of the two mean losses, as bilm-tf reports). Built once per run: the heldout files are
    read once and the evaluation step is compiled once per size bucket, then reused."""

    def __init__(self, cfg: TrainConfig, files: list[str], vocab, mesh, *, max_batches: Optional[int],
                 batch_size: Optional[int] = None, unroll_steps: Optional[int] = None):
        rows = batch_size or min(cfg.batch_size, 64)
        self.rows = max(jax.device_count(), rows - rows % jax.device_count())
        self.unroll = unroll_steps or cfg.unroll_steps
        self.batcher = make_batcher(files, vocab, cfg, train=False, rows=self.rows, unroll_steps=self.unroll)
        self.start = self.batcher.state()
        self.inputs = step_inputs(self.batcher, cfg, self.rows)
        self.step = jax.jit(make_eval_step(cfg, len(vocab)))
        self.max_batches = max_batches
        self.mesh, self.cfg = mesh, cfg
        rows, self.state_sharding = self.rows, shd.batch_sharding(mesh, 4, axis=2)
        # the training carry's first rows, in the evaluation's layout (compiled once, when first used)
        self.first_rows = jax.jit(lambda s: jax.tree_util.tree_map(lambda x: x[:, :, :rows], s),
                                  out_shardings=self.state_sharding)

    def __call__(self, params: Any, lstm_state: Any = None) -> dict:
        """Perplexities from the zero LSTM state (as every embedder starts), or from `lstm_state`
        (the training carry: its first `self.rows` rows are used)."""
        self.batcher.restore(self.start)
        if lstm_state is None:
            lstm_state = jax.device_put(zero_state(self.cfg.model, self.rows), self.state_sharding)
        else:
            lstm_state = self.first_rows(lstm_state)
        n_dir = self.cfg.model.n_directions
        sums, counts = np.zeros(n_dir), np.zeros(n_dir)
        for i, batch in enumerate(self.batcher):
            if self.max_batches is not None and i >= self.max_batches:
                break
            local, _ = self.inputs(batch)
            s, c, lstm_state = self.step(params, shd.global_batch(local, self.mesh, shd.LM_BATCH_ROW_AXIS), lstm_state)
            sums += np.asarray(s, np.float64)
            counts += np.asarray(c, np.float64)
        means = sums / np.maximum(counts, 1)
        out = {"val_perplexity": float(np.exp(means.mean())), "val_perplexity_fwd": float(np.exp(means[0])),
               "val_tokens": int(counts[0])}
        if n_dir == 2:
            out["val_perplexity_bwd"] = float(np.exp(means[1]))
        return out


def carried_state_diagnosis(val: dict, carried: dict, train_perplexity: Optional[float],
                            state_reset_prob: float = 0.0) -> str:
    """What validation from the LSTM state training carried says about a warning raised by
    validation from the zero state (`Evaluator(params, lstm_state)` gave `carried`)."""
    parts = [f"validation from the LSTM state training carried: perplexity {carried['val_perplexity']:.1f}"]
    if "val_perplexity_bwd" in carried:
        parts[0] += f" (forward {carried['val_perplexity_fwd']:.1f}, backward {carried['val_perplexity_bwd']:.1f})"
    carried_warnings = validation_warnings(carried, train_perplexity, None)
    if not carried_warnings and carried["val_perplexity"] * WARN_VAL_OVER_TRAIN < val["val_perplexity"]:
        advice = (f"raise state_reset_prob (now {state_reset_prob:g}) so that training starts more rows from zero"
                  if state_reset_prob > 0 else
                  "it was trained only from carried states, as bilm-tf trains: set state_reset_prob (default 0.02) "
                  "so that training also starts rows from zero")
        parts.append("the LM is sound from the state it was trained with, not from the zero state where "
                     f"evaluation and every embedder start; {advice}")
    elif carried_warnings:
        parts.append("the LM is poor from the carried state too: check the softmax setting and learning rate")
    return ": ".join(parts)


def validation_warnings(val: dict, train_perplexity: Optional[float], previous: Optional[float]) -> list[str]:
    """Signs that the model is broken although its training loss may look sane (a sampled
    softmax can hide a ruined full-softmax LM)."""
    out = []
    vp, fwd = val["val_perplexity"], val["val_perplexity_fwd"]
    bwd = val.get("val_perplexity_bwd", fwd)  # a forward-only LM has no second direction
    if not math.isfinite(vp):
        return [f"validation perplexity is not finite ({vp})"]
    if train_perplexity is not None and math.isfinite(train_perplexity) and vp > WARN_VAL_OVER_TRAIN * train_perplexity:
        out.append(f"validation perplexity {vp:.1f} is {vp / train_perplexity:.1f}x the training perplexity "
                   f"{train_perplexity:.1f}")
    if max(fwd, bwd) > WARN_DIRECTION_RATIO * min(fwd, bwd):
        out.append(f"the {'forward' if fwd > bwd else 'backward'} LM is far worse than the other "
                   f"(validation perplexity forward {fwd:.1f}, backward {bwd:.1f})")
    if previous is not None and vp > previous * 1.05:
        out.append(f"validation perplexity rose from {previous:.1f} to {vp:.1f}")
    return out


# --------------------------------------------------------------------------- train
def train(cfg: TrainConfig, run_dir: str, resume: Optional[bool] = None, progress: bool = True,
          return_params: bool = False) -> dict:
    """Pretrain (or continue) a biLM in `run_dir`; returns the last logged metrics (plus
    'compiles': {bucket: count}, 'preempted': bool and, with `return_params`, the final params
    as NumPy arrays under 'params')."""
    check_output_dir(run_dir, "the run directory")
    cfg = cfg.replace(model=cfg.model.for_training())
    train_files, heldout_files, vocab = resolve_data(cfg)
    cfg = cfg.replace(model=cfg.model.with_vocab_size(len(vocab), vocab.source))
    word_table = word_vector_table(cfg, vocab)  # a GloVe file is read and checked before any compute
    mesh = shd.make_mesh()
    if cfg.batch_size % jax.device_count():
        raise ConfigError(f"config key 'batch_size' ({cfg.batch_size}) must be divisible by the "
                          f"{jax.device_count()} devices")
    hint = runtime.cpu_malloc_hint()
    if hint and progress and jax.process_index() == 0:
        print(hint, file=sys.stderr)
    os.makedirs(run_dir, exist_ok=True)
    with RunLock(run_dir, enabled=jax.process_index() == 0), PreemptionGuard() as guard:
        ckpts = Checkpoints(os.path.join(run_dir, CHECKPOINT_DIR), keep=cfg.keep_checkpoints)
        try:
            return _train(cfg, run_dir, resume, progress, return_params, train_files, heldout_files, vocab,
                          mesh, ckpts, guard, word_table)
        finally:
            ckpts.close()


def _train(cfg, run_dir, resume, progress, return_params, train_files, heldout_files, vocab, mesh, ckpts,
           guard, word_table=None) -> dict:
    vocab_size = len(vocab)

    def check(meta, where):
        if meta.get(IMPORTED_KEY):
            raise CheckpointError(f"the run directory holds a checkpoint imported from TensorFlow "
                                  f"({meta[IMPORTED_KEY]}); fine-tune it in a new run directory with "
                                  f"--set init_from={run_dir}", run_dir)
        check_compatible(meta, cfg, vocab_size, where)

    if ckpts.all_steps():
        if resume is False:
            raise CheckpointError("the run directory already holds checkpoints; pass --resume or use "
                                  "another --run-dir (nothing was overwritten)", run_dir)
        step0, meta0 = ckpts.latest_readable_meta()
        check(meta0, ckpts.step_dir(step0))
    if jax.process_index() == 0:
        cfg.to_json(os.path.join(run_dir, CONFIG_FILE))

    # ---- data, then state: init, or restore the latest readable checkpoint
    batcher = make_batcher(train_files, vocab, cfg, train=True, rows=cfg.batch_size, unroll_steps=cfg.unroll_steps)
    inputs = step_inputs(batcher, cfg, cfg.batch_size)
    evaluator = (Evaluator(cfg, heldout_files, vocab, mesh, max_batches=cfg.eval_batches)
                 if heldout_files else None)
    key = jax.random.key(cfg.seed)

    def init(k):
        return init_state(cfg, vocab_size, k)

    shard_softmax = shd.should_shard_softmax(cfg.shard_softmax, vocab_size, cfg.model.projection_dim, mesh)
    abstract, state_sh = kit.plan_state(
        init, lambda a: shd.state_shardings(a, mesh, shard_softmax, vocab_size), key)
    data_abs = jax.tree_util.tree_map(lambda x: jax.ShapeDtypeStruct(np.shape(x), np.asarray(x).dtype),
                                      batcher.state())
    restored = ckpts.restore_latest(abstract, data_abs, check=check)
    if restored is not None:
        state = restored.state
        batcher.restore(jax.tree_util.tree_map(np.asarray, restored.data))
        print(f"elmo-jax: resumed from step {restored.step} in {ckpts.directory}", file=sys.stderr)
    else:
        state = kit.create_state(init, state_sh, key)
        if word_table is not None:
            state = _with_word_table(state, cfg, word_table, state_sh)
        if cfg.init_from:
            state = _load_initial_weights(state, cfg, vocab, state_sh)

    first = int(state["step"])
    steps = total_steps(cfg, batcher.steps_per_epoch)

    # ---- compile ahead of time: every bucket of the next batches
    programs = CompiledSteps(cfg, vocab_size, state_sh, abstract, mesh, inputs)
    for bucket in prescan_buckets(batcher, inputs, min(PRESCAN_BATCHES, max(steps - first, 0))):
        programs.get(bucket)

    sampler = LogUniformSampler(vocab_size, cfg.n_negative_samples) if cfg.n_negative_samples else None
    writer = MetricsWriter(os.path.join(run_dir, METRICS_FILE), os.path.join(run_dir, TENSORBOARD_DIR),
                           purge_step=first + 1 if restored is not None else None)
    bar = kit.progress_bar(steps, initial=first, enabled=progress)
    interval = IntervalMeans()
    tokens_per_step = cfg.batch_size * cfg.unroll_steps
    last: dict = {}
    flight = kit.InFlight()  # (step, metrics on device) of the step in flight
    clock = {"t": time.perf_counter(), "step": first}
    prev_val: Optional[float] = None
    stop_at: Optional[int] = None
    stream = Prefetcher(host_steps(batcher, inputs, sampler, cfg.seed, first), depth=4)

    def drain(item) -> dict:
        """Read a finished step's metrics; stop on a non-finite loss; log at interval ends."""
        step_no, metrics = item
        values = kit.read_metrics(metrics)
        kit.check_finite(values, step_no, ("loss", "grad_norm", "param_norm"), ckpts, run_dir,
                         "lower the learning rate or check the data, then continue with --resume")
        interval.add({"loss_fwd": values["loss_fwd"] * values["tokens"], "loss_bwd": values["loss_bwd"] * values["tokens"]},
                     {"loss_fwd": values["tokens"], "loss_bwd": values["tokens"]})
        interval.add_scalar("grad_norm", values["grad_norm"])
        interval.step_done()
        values["step"] = step_no
        bar.set_postfix(loss=f"{values['loss']:.3f}", ppl=f"{math.exp(min(values['loss'], 50)):.1f}")
        return values

    def log_interval(step_no: int, values: dict) -> dict:
        now = time.perf_counter()
        rate = tokens_per_step * (step_no - clock["step"]) / max(now - clock["t"], 1e-9)
        clock.update(t=now, step=step_no)
        means = interval.means()
        loss = 0.5 * (means["loss_fwd"] + means["loss_bwd"])  # a forward-only LM: both are its loss
        return {"step": step_no, "loss": loss, "loss_fwd": means["loss_fwd"],
                **({"loss_bwd": means["loss_bwd"]} if cfg.model.bidirectional else {}),
                "perplexity": float(math.exp(min(loss, 700))), "grad_norm": means["grad_norm"],
                "param_norm": values["param_norm"], "tokens_per_s": rate, "interval_steps": means["steps"]}

    try:
        for step_no, local, negatives, bucket, data_state in stream:
            if step_no > steps:
                break
            program = programs.get(bucket)
            batch = to_global(local, guard.requested, mesh)
            negs = None if negatives is None else jax.device_put(negatives, shd.replicated(mesh))
            state, metrics = program(state, batch, negs)
            previous = flight.push((step_no, metrics))
            if previous is not None:  # lag-1: the previous step's metrics, while this step runs
                values = drain(previous)
                if values["stop"] > 0:
                    stop_at = step_no  # every host reads the same max: the same decision everywhere
                elif values["step"] % cfg.log_every == 0:
                    last = log_interval(values["step"], values)
                    writer.write(last)
            bar.update(1)
            periodic_eval = bool(cfg.eval_every) and step_no % cfg.eval_every == 0
            eval_now = evaluator is not None and (periodic_eval or step_no == steps)
            if stop_at is not None or eval_now or step_no % cfg.checkpoint_every == 0 or step_no == steps:
                values = drain(flight.pop())
                if values["stop"] > 0 and stop_at is None:
                    stop_at = step_no
                record = log_interval(step_no, values)
                if eval_now and stop_at is None:
                    t_eval = time.perf_counter()
                    val = evaluator(state["params"])
                    record.update(val)
                    warnings = validation_warnings(val, record["perplexity"], prev_val)
                    prev_val = val["val_perplexity"]
                    for w in warnings:
                        print(f"elmo-jax: WARNING at step {step_no}: {w}: the model may be broken even if the "
                              "training loss looks fine", file=sys.stderr)
                    if warnings:
                        # is it the model, or only its start from the zero state? (one more validation pass)
                        carried = evaluator(state["params"], state["lstm_state"])
                        record.update({f"val_carried_{k[4:]}": v for k, v in carried.items() if k != "val_tokens"})
                        diagnosis = carried_state_diagnosis(val, carried, record["perplexity"], cfg.state_reset_prob)
                        print(f"elmo-jax: WARNING at step {step_no}: {diagnosis}", file=sys.stderr)
                        record["warnings"] = warnings + [diagnosis]
                    clock["t"] += time.perf_counter() - t_eval  # validation time is not training time
                last = record
                writer.write(record)
                writer.flush()
                if stop_at is not None or step_no % cfg.checkpoint_every == 0 or step_no == steps:
                    ckpts.save(step_no, state, data_state, checkpoint_meta(cfg, len(vocab)), force=True)
            if stop_at is not None:
                ckpts.wait()
                print(f"elmo-jax: stopped by {guard.signal_name or 'a signal on another host'} at step {step_no}; "
                      f"saved {ckpts.step_dir(step_no)}; continue with --resume", file=sys.stderr)
                break
            if step_no == steps:
                break
        if flight.pending is not None:
            drain(flight.pop())
        if evaluator is not None and first >= steps:  # nothing left to train: report validation only
            val = evaluator(state["params"])
            last.update(val)
            writer.write({"step": int(state["step"]), **val})
        ckpts.wait()
    finally:
        stream.close()
        bar.close()
        writer.close()
    last["compiles"] = {f"{b.rows}x{b.chars}": n for b, n in programs.compiles.items()}
    last["preempted"] = stop_at is not None
    if return_params:
        last["params"] = jax.tree_util.tree_map(
            np.asarray, multihost_utils.process_allgather(state["params"], tiled=True))
    return last


def word_vector_table(cfg: TrainConfig, vocab: Vocabulary) -> Optional[np.ndarray]:
    """The initial word embedding (word input) or word channel (char input) from `cfg.word_vectors`
    (a GloVe text file), [n_tokens_vocab, dim]; None without a file."""
    if not cfg.word_vectors:
        return None
    m = cfg.model
    dim, what = ((m.projection_dim, "lstm.projection_dim") if not m.char_inputs
                 else (m.word_channel_dim, "char_cnn.word_channel_dim"))
    table, stats = initial_word_table(cfg.word_vectors, vocab.words, m.n_tokens_vocab, dim,
                                      projection=cfg.word_vectors_projection, seed=cfg.seed, what=what)
    if jax.process_index() == 0:
        how = f", {stats['projection']} projection to {dim}" if stats["projection"] != "none" else ""
        print(f"elmo-jax: word vectors: {stats['found']} of {stats['words']} vocabulary words found in "
              f"{cfg.word_vectors} (dimension {stats['file_dim']}{how}); the others start random", file=sys.stderr)
    return table


def _with_word_table(state: dict, cfg: TrainConfig, table: np.ndarray, state_sh) -> dict:
    """The fresh state with its word table (embedding or word channel) replaced by `table`."""
    name = "embedding" if not cfg.model.char_inputs else "word_embedding"
    encoder = dict(state["params"]["token_encoder"])
    encoder[name] = jax.device_put(jnp.asarray(table, jnp.float32), state_sh["params"]["token_encoder"][name])
    return {**state, "params": {**state["params"], "token_encoder": encoder}}


def _load_initial_weights(state: dict, cfg: TrainConfig, vocab, state_sh) -> dict:
    """Fine-tuning start. `init_from` is either
    - a run directory (config.json + checkpoints/, e.g. one `import-tf-checkpoint` wrote): bilm-tf's
      restart.py, i.e. params AND optimizer state of its latest checkpoint (params only, with a
      fresh optimizer, when `init_optimizer_state` is false), then a new run (step 0, zero LSTM
      state, new data order) on this config's text; the model shape and vocabulary size must
      match; or
    - an export / bilm-tf directory (options.json + weights.hdf5), or a model name (`elmo_jax.hub`:
      a published id such as "original", a URL, hf://owner/repo), resolved to one: the biLM
      weights; the softmax is taken from its params.npz when its vocab.txt equals this run's
      vocabulary, else new."""
    src = cfg.init_from
    if os.path.exists(os.path.join(src, CONFIG_FILE)) and os.path.isdir(os.path.join(src, CHECKPOINT_DIR)):
        return _restart_from_run(state, cfg, len(vocab), state_sh, src)
    src = resolve_model(src).directory
    options_file, weight_file = os.path.join(src, "options.json"), os.path.join(src, "weights.hdf5")
    options, bilm, _ = load_model(options_file, weight_file)
    if options.for_training() != cfg.model.for_training():
        raise ConfigError(f"init_from model ({options_file}) does not match the config's model options")
    params = dict(state["params"])
    params["token_encoder"] = bilm["token_encoder"]
    params["lstm"] = bilm["lstm"]
    npz = os.path.join(src, "params.npz")
    vocab_file = os.path.join(src, "vocab.txt")
    if os.path.exists(npz) and os.path.exists(vocab_file):
        if Vocabulary.from_file(vocab_file).words == vocab.words:
            _, _, extra = import_npz(npz, options)
            if "softmax" in extra:
                params["softmax"] = {k: extra["softmax"][k] for k in params["softmax"]}
    params = jax.tree_util.tree_map(lambda x, s: jax.device_put(jnp.asarray(x, jnp.float32), s),
                                    params, state_sh["params"])
    opt_state = jax.jit(make_optimizer(cfg).init, out_shardings=state_sh["opt_state"])(params)
    return {**state, "params": params, "opt_state": opt_state}


#: How to mend an init_from run of another shape (the run's own config gives the source's shape).
INIT_FROM_ADVICE = ("fine-tune with the source run's model and vocabulary: --config SRC/config.json "
                    "(with your own train_files and run directory)")


def _restart_from_run(state: dict, cfg: TrainConfig, vocab_size: int, state_sh, src: str) -> dict:
    """The params and (with `init_optimizer_state`) the optimizer state of a run's latest checkpoint."""
    if not cfg.init_optimizer_state:
        _, params, step, meta = load_run_params(src)  # read with the source run's own optimizer layout
        check_compatible(meta, cfg, vocab_size, os.path.join(src, CHECKPOINT_DIR, str(step)), INIT_FROM_ADVICE)
        params = jax.tree_util.tree_map(lambda x, s: jax.device_put(x, s), params, state_sh["params"])
        opt_state = jax.jit(make_optimizer(cfg).init, out_shardings=state_sh["opt_state"])(params)
        return {**state, "params": params, "opt_state": opt_state}
    ckpts = Checkpoints(os.path.join(src, CHECKPOINT_DIR), async_save=False, read_only=True)
    try:
        step = ckpts.latest_step()
        if step is None:
            raise CheckpointError("init_from run directory has no complete checkpoint", src)
        check_compatible(ckpts.read_meta(step), cfg, vocab_size, ckpts.step_dir(step), INIT_FROM_ADVICE)
        abstract = abstract_tree(state, state_sh)
        saved_rows = ckpts.read_meta(step).get("batch_size", cfg.batch_size)
        if saved_rows != cfg.batch_size:  # the carried LSTM state is not reused: restore any row count
            abstract["lstm_state"] = jax.tree_util.tree_map(
                lambda x: jax.ShapeDtypeStruct(x.shape[:2] + (saved_rows,) + x.shape[3:], x.dtype), state["lstm_state"])
        try:
            restored, _, _ = ckpts.restore(step, abstract, data_abstract(ckpts, step))
        except CheckpointError as e:
            raise CheckpointError(f"{e.detail} (restarting from a run needs the same optimizer settings: "
                                  "optimizer, clip_norm)", e.path)
    finally:
        ckpts.close()
    return {**state, "params": restored["params"], "opt_state": restored["opt_state"]}


def run_perplexity(run_dir: str, files: str, *, step: Optional[int] = None, batch_size: int = 64,
                   unroll_steps: int = 20, max_batches: Optional[int] = None,
                   from_training_state: bool = False) -> dict:
    """`elmo-jax perplexity`: full-softmax perplexity of a run's checkpoint on `files` (a glob),
    from the zero LSTM state (as evaluation and embedders start) or, with `from_training_state`,
    from the state training carried at that checkpoint (its first `batch_size` rows; fewer rows
    when training had fewer)."""
    cfg, state, step, _ = load_run_state(run_dir, step, optimizer=False)
    vocab = Vocabulary.from_file(resolve_vocab_path(cfg))
    file_list = resolve_files(files)
    mesh = shd.make_mesh()
    params = jax.device_put(state["params"], shd.replicated(mesh))
    carried = None
    if from_training_state:
        carried = state["lstm_state"]
        batch_size = min(batch_size, int(carried["h"].shape[2]))
    evaluator = Evaluator(cfg, file_list, vocab, mesh, max_batches=max_batches, batch_size=batch_size,
                          unroll_steps=unroll_steps)
    result = evaluator(params, carried)
    return {"step": step, "files": len(file_list), "perplexity_forward": result["val_perplexity_fwd"],
            "perplexity_backward": result.get("val_perplexity_bwd"),  # None: a forward-only LM
            "perplexity_average": result["val_perplexity"],
            "average": "geometric mean of the two (exp of the mean of their mean losses), as bilm-tf",
            "start": (f"the LSTM state training carried (its first {evaluator.rows} rows)" if from_training_state
                      else "the zero LSTM state"),
            "tokens": result["val_tokens"]}
