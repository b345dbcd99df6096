"""Host-side batch preparation for the train step: each distinct word's characters once.

The char-CNN dominates the cost of a training step on CPU (its backward pass above all), and a
batch repeats words a lot: 128 x 20 positions x 2 directions of natural text hold about 1,100
distinct words for 5,120 positions. So the step gets `unique_chars` [U, C'] (each distinct
word once) and `token_index` [2, B, T] into it, and the char axis is cut to C' slots: every
conv window lying wholly in a word's padding chars has the same value, so keeping the slots up
to the longest word's end-of-word plus the widest filter (one all-padding window) leaves every
max, hence every result, unchanged. U and C' are rounded up to a few bucket sizes (bounded
recompiles) and, on several hosts, agreed across hosts (every host's arrays must have one shape).
"""
from __future__ import annotations

from typing import Optional

import jax
import numpy as np

from ..chars import PAD_CHAR

CHAR_CUTS = (16, 24, 32, 40)
ROW_QUANTUM = 256


def _bucket_rows(n: int, quantum: int) -> int:
    return max(quantum, -(-n // quantum) * quantum)


def dedup_batch(batch: dict[str, np.ndarray], max_filter_width: int, n_local_devices: int = 1,
                agree: Optional[tuple[int, int]] = None, host_index: int = 0
                ) -> tuple[dict[str, np.ndarray], tuple[int, int]]:
    """Replace `chars_fwd`/`chars_bwd` [R, T, C] (raw ids) by `unique_chars` [U, C'] and
    `token_index` [2, R, T] (row of each position's word, local to this host's U rows).

    `agree`: (U, C') sizes every host must use (the max over hosts of what each needed); host h's
    rows are block h of the global `unique_chars`, so its indices are offset by h * U.
    Returns the new batch and the sizes this host needed."""
    chars = np.stack([batch["chars_fwd"], batch["chars_bwd"]])  # [2, R, T, C]
    width = chars.shape[-1]
    rows = np.ascontiguousarray(chars.reshape(-1, width))
    keys = rows.view(np.dtype((np.void, rows.dtype.itemsize * width))).ravel()
    _, first, inverse = np.unique(keys, return_index=True, return_inverse=True)
    unique = rows[first]  # [U, C]
    used = int((width - np.argmax((unique != PAD_CHAR)[:, ::-1], axis=1)).max())  # slots up to EOW
    cut = next((c for c in CHAR_CUTS if c >= used + max_filter_width), width)
    cut = min(cut, width)
    quantum = ROW_QUANTUM * max(1, n_local_devices) // np.gcd(ROW_QUANTUM, max(1, n_local_devices))
    n_rows = _bucket_rows(len(unique), quantum)
    needed = (n_rows, cut)
    if agree is not None:
        n_rows, cut = max(n_rows, agree[0]), max(cut, agree[1])
    padded = np.zeros((n_rows, cut), np.int32)
    padded[: len(unique)] = unique[:, :cut]
    out = {k: v for k, v in batch.items() if k not in ("chars_fwd", "chars_bwd", "tokens_fwd", "tokens_bwd")}
    out["unique_chars"] = padded
    out["token_index"] = (inverse.reshape(chars.shape[:3]) + host_index * n_rows).astype(np.int32)
    return out, needed


def agreed_sizes(needed: tuple[int, int]) -> Optional[tuple[int, int]]:
    """The max over hosts of (U, C'); None on one host (nothing to agree)."""
    if jax.process_count() == 1:
        return None
    from jax.experimental import multihost_utils

    allv = np.asarray(multihost_utils.process_allgather(np.asarray(needed, np.int32)))
    return int(allv[..., 0].max()), int(allv[..., 1].max())


def prepare_batch(batch: dict[str, np.ndarray], max_filter_width: int) -> dict[str, np.ndarray]:
    """`dedup_batch` with sizes agreed across hosts (one small all-gather per step on several hosts)."""
    n_local = jax.local_device_count()
    out, needed = dedup_batch(batch, max_filter_width, n_local)
    agree = agreed_sizes(needed)
    if agree is not None:
        out, _ = dedup_batch(batch, max_filter_width, n_local, agree, jax.process_index())
    return out
