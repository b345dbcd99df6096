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
"""
from __future__ import annotations

import math

import numpy as np

from ..distinct import Bucket, char_cut_needs, distinct_words, word_bucket

#: Distinct-word rows per host are a multiple of this (and of the local devices), at least one:
#: up to 2048 rows every multiple, past that the ladder's quarter octaves (`distinct.bucket_rows`).
ROW_QUANTUM = 256


class StepInputs:
    """Batcher batches of ALL global rows (word ids) -> this host's step inputs.

    `__call__(batch)` -> (arrays of this host's rows, `Bucket`):
      unique_chars  int32 [U, C']     raw char ids of this host's distinct words (padded rows unused)
      token_index   int32 [2, R, T]   row of `unique_chars` of each position, offset by
                                      host_index x U (host h's words are block h of the global array)
      targets_fwd, targets_bwd, weights_fwd, weights_bwd   [R, T] this host's rows
    """

    def __init__(self, input_chars: np.ndarray, max_filter_width: int, *, global_rows: int, n_hosts: int = 1,
                 host_index: int = 0, n_local_devices: int = 1):
        if global_rows % n_hosts:
            raise ValueError(f"{global_rows} rows do not split over {n_hosts} hosts")
        self.table = input_chars
        self.width = int(input_chars.shape[1])
        self.need = char_cut_needs(input_chars, max_filter_width)
        self.rows_per_host = global_rows // n_hosts
        self.n_hosts, self.host_index = n_hosts, host_index
        self.quantum = math.lcm(ROW_QUANTUM, max(1, n_local_devices))

    def _block(self, ids: np.ndarray, host: int) -> np.ndarray:
        r = self.rows_per_host
        return ids[:, host * r:(host + 1) * r]

    def bucket(self, batch: dict[str, np.ndarray]) -> Bucket:
        """The sizes every host uses for this batch (max over the hosts' needs)."""
        ids = np.stack([batch["inputs_fwd"], batch["inputs_bwd"]])  # [2, B, T]
        if ids.shape[1] != self.rows_per_host * self.n_hosts:
            raise ValueError(f"expected all {self.rows_per_host * self.n_hosts} global rows, got {ids.shape[1]}")
        sizes = [word_bucket(np.unique(self._block(ids, h)), self.need, self.width, min_rows=self.quantum,
                             multiple=self.quantum) for h in range(self.n_hosts)]
        return Bucket(max(s.rows for s in sizes), max(s.chars for s in sizes))

    def __call__(self, batch: dict[str, np.ndarray]) -> tuple[dict[str, np.ndarray], Bucket]:
        ids = np.stack([batch["inputs_fwd"], batch["inputs_bwd"]])
        local = self._block(ids, self.host_index)  # [2, R, T]
        chars, inverse, bucket = distinct_words(local, self.table, self.need, min_rows=self.quantum,
                                                multiple=self.quantum, at_least=self.bucket(batch))
        r0 = self.host_index * self.rows_per_host
        rows = slice(r0, r0 + self.rows_per_host)
        out = {k: batch[k][rows] for k in ("targets_fwd", "targets_bwd", "weights_fwd", "weights_bwd")}
        out["unique_chars"] = chars
        out["token_index"] = inverse + np.int32(self.host_index * bucket.rows)
        return out, bucket
