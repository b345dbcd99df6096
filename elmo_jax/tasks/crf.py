"""Linear-chain CRF for sequence tagging (NER): log-likelihood, Viterbi decoding, BIO/BIOES/IOB1 constraints.

A tag sequence y_1..y_L of a row with emission scores e[t, k] has the score

    start[y_1] + sum_t e[t, y_t] + sum_{t>1} transitions[y_{t-1}, y_t] + end[y_L]

and p(y | e) = exp(score(y)) / Z. Both recursions (forward algorithm, Viterbi) run as a
`jax.lax.scan` over time, so one compiled step serves every length. Masks are left-aligned
(mask[b, :L_b] True): a padded step carries the recursion's state through unchanged, so padding
never changes a result, and a row of length 0 has log-likelihood 0 and decoding score 0.

Disallowed transitions (`allowed_transitions`, e.g. O -> I-PER in BIO) get DISALLOWED added to
their learned scores: large enough that exp() of it is 0 in float32 and such a path is never
decoded, yet finite so that the likelihood and its gradients stay finite (-inf would turn a
gold sequence that breaks a constraint, or an all-disallowed row, into inf/NaN).
"""
from __future__ import annotations

from typing import Any, Optional, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from . import tags as tags_lib
from .tags import label_scheme, split_tag

DISALLOWED = -1e4  # added to the score of a transition/start/end the tag scheme forbids

BIO, BIOES = "BIO", tags_lib.BIOES  # "BIO": IOB2, the name `tag_scheme` has always returned


def _prepare(emissions: jax.Array, mask: jax.Array, params: Sequence[jax.Array]
             ) -> tuple[jax.Array, jax.Array, list[jax.Array]]:
    """-> (emissions [B, T, K] with padded steps zeroed, mask bool [B, T], params), all floats in
    float32 (bf16/f16 are upcast; float64 is kept, for gradient checks under `jax.enable_x64`).

    Zeroing padded steps keeps garbage there (inf, huge values) out of every intermediate, so
    even the gradients of the branches `where` discards stay finite."""
    emissions = jnp.asarray(emissions)
    params = [jnp.asarray(p) for p in params]
    dtype = jnp.result_type(jnp.float32, emissions.dtype, *(p.dtype for p in params))
    mask = jnp.asarray(mask).astype(bool)
    emissions = jnp.where(mask[..., None], emissions.astype(dtype), 0.0)
    return emissions, mask, [p.astype(dtype) for p in params]


@jax.jit  # one compiled call instead of op-by-op dispatch when run eagerly (e.g. a plain `init`)
def crf_log_likelihood(emissions: jax.Array, tags: jax.Array, mask: jax.Array, transitions: jax.Array,
                       start: jax.Array, end: jax.Array) -> jax.Array:
    """log p(tags | emissions) per row: [B] float32 (float64 for float64 inputs), 0.0 for a row of length 0.

    emissions [B, T, K], tags int [B, T] (any value past a row's end), mask bool [B, T]
    left-aligned, transitions [K, K] (transitions[i, j]: tag i followed by tag j), start [K], end [K]."""
    emissions, mask, (transitions, start, end) = _prepare(emissions, mask, (transitions, start, end))
    batch, steps, _ = emissions.shape
    if steps == 0:
        return jnp.zeros((batch,), emissions.dtype)
    tags = jnp.where(mask, jnp.asarray(tags).astype(jnp.int32), 0)  # [B, T], garbage tags out of range
    lengths = jnp.sum(mask, axis=1).astype(jnp.int32)  # [B]
    nonempty = lengths > 0  # [B]

    # Score of the given tags.
    emit = jnp.take_along_axis(emissions, tags[..., None], axis=-1)[..., 0]  # [B, T], 0 at padding
    trans = transitions[tags[:, :-1], tags[:, 1:]]  # [B, T-1]
    trans = jnp.where(mask[:, 1:], trans, 0.0)
    last = jnp.take_along_axis(tags, jnp.maximum(lengths - 1, 0)[:, None], axis=1)[:, 0]  # [B]
    gold = jnp.sum(emit, axis=1) + jnp.sum(trans, axis=1) + start[tags[:, 0]] + end[last]  # [B]

    # log Z by the forward algorithm: alpha[b, k] = log-sum of the scores of prefixes ending in k.
    def step(alpha: jax.Array, inputs: tuple[jax.Array, jax.Array]) -> tuple[jax.Array, None]:
        emit_t, mask_t = inputs  # [B, K], [B]
        nxt = jax.nn.logsumexp(alpha[:, :, None] + transitions[None], axis=1) + emit_t  # [B, K]
        return jnp.where(mask_t[:, None], nxt, alpha), None

    alpha0 = start[None] + emissions[:, 0]  # [B, K]
    xs = (jnp.swapaxes(emissions[:, 1:], 0, 1), jnp.swapaxes(mask[:, 1:], 0, 1))  # [T-1, B, K], [T-1, B]
    alpha, _ = jax.lax.scan(step, alpha0, xs)
    log_z = jax.nn.logsumexp(alpha + end[None], axis=1)  # [B]
    return jnp.where(nonempty, gold - log_z, 0.0)


