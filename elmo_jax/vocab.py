"""Word vocabulary in the bilm-tf format, corpus token counting, and corpus file globs.

A vocabulary file is UTF-8 text with one word per line: `<S>`, `</S>`, `<UNK>` first, then the
corpus words by descending frequency (ties broken by the word itself, so a build is
deterministic). The frequency order matters: the log-uniform candidate sampler of the sampled
softmax assumes that smaller ids are more frequent.
"""
from __future__ import annotations

import collections
import glob
import os
from typing import Iterable, Optional, Sequence

from .errors import ElmoError, InputError
from .io_utils import atomic_write_text, read_lines
from .tokenize import Tokenizer, split_text

BOS_WORD = "<S>"
EOS_WORD = "</S>"
UNK_WORD = "<UNK>"
SPECIAL_WORDS = (BOS_WORD, EOS_WORD, UNK_WORD)


class VocabError(ElmoError):
    """A vocabulary file that is missing, empty, or not in the bilm-tf format."""


class Vocabulary:
    """Word <-> id map; `<S>`, `</S>` and `<UNK>` must be present (bilm-tf puts them first)."""

    def __init__(self, words: Sequence[str], source: Optional[str] = None):
        words = list(words)
        if not words:
            raise VocabError("the vocabulary is empty", source)
        if not all(isinstance(w, str) for w in words):
            raise VocabError("vocabulary entries must be str", source)
        index = dict(zip(words, range(len(words))))
        if len(index) != len(words) or len(" ".join(words).split()) != len(words):
            _raise_first_bad_word(words, source, first=0, what="entry")
        self._setup(words, index, source)

    def _setup(self, words: list[str], index: dict[str, int], source: Optional[str]) -> None:
        missing = [w for w in SPECIAL_WORDS if w not in index]
        if missing:
            raise VocabError(f"the vocabulary lacks {', '.join(missing)} (a bilm-tf vocabulary starts "
                             "with <S>, </S>, <UNK>; rebuild it with `elmo-jax build-vocab`)", source)
        self.source = source
        self._words = words
        self._index = index
        self.bos_id = index[BOS_WORD]
        self.eos_id = index[EOS_WORD]
        self.unk_id = index[UNK_WORD]

    # ------------------------------------------------------------------ access
    @property
    def words(self) -> list[str]:
        """All words in id order (a copy)."""
        return list(self._words)

    def __len__(self) -> int:
        return len(self._words)

    def __contains__(self, word: object) -> bool:
        return word in self._index

    def word_to_id(self, word: str) -> int:
        """Id of `word`; out-of-vocabulary words map to `<UNK>`."""
        return self._index.get(word, self.unk_id)

    def id_to_word(self, i: int) -> str:
        return self._words[i]

    def index(self) -> dict[str, int]:
        """The word -> id dict itself (read-only by convention; for fast bulk lookups)."""
        return self._index

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Vocabulary) and self._words == other._words

    def __repr__(self) -> str:
        return f"Vocabulary({len(self)} words{', from ' + self.source if self.source else ''})"

    # ------------------------------------------------------------------ files
    @classmethod
    def from_file(cls, path: os.PathLike | str) -> "Vocabulary":
        """Read and validate a bilm-tf vocabulary file (strict UTF-8; errors name file and line)."""
        path = os.fspath(path)
        if not os.path.exists(path):
            raise VocabError("vocabulary file not found", path)
        if os.path.isdir(path):
            raise VocabError("is a directory, expected a vocabulary file (one word per line)", path)
        words = [line.strip() for line in _read_text_lines(path)]
        while words and not words[-1]:
            words.pop()  # trailing blank lines are harmless
        if not words:
            raise VocabError("the vocabulary file is empty", path)
        index = dict(zip(words, range(len(words))))
        if len(index) != len(words) or len(" ".join(words).split()) != len(words):
            _raise_first_bad_word(words, path, first=1, what="line")
        vocab = cls.__new__(cls)
        vocab._setup(words, index, path)
        return vocab

    def save(self, path: os.PathLike | str) -> None:
        """Write one word per line, atomically (an existing file is replaced only on success)."""
        atomic_write_text(path, "".join(w + "\n" for w in self._words))


def _raise_first_bad_word(words: list[str], source: Optional[str], first: int, what: str) -> None:
    """Raise a `VocabError` for the first blank, multi-word or duplicate entry (slow path)."""
    seen: dict[str, int] = {}
    for i, word in enumerate(words, start=first):
        if not word or word != word.strip():
            raise VocabError(f"{what} {i} is blank or padded with spaces (one word per line expected)", source)
        if len(word.split()) != 1:
            raise VocabError(f"{what} {i} holds more than one word ({word!r}); the bilm-tf format is one "
                             "word per line, without counts", source)
        if word in seen:
            raise VocabError(f"duplicate word {word!r} on {what} {i} (first on {what} {seen[word]})", source)
        seen[word] = i
    raise AssertionError("no bad word found")  # pragma: no cover


