"""Sentence order: which sentence of which shard is position g of the endless training sequence.

The sentences of all shards form one sequence per epoch: shards in a seeded random order
(`[seed, 0, epoch]`), each shard's sentences in a seeded random permutation
(`[seed, 1, epoch, shard]`). Epochs follow each other into one endless sequence. Without
shuffling (evaluation) every epoch is the file order. Only a few epoch orders and shard
permutations are held at once, so any position is cheap to locate, also after a resume.
"""
from __future__ import annotations

import collections

import numpy as np


class SentenceOrder:
    """`locate(g)` -> (shard, sentence index inside it) of position g of the endless sequence."""

    def __init__(self, shard_sizes: np.ndarray, *, seed: int, shuffle: bool, max_cached_shards: int = 4):
        self.shard_sizes = np.asarray(shard_sizes, np.int64)  # [n_shards] sentences per shard
        self.n_sentences = int(self.shard_sizes.sum())
        self.seed, self.shuffle = int(seed), bool(shuffle)
        self.max_cached_perms = 2 * max(1, int(max_cached_shards))
        self._perm_cache: collections.OrderedDict[tuple[int, int], np.ndarray] = collections.OrderedDict()
        self._order_cache: collections.OrderedDict[int, tuple[np.ndarray, np.ndarray]] = collections.OrderedDict()

    def _epoch_order(self, epoch: int) -> tuple[np.ndarray, np.ndarray]:
        """(shard order int [n_shards], cumulative sentence starts int64 [n_shards + 1]) of an epoch."""
        hit = self._order_cache.get(epoch)
        if hit is None:
            n = len(self.shard_sizes)
            order = (np.random.default_rng([self.seed, 0, epoch]).permutation(n) if self.shuffle
                     else np.arange(n))
            starts = np.concatenate([[0], np.cumsum(self.shard_sizes[order])])
            hit = (order, starts)
            self._order_cache[epoch] = hit
            while len(self._order_cache) > 4:
                self._order_cache.popitem(last=False)
        return hit

    def _perm(self, epoch: int, shard: int) -> np.ndarray:
        key = (epoch, shard)
        hit = self._perm_cache.get(key)
        if hit is None:
            hit = np.random.default_rng([self.seed, 1, epoch, shard]).permutation(int(self.shard_sizes[shard]))
            self._perm_cache[key] = hit
            while len(self._perm_cache) > self.max_cached_perms:
                self._perm_cache.popitem(last=False)
        else:
            self._perm_cache.move_to_end(key)
        return hit

    def locate(self, g: int) -> tuple[int, int]:
        """Shard and sentence index inside it of position g of the endless sentence sequence."""
        epoch, i = divmod(g, self.n_sentences)
        order, starts = self._epoch_order(epoch if self.shuffle else 0)
        k = int(np.searchsorted(starts, i, side="right")) - 1
        s, j = int(order[k]), i - int(starts[k])
        if self.shuffle:
            j = int(self._perm(epoch, s)[j])
        return s, j
