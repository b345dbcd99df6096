"""The bidirectional LM: shared token encoder, forward and backward LSTMP stacks, L+1 layers."""
from __future__ import annotations

from typing import Any, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax

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


class BiLM(nn.Module):
    """char ids -> ELMo layers, as bilm-tf's `BidirectionalLanguageModel` / AllenNLP's `_ElmoBiLm`.

    Submodules: `token_encoder` (char-CNN, highway, projection) and `lstm` (both directions'
    stacks, direction 0 = forward LM, 1 = backward LM). Stateful use: pass the previous call's
    `final_state` as `initial_state` (row r continues row r)."""

    options: ModelOptions
    dtype: Any = jnp.float32
    precision: Any = lax.Precision.HIGHEST
    hoist_input: bool = False

    def setup(self):
        self.token_encoder = TokenEncoder(self.options, self.dtype, self.precision)
        self.lstm = LSTMStack(self.options, 2, self.dtype, self.precision, self.hoist_input)

    def __call__(self, char_ids: jax.Array, initial_state: Optional[dict] = None) -> dict[str, Any]:
        """char_ids: int32 [B, T, C], shifted ids, rows left-aligned (markers included).

        Returns {'layers': [L+1, B, T, 2P] (zero at padding), 'mask': bool [B, T],
        'final_state': {'h': [L, 2, B, P], 'c': [L, 2, B, H]}}."""
        mask = jnp.any(char_ids > 0, axis=-1)
        tokens = self.token_encoder(char_ids, shifted=True)
        return self.from_token_embeddings(tokens, mask, initial_state)

    def encode_tokens(self, char_ids: jax.Array, shifted: bool = True) -> jax.Array:
        """Context-free token vectors ("layer 0", one direction): [..., C] -> [..., P]."""
        return self.token_encoder(char_ids, shifted=shifted)

    def from_token_embeddings(self, tokens: jax.Array, mask: jax.Array,
                              initial_state: Optional[dict] = None) -> dict[str, Any]:
        """Run both LSTM stacks from token vectors [B, T, P] and mask [B, T] (left-aligned)."""
        tokens = tokens.astype(self.dtype)
        lengths = jnp.sum(mask, axis=1).astype(jnp.int32)
        maskf = mask[..., None].astype(tokens.dtype)
        tokens = tokens * maskf
        xs = jnp.stack([tokens, reverse_within_lengths(tokens, lengths)])  # [2, B, T, P]
        outputs, final_state = self.lstm(xs, mask, initial_state)
        layers = [jnp.concatenate([tokens, tokens], axis=-1)]
        for out in outputs:
            backward = reverse_within_lengths(out[1], lengths)
            layers.append(jnp.concatenate([out[0], backward], axis=-1) * maskf)
        return {"layers": jnp.stack(layers), "mask": mask, "final_state": final_state}
