"""Linear-chain CRF: likelihood and Viterbi against brute-force enumeration in NumPy float64,
padding invariance, gradients (exact marginals and central differences), BIO/BIOES constraints,
and the Flax module under jit, trained on a toy tagging task."""
from __future__ import annotations

import itertools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from elmo_jax.tasks.crf import (CRF, DISALLOWED, allowed_transitions, crf_log_likelihood, tag_scheme,
                                viterbi_decode)

log_likelihood, decode = crf_log_likelihood, viterbi_decode  # both jitted by the library

BIO_TAGS = ["O", "B-PER", "I-PER", "B-LOC", "I-LOC"]
BIOES_TAGS = ["O", "B-X", "I-X", "E-X", "S-X"]


# ----------------------------------------------------------------------------- NumPy reference

def path_score(em: np.ndarray, path: tuple[int, ...], trans: np.ndarray, start: np.ndarray,
               end: np.ndarray) -> float:
    """Score of one tag path over em [L, K] (float64), written out from the definition."""
    s = start[path[0]] + end[path[-1]]
    for t, y in enumerate(path):
        s += em[t, y]
        if t:
            s += trans[path[t - 1], y]
    return float(s)


def brute_force(em: np.ndarray, trans: np.ndarray, start: np.ndarray, end: np.ndarray
                ) -> tuple[list[tuple[int, ...]], np.ndarray]:
    """All K^L paths of em [L, K] and their scores (float64)."""
    paths = list(itertools.product(range(em.shape[1]), repeat=em.shape[0]))
    return paths, np.array([path_score(em, p, trans, start, end) for p in paths])


def log_sum_exp(x: np.ndarray) -> float:
    m = np.max(x)
    return float(m + np.log(np.sum(np.exp(x - m))))


def random_problem(seed: int, batch_lengths: list[int], num_tags: int, steps: int
                   ) -> tuple[np.ndarray, ...]:
    """emissions [B, T, K], tags [B, T], mask [B, T] (left-aligned), transitions, start, end;
    garbage emissions and tags at the padded steps."""
    rng = np.random.default_rng(seed)
    b = len(batch_lengths)
    em = rng.normal(size=(b, steps, num_tags)) * 2.0
    mask = np.arange(steps)[None, :] < np.array(batch_lengths)[:, None]
    em[~mask] = rng.normal(size=(int((~mask).sum()), num_tags)) * 100.0
    tags = rng.integers(0, num_tags, size=(b, steps))
    trans, start, end = rng.normal(size=(num_tags, num_tags)), rng.normal(size=num_tags), rng.normal(size=num_tags)
    return em, tags, mask, trans, start, end


LENGTHS = [5, 3, 1, 0, 4]


# ----------------------------------------------------------------------------- likelihood

@pytest.mark.parametrize("num_tags,steps,seed", [(3, 5, 0), (4, 4, 1), (4, 1, 2)])
def test_log_likelihood_matches_brute_force(num_tags: int, steps: int, seed: int) -> None:
    lengths = [min(n, steps) for n in LENGTHS]
    em, tags, mask, trans, start, end = random_problem(seed, lengths, num_tags, steps)
    got = np.asarray(log_likelihood(jnp.asarray(em, jnp.float32), tags, mask, trans, start, end))
    assert got.shape == (len(lengths),) and got.dtype == np.float32
    for b, n in enumerate(lengths):
        if n == 0:
            assert got[b] == 0.0
            continue
        _, scores = brute_force(em[b, :n], trans, start, end)
        want = path_score(em[b, :n], tuple(tags[b, :n]), trans, start, end) - log_sum_exp(scores)
        np.testing.assert_allclose(got[b], want, rtol=1e-5, atol=1e-4)


def test_probabilities_of_all_sequences_sum_to_one() -> None:
    num_tags, n, steps = 3, 4, 6  # one row of length 4 inside T = 6
    em, _, _, trans, start, end = random_problem(3, [n], num_tags, steps)
    paths = list(itertools.product(range(num_tags), repeat=n))
    tags = np.zeros((len(paths), steps), np.int64)
    tags[:, :n] = paths
    mask = np.broadcast_to(np.arange(steps) < n, tags.shape)
    ems = np.broadcast_to(em, (len(paths), steps, num_tags))
    ll = np.asarray(log_likelihood(ems, tags, mask, trans, start, end), np.float64)
    np.testing.assert_allclose(np.sum(np.exp(ll)), 1.0, rtol=1e-5)
    assert np.argmax(ll) == paths.index(tuple(np.asarray(decode(ems[:1], mask[:1], trans, start, end)[0][0, :n])))


