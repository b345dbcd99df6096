"""Softmax losses for the biLM: full softmax and TensorFlow-exact sampled softmax.

Both losses return `(sum_loss, sum_weights)` (float32 scalars) rather than a mean, so a mean or a
perplexity can be formed exactly across devices, hosts and evaluation batches:
`perplexity = exp(sum(sum_loss) / sum(sum_weights))`. A weight of 0 marks a padding position: it
contributes nothing, whatever its target id (even an out-of-range one such as -1).

Sampled softmax follows `tf.nn.sampled_softmax_loss` as bilm-tf calls it (`num_true=1`, the default
`log_uniform_candidate_sampler` with `unique=True`, `remove_accidental_hits=True`,
`subtract_log_q=True`):

* Sampler (TF `LogUniformSampler`): one draw is `k = int(exp(u * log(V + 1))) - 1` (mod V) with
  `u ~ U[0, 1)`, so `P(k) = (log(k + 2) - log(k + 1)) / log(V + 1)` over ids 0..V-1 (the vocab must
  be sorted by descending frequency). With `unique=True` TF draws with replacement until
  `num_sampled` DISTINCT ids were seen, keeps them in order of first appearance and records the
  number of draws `num_tries`.
* Expected counts (TF `ExpectedCountHelper`, computed in float32 as TF does):
  `-expm1(num_tries * log1p(-P(k)))` i.e. `1 - (1 - P(k))^num_tries`, except when
  `num_tries == num_sampled` (always for `unique=False`, and for `unique=True` when no draw was
  repeated) where TF uses `num_sampled * P(k)`. The same `num_tries` serves the true classes.
* Logits: `h . W[c] + b[c] - log(expected_count(c))` for the true class and for each of the
  `num_sampled` candidates (one set shared by every position of the batch); a candidate equal to
  the position's true class (an "accidental hit") gets the logit `-FLT_MAX` (TF adds `-FLT_MAX`,
  float32's most negative finite value, via `compute_accidental_hits`; we select it with `where`,
  which gives the same softmax and gradients and cannot overflow to -inf / produce NaN). The loss is
  the softmax cross-entropy with the true class at index 0.
  (TF's `compute_accidental_hits` maps a repeated candidate id to its LAST position only, so with
  `unique=False` TF removes only one copy of a repeated hit; we remove every copy. With the
  default `unique=True` ids are distinct and the two agree.)

The host sampler (`LogUniformSampler`, NumPy) reproduces TF's procedure draw for draw; the pure-JAX
sampler (`log_uniform_sample_jax`) gives the same joint distribution of (ids, num_tries) by
Gumbel-top-k plus geometric waiting times, usable inside `jit`.
"""
from __future__ import annotations

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from .modules import matmul as mm

# TF's accidental-hit logit: -FLT_MAX (`weights.push_back(-FLT_MAX)` in compute_accidental_hits).
ACCIDENTAL_HIT_LOGIT = float(-np.finfo(np.float32).max)

Precision = lax.Precision | str | None


# --------------------------------------------------------------------------------------------
# Full softmax
# --------------------------------------------------------------------------------------------

def _weighted_sums(losses: jax.Array, weights: jax.Array) -> tuple[jax.Array, jax.Array]:
    """(sum w * loss, sum w) in float32; `where` keeps a NaN/inf loss at a weight-0 slot out."""
    weights = weights.astype(jnp.float32)
    contrib = jnp.where(weights != 0, weights * losses, 0.0)
    return jnp.sum(contrib), jnp.sum(weights)


def _full_softmax_losses(hidden: jax.Array, targets: jax.Array, softmax_w: jax.Array,
                         softmax_b: jax.Array, precision: Precision) -> jax.Array:
    """Per-position cross-entropy [n] (float32) of logits = hidden @ W.T + b."""
    vocab_size = softmax_w.shape[0]
    logits = mm.matmul(hidden, softmax_w.astype(hidden.dtype).T, precision,
                       preferred_element_type=jnp.float32)  # [n, V] float32 accumulation
    logits = logits + softmax_b.astype(jnp.float32)
    t = jnp.clip(targets, 0, vocab_size - 1).astype(jnp.int32)
    true_logit = jnp.take_along_axis(logits, t[:, None], axis=1)[:, 0]  # [n]
    return jax.nn.logsumexp(logits, axis=-1) - true_logit


