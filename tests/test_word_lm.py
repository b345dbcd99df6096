"""Word-input and forward-only LMs (bilm-tf options without `char_cnn`; `bidirectional: false`).

References: bilm-tf itself (a word model it trained with a shared softmax, dumped with
`dump_weights` and embedded with its own `BidirectionalLanguageModel(use_character_inputs=False)`;
`tests/data/bilmtf_word/`, made by bilm-tf 7cffee2 on TF 2 compat), and the independent NumPy
oracle `numpy_reference.word_bilm` on random weights.
"""
from __future__ import annotations

import json
from pathlib import Path

import h5py
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import numpy_reference as ref
from elmo_jax.cli import main
from elmo_jax.config import TrainConfig
from elmo_jax.elmo import Elmo, init_elmo
from elmo_jax.embed import ElmoEmbedder
from elmo_jax.errors import InputError, OptionsError, WeightsError
from elmo_jax.options import ModelOptions
from elmo_jax.train.export import export_run
from elmo_jax.train.loop import train
from elmo_jax.vocab import Vocabulary
from elmo_jax.weights import arrays_to_params, load_model, params_to_arrays, read_hdf5_arrays, write_bilm_hdf5

DATA = Path(__file__).resolve().parent / "data" / "bilmtf_word"
TRAIN_DIR = Path(__file__).resolve().parents[2] / "shared" / "fixtures" / "bilm-tf" / "train"
WORDS = ["<S>", "</S>", "<UNK>", "the", "cat", "sat", "on", "mat", "a", "dog"]


def word_options(bidirectional: bool = True, skip: bool = True, n_layers: int = 2) -> ModelOptions:
    return ModelOptions.from_dict({"lstm": {"dim": 12, "projection_dim": 6, "n_layers": n_layers, "cell_clip": 1,
                                            "proj_clip": 1, "use_skip_connections": skip},
                                   "bidirectional": bidirectional, "n_tokens_vocab": len(WORDS)})


def random_word_arrays(options: ModelOptions, seed: int = 0) -> dict[str, np.ndarray]:
    """bilm-tf-named arrays of a word model, names written from bilm-tf's dump_weights (not elmo_jax)."""
    rng = np.random.default_rng(seed)
    p, h = options.projection_dim, options.lstm_dim
    out = {"embedding": rng.normal(0, 1, (options.n_tokens_vocab, p))}
    for d in range(2 if options.bidirectional else 1):
        for layer in range(options.n_layers):
            if options.bidirectional:
                pre, leaves = f"RNN_{d}/RNN/MultiRNNCell/Cell{layer}/LSTMCell/", ("W_0", "B", "W_P_0")
            else:
                pre, leaves = f"rnn/MultiRNNCell/Cell{layer}/LSTMCell/", ("kernel", "bias", "projection/kernel")
            out[pre + leaves[0]] = rng.normal(0, 1 / np.sqrt(2 * p), (2 * p, 4 * h)) * 1.5
            out[pre + leaves[1]] = rng.normal(0, 0.5, (4 * h,))
            out[pre + leaves[2]] = rng.normal(0, 1 / np.sqrt(h), (h, p)) * 1.5
    return {k: v.astype(np.float32) for k, v in out.items()}


def dataset_names(path) -> set[str]:
    names: set[str] = set()
    with h5py.File(path, "r") as f:
        f.visititems(lambda n, o: names.add(n) if isinstance(o, h5py.Dataset) else None)
    return names


