"""Task metrics against hand-computed numbers: conlleval span extraction (IOB1, IOB2, BIOES),
CoNLL span precision/recall/F1, classification accuracy / per-class / macro-F1."""
from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from elmo_jax.tasks.metrics import classification_report, extract_spans, format_report, span_f1

from conftest import encode_spans, entity_spans


# ---------------------------------------------------------------- span extraction

@pytest.mark.parametrize("tags, spans", [
    # IOB2 / BIO
    (["B-PER", "I-PER", "O", "B-LOC"], [("PER", 0, 2), ("LOC", 3, 4)]),
    (["B-PER", "B-PER"], [("PER", 0, 1), ("PER", 1, 2)]),                     # B B: two chunks
    (["B-PER", "I-PER", "B-PER", "I-PER"], [("PER", 0, 2), ("PER", 2, 4)]),
    (["O", "I-PER", "I-PER", "O"], [("PER", 1, 3)]),                          # I after O starts
    (["B-PER", "I-LOC", "I-LOC"], [("PER", 0, 1), ("LOC", 1, 3)]),           # type change
    (["B-ORG", "I-ORG", "I-ORG"], [("ORG", 0, 3)]),                          # open at sentence end
    (["B-MISC-X", "I-MISC-X"], [("MISC-X", 0, 2)]),                          # hyphen in the type
    # IOB1: I- starts a chunk, B- only separates two adjacent chunks of one type
    (["I-PER", "I-PER", "B-PER", "O", "I-LOC"], [("PER", 0, 2), ("PER", 2, 3), ("LOC", 4, 5)]),
    (["I-ORG", "I-PER"], [("ORG", 0, 1), ("PER", 1, 2)]),
    # BIOES / IOBES
    (["B-PER", "E-PER", "S-LOC", "O", "B-ORG", "I-ORG", "E-ORG"],
     [("PER", 0, 2), ("LOC", 2, 3), ("ORG", 4, 7)]),
    (["B-PER", "E-PER", "B-PER", "E-PER"], [("PER", 0, 2), ("PER", 2, 4)]),  # E ends a chunk
    (["S-PER", "S-PER"], [("PER", 0, 1), ("PER", 1, 2)]),
    (["E-PER", "E-PER"], [("PER", 0, 1), ("PER", 1, 2)]),
    (["B-PER", "E-PER", "I-PER"], [("PER", 0, 2), ("PER", 2, 3)]),           # I after E starts
    (["S-PER", "I-PER", "E-PER"], [("PER", 0, 1), ("PER", 1, 3)]),           # I after S starts
    (["B-PER", "S-PER"], [("PER", 0, 1), ("PER", 1, 2)]),                    # S starts and ends
    (["O", "E-LOC"], [("LOC", 1, 2)]),
    (["I-PER", "E-PER"], [("PER", 0, 2)]),
    # tags without a prefix read as I-X (conlleval raw mode)
    (["PER", "PER", "O", "LOC"], [("PER", 0, 2), ("LOC", 3, 4)]),
    (["PER", "B-PER"], [("PER", 0, 1), ("PER", 1, 2)]),
    # nothing
    ([], []),
    (["O", "O", "O"], []),
])
def test_extract_spans(tags, spans):
    assert extract_spans(tags) == spans


def test_the_three_encodings_give_the_same_spans():
    # "John Smith met Mary in New York": PER PER, PER, LOC LOC
    iob1 = ["I-PER", "I-PER", "O", "I-PER", "O", "I-LOC", "I-LOC"]
    iob2 = ["B-PER", "I-PER", "O", "B-PER", "O", "B-LOC", "I-LOC"]
    bioes = ["B-PER", "E-PER", "O", "S-PER", "O", "B-LOC", "E-LOC"]
    expected = [("PER", 0, 2), ("PER", 3, 4), ("LOC", 5, 7)]
    assert extract_spans(iob1) == extract_spans(iob2) == extract_spans(bioes) == expected


# ---------------------------------------------------------------- span F1

def test_span_f1_exact_match():
    gold = [["B-PER", "I-PER", "O", "B-LOC"], ["O", "B-ORG"]]
    r = span_f1(gold, gold)
    assert (r["precision"], r["recall"], r["f1"]) == (1.0, 1.0, 1.0)
    assert (r["n_gold"], r["n_pred"], r["n_correct"]) == (3, 3, 3)
    assert r["per_type"]["PER"] == {"precision": 1.0, "recall": 1.0, "f1": 1.0, "support": 1}


