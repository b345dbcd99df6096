"""Readers and writers for the downstream task data: sentence classification and CoNLL tagging.

Files are parsed line by line here (not by `datasets.load_dataset`) so that every problem is an
`InputError` naming the file and the line; the parsed columns become a `datasets.Dataset`.

- Classification (`read_classification`): JSONL (`{"text": ..., "label": ...}` per line) or TSV
  (`text<TAB>label`, optionally under a header line naming the columns). Columns: `tokens`
  (list of str, whitespace tokenization) and `label` (str, "" when absent and not required).
- Tagging (`read_conll`): CoNLL-2003 (`token POS chunk NER` per line, blank lines between
  sentences, `-DOCSTART-` lines skipped). Columns: `tokens` and `tags` (lists of str).
"""
from __future__ import annotations

import json
import os
import re
from typing import Any, Iterable, Iterator, Optional, Sequence

import datasets
import numpy as np

from ..errors import InputError
from ..io_utils import atomic_write_text, read_json_objects, read_lines

CLASSIFICATION_FORMATS = {".jsonl": "jsonl", ".json": "jsonl", ".tsv": "tsv", ".txt": "tsv"}
TEXT_FIELD_ALIAS = "sentence"
DOCSTART = "-DOCSTART-"

# `datasets.List` is new in datasets 4.0; `Sequence` is the older spelling (as in elmo_jax/data.py).
_STRINGS = (getattr(datasets, "List", None) or datasets.Sequence)(datasets.Value("string"))
_CONLL_SPLIT = re.compile(r"[ \t]+")


def _numbered_lines(path: str) -> Iterator[tuple[int, str]]:
    """(line number, line) of a UTF-8 file, without a leading byte-order mark."""
    for lineno, line in enumerate(read_lines(path), start=1):
        yield lineno, line.lstrip("\ufeff") if lineno == 1 else line


def _label(value: Any, lineno: int, path: str, require: bool) -> str:
    """A label as str (ints converted); "" for a missing one unless `require`."""
    if value is None or (isinstance(value, str) and not value.strip()):
        if require:
            raise InputError(f"line {lineno}: missing label", path)
        return ""
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise InputError(f"line {lineno}: label must be a string or an integer, got {type(value).__name__}", path)
    return str(value).strip()


def _tokens(value: Any, lineno: int, path: str, lowercase: bool) -> list[str]:
    """Whitespace tokens of a text string, or a given token list; at least one token."""
    if isinstance(value, str):
        tokens = value.split()
    elif isinstance(value, list):
        bad = [t for t in value if not isinstance(t, str) or not t.strip()]
        if bad:
            raise InputError(f"line {lineno}: text list has a non-string or empty token: {bad[0]!r}", path)
        tokens = list(value)
    else:
        raise InputError(f"line {lineno}: text must be a string or a list of token strings, "
                         f"got {type(value).__name__}", path)
    if not tokens:
        raise InputError(f"line {lineno}: empty text (no tokens)", path)
    return [t.lower() for t in tokens] if lowercase else tokens


def _json_examples(path: str, text_field: str, label_field: str, require_labels: bool,
                   lowercase: bool) -> Iterator[tuple[list[str], str, int]]:
    for lineno, obj in read_json_objects(path):
        key = text_field if text_field in obj else TEXT_FIELD_ALIAS if TEXT_FIELD_ALIAS in obj else None
        if key is None:
            raise InputError(f"line {lineno}: missing text field {text_field!r}", path)
        if require_labels and label_field not in obj:
            raise InputError(f"line {lineno}: missing label field {label_field!r}", path)
        yield (_tokens(obj[key], lineno, path, lowercase), _label(obj.get(label_field), lineno, path, require_labels),
               lineno)


def _is_header(names: Sequence[str], text_field: str, label_field: str) -> bool:
    """A TSV's first line is a header when one of its fields is a column name: the text or label
    field asked for, "sentence", or the default names "text" and "label" (so a header that names
    its columns differently from the fields asked for is an error, not a line of data)."""
    return bool({text_field, label_field, TEXT_FIELD_ALIAS, "text", "label"} & set(names))


