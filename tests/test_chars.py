"""Character ids and sentence batching (format.md section 2)."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import numpy_reference as ref
from elmo_jax.chars import CharIdCache, batch_to_ids, token_to_char_ids
from elmo_jax.errors import ElmoError, InputError


def padded(prefix: list[int], fill: int = 261, width: int = 50) -> np.ndarray:
    """A shifted id row: `prefix` then `fill` (shifted padding char) up to `width`."""
    return np.array(prefix + [fill] * (width - len(prefix)))


# --------------------------------------------------------------------------- spec examples


@pytest.mark.parametrize("token,prefix", [
    ("The", [259, 85, 105, 102, 260]),
    ("\u2022", [259, 227, 129, 163, 260]),  # '•', three UTF-8 bytes
    ("<S>", [259, 257, 260]),
    ("</S>", [259, 258, 260]),
])
def test_spec_examples(token: str, prefix: list[int]) -> None:
    """The shifted examples printed in format.md section 2."""
    ids = token_to_char_ids(token)
    assert ids.shape == (50,)
    np.testing.assert_array_equal(ids, padded(prefix))


def test_unshifted_ids() -> None:
    """`shift=False` gives raw training ids (258 BOW, bytes, 259 EOW, 260 PAD; markers 256/257)."""
    np.testing.assert_array_equal(token_to_char_ids("The", shift=False), padded([258, 84, 104, 101, 259], 260))
    np.testing.assert_array_equal(token_to_char_ids("<S>", shift=False), padded([258, 256, 259], 260))
    np.testing.assert_array_equal(token_to_char_ids("</S>", shift=False), padded([258, 257, 259], 260))
    for tok in ["a", "é", "x" * 70, ""]:
        np.testing.assert_array_equal(token_to_char_ids(tok, shift=False) + 1, token_to_char_ids(tok))


def test_bilm_tf_batcher_example() -> None:
    """bilm-tf TestBatcher: [["The", "first", "sentence"], ["Second", "."]]."""
    sentences = [["The", "first", "sentence"], ["Second", "."]]
    ids, mask = batch_to_ids(sentences)
    assert ids.shape == (2, 5, 50)
    assert ids.dtype.kind == "i"
    np.testing.assert_array_equal(mask, [[True] * 5, [True, True, True, True, False]])
    bos, eos = padded([259, 257, 260]), padded([259, 258, 260])
    for b, sent in enumerate(sentences):
        np.testing.assert_array_equal(ids[b, 0], bos)
        for t, tok in enumerate(sent, start=1):
            expected = padded([259, *[byte + 1 for byte in tok.encode("utf-8")], 260])
            np.testing.assert_array_equal(ids[b, t], expected)
        np.testing.assert_array_equal(ids[b, len(sent) + 1], eos)
    assert not ids[1, 4].any(), "padding token must be all zeros"
    np.testing.assert_array_equal((ids > 0).any(-1).sum(-1), [5, 4])  # padding rows are all-zero


def test_empty_sentence_and_empty_batch() -> None:
    """An empty sentence is [<S>, </S>] (length 2)."""
    ids, mask = batch_to_ids([[], ["a"]])
    assert ids.shape == (2, 3, 50)
    np.testing.assert_array_equal(mask, [[True, True, False], [True, True, True]])
    np.testing.assert_array_equal(ids[0, 1], padded([259, 258, 260]))
    assert not ids[0, 2].any()
    ids, mask = batch_to_ids([])
    assert ids.shape[0] == 0 and mask.shape[0] == 0


def test_multibyte_utf8() -> None:
    """Ids are UTF-8 bytes (+1), not code points."""
    for tok in ["naïve", "日本語", "😀", "Ünïcödé"]:
        raw = tok.encode("utf-8")
        assert len(raw) > len(tok)
        np.testing.assert_array_equal(token_to_char_ids(tok), padded([259, *[b + 1 for b in raw], 260]))


def test_long_tokens_truncated_to_48_bytes() -> None:
    """Tokens keep their first C-2 = 48 bytes, even if that splits a multi-byte character."""
    ids = token_to_char_ids("a" * 100)
    np.testing.assert_array_equal(ids, np.array([259] + [98] * 48 + [260]))
    exact = token_to_char_ids("b" * 48)
    np.testing.assert_array_equal(exact, np.array([259] + [99] * 48 + [260]))
    # 'é' is 2 bytes (0xC3 0xA9); "a" + 30 x 'é' = 61 bytes -> 48 bytes ends with a lone 0xC3.
    tok = "a" + "é" * 30
    raw = tok.encode("utf-8")[:48]
    assert raw[-1] == 0xC3
    np.testing.assert_array_equal(token_to_char_ids(tok), np.array([259, *[b + 1 for b in raw], 260]))
    # '•' is 3 bytes: 16 of them are exactly 48 bytes, 17 get cut inside the 17th.
    np.testing.assert_array_equal(token_to_char_ids("•" * 17), token_to_char_ids("•" * 16))
    # smaller max_chars
    np.testing.assert_array_equal(token_to_char_ids("abcdef", max_chars=5), np.array([259, 98, 99, 100, 260]))


def test_lone_surrogates_do_not_crash() -> None:
    """Unencodable lone surrogates are dropped (as bilm-tf/AllenNLP's encode('utf-8', 'ignore'))."""
    ids = token_to_char_ids("a\ud800b")
    np.testing.assert_array_equal(ids, token_to_char_ids("ab"))
    ids, mask = batch_to_ids([["\udfff", "x"]])
    assert mask.all() and ids.shape == (1, 4, 50)
    np.testing.assert_array_equal(ids[0, 1], padded([259, 260]))


@pytest.mark.parametrize("bad", [
    [["a", 1]],
    [["a", None]],
    [[b"bytes"]],
    "a plain string",
    ["a sentence as a str"],
    [None],
    5,
])
def test_bad_input_raises_input_error(bad: object) -> None:
    """Non-str tokens, str sentences and non-lists raise InputError (an ElmoError)."""
    with pytest.raises(InputError):
        batch_to_ids(bad)  # type: ignore[arg-type]
    assert issubclass(InputError, ElmoError)


def test_token_to_char_ids_rejects_non_str() -> None:
    with pytest.raises(InputError):
        token_to_char_ids(b"abc")  # type: ignore[arg-type]
    with pytest.raises(InputError):
        token_to_char_ids(12)  # type: ignore[arg-type]


def test_pad_to_and_cache() -> None:
    """`pad_to` adds zero tokens; a CharIdCache gives the same ids as the uncached path."""
    sentences = [["The", "first"], ["é" * 40, "x"]]
    ids, mask = batch_to_ids(sentences, pad_to=7)
    base, base_mask = batch_to_ids(sentences)
    assert ids.shape == (2, 7, 50)
    np.testing.assert_array_equal(ids[:, :4], base)
    assert not ids[:, 4:].any() and not mask[:, 4:].any()
    cache = CharIdCache()
    cached, cached_mask = batch_to_ids(sentences, cache=cache)
    cached2, _ = batch_to_ids(sentences, cache=cache)
    np.testing.assert_array_equal(cached, base)
    np.testing.assert_array_equal(cached2, base)
    np.testing.assert_array_equal(cached_mask, base_mask)


# --------------------------------------------------------------------------- properties

sentences_strategy = st.lists(st.lists(st.text(max_size=60), max_size=6), max_size=4)


@settings(max_examples=50, deadline=None)
@given(sentences_strategy)
def test_batch_properties(sentences: list[list[str]]) -> None:
    """Any list of lists of unicode strings: shape, mask, zero padding, BOW/EOW, oracle ids."""
    ids, mask = batch_to_ids(sentences)
    lengths = np.array([len(s) + 2 for s in sentences], dtype=np.int64)
    width = int(lengths.max()) if len(sentences) else 2
    assert ids.shape == (len(sentences), width, 50)
    assert mask.shape == (len(sentences), width)
    np.testing.assert_array_equal(mask.sum(-1), lengths.reshape(len(sentences)))
    np.testing.assert_array_equal(mask, np.arange(width)[None, :] < lengths[:, None])
    np.testing.assert_array_equal(ids > 0, np.broadcast_to(mask[..., None], ids.shape))
    real = ids[mask]
    assert (real[:, 0] == 259).all()
    assert ((real == 260).sum(-1) == 1).all()
    assert real.max(initial=1) <= 261
    if len(sentences):
        want, want_lengths = ref.batch_char_ids(sentences)
        np.testing.assert_array_equal(ids, want)
        np.testing.assert_array_equal(mask.sum(-1), want_lengths)


@settings(max_examples=50, deadline=None)
@given(st.text(), st.integers(min_value=3, max_value=60), st.booleans())
def test_token_properties(token: str, max_chars: int, shift: bool) -> None:
    """Any token: exactly max_chars ids equal to the oracle; the unshifted ids are shift - 1."""
    ids = token_to_char_ids(token, max_chars=max_chars, shift=shift)
    assert ids.shape == (max_chars,)
    np.testing.assert_array_equal(ids, ref.char_ids(token, max_chars, shift=shift))


def test_pad_to_too_short_is_input_error() -> None:
    with pytest.raises(InputError, match="pad_to=3"):
        batch_to_ids([["a", "b", "c"]], pad_to=3)
