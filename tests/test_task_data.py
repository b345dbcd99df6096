"""Task data: classification and CoNLL readers (with line-numbered errors), prediction writers,
and GloVe-style word vectors."""
from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest

from elmo_jax.errors import ElmoError, InputError
from elmo_jax.tasks.data import (label_set, read_classification, read_conll, tag_set,
                                 write_classification_predictions, write_conll_predictions)
from elmo_jax.vectors import WordVectors, read_glove

SAMPLES = Path(__file__).resolve().parents[1] / "examples" / "data"


def write(tmp_path: Path, name: str, text: str | bytes) -> Path:
    path = tmp_path / name
    path.write_bytes(text if isinstance(text, bytes) else text.encode("utf-8"))
    return path


def raises_at(path: Path, lineno: int, pattern: str):
    """pytest.raises for an InputError naming `path` and `line lineno`, then (later) `pattern`."""
    return pytest.raises(InputError, match=re.escape(f"{path}: line {lineno}") + r"\b.*" + pattern)


# ---------------------------------------------------------------- classification

def test_sentiment_samples_tsv_and_jsonl_agree():
    tsv = read_classification(SAMPLES / "sentiment_sample.tsv")
    jsonl = read_classification(SAMPLES / "sentiment_sample.jsonl")
    assert tsv.column_names == ["tokens", "label"]
    assert len(tsv) == 40
    assert tsv[:] == jsonl[:]
    assert tsv[0] == {"tokens": ["a", "gripping", ",", "beautifully", "acted", "drama", "."], "label": "positive"}
    assert label_set(tsv["label"]) == ["negative", "positive"]
    assert tsv["label"].count("positive") == 20


def test_tsv_without_header(tmp_path):
    path = write(tmp_path, "d.tsv", "Good  film .\tpos\n\nbad\tneg\n")
    ds = read_classification(path)
    assert ds["tokens"] == [["Good", "film", "."], ["bad"]]
    assert ds["label"] == ["pos", "neg"]
    assert read_classification(path, lowercase=True)["tokens"][0] == ["good", "film", "."]


def test_tsv_header_names_columns(tmp_path):
    path = write(tmp_path, "d.txt", "id\tsentence\tlabel\n1\tgood film\t1\n2\tbad film\t0\n")
    ds = read_classification(path)
    assert ds["tokens"] == [["good", "film"], ["bad", "film"]]
    assert ds["label"] == ["1", "0"]
    path = write(tmp_path, "e.tsv", "y\treview\nneg\tawful\n")
    ds = read_classification(path, text_field="review", label_field="y")
    assert ds[0] == {"tokens": ["awful"], "label": "neg"}


def test_tsv_header_without_the_named_column_is_an_error(tmp_path):
    """A first line that names columns (the fields asked for, "sentence", "text" or "label") is a
    header; one without the text (or, when required, the label) column is an error listing its
    columns, never a line of data. Headerless files stay data from the first line."""
    path = write(tmp_path, "d.tsv", "text\tlabel\ngood film\tpos\n")
    with raises_at(path, 1, r"the header has no text column 'foo' \(its columns: 'text', 'label'\)"):
        read_classification(path, text_field="foo")
    with raises_at(path, 1, r"the header has no label column 'sentiment' \(its columns: 'text', 'label'\)"):
        read_classification(path, label_field="sentiment")
    with raises_at(path, 1, r"the header has no text column 'review'"):
        read_classification(path, text_field="review", label_field="y")
    assert read_classification(path, label_field="sentiment", require_labels=False)["label"] == [""]
    only_text = write(tmp_path, "t.tsv", "text\ngood film\n")
    assert read_classification(only_text, require_labels=False)["tokens"] == [["good", "film"]]
    with raises_at(only_text, 1, r"the header has no label column 'label'"):
        read_classification(only_text)
    headerless = write(tmp_path, "h.tsv", "good film\tpos\nbad\tneg\n")
    assert read_classification(headerless, text_field="foo", label_field="bar")["label"] == ["pos", "neg"]


def test_line_numbers(tmp_path):
    path = write(tmp_path, "d.tsv", "text\tlabel\n\ngood film\tpos\nbad\tneg\n")
    assert read_classification(path, with_lines=True)["line"] == [3, 4]
    assert read_classification(path).column_names == ["tokens", "label"]
    path = write(tmp_path, "d.jsonl", '\n{"text": "a", "label": "x"}\n{"text": "b", "label": "y"}\n')
    assert read_classification(path, with_lines=True)["line"] == [2, 3]
    path = write(tmp_path, "d.conll", "-DOCSTART- O\n\nA O\nB O\n\n\nC O\n")
    ds = read_conll(path, with_lines=True)
    assert ds["line"] == [3, 7] and ds.column_names == ["tokens", "tags", "line"]


