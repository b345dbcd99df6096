"""GloVe-style static word vectors: a reader for the text format, id / embedding-table lookup, and
the initial word table of a biLM.

The ELMo papers' task models concatenate ELMo with GloVe vectors; this module gives those
vectors an id space with 0 = padding and 1 = out-of-vocabulary, so a `[N+2, D]` table from
`WordVectors.table` can be used directly as a frozen embedding.

A biLM can start from GloVe too (`initial_word_table`): a word-input biLM's token embedding
[n_tokens_vocab, P], or a char model's word channel [n_tokens_vocab, D_w]. When the file's
dimension D differs from the target, `projection` maps it: "pca" (the top principal components
of the vectors found, centred; only to fewer dimensions) or "random" (a fixed Gaussian random
projection, N(0, 1/dim) entries, which keeps lengths in expectation). The table is then scaled
to a root-mean-square row length of 1 (GloVe's lengths are ~5; the biLM's initial token vectors
are far smaller); words without a vector get random rows of the same scale.
"""
from __future__ import annotations

import dataclasses
import os
import re
from typing import Iterable, Optional, Sequence

import numpy as np

from .errors import InputError
from .io_utils import read_lines

PAD_ID = 0
OOV_ID = 1
OOV_MODES = ("zero", "mean", "random")

# A field that looks like a real number of a vector (decimal point or exponent). Extra fields of
# this shape before the last D values mean a ragged line, not a word that contains spaces.
_REAL_NUMBER = re.compile(r"^[-+]?(\d*\.\d+|\d+\.\d*)([eE][-+]?\d+)?$|^[-+]?\d+[eE][-+]?\d+$")


@dataclasses.dataclass
class WordVectors:
    """Words and their vectors (`vectors[i]` is `words[i]`'s, float32 `[N, D]`).

    With `lowercase=True` the words are lower-case and tokens are lower-cased before lookup."""

    words: list[str]
    vectors: np.ndarray
    lowercase: bool = False
    _index: dict[str, int] = dataclasses.field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        self.vectors = np.asarray(self.vectors, dtype=np.float32)
        if self.vectors.ndim != 2 or self.vectors.shape[0] != len(self.words):
            raise ValueError(f"vectors must have shape [{len(self.words)}, D], got {self.vectors.shape}")
        self._index = {}
        for i, word in enumerate(self.words):
            self._index.setdefault(word, i)

    @property
    def dim(self) -> int:
        """The vector dimension D."""
        return int(self.vectors.shape[1])

    def __len__(self) -> int:
        return len(self.words)

    def _lookup(self, token: str) -> Optional[int]:
        """Index of `token` in `words` (exact, then lower-cased unless lowercase=True), or None."""
        if self.lowercase:
            return self._index.get(token.lower())
        i = self._index.get(token)
        return self._index.get(token.lower()) if i is None else i

    def ids(self, tokens: Sequence[str]) -> np.ndarray:
        """int32 ids of `tokens` in `table()`: `i + 2` for `words[i]`, 1 for an unknown token
        (0 is padding and never returned)."""
        out = np.empty(len(tokens), dtype=np.int32)
        for k, token in enumerate(tokens):
            i = self._lookup(token)
            out[k] = OOV_ID if i is None else i + 2
        return out

    def table(self, oov: str = "zero", seed: int = 0) -> np.ndarray:
        """The float32 `[N+2, D]` embedding table for `ids`: row 0 zeros (padding), row 1 the
        OOV vector, rows 2.. the word vectors.

        `oov`: "zero" (zeros), "mean" (mean of all vectors), or "random" (normal with the
        vectors' overall standard deviation, or 1/sqrt(D) without vectors, drawn with `seed`)."""
        if oov not in OOV_MODES:
            raise ValueError(f"oov must be one of {', '.join(OOV_MODES)}, got {oov!r}")
        table = np.zeros((len(self.words) + 2, self.dim), dtype=np.float32)
        table[2:] = self.vectors
        if oov == "mean" and len(self.words):
            table[OOV_ID] = self.vectors.mean(axis=0)
        elif oov == "random":
            std = float(self.vectors.std()) if self.vectors.size else 1.0 / np.sqrt(max(self.dim, 1))
            table[OOV_ID] = np.random.default_rng(seed).normal(0.0, std, self.dim)
        return table

    def coverage(self, tokens: Iterable[str]) -> float:
        """Fraction of `tokens` (counted with repeats) that have a vector; 0.0 for no tokens."""
        found = total = 0
        for token in tokens:
            total += 1
            found += self._lookup(token) is not None
        return found / total if total else 0.0


def _parse_values(fields: list[str], lineno: int, path: str) -> np.ndarray:
    """The float32 vector of `fields`, or InputError naming the first bad value."""
    try:
        values = np.array([float(x) for x in fields], dtype=np.float32)
    except ValueError:
        bad = next(x for x in fields if not _is_float(x))
        raise InputError(f"line {lineno}: value {bad!r} is not a number", path)
    if not np.all(np.isfinite(values)):
        raise InputError(f"line {lineno}: vector has a non-finite value (nan or inf)", path)
    return values


