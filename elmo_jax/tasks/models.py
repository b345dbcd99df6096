"""Task models on ELMo (Flax): a sentence classifier and a sequence tagger (softmax or CRF).

Both read a sentence as ELMo token ids (`<S>` w1..wn `</S>`, 0 = padding) into a cached
token-embedding table (frozen biLM) or into the batch's distinct words' characters
(`word_chars`: the char-CNN runs in the step, as fine-tuning needs), plus optional
static word-vector ids (GloVe, one per word, no markers). The paper's recipe: a learned scalar
mix of the biLM layers (dropout 0.5, L2 0.001 on the mix weights) at the task model's input, and
optionally a second mix concatenated to its encoder's output (`num_mixes=2`).

    model = ElmoTagger(ElmoFeatures(options, vocab_size=len(vocab)), num_tags=9, use_crf=True)
    out = model.apply(variables, token_ids=ids, method=ElmoTagger.loss, tags=tags, deterministic=False, ...)

The biLM sits at params['features']['elmo']['bilm']; it is frozen unless `fine_tune=True`.
"""
from __future__ import annotations

from typing import Any, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp

from ..elmo import CACHE_COLLECTION, Elmo
from ..options import ModelOptions
from .crf import CRF

ENCODERS = ("bilstm", "pool")


class ElmoFeatures(nn.Module):
    """ELMo mixes (+ static word vectors) for a task model's input.

    Returns (input features [B, N, 2P (+D)], output mix [B, N, 2P] or None, mask bool [B, N])
    where N = T - 2 (markers removed)."""

    options: ModelOptions
    num_mixes: int = 1
    dropout: float = 0.5
    l2_coef: float = 0.001
    do_layer_norm: bool = False
    fine_tune: bool = False
    vocab_size: Optional[int] = None  # rows of the cached ELMo token table (token_ids input)
    word_vocab_size: int = 0  # rows of the static word-vector table (0 = no static vectors)
    word_dim: int = 0

    @nn.compact
    def __call__(self, char_ids: Optional[jax.Array], token_ids: Optional[jax.Array],
                 word_ids: Optional[jax.Array], deterministic: bool, word_chars: Optional[jax.Array] = None
                 ) -> tuple[jax.Array, Optional[jax.Array], jax.Array]:
        if self.num_mixes not in (1, 2):
            raise ValueError(f"num_mixes must be 1 (input) or 2 (input and output), got {self.num_mixes}")
        out = Elmo(self.options, num_output_representations=self.num_mixes, dropout=self.dropout,
                   do_layer_norm=self.do_layer_norm, l2_coef=self.l2_coef, requires_grad=self.fine_tune,
                   vocab_size=self.vocab_size, name="elmo")(char_ids, token_ids, deterministic=deterministic,
                                                          word_chars=word_chars)
        reps, mask = out["elmo_representations"], out["mask"]
        x = reps[0]
        if self.word_dim:
            if word_ids is None:
                raise ValueError("this model uses static word vectors: pass word_ids")
            table = self.variable(CACHE_COLLECTION, "word_vectors", jnp.zeros,
                                  (self.word_vocab_size, self.word_dim), jnp.float32).value
            words = jnp.take(table, word_ids, axis=0)  # [B, N, D]
            words = nn.Dropout(self.dropout)(words, deterministic=deterministic)
            x = jnp.concatenate([x, words.astype(x.dtype)], axis=-1)
        return x, (reps[1] if self.num_mixes > 1 else None), mask


class BiLSTMEncoder(nn.Module):
    """A bidirectional LSTM over the valid prefix of each row (flax `nn.RNN`: a scanned cell)."""

    hidden_dim: int

    @nn.compact
    def __call__(self, x: jax.Array, mask: jax.Array) -> jax.Array:
        lengths = jnp.sum(mask, axis=1).astype(jnp.int32)
        fwd = nn.RNN(nn.OptimizedLSTMCell(self.hidden_dim), name="forward")
        bwd = nn.RNN(nn.OptimizedLSTMCell(self.hidden_dim), reverse=True, keep_order=True, name="backward")
        h = nn.Bidirectional(fwd, bwd, name="bilstm")(x, seq_lengths=lengths)  # [B, N, 2H]
        return jnp.where(mask[..., None], h, 0.0)


def masked_mean_max(x: jax.Array, mask: jax.Array) -> jax.Array:
    """[B, N, D] -> [B, 2D]: mean and max over the valid positions (zeros for an empty row)."""
    m = mask[..., None]
    count = jnp.maximum(jnp.sum(m, axis=1), 1)
    mean = jnp.sum(jnp.where(m, x, 0.0), axis=1) / count
    big_neg = jnp.finfo(x.dtype).min
    mx = jnp.max(jnp.where(m, x, big_neg), axis=1)
    mx = jnp.where(jnp.any(mask, axis=1)[:, None], mx, 0.0)
    return jnp.concatenate([mean, mx], axis=-1)


