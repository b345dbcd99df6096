"""Tokens to character ids, and sentences to padded id batches (NumPy only, no JAX).

Raw ids (format.md section 2): UTF-8 bytes 0..255, 256 begin-of-sentence char, 257
end-of-sentence char, 258 begin-of-word, 259 end-of-word, 260 padding. A token becomes
`[BOW, first C-2 bytes, EOW, PAD...]` of exactly C ids. Training uses these raw ids (261-row
table); inference adds 1 to every id (262-row table with a zero row 0), so an all-zero row of
ids means "no token here".
"""
from __future__ import annotations

from typing import Iterable, Optional, Sequence

import numpy as np

from .errors import InputError

BOS_CHAR = 256  # begin-of-sentence marker char
EOS_CHAR = 257  # end-of-sentence marker char
BOW_CHAR = 258  # begin of word
EOW_CHAR = 259  # end of word
PAD_CHAR = 260  # padding inside a token slot

BOS_TOKEN = "<S>"
EOS_TOKEN = "</S>"
DEFAULT_MAX_CHARS = 50


def _marker_ids(marker_char: int, max_chars: int) -> np.ndarray:
    ids = np.full(max_chars, PAD_CHAR, dtype=np.int32)
    ids[0], ids[1], ids[2] = BOW_CHAR, marker_char, EOW_CHAR
    return ids


def token_to_char_ids(token: str, max_chars: int = DEFAULT_MAX_CHARS, shift: bool = True) -> np.ndarray:
    """Char ids of one token: int32 [max_chars].

    `shift=True` gives inference ids (raw + 1); `shift=False` gives raw training ids. The literal
    tokens `<S>` and `</S>` become the sentence-marker arrays. The UTF-8 encoding is truncated to
    `max_chars - 2` bytes (possibly inside a multi-byte character, as the references do);
    characters that cannot be encoded (lone surrogates) are dropped, as bilm-tf and AllenNLP do."""
    if not isinstance(token, str):
        raise InputError(f"a token must be a str, got {type(token).__name__}: {token!r}")
    if token == BOS_TOKEN:
        ids = _marker_ids(BOS_CHAR, max_chars)
    elif token == EOS_TOKEN:
        ids = _marker_ids(EOS_CHAR, max_chars)
    else:
        raw = token.encode("utf-8", "ignore")[: max_chars - 2]
        ids = np.full(max_chars, PAD_CHAR, dtype=np.int32)
        ids[0] = BOW_CHAR
        ids[1:1 + len(raw)] = np.frombuffer(raw, dtype=np.uint8)
        ids[1 + len(raw)] = EOW_CHAR
    return ids + 1 if shift else ids


class CharIdCache:
    """Memoised `token_to_char_ids` for repeated words (bounded: cleared when full)."""

    def __init__(self, max_chars: int = DEFAULT_MAX_CHARS, shift: bool = True, max_size: int = 500_000):
        self.max_chars, self.shift, self.max_size = max_chars, shift, max_size
        self._cache: dict[str, np.ndarray] = {}

    def __call__(self, token: str) -> np.ndarray:
        ids = self._cache.get(token)
        if ids is None:
            ids = token_to_char_ids(token, self.max_chars, self.shift)
            if len(self._cache) >= self.max_size:
                self._cache.clear()
            self._cache[token] = ids
        return ids


def check_sentences(sentences: object) -> list[list[str]]:
    """Validate `List[List[str]]` input, with an error that says which sentence is wrong."""
    if isinstance(sentences, str) or not isinstance(sentences, Iterable):
        raise InputError("expected a list of sentences, each a list of token strings; "
                         f"got {type(sentences).__name__}")
    out = []
    for i, sent in enumerate(sentences):
        if isinstance(sent, str):
            raise InputError(f"sentence {i} is a str; expected a list of tokens (split it first, "
                             "e.g. sentence.split())")
        if not isinstance(sent, (list, tuple)):
            raise InputError(f"sentence {i} must be a list of token strings, got {type(sent).__name__}")
        for j, tok in enumerate(sent):
            if not isinstance(tok, str):
                raise InputError(f"sentence {i}, token {j} must be a str, got {type(tok).__name__}")
        out.append(list(sent))
    return out


def batch_to_ids(
    sentences: Sequence[Sequence[str]],
    max_chars: int = DEFAULT_MAX_CHARS,
    add_markers: bool = True,
    shift: bool = True,
    pad_to: Optional[int] = None,
    cache: Optional[CharIdCache] = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Batch sentences into char ids and a mask.

    Each sentence becomes `[<S>, t_1, ..., t_n, </S>]` (if `add_markers`), rows left-aligned and
    padded with all-zero id rows to the longest row (or to `pad_to` positions).
    Returns `(ids: int32 [B, T, max_chars], mask: bool [B, T])`; mask is True at real positions
    (markers included). An empty sentence is `[<S>, </S>]` (length 2)."""
    sentences = check_sentences(sentences)
    extra = 2 if add_markers else 0
    lengths = [len(s) + extra for s in sentences]
    width = max(lengths, default=extra)
    if pad_to is not None:
        if pad_to < width:
            raise InputError(f"pad_to={pad_to} is shorter than the longest sentence ({width} positions)")
        width = pad_to
    ids = np.zeros((len(sentences), width, max_chars), dtype=np.int32)
    mask = np.zeros((len(sentences), width), dtype=bool)
    lookup = cache if cache is not None and cache.max_chars == max_chars and cache.shift == shift else None
    for b, sent in enumerate(sentences):
        toks = [BOS_TOKEN, *sent, EOS_TOKEN] if add_markers else sent
        for t, tok in enumerate(toks):
            ids[b, t] = lookup(tok) if lookup is not None else token_to_char_ids(tok, max_chars, shift)
        mask[b, : len(toks)] = True
    return ids, mask


def char_table(words: Sequence[str], max_chars: int = DEFAULT_MAX_CHARS) -> np.ndarray:
    """Raw training char ids of every word: uint16 [len(words), max_chars].

    Row i equals `chars.token_to_char_ids(words[i], max_chars, shift=False)` (vectorised: one
    pass over the concatenated UTF-8 bytes instead of one small array per word)."""
    n = len(words)
    table = np.full((n, max_chars), PAD_CHAR, np.uint16)
    if n == 0:
        return table
    encoded = [w.encode("utf-8", "ignore")[: max_chars - 2] for w in words]
    lens = np.fromiter(map(len, encoded), np.int64, n)
    flat = np.frombuffer(b"".join(encoded), np.uint8)
    starts = np.cumsum(lens) - lens
    rows = np.repeat(np.arange(n), lens)
    cols = 1 + np.arange(flat.size) - np.repeat(starts, lens)
    table[:, 0] = BOW_CHAR
    table[rows, cols] = flat
    table[np.arange(n), 1 + lens] = EOW_CHAR
    for i, w in enumerate(words):
        if w == BOS_TOKEN or w == EOS_TOKEN:
            table[i] = PAD_CHAR
            table[i, :3] = (BOW_CHAR, BOS_CHAR if w == BOS_TOKEN else EOS_CHAR, EOW_CHAR)
    return table
