"""The training-time biLM: shared token encoder, forward and backward LSTMP stacks, one softmax.

Parameter paths equal `BiLM`'s (`token_encoder`, `lstm`) plus `softmax` ({`W` [V, P], `b` [V]}),
so a trained model exports to a bilm-tf weight file without renaming.
"""
from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from ..options import ModelOptions
from .lstm import LSTMStack
from .token_encoder import TokenEncoder


class Softmax(nn.Module):
    """Output embedding `W` [V, P] (bilm-tf init N(0, 1/sqrt(P))) and bias `b` [V]."""

    vocab_size: int
    dim: int

    @nn.compact
    def __call__(self) -> tuple[jax.Array, jax.Array]:
        w = self.param("W", nn.initializers.normal(stddev=1.0 / self.dim ** 0.5), (self.vocab_size, self.dim))
        b = self.param("b", nn.initializers.zeros, (self.vocab_size,))
        return w, b


class LanguageModel(nn.Module):
    """Distinct words' chars [U, C'] (raw training ids), each position's word `token_index`
    [2, B, T] (direction 0 forward stream, 1 backward stream) and the carried LSTM state ->
    top-layer outputs [2, B, T, P] (dropout applied) and the new state. See train/batching.py."""

    options: ModelOptions
    vocab_size: int
    dropout_rate: float = 0.1
    dtype: Any = jnp.float32
    remat: bool = True
    hoist_input: bool = False
    fused_backward: bool = False

    def setup(self):
        self.token_encoder = TokenEncoder(self.options, self.dtype, precision=None)
        self.lstm = LSTMStack(self.options, 2, self.dtype, precision=None, hoist_input=self.hoist_input,
                              remat=self.remat, dropout_rate=self.dropout_rate, fused_backward=self.fused_backward)
        self.softmax = Softmax(self.vocab_size, self.options.projection_dim)
        self.output_dropout = nn.Dropout(self.dropout_rate)

    def __call__(self, unique_chars: jax.Array, token_index: jax.Array, state: dict, deterministic: bool = True):
        words = self.token_encoder(unique_chars, shifted=False)  # [U, P]
        tokens = jnp.take(words, token_index, axis=0)  # [2, B, T, P]
        mask = jnp.ones(token_index.shape[1:3], bool)  # training streams are packed: every slot is real
        outputs, new_state = self.lstm(tokens, mask, state, deterministic=deterministic)
        self.softmax()  # create the softmax params at init
        top = outputs[-1]
        if self.dropout_rate > 0:
            top = self.output_dropout(top, deterministic=deterministic)
        return top, new_state

