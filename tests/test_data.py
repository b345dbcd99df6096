"""The pretraining batcher against hand-computed batches and an independent bilm-tf-style oracle;
host row splits, exact resume, evaluation coverage, seeding, prefetch, and input errors."""
from __future__ import annotations

import gc
import itertools
import os
from pathlib import Path
from typing import Callable, Iterable, Iterator, Optional

os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

import datasets  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from elmo_jax.chars import token_to_char_ids  # noqa: E402
from elmo_jax.chars import char_table  # noqa: E402
from elmo_jax.config import ConfigError, TrainConfig  # noqa: E402
from elmo_jax.data import BATCH_KEYS, Batch, Batcher  # noqa: E402
from elmo_jax.prefetch import prefetch  # noqa: E402

#: The batch seen through the input table: vocab ids and raw char ids of the inputs.
VIEW_KEYS = ("tokens_fwd", "tokens_bwd", "chars_fwd", "chars_bwd", "targets_fwd", "targets_bwd",
             "weights_fwd", "weights_bwd")
from elmo_jax.errors import DataError, ElmoError, InputError  # noqa: E402
from elmo_jax.tokenize import Tokenizer  # noqa: E402
from elmo_jax.train.loop import make_batcher  # noqa: E402
from elmo_jax.train.rundir import resolve_tokenizer  # noqa: E402
from elmo_jax.vocab import Vocabulary, build_vocab, count_tokens  # noqa: E402

from conftest import wait_until  # noqa: E402

datasets.disable_progress_bars()

VOCAB = Vocabulary(["<S>", "</S>", "<UNK>", "the", "cat", "sat", "a"])
OOV_WORDS = ["dog", "zebra", "caf\u00e9"]


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> str:
    """One `datasets` cache for the module, so repeated Batchers over the same files are fast."""
    return str(tmp_path_factory.mktemp("hf_cache"))


def write_shards(directory: Path, shards: list[list[str]]) -> list[str]:
    """One file per shard, one line per sentence string (blank strings make blank lines)."""
    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    for k, lines in enumerate(shards):
        path = directory / f"shard{k:02d}.txt"
        path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
        paths.append(str(path))
    return paths


# --------------------------------------------------------------------------- independent oracle
def oracle(row_sentences: Callable[[int], Iterable[list[str]]], B: int, T: int, vocab: Vocabulary,
           max_batches: int) -> list[dict[str, np.ndarray]]:
    """bilm-tf `_get_batch`, written from the spec with token strings: each row keeps the rest of
    its current `[<S>, w.., </S>]` list and takes `min(len - 1, room)` (input, next) pairs."""
    gens = [iter(row_sentences(r)) for r in range(B)]
    streams: list[Optional[tuple[list[str], list[str]]]] = [None] * B
    out = []
    for _ in range(max_batches):
        cols: dict[str, list] = {k: [] for k in ("fi", "ft", "bi", "bt", "w")}
        for r in range(B):
            fi: list[str] = []
            ft: list[str] = []
            bi: list[str] = []
            bt: list[str] = []
            while len(fi) < T:
                if streams[r] is None or len(streams[r][0]) <= 1:
                    try:
                        s = list(next(gens[r]))
                    except StopIteration:
                        break
                    streams[r] = (["<S>", *s, "</S>"], ["</S>", *s[::-1], "<S>"])
                f, b = streams[r]
                n = min(len(f) - 1, T - len(fi))
                fi += f[:n]
                ft += f[1:n + 1]
                bi += b[:n]
                bt += b[1:n + 1]
                streams[r] = (f[n:], b[n:])
            w = [1.0] * len(fi) + [0.0] * (T - len(fi))
            pad = ["<S>"] * (T - len(fi))
            for key, seq in (("fi", fi + pad), ("ft", ft + pad), ("bi", bi + pad), ("bt", bt + pad)):
                cols[key].append(seq)
            cols["w"].append(w)
        w = np.array(cols["w"], np.float32)
        if not w.any():
            break
        ids = np.vectorize(vocab.word_to_id, otypes=[np.int32])
        chars = lambda rows: np.array([[token_to_char_ids(t, shift=False) for t in row] for row in rows], np.int32)
        out.append({"tokens_fwd": ids(cols["fi"]), "tokens_bwd": ids(cols["bi"]),
                    "chars_fwd": chars(cols["fi"]), "chars_bwd": chars(cols["bi"]),
                    "targets_fwd": ids(cols["ft"]), "targets_bwd": ids(cols["bt"]),
                    "weights_fwd": w, "weights_bwd": w.copy()})
    return out