@jax.jit
def viterbi_decode(emissions: jax.Array, mask: jax.Array, transitions: jax.Array, start: jax.Array,
                   end: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Best tag sequence per row: (tags int32 [B, T], 0 past each row's end; its score [B] float32,
    0.0 for a row of length 0). Shapes and dtypes as in `crf_log_likelihood`."""
    emissions, mask, (transitions, start, end) = _prepare(emissions, mask, (transitions, start, end))
    batch, steps, num_tags = emissions.shape
    if steps == 0:
        return jnp.zeros((batch, 0), jnp.int32), jnp.zeros((batch,), emissions.dtype)
    identity = jnp.broadcast_to(jnp.arange(num_tags, dtype=jnp.int32), (batch, num_tags))  # [B, K]

    # Forward: delta[b, k] = best score of a prefix ending in k; backpointers[t][b, k] = its tag at t-1.
    # A padded step keeps delta and points each tag to itself, so the backtrace started at T-1
    # walks through the padding unchanged down to the row's real last step.
    def forward(delta: jax.Array, inputs: tuple[jax.Array, jax.Array]) -> tuple[jax.Array, jax.Array]:
        emit_t, mask_t = inputs  # [B, K], [B]
        cand = delta[:, :, None] + transitions[None]  # [B, K(prev), K(next)]
        nxt = jnp.max(cand, axis=1) + emit_t  # [B, K]
        back = jnp.argmax(cand, axis=1).astype(jnp.int32)  # [B, K]
        return jnp.where(mask_t[:, None], nxt, delta), jnp.where(mask_t[:, None], back, identity)

    delta0 = start[None] + emissions[:, 0]  # [B, K]
    xs = (jnp.swapaxes(emissions[:, 1:], 0, 1), jnp.swapaxes(mask[:, 1:], 0, 1))
    delta, backpointers = jax.lax.scan(forward, delta0, xs)  # [B, K], [T-1, B, K]
    final = delta + end[None]  # [B, K]
    best_last = jnp.argmax(final, axis=1).astype(jnp.int32)  # [B]
    score = jnp.max(final, axis=1)  # [B]

    # Backtrace, reversed over t = T-1..1: the carry is the tag at t, the output the tag at t.
    def backward(tag: jax.Array, back_t: jax.Array) -> tuple[jax.Array, jax.Array]:
        prev = jnp.take_along_axis(back_t, tag[:, None], axis=1)[:, 0]  # [B]
        return prev, tag

    first, later = jax.lax.scan(backward, best_last, backpointers, reverse=True)  # [B], [T-1, B]
    tags = jnp.concatenate([first[:, None], jnp.swapaxes(later, 0, 1)], axis=1)  # [B, T]
    nonempty = jnp.any(mask, axis=1)
    return jnp.where(mask, tags, 0), jnp.where(nonempty, score, 0.0)


def tag_scheme(tags: Sequence[str]) -> str:
    """'BIOES' if any tag is S-X or E-X, else 'BIO' (IOB2): the scheme `allowed_transitions`
    assumes for a tag set (which cannot tell IOB1 from IOB2; see `tags.detect_scheme`)."""
    return BIOES if label_scheme(tags) == tags_lib.BIOES else BIO


def allowed_transitions(tags: Sequence[str], scheme: Optional[str] = None
                        ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Which transitions the tag scheme permits: (allowed bool [K, K] (from, to), start_ok bool [K],
    end_ok bool [K]). `scheme`: 'IOB1', 'IOB2' (or 'BIO') or 'BIOES'; None: from the tag set
    (`tag_scheme`: BIOES if any E-/S- tag, else BIO/IOB2).

    BIO: I-X only after B-X or I-X, never first. BIOES additionally: E-X only after B-X or I-X,
    never first; B-X and I-X only before I-X or E-X, never last. IOB1: I-X anywhere (it starts
    an entity after O or another type); B-X only after B-X or I-X, never first. O and tags
    without a B/I/E/S prefix are free except for what the rules about their neighbours imply."""
    if scheme is None:
        scheme = tag_scheme(tags)
    if scheme not in (BIO, *tags_lib.SCHEMES):
        raise ValueError(f"unknown tag scheme {scheme!r}; expected one of IOB1, IOB2, BIO, BIOES")
    parts = [split_tag(t) for t in tags]
    bioes = scheme == BIOES
    # prefixes that continue an entity begun before them (IOB1: B-X continues one X run with a new entity)
    inside = ("B",) if scheme == tags_lib.IOB1 else ("I", "E") if bioes else ("I",)
    opened = ("B", "I")  # prefixes after which the same entity may continue
    k = len(tags)
    allowed = np.ones((k, k), dtype=bool)
    for i, (prefix_i, type_i) in enumerate(parts):
        for j, (prefix_j, type_j) in enumerate(parts):
            if prefix_j in inside:
                allowed[i, j] = prefix_i in opened and type_i == type_j
            if bioes and prefix_i in opened:
                allowed[i, j] &= prefix_j in inside and type_i == type_j
    start_ok = np.array([p not in inside for p, _ in parts], dtype=bool)
    end_ok = np.array([not (bioes and p in opened) for p, _ in parts], dtype=bool)
    return allowed, start_ok, end_ok


def constraint_penalties(constraints: Optional[Any], num_tags: int) -> tuple[jax.Array, jax.Array, jax.Array]:
    """The triple of `allowed_transitions` (arrays or nested tuples, or None) -> additive penalties
    (transitions [K, K], start [K], end [K]): 0 where allowed, DISALLOWED where not."""
    shapes = ((num_tags, num_tags), (num_tags,), (num_tags,))
    if constraints is None:
        return tuple(jnp.zeros(s, jnp.float32) for s in shapes)  # type: ignore[return-value]
    out = []
    for ok, shape in zip(constraints, shapes):
        ok = np.asarray(ok, dtype=bool)
        if ok.shape != shape:
            raise ValueError(f"constraint table of shape {ok.shape}, expected {shape} for {num_tags} tags")
        out.append(jnp.asarray(np.where(ok, 0.0, DISALLOWED), jnp.float32))
    return tuple(out)  # type: ignore[return-value]


class CRF(nn.Module):
    """Linear-chain CRF layer over per-token tag scores.

    Params `transitions` [K, K], `start` [K], `end` [K] start at zero: the CRF then begins as the
    independent per-token softmax over the emissions (no arbitrary random preference among tag
    pairs), and the gradients (observed minus expected transition counts) are non-zero from the
    first step, so nothing needs breaking symmetry. `constraints` (from `allowed_transitions`) add
    DISALLOWED to forbidden scores in both the likelihood and decoding. Computes in float32."""

    num_tags: int
    constraints: Optional[Any] = None  # (allowed [K, K], start_ok [K], end_ok [K]) or None

    def setup(self) -> None:
        k = self.num_tags
        self.transitions = self.param("transitions", nn.initializers.zeros, (k, k), jnp.float32)
        self.start = self.param("start", nn.initializers.zeros, (k,), jnp.float32)
        self.end = self.param("end", nn.initializers.zeros, (k,), jnp.float32)

    def scores(self) -> tuple[jax.Array, jax.Array, jax.Array]:
        """(transitions [K, K], start [K], end [K]) with the constraint penalties added."""
        penalties = constraint_penalties(self.constraints, self.num_tags)
        return tuple(p + q for p, q in zip((self.transitions, self.start, self.end), penalties))  # type: ignore

    def __call__(self, emissions: jax.Array, tags: jax.Array, mask: jax.Array) -> jax.Array:
        """log p(tags | emissions) [B]; emissions [B, T, K], tags int [B, T], mask bool [B, T]."""
        return crf_log_likelihood(emissions, tags, mask, *self.scores())

    def decode(self, emissions: jax.Array, mask: jax.Array) -> tuple[jax.Array, jax.Array]:
        """Viterbi: (tags int32 [B, T], 0 at padding; best score [B])."""
        return viterbi_decode(emissions, mask, *self.scores())