# ----------------------------------------------------------------------------- Viterbi

@pytest.mark.parametrize("num_tags,steps,seed", [(3, 5, 10), (4, 5, 11), (4, 1, 12)])
def test_viterbi_matches_brute_force(num_tags: int, steps: int, seed: int) -> None:
    lengths = [min(n, steps) for n in LENGTHS]
    em, _, mask, trans, start, end = random_problem(seed, lengths, num_tags, steps)
    tags, score = decode(jnp.asarray(em, jnp.float32), mask, trans, start, end)
    tags, score = np.asarray(tags), np.asarray(score)
    assert tags.shape == mask.shape and tags.dtype == np.int32 and score.shape == (len(lengths),)
    assert np.all(tags[~mask] == 0)
    for b, n in enumerate(lengths):
        if n == 0:
            assert score[b] == 0.0
            continue
        paths, scores = brute_force(em[b, :n], trans, start, end)
        assert tuple(tags[b, :n]) == paths[int(np.argmax(scores))]
        np.testing.assert_allclose(score[b], np.max(scores), rtol=1e-5, atol=1e-4)


def test_padding_invariance() -> None:
    num_tags, steps = 4, 5
    em, tags, mask, trans, start, end = random_problem(20, LENGTHS, num_tags, steps)
    extra = 3
    rng = np.random.default_rng(21)
    em2 = np.concatenate([em, rng.normal(size=(len(LENGTHS), extra, num_tags)) * 1e4], axis=1)
    em2[~np.pad(mask, ((0, 0), (0, extra)))] *= -3.0  # other garbage at every padded step
    em2[0, -1] = np.inf  # even non-finite garbage stays out
    tags2 = np.concatenate([tags, rng.integers(0, num_tags, size=(len(LENGTHS), extra))], axis=1)
    tags2[~np.pad(mask, ((0, 0), (0, extra)))] = num_tags + 7  # out-of-range tags at padding
    mask2 = np.pad(mask, ((0, 0), (0, extra)))
    ll1 = log_likelihood(em, tags, mask, trans, start, end)
    ll2 = log_likelihood(em2, tags2, mask2, trans, start, end)
    np.testing.assert_allclose(np.asarray(ll2), np.asarray(ll1), rtol=1e-6, atol=1e-6)
    t1, s1 = decode(em, mask, trans, start, end)
    t2, s2 = decode(em2, mask2, trans, start, end)
    np.testing.assert_array_equal(np.asarray(t2[:, :steps]), np.asarray(t1))
    assert np.all(np.asarray(t2[:, steps:]) == 0)
    np.testing.assert_allclose(np.asarray(s2), np.asarray(s1), rtol=1e-6)
    grads = jax.jit(jax.grad(lambda e: jnp.sum(crf_log_likelihood(e, tags2, mask2, trans, start, end))))(em2)
    assert np.all(np.isfinite(np.asarray(grads)))


# ----------------------------------------------------------------------------- gradients

def mean_nll(params: dict, em: jax.Array, tags: np.ndarray, mask: np.ndarray) -> jax.Array:
    return -jnp.mean(crf_log_likelihood(em, tags, mask, params["transitions"], params["start"], params["end"]))


nll_grad = jax.jit(jax.grad(mean_nll, argnums=(0, 1)))


def test_gradients_equal_observed_minus_expected_counts() -> None:
    """d log p / d emissions[t, k] = [y_t = k] - p(y_t = k), d / d transitions[i, j] = count of
    (i, j) in y - its expectation, with the marginals from brute-force enumeration."""
    num_tags, steps = 3, 5
    em, tags, mask, trans, start, end = random_problem(30, LENGTHS, num_tags, steps)
    params = {"transitions": jnp.asarray(trans, jnp.float32), "start": jnp.asarray(start, jnp.float32),
              "end": jnp.asarray(end, jnp.float32)}
    g_params, g_em = nll_grad(params, jnp.asarray(em, jnp.float32), tags, mask)
    b = len(LENGTHS)
    want_em = np.zeros_like(em)
    want = {"transitions": np.zeros_like(trans), "start": np.zeros_like(start), "end": np.zeros_like(end)}
    for r, n in enumerate(LENGTHS):
        if n == 0:
            continue
        paths, scores = brute_force(em[r, :n], trans, start, end)
        probs = np.exp(scores - log_sum_exp(scores))
        for path, weight in [(tuple(tags[r, :n]), -1.0)] + [(p, q) for p, q in zip(paths, probs)]:
            w = weight / b  # gradient of the mean negative log-likelihood
            want["start"][path[0]] += w
            want["end"][path[-1]] += w
            for t, y in enumerate(path):
                want_em[r, t, y] += w
                if t:
                    want["transitions"][path[t - 1], y] += w
    for name in want:
        np.testing.assert_allclose(np.asarray(g_params[name]), want[name], atol=2e-6)
    np.testing.assert_allclose(np.asarray(g_em), want_em, atol=2e-6)  # zero at padding and the empty row
    assert not np.any(np.asarray(g_em)[LENGTHS.index(0)])


