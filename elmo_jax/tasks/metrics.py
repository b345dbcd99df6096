"""Task metrics: accuracy / per-class / macro-F1 for classification, CoNLL entity-span P/R/F1.

Pure Python (no sklearn, no seqeval) so that the numbers are exactly those of the CoNLL shared
task's `conlleval` script: an entity counts as found only if its type and both boundaries match.
"""
from __future__ import annotations

from typing import Optional, Sequence

from .tags import split_tag

Span = tuple[str, int, int]


def _prf(n_correct: int, n_pred: int, n_gold: int) -> tuple[float, float, float]:
    """Precision, recall and F1 with 0.0 for every zero division."""
    precision = n_correct / n_pred if n_pred else 0.0
    recall = n_correct / n_gold if n_gold else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return precision, recall, f1


def classification_report(gold: Sequence[str], pred: Sequence[str],
                          labels: Optional[Sequence[str]] = None) -> dict:
    """Accuracy, per-class precision/recall/F1/support and macro-F1 of predicted labels.

    Macro-F1 is the unweighted mean of the per-class F1 over `labels`, or, when not given, over
    the sorted labels that occur in `gold` or `pred` (a class that is only ever predicted counts,
    with F1 0). Accuracy is over all examples, also those whose label is not in `labels`."""
    if len(gold) != len(pred):
        raise ValueError(f"gold has {len(gold)} labels but pred has {len(pred)}")
    names = list(labels) if labels is not None else sorted(set(gold) | set(pred))
    n = len(gold)
    correct = sum(g == p for g, p in zip(gold, pred))
    per_class: dict[str, dict[str, float]] = {}
    for name in names:
        tp = sum(g == name and p == name for g, p in zip(gold, pred))
        n_pred = sum(p == name for p in pred)
        support = sum(g == name for g in gold)
        precision, recall, f1 = _prf(tp, n_pred, support)
        per_class[name] = {"precision": precision, "recall": recall, "f1": f1, "support": support}
    macro_f1 = sum(c["f1"] for c in per_class.values()) / len(per_class) if per_class else 0.0
    return {"accuracy": correct / n if n else 0.0, "macro_f1": macro_f1, "per_class": per_class, "n": n}


def _chunk_tag(tag: str) -> tuple[str, str]:
    """(prefix, type) of a tag as conlleval reads it (`tags.split_tag`, except that a tag without
    a B-/I-/E-/S- prefix, e.g. `PER`, is read as `I-PER`: conlleval's raw mode)."""
    prefix, type_ = split_tag(tag)
    return prefix or "I", type_


def _end_of_chunk(prev_tag: str, tag: str, prev_type: str, type_: str) -> bool:
    """conlleval's endOfChunk, with the IOBES extension: does a chunk end between prev and cur?"""
    if prev_tag in ("E", "S"):
        return True
    if prev_tag in ("B", "I") and tag in ("B", "S", "O"):
        return True
    return prev_tag != "O" and prev_type != type_


def _start_of_chunk(prev_tag: str, tag: str, prev_type: str, type_: str) -> bool:
    """conlleval's startOfChunk, with the IOBES extension: does a chunk start at cur?"""
    if tag in ("B", "S"):
        return True
    if prev_tag in ("E", "S", "O") and tag in ("E", "I"):
        return True
    return tag != "O" and prev_type != type_


def extract_spans(tags: Sequence[str]) -> list[Span]:
    """Entity spans `(type, start, end_exclusive)` of a tag sequence, as conlleval finds them.

    Works for IOB1, IOB2/BIO and BIOES/IOBES: a chunk starts at B-X or S-X, or at I-X/E-X after
    O, after a tag of another type, or after the end of a chunk (E-/S-); it ends before O, B-, S-
    or a tag of another type, and right after E-/S-. The sentence end closes an open chunk."""
    spans: list[Span] = []
    prev_tag, prev_type = "O", ""
    start: Optional[int] = None
    for i, tag in enumerate(tags):
        cur_tag, cur_type = _chunk_tag(tag)
        if start is not None and _end_of_chunk(prev_tag, cur_tag, prev_type, cur_type):
            spans.append((prev_type, start, i))
            start = None
        if _start_of_chunk(prev_tag, cur_tag, prev_type, cur_type):
            start = i
        prev_tag, prev_type = cur_tag, cur_type
    if start is not None:
        spans.append((prev_type, start, len(tags)))
    return spans