# ------------------------------------------------------------------------------ bilm-tf reference
def test_bilm_tf_word_model_loads_and_embeds_as_bilm_tf():
    """bilm-tf's own word model (shared softmax, skip connections): our embeddings equal bilm-tf's
    `lm_embeddings` (OOV 'zebra' -> <UNK>, as its TokenBatcher), and the NumPy oracle agrees."""
    vocab_file = TRAIN_DIR / "vocab.txt"
    if not vocab_file.is_file():
        pytest.skip(f"bilm-tf training fixture not found: {TRAIN_DIR}")
    sentences = json.loads((DATA / "sentences.json").read_text())
    with h5py.File(DATA / "lm_embeddings.hdf5", "r") as f:
        expected, bilm_tf_ids = f["lm_embeddings"][()], f["ids"][()]  # [B, L+1, n, 2P], [B, T]
    embedder = ElmoEmbedder.from_files(DATA / "options.json", DATA / "weights.hdf5", vocab_file=vocab_file)
    assert not embedder.options.char_inputs and embedder.options.n_tokens_vocab == 32
    with jax.default_matmul_precision("highest"):
        layers, mask = embedder.embed_batch(sentences)
    actual = np.transpose(layers, (1, 0, 2, 3))
    assert actual.shape == expected.shape
    np.testing.assert_allclose(actual, expected, atol=1e-5, rtol=0)
    assert np.allclose(actual, expected, atol=1e-6)  # bilm-tf's own criterion
    # the same ids as bilm-tf's TokenBatcher (index + 1), then the independent oracle
    vocab = Vocabulary.from_file(vocab_file)
    ids = np.zeros_like(bilm_tf_ids)
    for b, s in enumerate(sentences):
        row = ["<S>", *s, "</S>"]
        ids[b, :len(row)] = [vocab.word_to_id(w) + 1 for w in row]
    np.testing.assert_array_equal(ids, bilm_tf_ids)
    oracle = ref.word_bilm(read_hdf5_arrays(DATA / "weights.hdf5"), embedder.options, ids)
    np.testing.assert_allclose(np.transpose(oracle.layers[:, :, 1:-1], (1, 0, 2, 3)) * mask[:, None, :, None],
                               expected, atol=1e-5)


# ------------------------------------------------------------------------------ random weights
@pytest.mark.parametrize("bidirectional", [True, False])
def test_word_embeddings_equal_numpy_reference(tmp_path, bidirectional):
    options = word_options(bidirectional)
    arrays = random_word_arrays(options, seed=1)
    options.to_json(tmp_path / "options.json")
    write_bilm_hdf5(tmp_path / "weights.hdf5", arrays_to_params(arrays, options), options)
    assert dataset_names(tmp_path / "weights.hdf5") == set(arrays)  # bilm-tf's names, exactly
    vocab = Vocabulary(WORDS)
    embedder = ElmoEmbedder.from_files(tmp_path / "options.json", tmp_path / "weights.hdf5", vocab=vocab)
    sentences = [["the", "cat", "sat", "on", "the", "mat"], ["a", "zebra"], []]
    with jax.default_matmul_precision("highest"):
        got = embedder.embed_sentences(sentences)
    ids = np.zeros((3, 8), np.int64)
    for b, s in enumerate(sentences):
        row = ["<S>", *s, "</S>"]
        ids[b, :len(row)] = [vocab.word_to_id(w) + 1 for w in row]
    oracle = ref.word_bilm(arrays, options, ids)
    assert oracle.stats.max_abs_cell > 1 and oracle.stats.max_abs_proj > 1  # both clips bind
    for b, s in enumerate(sentences):
        assert got[b].shape == (3, len(s), options.output_dim)
        assert options.output_dim == (12 if bidirectional else 6)
        np.testing.assert_allclose(got[b], oracle.layers[:, b, 1:len(s) + 1], atol=1e-5)
    # "zebra" is out of the vocabulary: it embeds exactly as <UNK>
    unk = embedder.token_embeddings(["zebra", "<UNK>", "cat"])
    np.testing.assert_array_equal(unk[0], unk[1])
    np.testing.assert_array_equal(unk[2], arrays["embedding"][WORDS.index("cat")])


def test_word_model_export_load_round_trip(tmp_path):
    options = word_options(False)
    arrays = random_word_arrays(options, seed=2)
    params = arrays_to_params(arrays, options)
    options.to_json(tmp_path / "options.json")
    write_bilm_hdf5(tmp_path / "w.hdf5", params, options)
    stored = json.loads((tmp_path / "options.json").read_text())
    assert "char_cnn" not in stored and stored["bidirectional"] is False  # bilm-tf reads these
    loaded_options, loaded, _ = load_model(tmp_path / "options.json", tmp_path / "w.hdf5")
    assert loaded_options == options
    back = params_to_arrays(loaded, loaded_options)
    assert set(back) == set(arrays)
    for k in arrays:
        np.testing.assert_array_equal(back[k], arrays[k])
    # options without n_tokens_vocab take it from the embedding's rows (as bilm-tf's inference)
    stored.pop("n_tokens_vocab")
    (tmp_path / "o2.json").write_text(json.dumps(stored))
    assert load_model(tmp_path / "o2.json", tmp_path / "w.hdf5")[0].n_tokens_vocab == len(WORDS)