def _is_float(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _header_dim(fields: list[str]) -> Optional[int]:
    """D of a word2vec text header `N D` (two ints), else None."""
    if len(fields) == 2 and all(re.fullmatch(r"\d+", f) for f in fields):
        return int(fields[1])
    return None


def read_glove(path: os.PathLike | str, lowercase: bool = False, vocab: Optional[Iterable[str]] = None,
               max_words: Optional[int] = None) -> WordVectors:
    """Read GloVe / word2vec text vectors: one `word v1 ... vD` per line, space separated.

    - The dimension D is that of a word2vec header line `N D` when present (checked against the
      vectors), else that of the first vector line.
    - A word may contain spaces (GloVe 840B has some): the last D fields are the values. Extra
      fields that look like real numbers (e.g. `0.25`) mean a ragged line and an InputError.
    - Duplicate words keep their first vector; with `lowercase=True` words are lower-cased first.
    - `vocab` keeps only those words (compared lower-cased with `lowercase=True`; otherwise a
      word is also kept when it is the lower-cased form of a vocab token, as `ids` falls back to
      it); values of skipped lines are not parsed, which keeps large files fast and small.
    - `max_words` stops after that many vector lines (the header is not counted)."""
    path = os.fspath(path)
    keep: Optional[set[str]] = None
    if vocab is not None:
        vocab = list(vocab)
        keep = {w.lower() for w in vocab} if lowercase else set(vocab) | {w.lower() for w in vocab}
    words: list[str] = []
    rows: list[np.ndarray] = []
    seen: set[str] = set()
    dim: Optional[int] = None
    header_dim: Optional[int] = None
    n_lines = 0
    for lineno, line in enumerate(read_lines(path), start=1):
        if lineno == 1:
            line = line.lstrip("\ufeff")
        line = line.rstrip()
        if not line:
            continue
        fields = line.split(" ")
        if lineno == 1 and _header_dim(fields) is not None:
            header_dim = _header_dim(fields)
            if header_dim == 0:
                raise InputError("line 1: the header gives dimension 0", path)
            continue
        if max_words is not None and n_lines >= max_words:
            break
        n_lines += 1
        if dim is None:
            dim = header_dim if header_dim is not None else len(fields) - 1
            if dim < 1:
                raise InputError(f"line {lineno}: a word without vector values", path)
        n_values = len(fields) - 1
        if n_values < dim or (n_values > dim and any(_REAL_NUMBER.match(f) for f in fields[1:-dim])):
            expected = f"{dim} (from the header on line 1)" if header_dim is not None else f"{dim} (as on the first line)"
            raise InputError(f"line {lineno}: ragged line: {n_values} values, expected {expected}", path)
        word = " ".join(fields[:-dim])
        if lowercase:
            word = word.lower()
        if word in seen or (keep is not None and word not in keep):
            continue
        seen.add(word)
        words.append(word)
        rows.append(_parse_values(fields[-dim:], lineno, path))
    if dim is None:
        raise InputError("no word vectors found (empty file)", path)
    vectors = np.stack(rows) if rows else np.zeros((0, dim), dtype=np.float32)
    return WordVectors(words=words, vectors=vectors, lowercase=lowercase)


PROJECTIONS = ("none", "pca", "random")


def project_vectors(vectors: np.ndarray, dim: int, projection: str, seed: int = 0) -> np.ndarray:
    """[N, D] -> [N, dim] by `projection` ("none" needs D == dim; "pca" needs dim <= D)."""
    n, d = vectors.shape
    if d == dim:
        return vectors.astype(np.float32)
    if projection == "pca":
        if dim > d:
            raise ValueError(f"PCA cannot map {d} dimensions to more ({dim}); use the random projection")
        centred = vectors.astype(np.float64) - vectors.mean(axis=0)
        _, _, vt = np.linalg.svd(centred, full_matrices=False)
        return (centred @ vt[:dim].T).astype(np.float32)
    if projection == "random":
        proj = np.random.default_rng([seed, 7]).normal(0.0, 1.0 / np.sqrt(dim), (d, dim))
        return (vectors.astype(np.float64) @ proj).astype(np.float32)
    raise ValueError(f"dimension {d} differs from {dim} and the projection is {projection!r}")


def initial_word_table(path: os.PathLike | str, words: Sequence[str], rows: int, dim: int, *,
                       projection: str = "none", seed: int = 0, what: str = "lstm.projection_dim"
                       ) -> tuple[np.ndarray, dict]:
    """The initial word table [rows, dim] (float32) of `words` (row i = words[i]) from a GloVe
    text file: vectors by exact word, else lower-cased; projected (see the module docstring);
    scaled to RMS row length 1; other rows random at that scale (drawn with `seed`).

    Raises `InputError` naming the file when its dimension differs from `dim` and `projection`
    is "none" (`what` names the option that sets `dim`). Returns (table, stats) with stats
    {'found': words with a vector, 'words': len(words), 'file_dim': D, 'projection': ...}."""
    if projection not in PROJECTIONS:
        raise ValueError(f"projection must be one of {PROJECTIONS}, got {projection!r}")
    vectors = read_glove(path, vocab=words)
    if vectors.dim != dim and projection == "none":
        raise InputError(f"the word vectors have dimension {vectors.dim}, but {what} is {dim}: set "
                         "word_vectors_projection to pca or random (or use vectors of that size)", path)
    if projection == "pca" and vectors.dim < dim:
        raise InputError(f"the word vectors have dimension {vectors.dim}: PCA cannot make {dim} of them "
                         "(use word_vectors_projection random)", path)
    found = [(i, vectors._lookup(w)) for i, w in enumerate(words)]
    found = [(i, j) for i, j in found if j is not None]
    rng = np.random.default_rng([seed, 11])
    table = rng.normal(0.0, 1.0 / np.sqrt(dim), (rows, dim)).astype(np.float32)  # RMS row length ~1
    if found:
        rows_found = np.array([i for i, _ in found])
        mapped = project_vectors(vectors.vectors, dim, projection, seed)[[j for _, j in found]]
        rms = float(np.sqrt(np.mean(np.sum(mapped.astype(np.float64) ** 2, axis=1))))
        table[rows_found] = mapped / max(rms, 1e-12)
    return table, {"found": len(found), "words": len(words), "file_dim": vectors.dim,
                   "projection": projection if vectors.dim != dim else "none"}
