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
on the host (`loop.draw_negatives`, TF's exact sampler).
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
                     vocab_size: int) -> tuple[jax.Array, jax.Array, dict]:
    """(loss sums [Dn], weight sums [Dn], new LSTM state) for the forward (and backward) streams."""
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
            s, c = sampled_softmax_loss(
                hidden, targets, weights, w, b, ids,
                log_uniform_expected_count_jax(ids, tries, vocab_size, n_sampled),
                log_uniform_expected_count_jax(targets, tries, vocab_size, n_sampled), precision=model.precision)
        sums.append(s)
        counts.append(c)
    return jnp.stack(sums), jnp.stack(counts), new_state


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

    def train_step(state: State, batch: dict, negatives: dict | None):
        rng = jax.random.fold_in(jax.random.wrap_key_data(state["rng"]), state["step"])
        lstm_in = reset_rows(state["lstm_state"], jax.random.fold_in(rng, RESET_STREAM), cfg.state_reset_prob)

        def loss_fn(params):
            sums, counts, new_lstm = direction_losses(
                model, params, batch, lstm_in, deterministic=False, rng=rng,
                negatives=negatives, vocab_size=vocab_size)
            means = sums / jnp.maximum(counts, 1.0)
            loss = jnp.mean(means)  # bilm-tf: 0.5 (forward + backward); one direction: its loss
            return loss * unroll, (loss, means, sums, counts, new_lstm)

        grads, (loss, means, sums, counts, new_lstm) = jax.grad(loss_fn, has_aux=True)(state["params"])
        updates, opt_state = tx.update(grads, state["opt_state"], state["params"])
        params = optax.apply_updates(state["params"], updates)
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
