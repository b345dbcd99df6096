"""Distinct words, the exact char-axis cut and the size ladders (`elmo_jax.distinct`); step inputs
with sizes agreed by every host without communication; the train state's shardings; the
compile-once-per-bucket guarantee."""
from __future__ import annotations

import logging
import os

os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

import jax  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

from elmo_jax.chars import PAD_CHAR, char_table, token_to_char_ids  # noqa: E402
from elmo_jax.distinct import (CHAR_CUTS, RAW_PADDING, SHIFTED_PADDING, Bucket, bucket_rows,  # noqa: E402
                               char_cut_needs, distinct_words)
from elmo_jax.train.batching import StepInputs  # noqa: E402

WORDS = ["<S>", "</S>", "<UNK>", "the", "a", "cat", "sat", "on", "mat", "internationalization",
         "x" * 60, "dog", "ran", "é"]


def random_batch(rng, n_words: int, rows: int, T: int) -> dict[str, np.ndarray]:
    ids = rng.integers(0, n_words, (2, rows, T)).astype(np.int32)
    return {"inputs_fwd": ids[0], "inputs_bwd": ids[1],
            "targets_fwd": rng.integers(0, n_words, (rows, T)).astype(np.int32),
            "targets_bwd": rng.integers(0, n_words, (rows, T)).astype(np.int32),
            "weights_fwd": np.ones((rows, T), np.float32), "weights_bwd": np.ones((rows, T), np.float32)}


def test_char_cut_needs_counts_slots_up_to_end_of_word_plus_widest_filter() -> None:
    table = char_table(WORDS, 50)
    needs = char_cut_needs(table, 7)
    # independent count: BOW + bytes (at most 48) + EOW, then the widest filter, at most 50
    want = [min(3 + 7, 50) if w in ("<S>", "</S>") else min(min(len(w.encode()), 48) + 2 + 7, 50) for w in WORDS]
    np.testing.assert_array_equal(needs, want)


def shifted_table(words, width: int = 50) -> np.ndarray:
    """Inference ids: row 0 all zero (no token), row i + 1 = word i shifted."""
    return np.stack([np.zeros(width, np.int32)] + [token_to_char_ids(w, width, shift=True) for w in words])


def test_char_cut_needs_of_shifted_ids_and_the_no_token_row() -> None:
    needs = char_cut_needs(shifted_table(WORDS), 7, SHIFTED_PADDING)
    want = [7] + [min(3 + 7, 50) if w in ("<S>", "</S>") else min(min(len(w.encode()), 48) + 2 + 7, 50)
                  for w in WORDS]  # the all-zero row is all padding: one window
    np.testing.assert_array_equal(needs, want)
    np.testing.assert_array_equal(needs[1:], char_cut_needs(char_table(WORDS, 50), 7, RAW_PADDING))


def test_bucket_rows_is_the_quarter_octave_ladder() -> None:
    ladder = sorted({m << j for m in (4, 5, 6, 7) for j in range(14)} | set(range(1, 8)))
    for n in range(0, 20000):
        want = next(x for x in ladder if x >= max(n, 1))
        assert bucket_rows(n) == want, n
        assert want - max(n, 1) < max(n, 4) / 4  # padding under a quarter
    assert [bucket_rows(n) for n in (1000, 1025, 1300, 2000, 2049)] == [1024, 1280, 1536, 2048, 2560]
    assert bucket_rows(3, min_rows=256) == 256 and bucket_rows(300, min_rows=256) == 320
    for multiple in (1, 2, 3, 6, 8):
        for n in range(0, 3000, 7):
            rows = bucket_rows(n, 256, multiple)
            assert rows % multiple == 0 and rows >= max(n, 256) and rows - bucket_rows(n, 256) < multiple
    # a range of counts meets at most 4 sizes per octave
    assert len({bucket_rows(n) for n in range(512, 4097)}) == 4 * 3 + 1
    # pretraining's steps of 256: each multiple up to 2048, then quarter octaves
    assert sorted({bucket_rows(n, 256, 256) for n in range(0, 5000)}) == [
        256, 512, 768, 1024, 1280, 1536, 1792, 2048, 2560, 3072, 3584, 4096, 5120]