def test_gradients_finite_and_match_central_differences() -> None:
    num_tags, steps = 4, 5
    em, tags, mask, trans, start, end = random_problem(40, LENGTHS, num_tags, steps)
    with jax.enable_x64(True):
        params = {"transitions": jnp.asarray(trans), "start": jnp.asarray(start), "end": jnp.asarray(end)}
        em64 = jnp.asarray(em)
        f = jax.jit(mean_nll)
        assert np.isfinite(float(f(params, em64, tags, mask)))
        g_params, g_em = nll_grad(params, em64, tags, mask)
        for g in [*g_params.values(), g_em]:
            assert np.all(np.isfinite(np.asarray(g)))
        eps = 1e-4
        for name, index in [("transitions", (1, 2)), ("transitions", (3, 3)), ("start", (0,)), ("end", (2,))]:
            step = np.zeros(params[name].shape)
            step[index] = eps
            plus = {**params, name: params[name] + step}
            minus = {**params, name: params[name] - step}
            fd = (float(f(plus, em64, tags, mask)) - float(f(minus, em64, tags, mask))) / (2 * eps)
            np.testing.assert_allclose(float(g_params[name][index]), fd, rtol=1e-5, atol=1e-8)
        for index in [(0, 2, 1), (2, 0, 3)]:  # emissions inside rows of length 1 and 5
            step = np.zeros(em.shape)
            step[index] = eps
            fd = (float(f(params, em64 + step, tags, mask)) - float(f(params, em64 - step, tags, mask))) / (2 * eps)
            np.testing.assert_allclose(float(g_em[index]), fd, rtol=1e-5, atol=1e-8)
    # float32, all rows empty: log-likelihood 0, gradients 0 (not NaN)
    empty = np.zeros_like(mask)
    p32 = {k: jnp.asarray(v, jnp.float32) for k, v in zip(("transitions", "start", "end"), (trans, start, end))}
    g_params, g_em = nll_grad(p32, jnp.asarray(em, jnp.float32), tags, empty)
    for g in [*g_params.values(), g_em]:
        assert np.all(np.asarray(g) == 0.0)


# ----------------------------------------------------------------------------- constraints

def test_allowed_transitions_bio_table() -> None:
    assert tag_scheme(BIO_TAGS) == "BIO"
    allowed, start_ok, end_ok = allowed_transitions(BIO_TAGS)
    #                    to: O  B-P I-P B-L I-L        from:
    want = np.array([[1, 1, 0, 1, 0],   # O
                     [1, 1, 1, 1, 0],   # B-PER
                     [1, 1, 1, 1, 0],   # I-PER
                     [1, 1, 0, 1, 1],   # B-LOC
                     [1, 1, 0, 1, 1]],  # I-LOC
                    dtype=bool)
    np.testing.assert_array_equal(allowed, want)
    np.testing.assert_array_equal(start_ok, [1, 1, 0, 1, 0])
    np.testing.assert_array_equal(end_ok, [1, 1, 1, 1, 1])
    assert allowed.dtype == start_ok.dtype == end_ok.dtype == np.bool_


def test_allowed_transitions_bioes_table() -> None:
    tags = BIOES_TAGS + ["S-Y", "<pad>"]
    assert tag_scheme(tags) == "BIOES"
    allowed, start_ok, end_ok = allowed_transitions(tags)
    #                    to: O  B-X I-X E-X S-X S-Y pad      from:
    want = np.array([[1, 1, 0, 0, 1, 1, 1],   # O
                     [0, 0, 1, 1, 0, 0, 0],   # B-X
                     [0, 0, 1, 1, 0, 0, 0],   # I-X
                     [1, 1, 0, 0, 1, 1, 1],   # E-X
                     [1, 1, 0, 0, 1, 1, 1],   # S-X
                     [1, 1, 0, 0, 1, 1, 1],   # S-Y
                     [1, 1, 0, 0, 1, 1, 1]],  # <pad> (no prefix)
                    dtype=bool)
    np.testing.assert_array_equal(allowed, want)
    np.testing.assert_array_equal(start_ok, [1, 1, 0, 0, 1, 1, 1])
    np.testing.assert_array_equal(end_ok, [1, 0, 0, 1, 1, 1, 1])


