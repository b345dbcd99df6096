"""Train state, optimizer and the pure train/eval steps (compiled once, with explicit shardings).

The train state is ONE pytree that Orbax saves whole:
    {'step': int32 [], 'params': {...}, 'opt_state': ..., 'rng': uint32 [2] (key data),
     'lstm_state': {'h': [L, 2, B, P], 'c': [L, 2, B, H]}}      (B = global batch rows)
The data position is saved beside it (see `checkpoint.py`).

Loss (bilm-tf): 0.5 * (forward mean loss + backward mean loss); the gradient is that of
`loss * unroll_steps` (the scale bilm-tf's Adagrad learning rate 0.2 was tuned for). Steps return
sums and counts, so perplexity is exact across devices and eval batches.

Sampled softmax: bilm-tf calls `tf.nn.sampled_softmax_loss` once per direction, and each call runs
its own candidate sampler, so the forward and backward LMs get INDEPENDENT negative sets in a step.
`train_step` does the same: negatives {'ids' [2, S], 'num_tries' [2]}, one set per direction, drawn
on the host (`loop.draw_negatives`, TF's exact sampler). With Adagrad the step then works on the
softmax rows it reads only (`sparse_softmax_update`; `softmax_rows`), which gives the dense update.
"""
from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp
import optax

from ..config import TrainConfig
from ..loss import full_softmax_loss, log_uniform_expected_count_jax, sampled_softmax_loss
from ..modules.language_model import LanguageModel, example_inputs, softmax_params
from ..modules.lstm import zero_state
from ..modules.matmul import BF16_OPERANDS
from ..sharding import is_softmax_rows
from .kit import stop_output, with_clipping

State = dict[str, Any]


def make_model(cfg: TrainConfig, vocab_size: int) -> LanguageModel:
    dtype = jnp.bfloat16 if cfg.precision == "bfloat16" else jnp.float32
    # float32 compute with bfloat16 matmul operands (modules/matmul.py); bfloat16 compute has them anyway
    precision = BF16_OPERANDS if cfg.matmul_precision == "bfloat16" and cfg.precision == "float32" else None
    return LanguageModel(cfg.model, vocab_size, cfg.dropout, dtype=dtype, remat=cfg.remat,
                         hoist_input=cfg.hoist_input, fused_backward=cfg.fused_backward,
                         freeze_word_vectors=cfg.freeze_word_vectors, char_cnn_scan_rows=cfg.char_cnn_scan_rows,
                         precision=precision, scan_unroll=resolve_scan_unroll(cfg))


def resolve_scan_unroll(cfg: TrainConfig) -> int:
    """`scan_unroll` None -> 1 on a CPU backend (interleaved at the mid shape, unrolling 4 or 20 steps
    made the train step 0.83x / 0.68x as fast), the whole window elsewhere (1.08-1.12x on an H200)."""
    if cfg.scan_unroll is not None:
        return cfg.scan_unroll
    return 1 if jax.default_backend() == "cpu" else cfg.unroll_steps


def make_optimizer(cfg: TrainConfig) -> optax.GradientTransformation:
    """Global-norm clipping, then Adagrad exactly as TF's (accumulator starts at
    `initial_accumulator`, no epsilon) or Adam."""
    if cfg.optimizer == "adagrad":
        opt = optax.adagrad(cfg.learning_rate, initial_accumulator_value=cfg.initial_accumulator, eps=0.0)
    else:
        opt = optax.adam(cfg.learning_rate)
    return with_clipping(opt, cfg.clip_norm)


def init_state(cfg: TrainConfig, vocab_size: int, key: jax.Array) -> State:
    """A fresh train state (params initialised as bilm-tf does, zero LSTM carry)."""
    model = make_model(cfg, vocab_size)
    opts = cfg.model
    params = model.init(key, example_inputs(opts), zero_state(opts, 1))["params"]
    return {
        "step": jnp.zeros((), jnp.int32),
        "params": params,
        "opt_state": make_optimizer(cfg).init(params),
        "rng": jax.random.key_data(jax.random.fold_in(key, 1)),
        "lstm_state": zero_state(opts, cfg.batch_size),
    }