def test_elmo_module_runs_word_models_from_vocab_ids():
    """`Elmo` of a word model: the biLM's own vocabulary ids (+1) in, the embedder's layers mixed."""
    options = word_options(True)
    arrays = random_word_arrays(options, seed=3)
    params = arrays_to_params(arrays, options)
    vocab = Vocabulary(WORDS)
    sentences = [["the", "dog", "sat"], ["a", "cat"]]
    ids = np.zeros((2, 5), np.int32)
    for b, s in enumerate(sentences):
        ids[b, :len(s) + 2] = [vocab.word_to_id(w) + 1 for w in ["<S>", *s, "</S>"]]
    elmo = Elmo(options, dropout=0.0, scalar_mix_parameters=[0.0, 1.0, 2.0])
    with jax.default_matmul_precision("highest"):
        variables = init_elmo(elmo, params, jax.random.key(0), token_ids=jnp.asarray(ids[:, :3]))
        out = jax.jit(lambda v, t: elmo.apply(v, token_ids=t))(variables, jnp.asarray(ids))
        layers = ElmoEmbedder(options, params, vocab=vocab).embed_sentences(sentences)
    w = np.exp([0.0, 1.0, 2.0]) / np.exp([0.0, 1.0, 2.0]).sum()
    for b, s in enumerate(sentences):
        np.testing.assert_allclose(out["elmo_representations"][0][b, :len(s)], np.einsum("l,ltd->td", w, layers[b]),
                                   atol=1e-5)


# ------------------------------------------------------------------------------ training
def test_word_model_trains_exports_and_embeds(tmp_path):
    """A word biLM with a shared softmax trains (loss falls), exports bilm-tf's datasets (the names
    bilm-tf's own dump of such a model has) and embeds from the export with its vocab.txt."""
    if not TRAIN_DIR.is_dir():
        pytest.skip(f"bilm-tf training fixture not found: {TRAIN_DIR}")
    cfg = TrainConfig.from_dict({
        "model": {"lstm": {"dim": 16, "projection_dim": 8, "n_layers": 2, "use_skip_connections": True},
                  "share_embedding_softmax": True},
        "train_files": str(TRAIN_DIR / "data.txt"), "heldout_files": str(TRAIN_DIR / "data.txt"),
        "vocab": str(TRAIN_DIR / "vocab.txt"), "batch_size": 2, "unroll_steps": 10, "max_steps": 40,
        "log_every": 5, "eval_every": 0, "learning_rate": 0.2, "seed": 0})
    run = tmp_path / "run"
    last = train(cfg, str(run), progress=False)
    losses = [json.loads(line)["loss"] for line in (run / "metrics.jsonl").read_text().splitlines()
              if "loss" in json.loads(line)]
    assert losses[-1] < losses[0] - 0.5, losses
    assert last["val_perplexity"] < 32  # below a uniform guess over the 32 words
    out = export_run(str(run), str(tmp_path / "export"))
    assert dataset_names(out["weights.hdf5"]) == dataset_names(DATA / "weights.hdf5")  # bilm-tf's own dump
    with np.load(out["params.npz"]) as z:  # the shared softmax has only its bias
        assert "softmax/b" in z.files and "softmax/W" not in z.files
    embedder = ElmoEmbedder.from_files(out["options.json"], out["weights.hdf5"], vocab_file=out["vocab.txt"])
    assert embedder.embed_sentence(["the", "neural", "words"]).shape == (3, 3, 16)