def test_a_directory_is_named_as_such(tmp_path):
    for name in ("inputs", "inputs.tsv"):
        (tmp_path / name).mkdir()
        with pytest.raises(InputError, match=re.escape(f"{tmp_path / name}: is a directory")):
            read_classification(tmp_path / name)
    with pytest.raises(InputError, match="is a directory"):
        read_conll(tmp_path / "inputs")
    with pytest.raises(InputError, match=re.escape(f"{tmp_path / 'nope'}: input file not found")):
        read_classification(tmp_path / "nope")


def test_tsv_unlabelled(tmp_path):
    path = write(tmp_path, "d.tsv", "good film\nbad film\tneg\n")
    ds = read_classification(path, require_labels=False)
    assert ds["label"] == ["", "neg"]
    path = write(tmp_path, "e.tsv", "index\tsentence\n0\tgood film\n")
    ds = read_classification(path, require_labels=False)
    assert ds[0] == {"tokens": ["good", "film"], "label": ""}


def test_crlf_and_bom(tmp_path):
    path = write(tmp_path, "d.tsv", "\ufefftext\tlabel\r\ngood film\tpos\r\nbad\tneg\r\n")
    ds = read_classification(path)
    assert ds["label"] == ["pos", "neg"]
    assert ds["tokens"] == [["good", "film"], ["bad"]]
    path = write(tmp_path, "d.jsonl", '{"text": "ok", "label": "pos"}\r\n\r\n')
    assert read_classification(path)["label"] == ["pos"]


def test_jsonl_list_text_int_label_and_blank_lines(tmp_path):
    path = write(tmp_path, "d.jsonl", '{"text": ["New", "York"], "label": 1}\n\n  \n'
                                      '{"sentence": "so  so", "label": "0", "extra": true}\n')
    ds = read_classification(path, lowercase=True)
    assert ds["tokens"] == [["new", "york"], ["so", "so"]]
    assert ds["label"] == ["1", "0"]
    path = write(tmp_path, "e.json", '{"text": "no label"}\n{"text": "null label", "label": null}\n')
    assert read_classification(path, require_labels=False)["label"] == ["", ""]


@pytest.mark.parametrize("text, lineno, pattern", [
    ('{"text": "a", "label": "x"}\n\n{"text": "b", "label": \n', 3, r"not valid JSON"),
    ('{"text": "a", "label": "x"}\n[1, 2]\n', 2, r"expected a JSON object, got list"),
    ('{"txt": "a", "label": "x"}\n', 1, r"missing text field 'text'"),
    ('{"text": "a", "label": "x"}\n{"text": "b"}\n', 2, r"missing label field 'label'"),
    ('{"text": "a", "label": null}\n', 1, r"missing label"),
    ('{"text": "   ", "label": "x"}\n', 1, r"empty text \(no tokens\)"),
    ('{"text": [], "label": "x"}\n', 1, r"empty text \(no tokens\)"),
    ('{"text": ["a", 3], "label": "x"}\n', 1, r"non-string or empty token"),
    ('{"text": 5, "label": "x"}\n', 1, r"text must be a string or a list"),
    ('{"text": "a", "label": 1.5}\n', 1, r"label must be a string or an integer, got float"),
    ('{"text": "a", "label": true}\n', 1, r"label must be a string or an integer, got bool"),
    ('{"text": "a", "label": ["x"]}\n', 1, r"label must be a string or an integer, got list"),
])
def test_jsonl_errors(tmp_path, text, lineno, pattern):
    path = write(tmp_path, "bad.jsonl", text)
    with raises_at(path, lineno, pattern):
        read_classification(path)


@pytest.mark.parametrize("text, lineno, pattern", [
    ("a b\tpos\na\tb\tneg\n", 2, r"expected 2 tab-separated columns \(text<TAB>label\), found 3"),
    ("a b\tpos\n\njust text\n", 3, r"expected 2 tab-separated columns .*found 1"),
    ("text\tlabel\na\tpos\nb\tneg\textra\n", 3, r"expected 2 tab-separated columns \(as in the header\), found 3"),
    ("text\tlabel\na\tpos\n \tneg\n", 3, r"empty text"),
    ("a\tpos\nb\t \n", 2, r"missing label"),
])
def test_tsv_errors(tmp_path, text, lineno, pattern):
    path = write(tmp_path, "bad.tsv", text)
    with raises_at(path, lineno, pattern):
        read_classification(path)