def expand(source, batch: dict) -> dict:
    """A Batcher batch (input-table ids) -> vocab ids (`tokens_*`) and raw char ids (`chars_*`) of
    its inputs, through the batcher's own input table; checks the batch has exactly BATCH_KEYS."""
    assert set(batch) == set(BATCH_KEYS)
    b = getattr(source, "batcher", source)
    out = {k: v for k, v in batch.items() if not k.startswith("inputs_")}
    for d in ("fwd", "bwd"):
        ids = batch[f"inputs_{d}"]
        assert ids.dtype == np.int32
        out[f"tokens_{d}"] = b.corpus.input_to_target[ids]
        out[f"chars_{d}"] = b.corpus.input_chars[ids].astype(np.int32)
    return out


def take(batcher: Iterator[dict], n: int) -> list[dict]:
    return [expand(batcher, x) for x in itertools.islice(batcher, n)]


def assert_batches_equal(got: list[dict], want: list[dict]) -> None:
    assert len(got) == len(want)
    for i, (g, w) in enumerate(zip(got, want)):
        assert set(g) == set(VIEW_KEYS)
        for k in VIEW_KEYS:
            assert g[k].dtype == w[k].dtype, (i, k)
            np.testing.assert_array_equal(g[k], w[k], err_msg=f"batch {i} key {k}")


def sentences_of(paths: list[str]) -> list[list[str]]:
    out = []
    for p in paths:
        out += [line.split() for line in Path(p).read_text(encoding="utf-8").splitlines() if line.split()]
    return out


# --------------------------------------------------------------------------- hand-checked
def test_first_two_batches_by_hand(tmp_path: Path, cache_dir: str) -> None:
    """B=2 rows, windows of 3, file order. Row 0 takes sentences 0, 2, 0, ...; row 1 takes 1, 3.
    s0 = the cat sat | s1 = a dog (dog OOV) | s2 = cat sat | s3 = dog the a."""
    files = write_shards(tmp_path, [["the cat sat", "a dog", ""], ["cat sat", "dog the a"]])
    b = Batcher(files, VOCAB, global_batch_size=2, unroll_steps=3, shuffle=False, cache_dir=cache_dir)
    S, E, U, the, cat, sat, a = range(7)
    b1, b2 = take(b, 2)
    # forward: row 0 cuts s0 after 3 pairs; its last pair (sat -> </S>) opens batch 2, then s2.
    np.testing.assert_array_equal(b1["tokens_fwd"], [[S, the, cat], [S, a, U]])
    np.testing.assert_array_equal(b1["targets_fwd"], [[the, cat, sat], [a, U, E]])
    np.testing.assert_array_equal(b2["tokens_fwd"], [[sat, S, cat], [S, U, the]])
    np.testing.assert_array_equal(b2["targets_fwd"], [[E, cat, sat], [U, the, a]])
    # backward: each sentence reversed with the markers swapped: </S> sat cat the <S>
    np.testing.assert_array_equal(b1["tokens_bwd"], [[E, sat, cat], [E, U, a]])
    np.testing.assert_array_equal(b1["targets_bwd"], [[sat, cat, the], [U, a, S]])
    np.testing.assert_array_equal(b2["tokens_bwd"], [[the, E, sat], [E, a, the]])
    np.testing.assert_array_equal(b2["targets_bwd"], [[S, sat, cat], [a, the, U]])
    # chars: raw training ids; the OOV input 'dog' keeps its spelling while its target is <UNK>
    dog = token_to_char_ids("dog", shift=False)
    np.testing.assert_array_equal(b1["chars_fwd"][1, 2], dog)
    np.testing.assert_array_equal(b1["chars_fwd"][1, 2, :5], [258, ord("d"), ord("o"), ord("g"), 259])
    np.testing.assert_array_equal(b1["chars_fwd"][0, 0, :4], [258, 256, 259, 260])  # <S> marker
    np.testing.assert_array_equal(b1["chars_bwd"][0, 0, :4], [258, 257, 259, 260])  # </S> marker
    np.testing.assert_array_equal(b2["chars_bwd"][1, 2], token_to_char_ids("the", shift=False))
    for batch in (b1, b2):
        assert batch["chars_fwd"].shape == (2, 3, 50) and batch["chars_fwd"].dtype == np.int32
        assert batch["weights_fwd"].dtype == np.float32 and batch["weights_fwd"].all()
        assert batch["chars_fwd"].max() <= 260 and batch["chars_fwd"].min() >= 0
    assert b.corpus.n_tokens == 10 == count_tokens(files) and b.corpus.n_sentences == 4 and b.n_targets == 14
    assert b.corpus.input_words[7:] == sorted(["dog"]) and b.corpus.input_to_target[7] == U


