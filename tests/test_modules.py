"""The Flax `BiLM` against the independent NumPy oracle (`numpy_reference`) and the bilm-tf fixtures."""
from __future__ import annotations

import dataclasses
import functools
import json
import zlib
from pathlib import Path
from typing import Any, Callable, Optional

import h5py
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import numpy_reference as ref
from elmo_jax.chars import batch_to_ids
from elmo_jax.modules import BiLM, reverse_within_lengths
from elmo_jax.options import ModelOptions
from elmo_jax.weights import arrays_to_params, read_hdf5_arrays

TOL = 1e-5  # format.md section 5: max |diff| <= 1e-5 in float32

# --------------------------------------------------------------------------- helpers


@functools.lru_cache(maxsize=None)
def bilm_fn(options: ModelOptions) -> Callable[..., dict[str, Any]]:
    """Jitted `BiLM(options).apply({'params': p}, ids, state)`."""
    model = BiLM(options)
    return jax.jit(lambda params, ids, state: model.apply({"params": params}, ids, state))


def run_bilm(arrays: dict[str, np.ndarray], options: ModelOptions, ids: np.ndarray,
             state: Optional[dict] = None) -> dict[str, Any]:
    """Run the Flax BiLM from bilm-tf-named arrays; outputs as NumPy."""
    params = arrays_to_params(arrays, options)
    out = bilm_fn(options)(params, jnp.asarray(ids, jnp.int32), state)
    return jax.tree_util.tree_map(np.asarray, out)


def max_diff(a: np.ndarray, b: np.ndarray) -> float:
    assert a.shape == b.shape, f"shape {a.shape} != {b.shape}"
    return float(np.max(np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64)))) if a.size else 0.0


def assert_close(actual: np.ndarray, expected: np.ndarray, what: str, tol: float = TOL) -> None:
    d = max_diff(actual, expected)
    assert d <= tol, f"{what}: max |diff| = {d:.3g} exceeds {tol:g}"


WORDS = ["The", "cat", "sat", ".", "naïve", "•", "日本語", "Ünïcödé", "x" * 60, "é" * 30,
         "a", "ELMo", "bi-LM", ",", "2009", "<S>", "</S>", "😀emoji", "ok"]


def random_sentences(seed: int, lengths: list[int]) -> list[list[str]]:
    rng = np.random.default_rng(seed)
    return [[WORDS[i] for i in rng.integers(0, len(WORDS), n)] for n in lengths]


# --------------------------------------------------------------------------- option shapes

BASE = ModelOptions(char_embed_dim=4, filters=((1, 4), (2, 6), (3, 10)), n_highway=1,
                    max_characters_per_token=50, activation="relu", lstm_dim=16, projection_dim=8,
                    n_layers=2, cell_clip=3.0, proj_clip=3.0, use_skip_connections=True)


@dataclasses.dataclass(frozen=True)
class Case:
    name: str
    options: ModelOptions
    scale: float
    cell_binds: bool = False  # the reference's pre-clip cell exceeds cell_clip somewhere
    proj_binds: bool = False  # the reference's pre-clip projection exceeds proj_clip somewhere


CASES = [
    Case("skip_relu_2layers", BASE.replace(cell_clip=2.0, proj_clip=1.0), scale=1.5,
         cell_binds=True, proj_binds=True),
    Case("tanh_highway2_3layers_skip",
         BASE.replace(activation="tanh", n_highway=2, n_layers=3, cell_clip=1.5, proj_clip=0.75),
         scale=1.5, cell_binds=True, proj_binds=True),
    Case("no_highway_F_eq_P_1layer",
         BASE.replace(n_highway=0, filters=((1, 4), (2, 8)), projection_dim=12, lstm_dim=20,
                      n_layers=1, cell_clip=2.0, proj_clip=1.0), scale=1.5, cell_binds=True, proj_binds=True),
    Case("P_eq_H_no_lstm_projection",  # proj_clip 0.1 must be ignored (no projection)
         BASE.replace(lstm_dim=8, projection_dim=8, proj_clip=0.1, cell_clip=1.5), scale=1.5, cell_binds=True),
    Case("no_clips", BASE.replace(cell_clip=None, proj_clip=None), scale=1.5),
    Case("no_skip_short_tokens",
         BASE.replace(use_skip_connections=False, max_characters_per_token=12, cell_clip=1.5, proj_clip=1.0),
         scale=1.5, cell_binds=True, proj_binds=True),
]