def conv_max(char_rows: np.ndarray, embed: np.ndarray, kernels) -> np.ndarray:
    """A NumPy char-CNN without the nonlinearity: per filter, max over windows of <window, kernel>."""
    x = embed[char_rows]  # [N, C, D]
    outs = []
    for k in kernels:  # [w, D, F]
        w = k.shape[0]
        windows = np.stack([x[:, i:i + w] for i in range(x.shape[1] - w + 1)], axis=1)  # [N, C-w+1, w, D]
        outs.append(np.einsum("nswd,wdf->nsf", windows, k).max(axis=1))
    return np.concatenate(outs, axis=1)


@pytest.mark.parametrize("shifted", [False, True])
def test_distinct_words_gather_back_and_the_cut_is_exact(shifted: bool) -> None:
    rng = np.random.default_rng(1)
    extra = ["".join(rng.choice(list("abcdefgé"), size=int(n))) for n in rng.integers(1, 45, size=40)]
    words = WORDS + extra
    table = shifted_table(words) if shifted else char_table(words, 50).astype(np.int32)
    padding = SHIFTED_PADDING if shifted else RAW_PADDING
    needs = char_cut_needs(table, 4, padding)
    embed = rng.normal(size=(262, 3))
    embed[list(padding)] = 4.0  # all-padding windows often hold a filter's max: the cut must keep one
    kernels = [rng.normal(size=(w, 3, 4)) for w in (1, 2, 4)]
    full = conv_max(table, embed, kernels)
    for i, need in enumerate(needs):  # each row cut to exactly its own need gives its full result
        np.testing.assert_allclose(conv_max(table[i:i + 1, :need], embed, kernels)[0], full[i], rtol=1e-12, atol=1e-12)
    for trial in range(30):
        hi = int(rng.integers(1, len(table) + 1))
        ids = rng.integers(0, hi, size=tuple(rng.integers(1, 7, size=int(rng.integers(1, 4)))))
        min_rows, multiple = int(rng.choice([1, 32, 256])), int(rng.choice([1, 2, 3]))
        chars, inverse, bucket = distinct_words(ids, table, needs, min_rows=min_rows, multiple=multiple)
        u = len(np.unique(ids))
        assert chars.shape == tuple(bucket) and chars.dtype == np.int32
        assert inverse.shape == ids.shape and inverse.dtype == np.int32 and inverse.max() < u
        np.testing.assert_array_equal(chars[inverse], table[ids][..., :bucket.chars])  # every position
        assert np.isin(table[ids][..., bucket.chars:], padding).all()  # the cut removes padding only
        assert not chars[u:].any()  # spare rows are zero
        assert bucket.chars == min(c for c in CHAR_CUTS + (table.shape[1],) if c >= needs[ids].max())  # on the ladder
        assert bucket.rows == bucket_rows(u, min_rows, multiple) and bucket.rows >= u
        # the char-CNN's maxima over the cut rows equal those over the full rows
        np.testing.assert_allclose(conv_max(chars[inverse].reshape(-1, bucket.chars), embed, kernels),
                                   full[ids.ravel()], rtol=1e-12, atol=1e-12)
    # sizes other hosts need are taken when larger, never smaller
    ids = np.array([1, 2, 2])
    _, _, bucket = distinct_words(ids, table, needs, at_least=Bucket(40, 50))
    assert bucket == Bucket(40, 50)
    _, _, bucket = distinct_words(ids, table, needs, min_rows=64, at_least=Bucket(8, 16))
    assert bucket == Bucket(64, 16)


@pytest.mark.parametrize("n_hosts", [1, 3])
def test_step_inputs_gather_back_every_position_and_hosts_agree(n_hosts: int) -> None:
    rng = np.random.default_rng(0)
    table = char_table(WORDS, 50)
    rows, T = 6, 5
    batch = random_batch(rng, len(WORDS), rows, T)
    needs = char_cut_needs(table, 7)
    outs = [StepInputs(table, 7, global_rows=rows, n_hosts=n_hosts, host_index=h, n_local_devices=2)(batch)
            for h in range(n_hosts)]
    buckets = {b for _, b in outs}
    assert len(buckets) == 1  # every host computed the same sizes without talking to the others
    bucket = buckets.pop()
    assert bucket.rows % 256 == 0 and (bucket.chars in CHAR_CUTS or bucket.chars == 50)
    r = rows // n_hosts
    for h, (local, _) in enumerate(outs):
        ids = np.stack([batch["inputs_fwd"], batch["inputs_bwd"]])[:, h * r:(h + 1) * r]
        assert local["unique_chars"].shape == (bucket.rows, bucket.chars)
        assert bucket.chars >= needs[np.unique(ids)].max()  # the cut keeps every word's needed slots
        idx = local["token_index"] - h * bucket.rows  # host h's rows are block h of the global table
        assert idx.min() >= 0 and idx.max() < len(np.unique(ids))
        np.testing.assert_array_equal(local["unique_chars"][idx], table[ids][..., :bucket.chars])
        assert (table[ids][..., bucket.chars:] == PAD_CHAR).all()  # what was cut is padding only
        np.testing.assert_array_equal(local["targets_fwd"], batch["targets_fwd"][h * r:(h + 1) * r])


