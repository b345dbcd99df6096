"""A biLM's word table from GloVe-format vectors (`elmo_jax.vectors.initial_word_table`): word-input
embeddings and a char model's word channel, projections, errors, and that it helps.

No GloVe file can be downloaded in tests: vectors are made here from the built-in corpus's
co-occurrence counts (PPMI + truncated SVD, the classic count-based route to GloVe-like vectors).
"""
from __future__ import annotations

import collections
import json
from pathlib import Path

import numpy as np
import pytest

from elmo_jax.config import ConfigError, TrainConfig
from elmo_jax.corpus import builtin_corpus
from elmo_jax.errors import InputError
from elmo_jax.train.loop import train
from elmo_jax.vectors import initial_word_table, project_vectors

TRAIN_DIR = Path(__file__).resolve().parents[2] / "shared" / "fixtures" / "bilm-tf" / "train"


def write_glove(path: Path, words, vectors) -> None:
    path.write_text("".join(w + " " + " ".join(f"{x:.6f}" for x in v) + "\n" for w, v in zip(words, vectors)),
                    encoding="utf-8")


def ppmi_svd_vectors(files, dim: int, window: int = 2, min_count: int = 3) -> tuple[list[str], np.ndarray]:
    """Count-based word vectors: positive PMI of a +-window co-occurrence matrix, truncated SVD."""
    sentences = [line.split() for f in files for line in open(f, encoding="utf-8") if line.strip()]
    counts = collections.Counter(w for s in sentences for w in s)
    words = [w for w, c in counts.most_common() if c >= min_count]
    index = {w: i for i, w in enumerate(words)}
    m = np.zeros((len(words), len(words)))
    for s in sentences:
        ids = [index.get(w, -1) for w in s]
        for i, a in enumerate(ids):
            if a < 0:
                continue
            for b in ids[max(0, i - window):i]:
                if b >= 0:
                    m[a, b] += 1
                    m[b, a] += 1
    row = m.sum(1, keepdims=True)
    col = m.sum(0, keepdims=True) ** 0.75  # context distribution smoothing (Levy et al. 2015)
    with np.errstate(divide="ignore", invalid="ignore"):
        pmi = np.log(m * col.sum() / (row * col))
    ppmi = np.where(np.isfinite(pmi) & (pmi > 0), pmi, 0.0)
    u, s, _ = np.linalg.svd(ppmi, full_matrices=False)
    return words, (u[:, :dim] * np.sqrt(s[:dim])).astype(np.float32)


# ------------------------------------------------------------------------------ the table itself
def test_initial_word_table_lookup_projection_and_oov(tmp_path):
    rng = np.random.default_rng(0)
    words = ["the", "Cat", "sat", "mat"]
    vecs = rng.normal(0, 3, (4, 6)).astype(np.float32)
    write_glove(tmp_path / "g.txt", words, vecs)
    vocab = ["<S>", "</S>", "<UNK>", "the", "cat", "sat", "zebra"]
    table, stats = initial_word_table(tmp_path / "g.txt", vocab, 9, 6)
    assert table.shape == (9, 6) and stats["found"] == 2  # "the", "sat"; "cat" != "Cat" (no lower-casing of the file)
    rms = np.sqrt(np.mean(np.sum(vecs[[0, 2]].astype(np.float64) ** 2, 1)))
    np.testing.assert_allclose(table[3], vecs[0] / rms, rtol=1e-5)  # scaled to RMS row length 1
    np.testing.assert_allclose(table[5], vecs[2] / rms, rtol=1e-5)
    assert 0.3 < np.linalg.norm(table[6]) < 3  # OOV "zebra": random, about the same length
    with pytest.raises(InputError, match=r"g.txt: the word vectors have dimension 6, but lstm.projection_dim is 4"):
        initial_word_table(tmp_path / "g.txt", vocab, 9, 4)
    pca, stats = initial_word_table(tmp_path / "g.txt", vocab, 9, 1, projection="pca")
    assert stats["projection"] == "pca"
    # PCA of two points: centred, they are +-d/2 on the first axis (d their difference); scaled to
    # RMS length 1 they are +-1
    np.testing.assert_allclose(np.abs(pca[[3, 5], 0]), [1.0, 1.0], rtol=1e-5)
    assert pca[3, 0] == -pca[5, 0]
    np.testing.assert_allclose(np.abs(project_vectors(vecs[[0, 2]], 1, "pca")[:, 0]),
                               np.linalg.norm(vecs[0] - vecs[2]) / 2, rtol=1e-5)
    up, _ = initial_word_table(tmp_path / "g.txt", vocab, 9, 10, projection="random")
    assert up.shape == (9, 10)
    with pytest.raises(InputError, match="PCA cannot make 10"):
        initial_word_table(tmp_path / "g.txt", vocab, 9, 10, projection="pca")