def full_softmax_loss(hidden: jax.Array, targets: jax.Array, weights: jax.Array,
                      softmax_w: jax.Array, softmax_b: jax.Array, *,
                      chunk_size: int | None = None,
                      precision: Precision = lax.Precision.HIGHEST) -> tuple[jax.Array, jax.Array]:
    """Weighted softmax cross-entropy over the whole vocabulary.

    hidden [N, P] (any float dtype; the matmul runs in hidden's dtype with float32 accumulation),
    targets [N] int, weights [N] float, softmax_w [V, P], softmax_b [V]
    -> (sum_loss, sum_weights), float32 scalars.

    `chunk_size` bounds memory for a large vocabulary: positions are processed `chunk_size` at a
    time (the [chunk, V] logits are the only big buffer) instead of materialising [N, V].
    """
    n = hidden.shape[0]
    weights = weights.astype(jnp.float32)
    if chunk_size is None or chunk_size >= n:
        losses = _full_softmax_losses(hidden, targets, softmax_w, softmax_b, precision)
        return _weighted_sums(losses, weights)
    n_chunks = -(-n // chunk_size)
    pad = n_chunks * chunk_size - n
    h = jnp.pad(hidden, ((0, pad), (0, 0))).reshape(n_chunks, chunk_size, hidden.shape[1])
    t = jnp.pad(targets, (0, pad)).reshape(n_chunks, chunk_size)
    w = jnp.pad(weights, (0, pad)).reshape(n_chunks, chunk_size)

    def one_chunk(args):
        hc, tc, wc = args
        return _weighted_sums(_full_softmax_losses(hc, tc, softmax_w, softmax_b, precision), wc)

    sums, counts = lax.map(one_chunk, (h, t, w))
    return jnp.sum(sums), jnp.sum(counts)


# --------------------------------------------------------------------------------------------
# Log-uniform candidate sampler (host, NumPy): TF's LogUniformCandidateSampler
# --------------------------------------------------------------------------------------------

def log_uniform_probability(ids: np.ndarray | int, vocab_size: int) -> np.ndarray:
    """P(k) = (log(k + 2) - log(k + 1)) / log(V + 1), float64 (TF: double, then float)."""
    k = np.asarray(ids, dtype=np.float64)
    return np.log1p(1.0 / (k + 1.0)) / math.log1p(vocab_size)


def _expected_count_np(p: np.ndarray, num_sampled: int, num_tries: int) -> np.ndarray:
    """TF ExpectedCountHelper in float32: S * p if num_tries == S, else 1 - (1 - p)^num_tries."""
    p = np.asarray(p, dtype=np.float32)
    if num_tries == num_sampled:
        return (p * np.float32(num_sampled)).astype(np.float32)
    return (-np.expm1(np.float32(num_tries) * np.log1p(-p))).astype(np.float32)


class LogUniformSampler:
    """Host-side log-uniform (Zipfian) candidate sampler with TF's exact semantics.

    `sample(rng)` follows TF's procedure draw for draw (inverse-CDF draws, with-replacement draws
    until `num_sampled` distinct ids for `unique=True`, ids in order of first appearance,
    `num_tries` = number of draws), vectorised: draws are made in chunks and the stream is cut at
    the draw that yields the last needed new id, so the result depends only on the draw stream.
    Safe to call from a prefetch thread (no shared mutable state).
    """

    def __init__(self, vocab_size: int, num_sampled: int, unique: bool = True):
        if vocab_size < 1:
            raise ValueError(f"vocab_size must be >= 1, got {vocab_size}")
        if num_sampled < 1:
            raise ValueError(f"num_sampled must be >= 1, got {num_sampled}")
        if unique and num_sampled > vocab_size:
            raise ValueError(f"unique sampling needs num_sampled <= vocab_size, got num_sampled="
                             f"{num_sampled} > vocab_size={vocab_size}")
        self.vocab_size = int(vocab_size)
        self.num_sampled = int(num_sampled)
        self.unique = bool(unique)
        self._log_range = math.log1p(vocab_size)

    def probability(self, ids: np.ndarray | int) -> np.ndarray:
        """P(k) of one draw, float64."""
        return log_uniform_probability(ids, self.vocab_size)

    def draw(self, rng: np.random.Generator, n: int) -> np.ndarray:
        """`n` independent draws [n] int64: int(exp(u * log(V + 1))) - 1, mod V (TF's guard
        against float round-off reaching V)."""
        u = rng.random(n)  # [0, 1), float64 like TF's RandDouble
        k = np.exp(u * self._log_range).astype(np.int64) - 1
        return k % self.vocab_size

    def sample(self, rng: np.random.Generator) -> tuple[np.ndarray, int]:
        """-> (sampled_ids int32 [S], num_tries). For unique=False, num_tries == S."""
        s = self.num_sampled
        if not self.unique:
            return self.draw(rng, s).astype(np.int32), s
        seen = np.zeros(self.vocab_size, dtype=bool)  # [V]
        parts: list[np.ndarray] = []
        needed, num_tries = s, 0
        chunk = max(2 * s, 256)
        while True:
            draws = self.draw(rng, chunk)  # [chunk]
            uniq, first = np.unique(draws, return_index=True)
            new = ~seen[uniq]
            uniq, first = uniq[new], first[new]
            order = np.argsort(first, kind="stable")
            uniq, first = uniq[order], first[order]  # new ids in order of first appearance
            if uniq.size >= needed:
                parts.append(uniq[:needed])
                num_tries += int(first[needed - 1]) + 1  # the stream stops at that draw
                break
            parts.append(uniq)
            seen[uniq] = True
            num_tries += chunk
            needed -= uniq.size
            # Next chunk: enough draws at the rate of new ids just observed (the rate only falls,
            # so aim 50% high); at least 256 draws, at most 64M per chunk (bounded memory).
            rate = max(uniq.size, 1) / chunk
            chunk = int(min(max(1.5 * needed / rate, 256), 1 << 26))
        return np.concatenate(parts).astype(np.int32), num_tries

    def expected_count(self, ids: np.ndarray, num_tries: int) -> np.ndarray:
        """TF's expected count of each id in a sample that took `num_tries` draws, float32."""
        return _expected_count_np(self.probability(ids), self.num_sampled, int(num_tries))


class Negatives(NamedTuple):
    """One step's shared negatives and the expected counts the sampled loss needs."""

    sampled_ids: np.ndarray  # [S] int32
    sampled_expected: np.ndarray  # [S] float32
    true_expected: np.ndarray  # targets.shape float32
    num_tries: int


def sampled_expected_counts(sampler: LogUniformSampler, targets: np.ndarray, sampled_ids: np.ndarray,
                            num_tries: int) -> tuple[np.ndarray, np.ndarray]:
    """(sampled_expected [S], true_expected [targets.shape]) float32, on the host."""
    return sampler.expected_count(sampled_ids, num_tries), sampler.expected_count(targets, num_tries)


def draw_negatives(sampler: LogUniformSampler, rng: np.random.Generator,
                   targets: np.ndarray) -> Negatives:
    """Sample one shared set of negatives and compute both expected counts (host, per step).
    For data parallelism, every host must use the same `rng` state (e.g. seeded by (seed, step))
    so all devices see the same candidates; `true_expected` is then per-host for its targets."""
    ids, tries = sampler.sample(rng)
    sampled_exp, true_exp = sampled_expected_counts(sampler, np.asarray(targets), ids, tries)
    return Negatives(ids, sampled_exp, true_exp, tries)


# --------------------------------------------------------------------------------------------
# Log-uniform sampler in JAX (inside jit)
# --------------------------------------------------------------------------------------------

def log_uniform_log_probability_jax(ids: jax.Array, vocab_size: int) -> jax.Array:
    """log P(k) in float32 (computed as log(log1p(1/(k+1))) - log(log1p(V)), no cancellation)."""
    k = ids.astype(jnp.float32)
    return jnp.log(jnp.log1p(1.0 / (k + 1.0))) - jnp.float32(math.log(math.log1p(vocab_size)))


def log_uniform_expected_count_jax(ids: jax.Array, num_tries: jax.Array, vocab_size: int,
                                   num_sampled: int, unique: bool = True) -> jax.Array:
    """TF's expected count of `ids` (any shape) given `num_tries` (scalar, may be traced), float32:
    S * P(k) when num_tries == S (or unique=False), else -expm1(num_tries * log1p(-P(k)))."""
    p = jnp.exp(log_uniform_log_probability_jax(ids, vocab_size))
    linear = p * jnp.float32(num_sampled)
    if not unique:
        return linear
    unique_count = -jnp.expm1(jnp.asarray(num_tries).astype(jnp.float32) * jnp.log1p(-p))
    return jnp.where(jnp.asarray(num_tries) == num_sampled, linear, unique_count)


def log_uniform_sample_jax(key: jax.Array, vocab_size: int, num_sampled: int) -> tuple[jax.Array, jax.Array]:
    """TF unique log-uniform sampling inside jit -> (ids int32 [S], num_tries int32 []).

    Not TF's draw stream, but the same joint distribution of (ordered ids, num_tries):
    * the distinct ids of an i.i.d. stream, in order of first appearance, are a sequential
      sample without replacement with probabilities proportional to P; Gumbel-top-k over log P
      (top_k of log P + Gumbel noise, sorted descending) yields exactly that order law;
    * given those ids, the draws wasted on already-seen ids before the (i+1)-th new id are
      Geometric with failure probability m_i = P(ids[:i]) (independent over i), sampled as
      floor(log U / log m_i); num_tries = S + their sum.
    Each wait is capped so that the int32 sum cannot overflow (reached only if m_i is within
    ~1e-5 of 1, i.e. S close to V: then num_tries saturates and the expected counts are ~1).
    Cost: O(V) noise and a top-k over V per call.
    """
    k_gumbel, k_wait = jax.random.split(key)
    logp = log_uniform_log_probability_jax(jnp.arange(vocab_size), vocab_size)  # [V]
    gumbel = jax.random.gumbel(k_gumbel, (vocab_size,), jnp.float32)
    _, ids = lax.top_k(logp + gumbel, num_sampled)  # [S], Plackett-Luce order
    p = jnp.exp(logp)  # [V]
    p_sel = p[ids]  # [S]
    unselected = jnp.sum(jnp.where(jnp.zeros(vocab_size, bool).at[ids].set(True), 0.0, p))
    # remaining_i = mass not yet seen before the i-th new id: sums of positive terms only.
    remaining = unselected + jnp.cumsum(p_sel[::-1])[::-1]  # [S]
    total = remaining[0]
    log_seen = jnp.log1p(-remaining / total)  # log m_i; -inf at i = 0 (nothing seen: no waits)
    u = jax.random.uniform(k_wait, (num_sampled,), jnp.float32, minval=jnp.finfo(jnp.float32).tiny)
    cap = (2 ** 31 - 1 - num_sampled) // num_sampled
    waits = jnp.floor(jnp.minimum(jnp.log(u) / log_seen, cap))  # log_seen=-inf -> 0
    waits = jnp.where(jnp.arange(num_sampled) == 0, 0.0, waits)
    num_tries = num_sampled + jnp.sum(waits.astype(jnp.int32))
    return ids.astype(jnp.int32), num_tries


# --------------------------------------------------------------------------------------------
# Sampled softmax loss
# --------------------------------------------------------------------------------------------

def sampled_softmax_logits(hidden: jax.Array, targets: jax.Array, softmax_w: jax.Array,
                           softmax_b: jax.Array, sampled_ids: jax.Array, sampled_expected: jax.Array,
                           true_expected: jax.Array, remove_accidental_hits: bool = True, *,
                           precision: Precision = lax.Precision.HIGHEST) -> jax.Array:
    """TF `_compute_sampled_logits`: float32 logits [N, 1 + S], true class at column 0.

    Rows of W are gathered with `jnp.take` (only S + N rows are read; the gradient to W is a
    scatter-add into those rows), so this works for a 793k-word softmax.
    """
    true_logits, sampled_logits = _sampled_logit_parts(hidden, targets, softmax_w, softmax_b, sampled_ids,
                                                       sampled_expected, true_expected, remove_accidental_hits,
                                                       precision)
    return jnp.concatenate([true_logits[:, None], sampled_logits], axis=1)


def _sampled_logit_parts(hidden, targets, softmax_w, softmax_b, sampled_ids, sampled_expected, true_expected,
                         remove_accidental_hits, precision) -> tuple[jax.Array, jax.Array]:
    """`sampled_softmax_logits` as (true logits [N], sampled logits [N, S])."""
    vocab_size = softmax_w.shape[0]
    cdt = hidden.dtype
    t = jnp.clip(targets, 0, vocab_size - 1).astype(jnp.int32)  # [N]; padding ids made valid
    true_w = jnp.take(softmax_w, t, axis=0).astype(cdt)  # [N, P]
    # a row-wise dot product, not a matmul: float32 under `matmul.BF16_OPERANDS` too
    true_logits = jnp.einsum("np,np->n", hidden, true_w, precision=None if mm.bf16_operands(precision) else precision,
                             preferred_element_type=jnp.float32)
    true_logits = true_logits + jnp.take(softmax_b, t).astype(jnp.float32)  # [N]
    s_w = jnp.take(softmax_w, sampled_ids, axis=0, mode="clip").astype(cdt)  # [S, P]
    sampled_logits = mm.matmul(hidden, s_w.T, precision, preferred_element_type=jnp.float32)  # [N, S]
    sampled_logits = sampled_logits + jnp.take(softmax_b, sampled_ids, mode="clip").astype(jnp.float32)
    true_logits = true_logits - jnp.log(true_expected.astype(jnp.float32))
    sampled_logits = sampled_logits - jnp.log(sampled_expected.astype(jnp.float32))[None, :]
    if remove_accidental_hits:
        hits = targets[:, None] == sampled_ids[None, :]  # [N, S]
        sampled_logits = jnp.where(hits, ACCIDENTAL_HIT_LOGIT, sampled_logits)
    return true_logits, sampled_logits


def sampled_softmax_loss(hidden: jax.Array, targets: jax.Array, weights: jax.Array,
                         softmax_w: jax.Array, softmax_b: jax.Array, sampled_ids: jax.Array,
                         sampled_expected: jax.Array, true_expected: jax.Array,
                         remove_accidental_hits: bool = True, *,
                         precision: Precision = lax.Precision.HIGHEST) -> tuple[jax.Array, jax.Array]:
    """Weighted sampled-softmax cross-entropy with TF semantics (see the module docstring).

    hidden [N, P], targets [N] int, weights [N], softmax_w [V, P], softmax_b [V],
    sampled_ids [S] int (shared by all N positions), sampled_expected [S], true_expected [N]
    -> (sum_loss, sum_weights), float32 scalars.
    """
    true_logits, sampled_logits = _sampled_logit_parts(hidden, targets, softmax_w, softmax_b, sampled_ids,
                                                       sampled_expected, true_expected, remove_accidental_hits,
                                                       precision)
    # logsumexp over [true, sampled] without concatenating them: the [N, 1 + S] copy and, in the
    # backward pass, the pad that splits its gradient cost ~3.5% of a mid-shape CPU step
    top = jax.lax.stop_gradient(jnp.maximum(true_logits, jnp.max(sampled_logits, axis=1)))  # [N]
    total = jnp.exp(true_logits - top) + jnp.sum(jnp.exp(sampled_logits - top[:, None]), axis=1)
    losses = top + jnp.log(total) - true_logits  # [N]
    return _weighted_sums(losses, weights)
