"""Sparse softmax update (`TrainConfig.sparse_softmax_update`): a sampled-softmax Adagrad step reads,
updates and writes back only the softmax rows of its targets and negatives. Adagrad's update of a
row with a zero gradient is exactly zero, so the step must give the dense step's numbers: checked
against the dense step itself (one device, and 8 simulated devices with the softmax replicated or
row-sharded), with NumPy for the rows, and by the rows a step leaves untouched bit for bit."""
from __future__ import annotations

import json

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from elmo_jax.config import TrainConfig
from elmo_jax.options import ModelOptions
from elmo_jax.train.step import (init_state, make_train_step, n_softmax_rows, softmax_rows,
                                 sparse_softmax_eligible)

from conftest import run_worker

MODEL = ModelOptions(char_embed_dim=4, filters=((1, 8), (2, 8)), n_highway=1, n_characters=261,
                     lstm_dim=16, projection_dim=8, n_layers=2, use_skip_connections=True)
V, S, B, T = 300, 12, 3, 4


def _config(**changes) -> TrainConfig:
    base = dict(model=MODEL, batch_size=B, unroll_steps=T, n_negative_samples=S, dropout=0.2, clip_norm=0.0,
                heldout_files=None, state_reset_prob=0.3)
    base.update(changes)
    cfg = TrainConfig(**base).validate()
    return cfg.replace(model=cfg.model.for_training())


def _batch(seed: int) -> tuple[dict, dict]:
    rng = np.random.default_rng(seed)
    batch = {"unique_chars": jnp.asarray(rng.integers(0, 255, (6, 7)), jnp.int32),
             "token_index": jnp.asarray(rng.integers(0, 6, (2, B, T)), jnp.int32)}
    for sfx in ("fwd", "bwd"):
        batch[f"targets_{sfx}"] = jnp.asarray(rng.integers(0, 40, (B, T)), jnp.int32)  # Zipf-like: repeats
        batch[f"weights_{sfx}"] = jnp.ones((B, T), jnp.float32)
    # a padding slot: weight 0 and an out-of-range target contribute nothing
    batch["targets_bwd"] = batch["targets_bwd"].at[2, 3].set(-1)
    batch["weights_bwd"] = batch["weights_bwd"].at[2, 3].set(0.0)
    ids = np.stack([rng.choice(V, S, replace=False) for _ in range(2)]).astype(np.int32)
    negatives = {"ids": jnp.asarray(ids), "num_tries": jnp.asarray([S + 5, S + 1], jnp.int32)}
    return batch, negatives


def _max_diff(a, b) -> float:
    leaves = jax.tree_util.tree_leaves(jax.tree_util.tree_map(
        lambda x, y: float(jnp.max(jnp.abs(jnp.asarray(x, jnp.float32) - jnp.asarray(y, jnp.float32)))), a, b))
    return max(leaves)


def test_softmax_rows_are_the_distinct_ids_read_and_their_positions():
    batch, negatives = _batch(0)
    rows, position = jax.jit(lambda b, n: softmax_rows(b, n, V, 2))(batch, negatives)
    ids = np.concatenate([np.clip(np.asarray(batch[f"targets_{s}"]).ravel(), 0, V - 1) for s in ("fwd", "bwd")]
                         + [np.asarray(negatives["ids"]).ravel()])
    want = np.unique(ids)
    size = n_softmax_rows(B, T, 2, S, V)
    assert rows.shape == (size,) == (2 * (B * T + S),)
    np.testing.assert_array_equal(np.asarray(rows)[:want.size], want)
    assert np.all(np.asarray(rows)[want.size:] == V)  # padding: out of range
    np.testing.assert_array_equal(np.asarray(position)[want], np.arange(want.size))


@pytest.mark.parametrize("clip_norm", [0.0, 1e-3])
def test_sparse_step_gives_the_dense_steps_numbers(clip_norm):
    """Three steps (dropout, state resets, a weight-0 slot): every param, Adagrad accumulator, LSTM
    state and loss as the dense step's. Without clipping everything but the softmax is bit for bit
    the same, and the softmax within float32 rounding (its bias gradient is summed in another
    order); with an active clip the global norm is summed in another order too."""
    cfg = _config(clip_norm=clip_norm)
    assert sparse_softmax_eligible(cfg, V)
    sparse = jax.jit(make_train_step(cfg, V))
    dense = jax.jit(make_train_step(cfg.replace(sparse_softmax_update=False), V))
    a = b = init_state(cfg, V, jax.random.key(1))
    for step in range(3):
        batch, negatives = _batch(step)
        a, ma = sparse(a, batch, negatives)
        b, mb = dense(b, batch, negatives)
        assert float(ma["loss"]) == float(mb["loss"])
        np.testing.assert_allclose(float(ma["grad_norm"]), float(mb["grad_norm"]), rtol=1e-6)
    assert _max_diff(a, b) <= 1e-7
    if clip_norm == 0:
        outside = lambda st: {k: v for k, v in st["params"].items() if k != "softmax"}  # noqa: E731
        assert _max_diff(outside(a), outside(b)) == 0.0
        assert _max_diff(a["lstm_state"], b["lstm_state"]) == 0.0


