"""Elmo module (downstream use) and ScalarMix: gradients, frozen vs fine-tuned, mixes, token ids."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from elmo_jax import Elmo, ElmoEmbedder, ModelOptions, ScalarMix, batch_to_ids, init_elmo
from elmo_jax.modules.scalar_mix import masked_layer_norm
from elmo_jax.weights import arrays_to_params

from conftest import make_random_arrays

OPTIONS = ModelOptions(char_embed_dim=8, filters=((1, 8), (2, 8), (3, 16)), n_highway=1, lstm_dim=32,
                       projection_dim=16, n_layers=2, cell_clip=3.0, proj_clip=3.0, use_skip_connections=True)
SENTENCES = [["The", "cat", "sat", "."], ["Dogs", "bark"], []]


@pytest.fixture(scope="module")
def bilm_params():
    return arrays_to_params(make_random_arrays(OPTIONS, seed=1), OPTIONS)


def _loss_and_grads(elmo: Elmo, variables: dict, ids: np.ndarray):
    def loss(params):
        out = elmo.apply({**variables, "params": params}, ids)
        rep = out["elmo_representations"][0]
        return jnp.sum(rep * out["mask"][..., None] * jnp.linspace(-1, 1, rep.shape[-1]))

    return jax.grad(loss)(variables["params"])


def _max_abs(tree) -> float:
    return max(float(jnp.abs(x).max()) for x in jax.tree_util.tree_leaves(tree))


def test_frozen_bilm_gets_no_gradient_mix_does(bilm_params):
    ids, _ = batch_to_ids(SENTENCES)
    elmo = Elmo(OPTIONS, num_output_representations=2, dropout=0.0)
    variables = init_elmo(elmo, bilm_params, jax.random.key(0), ids)
    grads = _loss_and_grads(elmo, variables, ids)
    assert _max_abs(grads["bilm"]) == 0.0
    assert abs(float(grads["scalar_mix_0"]["gamma"])) > 0
    assert _max_abs(grads["scalar_mix_0"]["weights"]) > 0
    # the second mix does not feed the loss
    assert _max_abs(grads["scalar_mix_1"]) == 0.0


def test_fine_tuned_bilm_gets_gradient(bilm_params):
    ids, _ = batch_to_ids(SENTENCES)
    elmo = Elmo(OPTIONS, dropout=0.0, requires_grad=True)
    variables = init_elmo(elmo, bilm_params, jax.random.key(0), ids)
    grads = _loss_and_grads(elmo, variables, ids)
    for path in (("token_encoder", "char_cnn", "char_embed"), ("lstm", "layer_1", "kernel")):
        g = grads["bilm"]
        for key in path:
            g = g[key]
        assert float(jnp.abs(g).max()) > 0, path


def test_elmo_output_equals_scalar_mix_of_embedder_layers(bilm_params):
    """Elmo(weights, gamma) == gamma * sum softmax(w)_j * layer_j of the embedder's layers."""
    ids, _ = batch_to_ids(SENTENCES)
    fixed = (0.1, 0.3, 0.5)
    elmo = Elmo(OPTIONS, dropout=0.0, scalar_mix_parameters=fixed)
    variables = init_elmo(elmo, bilm_params, jax.random.key(0), ids)
    variables["params"]["scalar_mix_0"]["gamma"] = jnp.asarray(1.1)
    out = elmo.apply(variables, ids)
    rep, mask = np.asarray(out["elmo_representations"][0]), np.asarray(out["mask"])
    layers = ElmoEmbedder(OPTIONS, bilm_params).embed_sentences(SENTENCES)
    s = np.exp(fixed) / np.exp(fixed).sum()
    for b, v in enumerate(layers):
        n = v.shape[1]
        assert mask[b].tolist() == [True] * n + [False] * (mask.shape[1] - n)
        np.testing.assert_allclose(rep[b, :n], 1.1 * np.einsum("l,ltd->td", s, v), atol=1e-5, rtol=0)
        assert not rep[b, n:].any()
    # fixed weights get no gradient, gamma does
    grads = _loss_and_grads(elmo, variables, ids)
    assert _max_abs(grads["scalar_mix_0"]["weights"]) == 0.0
    assert abs(float(grads["scalar_mix_0"]["gamma"])) > 0


def test_dropout_and_l2(bilm_params):
    ids, _ = batch_to_ids(SENTENCES)
    elmo = Elmo(OPTIONS, dropout=0.5, l2_coef=0.001)
    variables = init_elmo(elmo, bilm_params, jax.random.key(0), ids)
    variables["params"]["scalar_mix_0"]["weights"] = jnp.asarray([0.5, -1.0, 2.0])
    out, state = elmo.apply(variables, ids, deterministic=False, rngs={"dropout": jax.random.key(1)},
                            mutable=["losses"])
    rep = np.asarray(out["elmo_representations"][0])
    ref = np.asarray(elmo.apply(variables, ids)["elmo_representations"][0])
    kept = rep != 0
    assert 0.3 < kept[ref != 0].mean() < 0.7
    np.testing.assert_allclose(rep[kept], 2 * ref[kept], rtol=1e-5)
    l2 = float(jax.tree_util.tree_leaves(state["losses"])[0])
    assert l2 == pytest.approx(0.001 * (0.25 + 1.0 + 4.0), rel=1e-6)