# ------------------------------------------------------------------------------ errors
def test_word_model_errors_are_one_clear_line(tmp_path, capsys):
    options = word_options(True)
    params = arrays_to_params(random_word_arrays(options), options)
    with pytest.raises(InputError, match="word-input biLM.*needs the vocabulary"):
        ElmoEmbedder(options, params)
    with pytest.raises(OptionsError, match=r"'n_tokens_vocab' \(10\) is smaller than the vocabulary \(11 words"):
        ElmoEmbedder(options, params, vocab=Vocabulary(WORDS + ["extra"]))
    elmo = Elmo(options)
    with pytest.raises(InputError, match="word-input biLM.*not character ids"):
        elmo.init(jax.random.key(0), jnp.zeros((1, 4, 50), jnp.int32))
    # a word options file with a character model's weights (and the reverse)
    options.to_json(tmp_path / "word.json")
    char_options = ModelOptions.from_json(Path(__file__).resolve().parents[2] / "shared" / "fixtures" / "bilm-tf"
                                          / "options.json")
    char_weights = Path(__file__).resolve().parents[2] / "shared" / "fixtures" / "bilm-tf" / "lm_weights.hdf5"
    if char_weights.is_file():
        with pytest.raises(WeightsError, match="word-input biLM.*holds a character model"):
            load_model(tmp_path / "word.json", char_weights)
    char_options.to_json(tmp_path / "char.json")
    with pytest.raises(WeightsError, match="character-input biLM.*holds a word-input model"):
        load_model(tmp_path / "char.json", DATA / "weights.hdf5")
    # training: a vocabulary larger than n_tokens_vocab, before any compute
    if TRAIN_DIR.is_dir():
        cfg = TrainConfig.from_dict({"model": {"lstm": {"dim": 8, "projection_dim": 4, "n_layers": 1},
                                               "n_tokens_vocab": 20},
                                     "train_files": str(TRAIN_DIR / "data.txt"), "heldout_files": None,
                                     "vocab": str(TRAIN_DIR / "vocab.txt")})
        with pytest.raises(OptionsError, match=r"'n_tokens_vocab' \(20\) is smaller than the vocabulary \(32 "
                                               r"words in .*vocab.txt\)"):
            train(cfg, str(tmp_path / "run"), progress=False)
        assert not (tmp_path / "run").exists()
    # the CLI: a word model without --vocab exits 1 with one line naming the fix
    (tmp_path / "in.txt").write_text("the cat\n")
    code = main(["embed", "--options", str(DATA / "options.json"), "--weights", str(DATA / "weights.hdf5"),
                 "--input", str(tmp_path / "in.txt"), "--output", str(tmp_path / "out.hdf5")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 1 and len(err) == 1 and "word-input biLM" in err[0] and "--vocab" in err[0]
    assert not (tmp_path / "out.hdf5").exists()


@pytest.mark.slow
def test_task_model_on_a_word_bilm(tmp_path):
    """A classifier on bilm-tf's word model (frozen, through its token table; the vocabulary from
    `bilm_vocab`) trains and predicts; fine-tuning one is refused before compute."""
    from elmo_jax.config import ConfigError
    from elmo_jax.tasks.config import TaskConfig
    from elmo_jax.tasks import TaskPredictor, train_task

    if not TRAIN_DIR.is_dir():
        pytest.skip(f"bilm-tf training fixture not found: {TRAIN_DIR}")
    samples = Path(__file__).resolve().parents[1] / "examples" / "data"
    cfg = TaskConfig(task="classify", train=str(samples / "sentiment_sample.tsv"), options=str(DATA / "options.json"),
                     weights=str(DATA / "weights.hdf5"), bilm_vocab=str(TRAIN_DIR / "vocab.txt"), hidden_dim=8,
                     batch_size=8, max_epochs=2, patience=0, encoder="pool")
    summary = train_task(cfg, str(tmp_path / "clf"), progress=False, log=lambda _: None)
    assert summary["epochs"] == 2
    labels = TaskPredictor(str(tmp_path / "clf")).predict([["the", "neural", "words"], ["zebra"]])
    assert len(labels) == 2 and set(labels) <= {"positive", "negative"}
    with pytest.raises(ConfigError, match="word-input biLM.*set fine_tune false"):
        train_task(cfg.replace(fine_tune=True), str(tmp_path / "ft"), progress=False, log=lambda _: None)
