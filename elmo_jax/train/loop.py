"""The pretraining loop: `train(cfg, run_dir)`.

Everything is checked before any compute (files, vocabulary, config, an existing checkpoint's
model shape); then one compiled step runs over a mesh of all devices of all hosts, with the
batch split over the 'data' axis. At most one step is in flight: the loop reads the previous
step's metrics while the current step runs (lag-1 logging), which also keeps XLA's collectives
from piling up. Checkpoints every `checkpoint_every` steps and at the end; validation perplexity
every `eval_every` steps and at the end; one JSON line of metrics per logging step.
"""
from __future__ import annotations

import json
import math
import os
import sys
import time
from typing import Any, Optional

import jax
import jax.numpy as jnp
import numpy as np

from .. import sharding as shd
from ..config import ConfigError, TrainConfig
from ..errors import ElmoError
from ..loss import LogUniformSampler
from .batching import prepare_batch
from .checkpoint import CheckpointError, Checkpoints, abstract_tree
from .step import init_state, make_eval_step, make_train_step

METRICS_FILE = "metrics.jsonl"
CONFIG_FILE = "config.json"


# --------------------------------------------------------------------------- data (adapter)
def resolve_vocab_path(cfg: TrainConfig) -> str:
    if cfg.vocab == "builtin":
        from ..corpus import build_builtin_corpus

        return build_builtin_corpus()["vocab_file"]
    return cfg.vocab


def resolve_data(cfg: TrainConfig):
    """(train files, heldout files or [], vocabulary) with every check done up front."""
    from ..corpus import build_builtin_corpus
    from ..vocab import Vocabulary, resolve_files

    builtin = None

    def files_of(spec: str) -> list[str]:
        nonlocal builtin
        if spec.startswith("builtin:"):
            builtin = builtin or build_builtin_corpus()
            key = spec.split(":", 1)[1]
            if key not in ("train", "heldout"):
                raise ConfigError(f"unknown built-in corpus part '{spec}' (use builtin:train or builtin:heldout)")
            return list(builtin["train_files"] if key == "train" else builtin["heldout_files"])
        return resolve_files(spec)

    train_files = files_of(cfg.train_files)
    heldout = files_of(cfg.heldout_files) if cfg.heldout_files else []
    if cfg.vocab == "builtin":
        builtin = builtin or build_builtin_corpus()
        vocab_path = builtin["vocab_file"]
    else:
        vocab_path = cfg.vocab
    vocab = Vocabulary.from_file(vocab_path)
    if cfg.n_negative_samples and cfg.n_negative_samples >= len(vocab):
        raise ConfigError(f"config key 'n_negative_samples' ({cfg.n_negative_samples}) must be smaller than "
                          f"the vocabulary ({len(vocab)} words in {vocab_path})")
    return train_files, heldout, vocab


def make_batcher(files: list[str], vocab, cfg: TrainConfig, *, train: bool, rows: int, row_start: int,
                 row_count: int, unroll_steps: int):
    from ..data import Batcher

    return Batcher(files, vocab, global_batch_size=rows, unroll_steps=unroll_steps, row_start=row_start,
                   row_count=row_count, seed=cfg.seed, train=train, streaming=cfg.streaming,
                   max_characters_per_token=cfg.model.max_characters_per_token)


# --------------------------------------------------------------------------- helpers
def _meta(cfg: TrainConfig, vocab_size: int) -> dict:
    return {"model": cfg.model.to_dict(), "vocab_size": vocab_size, "batch_size": cfg.batch_size}


def _check_compatible(meta: dict, cfg: TrainConfig, vocab_size: int, where: str) -> None:
    from ..options import ModelOptions

    saved = ModelOptions.from_dict(meta.get("model", {}), source=where).for_training()
    if saved != cfg.model.for_training() or meta.get("vocab_size") != vocab_size:
        raise CheckpointError(
            "checkpoint is from a different model shape "
            f"(checkpoint: {json.dumps(meta.get('model', {}).get('lstm'))}, vocab {meta.get('vocab_size')}; "
            f"config: {json.dumps(cfg.model.to_dict()['lstm'])}, vocab {vocab_size}); "
            "use another --run-dir or the matching config", where)


class MetricsLog:
    """Append-only JSONL metrics (process 0 only)."""

    def __init__(self, path: str):
        self.path = path
        self.enabled = jax.process_index() == 0

    def write(self, record: dict) -> None:
        if self.enabled:
            with open(self.path, "a", encoding="utf-8") as fh:
                fh.write(json.dumps(record) + "\n")


