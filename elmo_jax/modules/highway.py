"""Highway layers: x <- g * relu(x W_t + b_t) + (1 - g) * x with g = sigmoid(x W_c + b_c)."""
from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax

from . import matmul as mm


def highway_weight_init(key, shape, dtype=jnp.float32):
    """bilm-tf: N(0, sqrt(1 / dim))."""
    return jax.random.normal(key, shape, dtype) * jnp.sqrt(1.0 / shape[0]).astype(dtype)


class HighwayLayer(nn.Module):
    """One highway layer; params `W_carry`, `b_carry` (the gate; despite the name it weights the
    non-linear branch), `W_transform`, `b_transform`; weights are used as `x @ W`."""

    dtype: Any = jnp.float32
    precision: Any = lax.Precision.HIGHEST

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        dim = x.shape[-1]
        w_c = self.param("W_carry", highway_weight_init, (dim, dim)).astype(self.dtype)
        b_c = self.param("b_carry", nn.initializers.constant(-2.0), (dim,)).astype(self.dtype)
        w_t = self.param("W_transform", highway_weight_init, (dim, dim)).astype(self.dtype)
        b_t = self.param("b_transform", nn.initializers.zeros, (dim,)).astype(self.dtype)
        gate = jax.nn.sigmoid(mm.matmul(x, w_c, self.precision) + b_c)
        transform = jax.nn.relu(mm.matmul(x, w_t, self.precision) + b_t)
        return gate * transform + (1.0 - gate) * x


class Highway(nn.Module):
    """`n_layers` highway layers over the last axis (submodules `layer_{k}`)."""

    n_layers: int
    dtype: Any = jnp.float32
    precision: Any = lax.Precision.HIGHEST

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        """x: [..., F] -> [..., F]."""
        for k in range(self.n_layers):
            x = HighwayLayer(self.dtype, self.precision, name=f"layer_{k}")(x)
        return x
