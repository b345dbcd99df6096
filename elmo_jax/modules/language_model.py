"""The training-time (bi)LM: shared token encoder, forward (and backward) LSTMP stacks, one softmax.

Parameter paths equal `BiLM`'s (`token_encoder`, `lstm`) plus `softmax` ({`W` [V, P], `b` [V]}),
so a trained model exports to a bilm-tf weight file without renaming. With
`share_embedding_softmax` (word input) the softmax has only `b`: its weights are the first V rows
of the token embedding `token_encoder/embedding`, as bilm-tf's `softmax_W = embedding_weights`.
"""
from __future__ import annotations

from typing import Any, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp

from ..options import ModelOptions
from .char_cnn import resolve_scan_rows
from .lstm import LSTMStack
from .token_encoder import TokenEncoder


class Softmax(nn.Module):
    """Output embedding `W` [V, P] (bilm-tf init N(0, 1/sqrt(P))) and bias `b` [V]; only `b` when
    the weights are shared with the input embedding."""

    vocab_size: int
    dim: int
    shared: bool = False

    @nn.compact
    def __call__(self) -> None:
        if not self.shared:
            self.param("W", nn.initializers.normal(stddev=1.0 / self.dim ** 0.5), (self.vocab_size, self.dim))
        self.param("b", nn.initializers.zeros, (self.vocab_size,))


def softmax_params(params: dict, vocab_size: int) -> tuple[jax.Array, jax.Array]:
    """(W [V, P], b [V]) of a LanguageModel's params, the shared embedding's rows where tied."""
    softmax = params["softmax"]
    w = softmax["W"] if "W" in softmax else params["token_encoder"]["embedding"][:vocab_size]
    return w, softmax["b"]


def example_inputs(options: ModelOptions) -> dict[str, jax.Array]:
    """Smallest step inputs of the options' kind (for `init`); see `train/batching.py`."""
    n_dir = options.n_directions
    if not options.char_inputs:
        return {"token_ids": jnp.zeros((n_dir, 1, 1), jnp.int32)}
    out = {"unique_chars": jnp.zeros((1, options.max_characters_per_token), jnp.int32),
           "token_index": jnp.zeros((n_dir, 1, 1), jnp.int32)}
    if options.word_channel_dim:
        out["unique_words"] = jnp.zeros((1,), jnp.int32)
    return out


class LanguageModel(nn.Module):
    """Step inputs (see train/batching.py) and the carried LSTM state -> top-layer outputs
    [Dn, B, T, P] (dropout applied; direction 0 forward stream, 1 backward stream) and the new state.

    Character input: distinct words' chars `unique_chars` [U, C'] (raw training ids; their
    vocabulary ids `unique_words` [U] for a word channel) and each position's word `token_index`
    [Dn, B, T]. Word input: `token_ids` [Dn, B, T] vocabulary ids (OOV -> <UNK>)."""

    options: ModelOptions
    vocab_size: int
    dropout_rate: float = 0.1
    dtype: Any = jnp.float32
    remat: bool = True
    hoist_input: bool = False
    fused_backward: bool = True
    freeze_word_vectors: bool = False
    char_cnn_scan_rows: Optional[int] = None  # None: `char_cnn.resolve_scan_rows` (CPU 16, else 0)
    precision: Any = None  # of every matmul (`matmul.BF16_OPERANDS`: bfloat16 operands)
    scan_unroll: int = 1  # LSTM time steps per scan iteration

    def setup(self):
        opts = self.options
        self.token_encoder = TokenEncoder(opts, self.dtype, precision=self.precision,
                                          freeze_word_vectors=self.freeze_word_vectors,
                                          scan_rows=resolve_scan_rows(self.char_cnn_scan_rows))
        self.lstm = LSTMStack(opts, opts.n_directions, self.dtype, precision=self.precision,
                              hoist_input=self.hoist_input,
                              remat=self.remat, dropout_rate=self.dropout_rate, fused_backward=self.fused_backward,
                              unroll=self.scan_unroll)
        self.softmax = Softmax(self.vocab_size, opts.projection_dim, shared=opts.share_embedding_softmax)
        self.output_dropout = nn.Dropout(self.dropout_rate)

    def __call__(self, inputs: dict, state: dict, deterministic: bool = True):
        if self.options.char_inputs:
            words = self.token_encoder(inputs["unique_chars"], shifted=False,
                                       word_ids=inputs.get("unique_words"))  # [U, P]
            tokens = jnp.take(words, inputs["token_index"], axis=0)  # [Dn, B, T, P]
        else:
            tokens = self.token_encoder(inputs["token_ids"], shifted=False)  # [Dn, B, T, P]
        mask = jnp.ones(tokens.shape[1:3], bool)  # training streams are packed: every slot is real
        outputs, new_state = self.lstm(tokens, mask, state, deterministic=deterministic)
        if self.is_initializing():
            self.softmax()  # create the softmax params (the losses read them: `softmax_params`; a
            #                 sparse train step passes only some of their rows, train/step.py)
        top = outputs[-1]
        if self.dropout_rate > 0:
            top = self.output_dropout(top, deterministic=deterministic)
        return top, new_state