def total_steps(cfg: TrainConfig, steps_per_epoch: int) -> int:
    """`max_steps`, or epochs x (training targets / (batch x unroll)), counted from the data."""
    if cfg.max_steps is not None:
        return cfg.max_steps
    return max(1, math.ceil(cfg.n_epochs * steps_per_epoch))


# --------------------------------------------------------------------------- evaluation
def evaluate(cfg: TrainConfig, params: Any, files: list[str], vocab, mesh, *, max_batches: Optional[int],
             batch_size: Optional[int] = None, unroll_steps: Optional[int] = None) -> dict:
    """Full-softmax perplexity of the forward LM, the backward LM and their geometric mean
    (exp of the mean of the two mean losses, as bilm-tf reports)."""
    from ..modules.lstm import zero_state

    rows = batch_size or min(cfg.batch_size, 64)
    rows = max(jax.device_count(), rows - rows % jax.device_count())
    unroll = unroll_steps or cfg.unroll_steps
    start, count = shd.host_rows(rows)
    batcher = make_batcher(files, vocab, cfg, train=False, rows=rows, row_start=start, row_count=count,
                           unroll_steps=unroll)
    eval_step = jax.jit(make_eval_step(cfg, len(vocab)))
    lstm_state = jax.device_put(zero_state(cfg.model, rows), shd.batch_sharding(mesh, 4, axis=2))
    sums, counts = np.zeros(2), np.zeros(2)
    for i, batch in enumerate(batcher):
        if max_batches is not None and i >= max_batches:
            break
        batch = prepare_batch(batch, max(w for w, _ in cfg.model.filters))
        s, c, lstm_state = eval_step(params, shd.global_batch(batch, mesh), lstm_state)
        sums += np.asarray(s, np.float64)
        counts += np.asarray(c, np.float64)
    means = sums / np.maximum(counts, 1)
    return {"val_perplexity": float(np.exp(means.mean())), "val_perplexity_fwd": float(np.exp(means[0])),
            "val_perplexity_bwd": float(np.exp(means[1])), "val_tokens": int(counts[0])}