CLIP_EFFECT = 1e-3  # a clip "binds" if removing it moves the oracle's outputs by more than this


def clip_effect(arrays: dict[str, np.ndarray], options: ModelOptions, ids: np.ndarray,
                want: ref.BiLMResult, **changes: Any) -> float:
    """How far the oracle's layers move when the options change by `changes` (e.g. no cell clip)."""
    return max_diff(ref.bilm(arrays, options.replace(**changes), ids).layers, want.layers)


def case_batch(case: Case, seed: int) -> tuple[list[list[str]], np.ndarray]:
    """Variable lengths incl. an empty sentence (length 2); reference char ids."""
    sentences = random_sentences(seed, [5, 0, 2, 9])
    ids, _ = ref.batch_char_ids(sentences, case.options.max_characters_per_token)
    return sentences, ids


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_bilm_matches_reference(case: Case, random_arrays: Callable[..., dict]) -> None:
    """All L+1 layers and the final state equal the oracle; the clips demonstrably bind."""
    opts = case.options.validate()
    arrays = random_arrays(opts, seed=zlib.crc32(case.name.encode()) % 1000, scale=case.scale)
    _, ids = case_batch(case, seed=1)
    want = ref.bilm(arrays, opts, ids)
    got = run_bilm(arrays, opts, ids)

    assert got["layers"].shape == (opts.n_layers + 1, *ids.shape[:2], 2 * opts.projection_dim)
    np.testing.assert_array_equal(got["mask"], (ids > 0).any(-1))
    for layer in range(opts.n_layers + 1):
        assert_close(got["layers"][layer], want.layers[layer], f"{case.name} layer {layer}")
    for key in ("h", "c"):
        assert_close(got["final_state"][key], want.final_state[key], f"{case.name} final state {key}")

    # The test must be able to fail on the clips: they bind somewhere in this batch and matter.
    if case.cell_binds:
        assert want.stats.max_abs_cell > opts.cell_clip, (
            f"cell clip {opts.cell_clip} never binds (max |c| {want.stats.max_abs_cell:.3g})")
        assert clip_effect(arrays, opts, ids, want, cell_clip=None) > CLIP_EFFECT
    if case.proj_binds:
        assert want.stats.max_abs_proj > opts.proj_clip, (
            f"proj clip {opts.proj_clip} never binds (max |h| {want.stats.max_abs_proj:.3g})")
        assert clip_effect(arrays, opts, ids, want, proj_clip=None) > CLIP_EFFECT
    if opts.cell_clip is None:  # an implementation clipping at bilm-tf's usual 3 would fail here
        assert want.stats.max_abs_cell > 3.0
        assert clip_effect(arrays, opts, ids, want, cell_clip=3.0, proj_clip=3.0) > CLIP_EFFECT
    if not opts.has_lstm_projection and opts.proj_clip is not None:  # proj_clip must be ignored
        assert np.abs(want.layers[1:]).max() > opts.proj_clip
    if opts.use_skip_connections and opts.proj_clip is not None and opts.n_layers >= 2:
        # skip outputs of layer >= 1 may exceed proj_clip (format.md section 3.7)
        assert np.abs(want.layers[2:]).max() > opts.proj_clip
    if opts.use_skip_connections and opts.n_layers >= 2:  # the residual matters
        assert clip_effect(arrays, opts, ids, want, use_skip_connections=False) > CLIP_EFFECT