@pytest.mark.parametrize("name", ["empty.tsv", "empty.jsonl"])
def test_classification_empty_file(tmp_path, name):
    path = write(tmp_path, name, "\n  \n")
    with pytest.raises(InputError, match=re.escape(f"{path}: no examples found")):
        read_classification(path)
    path = write(tmp_path, "header_only.tsv", "text\tlabel\n")
    with pytest.raises(InputError, match="no examples found"):
        read_classification(path)


def test_classification_bad_extension_encoding_and_missing_file(tmp_path):
    path = write(tmp_path, "d.csv", "a,pos\n")
    with pytest.raises(InputError, match=r"unsupported .*'\.csv'.*\.jsonl, \.json, \.tsv, \.txt"):
        read_classification(path)
    path = write(tmp_path, "d.tsv", b"a\tpos\nb\xff\tneg\n")
    with raises_at(path, 2, "is not valid UTF-8"):
        read_classification(path)
    with pytest.raises(InputError, match="not found"):
        read_classification(tmp_path / "missing.tsv")


# ---------------------------------------------------------------- CoNLL

def test_conll_sample():
    ds = read_conll(SAMPLES / "conll_sample.txt")
    assert ds.column_names == ["tokens", "tags"]
    assert len(ds) == 31
    assert ds[0]["tokens"][:3] == ["Acme", "Corp", "said"]
    assert ds[0]["tags"][:3] == ["B-ORG", "I-ORG", "O"]
    assert all("-DOCSTART-" not in toks for toks in ds["tokens"])
    assert all(len(t) == len(g) for t, g in zip(ds["tokens"], ds["tags"]))
    assert tag_set(ds["tags"]) == ["O", "B-LOC", "B-MISC", "B-ORG", "B-PER", "I-LOC", "I-MISC", "I-ORG", "I-PER"]
    pos = read_conll(SAMPLES / "conll_sample.txt", tag_column=1)
    assert pos[0]["tags"][:3] == ["NNP", "NNP", "VBD"]


def test_conll_docstart_ends_a_sentence_and_crlf(tmp_path):
    text = "-DOCSTART- -X- O\r\nA NN B-PER\r\nB NN O\r\n-DOCSTART- -X- O\r\nC NN B-LOC\r\n\r\n\r\n\r\nD\tNN\tO\r\n"
    ds = read_conll(write(tmp_path, "d.conll", text))
    assert ds["tokens"] == [["A", "B"], ["C"], ["D"]]
    assert ds["tags"] == [["B-PER", "O"], ["B-LOC"], ["O"]]
    assert read_conll(write(tmp_path, "e.conll", text), token_column=-3, tag_column=1)["tags"][0] == ["NN", "NN"]


def test_conll_without_tags(tmp_path):
    path = write(tmp_path, "d.txt", "Hello\nworld\n\nBye\n")
    ds = read_conll(path, require_tags=False)
    assert ds["tokens"] == [["Hello", "world"], ["Bye"]]
    assert ds["tags"] == [["", ""], [""]]
    with raises_at(path, 1, r"1 column\(s\), no tag column -1"):
        read_conll(path)
    path = write(tmp_path, "e.txt", "Hello O\n")
    assert read_conll(path, require_tags=False)["tags"] == [["O"]]  # tags are read when present


@pytest.mark.parametrize("text, kwargs, lineno, pattern", [
    ("a NN O\nb NN O\nc O\n", {}, 3, r"2 columns, but line 1 has 3"),
    ("-DOCSTART- -X- O\n\na NN O\n\nb NN X O\n", {}, 5, r"4 columns, but line 3 has 3"),
    ("a NN O\n", {"tag_column": 3}, 1, r"3 column\(s\), no tag column 3"),
    ("a NN O\n", {"token_column": -4}, 1, r"3 column\(s\), too few for token_column -4"),
])
def test_conll_errors(tmp_path, text, kwargs, lineno, pattern):
    path = write(tmp_path, "bad.conll", text)
    with raises_at(path, lineno, pattern):
        read_conll(path, **kwargs)


def test_conll_empty_file(tmp_path):
    for text in ("", "\n\n", "-DOCSTART- -X- -X- O\n\n"):
        path = write(tmp_path, "empty.txt", text)
        with pytest.raises(InputError, match=re.escape(f"{path}: no sentences found")):
            read_conll(path)


def test_label_and_tag_sets():
    assert label_set(["b", "a", "b"]) == ["a", "b"]
    assert tag_set([["B-PER", "O"], ["I-PER", "B-LOC"]]) == ["O", "B-LOC", "B-PER", "I-PER"]
    assert tag_set([["B-PER"]]) == ["B-PER"]


# ---------------------------------------------------------------- writers

