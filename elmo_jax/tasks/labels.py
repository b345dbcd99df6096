"""Gold labels of task files, in the model's view, and scores of predictions against them.

Tag schemes: a tagger whose training file is IOB1 trains on the same entities in IOB2 (labels.json
lists the IOB2 tags, so that the CRF constraints know where an entity starts), and
tag_scheme.json records the training file's scheme. Predictions go out in the scheme of the file
they are for (read from its tags; the training file's scheme when they tell nothing), and
evaluation compares them with the file's own tags. A model directory without tag_scheme.json
(written before) converts nothing.
"""
from __future__ import annotations

import dataclasses
import os
from typing import Optional, Sequence

import numpy as np

from ..errors import InputError
from .config import TaskConfig
from .data import label_set, read_classification, read_conll, tag_set
from .metrics import classification_report, span_f1
from .tags import convert_all, convertible, detect_scheme, internal_scheme


@dataclasses.dataclass
class TaskData:
    """Sentences of one file with their gold labels (classify: one per sentence; tag: one per token)."""

    path: str
    tokens: list[list[str]]
    labels: Optional[list]  # None when the file has no labels
    scheme: Optional[str] = None  # tag: IOB1 | IOB2 | BIOES of `labels` (None: no labels, or no entity)
    lines: Optional[list[int]] = None  # line number of each example (tag: of each sentence's first token)


def read_task_file(cfg: TaskConfig, path: str, require_labels: bool = True) -> TaskData:
    scheme = None
    if cfg.task == "classify":
        ds = read_classification(path, cfg.text_field, cfg.label_field, require_labels=require_labels,
                                 with_lines=True)
        labels = list(ds["label"])
        has = all(label != "" for label in labels)
    else:
        ds = read_conll(path, cfg.token_column, cfg.tag_column, require_tags=require_labels, with_lines=True)
        labels = [list(t) for t in ds["tags"]]
        has = all(len(t) == len(s) and all(t) for t, s in zip(labels, ds["tokens"]))  # "" = no tag column
        scheme = detect_scheme(labels) if has else None
    return TaskData(os.fspath(path), [list(s) for s in ds["tokens"]], labels if has else None, scheme,
                    [int(n) for n in ds["line"]])


def from_model_tags(tag_seqs: Sequence[Sequence[str]], scheme: Optional[str], target: Optional[str]) -> list:
    """The predicted tags of a model trained on a file in `scheme` (IOB2 labels for IOB1) in
    scheme `target` (IOB2 -> IOB1); anything else unchanged. The inverse of `model_view`."""
    source = internal_scheme(scheme)
    return convert_all(tag_seqs, source, target) if convertible(source, target) else list(tag_seqs)


def output_scheme(data: TaskData, scheme: Optional[str]) -> Optional[str]:
    """The scheme predictions for `data` are written in: its own tags', else the training file's."""
    return data.scheme or scheme


def model_view(data: TaskData, scheme: Optional[str]) -> TaskData:
    """`data` with its tags as the labels of a model trained on a file in `scheme`: IOB1 -> IOB2
    when both are IOB1 or IOB2 (`data`'s own scheme, else `scheme`); anything else (BIOES,
    classification, no labels) unchanged."""
    source, target = output_scheme(data, scheme), internal_scheme(scheme)
    if data.labels is None or source == target or not convertible(source, target):
        return data
    return dataclasses.replace(data, labels=convert_all(data.labels, source, target), scheme=target)


def label_names(cfg: TaskConfig, train: TaskData) -> list[str]:
    return label_set(train.labels) if cfg.task == "classify" else tag_set(train.labels)


def check_labels(cfg: TaskConfig, data: TaskData, names: Sequence[str]) -> None:
    """Every gold label of `data` must be one the model knows (from the training file); the
    error names each unknown one with the line of its first occurrence (when `data.lines` is known)."""
    known = set(names)
    first: dict[str, Optional[int]] = {}  # unknown label -> its first line
    for i, gold in enumerate(data.labels):
        line = data.lines[i] if data.lines is not None else None
        for j, label in enumerate([gold] if cfg.task == "classify" else gold):
            if label not in known and label not in first:
                first[label] = None if line is None else line + j  # a sentence's tokens are consecutive lines
    if first:
        what = "label" if cfg.task == "classify" else "tag"
        unknown = sorted(first)
        shown = ", ".join(f"{u!r}" + (f" (line {first[u]})" if first[u] is not None else "") for u in unknown[:10])
        more = f" and {len(unknown) - 10} more" if len(unknown) > 10 else ""
        raise InputError(f"{what}(s) {shown}{more} do not occur in the training data "
                         f"(known: {', '.join(names)})", data.path)


def label_arrays(cfg: TaskConfig, labels: Sequence, index: dict[str, int], rows: int, length: int) -> dict:
    """Gold labels padded to the batch: classify {'labels' [rows], 'weights' [rows]}, tag {'tags' [rows, T-2]}."""
    if cfg.task == "classify":
        ids = np.zeros(rows, np.int32)
        weights = np.zeros(rows, np.float32)
        for r, label in enumerate(labels):
            ids[r], weights[r] = index[label], 1.0
        return {"labels": ids, "weights": weights}
    tags = np.zeros((rows, length - 2), np.int32)
    for r, seq in enumerate(labels):
        tags[r, :len(seq)] = [index[t] for t in seq]
    return {"tags": tags}


def score(cfg: TaskConfig, data: TaskData, outputs: list, names: Sequence[str], scheme: Optional[str] = None) -> dict:
    """Metrics of predictions against `data`'s gold labels (the report the CLI prints); tag:
    the predictions in `data`'s own scheme (`scheme`: the training file's, see `from_model_tags`)."""
    if cfg.task == "classify":
        pred = [names[int(np.argmax(p))] for p in outputs]
        return classification_report(data.labels, pred, list(names))
    pred = from_model_tags([[names[int(t)] for t in seq] for seq in outputs], scheme, output_scheme(data, scheme))
    report = span_f1(data.labels, pred)
    gold_flat = [t for s in data.labels for t in s]
    pred_flat = [t for s in pred for t in s]
    report["accuracy"] = float(np.mean([g == p for g, p in zip(gold_flat, pred_flat)])) if gold_flat else 0.0
    return report


def selection_value(cfg: TaskConfig, report: dict) -> float:
    metric = cfg.selection_metric
    return float(report["f1"] if metric == "span_f1" else report[metric])
