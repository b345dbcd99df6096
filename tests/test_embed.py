"""ElmoEmbedder: the fixtures through the public API, determinism, the cached-token path, buckets."""
from __future__ import annotations

import json

import h5py
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from elmo_jax import ElmoEmbedder, InputError, ModelOptions, dump_token_embeddings
from elmo_jax.tokenize import Tokenizer
from elmo_jax.weights import arrays_to_params

from conftest import make_random_arrays

TOL = 1e-5  # max abs difference allowed against the references (format.md section 5)


def fixture_lines(fixture_dir):
    """The 30 fixture sentences in the order the references fed them: s0[0], s1[0], s2[0], s0[1], ..."""
    sentences = json.loads((fixture_dir / "lm_embeddings_sentences.json").read_text())
    return [sentences[k][i].strip().split() for i in range(10) for k in range(3)]


def expected_top(fixture_dir, k: int, i: int) -> np.ndarray:
    with h5py.File(fixture_dir / f"lm_embeddings_{k}.hdf5", "r") as f:
        e = f[str(i)][()]
    return np.concatenate([e[0], e[1]], axis=-1)  # (n, 2P): [forward top; backward top]


@pytest.mark.parametrize("cache_tokens", [True, False])
def test_fixture_embeddings_stateful(fixture_dir, cache_tokens):
    embedder = ElmoEmbedder.from_files(fixture_dir / "options.json", fixture_dir / "lm_weights.hdf5",
                                       stateful=True, batch_size=3, cache_tokens=cache_tokens)
    vectors = embedder.embed_sentences(fixture_lines(fixture_dir))
    worst = 0.0
    for j, v in enumerate(vectors):
        i, k = divmod(j, 3)
        want = expected_top(fixture_dir, k, i)
        assert v.shape == (3, want.shape[0], 32) and v.dtype == np.float32
        worst = max(worst, float(np.abs(v[2] - want).max()))
        assert np.allclose(v[2], want, atol=1e-6), f"sentence {k},{i}: upstream allclose(atol=1e-6) fails"
    assert worst <= TOL, f"max abs difference to lm_embeddings_*.hdf5 is {worst:.3g} > {TOL}"


def test_stateful_rows_carry_and_reset(fixture_dir):
    """Embedding the fixture batch by batch gives the same as one call; reset_states restarts."""
    lines = fixture_lines(fixture_dir)
    embedder = ElmoEmbedder.from_files(fixture_dir / "options.json", fixture_dir / "lm_weights.hdf5",
                                       stateful=True, batch_size=3)
    first = [embedder.embed_sentences(lines[b:b + 3]) for b in range(0, 6, 3)]
    embedder.reset_states()
    again = embedder.embed_sentences(lines[:6])
    for a, b in zip([v for batch in first for v in batch], again):
        np.testing.assert_array_equal(a, b)
    # Without carried state batch 1 differs from the reference (the fixture needs the state).
    stateless = ElmoEmbedder.from_files(fixture_dir / "options.json", fixture_dir / "lm_weights.hdf5")
    v = stateless.embed_sentences(lines[3:6])[0]
    assert np.abs(v[2] - expected_top(fixture_dir, 0, 1)).max() > 1e-3


def test_stateful_short_batch_keeps_other_rows(fixture_dir):
    """A batch of 2 rows leaves row 2's stored state unchanged (bilm-tf test_bilm state part)."""
    lines = fixture_lines(fixture_dir)
    embedder = ElmoEmbedder.from_files(fixture_dir / "options.json", fixture_dir / "lm_weights.hdf5",
                                       stateful=True, batch_size=3)
    embedder.embed_sentences(lines[:3])
    h_row2 = embedder._state_h[:, :, 2].copy()
    embedder.embed_batch(lines[3:5])
    np.testing.assert_array_equal(embedder._state_h[:, :, 2], h_row2)
    assert np.abs(embedder._state_h[:, :, 0] - h_row2).max() > 0


def _random_embedder(**kwargs) -> ElmoEmbedder:
    options = ModelOptions(char_embed_dim=8, filters=((1, 8), (2, 8), (4, 16)), n_highway=1, lstm_dim=32,
                           projection_dim=16, n_layers=2, cell_clip=1.0, proj_clip=1.0,
                           use_skip_connections=True)
    params = arrays_to_params(make_random_arrays(options, seed=3, scale=1.5), options)
    return ElmoEmbedder(options, params, **kwargs)


SENTENCES = [["The", "cat", "sat", "."], [], ["naïve", "café", "über", "•", "x" * 70],
             ["a"] * 33, ["<S>", "literal", "</S>"], ["one"], "Longer sentences come in every batch .".split()]