def is_valid(path: np.ndarray, constraints: tuple[np.ndarray, np.ndarray, np.ndarray]) -> bool:
    allowed, start_ok, end_ok = constraints
    return bool(start_ok[path[0]] and end_ok[path[-1]] and all(allowed[a, b] for a, b in zip(path[:-1], path[1:])))


def test_constrained_decoding_never_yields_invalid_transitions() -> None:
    k = len(BIO_TAGS)
    constraints = allowed_transitions(BIO_TAGS)
    crf = CRF(k, constraints)
    # emissions strongly favour O I-PER I-PER O I-LOC (invalid twice), plus random rows
    favoured = [0, 2, 2, 0, 4]
    em = np.full((1, 5, k), -5.0)
    em[0, np.arange(5), favoured] = 20.0
    rng = np.random.default_rng(50)
    em = np.concatenate([em, rng.normal(size=(7, 5, k)) * 10.0]).astype(np.float32)
    lengths = np.array([5, 5, 4, 3, 2, 1, 5, 0])
    mask = np.arange(5)[None] < lengths[:, None]
    variables = crf.init(jax.random.PRNGKey(0), em, np.zeros((8, 5), np.int32), mask)
    variables = jax.tree_util.tree_map(lambda p: p + np.random.default_rng(51).normal(size=p.shape), variables)
    tags, score = jax.jit(lambda v, e, m: crf.apply(v, e, m, method=CRF.decode))(variables, em, mask)
    tags = np.asarray(tags)
    assert tuple(tags[0]) != tuple(favoured)
    p = variables["params"]
    trans, start, end = (np.asarray(p[n], np.float64) for n in ("transitions", "start", "end"))
    for b, n in enumerate(lengths):
        if n == 0:
            continue
        assert is_valid(tags[b, :n], constraints), [BIO_TAGS[t] for t in tags[b, :n]]
        paths, scores = brute_force(em[b, :n].astype(np.float64), trans, start, end)
        valid = [i for i, path in enumerate(paths) if is_valid(np.array(path), constraints)]
        best = valid[int(np.argmax(scores[valid]))]
        assert tuple(tags[b, :n]) == paths[best]  # the best valid path, not just some valid one
        np.testing.assert_allclose(float(score[b]), scores[best], rtol=1e-5)
    # the invalid gold sequence is (nearly) impossible, yet finite
    ll = jax.jit(crf.apply)(variables, em[:1], np.array([favoured]), mask[:1])
    assert np.isfinite(float(ll[0])) and float(ll[0]) < DISALLOWED / 2


# ----------------------------------------------------------------------------- the Flax module

def test_module_init_call_decode_under_jit() -> None:
    k, b, t = 4, 3, 6
    crf = CRF(k)
    em = jax.random.normal(jax.random.PRNGKey(0), (b, t, k)).astype(jnp.bfloat16)
    mask = jnp.arange(t)[None] < jnp.array([6, 2, 0])[:, None]
    tags = jnp.zeros((b, t), jnp.int32)
    variables = jax.jit(crf.init)(jax.random.PRNGKey(1), em, tags, mask)
    assert {n: v.shape for n, v in variables["params"].items()} == {"transitions": (k, k), "start": (k,), "end": (k,)}
    ll = jax.jit(crf.apply)(variables, em, tags, mask)
    assert ll.shape == (b,) and ll.dtype == jnp.float32 and float(ll[2]) == 0.0
    # zero params: the CRF is the per-token softmax over the emissions
    logp = jax.nn.log_softmax(em.astype(jnp.float32), axis=-1)[..., 0]
    np.testing.assert_allclose(np.asarray(ll), np.asarray(jnp.sum(jnp.where(mask, logp, 0.0), axis=1)), rtol=1e-5)
    decoded, score = jax.jit(lambda v, e, m: crf.apply(v, e, m, method=CRF.decode))(variables, em, mask)
    assert decoded.dtype == jnp.int32 and score.dtype == jnp.float32
    want = jnp.where(mask, jnp.argmax(em.astype(jnp.float32), axis=-1), 0)
    np.testing.assert_array_equal(np.asarray(decoded), np.asarray(want))