def test_token_ids_with_cache_equal_char_path(bilm_params):
    vocab = ["The", "cat", "sat", ".", "Dogs", "<S>", "</S>"]  # "bark" is out of vocabulary
    embedder = ElmoEmbedder(OPTIONS, bilm_params)
    table = embedder.token_embedding_table(vocab)
    ids, _ = batch_to_ids(SENTENCES)
    index = {w: i + 1 for i, w in enumerate(vocab)}
    token_ids = np.zeros(ids.shape[:2], np.int32)
    for b, s in enumerate(SENTENCES):
        for t, w in enumerate(["<S>", *s, "</S>"]):
            token_ids[b, t] = index.get(w, -1)
    elmo = Elmo(OPTIONS, dropout=0.0, vocab_size=len(vocab))
    variables = init_elmo(elmo, bilm_params, jax.random.key(0), ids, token_ids, token_table=table)
    both = elmo.apply(variables, ids, token_ids)["elmo_representations"][0]
    chars = Elmo(OPTIONS, dropout=0.0).apply({"params": variables["params"]}, ids)["elmo_representations"][0]
    np.testing.assert_allclose(both, chars, atol=1e-6, rtol=0)
    # ids only (all in vocabulary): same as characters for the in-vocabulary sentence
    only = elmo.apply(variables, None, np.where(token_ids < 0, 0, token_ids)[:1])["elmo_representations"][0]
    np.testing.assert_allclose(only[0], chars[0], atol=1e-6, rtol=0)


def test_distinct_word_chars_with_a_cut_char_axis_equal_char_path(bilm_params):
    """`word_chars` (each distinct word once, char axis cut as the task inputs do) + `token_ids`
    into its rows gives the character path's representations, and gradients reach the char-CNN."""
    from elmo_jax.tasks.inputs import TaskInputs

    ids, _ = batch_to_ids(SENTENCES)
    inputs = TaskInputs(OPTIONS, SENTENCES, use_chars=True)
    batch = inputs.batch([inputs.encode(s) for s in SENTENCES], rows=len(SENTENCES), length=ids.shape[1])
    assert batch["word_chars"].shape[1] < ids.shape[2], "the char axis should be cut"
    elmo = Elmo(OPTIONS, dropout=0.0, requires_grad=True)
    params = {"params": init_elmo(elmo, bilm_params, jax.random.key(0), ids)["params"]}
    chars = elmo.apply(params, ids)["elmo_representations"][0]
    distinct = elmo.apply(params, None, batch["token_ids"], word_chars=batch["word_chars"])
    np.testing.assert_allclose(distinct["elmo_representations"][0], chars, atol=1e-6, rtol=0)

    def total(p, **kw):
        return jnp.sum(elmo.apply({"params": p}, **kw)["elmo_representations"][0] ** 2)

    g_chars = jax.grad(total)(params["params"], char_ids=ids)
    g_words = jax.grad(total)(params["params"], token_ids=batch["token_ids"], word_chars=batch["word_chars"])
    w1 = np.asarray(g_chars["bilm"]["token_encoder"]["char_cnn"]["W_cnn_0"])
    w2 = np.asarray(g_words["bilm"]["token_encoder"]["char_cnn"]["W_cnn_0"])
    assert np.abs(w1).max() > 0
    np.testing.assert_allclose(w2, w1, rtol=1e-4, atol=1e-5)


def test_masked_layer_norm_is_batch_global():
    rng = np.random.default_rng(0)
    x = rng.normal(3.0, 2.0, (2, 5, 4)).astype(np.float32)
    mask = np.array([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]], bool)
    y = np.asarray(masked_layer_norm(jnp.asarray(x), jnp.asarray(mask), 1e-12))
    vals = x[mask]
    np.testing.assert_allclose(y[mask], (vals - vals.mean()) / np.sqrt(vals.var() + 1e-12), atol=1e-5)


def test_scalar_mix_layer_norm_and_errors():
    layers = jnp.asarray(np.random.default_rng(0).normal(size=(3, 2, 4, 6)), jnp.float32)
    mask = jnp.ones((2, 4), bool)
    mix = ScalarMix(3, do_layer_norm=True)
    v = mix.init(jax.random.key(0), layers, mask)
    out = mix.apply(v, layers, mask)
    want = sum(masked_layer_norm(layers[j], mask, 1e-13) for j in range(3)) / 3
    np.testing.assert_allclose(out, want, atol=1e-5)
    with pytest.raises(ValueError, match="expects 2 layers"):
        ScalarMix(2).init(jax.random.key(0), layers)