def test_deterministic_independent_of_batch_row_and_padding():
    embedder = _random_embedder(batch_size=4)
    together = embedder.embed_sentences(SENTENCES)
    for sentence, vectors in zip(SENTENCES, together):
        alone = embedder.embed_sentence(sentence)
        assert vectors.shape == (3, len(sentence), 32)
        np.testing.assert_allclose(vectors, alone, atol=1e-6, rtol=0)
    # Reversed order, other batch size: same vectors.
    other = embedder.embed_sentences(SENTENCES[::-1], batch_size=2)[::-1]
    for a, b in zip(together, other):
        np.testing.assert_allclose(a, b, atol=1e-6, rtol=0)


def test_cached_tokens_equal_character_path():
    cached = _random_embedder(cache_tokens=True).embed_sentences(SENTENCES)
    chars = _random_embedder(cache_tokens=False).embed_sentences(SENTENCES)
    for a, b in zip(cached, chars):
        np.testing.assert_allclose(a, b, atol=1e-6, rtol=0)


@pytest.mark.parametrize("stateful", [False, True])
def test_scan_unroll_keeps_the_vectors(stateful):
    """Unrolled LSTM scans (5 steps per iteration: remainders at every time bucket, 8 and 40) give
    the one-step vectors, deterministic and stateful (the carried state too)."""
    one = _random_embedder(batch_size=4, stateful=stateful)
    five = _random_embedder(batch_size=4, stateful=stateful, scan_unroll=5)
    for a, b in zip(one.embed_sentences(SENTENCES), five.embed_sentences(SENTENCES)):
        np.testing.assert_allclose(a, b, atol=1e-6, rtol=0)
    ids = jnp.ones((2, 7, five.options.max_characters_per_token), jnp.int32)
    jaxpr = str(jax.make_jaxpr(lambda p: five.model.apply({"params": p}, ids))(five.params))
    assert jaxpr.count("unroll=5") == five.options.n_layers  # the option reaches every layer's scan
    with pytest.raises(ValueError, match="scan_unroll"):
        _random_embedder(scan_unroll=0)


def test_token_cache_is_bounded():
    embedder = _random_embedder(token_cache_size=10)
    reference = _random_embedder(cache_tokens=False).embed_sentences(SENTENCES)
    for _ in range(2):
        out = embedder.embed_sentences(SENTENCES)
        assert len(embedder._token_index) <= max(10, max(len(s) + 2 for s in SENTENCES))
        for a, b in zip(out, reference):
            np.testing.assert_allclose(a, b, atol=1e-6, rtol=0)


def test_embed_batch_matches_embed_sentences():
    embedder = _random_embedder()
    layers, mask = embedder.embed_batch(SENTENCES[:3])
    assert layers.shape == (3, 3, 5, 32) and mask.tolist()[1] == [False] * 5
    for b, v in enumerate(embedder.embed_sentences(SENTENCES[:3])):
        np.testing.assert_allclose(layers[:, b, : v.shape[1]], v, atol=1e-6, rtol=0)
        assert not layers[:, b, v.shape[1]:].any()


def test_compiles_are_bounded():
    """However many distinct lengths and batch sizes come, jit compiles a bounded set of shapes."""
    embedder = _random_embedder(batch_size=8)
    rng = np.random.default_rng(0)
    sentences = [["w%d" % rng.integers(50)] * int(n) for n in rng.integers(0, 60, size=300)]
    embedder.embed_sentences(sentences)
    embedder.embed_sentences(sentences[:5])
    n_lstm = embedder._run_lstm._cache_size()
    n_enc = embedder._encode._cache_size()
    assert n_lstm <= 4 * 8, f"{n_lstm} LSTM programs compiled"  # row buckets x time buckets
    assert n_enc <= 3 * 4, f"{n_enc} encoder programs compiled"


def test_bfloat16_option_is_close():
    a = _random_embedder().embed_sentences([SENTENCES[0], SENTENCES[2]])
    import jax.numpy as jnp

    b = _random_embedder(dtype=jnp.bfloat16).embed_sentences([SENTENCES[0], SENTENCES[2]])
    for x, y in zip(a, b):
        assert y.dtype == np.float32
        assert np.abs(x - y).max() < 0.1