def _tsv_examples(path: str, text_field: str, label_field: str, require_labels: bool,
                  lowercase: bool) -> Iterator[tuple[list[str], str, int]]:
    text_col, label_col, n_cols = 0, 1, None  # no header: `text<TAB>label` (or `text`)
    first = True
    for lineno, line in _numbered_lines(path):
        if not line.strip():
            continue
        fields = line.split("\t")
        if first:
            first = False
            names = [f.strip() for f in fields]
            if _is_header(names, text_field, label_field):
                columns = ", ".join(map(repr, names))
                text_name = next((n for n in (text_field, TEXT_FIELD_ALIAS) if n in names), None)
                if text_name is None:
                    raise InputError(f"line {lineno}: the header has no text column {text_field!r} "
                                     f"(its columns: {columns})", path)
                if require_labels and label_field not in names:
                    raise InputError(f"line {lineno}: the header has no label column {label_field!r} "
                                     f"(its columns: {columns})", path)
                text_col, n_cols = names.index(text_name), len(names)
                label_col = names.index(label_field) if label_field in names else None
                continue
        if n_cols is not None:
            if len(fields) != n_cols:
                raise InputError(f"line {lineno}: expected {n_cols} tab-separated columns (as in the header), "
                                 f"found {len(fields)}", path)
        elif len(fields) != 2 and not (len(fields) == 1 and not require_labels):
            raise InputError(f"line {lineno}: expected 2 tab-separated columns (text<TAB>label), "
                             f"found {len(fields)}", path)
        label = fields[label_col] if label_col is not None and label_col < len(fields) else None
        yield _tokens(fields[text_col], lineno, path, lowercase), _label(label, lineno, path, require_labels), lineno


def _check_input_file(path: str) -> None:
    """A missing input or a directory is reported as such (before its extension is looked at)."""
    if os.path.isdir(path):
        raise InputError("is a directory, expected a data file", path)
    if not os.path.exists(path):
        raise InputError("input file not found", path)


def read_classification(path: os.PathLike | str, text_field: str = "text", label_field: str = "label",
                        require_labels: bool = True, lowercase: bool = False,
                        with_lines: bool = False) -> datasets.Dataset:
    """Read a sentence classification file into a Dataset with columns `tokens` and `label`
    (and, `with_lines`, `line`: the line number of each example).

    The format follows the extension: `.jsonl`/`.json` (one JSON object per line, blank lines
    skipped; the text is a string split on whitespace or a list of tokens) or `.tsv`/`.txt`
    (`text<TAB>label` per line, or columns named by a header line). The first line of a TSV is a
    header when one of its fields is `text_field`, `label_field`, "sentence", "text" or "label";
    the header must then name the text column (`text_field`, or "sentence") and, when labels are
    required, `label_field`, else it is an InputError listing its columns. Integer labels become
    strings. With `require_labels=False` a missing label is "" (and a TSV line may be the text
    alone)."""
    path = os.fspath(path)
    _check_input_file(path)
    ext = os.path.splitext(path)[1].lower()
    kind = CLASSIFICATION_FORMATS.get(ext)
    if kind is None:
        raise InputError(f"unsupported classification file extension {ext or '(none)'!r}; "
                         f"supported: {', '.join(CLASSIFICATION_FORMATS)}", path)
    reader = _json_examples if kind == "jsonl" else _tsv_examples
    tokens, labels, lines = [], [], []
    for toks, label, lineno in reader(path, text_field, label_field, require_labels, lowercase):
        tokens.append(toks)
        labels.append(label)
        lines.append(lineno)
    if not tokens:
        raise InputError("no examples found (empty file)", path)
    columns: dict[str, Any] = {"tokens": _STRINGS, "label": datasets.Value("string")}
    values: dict[str, list] = {"tokens": tokens, "label": labels}
    if with_lines:
        columns["line"], values["line"] = datasets.Value("int64"), lines
    return datasets.Dataset.from_dict(values, features=datasets.Features(columns))


def read_conll(path: os.PathLike | str, token_column: int = 0, tag_column: int = -1,
               require_tags: bool = True, with_lines: bool = False) -> datasets.Dataset:
    """Read a CoNLL-2003 style file into a Dataset with columns `tokens` and `tags` (and,
    `with_lines`, `line`: the line number of each sentence's first token; its tokens are the
    lines that follow).

    Columns are separated by spaces or tabs and every line must have the same number of them;
    sentences are separated by blank lines; `-DOCSTART-` lines are skipped and end a sentence.
    Column indices may be negative (-1 = last). With `require_tags=False` a file without a tag
    column (one where `tag_column` is missing or is the token column, e.g. 1 column) is read with
    every tag "" (same length as the tokens, so the two columns stay aligned); with
    `require_tags=True` such a file is an InputError."""
    path = os.fspath(path)
    sentences: list[list[str]] = []
    tag_seqs: list[list[str]] = []
    starts: list[int] = []
    tokens: list[str] = []
    tags: list[str] = []
    n_cols: Optional[int] = None
    first_line = 0
    start = 0  # the line of the current sentence's first token
    has_tags = True

    def flush() -> None:
        if tokens:
            starts.append(start)
            sentences.append(list(tokens))
            tag_seqs.append(list(tags))
            tokens.clear()
            tags.clear()

    for lineno, line in _numbered_lines(path):
        stripped = line.strip(" \t")
        if not stripped:
            flush()
            continue
        fields = _CONLL_SPLIT.split(stripped)
        if fields[0] == DOCSTART:
            flush()
            continue
        if n_cols is None:
            n_cols, first_line = len(fields), lineno
            if not -n_cols <= token_column < n_cols:
                raise InputError(f"line {lineno}: {n_cols} column(s), too few for token_column {token_column}", path)
            has_tags = -n_cols <= tag_column < n_cols and tag_column % n_cols != token_column % n_cols
            if not has_tags and require_tags:
                raise InputError(f"line {lineno}: {n_cols} column(s), no tag column {tag_column} besides the "
                                 f"token column {token_column}", path)
        elif len(fields) != n_cols:
            raise InputError(f"line {lineno}: {len(fields)} columns, but line {first_line} has {n_cols}", path)
        if not tokens:
            start = lineno
        tokens.append(fields[token_column])
        tags.append(fields[tag_column] if has_tags else "")
    flush()
    if not sentences:
        raise InputError("no sentences found (empty file)", path)
    columns: dict[str, Any] = {"tokens": _STRINGS, "tags": _STRINGS}
    values: dict[str, list] = {"tokens": sentences, "tags": tag_seqs}
    if with_lines:
        columns["line"], values["line"] = datasets.Value("int64"), starts
    return datasets.Dataset.from_dict(values, features=datasets.Features(columns))


