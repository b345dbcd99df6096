"""Context-free token vectors ("layer 0"), one per model kind:

- character input: char-CNN -> highway -> (word channel) -> linear projection to P;
- word input (bilm-tf options without `char_cnn`): a row of the token embedding [n_tokens_vocab, P].

Ids. Training (`shifted=False`) uses raw ids: char ids 0..260 and vocabulary ids 0..V-1.
Inference (`shifted=True`) adds 1 to both so that 0 means "no token here" (bilm-tf's
`Batcher` / `TokenBatcher` convention); padding positions then get a zero vector.
"""
from __future__ import annotations

from typing import Any, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax

from ..options import ModelOptions
from . import matmul as mm
from .char_cnn import CharCNN
from .highway import Highway

#: TF's default initializer of `tf.get_variable` (bilm-tf's word `embedding` has no other).
embedding_init = nn.initializers.glorot_uniform()


def lookup(table: jax.Array, ids: jax.Array, shifted: bool) -> jax.Array:
    """Rows of `table` [V, D] for `ids` [...] -> [..., D]; shifted ids are row + 1, 0 -> zeros."""
    if not shifted:
        return jnp.take(table, ids, axis=0)
    rows = jnp.take(table, jnp.maximum(ids - 1, 0), axis=0)
    return jnp.where((ids > 0)[..., None], rows, jnp.zeros((), rows.dtype))


def word_channel_rows(options: ModelOptions) -> int:
    """Rows of the word embedding / word channel table (`n_tokens_vocab`, which must be known)."""
    if options.n_tokens_vocab is None:
        raise ValueError("the options lack n_tokens_vocab (the word table's rows); set it from the vocabulary")
    return options.n_tokens_vocab


class TokenEncoder(nn.Module):
    """ids -> token embedding [..., P].

    Character input: `char_ids` [..., C] (+ `word_ids` [...] for the word channel). Params
    `char_cnn`, `highway`, `word_embedding` [n_tokens_vocab, D_w] (word channel only),
    `W_proj` [F (+ D_w), P] and `b_proj` [P] (only when F (+ D_w) != P, as in bilm-tf); the
    word vector comes first in the projection's input, as in ELMoForManyLangs.
    Word input: `char_ids` holds vocabulary ids [...]; param `embedding` [n_tokens_vocab, P]."""

    options: ModelOptions
    dtype: Any = jnp.float32
    precision: Any = lax.Precision.HIGHEST
    freeze_word_vectors: bool = False  # no gradient into the word table (input path; training)
    scan_rows: int = 0  # char-CNN rows per device per scan step (`char_cnn.pooled_convolutions`)

    @nn.compact
    def __call__(self, char_ids: jax.Array, shifted: bool = True, word_ids: Optional[jax.Array] = None) -> jax.Array:
        opts = self.options
        if not opts.char_inputs:
            table = self.param("embedding", embedding_init, (word_channel_rows(opts), opts.projection_dim))
            if self.freeze_word_vectors:
                table = lax.stop_gradient(table)
            return lookup(table.astype(self.dtype), char_ids, shifted)
        x = CharCNN(opts, self.dtype, self.precision, self.scan_rows, name="char_cnn")(char_ids, shifted)
        if opts.n_highway:
            x = Highway(opts.n_highway, self.dtype, self.precision, name="highway")(x)
        if opts.word_channel_dim:
            if word_ids is None:
                raise ValueError("this model has a word-vector channel: pass word_ids (vocabulary ids)")
            table = self.param("word_embedding", embedding_init, (word_channel_rows(opts), opts.word_channel_dim))
            if self.freeze_word_vectors:
                table = lax.stop_gradient(table)
            x = jnp.concatenate([lookup(table.astype(self.dtype), word_ids, shifted), x], axis=-1)
        if opts.has_token_projection:
            f = opts.token_features
            w = self.param("W_proj", lambda k, s, d=jnp.float32: jax.random.normal(k, s, d) * jnp.sqrt(1.0 / f),
                           (f, opts.projection_dim))
            b = self.param("b_proj", nn.initializers.zeros, (opts.projection_dim,))
            x = mm.matmul(x, w.astype(self.dtype), self.precision) + b.astype(self.dtype)
        return x
