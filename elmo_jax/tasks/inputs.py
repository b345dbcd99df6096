"""Sentences -> padded model-input arrays, and the batch order of an epoch.

ELMo sees each sentence as `<S> w1 .. wn </S>`: token ids (1-based into this run's word list,
0 = padding) that index either a cached token-embedding table (frozen biLM: every distinct word
goes through the char-CNN once, before training) or a char-id table (fine-tuning: the char-CNN
runs in the step). Static word vectors get one id per word (no markers). Lengths are padded to
a short ladder of sizes so a run compiles only a few programs.
"""
from __future__ import annotations

import bisect
from typing import Any, Optional, Sequence

import numpy as np

from ..chars import BOS_TOKEN, EOS_TOKEN, token_to_char_ids
from ..distinct import SHIFTED_PADDING, Bucket, bucket_chars, char_cut_needs, distinct_words
from ..options import ModelOptions
from ..vectors import WordVectors

LENGTH_BUCKETS = (8, 12, 16, 24, 32, 48, 64, 96, 128, 192, 256)


def table_bucket(rows: int) -> int:
    """Rows of a lookup table rounded up (powers of two from 1024), so that predicting on new
    files reuses the compiled programs."""
    return max(1024, 1 << max(rows - 1, 0).bit_length())


def pad_rows(table: np.ndarray, rows: int) -> np.ndarray:
    return np.concatenate([table, np.zeros((rows - table.shape[0],) + table.shape[1:], table.dtype)])


def length_bucket(length: int) -> int:
    """Smallest ladder size >= `length` (multiples of 128 past the ladder)."""
    i = bisect.bisect_left(LENGTH_BUCKETS, length)
    return LENGTH_BUCKETS[i] if i < len(LENGTH_BUCKETS) else -(-length // 128) * 128


class TaskInputs:
    """The word list of a run (every distinct token of the files it reads) and its id arrays."""

    def __init__(self, options: ModelOptions, sentences: Sequence[Sequence[str]], *,
                 word_vectors: Optional[WordVectors] = None, use_chars: bool = False):
        words = sorted({w for s in sentences for w in s} - {BOS_TOKEN, EOS_TOKEN})
        self.options = options
        self.words = [BOS_TOKEN, EOS_TOKEN] + words  # token id = position + 1
        self.index = {w: i + 1 for i, w in enumerate(self.words)}
        self.word_vectors = word_vectors
        self.char_table: Optional[np.ndarray] = None
        if use_chars:
            c = options.max_characters_per_token
            rows = [np.zeros(c, np.int32)] + [token_to_char_ids(w, c) for w in self.words]
            self.char_table = np.stack(rows)  # [V + 1, C] shifted ids, row 0 = padding
            self.char_needs = char_cut_needs(self.char_table, max(w for w, _ in options.filters), SHIFTED_PADDING)
            self.char_cut = bucket_chars(int(self.char_needs.max()), c)  # one char-axis cut for the run

    @property
    def vocab_size(self) -> int:
        return len(self.words)

    @property
    def table_size(self) -> int:
        """`Elmo(vocab_size=...)`: the token table's rows minus the padding row, bucketed."""
        return table_bucket(self.vocab_size + 1) - 1

    @property
    def word_table_rows(self) -> int:
        return 0 if self.word_vectors is None else table_bucket(len(self.word_vectors.words) + 2)

    def token_table(self, embedder: Any) -> np.ndarray:
        """[table_size + 1, P]: each word's biLM token vector (row 0 and the bucket's spare rows
        zero), from an `ElmoEmbedder` of the (frozen) biLM, which caches words between calls."""
        return pad_rows(embedder.token_embedding_table(self.words), self.table_size + 1)

    def word_table(self) -> np.ndarray:
        """[word_table_rows, D]: the static vectors (row 0 padding, row 1 OOV, spare rows zero)."""
        return pad_rows(self.word_vectors.table(oov="zero"), self.word_table_rows)

    def encode(self, sentence: Sequence[str]) -> tuple[np.ndarray, Optional[np.ndarray]]:
        """-> (token ids int32 [n + 2] with markers, static word ids int32 [n] or None)."""
        ids = np.array([self.index[BOS_TOKEN]] + [self.index[w] for w in sentence] + [self.index[EOS_TOKEN]],
                       np.int32)
        word_ids = None if self.word_vectors is None else self.word_vectors.ids(sentence)
        return ids, word_ids

    def batch(self, encoded: Sequence[tuple[np.ndarray, Optional[np.ndarray]]], rows: int,
              length: Optional[int] = None) -> dict[str, np.ndarray]:
        """Pad `encoded` sentences into `rows` rows (extra rows empty) of `length` ids (default: the
        bucket of the longest) -> {'token_ids' [rows, T], 'word_ids' [rows, T-2]} and, with
        characters, 'word_chars' [U, C'] (the batch's distinct words) with 'token_ids' into its rows."""
        longest = max((len(ids) for ids, _ in encoded), default=2)
        t = length or length_bucket(longest)
        token_ids = np.zeros((rows, t), np.int32)
        word_ids = np.zeros((rows, t - 2), np.int32)
        for r, (ids, wids) in enumerate(encoded):
            token_ids[r, :len(ids)] = ids
            if wids is not None:
                word_ids[r, :len(wids)] = wids
        out = {"token_ids": token_ids}
        if self.word_vectors is not None:
            out["word_ids"] = word_ids
        if self.char_table is not None:
            out.update(self.distinct_word_chars(token_ids))
        return out

    def distinct_word_chars(self, token_ids: np.ndarray) -> dict[str, np.ndarray]:
        """Each distinct word of the batch once: {'word_chars' [U, C'], 'token_ids' [rows, T] into
        it (0 stays padding)}, as `elmo_jax.distinct` cuts and buckets them, with one char cut for
        the run and U at least a quarter of the positions, so each batch length compiles a few
        programs."""
        ids = np.concatenate([[0], token_ids.ravel()])  # id 0 (padding) is row 0
        chars, inverse, _ = distinct_words(ids, self.char_table, self.char_needs,
                                           min_rows=max(token_ids.size // 4, 64), at_least=Bucket(0, self.char_cut))
        return {"word_chars": chars, "token_ids": inverse[1:].reshape(token_ids.shape)}


def epoch_order(lengths: Sequence[int], batch_size: int, rng: Optional[np.random.Generator],
                sort_window: int = 50) -> list[np.ndarray]:
    """Example indices of each batch. Training (`rng` given): shuffle, sort windows of
    `sort_window` batches by length (less padding), shuffle the batches. Evaluation: sorted by length."""
    lengths = np.asarray(lengths)
    if rng is None:
        order = np.argsort(lengths, kind="stable")
        return [order[i:i + batch_size] for i in range(0, len(order), batch_size)]
    order = rng.permutation(len(lengths))
    batches = []
    window = batch_size * sort_window
    for start in range(0, len(order), window):
        chunk = order[start:start + window]
        chunk = chunk[np.argsort(lengths[chunk], kind="stable")]
        batches.extend(chunk[i:i + batch_size] for i in range(0, len(chunk), batch_size))
    return [batches[i] for i in rng.permutation(len(batches))]