# --------------------------------------------------------------------------- train
def train(cfg: TrainConfig, run_dir: str, resume: Optional[bool] = None, progress: bool = True,
          return_params: bool = False) -> dict:
    """Pretrain (or continue) a biLM in `run_dir`; returns the last logged metrics (and, with
    `return_params`, the final params as NumPy arrays under 'params')."""
    cfg = cfg.replace(model=cfg.model.for_training())
    train_files, heldout_files, vocab = resolve_data(cfg)
    vocab_size = len(vocab)
    mesh = shd.make_mesh()
    if cfg.batch_size % jax.device_count():
        raise ConfigError(f"config key 'batch_size' ({cfg.batch_size}) must be divisible by the "
                          f"{jax.device_count()} devices")
    os.makedirs(run_dir, exist_ok=True)
    ckpts = Checkpoints(os.path.join(run_dir, "checkpoints"), keep=cfg.keep_checkpoints)
    latest = ckpts.latest_step()
    if latest is not None:
        if resume is False:
            raise CheckpointError("the run directory already holds checkpoints; pass --resume or use "
                                  "another --run-dir (nothing was overwritten)", run_dir)
        _check_compatible(ckpts.read_meta(latest), cfg, vocab_size, os.path.join(ckpts.directory, str(latest)))
    if jax.process_index() == 0:
        cfg.to_json(os.path.join(run_dir, CONFIG_FILE))

    # ---- state: init, or restore the latest complete checkpoint
    key = jax.random.key(cfg.seed)
    abstract = jax.eval_shape(lambda k: init_state(cfg, vocab_size, k), key)
    shard_softmax = shd.should_shard_softmax(cfg.shard_softmax, vocab_size, cfg.model.projection_dim, mesh)
    state_sh = shd.state_shardings(abstract, mesh, shard_softmax, vocab_size)
    start_row, n_rows = shd.host_rows(cfg.batch_size)
    batcher = make_batcher(train_files, vocab, cfg, train=True, rows=cfg.batch_size, row_start=start_row,
                           row_count=n_rows, unroll_steps=cfg.unroll_steps)
    if latest is not None:
        data_abstract = jax.tree_util.tree_map(lambda x: jax.ShapeDtypeStruct(np.shape(x), np.asarray(x).dtype),
                                               batcher.state())
        state, data_state, _ = ckpts.restore(latest, abstract_tree(abstract, state_sh), data_abstract)
        batcher.restore(jax.tree_util.tree_map(np.asarray, data_state))
        print(f"elmo-jax: resumed from step {latest} in {ckpts.directory}", file=sys.stderr)
    else:
        state = jax.jit(lambda k: init_state(cfg, vocab_size, k), out_shardings=state_sh)(key)
        if cfg.init_from:
            state = _load_initial_weights(state, cfg, vocab, state_sh)

    # ---- compile once, explicit shardings, donate the old state
    negatives_sh = shd.replicated(mesh)
    step_fn = jax.jit(make_train_step(cfg, vocab_size), donate_argnums=0,
                      in_shardings=(state_sh, None, negatives_sh), out_shardings=(state_sh, shd.replicated(mesh)))
    sampler = LogUniformSampler(vocab_size, cfg.n_negative_samples) if cfg.n_negative_samples else None
    steps = total_steps(cfg, batcher.steps_per_epoch)
    log = MetricsLog(os.path.join(run_dir, METRICS_FILE))
    first = int(state["step"])
    from tqdm import tqdm

    bar = tqdm(total=steps, initial=first, unit="step", disable=not progress or jax.process_index() != 0,
               file=sys.stderr, dynamic_ncols=True)
    last: dict = {}
    pending = None  # (step, metrics on device, time dispatched)
    positions_per_step = cfg.batch_size * cfg.unroll_steps * 2
    t_last, step_at_t = time.perf_counter(), first
    stream = batcher.prefetch(depth=4)  # its state() follows what the loop consumed
    max_width = max(w for w, _ in cfg.model.filters)

    def drain(pending_item, defer: bool = False) -> Optional[dict]:
        """Read a step's metrics; log them (or, with `defer`, return the record for the caller to
        complete with validation numbers and write)."""
        nonlocal last, t_last, step_at_t
        step_no, metrics = pending_item
        values = {k: float(v) for k, v in jax.device_get(metrics).items()}
        if not math.isfinite(values["loss"]):
            raise ElmoError(f"non-finite loss at step {step_no} (loss {values['loss']}); lower the learning "
                            f"rate or check the data; the last checkpoint is kept", run_dir)
        now = time.perf_counter()
        rate = positions_per_step * (step_no - step_at_t) / max(now - t_last, 1e-9)
        values.update(step=step_no, perplexity=float(np.exp(values["loss"])), positions_per_s=rate)
        bar.set_postfix(loss=f"{values['loss']:.3f}", ppl=f"{values['perplexity']:.1f}", pos_s=f"{rate:.0f}")
        last = values
        if step_no % cfg.log_every == 0 or step_no == steps or defer:
            t_last, step_at_t = now, step_no
            if defer:
                return values
            log.write(values)
        return None

    try:
        for step_no in range(first + 1, steps + 1):
            batch = shd.global_batch(prepare_batch(next(stream), max_width), mesh)
            negatives = None
            if sampler is not None:
                ids, tries = sampler.sample(np.random.default_rng([cfg.seed, step_no]))
                negatives = {"ids": jnp.asarray(ids, jnp.int32), "num_tries": jnp.asarray(tries, jnp.int32)}
            state, metrics = step_fn(state, batch, negatives)
            if pending is not None:
                drain(pending)  # lag-1: the previous step's metrics, while this step runs
            pending = (step_no, metrics)
            bar.update(1)
            periodic = bool(cfg.eval_every) and step_no % cfg.eval_every == 0
            eval_now = bool(heldout_files) and (periodic or step_no == steps)
            if step_no % cfg.checkpoint_every == 0 or step_no == steps or eval_now:
                record = drain(pending, defer=eval_now)
                pending = None
                if eval_now:  # validation numbers go into the same metrics record
                    val = evaluate(cfg, state["params"], heldout_files, vocab, mesh, max_batches=cfg.eval_batches)
                    last.update(val)
                    log.write({**record, **val})
            if step_no % cfg.checkpoint_every == 0 or step_no == steps:
                ckpts.save(step_no, state, stream.state(), _meta(cfg, vocab_size), force=True)
        if pending is not None:
            drain(pending)
        if heldout_files and first >= steps:  # nothing left to train: report validation only
            val = evaluate(cfg, state["params"], heldout_files, vocab, mesh, max_batches=cfg.eval_batches)
            last.update(val)
            log.write({"step": int(state["step"]), **val})
    finally:
        stream.close()
        bar.close()
        ckpts.close()
    if return_params:
        from jax.experimental import multihost_utils

        last["params"] = jax.tree_util.tree_map(
            np.asarray, multihost_utils.process_allgather(state["params"], tiled=True))
    return last