def span_f1(gold_seqs: Sequence[Sequence[str]], pred_seqs: Sequence[Sequence[str]]) -> dict:
    """CoNLL entity-level precision, recall and F1 (overall and per type) of predicted tags.

    A predicted span is correct only if a gold span in the same sentence has the same type and
    the same start and end; a boundary error thus counts as one false positive and one false
    negative. Without any spans every number is 0.0."""
    if len(gold_seqs) != len(pred_seqs):
        raise ValueError(f"gold has {len(gold_seqs)} sentences but pred has {len(pred_seqs)}")
    n_gold: dict[str, int] = {}
    n_pred: dict[str, int] = {}
    n_correct: dict[str, int] = {}
    for i, (gold, pred) in enumerate(zip(gold_seqs, pred_seqs)):
        if len(gold) != len(pred):
            raise ValueError(f"sentence {i}: gold has {len(gold)} tags but pred has {len(pred)}")
        gold_spans = set(extract_spans(gold))
        pred_spans = set(extract_spans(pred))
        for counts, spans in ((n_gold, gold_spans), (n_pred, pred_spans), (n_correct, gold_spans & pred_spans)):
            for type_, _, _ in spans:
                counts[type_] = counts.get(type_, 0) + 1
    per_type: dict[str, dict[str, float]] = {}
    for type_ in sorted(set(n_gold) | set(n_pred)):
        precision, recall, f1 = _prf(n_correct.get(type_, 0), n_pred.get(type_, 0), n_gold.get(type_, 0))
        per_type[type_] = {"precision": precision, "recall": recall, "f1": f1, "support": n_gold.get(type_, 0)}
    total_gold, total_pred, total_correct = sum(n_gold.values()), sum(n_pred.values()), sum(n_correct.values())
    precision, recall, f1 = _prf(total_correct, total_pred, total_gold)
    return {"precision": precision, "recall": recall, "f1": f1, "n_gold": total_gold,
            "n_pred": total_pred, "n_correct": total_correct, "per_type": per_type}


def format_report(report: dict) -> str:
    """An aligned text table of a `classification_report` or `span_f1` result: one row per class
    (or entity type) with precision, recall, F1 and support, then the overall line (and, for a
    span report with an 'accuracy', the token accuracy's line)."""
    if "per_class" in report:
        rows, first = report["per_class"], "label"
    elif "per_type" in report:
        rows, first = report["per_type"], "type"
    else:
        raise ValueError("not a classification_report or span_f1 result (no per_class / per_type)")
    width = max([len(first), len("overall")] + [len(name) for name in rows])
    lines = [f"{first:<{width}}  precision  recall      f1  support"]
    for name, r in rows.items():
        lines.append(f"{name:<{width}}  {r['precision']:9.4f}  {r['recall']:6.4f}  {r['f1']:6.4f}  {r['support']:7d}")
    if "per_class" in report:
        lines.append(f"{'overall':<{width}}  accuracy {report['accuracy']:.4f}  macro-F1 {report['macro_f1']:.4f}"
                     f"  n {report['n']}")
    else:
        lines.append(f"{'overall':<{width}}  {report['precision']:9.4f}  {report['recall']:6.4f}  {report['f1']:6.4f}"
                     f"  {report['n_gold']:7d}  (predicted {report['n_pred']}, correct {report['n_correct']})")
        if "accuracy" in report:  # a tagger's report (labels.score) adds the token accuracy
            lines.append(f"{'tokens':<{width}}  accuracy {report['accuracy']:.4f}")
    return "\n".join(lines)