def test_char_table_matches_token_to_char_ids() -> None:
    words = ["<S>", "</S>", "<UNK>", "a", "caf\u00e9", "\u2022", "x" * 60, "\u00e9" * 30, "ab\ud800c"]
    table = char_table(words, 50)
    assert table.dtype == np.uint16 and table.shape == (len(words), 50)
    for i, w in enumerate(words):
        np.testing.assert_array_equal(table[i], token_to_char_ids(w, 50, shift=False), err_msg=w)
    np.testing.assert_array_equal(char_table(["abcdef"], 5)[0], token_to_char_ids("abcdef", 5, shift=False))


# --------------------------------------------------------------------------- oracle property
WORDS = ["the", "cat", "sat", "a"] + OOV_WORDS


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(shards=st.lists(st.lists(st.lists(st.sampled_from(WORDS), min_size=0, max_size=6).map(" ".join),
                                min_size=1, max_size=5), min_size=1, max_size=3),
       B=st.integers(1, 4), T=st.integers(1, 5))
def test_matches_oracle_train_and_eval(tmp_path_factory: pytest.TempPathFactory, cache_dir: str,
                                       shards: list[list[str]], B: int, T: int) -> None:
    """Unshuffled training (endless, file order repeated) and evaluation (one pass, padded) equal
    the oracle, including empty lines, OOV chars and sentences longer than a window."""
    shards = [s if any(line.split() for line in s) else s + ["the cat"] for s in shards]
    files = write_shards(tmp_path_factory.mktemp("oracle"), shards)
    sents = sentences_of(files)
    train = Batcher(files, VOCAB, global_batch_size=B, unroll_steps=T, shuffle=False, cache_dir=cache_dir)
    want = oracle(lambda r: itertools.islice(itertools.cycle(sents), r, None, B), B, T, VOCAB, 6)
    assert_batches_equal(take(train, 6), want)

    ev = Batcher(files, VOCAB, global_batch_size=B, unroll_steps=T, train=False, cache_dir=cache_dir)
    want = oracle(lambda r: itertools.islice(sents, r, None, B), B, T, VOCAB, 10_000)
    got = [expand(ev, g) for g in ev]
    assert_batches_equal(got, want)
    assert len(got) == ev.n_batches
    assert sum(g["weights_fwd"].sum() for g in got) == ev.n_targets == sum(len(s) + 1 for s in sents)