def direction_losses(model: LanguageModel, params: Any, batch: dict, lstm_state: dict, *,
                     deterministic: bool, rng: jax.Array | None, negatives: dict | None,
                     vocab_size: int, row_position: jax.Array | None = None) -> tuple[jax.Array, jax.Array, dict]:
    """(loss sums [Dn], weight sums [Dn], new LSTM state) for the forward (and backward) streams.

    `row_position` (sampled softmax only): `params['softmax']` holds only some rows of the softmax
    (`softmax_rows`), and this [V] table gives each vocabulary id's index among them."""
    rngs = None if rng is None else {"dropout": rng}
    top, new_state = model.apply({"params": params}, batch, lstm_state, deterministic=deterministic, rngs=rngs)
    w, b = softmax_params(params, vocab_size)
    sums, counts = [], []
    for d, suffix in enumerate(("fwd", "bwd")[:top.shape[0]]):
        hidden = top[d].reshape(-1, top.shape[-1])
        targets = batch[f"targets_{suffix}"].reshape(-1)
        weights = batch[f"weights_{suffix}"].reshape(-1).astype(jnp.float32)
        if negatives is None:
            # a large vocabulary's [N, V] logits are made 256 positions at a time (793k words: 0.8 GB)
            chunk = 256 if vocab_size > 100_000 else None
            s, c = full_softmax_loss(hidden, targets, weights, w, b, chunk_size=chunk, precision=model.precision)
        else:
            ids, tries = negatives["ids"][d], negatives["num_tries"][d]  # this direction's own set
            n_sampled = ids.shape[0]
            # a weight-0 padding target may be out of range: clipped, it cannot make a NaN gradient
            targets = jnp.clip(targets, 0, vocab_size - 1)
            # positions among the step's rows (a bijection on the ids present: accidental hits are the same)
            row_of = (lambda x: x) if row_position is None else (lambda x: jnp.take(row_position, x))
            s, c = sampled_softmax_loss(
                hidden, row_of(targets), weights, w, b, row_of(ids),
                log_uniform_expected_count_jax(ids, tries, vocab_size, n_sampled),
                log_uniform_expected_count_jax(targets, tries, vocab_size, n_sampled), precision=model.precision)
        sums.append(s)
        counts.append(c)
    return jnp.stack(sums), jnp.stack(counts), new_state


def sparse_softmax_eligible(cfg: TrainConfig, vocab_size: int) -> bool:
    """Does `train_step` update only the softmax rows a step reads (`TrainConfig.sparse_softmax_update`)?
    Only where that gives the dense update's numbers: a sampled softmax of its own (not the shared
    embedding) under Adagrad, whose update of a row with a zero gradient is exactly zero, and only
    where the step can read fewer rows than the vocabulary has."""
    opts = cfg.model
    return (cfg.sparse_softmax_update and cfg.n_negative_samples > 0 and cfg.optimizer == "adagrad"
            and not opts.share_embedding_softmax
            and n_softmax_rows(cfg.batch_size, cfg.unroll_steps, opts.n_directions, cfg.n_negative_samples,
                               vocab_size) < vocab_size)


def n_softmax_rows(batch_size: int, unroll_steps: int, n_directions: int, n_negatives: int, vocab_size: int) -> int:
    """The fixed length of `softmax_rows`: every target of every direction plus both negative sets,
    at most the vocabulary."""
    return min(vocab_size, n_directions * (batch_size * unroll_steps + n_negatives))


def softmax_rows(batch: dict, negatives: dict, vocab_size: int, n_directions: int) -> tuple[jax.Array, jax.Array]:
    """The distinct softmax rows a sampled-softmax step reads: its targets (all directions, all
    devices' rows; padding targets clipped into range as the loss does) and its negatives.
    -> (rows int32 [n_softmax_rows]: the ids in increasing order, padded at the end with
    `vocab_size`, out of range: reads there give zeros, writes are dropped; position int32 [V]:
    each present id's index in `rows`). A presence table over the vocabulary, not a sort: XLA:CPU
    sorted the mid shape's 5,376 ids in 1.8 ms."""
    suffixes = ("fwd", "bwd")[:n_directions]
    ids = jnp.concatenate([jnp.clip(batch[f"targets_{s}"].reshape(-1), 0, vocab_size - 1) for s in suffixes]
                          + [negatives["ids"][:n_directions].reshape(-1)]).astype(jnp.int32)
    present = jnp.zeros((vocab_size,), jnp.int32).at[ids].set(1)
    position = jnp.cumsum(present) - 1  # [V]: rank among the present ids
    size = min(vocab_size, ids.shape[0])
    rows = jnp.full((size,), vocab_size, jnp.int32).at[jnp.where(present == 1, position, size)].set(
        jnp.arange(vocab_size, dtype=jnp.int32), mode="drop")
    return rows, position.astype(jnp.int32)


def _is_softmax_rows(params: Any, vocab_size: int) -> Any:
    """A params-shaped tree of bools: True at the softmax's own W [V, P] and b [V]."""
    return jax.tree_util.tree_map_with_path(lambda path, leaf: is_softmax_rows(path, leaf.shape, vocab_size), params)


def gather_softmax_rows(tree: Any, marks: Any, rows: jax.Array) -> Any:
    """`tree` (params or optimizer state) with each marked leaf cut to `rows` (the padding id reads zeros)."""
    return jax.tree_util.tree_map(
        lambda x, m: jnp.take(x, rows, axis=0, mode="fill", fill_value=0) if m else x, tree, marks)


def scatter_softmax_rows(full: Any, part: Any, marks: Any, rows: jax.Array) -> Any:
    """`full` with each marked leaf's `rows` set from `part` (the padding id's writes dropped); the
    other leaves from `part`."""
    return jax.tree_util.tree_map(
        lambda f, p, m: f.at[rows].set(p, mode="drop") if m else p, full, part, marks)


RESET_STREAM = 0x5E7  # fold_in constant: the state-reset draws' own random stream (dropout uses the step key)


