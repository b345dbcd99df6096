"""The task model's optimizer, loss, train step and prediction over the device mesh (params
replicated, the batch split over 'data'; each host feeds its rows of every global batch)."""
from __future__ import annotations

from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.experimental import multihost_utils

from .. import sharding as shd
from ..train.kit import compile_step, stop_output, with_clipping
from .config import TaskConfig
from .features import model_inputs
from .inputs import TaskInputs, epoch_order
from .models import ElmoTagger


def make_optimizer(cfg: TaskConfig) -> optax.GradientTransformation:
    """Adam for the task params; the biLM frozen (exact zero updates) or Adam at its own rate."""

    def labels(params):
        return jax.tree_util.tree_map_with_path(
            lambda path, _: "bilm" if "'bilm'" in jax.tree_util.keystr(path) else "task", params)

    bilm = optax.adam(cfg.bilm_learning_rate) if cfg.fine_tune else optax.set_to_zero()
    tx = optax.multi_transform({"task": optax.adam(cfg.learning_rate), "bilm": bilm}, labels)
    return with_clipping(tx, cfg.clip_norm)


def make_loss_fn(cfg: TaskConfig, model):
    """`loss_fn(params, consts, batch, rng) -> (data loss + regularisation, (loss sum, count))`: the
    data loss is the mean over the batch's sentences (classify) or tokens (tag)."""

    def loss_fn(params, consts, batch, rng):
        variables = {"params": params, **consts}
        kwargs = dict(deterministic=False, rngs={"dropout": rng}, mutable=["losses"])
        if cfg.task == "classify":
            logits, aux = model.apply(variables, **model_inputs(batch), **kwargs)
            ce = optax.softmax_cross_entropy_with_integer_labels(logits.astype(jnp.float32), batch["labels"])
            w = batch["weights"]
            total, count = jnp.sum(ce * w), jnp.sum(w)
        else:
            (total, count), aux = model.apply(variables, batch["tags"], **model_inputs(batch),
                                              method=ElmoTagger.loss, **kwargs)
        data_loss = total / jnp.maximum(count, 1.0)
        reg = sum(jnp.sum(x) for x in jax.tree_util.tree_leaves(aux.get("losses", {})))
        return data_loss + reg, (total, count)

    return loss_fn


def make_train_step(cfg: TaskConfig, model, tx: optax.GradientTransformation, state_sharding: Any, mesh):
    """`step(state, consts, batch) -> (state, metrics)`, compiled with explicit shardings and the
    old state donated. Metrics: the batch's mean data loss ('loss'), its sum and count (exact
    interval means), the loss with regularisation ('total_loss'), the gradient norm, and 'stop':
    the maximum of the hosts' stop requests (the batch's optional 'stop' input, `kit.stop_input`)."""
    loss_fn = make_loss_fn(cfg, model)

    def step(state, consts, batch):
        rng = jax.random.fold_in(jax.random.wrap_key_data(state["rng"]), state["step"])
        (total, (loss_sum, count)), grads = jax.value_and_grad(loss_fn, has_aux=True)(
            state["params"], consts, batch, rng)
        updates, opt_state = tx.update(grads, state["opt_state"], state["params"])
        params = optax.apply_updates(state["params"], updates)
        new = {"step": state["step"] + 1, "params": params, "opt_state": opt_state, "rng": state["rng"]}
        return new, {"loss": loss_sum / jnp.maximum(count, 1.0), "loss_sum": loss_sum, "loss_count": count,
                     "total_loss": total, "grad_norm": optax.tree.norm(grads), "stop": stop_output(batch)}

    return compile_step(step, state_sharding, mesh)


def make_predict_fn(cfg: TaskConfig, model):
    def predict(params, consts, batch):
        variables = {"params": params, **consts}
        if cfg.task == "classify":
            return jax.nn.softmax(model.apply(variables, **model_inputs(batch)).astype(jnp.float32), axis=-1)
        tags, _ = model.apply(variables, **model_inputs(batch), method=ElmoTagger.predict)
        return tags

    return jax.jit(predict)


def to_host(x: jax.Array) -> np.ndarray:
    if jax.process_count() > 1:
        return np.asarray(multihost_utils.process_allgather(x, tiled=True))
    return np.asarray(x)


def padded_rows(batch_size: int) -> int:
    """Global rows per step: `batch_size` rounded up to a multiple of the device count."""
    n = jax.device_count()
    return -(-batch_size // n) * n


#: Batch arrays that are not split by rows: the batch's distinct words (every host has them all).
REPLICATED_INPUTS = ("word_chars",)


def global_batch(local_global: dict[str, np.ndarray], mesh) -> dict[str, jax.Array]:
    """Every host builds the same global batch; each feeds its own rows (and all of `word_chars`)."""
    rows = local_global["token_ids"].shape[0]
    start, count = shd.host_rows(rows)
    out = shd.global_batch({k: v[start:start + count] for k, v in local_global.items()
                            if k not in REPLICATED_INPUTS}, mesh)
    for k in REPLICATED_INPUTS:
        if k in local_global:
            out[k] = jax.make_array_from_process_local_data(shd.replicated(mesh), local_global[k])
    return out


def predict_all(cfg: TaskConfig, predict_fn, params, consts, inputs: TaskInputs, sentences: Sequence[Sequence[str]],
                mesh, batch_size: int) -> list:
    """Model outputs for every sentence, in input order: class probabilities [K] or tag ids [n]."""
    rows = padded_rows(batch_size)
    encoded = [inputs.encode(s) for s in sentences]
    out: list = [None] * len(sentences)
    for idx in epoch_order([len(s) for s in sentences], rows, None):
        batch = inputs.batch([encoded[i] for i in idx], rows)
        result = to_host(predict_fn(params, consts, global_batch(batch, mesh)))
        for r, i in enumerate(idx):
            out[i] = result[r] if cfg.task == "classify" else result[r, :len(sentences[i])]
    return out
