"""Tag schemes (IOB1 / IOB2 / BIOES): the one tag splitter, scheme detection, exact IOB1 <-> IOB2
conversion (round trips, spans unchanged), and the tagger trained on an IOB1 file with a CRF:
it learns IOB1 entity starts and writes its predictions back in IOB1."""
from __future__ import annotations

import json

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from elmo_jax.tasks import crf, metrics
from elmo_jax.tasks import tags as T
from elmo_jax.tasks.config import TaskConfig
from elmo_jax.tasks.data import read_conll
from elmo_jax.tasks.labels import check_labels, from_model_tags, model_view, read_task_file
from elmo_jax.tasks.loop import train_task
from elmo_jax.tasks.predictor import TaskPredictor
from elmo_jax.tasks.metrics import extract_spans

from conftest import encode_spans, entity_spans

CONLL = str(Path(__file__).resolve().parents[1] / "examples" / "data" / "conll_sample.txt")  # IOB2

# IOB1 as in the original CoNLL-2003 files: an entity starts with I-X; B-X only right after an X entity.
IOB1_SENTENCES = [
    [("Maria", "I-PER"), ("Lopez", "I-PER"), ("visited", "O"), ("Ohio", "I-LOC")],
    [("yesterday", "O"), ("Acme", "I-ORG"), ("Corp", "I-ORG"), ("said", "O")],
    [("Paris", "I-LOC"), ("London", "B-LOC"), ("flights", "O")],
    [("the", "O"), ("German", "I-MISC"), ("call", "O")],
    [("Ohio", "I-LOC"), ("said", "O"), ("Maria", "I-PER")],
    [("flights", "O"), ("to", "O"), ("London", "I-LOC"), ("Paris", "B-LOC")],
]
# the same entities in IOB2
IOB2_TAGS = [["B-PER", "I-PER", "O", "B-LOC"], ["O", "B-ORG", "I-ORG", "O"], ["B-LOC", "B-LOC", "O"],
             ["O", "B-MISC", "O"], ["B-LOC", "O", "B-PER"], ["O", "O", "B-LOC", "B-LOC"]]


def write_conll(path, sentences) -> None:
    """`token POS tag` lines, a blank line after each sentence."""
    lines = []
    for sentence in sentences:
        lines.extend(f"{token} NNP {tag}" for token, tag in sentence)
        lines.append("")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


# --------------------------------------------------------------------------- the tagger on IOB1 data
def test_crf_tagger_learns_an_iob1_file_and_predicts_iob1(small_bilm, tmp_path):
    """Train data in IOB1 with `crf` (constrained): every entity that starts with I-X is learned
    (span F1 1.0), `predict_file` / `predict` / `evaluate` answer in IOB1, and labels.json holds
    the internal IOB2 tags the CRF constraints are valid for."""
    options, weights = small_bilm
    train = tmp_path / "train.iob1"
    write_conll(train, IOB1_SENTENCES)
    cfg = TaskConfig(task="tag", train=str(train), dev=str(train), options=options, weights=weights, crf=True,
                     hidden_dim=32, dropout=0.0, learning_rate=0.02, batch_size=8, max_epochs=60, patience=8)
    out = tmp_path / "ner"
    summary = train_task(cfg, str(out), progress=False, log=lambda msg: None)
    gold = [[tag for _, tag in s] for s in IOB1_SENTENCES]
    predictor = TaskPredictor(out)
    predictor.predict_file(str(train), str(tmp_path / "pred.txt"))
    predicted = read_conll(tmp_path / "pred.txt")
    assert list(predicted["tags"]) == gold, (list(predicted["tags"]), summary["dev"])  # IOB1 out, the gold tags
    assert summary["dev"]["f1"] == 1.0 and summary["dev"]["accuracy"] == 1.0, summary["dev"]
    assert predictor.predict([[t for t, _ in s] for s in IOB1_SENTENCES]) == gold
    report = predictor.evaluate(str(train))
    assert report["f1"] == 1.0 and report["accuracy"] == 1.0
    labels = json.loads((out / "labels.json").read_text())
    assert labels == ["O", "B-LOC", "B-MISC", "B-ORG", "B-PER", "I-ORG", "I-PER"]
    assert json.loads((out / "tag_scheme.json").read_text()) == {"scheme": "IOB1", "labels": "IOB2"}
    # the same model evaluated on (and predicting for) the IOB2 version of the file answers in IOB2
    iob2 = tmp_path / "data.iob2"
    write_conll(iob2, [[(t, g) for (t, _), g in zip(s, tags)] for s, tags in zip(IOB1_SENTENCES, IOB2_TAGS)])
    assert predictor.evaluate(str(iob2))["accuracy"] == 1.0
    predictor.predict_file(str(iob2), str(tmp_path / "pred2.txt"))
    assert list(read_conll(tmp_path / "pred2.txt")["tags"]) == IOB2_TAGS
    # a model directory from before tag_scheme.json converts nothing: the model's own (IOB2) tags
    (out / "tag_scheme.json").unlink()
    assert TaskPredictor(out).predict([[t for t, _ in s] for s in IOB1_SENTENCES]) == IOB2_TAGS