def reset_rows(lstm_state: dict, key: jax.Array, prob: float) -> dict:
    """The carried LSTM state with each row (axis 2 of every leaf) set to zero with probability
    `prob`, all layers and directions of a row together: such a row starts this batch from the
    zero state, as evaluation and every embedder start. Without it a model trained only from
    carried states can fall, from a zero start, into saturated cells that never recover (see
    `TrainConfig.state_reset_prob`). `prob` 0: the state unchanged."""
    if prob <= 0:
        return lstm_state
    rows = jax.tree_util.tree_leaves(lstm_state)[0].shape[2]
    keep = jax.random.bernoulli(key, 1.0 - prob, (rows,))
    return jax.tree_util.tree_map(lambda x: jnp.where(keep[None, None, :, None], x, jnp.zeros_like(x)), lstm_state)


def make_train_step(cfg: TrainConfig, vocab_size: int) -> Callable:
    """`train_step(state, batch, negatives) -> (state, metrics)`; `negatives` is None for the full
    softmax, or {'ids': int32 [2, S], 'num_tries': int32 [2]}: one set per direction (bilm-tf)."""
    model = make_model(cfg, vocab_size)
    tx = make_optimizer(cfg)
    unroll = cfg.unroll_steps
    sparse = sparse_softmax_eligible(cfg, vocab_size)

    def train_step(state: State, batch: dict, negatives: dict | None):
        rng = jax.random.fold_in(jax.random.wrap_key_data(state["rng"]), state["step"])
        lstm_in = reset_rows(state["lstm_state"], jax.random.fold_in(rng, RESET_STREAM), cfg.state_reset_prob)
        params, opt_state = state["params"], state["opt_state"]
        rows = position = None
        if sparse and negatives is not None:
            # Only the softmax rows this step reads take part: gathered from the params and Adagrad's
            # accumulators, differentiated, updated, written back. The other rows' gradient is zero,
            # and so is their Adagrad update: the dense step's numbers without its [V, P] gradient
            # and full-table update (as TF's IndexedSlices do for bilm-tf).
            rows, position = softmax_rows(batch, negatives, vocab_size, model.options.n_directions)
            marks = _is_softmax_rows(params, vocab_size)
            opt_marks = optax.tree_utils.tree_map_params(  # the same leaves among the optimizer's slots
                tx, lambda _, m: m, opt_state, marks,
                transform_non_params=lambda v: jax.tree_util.tree_map(lambda _: False, v))
            params = gather_softmax_rows(params, marks, rows)
            opt_state = gather_softmax_rows(opt_state, opt_marks, rows)

        def loss_fn(params):
            sums, counts, new_lstm = direction_losses(
                model, params, batch, lstm_in, deterministic=False, rng=rng,
                negatives=negatives, vocab_size=vocab_size, row_position=position)
            means = sums / jnp.maximum(counts, 1.0)
            loss = jnp.mean(means)  # bilm-tf: 0.5 (forward + backward); one direction: its loss
            return loss * unroll, (loss, means, sums, counts, new_lstm)

        grads, (loss, means, sums, counts, new_lstm) = jax.grad(loss_fn, has_aux=True)(params)
        updates, opt_state = tx.update(grads, opt_state, params)
        params = optax.apply_updates(params, updates)
        if rows is not None:
            params = scatter_softmax_rows(state["params"], params, marks, rows)
            opt_state = scatter_softmax_rows(state["opt_state"], opt_state, opt_marks, rows)
        new_state = {
            "step": state["step"] + 1,
            "params": params,
            "opt_state": opt_state,
            "rng": state["rng"],
            # the carry is stored in float32 whatever the compute dtype: the state keeps one type
            "lstm_state": jax.tree_util.tree_map(lambda new, old: jax.lax.stop_gradient(new).astype(old.dtype),
                                                 new_lstm, state["lstm_state"]),
        }
        # a forward-only LM reports its loss as both directions' (the loop logs only the forward one)
        metrics = {"loss": loss, "loss_fwd": means[0], "loss_bwd": means[-1], "tokens": counts[0],
                   "grad_norm": optax.tree.norm(grads), "param_norm": optax.tree.norm(params)}
        # every host's preemption flag (one per device) -> the max, identical on every host
        metrics["stop"] = stop_output(batch)
        return new_state, metrics

    return train_step


def make_eval_step(cfg: TrainConfig, vocab_size: int) -> Callable:
    """`eval_step(params, batch, lstm_state) -> (loss sums [Dn], counts [Dn], new lstm_state)`:
    full softmax, no dropout, state carried between eval batches. Matmuls in float32 whatever
    `matmul_precision` trained with: the perplexity is that of the model as it is exported and used."""
    model = make_model(cfg.replace(matmul_precision="float32"), vocab_size)

    def eval_step(params, batch, lstm_state):
        sums, counts, new_state = direction_losses(model, params, batch, lstm_state, deterministic=True, rng=None,
                                                   negatives=None, vocab_size=vocab_size)
        return sums, counts, jax.tree_util.tree_map(lambda new, old: new.astype(old.dtype), new_state, lstm_state)

    return eval_step