def _load_initial_weights(state: dict, cfg: TrainConfig, vocab, state_sh) -> dict:
    """Fine-tuning start. `init_from` is either
    - a run directory (config.json + checkpoints/): bilm-tf's restart.py, i.e. params AND optimizer
      state of its latest checkpoint, then a new run (step 0, zero LSTM state, new data order) on
      this config's text; the model shape and vocabulary size must match; or
    - an export / bilm-tf directory (options.json + weights.hdf5): the biLM weights; the softmax is
      taken from its params.npz when its vocab.txt equals this run's vocabulary, else new."""
    from ..weights import load_model

    src = cfg.init_from
    if os.path.exists(os.path.join(src, CONFIG_FILE)) and os.path.isdir(os.path.join(src, "checkpoints")):
        return _restart_from_run(state, cfg, len(vocab), state_sh, src)
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
        from ..vocab import Vocabulary
        from ..weights import import_npz

        if Vocabulary.from_file(vocab_file).words == vocab.words:
            _, _, extra = import_npz(npz, options)
            if "softmax" in extra:
                params["softmax"] = {"W": extra["softmax"]["W"], "b": extra["softmax"]["b"]}
    params = jax.tree_util.tree_map(lambda x, s: jax.device_put(jnp.asarray(x, jnp.float32), s),
                                    params, state_sh["params"])
    from .step import make_optimizer

    opt_state = jax.jit(make_optimizer(cfg).init, out_shardings=state_sh["opt_state"])(params)
    return {**state, "params": params, "opt_state": opt_state}


def _restart_from_run(state: dict, cfg: TrainConfig, vocab_size: int, state_sh, src: str) -> dict:
    ckpts = Checkpoints(os.path.join(src, "checkpoints"), async_save=False)
    try:
        step = ckpts.latest_step()
        if step is None:
            raise CheckpointError("init_from run directory has no complete checkpoint", src)
        _check_compatible(ckpts.read_meta(step), cfg, vocab_size, os.path.join(ckpts.directory, str(step)))
        from .export import _data_abstract

        abstract = abstract_tree(state, state_sh)
        saved_rows = ckpts.read_meta(step).get("batch_size", cfg.batch_size)
        if saved_rows != cfg.batch_size:  # the carried LSTM state is not reused: restore any row count
            abstract["lstm_state"] = jax.tree_util.tree_map(
                lambda x: jax.ShapeDtypeStruct(x.shape[:2] + (saved_rows,) + x.shape[3:], x.dtype), state["lstm_state"])
        try:
            restored, _, _ = ckpts.restore(step, abstract, _data_abstract(ckpts, step))
        except CheckpointError as e:
            raise CheckpointError(f"{e.detail} (restarting from a run needs the same optimizer settings: "
                                  "optimizer, clip_norm)", e.path)
    finally:
        ckpts.close()
    return {**state, "params": restored["params"], "opt_state": restored["opt_state"]}


def run_perplexity(run_dir: str, files: str, *, step: Optional[int] = None, batch_size: int = 64,
                   unroll_steps: int = 20, max_batches: Optional[int] = None) -> dict:
    """`elmo-jax perplexity`: full-softmax perplexity of a run's checkpoint on `files` (a glob)."""
    from ..vocab import Vocabulary, resolve_files
    from .export import load_run_params

    cfg, params, step, _ = load_run_params(run_dir, step)
    vocab = Vocabulary.from_file(resolve_vocab_path(cfg))
    file_list = resolve_files(files)
    mesh = shd.make_mesh()
    params = jax.device_put(params, shd.replicated(mesh))
    result = evaluate(cfg, params, file_list, vocab, mesh, max_batches=max_batches, batch_size=batch_size,
                      unroll_steps=unroll_steps)
    return {"step": step, "files": len(file_list), "perplexity_forward": result["val_perplexity_fwd"],
            "perplexity_backward": result["val_perplexity_bwd"],
            "perplexity_average": result["val_perplexity"],
            "average": "geometric mean of the two (exp of the mean of their mean losses), as bilm-tf",
            "tokens": result["val_tokens"]}
