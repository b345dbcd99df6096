"""`matmul_precision = "bfloat16"` (modules/matmul.py): each matmul's operands rounded to bfloat16,
float32 accumulation and results, forward and backward; everything else float32.

Checked against independent computations: ml_dtypes' round-to-nearest-even bfloat16 and float64
NumPy products (the operands a matmul may see), the float32 fused LSTM backward, the autodiff LSTM
path under the same rounding, and the float32 train step of the same state and batch, for every
model path a config can select (full / sampled softmax, one convolution / scanned char-CNN,
fused / autodiff LSTM backward, hoisted input, word input, one direction)."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np
import pytest

from elmo_jax.config import ConfigError, TrainConfig
from elmo_jax.modules import matmul as mm
from elmo_jax.options import ModelOptions
from elmo_jax.train import loop
from elmo_jax.train.step import direction_losses, init_state, make_eval_step, make_model, make_train_step
from test_train import tiny_config, write_corpus

BF16 = mm.BF16_OPERANDS


def _round(x) -> np.ndarray:
    """float64 copy of x rounded to bfloat16 (ml_dtypes, independent of XLA's convert)."""
    return np.asarray(x, np.float32).astype(ml_dtypes.bfloat16).astype(np.float64)


def _rel(a, b) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.abs(a - b).max() / np.abs(b).max())


def test_matmul_is_the_product_of_rounded_operands_forward_and_backward():
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.normal(size=(3, 5, 64)), jnp.float32)  # leading axes are flattened
    w = jnp.asarray(rng.normal(size=(64, 48)), jnp.float32)
    c = jnp.asarray(rng.normal(size=(3, 5, 48)), jnp.float32)  # the output's cotangent
    out = mm.matmul(x, w, BF16)
    assert out.dtype == jnp.float32 and out.shape == (3, 5, 48)
    np.testing.assert_allclose(np.asarray(out), _round(x) @ _round(w), rtol=1e-5, atol=1e-5)
    assert _rel(out, np.asarray(x, np.float64) @ np.asarray(w, np.float64)) > 1e-4  # it did round

    dx, dw = jax.grad(lambda x, w: jnp.sum(mm.matmul(x, w, BF16) * c), argnums=(0, 1))(x, w)
    assert dx.dtype == dw.dtype == jnp.float32
    np.testing.assert_allclose(np.asarray(dx), _round(c) @ _round(w).T, rtol=1e-5, atol=1e-5)
    want_dw = _round(x).reshape(-1, 64).T @ _round(c).reshape(-1, 48)
    np.testing.assert_allclose(np.asarray(dw), want_dw, rtol=1e-5, atol=1e-5)
    # float32 precision is jnp.dot's, exactly
    np.testing.assert_array_equal(np.asarray(mm.matmul(x, w, None)), np.asarray(jnp.dot(x, w)))


