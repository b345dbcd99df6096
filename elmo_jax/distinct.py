"""Each distinct word once, an exact char-axis cut, bucketed sizes (NumPy only, no JAX).

The char-CNN is most of the cost of a token vector, and text repeats words: the three places that
run it (pretraining's step inputs, `ElmoEmbedder`'s token encoder, the task inputs' `word_chars`)
give it each distinct word once, a char axis cut to what the words need, and sizes from two
short ladders so that jit compiles a bounded number of programs:

- `distinct_words(ids, table, needs)`: `np.unique` of word ids, their char rows gathered from a
  char table [W, C], the index of every position into them, and the `Bucket` of sizes.
- The cut (`char_cut_needs`): a conv window lying wholly in a word's trailing padding has the same
  value as any other such window, so keeping the slots up to the word's last non-padding char
  plus the widest filter (one all-padding window) leaves every max, hence every result, unchanged.
  This holds for raw ids (padding `PAD_CHAR`) and shifted ids (padding `PAD_CHAR + 1`; an all-zero
  row is "no token", all padding): pass the padding ids.
- Char cuts: the smallest of `CHAR_CUTS` holding the need, else the full width. With bilm-tf's
  widest filter (7) and 50 slots, English words need 12-22 slots (16 or 24), long words up to 40
  still save a fifth of the full width; five widths at most, per cut a program.
- Rows (`bucket_rows`): quarter octaves, i.e. max(n, min_rows) rounded up to a multiple of
  2^(floor(log2 n) - 2): 4, 5, 6 or 7 x 2^j (..., 256, 320, 384, 448, 512, 640, ..., 1024, 1280,
  ...), then up to a multiple of `multiple` (the coarsest step a caller wants; devices the rows
  split over). Padding stays under a quarter of the rows (plus `multiple`), and counts from a to b
  meet at most 4 x log2(b / a) + 1 sizes, at every scale. The callers: pretraining steps
  (min_rows = multiple = lcm(256, devices): every multiple of 256 up to 2048, then quarter octaves),
  `ElmoEmbedder`'s token encoder (min_rows 32, calls of at most 512 words: 17 sizes), task
  batches (min_rows a quarter of the positions: at most 9 sizes per batch length).

Sizes depend on the ids only, so hosts that hold the same ids agree on them without talking.
"""
from __future__ import annotations

from typing import NamedTuple, Sequence

import numpy as np

from .chars import PAD_CHAR

#: Char-axis widths of a cut (past the last: the table's full width).
CHAR_CUTS = (16, 24, 32, 40)
#: Padding ids of raw (training) char ids and of shifted (inference) ids, where 0 = no token.
RAW_PADDING = (PAD_CHAR,)
SHIFTED_PADDING = (0, PAD_CHAR + 1)


class Bucket(NamedTuple):
    """Padded sizes: distinct-word rows and char slots."""

    rows: int
    chars: int


def char_cut_needs(table: np.ndarray, max_filter_width: int, padding: Sequence[int] = RAW_PADDING) -> np.ndarray:
    """Slots each row of a char table [W, C] needs: up to its last char that is not one of
    `padding` (0 for an all-padding row), plus the widest filter, at most C. int32 [W].

    Exact only where each row's trailing padding is one id (as `chars` makes them)."""
    width = table.shape[1]
    real = ~np.isin(table, padding)
    used = np.where(real.any(axis=1), width - np.argmax(real[:, ::-1], axis=1), 0)
    return np.minimum(used + max_filter_width, width).astype(np.int32)


def bucket_chars(need: int, width: int) -> int:
    """The smallest char cut holding `need` slots (the full width past the last cut)."""
    return min(next((c for c in CHAR_CUTS if c >= need), width), width)


def bucket_rows(n: int, min_rows: int = 1, multiple: int = 1) -> int:
    """Rows for `n` distinct words: max(n, min_rows) rounded up to the next quarter octave
    (see the module docstring), then to a multiple of `multiple`."""
    n = max(int(n), int(min_rows), 1)
    step = 1 << max(n.bit_length() - 3, 0)
    rows = -(-n // step) * step
    return -(-rows // multiple) * multiple


def word_bucket(unique: np.ndarray, needs: np.ndarray, width: int, *, min_rows: int = 1,
                multiple: int = 1) -> Bucket:
    """The sizes of distinct word ids `unique` (rows of a char table of `width` slots whose
    `char_cut_needs` are `needs`)."""
    need = int(needs[unique].max()) if unique.size else 0
    return Bucket(bucket_rows(unique.size, min_rows, multiple), bucket_chars(need, width))


def distinct_words(ids: np.ndarray, table: np.ndarray, needs: np.ndarray, *, min_rows: int = 1,
                   multiple: int = 1, at_least: Bucket = Bucket(0, 0)
                   ) -> tuple[np.ndarray, np.ndarray, Bucket]:
    """Word ids (any shape) -> (chars int32 [rows, chars], inverse int32 [ids.shape], bucket).

    `chars[inverse]` equals `table[ids][..., :bucket.chars]`; rows past the distinct words are 0.
    `needs` is `char_cut_needs(table, ...)`. The sizes are `word_bucket`'s, or `at_least`'s where
    larger (hosts that must agree pass the largest size of them all; a fixed cut passes its width)."""
    unique, inverse = np.unique(ids, return_inverse=True)
    own = word_bucket(unique, needs, table.shape[1], min_rows=min_rows, multiple=multiple)
    bucket = Bucket(max(own.rows, at_least.rows), max(own.chars, at_least.chars))
    chars = np.zeros(bucket, np.int32)
    chars[: unique.size] = table[unique, : bucket.chars]
    return chars, inverse.reshape(np.shape(ids)).astype(np.int32), bucket
