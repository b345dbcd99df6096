"""bilm-tf's own training tests (`tests/test_training.py` of allenai/bilm-tf), passed by elmo-jax.

Same scenarios, options, data (`shared/fixtures/bilm-tf/train/`), settings and bound as bilm-tf:
batch 2, unroll 10, 16 negatives (sampled softmax), 50 epochs (bilm-tf counts
int(134 / (2 x 10)) = 6 batches an epoch: 300 steps), clip norm 1.0, dropout 0.1, LSTM 16 / 8 /
2 layers, Adagrad 0.2; then the full-softmax perplexity of the training file, batch 1 (bilm-tf's
`test(..., batch_size=1)`) must be below 20. bilm-tf run the same way (its venv, TF 2 compat)
gave 16.07 (single direction), 16.25 (characters), 16.23 (shared softmax), 13.22 (skip
connections). The character model with a shared softmax is refused, as bilm-tf does.
"""
from __future__ import annotations

from pathlib import Path

import h5py
import pytest

from elmo_jax.config import TrainConfig
from elmo_jax.errors import OptionsError
from elmo_jax.train.export import export_run
from elmo_jax.train.loop import run_perplexity, train

TRAIN_DIR = Path(__file__).resolve().parents[2] / "shared" / "fixtures" / "bilm-tf" / "train"
STEPS = 50 * int(134 / (2 * 10))  # bilm-tf: n_epochs x int(n_train_tokens / (batch x unroll))


def bilm_tf_options(bidirectional: bool, use_chars: bool, share_embedding_softmax: bool = False) -> dict:
    """`_get_vocab_data_options` of bilm-tf's test, as an options.json dict."""
    options = {"lstm": {"dim": 16, "projection_dim": 8, "n_layers": 2}, "bidirectional": bidirectional}
    if use_chars:
        options["char_cnn"] = {"n_characters": 261, "max_characters_per_token": 10,
                               "filters": [[1, 8], [2, 8], [3, 16], [4, 32], [5, 64]], "activation": "tanh",
                               "embedding": {"dim": 4}, "n_highway": 1}
    if share_embedding_softmax:
        options["share_embedding_softmax"] = True
    return options


def bilm_tf_config(options: dict) -> TrainConfig:
    if not TRAIN_DIR.is_dir():
        pytest.skip(f"bilm-tf training fixture not found: {TRAIN_DIR}")
    data = str(TRAIN_DIR / "data.txt")
    return TrainConfig.from_dict({
        "model": options, "train_files": data, "heldout_files": None, "vocab": str(TRAIN_DIR / "vocab.txt"),
        "batch_size": 2, "unroll_steps": 10, "n_negative_samples": 16, "max_steps": STEPS, "clip_norm": 1.0,
        "dropout": 0.1, "optimizer": "adagrad", "learning_rate": 0.2, "log_every": 50, "seed": 0,
        "state_reset_prob": 0.0})  # bilm-tf never resets the carried state


def train_and_test(tmp_path: Path, options: dict) -> dict:
    cfg = bilm_tf_config(options)
    run = str(tmp_path / "run")
    train(cfg, run, progress=False)
    result = run_perplexity(run, str(TRAIN_DIR / "data.txt"), batch_size=1, unroll_steps=10)
    print(f"elmo-jax heldout perplexity {result['perplexity_average']:.2f}")
    return result


@pytest.mark.slow
def test_train_single_direction(tmp_path):
    result = train_and_test(tmp_path, bilm_tf_options(False, False))
    assert result["perplexity_backward"] is None  # one LM: nothing backward
    assert result["perplexity_average"] == result["perplexity_forward"] < 20.0
    out = export_run(str(tmp_path / "run"), str(tmp_path / "export"))
    with h5py.File(out["weights.hdf5"], "r") as f:  # bilm-tf dump_weights names of a forward-only LM
        names = set()
        f.visititems(lambda n, o: names.add(n) if isinstance(o, h5py.Dataset) else None)
    assert names == {"embedding"} | {f"rnn/MultiRNNCell/Cell{k}/LSTMCell/{leaf}" for k in range(2)
                                     for leaf in ("kernel", "bias", "projection/kernel")}


@pytest.mark.slow
def test_train_bilm_chars(tmp_path):
    assert train_and_test(tmp_path, bilm_tf_options(True, True))["perplexity_average"] < 20.0


@pytest.mark.slow
def test_train_shared_softmax_embedding(tmp_path):
    assert train_and_test(tmp_path, bilm_tf_options(True, False, True))["perplexity_average"] < 20.0


def test_train_shared_softmax_no_chars(tmp_path):
    """Character inputs and a shared softmax: refused before any compute (bilm-tf: ValueError)."""
    with pytest.raises(OptionsError, match="share_embedding_softmax.*needs word input"):
        bilm_tf_config(bilm_tf_options(True, True, True))


@pytest.mark.slow
def test_train_skip_connections(tmp_path):
    options = bilm_tf_options(True, False)
    options["lstm"]["use_skip_connections"] = True
    assert train_and_test(tmp_path, options)["perplexity_average"] < 20.0
