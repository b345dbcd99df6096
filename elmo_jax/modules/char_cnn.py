"""Character CNN: char embedding, one 'valid' 1-D convolution per filter width, max over positions."""
from __future__ import annotations

from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax

from ..options import ModelOptions


def char_embed_init(key: jax.Array, shape: tuple[int, ...], dtype: Any = jnp.float32) -> jax.Array:
    """bilm-tf: char embedding U(-1, 1)."""
    return jax.random.uniform(key, shape, dtype, -1.0, 1.0)


def cnn_kernel_init(activation: str) -> Callable:
    """bilm-tf: U(-0.05, 0.05) for relu, N(0, sqrt(1 / (w * D))) for tanh."""

    def init(key, shape, dtype=jnp.float32):
        if activation == "relu":
            return jax.random.uniform(key, shape, dtype, -0.05, 0.05)
        w, d, _ = shape
        return jax.random.normal(key, shape, dtype) * jnp.sqrt(1.0 / (w * d)).astype(dtype)

    return init


class CharCNN(nn.Module):
    """Token char ids -> F-dim vector (F = sum of filter counts).

    Params: `char_embed` [261, D] indexed by raw id (as stored in bilm-tf weight files);
    `W_cnn_{i}` [w_i, D, n_i] and `b_cnn_{i}` [n_i] per filter bank.
    With `shifted=True` (inference) ids are raw + 1 and id 0 looks up a zero row."""

    options: ModelOptions
    dtype: Any = jnp.float32  # compute dtype
    precision: Any = lax.Precision.HIGHEST

    @nn.compact
    def __call__(self, char_ids: jax.Array, shifted: bool = True) -> jax.Array:
        """char_ids: int [..., C] -> float [..., F]."""
        opts = self.options
        table = self.param("char_embed", char_embed_init, (261, opts.char_embed_dim))
        if shifted:
            table = jnp.concatenate([jnp.zeros((1, table.shape[1]), table.dtype), table], axis=0)
        lead = char_ids.shape[:-1]
        ids = char_ids.reshape(-1, char_ids.shape[-1])
        x = jnp.take(table, ids, axis=0).astype(self.dtype)  # [N, C, D]
        act = jax.nn.relu if opts.activation == "relu" else jnp.tanh
        pooled = []
        for i, (width, count) in enumerate(opts.filters):
            kernel = self.param(f"W_cnn_{i}", cnn_kernel_init(opts.activation),
                                (width, opts.char_embed_dim, count))
            bias = self.param(f"b_cnn_{i}", nn.initializers.zeros, (count,))
            z = lax.conv_general_dilated(
                x, kernel.astype(self.dtype), window_strides=(1,), padding="VALID",
                dimension_numbers=("NWC", "WIO", "NWC"), precision=self.precision)  # [N, C-w+1, n]
            # max commutes with adding the (position-independent) bias and with relu/tanh.
            pooled.append(act(jnp.max(z, axis=1) + bias.astype(self.dtype)))
        out = jnp.concatenate(pooled, axis=-1)  # [N, F]
        return out.reshape(*lead, out.shape[-1])