def test_span_f1_boundary_and_type_errors():
    gold = [["B-PER", "I-PER", "O", "B-LOC", "O", "B-ORG"]]
    pred = [["B-PER", "O", "O", "B-LOC", "O", "B-MISC"]]
    # gold PER(0,2) LOC(3,4) ORG(5,6); pred PER(0,1) LOC(3,4) MISC(5,6): only LOC is correct
    r = span_f1(gold, pred)
    assert (r["n_gold"], r["n_pred"], r["n_correct"]) == (3, 3, 1)
    assert r["precision"] == pytest.approx(1 / 3)
    assert r["recall"] == pytest.approx(1 / 3)
    assert r["f1"] == pytest.approx(1 / 3)
    per = r["per_type"]
    assert list(per) == ["LOC", "MISC", "ORG", "PER"]
    assert per["LOC"] == {"precision": 1.0, "recall": 1.0, "f1": 1.0, "support": 1}
    assert per["PER"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 1}   # FP and FN
    assert per["ORG"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 1}   # never predicted
    assert per["MISC"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 0}  # only predicted


def test_span_f1_partial_overlap_is_one_false_positive_and_one_false_negative():
    r = span_f1([["B-PER", "I-PER", "I-PER"]], [["B-PER", "I-PER", "O"]])
    assert (r["n_gold"], r["n_pred"], r["n_correct"]) == (1, 1, 0)
    assert r["f1"] == 0.0
    r = span_f1([["O", "B-LOC", "I-LOC"]], [["B-LOC", "I-LOC", "I-LOC"]])
    assert (r["n_gold"], r["n_pred"], r["n_correct"]) == (1, 1, 0)


def test_span_f1_over_sentences_with_per_type_numbers():
    gold = [["B-PER", "I-PER", "O"], ["B-LOC", "O", "B-LOC"], ["O", "O"], ["B-ORG", "B-ORG"]]
    pred = [["B-PER", "I-PER", "O"], ["B-LOC", "O", "O"], ["O", "O"], ["B-ORG", "I-ORG"]]
    # gold: PER, LOC, LOC, ORG, ORG = 5; pred: PER, LOC, ORG(0,2) = 3; correct: PER, LOC = 2
    r = span_f1(gold, pred)
    assert (r["n_gold"], r["n_pred"], r["n_correct"]) == (5, 3, 2)
    assert r["precision"] == pytest.approx(2 / 3)
    assert r["recall"] == pytest.approx(2 / 5)
    assert r["f1"] == pytest.approx(2 * (2 / 3) * (2 / 5) / (2 / 3 + 2 / 5))  # 0.5
    assert r["f1"] == pytest.approx(0.5)
    per = r["per_type"]
    assert per["PER"]["f1"] == 1.0
    assert per["LOC"] == pytest.approx({"precision": 1.0, "recall": 0.5, "f1": 2 / 3, "support": 2})
    assert per["ORG"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 2}


def test_span_f1_same_span_in_another_sentence_does_not_count():
    r = span_f1([["B-PER", "O"], ["O", "O"]], [["O", "O"], ["B-PER", "O"]])
    assert r["n_correct"] == 0


def test_span_f1_iob1_gold_against_iob2_predictions():
    gold = [["I-PER", "I-PER", "B-PER", "O", "I-LOC"]]
    pred = [["B-PER", "I-PER", "B-PER", "O", "B-LOC"]]
    assert span_f1(gold, pred)["f1"] == 1.0


def test_span_f1_all_o_is_zero_without_crashing():
    r = span_f1([["O", "O"], ["O"]], [["O", "O"], ["O"]])
    assert r == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "n_gold": 0, "n_pred": 0,
                 "n_correct": 0, "per_type": {}}
    assert span_f1([], [])["f1"] == 0.0
    r = span_f1([["O", "O"]], [["B-PER", "O"]])  # only false positives
    assert (r["precision"], r["recall"], r["f1"], r["n_pred"]) == (0.0, 0.0, 0.0, 1)


def test_span_f1_rejects_mismatched_input():
    with pytest.raises(ValueError, match="2 sentences but pred has 1"):
        span_f1([["O"], ["O"]], [["O"]])
    with pytest.raises(ValueError, match="sentence 1: gold has 2 tags but pred has 1"):
        span_f1([["O"], ["O", "O"]], [["O"], ["O"]])