def test_conll_predictions_round_trip(tmp_path):
    tokens = [["John", "lives", "in", "Paris"], ["Hi"]]
    gold = [["B-PER", "O", "O", "B-LOC"], ["O"]]
    pred = [["B-PER", "O", "O", "O"], ["B-MISC"]]
    path = tmp_path / "pred.txt"
    write_conll_predictions(path, tokens, pred, gold=gold)
    assert path.read_text().splitlines()[:5] == ["John B-PER B-PER", "lives O O", "in O O", "Paris B-LOC O", ""]
    assert read_conll(path)["tags"] == pred
    assert read_conll(path, tag_column=-2)["tags"] == gold
    assert read_conll(path)["tokens"] == tokens
    write_conll_predictions(path, tokens, pred)
    assert path.read_text().splitlines()[0] == "John B-PER"
    assert read_conll(path)[:] == {"tokens": tokens, "tags": pred}


def test_conll_predictions_bad_input(tmp_path):
    path = tmp_path / "pred.txt"
    with pytest.raises(ValueError, match="2 sentences of tokens but 1 of predictions"):
        write_conll_predictions(path, [["a"], ["b"]], [["O"]])
    with pytest.raises(ValueError, match="sentence 1: 2 tokens"):
        write_conll_predictions(path, [["a"], ["b", "c"]], [["O"], ["O"]])
    with pytest.raises(ValueError, match="sentence 0: token 'a b' is empty or contains whitespace"):
        write_conll_predictions(path, [["a b"]], [["O"]])
    with pytest.raises(ValueError, match="sentence 0 is empty"):
        write_conll_predictions(path, [[]], [[]])
    assert not path.exists()
    with pytest.raises(ElmoError, match="directory does not exist"):
        write_conll_predictions(tmp_path / "no" / "pred.txt", [["a"]], [["O"]])


def test_classification_predictions_round_trip(tmp_path):
    path = tmp_path / "pred.jsonl"
    tokens = [["good", "film"], ["bad"]]
    write_classification_predictions(path, tokens, ["pos", "neg"], probabilities=np.array([[0.25, 0.75], [0.9, 0.1]]),
                                     label_names=["neg", "pos"], gold=["pos", "pos"])
    records = [json.loads(line) for line in path.read_text().splitlines()]
    assert records[0] == {"text": "good film", "label": "pos", "probabilities": {"neg": 0.25, "pos": 0.75},
                          "gold": "pos"}
    assert records[1]["probabilities"]["neg"] == pytest.approx(0.9)
    assert read_classification(path)[:] == {"tokens": tokens, "label": ["pos", "neg"]}
    write_classification_predictions(path, tokens, ["pos", "neg"])
    assert [json.loads(line) for line in path.read_text().splitlines()][1] == {"text": "bad", "label": "neg"}
    with pytest.raises(ValueError, match="label_names"):
        write_classification_predictions(path, tokens, ["pos", "neg"], probabilities=[[1.0], [1.0]])
    with pytest.raises(ValueError, match=r"shape \[2, 2\]"):
        write_classification_predictions(path, tokens, ["pos", "neg"], probabilities=[[1.0], [1.0]],
                                         label_names=["a", "b"])
    with pytest.raises(ValueError, match="2 examples but 1 labels"):
        write_classification_predictions(path, tokens, ["pos"])


# ---------------------------------------------------------------- GloVe

GLOVE = "the 0.1 0.2 0.3\nParis 1 2 3\n, -1e-1 0 5.5\n"


def test_read_glove(tmp_path):
    wv = read_glove(write(tmp_path, "g.txt", GLOVE))
    assert wv.words == ["the", "Paris", ","]
    assert wv.dim == 3 and len(wv) == 3
    assert wv.vectors.dtype == np.float32
    np.testing.assert_allclose(wv.vectors, [[0.1, 0.2, 0.3], [1, 2, 3], [-0.1, 0, 5.5]], rtol=1e-6)


def test_glove_word2vec_header(tmp_path):
    wv = read_glove(write(tmp_path, "g.txt", "3 3\n" + GLOVE))
    assert wv.words == ["the", "Paris", ","]
    path = write(tmp_path, "h.txt", "3 4\n" + GLOVE)
    with raises_at(path, 2, r"ragged line: 3 values, expected 4 \(from the header on line 1\)"):
        read_glove(path)


def test_glove_words_with_spaces(tmp_path):
    wv = read_glove(write(tmp_path, "g.txt", GLOVE + ". . . 0.5 0.5 0.5\nat name@domain.com 1 1 1\n"))
    assert wv.words[3:] == [". . .", "at name@domain.com"]
    np.testing.assert_allclose(wv.vectors[3], [0.5, 0.5, 0.5])


