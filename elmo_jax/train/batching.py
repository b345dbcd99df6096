"""Host-side step inputs: each distinct word once, an exact char-axis cut, bucketed sizes.

The char-CNN dominates the cost of a training step on CPU (its backward pass above all), and a
batch repeats words a lot: 64 x 20 positions x 2 directions of natural text hold about 1,000
distinct words for 2,560 positions. So the step gets `unique_chars` [U, C'] (each distinct word
once) and `token_index` [2, R, T] into it. Distinct words come from `np.unique` on the batch's
input-table ids (`Batcher` batches carry ids, not characters); their characters are then one
gather from the corpus's char table.

The char axis is cut to C' slots and U and C' are rounded up to bucket sizes, as everywhere the
char-CNN runs (`elmo_jax.distinct`: the exact cut, the two ladders; here U in steps of
`ROW_QUANTUM`), so the step compiles a bounded number of programs. On several hosts every host's
arrays must have one shape: each host computes the sizes of EVERY host's rows (it holds all rows'
word ids: cheap integer work, done in the prefetch thread) and takes the maximum, so all hosts
agree without any communication.

Word-input models (options without `char_cnn`) need no characters: the step gets `token_ids`
[Dn, R, T], the vocabulary ids of the inputs (OOV words -> `<UNK>`, as bilm-tf's word batches),
and a single bucket. A char model with a word channel also gets `unique_words` [U], the
vocabulary ids of its distinct words. A forward-only LM (`bidirectional: false`) gets the
forward stream only (Dn = 1).
"""
from __future__ import annotations

import math
from typing import Optional

import numpy as np

from ..distinct import Bucket, char_cut_needs, distinct_words, word_bucket
from ..options import ModelOptions

#: Distinct-word rows per host are a multiple of this (and of the local devices), at least one:
#: up to 2048 rows every multiple, past that the ladder's quarter octaves (`distinct.bucket_rows`).
ROW_QUANTUM = 256


class StepInputs:
    """Batcher batches of ALL global rows (word ids) -> this host's step inputs.

    `__call__(batch)` -> (arrays of this host's rows, `Bucket`):
      unique_chars  int32 [U, C']     raw char ids of this host's distinct words (padded rows unused)
      token_index   int32 [Dn, R, T]  row of `unique_chars` of each position, offset by
                                      host_index x U (host h's words are block h of the global array)
      unique_words  int32 [U]         vocabulary ids of those words (word channel only)
      token_ids     int32 [Dn, R, T]  instead of the three above for a word-input model
      targets_fwd, targets_bwd, weights_fwd, weights_bwd   [R, T] this host's rows (no *_bwd: forward only)
    """

    def __init__(self, input_chars: np.ndarray, max_filter_width: int, *, global_rows: int, n_hosts: int = 1,
                 host_index: int = 0, n_local_devices: int = 1, options: Optional[ModelOptions] = None,
                 input_to_target: Optional[np.ndarray] = None):
        """`options` None: a bidirectional char model; `input_to_target` (the Batcher's map from input
        ids to vocabulary ids) is needed for word input and a word channel."""
        if global_rows % n_hosts:
            raise ValueError(f"{global_rows} rows do not split over {n_hosts} hosts")
        self.options = options = options or ModelOptions()
        if options.needs_vocab and input_to_target is None:
            raise ValueError("word input or a word channel needs input_to_target")
        self.to_vocab = None if input_to_target is None else np.asarray(input_to_target, np.int32)
        self.suffixes = ("fwd", "bwd")[:options.n_directions]
        self.table = input_chars
        self.width = int(input_chars.shape[1])
        self.need = char_cut_needs(input_chars, max_filter_width)
        self.rows_per_host = global_rows // n_hosts
        self.n_hosts, self.host_index = n_hosts, host_index
        self.quantum = math.lcm(ROW_QUANTUM, max(1, n_local_devices))

    def _block(self, ids: np.ndarray, host: int) -> np.ndarray:
        r = self.rows_per_host
        return ids[:, host * r:(host + 1) * r]

    def _ids(self, batch: dict[str, np.ndarray]) -> np.ndarray:
        return np.stack([batch[f"inputs_{d}"] for d in self.suffixes])  # [Dn, B, T] input-table ids

    def bucket(self, batch: dict[str, np.ndarray]) -> Bucket:
        """The sizes every host uses for this batch (max over the hosts' needs)."""
        if not self.options.char_inputs:
            return Bucket(0, 0)
        ids = self._ids(batch)
        if ids.shape[1] != self.rows_per_host * self.n_hosts:
            raise ValueError(f"expected all {self.rows_per_host * self.n_hosts} global rows, got {ids.shape[1]}")
        sizes = [word_bucket(np.unique(self._block(ids, h)), self.need, self.width, min_rows=self.quantum,
                             multiple=self.quantum) for h in range(self.n_hosts)]
        return Bucket(max(s.rows for s in sizes), max(s.chars for s in sizes))

    def __call__(self, batch: dict[str, np.ndarray]) -> tuple[dict[str, np.ndarray], Bucket]:
        local = self._block(self._ids(batch), self.host_index)  # [Dn, R, T]
        r0 = self.host_index * self.rows_per_host
        rows = slice(r0, r0 + self.rows_per_host)
        out = {f"{k}_{d}": batch[f"{k}_{d}"][rows] for k in ("targets", "weights") for d in self.suffixes}
        if not self.options.char_inputs:
            out["token_ids"] = self.to_vocab[local]
            return out, Bucket(0, 0)
        chars, inverse, bucket = distinct_words(local, self.table, self.need, min_rows=self.quantum,
                                                multiple=self.quantum, at_least=self.bucket(batch))
        out["unique_chars"] = chars
        out["token_index"] = inverse + np.int32(self.host_index * bucket.rows)
        if self.options.word_channel_dim:
            words = np.zeros(bucket.rows, np.int32)  # padded rows: <S>'s id 0 would do; unused
            unique = np.unique(local)
            words[:unique.size] = self.to_vocab[unique]
            out["unique_words"] = words
        return out, bucket

    def shapes(self, bucket: Bucket, unroll: int) -> dict[str, tuple[tuple[int, ...], type, int]]:
        """Global {name: (shape, dtype, batch axis)} of a step's inputs for `bucket` (AOT compilation)."""
        rows, n_dir = self.rows_per_host * self.n_hosts, len(self.suffixes)
        out = {f"{k}_{d}": ((rows, unroll), np.int32 if k == "targets" else np.float32, 0)
               for k in ("targets", "weights") for d in self.suffixes}
        if not self.options.char_inputs:
            out["token_ids"] = ((n_dir, rows, unroll), np.int32, 1)
            return out
        out["unique_chars"] = ((bucket.rows * self.n_hosts, bucket.chars), np.int32, 0)
        out["token_index"] = ((n_dir, rows, unroll), np.int32, 1)
        if self.options.word_channel_dim:
            out["unique_words"] = ((bucket.rows * self.n_hosts,), np.int32, 0)
        return out
