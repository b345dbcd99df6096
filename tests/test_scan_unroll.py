"""`scan_unroll`: the LSTM's time steps per `lax.scan` iteration. Unrolling changes the compiled
loop, never the numbers: the layer's outputs and gradients (fused and autodiff backward, input
hoisted or not) match one step per iteration, and the training config's value reaches every LSTM
scan of the compiled train step."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from elmo_jax.config import ConfigError, TrainConfig
from elmo_jax.modules.lstm import lstmp_layer_scan
from elmo_jax.options import ModelOptions
from elmo_jax.train.step import init_state, make_train_step

T, B, I, H, P = 9, 5, 6, 8, 4


def _layer_case(seed: int = 2):
    rng = np.random.default_rng(seed)
    f32 = lambda *shape, s=1.0: jnp.asarray(rng.normal(size=shape) * s, jnp.float32)  # noqa: E731
    args = (f32(2, I + P, 4 * H, s=3.0 / np.sqrt(I + P)), f32(2, 4 * H, s=0.5), f32(2, H, P, s=3.0 / np.sqrt(H)),
            f32(T, 2, B, I, s=2.0), f32(2, B, P), f32(2, B, H, s=2.0))
    mask = jnp.asarray(np.arange(T)[:, None] < np.array([0, 3, 9, 5, 7])[None, :])
    weights = (f32(T, 2, B, P), f32(2, B, P), f32(2, B, H))
    return args, mask, weights


@pytest.mark.parametrize("fused,hoist", [(True, False), (True, True), (False, False)])
@pytest.mark.parametrize("unroll", [4, T])  # 4 does not divide T: a remainder iteration
def test_unrolled_lstm_scan_gives_the_same_outputs_and_gradients(unroll: int, fused: bool, hoist: bool) -> None:
    args, mask, (wy, wh, wc) = _layer_case()

    def loss(n, kernel, bias, projection, xs, h0, c0):
        out, (h_t, c_t) = lstmp_layer_scan(kernel, bias, projection, xs, mask, h0, c0, cell_clip=3.0, proj_clip=3.0,
                                           precision="highest", hoist_input=hoist, remat=not fused, unroll=n,
                                           fused_backward=fused)
        return jnp.sum(out * wy) + jnp.sum(h_t * wh) + jnp.sum(c_t * wc)

    one = jax.value_and_grad(lambda *a: loss(1, *a), argnums=tuple(range(6)))(*args)
    many = jax.value_and_grad(lambda *a: loss(unroll, *a), argnums=tuple(range(6)))(*args)
    np.testing.assert_allclose(float(many[0]), float(one[0]), rtol=1e-6)
    for g, want in zip(many[1], one[1]):
        assert float(jnp.abs(want).max()) > 0
        np.testing.assert_allclose(np.asarray(g), np.asarray(want), rtol=1e-5, atol=1e-6 * float(jnp.abs(want).max()))


def _scan_unrolls(jaxpr) -> list[int]:
    """`unroll` of every scan in a closed jaxpr, nested ones included."""
    found = []
    for eqn in jaxpr.eqns:
        if eqn.primitive.name == "scan":
            found.append(int(eqn.params["unroll"]))
        for value in eqn.params.values():
            for sub in value if isinstance(value, (tuple, list)) else (value,):
                if hasattr(sub, "eqns") or hasattr(sub, "jaxpr"):
                    found += _scan_unrolls(getattr(sub, "jaxpr", sub))
    return found


def test_scan_unroll_reaches_every_lstm_scan_of_the_train_step() -> None:
    """Two layers: a forward scan and a fused-backward scan each, all with the config's unroll;
    the step's loss is that of `scan_unroll` 1. (The char-CNN's row scan keeps its own loop.)"""
    V = 40
    model = ModelOptions().replace(lstm_dim=16, projection_dim=8, n_layers=2, char_embed_dim=4,
                                   filters=((1, 4), (2, 4)), max_characters_per_token=12, n_highway=1)
    cfg = TrainConfig(model=model, batch_size=3, unroll_steps=7, heldout_files=None, dropout=0.0,
                      char_cnn_scan_rows=0).validate()
    cfg = cfg.replace(model=cfg.model.for_training())
    state = init_state(cfg, V, jax.random.key(0))
    rng = np.random.default_rng(0)
    batch = {"unique_chars": jnp.asarray(rng.integers(0, 260, (10, 12)), jnp.int32),
             "token_index": jnp.asarray(rng.integers(0, 10, (2, 3, 7)), jnp.int32)}
    for sfx in ("fwd", "bwd"):
        batch[f"targets_{sfx}"] = jnp.asarray(rng.integers(0, V, (3, 7)), jnp.int32)
        batch[f"weights_{sfx}"] = jnp.ones((3, 7), jnp.float32)
    losses = {}
    for n in (1, 3):
        step = make_train_step(cfg.replace(scan_unroll=n), V)
        unrolls = _scan_unrolls(jax.make_jaxpr(step)(state, batch, None).jaxpr)
        assert unrolls.count(n) == 4, unrolls  # 2 layers x (forward scan + fused backward scan)
        _, metrics = jax.jit(step)(state, batch, None)
        losses[n] = float(metrics["loss"])
    np.testing.assert_allclose(losses[3], losses[1], rtol=1e-6)


def test_scan_unroll_default_depends_on_the_backend(monkeypatch) -> None:
    from elmo_jax.train import step as step_module

    cfg = TrainConfig(heldout_files=None, unroll_steps=20).validate()
    assert cfg.scan_unroll is None
    assert step_module.make_model(cfg, 50).scan_unroll == 1  # the test machine is a CPU
    assert step_module.make_model(cfg.replace(scan_unroll=5), 50).scan_unroll == 5
    monkeypatch.setattr(step_module.jax, "default_backend", lambda: "gpu")
    assert step_module.make_model(cfg, 50).scan_unroll == 20
    assert step_module.make_model(cfg.replace(scan_unroll=5), 50).scan_unroll == 5


def test_scan_unroll_is_validated() -> None:
    with pytest.raises(ConfigError, match="'scan_unroll'"):
        TrainConfig(scan_unroll=0, heldout_files=None).validate()
