"""`Elmo`: the Flax module downstream models use (like AllenNLP's `allennlp.modules.elmo.Elmo`).

    elmo = Elmo(options, num_output_representations=1)
    variables = init_elmo(elmo, bilm_params, jax.random.key(0), char_ids)
    out = elmo.apply(variables, char_ids, deterministic=False, rngs={"dropout": key})
    out["elmo_representations"][0]   # [B, T-2, 2P], markers removed; out["mask"] [B, T-2]

The biLM is frozen by default (its outputs are wrapped in `stop_gradient`, so its params get
zero gradients); `requires_grad=True` fine-tunes it. Inputs are stateless: every row starts
from zero state (use `Embedder(stateful=True)` to reproduce the references' carried state).
"""
from __future__ import annotations

from typing import Any, Optional, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax

from .modules.bilm import BiLM, check_input_ids
from .modules.scalar_mix import ScalarMix
from .options import ModelOptions

CACHE_COLLECTION = "elmo_cache"


def remove_sentence_boundaries(x: jax.Array, mask: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Drop `<S>` (position 0) and `</S>` (position len-1) of each left-aligned row.

    x: [B, T, ...], mask: bool [B, T] -> ([B, T-2, ...] zero past each row's end, bool [B, T-2])."""
    lengths = jnp.sum(mask, axis=1)
    new_mask = jnp.arange(x.shape[1] - 2)[None, :] < (lengths[:, None] - 2)
    keep = new_mask.reshape(new_mask.shape + (1,) * (x.ndim - 2))
    return jnp.where(keep, x[:, 1:-1], jnp.zeros((), x.dtype)), new_mask


class Elmo(nn.Module):
    """ELMo representations for a downstream model.

    Inputs: `char_ids` int32 [B, T, C] from `batch_to_ids` (markers included), and/or
    `token_ids` int32 [B, T] into a cached token-embedding table (`vocab_size` rows + a zero row
    0 for padding; build it with `Embedder.token_embedding_table`). With both, cached rows are
    used where token_ids > 0 and the characters elsewhere (mark OOV words with -1), which gives
    exactly the character path's result.

    Or `word_chars` [U, C'] (shifted char ids of a batch's distinct words; row 0 = padding) with
    `token_ids` indexing its rows: the char-CNN runs once per distinct word, and is trained with
    `requires_grad` (fine-tuning). The char axis may be cut to the longest word's end-of-word
    slot plus the widest filter: the result is the same (see `ElmoEmbedder._encode_chars`).

    Word-input biLMs (options without `char_cnn`) take no characters: `token_ids` are either rows
    of a cached table (`vocab_size` set, as above) or, without `vocab_size`, the biLM's own
    vocabulary ids + 1 (0 = padding), which runs the embedding lookup (and fine-tunes it with
    `requires_grad`). A forward-only LM gives [B, T-2, P].

    Returns {'elmo_representations': list of [B, T-2, 2P], 'mask': bool [B, T-2]}."""

    options: ModelOptions
    num_output_representations: int = 1
    dropout: float = 0.5
    do_layer_norm: bool = False
    l2_coef: float = 0.0  # L2 on the mix weights, sown into 'losses' (the paper uses 0.001)
    scalar_mix_parameters: Optional[Sequence[float]] = None  # fixed (untrained) mix weights
    requires_grad: bool = False  # fine-tune the biLM
    vocab_size: Optional[int] = None  # rows of the cached token table (token_ids input)
    dtype: Any = jnp.float32
    precision: Any = lax.Precision.HIGHEST

    @nn.compact
    def __call__(self, char_ids: Optional[jax.Array] = None, token_ids: Optional[jax.Array] = None,
                 deterministic: bool = True, word_chars: Optional[jax.Array] = None) -> dict[str, Any]:
        opts = self.options
        bilm = BiLM(opts, self.dtype, self.precision, name="bilm")
        if char_ids is None and token_ids is None:
            raise ValueError("Elmo needs char_ids or token_ids")
        if not opts.char_inputs and (char_ids is not None or word_chars is not None):
            check_input_ids(opts, char_ids if char_ids is not None else word_chars[None])
        if not opts.char_inputs and self.vocab_size is None:
            out = bilm(token_ids)  # the biLM's vocabulary ids + 1
        elif word_chars is not None:
            if token_ids is None or char_ids is not None:
                raise ValueError("word_chars input needs token_ids (rows of word_chars) and no char_ids")
            tokens = jnp.take(bilm.encode_tokens(word_chars), token_ids, axis=0)  # [B, T, P]
            out = bilm.from_token_embeddings(tokens, token_ids != 0)
        elif token_ids is not None:
            if self.vocab_size is None:
                raise ValueError("token_ids input needs Elmo(vocab_size=...) and a cached token table")
            table = self.variable(CACHE_COLLECTION, "token_embedding", jnp.zeros,
                                  (self.vocab_size + 1, opts.projection_dim), jnp.float32).value
            tokens = jnp.take(table, jnp.maximum(token_ids, 0), axis=0).astype(self.dtype)
            if char_ids is not None:
                from_chars = bilm.encode_tokens(char_ids)
                tokens = jnp.where((token_ids > 0)[..., None], tokens, from_chars)
                mask = jnp.any(char_ids > 0, axis=-1)
            else:
                mask = token_ids != 0
            if not opts.char_inputs and self.is_initializing():
                bilm.encode_tokens(jnp.ones((1,), jnp.int32))  # create the word embedding (params match files)
            out = bilm.from_token_embeddings(tokens, mask)
        else:
            out = bilm(char_ids)
        layers, mask = out["layers"], out["mask"]
        if not self.requires_grad:
            layers = lax.stop_gradient(layers)
        reps = []
        for k in range(self.num_output_representations):
            mixed = ScalarMix(opts.n_output_layers, self.do_layer_norm,
                              initial_weights=self.scalar_mix_parameters,
                              trainable=self.scalar_mix_parameters is None,
                              l2_coef=self.l2_coef, name=f"scalar_mix_{k}")(layers, mask)
            mixed, new_mask = remove_sentence_boundaries(mixed, mask)
            if self.dropout > 0:
                mixed = nn.Dropout(self.dropout)(mixed, deterministic=deterministic)
            reps.append(mixed)
        _, new_mask = remove_sentence_boundaries(mask[..., None], mask)
        return {"elmo_representations": reps, "mask": new_mask}


def init_elmo(elmo: Elmo, bilm_params: dict, rng: jax.Array, char_ids: Optional[jax.Array] = None,
              token_ids: Optional[jax.Array] = None, token_table: Optional[Any] = None) -> dict:
    """Initialise `elmo`'s variables and put pretrained biLM params (and a token table) in place."""
    variables = jax.jit(elmo.init)(rng, char_ids, token_ids)  # jitted: an eager init runs the scans op by op
    # keep the state collections only (not e.g. the 'losses' sown during init)
    variables = {k: v for k, v in variables.items() if k in ("params", CACHE_COLLECTION)}
    params = dict(variables["params"])
    expected = jax.tree_util.tree_structure(params["bilm"])
    given = jax.tree_util.tree_structure(bilm_params)
    if expected != given:
        raise ValueError("bilm_params do not match the Elmo options (different parameter tree)")
    params["bilm"] = jax.tree_util.tree_map(jnp.asarray, bilm_params)
    variables["params"] = params
    if token_table is not None:
        if CACHE_COLLECTION not in variables:
            raise ValueError("token_table given but Elmo has no vocab_size")
        cache = dict(variables[CACHE_COLLECTION])
        if tuple(cache["token_embedding"].shape) != tuple(token_table.shape):
            raise ValueError(f"token_table has shape {tuple(token_table.shape)}, expected "
                             f"{tuple(cache['token_embedding'].shape)} (vocab_size + 1, P)")
        cache["token_embedding"] = jnp.asarray(token_table, jnp.float32)
        variables[CACHE_COLLECTION] = cache
    return variables