@pytest.mark.parametrize("extra, lineno, pattern", [
    ("bad 0.1 0.2\n", 4, r"ragged line: 2 values, expected 3 \(as on the first line\)"),
    ("bad 0.1 0.2 0.3 0.4\n", 4, r"ragged line: 4 values, expected 3"),
    ("bad\n", 4, r"ragged line: 0 values"),
    ("bad 0.1 x 0.3\n", 4, r"value 'x' is not a number"),
    ("bad 0.1 nan 0.3\n", 4, r"non-finite"),
    ("\nbad 0.1  0.3\n", 5, r"value '' is not a number"),
])
def test_glove_errors(tmp_path, extra, lineno, pattern):
    path = write(tmp_path, "g.txt", GLOVE + extra)
    with raises_at(path, lineno, pattern):
        read_glove(path)


def test_glove_empty_and_bad_first_line(tmp_path):
    path = write(tmp_path, "g.txt", "\n")
    with pytest.raises(InputError, match=re.escape(f"{path}: no word vectors found")):
        read_glove(path)
    path = write(tmp_path, "g.txt", "lonely\n")
    with raises_at(path, 1, "a word without vector values"):
        read_glove(path)
    with raises_at(path, 1, "not valid UTF-8"):
        read_glove(write(tmp_path, "g.txt", b"\xff 1 2\n"))


def test_glove_duplicates_lowercase_vocab_and_max_words(tmp_path):
    path = write(tmp_path, "g.txt", "The 1 1\nthe 2 2\nParis 3 3\nThe 4 4\nparis 5 5\n")
    wv = read_glove(path)
    assert wv.words == ["The", "the", "Paris", "paris"]
    np.testing.assert_array_equal(wv.vectors[0], [1, 1])  # duplicate keeps the first
    wv = read_glove(path, lowercase=True)
    assert wv.words == ["the", "paris"] and wv.lowercase
    np.testing.assert_array_equal(wv.vectors, [[1, 1], [3, 3]])  # first occurrence wins
    wv = read_glove(path, lowercase=True, vocab=["PARIS"])
    assert wv.words == ["paris"]
    np.testing.assert_array_equal(wv.vectors, [[3, 3]])
    wv = read_glove(path, vocab=["The", "Rome"])  # exact, or the lower-cased form ids() falls back to
    assert wv.words == ["The", "the"]
    wv = read_glove(path, vocab=["Rome"])
    assert wv.words == [] and wv.vectors.shape == (0, 2)
    assert read_glove(path, max_words=2).words == ["The", "the"]
    assert read_glove(write(tmp_path, "h.txt", "5 2\nThe 1 1\nthe 2 2\nParis 3 3\n"), max_words=2).words == ["The", "the"]


def test_word_vector_ids_table_and_coverage():
    wv = WordVectors(words=["Paris", "the"], vectors=np.array([[1, 2], [3, 4]]), lowercase=False)
    ids = wv.ids(["Paris", "paris", "The", "the", "xyz"])
    assert ids.dtype == np.int32
    assert ids.tolist() == [2, 1, 3, 3, 1]  # exact, then lower-cased; 1 = OOV; never 0
    assert wv.ids([]).shape == (0,)
    table = wv.table()
    assert table.shape == (4, 2) and table.dtype == np.float32
    np.testing.assert_array_equal(table[0], [0, 0])
    np.testing.assert_array_equal(table[1], [0, 0])
    np.testing.assert_array_equal(table[ids], [[1, 2], [0, 0], [3, 4], [3, 4], [0, 0]])
    np.testing.assert_array_equal(wv.table("mean")[1], [2, 3])
    r0, r1 = wv.table("random", seed=0), wv.table("random", seed=1)
    np.testing.assert_array_equal(r0, wv.table("random", seed=0))
    assert np.all(r0[1] != 0) and np.any(r0[1] != r1[1])
    np.testing.assert_array_equal(r0[0], [0, 0])
    np.testing.assert_array_equal(r0[2:], wv.vectors)
    with pytest.raises(ValueError, match="oov must be one of zero, mean, random"):
        wv.table("ones")
    assert wv.coverage(["Paris", "paris", "The", "xyz"]) == 0.5
    assert wv.coverage([]) == 0.0
    lower = WordVectors(words=["paris"], vectors=np.ones((1, 3)), lowercase=True)
    assert lower.ids(["PARIS", "Paris", "rome"]).tolist() == [2, 2, 1]
    with pytest.raises(ValueError, match="shape"):
        WordVectors(words=["a"], vectors=np.ones((2, 3)))