# --------------------------------------------------------------------------- the splitter
@pytest.mark.parametrize("tag, parts", [
    ("B-PER", ("B", "PER")), ("I-PER", ("I", "PER")), ("E-LOC", ("E", "LOC")), ("S-LOC", ("S", "LOC")),
    ("B-MISC-X", ("B", "MISC-X")),  # hyphen in the type
    ("O", ("O", "")),
    ("PER", (None, "PER")), ("<pad>", (None, "<pad>")), ("B-", (None, "B-")), ("X-PER", (None, "X-PER")),
    ("b-PER", (None, "b-PER")), ("BPER", (None, "BPER")), ("O-PER", (None, "O-PER")),
])
def test_split_tag(tag, parts):
    assert T.split_tag(tag) == parts


def test_one_splitter_for_the_crf_and_the_metrics():
    assert crf.split_tag is T.split_tag and metrics.split_tag is T.split_tag
    assert not hasattr(crf, "_split_tag") and not hasattr(metrics, "_split_tag")
    # conlleval's raw mode is the metrics' reading of a prefix-less tag, on top of the splitter
    assert extract_spans(["PER", "PER", "O", "LOC"]) == [("PER", 0, 2), ("LOC", 3, 4)]


# --------------------------------------------------------------------------- scheme detection
@pytest.mark.parametrize("seqs, scheme", [
    ([["I-PER", "I-PER", "O"]], "IOB1"),                                   # I-X at the sentence start
    ([["O", "I-LOC"]], "IOB1"),                                            # I-X after O
    ([["I-ORG", "I-PER"]], "IOB1"),                                        # I-X after another type
    ([["I-LOC", "B-LOC"], ["O"]], "IOB1"),                                 # B-X after X is IOB1's B
    ([["B-PER", "I-PER", "O", "B-LOC"]], "IOB2"),
    ([["B-LOC", "B-LOC"]], "IOB2"),                                        # B-X first: IOB2
    ([["B-PER", "E-PER", "S-LOC"]], "BIOES"),
    ([["I-PER", "S-LOC"]], "BIOES"),                                       # any E-/S- tag
    ([["O", "O"], []], None), ([], None),                                  # nothing tells
    ([["B-PER", "O", "B-LOC", "O", "I-ORG"]], "IOB2"),                     # a stray O I-X in IOB2
    ([["I-PER", "O", "I-LOC", "O", "B-ORG"]], "IOB1"),                     # a stray O B-X in IOB1
    ([["PER", "PER"]], None),                                              # prefix-less tags: no evidence
])
def test_detect_scheme(seqs, scheme):
    assert T.detect_scheme(seqs) == scheme


def test_label_scheme_and_crf_tag_scheme():
    assert T.label_scheme(["O", "B-PER", "I-PER"]) == "IOB2" and crf.tag_scheme(["O", "B-PER", "I-PER"]) == "BIO"
    assert T.label_scheme(["O", "S-PER"]) == "BIOES" == crf.tag_scheme(["O", "S-PER"])


# --------------------------------------------------------------------------- conversion
@pytest.mark.parametrize("iob1, iob2", [
    (["I-PER", "I-PER", "O", "I-LOC"], ["B-PER", "I-PER", "O", "B-LOC"]),
    (["I-LOC", "B-LOC", "I-LOC", "O"], ["B-LOC", "B-LOC", "I-LOC", "O"]),  # B-X after X stays B-X
    (["I-ORG", "I-PER", "I-PER"], ["B-ORG", "B-PER", "I-PER"]),           # type change starts an entity
    (["O", "O"], ["O", "O"]), ([], []),
    (["I-MISC-X", "B-MISC-X"], ["B-MISC-X", "B-MISC-X"]),
])
def test_iob1_iob2_examples(iob1, iob2):
    assert T.iob1_to_iob2(iob1) == iob2 and T.iob2_to_iob1(iob2) == iob1
    assert T.convert(iob1, "IOB1", "IOB2") == iob2 and T.convert(iob2, "IOB2", "IOB1") == iob1
    assert extract_spans(iob1) == extract_spans(iob2)