@pytest.mark.parametrize("case", [CASES[0], CASES[1]], ids=[CASES[0].name, CASES[1].name])
def test_bilm_stateful_matches_reference(case: Case, random_arrays: Callable[..., dict]) -> None:
    """Two consecutive calls carrying `final_state` (from a random non-zero start) equal the oracle;
    a row of length 0 keeps its state exactly."""
    opts = case.options
    arrays = random_arrays(opts, seed=7, scale=case.scale)
    rng = np.random.default_rng(3)
    b = 4
    state0 = {"h": rng.uniform(-1, 1, (opts.n_layers, 2, b, opts.projection_dim)).astype(np.float32),
              "c": rng.uniform(-2, 2, (opts.n_layers, 2, b, opts.lstm_dim)).astype(np.float32)}

    ids1, _ = ref.batch_char_ids(random_sentences(11, [3, 6, 0, 1]), pad_to=9)
    ids2, _ = ref.batch_char_ids(random_sentences(12, [4, 1, 7, 2]), pad_to=9)
    ids2[1] = 0  # row 1 is a padding row (length 0) in the second call

    want1 = ref.bilm(arrays, opts, ids1, state0)
    want2 = ref.bilm(arrays, opts, ids2, want1.final_state)
    got1 = run_bilm(arrays, opts, ids1, state0)
    got2 = run_bilm(arrays, opts, ids2, got1["final_state"])

    for name, got, want in (("call 1", got1, want1), ("call 2", got2, want2)):
        for layer in range(opts.n_layers + 1):
            assert_close(got["layers"][layer], want.layers[layer], f"{name} layer {layer}")
        for key in ("h", "c"):
            assert_close(got["final_state"][key], want.final_state[key], f"{name} final state {key}")
    for key in ("h", "c"):
        np.testing.assert_array_equal(got2["final_state"][key][:, :, 1], got1["final_state"][key][:, :, 1],
                                      err_msg=f"length-0 row changed its {key} state")
    # the carried state really matters: a zero start gives other results
    zero_start = ref.bilm(arrays, opts, ids2)
    assert max_diff(zero_start.layers[1:], want2.layers[1:]) > 1e-2


def test_padding_and_batch_composition_do_not_leak(random_arrays: Callable[..., dict]) -> None:
    """A row's outputs do not depend on the other rows or on extra padding positions."""
    opts = CASES[0].options
    arrays = random_arrays(opts, seed=5, scale=1.5)
    sentences = random_sentences(21, [4, 1, 6])
    ids, lengths = ref.batch_char_ids(sentences, pad_to=8)
    full = run_bilm(arrays, opts, ids)
    for b, s in enumerate(sentences):
        single, _ = ref.batch_char_ids([s], pad_to=8)
        one = run_bilm(arrays, opts, single)
        n = lengths[b]
        assert_close(one["layers"][:, 0, :n], full["layers"][:, b, :n], f"row {b} alone vs in batch")
        assert not np.any(full["layers"][1:, b, n:]), "LSTM layer outputs must be zero at padding"


# --------------------------------------------------------------------------- reverse_within_lengths


@pytest.mark.parametrize("shape,lengths", [((4, 7, 3), [0, 1, 5, 7]), ((3, 5), [5, 2, 0]), ((1, 1, 2), [1])])
def test_reverse_within_lengths(shape: tuple[int, ...], lengths: list[int]) -> None:
    """Reverses each row's first len_b positions, leaves padding in place, is an involution."""
    x = np.random.default_rng(0).normal(size=shape).astype(np.float32)
    lens = np.array(lengths, np.int32)
    y = np.asarray(reverse_within_lengths(jnp.asarray(x), jnp.asarray(lens)))
    expected = x.copy()
    for b, n in enumerate(lengths):
        expected[b, :n] = x[b, :n][::-1]
    np.testing.assert_array_equal(y, expected)
    z = np.asarray(reverse_within_lengths(jnp.asarray(y), jnp.asarray(lens)))
    np.testing.assert_array_equal(z, x)


# --------------------------------------------------------------------------- bilm-tf fixtures


def load_fixture(fixture_dir: Path) -> tuple[ModelOptions, dict[str, np.ndarray], list[list[str]], list]:
    options = ModelOptions.from_json(fixture_dir / "options.json")
    arrays = read_hdf5_arrays(fixture_dir / "lm_weights.hdf5")
    sentences = json.loads((fixture_dir / "lm_embeddings_sentences.json").read_text())
    expected = []
    for k in range(3):
        with h5py.File(fixture_dir / f"lm_embeddings_{k}.hdf5", "r") as f:
            expected.append([f[str(i)][()] for i in range(10)])
    return options, arrays, sentences, expected


def fixture_batches(sentences: list[list[str]]) -> list[list[list[str]]]:
    """Batch i = [sentences[0][i], sentences[1][i], sentences[2][i]] (format.md section 4.1)."""
    return [[sentences[k][i].strip().split() for k in range(3)] for i in range(10)]


