"""The resumable data position of a batcher, and its saved form (`State`).

Per global row: the position of its current sentence in the endless sequence (row r takes
positions r, r+B, r+2B, ...) and how many of its (input, target) pairs were already emitted.
That fully determines the leftover of a cut sentence, is tiny, is identical on every host (all
hosts track all rows), and survives a change of host count. The saved state also holds what the
position is only valid for (seed, mode, batch size, corpus size and fingerprint), so restoring
into other data or settings is a clear `DataError`.
"""
from __future__ import annotations

import math
from typing import Callable, Optional, Union

import numpy as np

from ..errors import DataError

State = dict[str, Union[np.ndarray, int]]

STATE_VERSION = 1
#: What a position is valid for: the keys a state must match (`identity` of `to_state`/`restore`).
IDENTITY_KEYS = ("seed", "train", "shuffle", "global_batch_size", "n_sentences", "fingerprint")


class DataPosition:
    """position int64 [B]: each row's current sentence; offset int64 [B]: its pairs already emitted;
    batches: batches produced so far."""

    def __init__(self, global_batch_size: int):
        self.global_batch_size = int(global_batch_size)
        self.position = np.arange(self.global_batch_size, dtype=np.int64)
        self.offset = np.zeros(self.global_batch_size, dtype=np.int64)
        self.batches = 0

    def epoch(self, n_sentences: int) -> float:
        """Epochs of sentences consumed so far (sentences started by all rows / corpus sentences)."""
        started = (self.position - np.arange(self.global_batch_size)) // self.global_batch_size
        return float(started.sum()) / n_sentences

    def to_state(self, identity: dict[str, int], n_sentences: int) -> State:
        """The saved form (NumPy arrays and ints), with the `identity` it is valid for."""
        return {
            "version": STATE_VERSION,
            **{k: int(identity[k]) for k in IDENTITY_KEYS},
            "batches": self.batches,
            "epochs_completed": int(math.floor(self.epoch(n_sentences))),
            "position": self.position.copy(),  # int64 [B] index of each row's current sentence
            "offset": self.offset.copy(),  # int64 [B] pairs of that sentence already emitted
        }

    @classmethod
    def restore(cls, state: State, identity: dict[str, int],
                n_pairs: Callable[[int], Optional[int]]) -> "DataPosition":
        """The position of a `to_state` (leaves may come back as 0-d arrays from a checkpoint),
        checked against `identity` and against `n_pairs(g)`: the pairs of the sentence at position
        g, or None where g is past the data (evaluation)."""
        try:
            get = {k: state[k] for k in ("version", *IDENTITY_KEYS, "batches", "position", "offset")}
        except (KeyError, TypeError) as e:
            raise DataError(f"not a data position saved by this Batcher (missing {e})") from e
        scalar = {k: int(np.asarray(v)) for k, v in get.items() if k not in ("position", "offset")}
        if scalar["version"] != STATE_VERSION:
            raise DataError(f"data position version {scalar['version']} is not supported (expected {STATE_VERSION})")
        wrong = [f"{k} {scalar[k]} (now {identity[k]})" for k in IDENTITY_KEYS if scalar[k] != identity[k]]
        if wrong:
            what = ("the corpus or vocabulary changed" if any(w.split()[0] in ("n_sentences", "fingerprint")
                                                                for w in wrong) else "the data settings changed")
            raise DataError(f"the saved data position does not fit this run: {what}: saved " + ", ".join(wrong))
        position = np.asarray(get["position"]).astype(np.int64).reshape(-1)
        offset = np.asarray(get["offset"]).astype(np.int64).reshape(-1)
        B = identity["global_batch_size"]
        if position.shape != (B,) or offset.shape != (B,) or (position % B != np.arange(B)).any() \
                or (offset < 0).any():
            raise DataError("the saved data position is malformed (positions must be row + k * batch size)")
        for b in range(B):
            pairs = n_pairs(int(position[b]))
            if pairs is not None and offset[b] >= pairs:
                raise DataError(f"the saved data position is malformed (row {b}: offset {offset[b]} is past "
                                "the end of its sentence)")
        out = cls(B)
        out.position, out.offset, out.batches = position.copy(), offset.copy(), scalar["batches"]
        return out
