"""Sampled softmax negatives per direction: bilm-tf calls `tf.nn.sampled_softmax_loss` once for the
forward and once for the backward LM, and each call runs its own log-uniform sampler, so the two
directions get independent candidate sets. `train_step` must do the same."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from elmo_jax.config import TrainConfig
from elmo_jax.loss import log_uniform_expected_count_jax, sampled_softmax_loss
from elmo_jax.options import ModelOptions
from elmo_jax.train.step import direction_losses, init_state, make_model, make_train_step

MODEL = ModelOptions(char_embed_dim=4, filters=((1, 8), (2, 8)), n_highway=1, n_characters=261,
                     lstm_dim=16, projection_dim=8, n_layers=1, use_skip_connections=False)
V, S, B, T = 200, 20, 2, 3
TARGET = 3  # every target is this id


def _setup(dropout=0.0):
    cfg = TrainConfig(model=MODEL, batch_size=B, unroll_steps=T, n_negative_samples=S, dropout=dropout,
                      clip_norm=0.0, heldout_files=None).validate()
    cfg = cfg.replace(model=cfg.model.for_training())
    state = init_state(cfg, V, jax.random.key(0))
    rng = np.random.default_rng(0)
    batch = {"unique_chars": jnp.asarray(rng.integers(0, 255, (4, 6)), jnp.int32),
             "token_index": jnp.asarray(rng.integers(0, 4, (2, B, T)), jnp.int32)}
    for sfx in ("fwd", "bwd"):
        batch[f"targets_{sfx}"] = jnp.full((B, T), TARGET, jnp.int32)
        batch[f"weights_{sfx}"] = jnp.ones((B, T), jnp.float32)
    return cfg, state, batch


def test_per_direction_negatives_are_used_per_direction():
    cfg, state, batch = _setup()
    model = make_model(cfg, V)
    ids = jnp.asarray([np.arange(180, 200), np.arange(100, 120)], jnp.int32)  # [2, S]
    tries = jnp.asarray([S, S], jnp.int32)
    sums, counts, _ = direction_losses(model, state["params"], batch, state["lstm_state"], deterministic=True,
                                       rng=None, negatives={"ids": ids, "num_tries": tries}, vocab_size=V)
    top, _ = model.apply({"params": state["params"]}, batch, state["lstm_state"], deterministic=True)
    w, b = state["params"]["softmax"]["W"], state["params"]["softmax"]["b"]
    for d, sfx in enumerate(("fwd", "bwd")):
        t = batch[f"targets_{sfx}"].reshape(-1)
        expect, _ = sampled_softmax_loss(
            top[d].reshape(-1, top.shape[-1]), t, batch[f"weights_{sfx}"].reshape(-1), w, b, ids[d],
            log_uniform_expected_count_jax(ids[d], tries[d], V, S), log_uniform_expected_count_jax(t, tries[d], V, S))
        np.testing.assert_allclose(float(sums[d]), float(expect), rtol=1e-5)


def test_host_draws_one_independent_set_per_direction_and_step():
    """`draw_negatives`: two sets per step (forward, backward), each TF's unique log-uniform sample
    with its own draw count; the same on every host (seeded by seed, step, direction); new each step."""
    from elmo_jax.loss import LogUniformSampler
    from elmo_jax.train.loop import draw_negatives

    sampler = LogUniformSampler(V, S)
    a = draw_negatives(sampler, 7, 5)
    assert a["ids"].shape == (2, S) and a["ids"].dtype == np.int32 and a["num_tries"].shape == (2,)
    assert all(len(set(row.tolist())) == S for row in a["ids"])  # unique within a set
    assert set(a["ids"][0].tolist()) != set(a["ids"][1].tolist())  # independent directions
    for d in range(2):  # exactly what TF's sampler gives for this (seed, step, direction) stream
        ids, tries = sampler.sample(np.random.default_rng([7, 5, d]))
        np.testing.assert_array_equal(a["ids"][d], ids)
        assert a["num_tries"][d] == tries >= S
    b = draw_negatives(sampler, 7, 5)  # another host, same step
    np.testing.assert_array_equal(a["ids"], b["ids"])
    assert not np.array_equal(draw_negatives(sampler, 7, 6)["ids"], a["ids"])
    assert draw_negatives(None, 7, 5) is None


def test_train_step_pushes_down_each_directions_own_negatives():
    """Every target = 3; forward negatives 180..199, backward negatives 100..119: one step changes
    softmax rows {3} and both sets (a shared set would leave 100..119 untouched)."""
    cfg, state, batch = _setup()
    step = jax.jit(make_train_step(cfg, V))
    ids = np.stack([np.arange(180, 200), np.arange(100, 120)]).astype(np.int32)
    new, metrics = step(state, batch, {"ids": jnp.asarray(ids), "num_tries": jnp.asarray([S, S], jnp.int32)})
    changed = set(np.flatnonzero(np.any(np.asarray(new["params"]["softmax"]["W"])
                                        != np.asarray(state["params"]["softmax"]["W"]), axis=1)).tolist())
    assert changed == {TARGET} | set(ids.ravel().tolist())
    assert np.isfinite(float(metrics["loss"]))