def test_bucket_is_the_max_over_hosts() -> None:
    table = char_table(WORDS, 50)
    rows, T = 4, 3
    batch = {k: np.zeros((rows, T), np.int32 if "weights" not in k else np.float32)
             for k in ("inputs_fwd", "inputs_bwd", "targets_fwd", "targets_bwd", "weights_fwd", "weights_bwd")}
    long_word = WORDS.index("x" * 60)
    batch["inputs_fwd"][3, 0] = long_word  # only host 1's rows hold the 50-slot word
    for h in (0, 1):
        _, bucket = StepInputs(table, 7, global_rows=rows, n_hosts=2, host_index=h)(batch)
        assert bucket == Bucket(256, 50)
    _, alone = StepInputs(table, 7, global_rows=2, n_hosts=1)({k: v[:2] for k, v in batch.items()})
    assert alone == Bucket(256, 16)


def test_state_shardings_split_carry_rows_and_softmax_rows() -> None:
    from elmo_jax import sharding as shd
    from elmo_jax.config import TrainConfig
    from elmo_jax.train.step import init_state

    cfg = TrainConfig.from_json(os.path.join(os.path.dirname(__file__), "..", "configs", "tiny.json"))
    mesh = shd.make_mesh()
    abstract = jax.eval_shape(lambda k: init_state(cfg, 64, k), jax.random.key(0))
    for shard in (False, True):
        sh = shd.state_shardings(abstract, mesh, shard, 64)
        flat = jax.tree_util.tree_flatten_with_path(sh)[0]
        for path, s in flat:
            name = jax.tree_util.keystr(path)
            spec = tuple(s.spec)
            if "'lstm_state'" in name:
                assert spec[:3] == (None, None, "data") and all(x is None for x in spec[3:]), name
            elif shard and "'softmax'" in name:
                assert spec[:1] == ("data",) and all(x is None for x in spec[1:]), name  # rows, also Adagrad's
            else:
                assert all(x is None for x in spec), name


def test_training_compiles_the_step_once_per_bucket(tmp_path, caplog) -> None:
    """Training N steps with validations compiles the train step exactly once for each size
    bucket its batches need (counted from JAX's own log of lowerings: every compilation is one)
    and the evaluation step once per bucket of the heldout batches, however many validations run."""
    from elmo_jax.config import TrainConfig
    from elmo_jax.train.loop import make_batcher, prescan_buckets, step_inputs, train
    from elmo_jax.train.rundir import resolve_data

    n = 9
    cfg = TrainConfig.from_json(os.path.join(os.path.dirname(__file__), "..", "configs", "tiny.json"),
                                [f"max_steps={n}", "eval_every=3", "eval_batches=2", "log_every=3"])
    train_files, heldout, vocab = resolve_data(cfg.replace(model=cfg.model.for_training()))
    b = make_batcher(train_files, vocab, cfg, train=True, rows=cfg.batch_size, unroll_steps=cfg.unroll_steps)
    want = prescan_buckets(b, step_inputs(b, cfg, cfg.batch_size), n)  # the buckets of the n batches
    e = make_batcher(heldout, vocab, cfg, train=False, rows=min(cfg.batch_size, 64), unroll_steps=cfg.unroll_steps)
    eval_buckets = prescan_buckets(e, step_inputs(e, cfg, min(cfg.batch_size, 64)), 2)
    jax.config.update("jax_log_compiles", True)
    try:
        with caplog.at_level(logging.WARNING, logger="jax"):
            last = train(cfg, str(tmp_path / "run"), progress=False)
    finally:
        jax.config.update("jax_log_compiles", False)
    assert last["compiles"] == {f"{x.rows}x{x.chars}": 1 for x in want}
    lowered = [r.getMessage().split(" with ")[0].removeprefix("Compiling ").removeprefix("jit(").removesuffix(")")
               for r in caplog.records if r.getMessage().startswith("Compiling ")]  # "Compiling [jit(]f[)] with ..."
    assert lowered.count("train_step") == len(want), lowered
    assert lowered.count("eval_step") == len(eval_buckets), lowered