# --------------------------------------------------------------------------- shuffled streams
@pytest.fixture(scope="module")
def shuffled_corpus(tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    rng = np.random.default_rng(7)
    shards = []
    for k in range(3):
        shards.append([" ".join(rng.choice(WORDS[:4], size=rng.integers(1, 9))) + f" {k}x{i}"
                       for i in range(5 + 3 * k)])  # unique last word: sentences are identifiable
    return write_shards(tmp_path_factory.mktemp("shuffled"), shards)


def row_sentences(batches: list[dict], vocab_words: list[str], row: int) -> list[tuple[str, ...]]:
    """Complete sentences of one row, read back from the forward inputs and targets."""
    out, cur = [], None
    for batch in batches:
        for x, y in zip(batch["tokens_fwd"][row], batch["targets_fwd"][row]):
            if vocab_words[x] == "<S>":
                cur = []
            if vocab_words[y] == "</S>":
                if cur is not None:
                    out.append(tuple(cur))
                cur = None
            elif cur is not None:
                cur.append(vocab_words[y])
    return out


def test_shuffled_epochs_are_permutations_and_seeded(shuffled_corpus: list[str], cache_dir: str) -> None:
    vocab = Vocabulary(["<S>", "</S>", "<UNK>", *WORDS[:4], *sorted({s[-1] for s in sentences_of(shuffled_corpus)})])
    sents = [tuple(s) for s in sentences_of(shuffled_corpus)]
    N, B, T = len(sents), 4, 5
    make = lambda seed: Batcher(shuffled_corpus, vocab, global_batch_size=B, unroll_steps=T, seed=seed,
                                cache_dir=cache_dir)
    batcher = make(3)
    batches = take(batcher, 40)
    rows = [row_sentences(batches, vocab.words, r) for r in range(B)]
    # the endless sequence: position r + k*B is row r's k-th sentence
    seq = [rows[r][k] for k in range(min(map(len, rows))) for r in range(B)]
    assert len(seq) >= 2 * N
    epoch0, epoch1 = seq[:N], seq[N:2 * N]
    assert sorted(epoch0) == sorted(sents) and sorted(epoch1) == sorted(sents)
    assert epoch0 != sents and epoch0 != epoch1  # shuffled, and differently per epoch
    # structure: shards in a random order, each a contiguous block with its sentences shuffled,
    # and a new within-shard order every epoch
    shard_of = lambda s: s[-1].split("x")[0]
    for epoch in (epoch0, epoch1):
        blocks = [k for k, _ in itertools.groupby(map(shard_of, epoch))]
        assert sorted(blocks) == ["0", "1", "2"]
    within = lambda epoch, k: [s for s in epoch if shard_of(s) == k]
    assert any(within(epoch0, k) != within(epoch1, k) for k in "012")
    assert any(within(epoch0, k) != [s for s in sents if shard_of(s) == k] for k in "012")
    # the windows of the shuffled stream are exactly the oracle's over that sentence order
    want = oracle(lambda r: [list(s) for s in seq[r::B]], B, T, vocab, 40)
    assert_batches_equal(batches[:20], want[:20])
    assert batcher.epoch >= 2.0 and batcher.state()["epochs_completed"] >= 2
    # seeded: same seed -> same batches; another seed -> different ones
    assert_batches_equal(take(make(3), 5), batches[:5])
    other = take(make(4), 5)
    assert any(not np.array_equal(o["tokens_fwd"], b["tokens_fwd"]) for o, b in zip(other, batches))


def test_host_rows_union_equals_global_batch(shuffled_corpus: list[str], cache_dir: str) -> None:
    B, T = 5, 4
    full = Batcher(shuffled_corpus, VOCAB, global_batch_size=B, unroll_steps=T, seed=1, cache_dir=cache_dir)
    hosts = [Batcher(shuffled_corpus, VOCAB, global_batch_size=B, unroll_steps=T, seed=1, row_start=s,
                     row_count=c, cache_dir=cache_dir) for s, c in ((0, 2), (2, 1), (3, 2))]
    for _ in range(12):
        want = expand(full, next(full))
        parts = [expand(h, next(h)) for h in hosts]
        for k in VIEW_KEYS:
            np.testing.assert_array_equal(np.concatenate([p[k] for p in parts]), want[k])
        states = [h.state() for h in hosts]  # the position is global: identical on every host
        for s in states:
            np.testing.assert_array_equal(s["position"], full.state()["position"])
            np.testing.assert_array_equal(s["offset"], full.state()["offset"])
    # evaluation: every host stops after the same number of batches
    ev = [len(list(Batcher(shuffled_corpus, VOCAB, global_batch_size=B, unroll_steps=T, train=False, row_start=s,
                           row_count=c, cache_dir=cache_dir))) for s, c in ((0, 1), (1, 4))]
    assert ev[0] == ev[1] > 0


def test_resume_is_exact(shuffled_corpus: list[str], cache_dir: str, tmp_path: Path) -> None:
    """k batches, save, restore into a fresh Batcher (also one with another host split), then m
    batches == k + m batches of one uninterrupted Batcher. The state goes through Orbax."""
    import orbax.checkpoint as ocp

    kw = dict(global_batch_size=3, unroll_steps=4, seed=5, cache_dir=cache_dir)
    reference = take(Batcher(shuffled_corpus, VOCAB, **kw), 30)
    first = Batcher(shuffled_corpus, VOCAB, **kw)
    take(first, 17)
    state = first.state()
    for v in state.values():
        assert isinstance(v, (int, np.ndarray)) and not isinstance(v, bool)
    assert state["batches"] == 17

    with ocp.StandardCheckpointer() as ckpt:
        ckpt.save(tmp_path / "data", state)
        ckpt.wait_until_finished()
        restored = ckpt.restore(tmp_path / "data")
    resumed = Batcher(shuffled_corpus, VOCAB, **kw)
    resumed.restore(restored)
    assert_batches_equal(take(resumed, 13), reference[17:])

    half = Batcher(shuffled_corpus, VOCAB, row_start=1, row_count=2, **kw)
    half.restore(state)
    got = take(half, 13)
    for g, w in zip(got, reference[17:]):
        for k in VIEW_KEYS:
            np.testing.assert_array_equal(g[k], w[k][1:3])


def test_prefetch_stream_state_follows_the_consumer(shuffled_corpus: list[str], cache_dir: str) -> None:
    kw = dict(global_batch_size=3, unroll_steps=4, seed=2, cache_dir=cache_dir)
    reference = take(Batcher(shuffled_corpus, VOCAB, **kw), 12)
    with Batcher(shuffled_corpus, VOCAB, **kw).prefetch(depth=4) as stream:
        assert stream.state()["batches"] == 0
        got = take(stream, 5)
        wait_until(lambda: stream.batcher.state()["batches"] > 5, what="the producer to run ahead")
        state = stream.state()  # ... but the saved position is that of the consumed batches
    assert state["batches"] == 5
    assert_batches_equal(got, reference[:5])
    resumed = Batcher(shuffled_corpus, VOCAB, **kw)
    resumed.restore(state)
    assert_batches_equal(take(resumed, 7), reference[5:])


def test_streaming_equals_in_memory(shuffled_corpus: list[str], cache_dir: str) -> None:
    kw = dict(global_batch_size=4, unroll_steps=3, seed=9, cache_dir=cache_dir)
    mem = Batcher(shuffled_corpus, VOCAB, **kw)
    stream = Batcher(shuffled_corpus, VOCAB, streaming=True, max_cached_shards=1, **kw)
    assert (stream.corpus.n_tokens, stream.corpus.n_sentences) == (mem.corpus.n_tokens, mem.corpus.n_sentences)
    assert_batches_equal(take(stream, 25), take(mem, 25))


def test_eval_reads_every_sentence_once_and_pads(tmp_path: Path, cache_dir: str) -> None:
    shards = [["the cat sat a the cat sat", "a", "cat sat"], ["the", "a cat", "sat sat sat", "the a"]]
    files = write_shards(tmp_path, shards)
    vocab = Vocabulary(["<S>", "</S>", "<UNK>", "the", "cat", "sat", "a"])
    sents = sentences_of(files)
    B, T = 3, 4
    ev = Batcher(files, vocab, global_batch_size=B, unroll_steps=T, train=False, cache_dir=cache_dir)
    batches = [expand(ev, b) for b in ev]
    read = [s for r in range(B) for s in row_sentences(batches, vocab.words, r)]
    assert sorted(map(list, read)) == sorted(sents) and len(read) == len(sents)
    weights = np.stack([b["weights_fwd"] for b in batches])
    assert weights.sum() == sum(len(s) + 1 for s in sents)
    assert (weights[-1] == 0).any() and weights[-1].any()  # the last batch is padded
    # padding only at the end of each row: weights never go 0 -> 1 along a row's stream
    flat = weights.transpose(1, 0, 2).reshape(B, -1)
    assert (np.diff(flat, axis=1) <= 0).all()
    pad = np.stack([b["targets_fwd"] for b in batches])[weights == 0]
    assert (pad == vocab.bos_id).all()


# --------------------------------------------------------------------------- prefetch
def test_prefetch_propagates_errors_and_stops() -> None:
    def failing() -> Iterator[int]:
        yield 1
        yield 2
        raise DataError("boom in the producer", "some/file.txt")

    stream = prefetch(failing(), depth=2)
    assert next(stream) == 1 and next(stream) == 2
    with pytest.raises(DataError, match="boom in the producer"):
        next(stream)
    with pytest.raises(StopIteration):
        next(stream)

    produced = []

    def endless() -> Iterator[int]:
        for i in itertools.count():
            produced.append(i)
            yield i

    stream = prefetch(endless(), depth=3)
    assert [next(stream) for _ in range(5)] == [0, 1, 2, 3, 4]
    stream.close()
    assert not stream._thread.is_alive()  # joined: nothing can advance the generator any more
    assert len(produced) <= 5 + 3 + 2  # bounded read-ahead
    with pytest.raises(StopIteration):
        next(stream)
    assert list(prefetch(iter([]))) == []
    # a stream dropped without close() does not leave its thread running
    stream = prefetch(endless(), depth=2)
    next(stream)
    thread = stream._thread
    del stream
    gc.collect()
    thread.join(timeout=2.0)
    assert not thread.is_alive()


# --------------------------------------------------------------------------- errors
def test_errors_name_the_file(tmp_path: Path, cache_dir: str) -> None:
    good = write_shards(tmp_path / "good", [["the cat"]])[0]
    make = lambda files, vocab=VOCAB, **kw: Batcher(files, vocab, global_batch_size=2, unroll_steps=3,
                                                     cache_dir=cache_dir, **kw)
    missing = str(tmp_path / "missing.txt")
    with pytest.raises(InputError, match="not found") as info:
        make([good, missing])
    assert info.value.path == missing
    empty = tmp_path / "empty.txt"
    empty.write_text("")
    with pytest.raises(InputError, match="empty") as info:
        make([good, str(empty)])
    assert info.value.path == str(empty)
    blank = tmp_path / "blank.txt"
    blank.write_text("\n   \n\n")
    with pytest.raises(DataError, match="no sentences") as info:
        make([str(blank)])
    assert info.value.path == str(blank)
    latin = tmp_path / "latin.txt"
    latin.write_bytes(b"the cat\nsat\ncaf\xe9 au lait\n")
    for streaming in (False, True):
        with pytest.raises(InputError, match="line 3 is not valid UTF-8") as info:
            make([good, str(latin)], streaming=streaming)
        assert info.value.path == str(latin)
    with pytest.raises(InputError, match="no files match"):
        make(str(tmp_path / "nothing*.txt"))
    assert make(str(tmp_path / "good" / "*.txt")).corpus.files == [good]


def test_vocab_errors_and_bad_arguments(tmp_path: Path, cache_dir: str) -> None:
    good = write_shards(tmp_path, [["the cat"]])
    vocab = tmp_path / "vocab.txt"
    vocab.write_text("<S>\n</S>\nthe\n")
    with pytest.raises(ElmoError, match="lacks <UNK>") as info:
        Batcher(good, str(vocab), global_batch_size=2, unroll_steps=3, cache_dir=cache_dir)
    assert info.value.path == str(vocab)
    for kw, match in ((dict(global_batch_size=0, unroll_steps=3), "global_batch_size"),
                      (dict(global_batch_size=2, unroll_steps=0), "unroll_steps"),
                      (dict(global_batch_size=2, unroll_steps=3, row_start=1, row_count=2), "inside the global"),
                      (dict(global_batch_size=2, unroll_steps=3, seed=-1), "seed")):
        with pytest.raises(DataError, match=match):
            Batcher(good, VOCAB, cache_dir=cache_dir, **kw)


def test_restore_rejects_other_data_or_settings(shuffled_corpus: list[str], tmp_path: Path,
                                                cache_dir: str) -> None:
    kw = dict(global_batch_size=3, unroll_steps=4, cache_dir=cache_dir)
    b = Batcher(shuffled_corpus, VOCAB, seed=1, **kw)
    take(b, 3)
    state = b.state()
    with pytest.raises(DataError, match="seed 1 \\(now 2\\)"):
        Batcher(shuffled_corpus, VOCAB, seed=2, **kw).restore(state)
    with pytest.raises(DataError, match="global_batch_size"):
        Batcher(shuffled_corpus, VOCAB, seed=1, global_batch_size=4, unroll_steps=4, cache_dir=cache_dir).restore(state)
    with pytest.raises(DataError, match="corpus or vocabulary changed"):
        Batcher(shuffled_corpus[:2], VOCAB, seed=1, **kw).restore(state)
    with pytest.raises(DataError, match="missing"):
        b.restore({"position": state["position"]})
    bad = dict(state, offset=state["offset"] + 1000)
    with pytest.raises(DataError, match="past the end"):
        b.restore(bad)


# --------------------------------------------------------------------------- raw-text corpora
RAW_SHARDS = [["It wasn't me. Dr. Smith left at 5 p.m. today.", "", "He said \u201chi.\u201d Then he sat."],
              ["3.5% of 1,000.5 km \u2014 a well-known e-mail!", "Привет, мир! Как дела?"]]


def test_raw_text_corpus_encodes_like_its_pretokenized_version(tmp_path: Path, cache_dir: str) -> None:
    tok = Tokenizer(split_sentences=True)
    raw = write_shards(tmp_path / "raw", RAW_SHARDS)
    pre = write_shards(tmp_path / "pre", [[" ".join(toks) for line in shard for toks in tok.sentences(line)]
                                          for shard in RAW_SHARDS])
    assert Path(pre[0]).read_text(encoding="utf-8").splitlines()[:2] == [
        "It wasn 't me .", "Dr. Smith left at 5 p.m. today ."]
    vocab, n_raw = build_vocab(raw, tokenizer=tok)
    assert (vocab, n_raw) == build_vocab(pre)
    kw = dict(global_batch_size=3, unroll_steps=4, seed=3, cache_dir=cache_dir)
    batchers = [Batcher(raw, vocab, tokenizer=tok, **kw), Batcher(raw, vocab, tokenizer=tok, streaming=True, **kw)]
    reference = Batcher(pre, vocab, **kw)
    expected = list(itertools.islice(reference, 5))
    for b in batchers:
        got, want = b.corpus, reference.corpus
        assert (got.n_sentences, got.n_tokens, got.input_words) == (want.n_sentences, want.n_tokens,
                                                                    want.input_words) == (7, n_raw, vocab.words)
        for got, want in zip(itertools.islice(b, 5), expected, strict=True):
            for k in BATCH_KEYS:
                np.testing.assert_array_equal(got[k], want[k])
    # the tokenizer is part of the data identity: a pre-tokenized run's position does not fit
    assert batchers[0].corpus.fingerprint != reference.corpus.fingerprint
    with pytest.raises(DataError, match="corpus or vocabulary changed"):
        batchers[0].restore(reference.state())


def test_tokenized_corpus_is_cached_per_tokenizer(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Tokenized once; a second Batcher with the same tokenizer re-uses the cache (no tokenizer
    call); another tokenizer re-tokenizes and re-encodes."""
    cache = str(tmp_path / "cache")
    files = write_shards(tmp_path / "raw", RAW_SHARDS)
    calls: list[str] = []
    tokenize = Tokenizer.tokenize
    monkeypatch.setattr(Tokenizer, "tokenize", lambda self, text: calls.append(text) or tokenize(self, text))
    kw = dict(global_batch_size=2, unroll_steps=3, cache_dir=cache)

    def run(tok: Tokenizer) -> tuple[list[str], list[Batch]]:
        b = Batcher(files, VOCAB, tokenizer=tok, **kw)
        return b.corpus.input_words, list(itertools.islice(b, 3))

    first = run(Tokenizer())
    assert len(calls) == sum(len(s) for s in RAW_SHARDS)  # every line tokenized, once
    calls.clear()
    again = run(Tokenizer())
    assert calls == [] and again[0] == first[0]
    for a, b in zip(again[1], first[1]):
        for k in BATCH_KEYS:
            np.testing.assert_array_equal(a[k], b[k])
    bert = run(Tokenizer("bert"))
    assert len(calls) == sum(len(s) for s in RAW_SHARDS)
    assert "'t" in first[0] and "'t" not in bert[0] and "t" in bert[0]


def test_train_config_tokenize_reaches_the_batcher(tmp_path: Path) -> None:
    files = write_shards(tmp_path / "raw", RAW_SHARDS)
    cfg = TrainConfig.from_dict({"tokenize": True, "tokenizer": "bert", "split_sentences": True, "batch_size": 2})
    assert resolve_tokenizer(TrainConfig()) is None
    b = make_batcher(files, VOCAB, cfg, train=True, rows=2, unroll_steps=3)
    assert b.corpus.tokenizer.key == Tokenizer("bert", split_sentences=True).key
    assert b.corpus.n_sentences == sum(len(Tokenizer("bert", split_sentences=True).sentences(line))
                                for shard in RAW_SHARDS for line in shard)
    with pytest.raises(ConfigError, match="config key 'tokenizer' must be one of 'moses'"):
        TrainConfig.from_dict({"tokenize": True, "tokenizer": "nltk"})