def test_einsum_backward_rounds_the_cotangent_and_the_other_operand():
    rng = np.random.default_rng(1)
    a = jnp.asarray(rng.normal(size=(2, 4, 16)), jnp.float32)
    b = jnp.asarray(rng.normal(size=(2, 16, 8)), jnp.float32)
    c = jnp.asarray(rng.normal(size=(2, 4, 8)), jnp.float32)
    da, db = jax.grad(lambda a, b: jnp.sum(mm.einsum("dbk,dkg->dbg", a, b, BF16) * c), argnums=(0, 1))(a, b)
    np.testing.assert_allclose(np.asarray(da), np.einsum("dbg,dkg->dbk", _round(c), _round(b)), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(np.asarray(db), np.einsum("dbk,dbg->dkg", _round(a), _round(c)), rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="every index"):
        mm.einsum("ab,bc->a", a[0], b[0], BF16)


@pytest.mark.parametrize("hoist", [False, True])
def test_fused_lstm_backward_under_bf16_operands(hoist: bool):
    """The fused backward pass under bfloat16 operands agrees with autodiff of the same rounded
    forward pass, and both stay within bfloat16 rounding of the float32 gradients."""
    from elmo_jax.modules.lstm import lstmp_layer_scan

    rng = np.random.default_rng(2)
    T, B, I, H, P = 7, 4, 8, 16, 8
    f32 = lambda *shape, s=1.0: jnp.asarray(rng.normal(size=shape) * s, jnp.float32)  # noqa: E731
    args = [f32(2, I + P, 4 * H, s=2.0 / np.sqrt(I + P)), f32(2, 4 * H, s=0.5), f32(2, H, P, s=2.0 / np.sqrt(H)),
            f32(T, 2, B, I), f32(2, B, P), f32(2, B, H)]
    mask = jnp.asarray(np.arange(T)[:, None] < np.array([7, 3, 0, 5])[None, :])
    wy, wh, wc = f32(T, 2, B, P), f32(2, B, P), f32(2, B, H)

    def loss(fused, precision, *a):
        out, (h_t, c_t) = lstmp_layer_scan(*a[:4], mask, *a[4:], cell_clip=3.0, proj_clip=3.0, precision=precision,
                                           hoist_input=hoist, fused_backward=fused)
        return jnp.sum(out * wy) + jnp.sum(h_t * wh) + jnp.sum(c_t * wc)

    grads = {(fused, p): jax.grad(lambda *a: loss(fused, p, *a), argnums=tuple(range(6)))(*args)
             for fused in (True, False) for p in (BF16, "highest")}
    for g_fused, g_auto, g_f32 in zip(grads[True, BF16], grads[False, BF16], grads[True, "highest"]):
        assert g_fused.dtype == jnp.float32
        assert _rel(g_fused, g_auto) < 2e-3
        assert 1e-5 < _rel(g_fused, g_f32) < 3e-2


MODEL = ModelOptions(char_embed_dim=4, filters=((1, 8), (2, 8), (3, 16)), n_highway=1, n_characters=261,
                     lstm_dim=32, projection_dim=16, n_layers=2, use_skip_connections=True)
V, B, T = 300, 4, 5


def _batch(opts: ModelOptions, rng: np.random.Generator) -> dict:
    n_dir = opts.n_directions
    if opts.char_inputs:
        batch = {"unique_chars": jnp.asarray(rng.integers(0, 260, (16, 12)), jnp.int32),
                 "token_index": jnp.asarray(rng.integers(0, 16, (n_dir, B, T)), jnp.int32)}
    else:
        batch = {"token_ids": jnp.asarray(rng.integers(0, V, (n_dir, B, T)), jnp.int32)}
    for sfx in ("fwd", "bwd")[:n_dir]:
        batch[f"targets_{sfx}"] = jnp.asarray(rng.integers(0, V, (B, T)), jnp.int32)
        batch[f"weights_{sfx}"] = jnp.ones((B, T), jnp.float32)
    return batch


@pytest.mark.parametrize("changes", [
    {},  # full softmax, fused backward, scanned char-CNN (the CPU default)
    {"n_negative_samples": 50},
    {"char_cnn_scan_rows": 0},
    {"fused_backward": False},
    {"hoist_input": True},
    {"model": MODEL.replace(char_inputs=False, n_tokens_vocab=V)},
    {"model": MODEL.replace(bidirectional=False)},
], ids=["full", "sampled", "one-conv", "autodiff-lstm", "hoist", "word-input", "forward-only"])
def test_train_step_with_bf16_matmuls_tracks_float32(changes: dict):
    """Every model path compiles and runs with bfloat16 matmul operands, and a step's loss and
    gradient norm stay within bfloat16 rounding of the float32 step from the same state and batch."""
    model = changes.pop("model", MODEL)
    cfg = TrainConfig(model=model, batch_size=B, unroll_steps=T, clip_norm=0.0, heldout_files=None,
                      **changes).validate()
    cfg = cfg.replace(model=cfg.model.for_training())
    state = init_state(cfg, V, jax.random.key(0))
    batch = _batch(cfg.model, np.random.default_rng(3))
    negatives = None
    if cfg.n_negative_samples:
        ids = jnp.asarray(np.stack([np.arange(cfg.n_negative_samples)] * 2), jnp.int32)
        negatives = {"ids": ids, "num_tries": jnp.full((2,), cfg.n_negative_samples, jnp.int32)}
    results = {}
    for mp in ("float32", "bfloat16"):
        step = jax.jit(make_train_step(cfg.replace(matmul_precision=mp), V)).lower(state, batch, negatives).compile()
        assert mm.unfused_bf16_matmuls(step.as_text()) == []  # what training checks before its first step
        new_state, metrics = step(state, batch, negatives)
        results[mp] = metrics, new_state
    (m32, s32), (m16, s16) = results["float32"], results["bfloat16"]
    assert np.isfinite(float(m16["loss"]))
    assert abs(float(m16["loss"]) / float(m32["loss"]) - 1) < 1e-2
    assert abs(float(m16["grad_norm"]) / float(m32["grad_norm"]) - 1) < 5e-2
    moved = [float(jnp.abs(a - b).max()) for a, b in zip(jax.tree_util.tree_leaves(s16["params"]),
                                                         jax.tree_util.tree_leaves(s32["params"]))]
    assert max(moved) > 0  # the two precisions did differ


def test_bf16_matmuls_reach_the_model_and_evaluation_stays_float32():
    cfg = TrainConfig(model=MODEL, batch_size=B, unroll_steps=T, heldout_files=None,
                      matmul_precision="bfloat16").validate()
    cfg = cfg.replace(model=cfg.model.for_training())
    assert make_model(cfg, V).precision is BF16
    assert make_model(cfg.replace(matmul_precision="float32"), V).precision is None
    assert make_model(cfg.replace(precision="bfloat16"), V).precision is None  # operands are bfloat16 anyway
    state = init_state(cfg, V, jax.random.key(0))
    batch = _batch(cfg.model, np.random.default_rng(4))
    sums, counts, _ = jax.jit(make_eval_step(cfg, V))(state["params"], batch, state["lstm_state"])
    want, _, _ = direction_losses(make_model(cfg.replace(matmul_precision="float32"), V), state["params"], batch,
                                  state["lstm_state"], deterministic=True, rng=None, negatives=None, vocab_size=V)
    np.testing.assert_allclose(np.asarray(sums), np.asarray(want), rtol=1e-6)


def test_matmul_precision_is_validated():
    with pytest.raises(ConfigError, match="'matmul_precision' must be one of 'float32', 'bfloat16'"):
        TrainConfig(model=MODEL, matmul_precision="float16", heldout_files=None).validate()


@pytest.mark.parametrize("spec,shapes", [("tdbi,dig->tdbg", ((7, 2, 4, 8), (2, 8, 64))),
                                         ("dni,dig->dng", ((2, 28, 8), (2, 8, 64)))])
def test_unfused_bf16_matmuls_predicts_what_xla_cpu_can_run(spec, shapes):
    """The check training runs on a compiled program before its first step agrees with what
    happens: a program it flags fails at run time ("DotThunk"), one it passes runs. On this XLA
    the first einsum (the hoisted LSTM input in its natural form) is flagged, the second (the form
    `lstm._forward_scan` uses under bfloat16 operands) is not."""
    if jax.default_backend() != "cpu":
        pytest.skip("an XLA:CPU check")
    rng = np.random.default_rng(5)
    a, b = (jnp.asarray(rng.normal(size=s), jnp.bfloat16) for s in shapes)
    program = jax.jit(lambda a, b: jnp.einsum(spec, a, b, preferred_element_type=jnp.float32)).lower(a, b).compile()
    flagged = mm.unfused_bf16_matmuls(program.as_text())
    try:
        jax.block_until_ready(program(a, b))
        ran = True
    except Exception as e:  # noqa: BLE001 - XLA's runtime error type varies by version
        assert "DotThunk" in str(e) or "BF16" in str(e), e
        ran = False
    assert ran == (not flagged), (flagged, ran)


def test_training_runs_with_bf16_matmuls_and_stops_before_step_1_where_xla_cannot(tmp_path, monkeypatch):
    """`train` with bfloat16 matmuls: the compiled steps pass the check and train; where the check
    finds a matmul XLA:CPU cannot run, training stops with one config error before its first step."""
    train_glob, _ = write_corpus(tmp_path / "corpus")
    cfg = tiny_config(tmp_path, matmul_precision="bfloat16", heldout_files=train_glob, eval_batches=2,
                      max_steps=3, checkpoint_every=3)
    last = loop.train(cfg, str(tmp_path / "run"), progress=False)
    assert last["step"] == 3 and np.isfinite(last["loss"]) and last["val_perplexity"] > 1
    if jax.default_backend() != "cpu":
        return
    monkeypatch.setattr(loop, "unfused_bf16_matmuls", lambda text: ["dot.7"])
    with pytest.raises(ConfigError, match=r"^matmul_precision: this XLA:CPU .* cannot run 1 of the train step's "
                                          r"bfloat16 matmuls \(dot.7\); set matmul_precision to \"float32\"$"):
        loop.train(cfg, str(tmp_path / "run2"), progress=False)
    assert not (tmp_path / "run2" / "metrics.jsonl").exists()