def expected_top(expected: list, k: int, i: int) -> np.ndarray:
    e = expected[k][i]
    return np.concatenate([e[0], e[1]], axis=-1)  # [n, 2P]


@pytest.mark.parametrize("extra_padding_row", [False, True], ids=["3rows", "3rows+padding_row"])
def test_bilm_reproduces_fixture(fixture_dir: Path, extra_padding_row: bool) -> None:
    """10 stateful batches of 3 reproduce lm_embeddings_{k}.hdf5 (top layer, markers removed).

    With a 4th all-padding row (bilm-tf's test uses 4 state rows), that row's state stays 0."""
    options, arrays, sentences, expected = load_fixture(fixture_dir)
    batches = fixture_batches(sentences)
    width = max(len(s) for batch in batches for s in batch) + 2  # one shape -> one compile
    params = arrays_to_params(arrays, options)
    fn = bilm_fn(options)
    state = None
    worst = 0.0
    for i, batch in enumerate(batches):
        ids, mask = batch_to_ids(batch, pad_to=width)
        if extra_padding_row:
            ids = np.concatenate([ids, np.zeros_like(ids[:1])])
        out = jax.tree_util.tree_map(np.asarray, fn(params, jnp.asarray(ids), state))
        state = out["final_state"]
        assert out["layers"].shape == (3, len(ids), width, 32)
        for k, tokens in enumerate(batch):
            n = len(tokens)
            got = out["layers"][options.n_layers, k, 1:n + 1]  # drop <S> and </S>
            want = expected_top(expected, k, i)
            worst = max(worst, max_diff(got, want))
            assert np.allclose(got, want, atol=1e-6), f"batch {i} row {k}: upstream allclose(atol=1e-6) fails"
        if extra_padding_row:
            for key in ("h", "c"):
                assert np.abs(state[key][:, :, 3]).sum() < 1e-7, f"padding row's {key} state left zero"
    assert worst <= TOL, f"max |diff| = {worst:.3g} exceeds {TOL:g}"


def test_numpy_reference_reproduces_fixture(fixture_dir: Path) -> None:
    """Validates the oracle itself: it reproduces the fixture with carried state, and misses it
    from batch 1 on without state (so the fixture does test statefulness)."""
    options, arrays, sentences, expected = load_fixture(fixture_dir)
    state = None
    worst = 0.0
    for i, batch in enumerate(fixture_batches(sentences)):
        ids, lengths = ref.batch_char_ids(batch)
        result = ref.bilm(arrays, options, ids, state)
        state = result.final_state
        for k, tokens in enumerate(batch):
            n = len(tokens)
            worst = max(worst, max_diff(result.layers[options.n_layers, k, 1:n + 1], expected_top(expected, k, i)))
        if i == 1:
            stateless = ref.bilm(arrays, options, ids)
            n = len(batch[0])
            assert max_diff(stateless.layers[options.n_layers, 0, 1:n + 1], expected_top(expected, 0, i)) > 1e-2
    assert worst <= 1e-6, f"oracle misses the fixture: max |diff| = {worst:.3g}"


@pytest.mark.parametrize("proj,clips,hoist", [(True, (3.0, 3.0), False), (True, (3.0, 3.0), True),
                                              (False, (3.0, None), False), (True, (None, None), False)])
