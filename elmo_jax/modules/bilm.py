"""The bidirectional LM: shared token encoder, forward and backward LSTMP stacks, L+1 layers."""
from __future__ import annotations

from typing import Any, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax

from ..errors import InputError
from ..options import ModelOptions
from .lstm import LSTMStack
from .token_encoder import TokenEncoder


def reverse_within_lengths(x: jax.Array, lengths: jax.Array) -> jax.Array:
    """Reverse each row of `x` [B, T, ...] within its length: position t -> len_b - 1 - t for
    t < len_b; padding positions stay where they are. Its own inverse."""
    t = jnp.arange(x.shape[1])[None, :]  # [1, T]
    lengths = lengths[:, None]
    idx = jnp.where(t < lengths, lengths - 1 - t, t)  # [B, T]
    idx = idx.reshape(idx.shape + (1,) * (x.ndim - 2))
    return jnp.take_along_axis(x, idx, axis=1)


def input_mask(options: ModelOptions, ids: jax.Array) -> jax.Array:
    """Real positions of shifted inputs: char ids [B, T, C] (any id > 0) or word ids [B, T] (> 0)."""
    return jnp.any(ids > 0, axis=-1) if options.char_inputs else ids > 0


def check_input_ids(options: ModelOptions, ids: Any) -> None:
    """A word-input model given char ids (or the reverse) is a clear error, not a shape crash."""
    want = 3 if options.char_inputs else 2
    if getattr(ids, "ndim", want) != want:
        if options.char_inputs:
            raise InputError("these options describe a character-input biLM: it takes char ids [batch, time, "
                             f"chars] (batch_to_ids), got an array of shape {tuple(ids.shape)}")
        raise InputError("these options describe a word-input biLM (no 'char_cnn' section): it takes "
                         "vocabulary ids [batch, time] (index + 1, 0 = padding), not character ids of shape "
                         f"{tuple(ids.shape)}")


class BiLM(nn.Module):
    """ids -> ELMo layers, as bilm-tf's `BidirectionalLanguageModel` / AllenNLP's `_ElmoBiLm`.

    Submodules: `token_encoder` (char-CNN, highway, projection; or the word embedding) and `lstm`
    (the directions' stacks, direction 0 = forward LM, 1 = backward LM; only the forward one for
    `bidirectional: false`). Stateful use: pass the previous call's `final_state` as
    `initial_state` (row r continues row r)."""

    options: ModelOptions
    dtype: Any = jnp.float32
    precision: Any = lax.Precision.HIGHEST
    hoist_input: bool = False
    scan_unroll: int = 1  # LSTM time steps per lax.scan iteration (the numbers do not change)

    def setup(self):
        self.token_encoder = TokenEncoder(self.options, self.dtype, self.precision)
        self.lstm = LSTMStack(self.options, self.options.n_directions, self.dtype, self.precision, self.hoist_input,
                              unroll=self.scan_unroll)

    def __call__(self, char_ids: jax.Array, initial_state: Optional[dict] = None,
                 word_ids: Optional[jax.Array] = None) -> dict[str, Any]:
        """char_ids: int32 [B, T, C], shifted ids, rows left-aligned (markers included); for a
        word-input model the shifted vocabulary ids [B, T] instead (index + 1, 0 = padding), and
        `word_ids` the same for a char model's word channel.

        Returns {'layers': [L+1, B, T, Dn P] (zero at padding), 'mask': bool [B, T],
        'final_state': {'h': [L, Dn, B, P], 'c': [L, Dn, B, H]}} (Dn = 2, or 1 forward only)."""
        check_input_ids(self.options, char_ids)
        mask = input_mask(self.options, char_ids)
        tokens = self.token_encoder(char_ids, shifted=True, word_ids=word_ids)
        return self.from_token_embeddings(tokens, mask, initial_state)

    def encode_tokens(self, char_ids: jax.Array, shifted: bool = True,
                      word_ids: Optional[jax.Array] = None) -> jax.Array:
        """Context-free token vectors ("layer 0", one direction): [..., C] (or word ids [...]) -> [..., P]."""
        return self.token_encoder(char_ids, shifted=shifted, word_ids=word_ids)

    def from_token_embeddings(self, tokens: jax.Array, mask: jax.Array,
                              initial_state: Optional[dict] = None) -> dict[str, Any]:
        """Run the LSTM stacks from token vectors [B, T, P] and mask [B, T] (left-aligned)."""
        tokens = tokens.astype(self.dtype)
        lengths = jnp.sum(mask, axis=1).astype(jnp.int32)
        maskf = mask[..., None].astype(tokens.dtype)
        tokens = tokens * maskf
        bidirectional = self.options.bidirectional
        xs = jnp.stack([tokens, reverse_within_lengths(tokens, lengths)] if bidirectional else [tokens])
        outputs, final_state = self.lstm(xs, mask, initial_state)  # xs: [Dn, B, T, P]
        layers = [jnp.concatenate([tokens, tokens], axis=-1) if bidirectional else tokens]
        for out in outputs:
            if not bidirectional:
                layers.append(out[0] * maskf)
                continue
            backward = reverse_within_lengths(out[1], lengths)
            layers.append(jnp.concatenate([out[0], backward], axis=-1) * maskf)
        return {"layers": jnp.stack(layers), "mask": mask, "final_state": final_state}
