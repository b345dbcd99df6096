"""Vocabulary: build (counts, order, min_count, max_size), save/load round trip, errors, globs."""
from __future__ import annotations

import collections
import os
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from elmo_jax.errors import ElmoError, InputError
from elmo_jax.vocab import Vocabulary, VocabError, build_vocab, count_tokens, resolve_files


def write(path: Path, text: str | bytes) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text, encoding="utf-8")
    return str(path)


@pytest.fixture
def corpus(tmp_path: Path) -> list[str]:
    return [write(tmp_path / "a.txt", "the cat sat on the mat\nthe dog\n\n"),
            write(tmp_path / "b.txt", "a dog and a cat\nzebra\n")]


def test_build_order_counts_and_ties(corpus: list[str]) -> None:
    vocab, n_tokens = build_vocab(corpus)
    # counts: the 3, cat 2, dog 2, a 2, sat/on/mat/and/zebra 1
    assert vocab.words == ["<S>", "</S>", "<UNK>", "the", "a", "cat", "dog", "and", "mat", "on", "sat", "zebra"]
    assert n_tokens == 6 + 2 + 5 + 1 == count_tokens(corpus)
    assert (vocab.bos_id, vocab.eos_id, vocab.unk_id) == (0, 1, 2)
    assert vocab.word_to_id("cat") == 5 and vocab.word_to_id("unicorn") == vocab.unk_id
    assert len(vocab) == 12


def test_min_count_and_max_size(corpus: list[str]) -> None:
    vocab, _ = build_vocab(corpus, min_count=2)
    assert vocab.words == ["<S>", "</S>", "<UNK>", "the", "a", "cat", "dog"]
    vocab, _ = build_vocab(corpus, max_size=5)  # the specials count towards the size
    assert vocab.words == ["<S>", "</S>", "<UNK>", "the", "a"]
    with pytest.raises(ElmoError, match="max_size"):
        build_vocab(corpus, max_size=2)
    with pytest.raises(ElmoError, match="min_count"):
        build_vocab(corpus, min_count=0)


def test_literal_special_words_in_text_are_not_duplicated(tmp_path: Path) -> None:
    vocab, n = build_vocab([write(tmp_path / "c.txt", "<S> x </S> x <UNK>\n")])
    assert vocab.words == ["<S>", "</S>", "<UNK>", "x"] and n == 5


def test_save_load_round_trip(tmp_path: Path, corpus: list[str]) -> None:
    vocab, _ = build_vocab(corpus)
    path = tmp_path / "vocab.txt"
    vocab.save(path)
    assert path.read_text(encoding="utf-8") == "\n".join(vocab.words) + "\n"
    again = Vocabulary.from_file(path)
    assert again == vocab and again.words == vocab.words and again.source == str(path)
    assert [again.word_to_id(w) for w in vocab.words] == list(range(len(vocab)))