class ToyTagger(nn.Module):
    """One-hot tokens -> Dense emissions -> CRF (a parent holding the CRF as a submodule)."""

    vocab: int
    num_tags: int

    def setup(self) -> None:
        self.emit = nn.Dense(self.num_tags)
        self.crf = CRF(self.num_tags)

    def __call__(self, tokens: jax.Array, tags: jax.Array, mask: jax.Array) -> jax.Array:
        return self.crf(self.emit(jax.nn.one_hot(tokens, self.vocab)), tags, mask)

    def predict(self, tokens: jax.Array, mask: jax.Array) -> tuple[jax.Array, jax.Array]:
        return self.crf.decode(self.emit(jax.nn.one_hot(tokens, self.vocab)), mask)


def toy_tags(tokens: np.ndarray) -> np.ndarray:
    """Tags O=0 B=1 I=2: token 1 -> B, token 2 -> I right after B or I, else O. Token 2's tag
    depends on the previous tag, which only the CRF's transitions can see."""
    tags = np.zeros_like(tokens)
    for b in range(tokens.shape[0]):
        for t in range(tokens.shape[1]):
            if tokens[b, t] == 1:
                tags[b, t] = 1
            elif tokens[b, t] == 2 and t > 0 and tags[b, t - 1] in (1, 2):
                tags[b, t] = 2
    return tags


def test_toy_training_reaches_full_accuracy() -> None:
    rng = np.random.default_rng(60)
    vocab, k, b, t = 4, 3, 32, 8
    tokens = rng.choice(vocab, size=(b, t), p=[0.3, 0.2, 0.4, 0.1])
    mask = np.arange(t)[None] < rng.integers(1, t + 1, size=b)[:, None]
    tags = toy_tags(tokens)
    model = ToyTagger(vocab, k)
    params = jax.jit(model.init)(jax.random.PRNGKey(0), tokens, tags, mask)["params"]
    opt = optax.adam(0.1)
    state = opt.init(params)

    @jax.jit
    def step(params: dict, state: optax.OptState) -> tuple[dict, optax.OptState, jax.Array]:
        loss, grads = jax.value_and_grad(lambda p: -jnp.mean(model.apply({"params": p}, tokens, tags, mask)))(params)
        updates, state = opt.update(grads, state)
        return optax.apply_updates(params, updates), state, loss

    losses = []
    for _ in range(100):
        params, state, loss = step(params, state)
        losses.append(float(loss))
    assert losses[-1] < 0.1 * losses[0]
    predicted, _ = jax.jit(lambda p, x, m: model.apply({"params": p}, x, m, method=ToyTagger.predict))(params, tokens, mask)
    predicted = np.asarray(predicted)
    np.testing.assert_array_equal(predicted[mask], tags[mask])
    assert np.all(predicted[~mask] == 0)
    # fresh sentences (not trained on) that need the context: 2 after O is O, after B/I it is I
    fresh = np.array([[2, 1, 2, 2, 0, 2, 3, 2], [1, 2, 0, 2, 2, 1, 1, 2]])
    fresh_mask = np.ones_like(fresh, dtype=bool)
    got, _ = jax.jit(lambda p, x, m: model.apply({"params": p}, x, m, method=ToyTagger.predict))(params, fresh, fresh_mask)
    np.testing.assert_array_equal(np.asarray(got), toy_tags(fresh))


def test_allowed_transitions_iob1_table() -> None:
    """IOB1 (original CoNLL-2003): an entity starts with I-X, at the sentence start or after O or
    another type; B-X only right after an X entity (B-X or I-X), never first."""
    tags = ["O", "B-PER", "I-PER", "I-LOC"]
    allowed, start_ok, end_ok = allowed_transitions(tags, scheme="IOB1")
    #                    to: O  B-P I-P I-L        from:
    want = np.array([[1, 0, 1, 1],   # O
                     [1, 1, 1, 1],   # B-PER
                     [1, 1, 1, 1],   # I-PER
                     [1, 0, 1, 1]],  # I-LOC
                    dtype=bool)
    np.testing.assert_array_equal(allowed, want)
    np.testing.assert_array_equal(start_ok, [1, 0, 1, 1])
    np.testing.assert_array_equal(end_ok, [1, 1, 1, 1])
    # a label set alone cannot tell IOB1 from IOB2: without a scheme, BIO (IOB2) rules
    assert tag_scheme(tags) == "BIO"
    assert not allowed_transitions(tags)[0][0, 2]
