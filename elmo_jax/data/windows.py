"""bilm-tf truncated-BPTT windows: the `Batcher` (and its prefetched form, `BatchStream`).

Semantics (bilm-tf `_get_batch`, see docs/training.md "Batching"):
- Each of the B rows of the global batch is an independent endless stream of sentences. A
  sentence of n words is `<S> w1 .. wn </S>` and contributes n+1 (input, target) pairs: inputs
  `<S> w1 .. wn`, targets `w1 .. wn </S>` (`</S>` is never an input; the next sentence's `<S>`
  follows). Pairs are packed without padding and cut into windows of `unroll_steps`; a sentence
  cut by a window continues at the start of the same row in the next batch.
- The backward stream uses the same sentences, each reversed with the markers swapped
  (`</S> wn .. w1 <S>`, bilm-tf's `encode(reverse=True)`), with the same windowing; so window k of
  the backward stream covers exactly the sentences of window k of the forward stream.
- Targets are vocabulary ids (OOV -> `<UNK>`); inputs are ids of the corpus's input table, whose
  rows hold the character ids (raw training ids, 261 values) of the actual word, so OOV words
  keep their spelling.

Row r takes the sentences at positions r, r+B, r+2B, ... of the endless sentence sequence
(`order.SentenceOrder`). A row's stream depends only on its own positions, so a host can produce
just its rows (`row_start`, `row_count`) and the union over hosts is the single-host batch.
Evaluation (`train=False`) uses one epoch in file order without shuffling and pads rows that ran
out of data with weight 0; it stops when every row of the global batch is done (the same batch
count on every host). The position after each batch is `position.DataPosition`.
"""
from __future__ import annotations

import math
import os
from typing import Iterator, Optional, Sequence, Union

import numpy as np

from ..chars import DEFAULT_MAX_CHARS
from ..errors import DataError
from ..prefetch import Prefetcher
from ..tokenize import Tokenizer
from ..vocab import Vocabulary
from .encoding import EncodedCorpus
from .order import SentenceOrder
from .position import DataPosition, State

Batch = dict[str, np.ndarray]
BATCH_KEYS = ("inputs_fwd", "inputs_bwd", "targets_fwd", "targets_bwd", "weights_fwd", "weights_bwd")