def test_fused_lstm_backward_equals_autodiff(proj: bool, clips: tuple, hoist: bool) -> None:
    """The hand-written LSTMP backward pass (`fused_backward`) gives autodiff's gradients for every
    input (kernel, bias, projection, layer input, initial state), with masked rows, binding cell
    and projection clips, and cotangents on the outputs and on the final state."""
    from elmo_jax.modules.lstm import lstmp_layer_scan

    rng = np.random.default_rng(1)
    T, B, I, H = 9, 5, 6, 8
    P = 4 if proj else H
    f32 = lambda *shape, s=1.0: jnp.asarray(rng.normal(size=shape) * s, jnp.float32)  # noqa: E731
    args = [f32(2, I + P, 4 * H, s=3.0 / np.sqrt(I + P)), f32(2, 4 * H, s=0.5),
            f32(2, H, P, s=3.0 / np.sqrt(H)) if proj else None, f32(T, 2, B, I, s=2.0), f32(2, B, P), f32(2, B, H, s=2.0)]
    mask = jnp.asarray(np.arange(T)[:, None] < np.array([0, 3, 9, 5, 7])[None, :])
    wy, wh, wc = f32(T, 2, B, P), f32(2, B, P), f32(2, B, H)

    def loss(fused, kernel, bias, projection, xs, h0, c0):
        out, (h_t, c_t) = lstmp_layer_scan(kernel, bias, projection, xs, mask, h0, c0, cell_clip=clips[0],
                                           proj_clip=clips[1], precision="highest", hoist_input=hoist,
                                           fused_backward=fused)
        return jnp.sum(out * wy) + jnp.sum(h_t * wh) + jnp.sum(c_t * wc)

    argnums = tuple(i for i, a in enumerate(args) if a is not None)
    fused = jax.grad(lambda *a: loss(True, *a), argnums=argnums)(*args)
    plain = jax.grad(lambda *a: loss(False, *a), argnums=argnums)(*args)
    assert float(loss(True, *args)) == float(loss(False, *args))
    for g, want in zip(fused, plain):
        assert float(jnp.abs(want).max()) > 0
        np.testing.assert_allclose(np.asarray(g), np.asarray(want), rtol=1e-5, atol=1e-5 * float(jnp.abs(want).max()))


@pytest.mark.parametrize("scan_rows", [0, 3])
def test_char_cnn_max_pool_gradient_equals_autodiff_with_ties(scan_rows: int) -> None:
    """The char-CNN's max over positions sends its gradient to one maximal position
    (`char_cnn._max_over_positions`; the scanned blocks' custom backward pass, `scan_rows` 3: three
    blocks of 3 rows, the last one padded) where autodiff of `jnp.max` over one convolution splits
    it over ties. The char embedding's and the kernels' gradients are the same: ties come from
    identical windows (trailing padding, repeated letters), which these words have plenty of."""
    from elmo_jax.chars import token_to_char_ids
    from elmo_jax.modules import char_cnn
    from elmo_jax.modules.char_cnn import CharCNN

    opts = dataclasses.replace(ModelOptions(), char_embed_dim=4, filters=((1, 3), (2, 5), (4, 6)),
                               max_characters_per_token=16)
    words = ["a", "aaaa", "little", "bookkeeper", "Mississippi", "zz", "!", "ll"]
    ids = jnp.asarray(np.stack([token_to_char_ids(w, 16, shift=False) for w in words]), jnp.int32)
    model = CharCNN(opts, precision="highest", scan_rows=scan_rows)
    one_conv = CharCNN(opts, precision="highest", scan_rows=0)
    params = model.init(jax.random.key(0), ids, shifted=False)["params"]
    weights = jnp.asarray(np.random.default_rng(0).normal(size=(len(words), opts.n_filters)), jnp.float32)

    def loss(p, m=model):
        return jnp.sum(m.apply({"params": p}, ids, shifted=False) * weights)

    ours = jax.grad(loss)(params)
    original = char_cnn.max_over_positions
    char_cnn.max_over_positions = lambda z: jnp.max(z, axis=1)
    try:
        plain = jax.grad(functools.partial(loss, m=one_conv))(params)
        plain_out = one_conv.apply({"params": params}, ids, shifted=False)
    finally:
        char_cnn.max_over_positions = original
    np.testing.assert_allclose(np.asarray(model.apply({"params": params}, ids, shifted=False)),
                               np.asarray(plain_out), rtol=1e-6, atol=1e-6)
    z = np.asarray(jax.lax.conv_general_dilated(
        jnp.take(params["char_embed"], ids, axis=0), params["W_cnn_0"], (1,), "VALID",
        dimension_numbers=("NWC", "WIO", "NWC")))
    assert (np.sum(z == z.max(axis=1, keepdims=True), axis=1) > 1).any(), "the words must give tied maxima"
    for path, want in jax.tree_util.tree_leaves_with_path(plain):
        got = dict(jax.tree_util.tree_leaves_with_path(ours))[path]
        assert float(jnp.abs(want).max()) > 0, path
        np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=1e-5, atol=1e-6, err_msg=str(path))