def test_word_vector_config_errors(tmp_path):
    with pytest.raises(ConfigError, match="'word_vectors' needs a word-input model"):
        TrainConfig.from_dict({"word_vectors": "g.txt"})  # the default model reads characters
    with pytest.raises(ConfigError, match="would freeze the softmax too"):
        TrainConfig.from_dict({"model": {"lstm": {"dim": 8, "projection_dim": 4, "n_layers": 1},
                                         "share_embedding_softmax": True}, "freeze_word_vectors": True})


def test_glove_dimension_mismatch_fails_before_compute(tmp_path):
    if not TRAIN_DIR.is_dir():
        pytest.skip(f"bilm-tf training fixture not found: {TRAIN_DIR}")
    write_glove(tmp_path / "g.txt", ["the", "of"], np.ones((2, 5)))
    cfg = TrainConfig.from_dict({"model": {"lstm": {"dim": 16, "projection_dim": 8, "n_layers": 1}},
                                 "train_files": str(TRAIN_DIR / "data.txt"), "heldout_files": None,
                                 "vocab": str(TRAIN_DIR / "vocab.txt"), "word_vectors": str(tmp_path / "g.txt")})
    with pytest.raises(InputError, match=r"g.txt: the word vectors have dimension 5, but lstm.projection_dim is 8"):
        train(cfg, str(tmp_path / "run"), progress=False)
    assert not (tmp_path / "run" / "checkpoints").exists()


@pytest.mark.slow
def test_char_model_word_channel_frozen_and_trained(tmp_path):
    """A char model with a GloVe word channel: the channel starts from the vectors, stays fixed
    when frozen and moves when trained."""
    if not TRAIN_DIR.is_dir():
        pytest.skip(f"bilm-tf training fixture not found: {TRAIN_DIR}")
    words = [line.strip() for line in open(TRAIN_DIR / "vocab.txt", encoding="utf-8")]
    write_glove(tmp_path / "g.txt", words[3:], np.random.default_rng(0).normal(0, 1, (len(words) - 3, 3)))
    model = {"lstm": {"dim": 8, "projection_dim": 4, "n_layers": 1},
             "char_cnn": {"embedding": {"dim": 4}, "filters": [[1, 4], [2, 4]], "max_characters_per_token": 10,
                          "activation": "relu", "n_highway": 1, "n_characters": 261, "word_channel_dim": 3}}
    tables = {}
    for freeze in (True, False):
        cfg = TrainConfig.from_dict({"model": model, "train_files": str(TRAIN_DIR / "data.txt"),
                                     "heldout_files": None, "vocab": str(TRAIN_DIR / "vocab.txt"),
                                     "batch_size": 2, "unroll_steps": 5, "max_steps": 3, "dropout": 0.0,
                                     "word_vectors": str(tmp_path / "g.txt"), "freeze_word_vectors": freeze})
        out = train(cfg, str(tmp_path / f"run{freeze}"), progress=False, return_params=True)
        tables[freeze] = out["params"]["token_encoder"]["word_embedding"]
    start, _ = initial_word_table(tmp_path / "g.txt", words, len(words), 3)
    np.testing.assert_array_equal(tables[True], start)
    assert np.abs(tables[False] - start).max() > 1e-3
    assert out["params"]["token_encoder"]["W_proj"].shape == (3 + 8, 4)  # [word channel; char-CNN] -> P


# ------------------------------------------------------------------------------ does it help?
@pytest.mark.slow
def test_glove_initialised_word_bilm_beats_random_init(tmp_path):
    """Same word biLM, same steps, seed and data (the built-in corpus): starting from count-based
    vectors (PPMI + SVD of the training text, 48 dimensions, PCA to P = 32) gives a lower heldout
    perplexity than bilm-tf's random start."""
    corpus = builtin_corpus()
    words, vectors = ppmi_svd_vectors(corpus["train_files"], 48)
    write_glove(tmp_path / "glove.txt", words, vectors)
    base = {"model": {"lstm": {"dim": 64, "projection_dim": 32, "n_layers": 1}}, "batch_size": 32,
            "unroll_steps": 20, "max_steps": 150, "eval_batches": 20, "log_every": 50, "dropout": 0.1, "seed": 0}
    results = {}
    for name, extra in (("random", {}), ("glove", {"word_vectors": str(tmp_path / "glove.txt"),
                                                   "word_vectors_projection": "pca"})):
        last = train(TrainConfig.from_dict({**base, **extra}), str(tmp_path / name), progress=False)
        results[name] = last["val_perplexity"]
    print("heldout perplexity after 150 steps:", json.dumps(results))
    assert results["glove"] < results["random"]