def label_set(values: Iterable[str]) -> list[str]:
    """The sorted unique labels."""
    return sorted(set(values))


def tag_set(tag_seqs: Iterable[Sequence[str]]) -> list[str]:
    """The unique tags, "O" first (if present) then sorted, so "O" gets id 0."""
    tags = {t for seq in tag_seqs for t in seq}
    return (["O"] if "O" in tags else []) + sorted(tags - {"O"})


def _check_fields(values: Sequence[str], what: str, index: int) -> None:
    """A CoNLL field must be non-empty and without whitespace, or the file would not read back."""
    for v in values:
        if not isinstance(v, str) or not v or len(v.split()) != 1 or v != v.strip():
            raise ValueError(f"sentence {index}: {what} {v!r} is empty or contains whitespace")


def write_conll_predictions(path: os.PathLike | str, tokens_list: Sequence[Sequence[str]],
                            predicted: Sequence[Sequence[str]],
                            gold: Optional[Sequence[Sequence[str]]] = None) -> None:
    """Write `token [gold] pred` lines, a blank line after each sentence (atomically).

    The file reads back with `read_conll` (tag_column=-1 is the prediction, -2 the gold), and is
    the input format of conlleval when gold is given."""
    if len(predicted) != len(tokens_list) or (gold is not None and len(gold) != len(tokens_list)):
        raise ValueError(f"{len(tokens_list)} sentences of tokens but {len(predicted)} of predictions"
                         + (f" and {len(gold)} of gold tags" if gold is not None else ""))
    lines: list[str] = []
    for i, (toks, pred) in enumerate(zip(tokens_list, predicted)):
        columns = [toks] + ([gold[i]] if gold is not None else []) + [pred]
        if not toks:
            raise ValueError(f"sentence {i} is empty")
        if any(len(c) != len(toks) for c in columns):
            raise ValueError(f"sentence {i}: {len(toks)} tokens but {[len(c) for c in columns[1:]]} tags")
        for what, column in zip(("token", "tag", "tag"), columns):
            _check_fields(column, what, i)
        lines.extend(" ".join(row) for row in zip(*columns))
        lines.append("")
    atomic_write_text(path, "".join(line + "\n" for line in lines))


def write_classification_predictions(path: os.PathLike | str, tokens_list: Sequence[Sequence[str]],
                                     labels: Sequence[str], probabilities: Optional[Any] = None,
                                     label_names: Optional[Sequence[str]] = None,
                                     gold: Optional[Sequence[str]] = None) -> None:
    """Write one JSON object per example (atomically): `{"text", "label", "probabilities",
    "gold"}`, the last two only when given. `probabilities` is `[N, C]` with columns named by
    `label_names`. The file reads back with `read_classification` (label = the prediction)."""
    n = len(tokens_list)
    if len(labels) != n or (gold is not None and len(gold) != n):
        raise ValueError(f"{n} examples but {len(labels)} labels" + (f" and {len(gold)} gold labels" if gold is not None else ""))
    probs = None
    if probabilities is not None:
        probs = np.asarray(probabilities, dtype=np.float64)
        if label_names is None:
            raise ValueError("label_names are needed to write probabilities")
        if probs.shape != (n, len(label_names)):
            raise ValueError(f"probabilities must have shape [{n}, {len(label_names)}], got {probs.shape}")
    out = []
    for i, toks in enumerate(tokens_list):
        record: dict[str, Any] = {"text": " ".join(toks), "label": labels[i]}
        if probs is not None:
            record["probabilities"] = {name: float(p) for name, p in zip(label_names, probs[i])}
        if gold is not None:
            record["gold"] = gold[i]
        out.append(json.dumps(record, ensure_ascii=False) + "\n")
    atomic_write_text(path, "".join(out))