class Batcher:
    """Endless (training) or single-pass (evaluation) bilm-tf batches of one host's rows.

    `next(batcher)` -> dict of NumPy arrays (R = row_count rows of the global batch, T = unroll):
      inputs_fwd, inputs_bwd    int32 [R, T]      input-table ids of the inputs: rows of
                                                  `corpus.input_chars` (raw char ids) and of
                                                  `corpus.input_to_target`
      targets_fwd, targets_bwd  int32 [R, T]      vocab ids of the next token (OOV -> <UNK>)
      weights_fwd, weights_bwd  float32 [R, T]    1 for real targets, 0 for evaluation padding
    Evaluation padding positions hold the `<S>` token as input and target, with weight 0.

    `state()` is the position after the last batch returned by `next`; `restore(state)` moves
    there. With a background thread use `prefetch()` (whose `state()` follows the consumer)."""

    def __init__(self, files: Union[str, Sequence[str]], vocab: Union[Vocabulary, str, os.PathLike], *,
                 global_batch_size: int, unroll_steps: int, row_start: int = 0, row_count: Optional[int] = None,
                 seed: int = 0, train: bool = True, shuffle: bool = True, streaming: bool = False,
                 max_characters_per_token: int = DEFAULT_MAX_CHARS, cache_dir: Optional[str] = None,
                 max_cached_shards: int = 4, tokenizer: Optional[Tokenizer] = None):
        if not isinstance(global_batch_size, (int, np.integer)) or global_batch_size < 1:
            raise DataError(f"global_batch_size must be a positive integer, got {global_batch_size!r}")
        if not isinstance(unroll_steps, (int, np.integer)) or unroll_steps < 1:
            raise DataError(f"unroll_steps must be a positive integer, got {unroll_steps!r}")
        row_count = global_batch_size - row_start if row_count is None else row_count
        if not (0 <= row_start and 0 <= row_count and row_start + row_count <= global_batch_size):
            raise DataError(f"rows [{row_start}, {row_start + row_count}) are not inside the global batch "
                            f"of {global_batch_size} rows")
        if not isinstance(seed, (int, np.integer)) or seed < 0:
            raise DataError(f"seed must be a non-negative integer, got {seed!r}")
        if max_characters_per_token < 3:
            raise DataError(f"max_characters_per_token must be >= 3, got {max_characters_per_token}")
        self.global_batch_size, self.unroll_steps = int(global_batch_size), int(unroll_steps)
        self.row_start, self.row_count = int(row_start), int(row_count)
        self.seed, self.train, self.shuffle = int(seed), bool(train), bool(shuffle) and bool(train)

        self.corpus = EncodedCorpus(files, vocab, max_characters_per_token=max_characters_per_token,
                                    streaming=streaming, cache_dir=cache_dir, max_cached_shards=max_cached_shards,
                                    tokenizer=tokenizer)
        self.order = SentenceOrder(self.corpus.shard_sizes, seed=self.seed, shuffle=self.shuffle,
                                   max_cached_shards=max_cached_shards)
        self._pos = DataPosition(self.global_batch_size)
        self._current: list[Optional[tuple[int, np.ndarray]]] = [None] * self.row_count

    # ------------------------------------------------------------------ sentences of positions
    def _n_pairs(self, g: int) -> int:
        s, j = self.order.locate(g)
        return int(self.corpus.lengths[s][j]) + 1

    def _sentence(self, local: int, g: int) -> np.ndarray:
        """Input ids `[<S>, w1..wn, </S>]` (int32 [n + 2]) of position g, cached per host row."""
        cur = self._current[local]
        if cur is not None and cur[0] == g:
            return cur[1]
        sent = self.corpus.sentence(*self.order.locate(g))
        self._current[local] = (g, sent)
        return sent

    # ------------------------------------------------------------------ batches
    def __iter__(self) -> "Batcher":
        return self

    def __next__(self) -> Batch:
        B, T, N = self.global_batch_size, self.unroll_steps, self.order.n_sentences
        if not self.train and bool(np.all(self._pos.position >= N)):
            raise StopIteration
        R, r0 = self.row_count, self.row_start
        pad = self.corpus.vocab.bos_id  # input id of <S> (input ids of vocab words are their vocab ids)
        fwd_in = np.full((R, T), pad, np.int32)  # input-table ids
        fwd_tg = np.full((R, T), pad, np.int32)
        bwd_in = np.full((R, T), pad, np.int32)
        bwd_tg = np.full((R, T), pad, np.int32)
        weights = np.zeros((R, T), np.float32)
        position, offset = self._pos.position, self._pos.offset
        for b in range(B):
            local = b - r0
            mine = 0 <= local < R
            g, o, t = int(position[b]), int(offset[b]), 0
            while t < T and (self.train or g < N):
                if mine:
                    sent = self._sentence(local, g)
                    n_pairs = len(sent) - 1
                    take = min(n_pairs - o, T - t)
                    fwd_in[local, t:t + take] = sent[o:o + take]
                    fwd_tg[local, t:t + take] = sent[o + 1:o + take + 1]
                    rev = sent[::-1]  # [</S>, wn..w1, <S>]
                    bwd_in[local, t:t + take] = rev[o:o + take]
                    bwd_tg[local, t:t + take] = rev[o + 1:o + take + 1]
                    weights[local, t:t + take] = 1.0
                else:
                    n_pairs = self._n_pairs(g)
                    take = min(n_pairs - o, T - t)
                t, o = t + take, o + take
                if o == n_pairs:
                    g, o = g + B, 0
            position[b], offset[b] = g, o
        self._pos.batches += 1
        to_target = self.corpus.input_to_target
        return {
            "inputs_fwd": fwd_in, "inputs_bwd": bwd_in,
            "targets_fwd": to_target[fwd_tg], "targets_bwd": to_target[bwd_tg],
            "weights_fwd": weights, "weights_bwd": weights.copy(),
        }

    def iter_with_state(self) -> Iterator[tuple[Batch, State]]:
        """Yield `(batch, state after that batch)`: what a prefetching consumer must checkpoint."""
        while True:
            try:
                batch = next(self)
            except StopIteration:
                return
            yield batch, self.state()

    def prefetch(self, depth: int = 4) -> "BatchStream":
        """Produce batches in a background thread; see `BatchStream`."""
        return BatchStream(self, depth)

    # ------------------------------------------------------------------ state
    def _identity(self) -> dict[str, int]:
        return {"seed": self.seed, "train": int(self.train), "shuffle": int(self.shuffle),
                "global_batch_size": self.global_batch_size, "n_sentences": self.order.n_sentences,
                "fingerprint": self.corpus.fingerprint}

    def state(self) -> State:
        """The data position after the last batch returned by `next` (NumPy arrays and ints).

        Identical on every host (all rows are tracked); restoring it continues exactly."""
        return self._pos.to_state(self._identity(), self.order.n_sentences)

    def restore(self, state: State) -> None:
        """Continue from a `state()` (leaves may come back as 0-d arrays from a checkpoint)."""
        def n_pairs(g: int) -> Optional[int]:
            return self._n_pairs(g) if self.train or g < self.order.n_sentences else None

        self._pos = DataPosition.restore(state, self._identity(), n_pairs)
        self._current = [None] * self.row_count

    # ------------------------------------------------------------------ sizes
    @property
    def epoch(self) -> float:
        """Epochs of sentences consumed so far (sentences started by all rows / corpus sentences)."""
        return self._pos.epoch(self.order.n_sentences)

    @property
    def n_targets(self) -> int:
        """(input, target) pairs per direction in one pass over the data: tokens + sentences."""
        return self.corpus.n_tokens + self.order.n_sentences

    @property
    def steps_per_epoch(self) -> int:
        """Batches that emit as many targets as one pass over the data has."""
        return max(1, math.ceil(self.n_targets / (self.global_batch_size * self.unroll_steps)))

    @property
    def n_batches(self) -> Optional[int]:
        """Batches of a full evaluation pass (None when training: endless)."""
        if self.train:
            return None
        pairs = np.concatenate(self.corpus.lengths).astype(np.int64) + 1  # [N] in file order
        per_row = np.bincount(np.arange(self.order.n_sentences) % self.global_batch_size, weights=pairs,
                              minlength=self.global_batch_size)
        return int(math.ceil(per_row.max() / self.unroll_steps))

    def __repr__(self) -> str:
        return (f"Batcher({len(self.corpus.files)} files, {self.order.n_sentences} sentences, {self.corpus.n_tokens} "
                f"tokens, rows [{self.row_start}, {self.row_start + self.row_count}) of {self.global_batch_size}, "
                f"unroll {self.unroll_steps}, {'train' if self.train else 'eval'})")


class BatchStream:
    """A prefetched `Batcher`: `next()` gives batches; `state()` is the data position after the
    last batch the CONSUMER received (not the producer's, which runs ahead), i.e. what a
    checkpoint saved together with the train state after that batch's step must hold."""

    def __init__(self, batcher: Batcher, depth: int = 4):
        self.batcher = batcher
        self._state = batcher.state()
        self._prefetcher = Prefetcher(batcher.iter_with_state(), depth)

    def __iter__(self) -> "BatchStream":
        return self

    def __next__(self) -> Batch:
        batch, self._state = next(self._prefetcher)
        return batch

    def state(self) -> State:
        return self._state

    def close(self) -> None:
        self._prefetcher.close()

    def __enter__(self) -> "BatchStream":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