def test_save_is_atomic(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "vocab.txt"
    path.write_text("old\n")
    vocab = Vocabulary(["<S>", "</S>", "<UNK>", "x"])

    def boom(*a, **k):
        raise RuntimeError("disk full")

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(RuntimeError):
        vocab.save(path)
    assert path.read_text() == "old\n" and os.listdir(tmp_path) == ["vocab.txt"]


def test_bilm_tf_files_with_specials_elsewhere_and_trailing_blank(tmp_path: Path) -> None:
    v = Vocabulary.from_file(write(tmp_path / "v.txt", "the\n<S>\n</S>\n<UNK>\n\n\n"))
    assert (v.bos_id, v.eos_id, v.unk_id) == (1, 2, 3) and len(v) == 4


@pytest.mark.parametrize("text,match", [
    ("<S>\n</S>\nthe\n", r"lacks <UNK>"),
    ("the\ncat\n", r"lacks <S>, </S>, <UNK>"),
    ("<S>\n<UNK>\n", r"lacks </S>"),
    ("<S>\n</S>\n<UNK>\nthe\ncat\nthe\n", r"duplicate word 'the' on line 6 \(first on line 4\)"),
    ("<S>\n</S>\n\n<UNK>\n", r"line 3 is blank"),
    ("<S>\n</S>\n<UNK>\nthe 12\n", r"line 4 holds more than one word"),
    ("", r"empty"),
    ("\n\n", r"empty"),
])
def test_vocab_file_errors(tmp_path: Path, text: str, match: str) -> None:
    path = write(tmp_path / "bad_vocab.txt", text)
    with pytest.raises(VocabError, match=match) as info:
        Vocabulary.from_file(path)
    assert info.value.path == path and path in str(info.value)


def test_vocab_file_missing_dir_and_not_utf8(tmp_path: Path) -> None:
    with pytest.raises(ElmoError, match="not found") as info:
        Vocabulary.from_file(tmp_path / "nope.txt")
    assert "nope.txt" in str(info.value)
    with pytest.raises(ElmoError, match="directory"):
        Vocabulary.from_file(tmp_path)
    path = write(tmp_path / "latin1.txt", "<S>\n</S>\n<UNK>\ncaf\xe9\n".encode("latin-1"))
    with pytest.raises(InputError, match="line 4 is not valid UTF-8") as info:
        Vocabulary.from_file(path)
    assert info.value.path == path


def test_vocabulary_constructor_errors() -> None:
    with pytest.raises(VocabError, match="empty"):
        Vocabulary([])
    with pytest.raises(VocabError, match="duplicate word 'x'"):
        Vocabulary(["<S>", "</S>", "<UNK>", "x", "x"])
    with pytest.raises(VocabError, match="entry 3"):
        Vocabulary(["<S>", "</S>", "<UNK>", "a b"])
    with pytest.raises(VocabError, match="lacks <UNK>"):
        Vocabulary(["<S>", "</S>"])


def test_resolve_files(tmp_path: Path) -> None:
    b = write(tmp_path / "shards" / "b.txt", "x\n")
    a = write(tmp_path / "shards" / "a.txt", "y\n")
    (tmp_path / "shards" / "dir.txt").mkdir()
    assert resolve_files(str(tmp_path / "shards" / "*.txt")) == [a, b]
    assert resolve_files([str(tmp_path / "shards" / "b.txt"), str(tmp_path / "shards" / "*.txt")]) == [a, b]
    pattern = str(tmp_path / "nothing" / "*.txt")
    with pytest.raises(InputError, match="no files match") as info:
        resolve_files(pattern)
    assert pattern in str(info.value)
    empty = write(tmp_path / "shards" / "c.txt", "")
    with pytest.raises(InputError, match="empty") as info:
        resolve_files(str(tmp_path / "shards" / "*.txt"))
    assert info.value.path == empty


def test_build_vocab_errors(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="not found"):
        build_vocab([str(tmp_path / "missing.txt")])
    bad = write(tmp_path / "bad.txt", b"fine\nbad \xff byte\n")
    with pytest.raises(InputError, match="line 2") as info:
        build_vocab([bad])
    assert info.value.path == bad
    blank = write(tmp_path / "blank.txt", "\n  \n")
    with pytest.raises(InputError, match="no tokens"):
        build_vocab([blank])
    with pytest.raises(InputError, match="no corpus files"):
        build_vocab([])


@settings(max_examples=20, deadline=None)
@given(st.lists(st.lists(st.sampled_from(["a", "b", "c", "dd", "<UNK>", "é", "x-y"]), max_size=8), min_size=1,
                max_size=12), st.integers(1, 3))
def test_build_vocab_matches_counter(tmp_path_factory: pytest.TempPathFactory, sentences: list[list[str]],
                                     min_count: int) -> None:
    """Property: the order is (count desc, word asc) of an independent Counter, specials first."""
    path = tmp_path_factory.mktemp("v") / "c.txt"
    path.write_text("".join(" ".join(s) + "\n" for s in sentences), encoding="utf-8")
    counts = collections.Counter(w for s in sentences for w in s)
    if not counts:
        with pytest.raises(InputError):
            build_vocab([str(path)], min_count=min_count)
        return
    vocab, n = build_vocab([str(path)], min_count=min_count)
    assert n == sum(counts.values())
    body = vocab.words[3:]
    assert vocab.words[:3] == ["<S>", "</S>", "<UNK>"]
    assert set(body) == {w for w, c in counts.items() if c >= min_count and w != "<UNK>"}
    keys = [(-counts[w], w) for w in body]
    assert keys == sorted(keys)