class ElmoClassifier(nn.Module):
    """Sentence classifier: ELMo mix -> BiLSTM (or nothing, `encoder='pool'`) -> mean+max pooling
    -> ReLU layer -> class logits [B, K]."""

    features: ElmoFeatures  # its params are the model's 'features'
    num_classes: int
    encoder: str = "bilstm"
    hidden_dim: int = 128
    dropout: float = 0.5

    @nn.compact
    def __call__(self, char_ids: Optional[jax.Array] = None, token_ids: Optional[jax.Array] = None,
                 word_ids: Optional[jax.Array] = None, deterministic: bool = True,
                 word_chars: Optional[jax.Array] = None) -> jax.Array:
        if self.encoder not in ENCODERS:
            raise ValueError(f"encoder must be one of {ENCODERS}, got {self.encoder!r}")
        x, out_mix, mask = self.features(char_ids, token_ids, word_ids, deterministic, word_chars)
        h = x
        if self.encoder == "bilstm":
            h = BiLSTMEncoder(self.hidden_dim, name="encoder")(x, mask)
            h = nn.Dropout(self.dropout)(h, deterministic=deterministic)
        if out_mix is not None:
            h = jnp.concatenate([h, out_mix], axis=-1)
        pooled = masked_mean_max(h, mask)
        z = nn.relu(nn.Dense(self.hidden_dim, name="hidden")(pooled))
        z = nn.Dropout(self.dropout)(z, deterministic=deterministic)
        return nn.Dense(self.num_classes, name="output")(z)


class ElmoTagger(nn.Module):
    """Sequence tagger: ELMo mix (+ static word vectors) -> BiLSTM -> per-token tag scores,
    decoded token by token (softmax) or jointly (`use_crf`, optionally BIO-constrained)."""

    features: ElmoFeatures  # its params are the model's 'features'
    num_tags: int
    hidden_dim: int = 200
    dropout: float = 0.5
    use_crf: bool = False
    constraints: Any = None  # crf.allowed_transitions(tags) or None

    def setup(self) -> None:
        self.encoder = BiLSTMEncoder(self.hidden_dim)
        self.drop = nn.Dropout(self.dropout)
        self.output = nn.Dense(self.num_tags)
        if self.use_crf:
            self.crf = CRF(self.num_tags, self.constraints)

    def __call__(self, char_ids: Optional[jax.Array] = None, token_ids: Optional[jax.Array] = None,
                 word_ids: Optional[jax.Array] = None, deterministic: bool = True,
                 word_chars: Optional[jax.Array] = None) -> tuple[jax.Array, jax.Array]:
        """-> (tag scores [B, N, K] float32, mask bool [B, N])."""
        x, out_mix, mask = self.features(char_ids, token_ids, word_ids, deterministic, word_chars)
        h = self.drop(self.encoder(x, mask), deterministic=deterministic)
        if out_mix is not None:
            h = jnp.concatenate([h, out_mix], axis=-1)
        return self.output(h).astype(jnp.float32), mask

    def loss(self, tags: jax.Array, char_ids: Optional[jax.Array] = None, token_ids: Optional[jax.Array] = None,
             word_ids: Optional[jax.Array] = None, deterministic: bool = True,
             word_chars: Optional[jax.Array] = None) -> tuple[jax.Array, jax.Array]:
        """-> (loss summed over rows [], number of rows/tokens it averages over []): CRF negative
        log-likelihood per sentence, or softmax cross-entropy per token."""
        scores, mask = self(char_ids, token_ids, word_ids, deterministic, word_chars)
        if self.use_crf:
            nll = -self.crf(scores, tags, mask)  # [B]
            return jnp.sum(nll), jnp.sum(jnp.any(mask, axis=1)).astype(jnp.float32)
        logp = jax.nn.log_softmax(scores, axis=-1)
        gold = jnp.take_along_axis(logp, tags[..., None], axis=-1)[..., 0]
        return -jnp.sum(jnp.where(mask, gold, 0.0)), jnp.sum(mask).astype(jnp.float32)

    def predict(self, char_ids: Optional[jax.Array] = None, token_ids: Optional[jax.Array] = None,
                word_ids: Optional[jax.Array] = None, word_chars: Optional[jax.Array] = None
                ) -> tuple[jax.Array, jax.Array]:
        """-> (best tags int32 [B, N], 0 past each row's end; mask)."""
        scores, mask = self(char_ids, token_ids, word_ids, True, word_chars)
        if self.use_crf:
            tags, _ = self.crf.decode(scores, mask)
        else:
            tags = jnp.argmax(scores, axis=-1).astype(jnp.int32)
        return jnp.where(mask, tags, 0), mask