def _read_text_lines(path: str) -> list[str]:
    """All lines of a UTF-8 file (one decode of the whole file; `read_lines` names the bad line)."""
    try:
        with open(path, "rb") as fh:
            data = fh.read()
    except OSError as e:
        raise VocabError(f"cannot read vocabulary file ({e.strerror or e})", path)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        for _ in read_lines(path):  # raises InputError naming the file and line
            pass
        raise
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    return lines


# ---------------------------------------------------------------------- corpus files
def resolve_files(pattern: str | os.PathLike | Sequence[str]) -> list[str]:
    """Sorted regular files matching a glob (or each glob of a list); `~` is expanded.

    Raises `InputError` naming the pattern when nothing matches and naming the file when a
    matched file is empty (0 bytes), so a bad corpus fails before any compute."""
    patterns = [os.fspath(pattern)] if isinstance(pattern, (str, os.PathLike)) else [os.fspath(p) for p in pattern]
    if not patterns:
        raise InputError("no corpus files given (empty list of patterns)")
    files: set[str] = set()
    for pat in patterns:
        matched = [f for f in glob.glob(os.path.expanduser(pat), recursive=True) if os.path.isfile(f)]
        if not matched:
            if os.path.isdir(os.path.expanduser(pat)):
                raise InputError(f"'{pat}' is a directory: give a glob of its files, e.g. '{os.path.join(pat, '*.txt')}'")
            raise InputError(f"no files match the pattern '{pat}'")
        files.update(matched)
    out = sorted(files)
    for f in out:
        check_corpus_file(f)
    return out


def check_corpus_file(path: str) -> None:
    """Raise `InputError` naming `path` if it is missing, not a file, unreadable or empty."""
    if not os.path.exists(path):
        raise InputError("corpus file not found", path)
    if not os.path.isfile(path):
        raise InputError("is not a regular file, expected a text file with one sentence per line", path)
    if not os.access(path, os.R_OK):
        raise InputError("corpus file is not readable (permissions)", path)
    if os.path.getsize(path) == 0:
        raise InputError("corpus file is empty", path)


def iter_tokenized(files: Iterable[str], tokenizer: Optional[Tokenizer] = None) -> Iterable[list[str]]:
    """Tokens of each non-empty sentence of each file (strict UTF-8, errors name file+line): its
    lines split on whitespace, or with a tokenizer, what it makes of each line (raw text)."""
    for f in files:
        check_corpus_file(f)
        for line in read_lines(f):
            for _, toks in split_text(line, tokenizer):
                if toks:
                    yield toks


def count_tokens(files: Sequence[str]) -> int:
    """Number of whitespace tokens in the files (bilm-tf's `n_train_tokens`: no sentence markers)."""
    return sum(len(t) for t in iter_tokenized(files))


def build_vocab(files: Sequence[str], min_count: int = 1, max_size: Optional[int] = None,
                tokenizer: Optional[Tokenizer] = None) -> tuple[Vocabulary, int]:
    """Count the tokens of one-sentence-per-line files (whitespace tokens, or with a tokenizer,
    raw text tokenized as `train` does with `tokenize: true`) and build a vocabulary.

    `<S>`, `</S>`, `<UNK>` first, then words with count >= `min_count` by descending count (ties
    by word). `max_size` bounds the total size, the three specials included. Returns
    `(vocabulary, number of tokens counted)`."""
    if min_count < 1:
        raise ElmoError(f"min_count must be >= 1, got {min_count}")
    if max_size is not None and max_size < len(SPECIAL_WORDS):
        raise ElmoError(f"max_size must be >= {len(SPECIAL_WORDS)} (it includes <S>, </S>, <UNK>), got {max_size}")
    files = list(files)
    if not files:
        raise InputError("no corpus files given")
    counts: collections.Counter[str] = collections.Counter()
    for toks in iter_tokenized(files, tokenizer):
        counts.update(toks)
    n_tokens = sum(counts.values())
    if n_tokens == 0:
        raise InputError(f"the corpus has no tokens (only blank lines in {len(files)} file(s): "
                         f"{', '.join(files[:3])}{' ...' if len(files) > 3 else ''})")
    for w in SPECIAL_WORDS:
        counts.pop(w, None)
    ranked = sorted((item for item in counts.items() if item[1] >= min_count), key=lambda kv: (-kv[1], kv[0]))
    words = list(SPECIAL_WORDS) + [w for w, _ in ranked]
    if max_size is not None:
        words = words[:max_size]
    return Vocabulary(words), n_tokens