def test_dump_token_embeddings_matches_layer0(fixture_dir, tmp_path):
    out = tmp_path / "tokens.hdf5"
    n = dump_token_embeddings(fixture_dir / "options.json", fixture_dir / "lm_weights.hdf5",
                              fixture_dir / "vocab_test.txt", out)
    vocab = [w.strip() for w in (fixture_dir / "vocab_test.txt").read_text().splitlines() if w.strip()]
    with h5py.File(out, "r") as f:
        table = f["embedding"][()]
    assert n == len(vocab) and table.shape == (len(vocab), 16) and table.dtype == np.float32
    embedder = ElmoEmbedder.from_files(fixture_dir / "options.json", fixture_dir / "lm_weights.hdf5",
                                       cache_tokens=False)
    layer0 = embedder.embed_sentence(vocab[:40])[0, :, :16]
    np.testing.assert_allclose(table[:40], layer0, atol=1e-6, rtol=0)


def test_preloaded_token_file_equals_character_path(fixture_dir, tmp_path):
    """bilm-tf cached-token mode: vectors from a dumped token file reproduce the fixtures too."""
    from elmo_jax.embed import read_token_embeddings

    lines = fixture_lines(fixture_dir)
    vocab = tmp_path / "vocab.txt"
    words = ["<S>", "</S>"] + sorted({w for s in lines[:15] for w in s})  # later lines have OOV words
    vocab.write_text("\n".join(words) + "\n", encoding="utf-8")
    out = tmp_path / "tokens.hdf5"
    dump_token_embeddings(fixture_dir / "options.json", fixture_dir / "lm_weights.hdf5", vocab, out)
    embedder = ElmoEmbedder.from_files(fixture_dir / "options.json", fixture_dir / "lm_weights.hdf5",
                                       stateful=True, batch_size=3)
    got_words, table = read_token_embeddings(out, vocab, expected_dim=16)
    assert got_words == words
    embedder.preload_token_embeddings(got_words, table)
    vectors = embedder.embed_sentences(lines)
    worst = max(float(np.abs(v[2] - expected_top(fixture_dir, j % 3, j // 3)).max()) for j, v in enumerate(vectors))
    assert worst <= TOL, f"max abs difference {worst:.3g} > {TOL}"
    with pytest.raises(Exception, match="expected"):
        read_token_embeddings(out, fixture_dir / "vocab_test.txt")



def test_notes_belong_to_each_embedder() -> None:
    """Conversion notes are per instance (no mutable class attribute shared by every embedder)."""
    a = _random_embedder()
    a.notes.append("x")
    assert _random_embedder().notes == [] and "notes" not in vars(ElmoEmbedder)


# --------------------------------------------------------------------------- raw text
RAW_TEXTS = ["The cat didn't sit on the mat.", "", "Dr. Smith left at 5 p.m. He came back!", "東京 😀 Привет"]


def test_embed_texts_equals_embed_sentences_on_the_tokens():
    embedder = _random_embedder(batch_size=2)
    out = embedder.embed_texts(RAW_TEXTS)  # the default tokenizer (moses), one sentence per text
    assert [s.text_index for s in out] == [0, 1, 2, 3] and [s.text for s in out] == RAW_TEXTS
    assert [s.tokens for s in out] == [Tokenizer().tokenize(t) for t in RAW_TEXTS]
    assert out[0].tokens == ["The", "cat", "didn", "'t", "sit", "on", "the", "mat", "."] and out[1].tokens == []
    for s, ref in zip(out, embedder.embed_sentences([s.tokens for s in out])):
        assert s.vectors.shape == (3, len(s.tokens), 32)
        np.testing.assert_allclose(s.vectors, ref, atol=1e-6, rtol=0)

    split = embedder.embed_texts(RAW_TEXTS, Tokenizer(split_sentences=True))
    assert [(s.text_index, s.text) for s in split] == [(0, RAW_TEXTS[0]), (2, "Dr. Smith left at 5 p.m."),
                                                       (2, "He came back!"), (3, RAW_TEXTS[3])]
    for s, ref in zip(split, embedder.embed_sentences([s.tokens for s in split])):
        np.testing.assert_allclose(s.vectors, ref, atol=1e-6, rtol=0)
    bert = embedder.embed_texts(RAW_TEXTS[:1], "bert")
    assert bert[0].tokens == ["The", "cat", "didn", "'", "t", "sit", "on", "the", "mat", "."]


def test_embed_texts_rejects_token_lists_and_a_bare_string():
    embedder = _random_embedder()
    with pytest.raises(InputError, match="list of texts"):
        embedder.embed_texts("one text")
    with pytest.raises(InputError, match="text 1 is a list"):
        embedder.embed_texts(["fine", ["already", "tokenized"]])
