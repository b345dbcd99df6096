"""Context-free token vectors: char-CNN -> highway -> linear projection to P ("layer 0")."""
from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax

from ..options import ModelOptions
from .char_cnn import CharCNN
from .highway import Highway


class TokenEncoder(nn.Module):
    """char ids [..., C] -> token embedding [..., P].

    Submodules/params: `char_cnn`, `highway`, and `projection` (`W_proj` [F, P], `b_proj` [P]),
    the last only when F != P (as in bilm-tf)."""

    options: ModelOptions
    dtype: Any = jnp.float32
    precision: Any = lax.Precision.HIGHEST

    @nn.compact
    def __call__(self, char_ids: jax.Array, shifted: bool = True) -> jax.Array:
        opts = self.options
        x = CharCNN(opts, self.dtype, self.precision, name="char_cnn")(char_ids, shifted)
        if opts.n_highway:
            x = Highway(opts.n_highway, self.dtype, self.precision, name="highway")(x)
        if opts.has_token_projection:
            f = opts.n_filters
            w = self.param("W_proj", lambda k, s, d=jnp.float32: jax.random.normal(k, s, d) * jnp.sqrt(1.0 / f),
                           (f, opts.projection_dim))
            b = self.param("b_proj", nn.initializers.zeros, (opts.projection_dim,))
            x = jnp.dot(x, w.astype(self.dtype), precision=self.precision) + b.astype(self.dtype)
        return x