def test_conversion_is_per_sentence_and_leaves_other_tags():
    # a sentence start is an entity start: I-PER opening sentence 2 becomes B-PER, whatever ends sentence 1
    assert T.convert_all([["I-PER"], ["I-PER"]], "IOB1", "IOB2") == [["B-PER"], ["B-PER"]]
    assert T.convert_all([["B-PER"], ["B-PER"]], "IOB2", "IOB1") == [["I-PER"], ["I-PER"]]
    # prefix-less tags are kept, and read as conlleval does (PER continues into I-PER)
    assert T.iob1_to_iob2(["PER", "I-PER", "<pad>", "I-PER"]) == ["PER", "I-PER", "<pad>", "B-PER"]
    assert T.iob2_to_iob1(["PER", "B-PER", "O", "B-PER"]) == ["PER", "B-PER", "O", "I-PER"]
    for same in ("IOB1", "IOB2", "BIOES", None):
        assert T.convert(["S-X", "B-Y"], same, same) == ["S-X", "B-Y"]
    assert T.convert(["I-X"], None, "IOB2") == ["I-X"] and T.convert(["I-X"], "IOB1", None) == ["I-X"]
    with pytest.raises(ValueError, match="BIOES to IOB2"):
        T.convert(["S-X"], "BIOES", "IOB2")
    assert T.convertible("IOB1", "IOB2") and not T.convertible("BIOES", "IOB2") and not T.convertible(None, "IOB1")
    assert T.internal_scheme("IOB1") == "IOB2" and T.internal_scheme("BIOES") == "BIOES"
    assert T.internal_scheme(None) is None


@settings(max_examples=300, deadline=None)
@given(entity_spans(types=("PER", "LOC", "ORG"), max_len=20))
def test_round_trips_on_valid_sequences(sentence):
    n, spans = sentence
    iob1, iob2 = encode_spans(n, spans, "IOB1"), encode_spans(n, spans, "IOB2")
    assert T.iob1_to_iob2(iob1) == iob2 and T.iob2_to_iob1(iob2) == iob1
    assert T.iob2_to_iob1(T.iob1_to_iob2(iob1)) == iob1  # IOB1 -> IOB2 -> IOB1 is the identity
    assert T.iob1_to_iob2(T.iob2_to_iob1(iob2)) == iob2
    assert extract_spans(iob1) == extract_spans(iob2) == spans
    assert T.iob1_to_iob2(iob2) == iob2 and T.iob2_to_iob1(iob1) == iob1  # each is a no-op on its own scheme
    if spans:
        assert T.detect_scheme([iob1]) == "IOB1" and T.detect_scheme([iob2]) == "IOB2"


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from(["O", "B-PER", "I-PER", "B-LOC", "I-LOC", "PER"]), max_size=12))
def test_any_sequence_keeps_its_spans_and_becomes_valid(tags):
    """Invalid input too (O I-X in IOB2, O B-X in IOB1, prefix-less tags): the conlleval spans
    never change, and the output is valid in its scheme."""
    iob2, iob1 = T.iob1_to_iob2(tags), T.iob2_to_iob1(tags)
    assert extract_spans(iob2) == extract_spans(tags) == extract_spans(iob1)
    starts2 = list(T._entity_starts(iob2))
    assert all(prefix == "B" for _, prefix, _ in starts2)  # no entity starts with I-X
    assert all(prefix == "I" or after for _, prefix, after in T._entity_starts(iob1))  # B-X only after X
    assert T.iob1_to_iob2(T.iob2_to_iob1(iob2)) == iob2 and T.iob2_to_iob1(T.iob1_to_iob2(iob1)) == iob1


# --------------------------------------------------------------------------- the task loop's views
def test_task_files_are_read_with_their_scheme_and_converted(tmp_path):
    cfg = TaskConfig(task="tag", train=str(tmp_path / "train.iob1"), options="x")
    write_conll(tmp_path / "train.iob1", IOB1_SENTENCES)
    data = read_task_file(cfg, str(tmp_path / "train.iob1"))
    assert data.scheme == "IOB1"
    view = model_view(data, "IOB1")
    assert view.labels == IOB2_TAGS and view.scheme == "IOB2" and data.labels[0][0] == "I-PER"
    assert from_model_tags(view.labels, "IOB1", "IOB1") == data.labels
    assert from_model_tags(view.labels, "IOB1", "IOB2") == IOB2_TAGS
    assert model_view(data, None) is data  # a model directory without a recorded scheme: unchanged
    assert read_task_file(cfg, CONLL).scheme == "IOB2"
    assert model_view(read_task_file(cfg, CONLL), "IOB1").labels == read_task_file(cfg, CONLL).labels
    # a file without tags has no scheme; predictions for it take the training file's
    (tmp_path / "raw.txt").write_text("Maria\nLopez\n", encoding="utf-8")
    assert read_task_file(cfg, str(tmp_path / "raw.txt"), require_labels=False).scheme is None
    # an IOB1 dev file's B-X need not occur in the IOB1 training file: the model's labels are IOB2
    names = ["O", "B-LOC", "B-MISC", "B-ORG", "B-PER", "I-ORG", "I-PER"]
    write_conll(tmp_path / "dev.iob1", [[("Acme", "I-ORG"), ("Corp", "B-ORG"), ("x", "O")]])
    check_labels(cfg, model_view(read_task_file(cfg, str(tmp_path / "dev.iob1")), "IOB1"), names)