# ---------------------------------------------------------------- randomized

@settings(max_examples=300, deadline=None)
@given(entity_spans(), st.sampled_from(["iob1", "iob2", "bioes"]))
def test_extract_spans_recovers_random_spans(sentence, scheme):
    n, spans = sentence
    assert extract_spans(encode_spans(n, spans, scheme)) == spans


@settings(max_examples=100, deadline=None)
@given(st.lists(entity_spans(), min_size=1, max_size=5))
def test_span_f1_of_gold_against_itself_is_one(sentences):
    gold = [encode_spans(n, spans, "iob2") for n, spans in sentences]
    r = span_f1(gold, gold)
    n_spans = sum(len(spans) for _, spans in sentences)
    assert r["n_gold"] == r["n_pred"] == r["n_correct"] == n_spans
    assert r["f1"] == (1.0 if n_spans else 0.0)


# ---------------------------------------------------------------- classification

def test_classification_report_hand_computed():
    gold = ["a", "a", "a", "b", "b", "c"]
    pred = ["a", "a", "b", "b", "c", "c"]
    r = classification_report(gold, pred)
    assert r["n"] == 6
    assert r["accuracy"] == pytest.approx(4 / 6)
    # a: tp 2, predicted 2, support 3; b: tp 1, predicted 2, support 2; c: tp 1, predicted 2, support 1
    assert r["per_class"]["a"] == pytest.approx({"precision": 1.0, "recall": 2 / 3, "f1": 0.8, "support": 3})
    assert r["per_class"]["b"] == pytest.approx({"precision": 0.5, "recall": 0.5, "f1": 0.5, "support": 2})
    assert r["per_class"]["c"] == pytest.approx({"precision": 0.5, "recall": 1.0, "f1": 2 / 3, "support": 1})
    assert r["macro_f1"] == pytest.approx((0.8 + 0.5 + 2 / 3) / 3)


def test_classification_report_given_labels_and_predicted_only_labels():
    r = classification_report(["a", "a", "b", "b", "c", "c"], ["a", "a", "b", "b", "c", "c"],
                              labels=["a", "b", "c", "d"])
    assert r["per_class"]["d"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 0}
    assert r["macro_f1"] == pytest.approx(3 / 4)
    r = classification_report(["x", "x"], ["x", "y"])
    assert list(r["per_class"]) == ["x", "y"]
    assert r["per_class"]["x"] == pytest.approx({"precision": 1.0, "recall": 0.5, "f1": 2 / 3, "support": 2})
    assert r["per_class"]["y"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 0}
    assert r["macro_f1"] == pytest.approx(1 / 3)
    assert r["accuracy"] == 0.5


def test_classification_report_edge_cases():
    r = classification_report([], [])
    assert (r["accuracy"], r["macro_f1"], r["n"], r["per_class"]) == (0.0, 0.0, 0, {})
    with pytest.raises(ValueError, match="gold has 2 labels but pred has 1"):
        classification_report(["a", "b"], ["a"])


def test_format_report():
    text = format_report(classification_report(["pos", "neg", "pos"], ["pos", "pos", "pos"]))
    lines = text.splitlines()
    assert lines[0].split() == ["label", "precision", "recall", "f1", "support"]
    assert lines[1].split() == ["neg", "0.0000", "0.0000", "0.0000", "1"]
    assert lines[2].split() == ["pos", "0.6667", "1.0000", "0.8000", "2"]
    assert "accuracy 0.6667" in lines[3] and "macro-F1 0.4000" in lines[3]
    text = format_report(span_f1([["B-PER", "O", "B-LOC"]], [["B-PER", "O", "O"]]))
    lines = text.splitlines()
    assert lines[0].split()[0] == "type"
    assert lines[1].split() == ["LOC", "0.0000", "0.0000", "0.0000", "1"]
    assert lines[2].split() == ["PER", "1.0000", "1.0000", "1.0000", "1"]
    assert lines[3].split()[:5] == ["overall", "1.0000", "0.5000", "0.6667", "2"]
    assert len(lines[0]) == len(lines[1]) == len(lines[2])  # aligned columns
    with pytest.raises(ValueError):
        format_report({"f1": 1.0})