def test_rows_not_read_stay_bit_identical_and_read_rows_move():
    cfg = _config(clip_norm=10.0)
    state = init_state(cfg, V, jax.random.key(2))
    batch, negatives = _batch(5)
    new, _ = jax.jit(make_train_step(cfg, V))(state, batch, negatives)
    read = set(np.asarray(softmax_rows(batch, negatives, V, 2)[0]).tolist()) - {V}
    real = {int(t) for s in ("fwd", "bwd") for t, w in zip(np.asarray(batch[f"targets_{s}"]).ravel(),
                                                        np.asarray(batch[f"weights_{s}"]).ravel()) if w}
    real |= set(np.asarray(negatives["ids"]).ravel().tolist())
    w0, w1 = np.asarray(state["params"]["softmax"]["W"]), np.asarray(new["params"]["softmax"]["W"])
    moved = set(np.flatnonzero(np.any(w0 != w1, axis=1)).tolist())
    assert moved == real and real <= read  # the padding slot's clipped target (0) is read, with a zero gradient
    acc0 = np.asarray(optax.tree_utils.tree_get(state["opt_state"], "sum_of_squares")["softmax"]["W"])
    acc1 = np.asarray(optax.tree_utils.tree_get(new["opt_state"], "sum_of_squares")["softmax"]["W"])
    unread = sorted(set(range(V)) - read)
    np.testing.assert_array_equal(acc1[unread], acc0[unread])
    np.testing.assert_array_equal(w1[unread], w0[unread])
    moved = sorted(moved)
    assert np.all(acc1[moved] >= acc0[moved]) and np.all(np.any(acc1[moved] > acc0[moved], axis=1))


def test_dense_where_sparse_would_change_the_numbers_or_gain_nothing():
    cfg = _config()
    assert sparse_softmax_eligible(cfg, V)
    assert not sparse_softmax_eligible(cfg.replace(sparse_softmax_update=False), V)
    assert not sparse_softmax_eligible(cfg.replace(optimizer="adam"), V)  # Adam moves every row
    assert not sparse_softmax_eligible(cfg.replace(n_negative_samples=0), V)  # full softmax: all rows
    small_vocab = n_softmax_rows(B, T, 2, S, 10 ** 6)  # the step reads as many rows as the vocabulary has
    assert not sparse_softmax_eligible(cfg, small_vocab)
    assert sparse_softmax_eligible(cfg, small_vocab + 1)


@pytest.mark.slow
def test_sparse_on_eight_devices_equals_dense_on_one(tmp_path):
    """Through `train()` in fresh processes: 8 simulated devices with the softmax replicated and
    row-sharded (`shard_softmax=true`), sparse, against 1 device dense (float32 reductions in
    another order: <= 2e-5) and against 1 device sparse."""
    from test_train import config_file, load_npz, max_param_diff, tiny_config
    from elmo_jax.vocab import Vocabulary

    cfg = tiny_config(tmp_path, max_steps=3, checkpoint_every=3, dropout=0.3, n_negative_samples=6)
    words = Vocabulary.from_file(cfg.vocab).words
    vocab = tmp_path / "vocab128.txt"  # larger than the 2 x (8 x 5 + 6) rows a step reads, divisible by 8
    vocab.write_text("\n".join(words + [f"unusedword{k}" for k in range(128 - len(words))]) + "\n")
    cfg = cfg.replace(vocab=str(vocab))
    assert sparse_softmax_eligible(cfg, 128)
    runs = {"dense1": (cfg.replace(sparse_softmax_update=False), 1), "sparse1": (cfg, 1), "sparse8": (cfg, 8),
            "sharded8": (cfg.replace(shard_softmax="true"), 8)}
    out = {}
    for name, (c, devices) in runs.items():
        run_worker(config_file(c, tmp_path / f"{name}.json"), tmp_path / name, tmp_path / f"{name}.npz", devices)
        out[name] = (load_npz(tmp_path / f"{name}.npz"), json.loads((tmp_path / f"{name}.npz.json").read_text()))
    ref, ref_metrics = out["dense1"]
    assert max_param_diff(ref, out["sparse1"][0]) <= 1e-6  # the clip's global norm: another summation order
    for name in ("sparse8", "sharded8"):
        diff = max_param_diff(ref, out[name][0])
        assert diff <= 2e-5, f"{name}: params differ from 1 device dense by {diff:.3g}"
        assert out[name][1]["loss"] == pytest.approx(ref_metrics["loss"], rel=1e-5)
