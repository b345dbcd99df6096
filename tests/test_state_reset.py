"""Zero-state robustness. A model trained only from carried LSTM states (bilm-tf's recipe) can be
sound from the state training carried and ruined from the zero state, where evaluation and every
embedder start. `state_reset_prob` restarts rows from zero during training; validation that warns
runs once more from the carried state and says which of the two it is."""
from __future__ import annotations

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from elmo_jax import sharding as shd
from elmo_jax.config import ConfigError, TrainConfig
from elmo_jax.modules.lstm import zero_state
from elmo_jax.train import loop
from elmo_jax.train.step import RESET_STREAM, init_state, make_train_step, reset_rows
from elmo_jax.vocab import Vocabulary, resolve_files
from test_train import tiny_config, write_corpus


def _random_state(opts, rows: int, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    z = zero_state(opts, rows)
    return {k: jnp.asarray(rng.uniform(0.5, 1.5, v.shape), jnp.float32) for k, v in z.items()}


def test_reset_rows_zeroes_whole_rows_at_the_given_rate(tmp_path):
    cfg = tiny_config(tmp_path)
    state = _random_state(cfg.model, 4000)
    out = reset_rows(state, jax.random.key(1), 0.1)
    zero_rows = [np.all(np.asarray(leaf) == 0, axis=(0, 1, 3)) for leaf in out.values()]
    np.testing.assert_array_equal(zero_rows[0], zero_rows[1])  # h and c of a row together
    kept = ~zero_rows[0]
    for k in state:  # every layer and direction of a row: all reset or all kept as they were
        np.testing.assert_array_equal(np.asarray(out[k])[:, :, kept], np.asarray(state[k])[:, :, kept])
        assert np.all(np.asarray(out[k])[:, :, ~kept] == 0)
    assert 0.08 < zero_rows[0].mean() < 0.12  # binomial(4000, 0.1): sd 0.005
    assert reset_rows(state, jax.random.key(1), 0.0) is state


def test_train_step_starts_reset_rows_from_zero(tmp_path):
    """The step with state_reset_prob p is the step with p = 0 from the state `reset_rows` makes
    with the step's key: same loss, same new params, same new carry."""
    cfg = tiny_config(tmp_path, state_reset_prob=0.5, dropout=0.0)
    cfg = cfg.replace(model=cfg.model.for_training())
    vocab = Vocabulary.from_file(cfg.vocab)
    cfg = cfg.replace(model=cfg.model.with_vocab_size(len(vocab), vocab.source))
    V = len(vocab)
    state = init_state(cfg, V, jax.random.key(0))
    state["lstm_state"] = _random_state(cfg.model, cfg.batch_size)
    batcher = loop.make_batcher(resolve_files(cfg.train_files), vocab, cfg, train=True, rows=cfg.batch_size,
                                unroll_steps=cfg.unroll_steps)
    local, _ = loop.step_inputs(batcher, cfg, cfg.batch_size)(next(iter(batcher)))
    batch = jax.tree_util.tree_map(jnp.asarray, local)
    new_p, m_p = jax.jit(make_train_step(cfg, V))(state, batch, None)
    key = jax.random.fold_in(jax.random.fold_in(jax.random.wrap_key_data(state["rng"]), state["step"]), RESET_STREAM)
    by_hand = dict(state, lstm_state=reset_rows(state["lstm_state"], key, 0.5))
    reset = np.all(np.asarray(by_hand["lstm_state"]["h"]) == 0, axis=(0, 1, 3))
    assert 0 < reset.sum() < cfg.batch_size
    new_0, m_0 = jax.jit(make_train_step(cfg.replace(state_reset_prob=0.0), V))(by_hand, batch, None)
    assert float(m_p["loss"]) == float(m_0["loss"])
    for a, b in zip(jax.tree_util.tree_leaves(new_p), jax.tree_util.tree_leaves(new_0)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    _, m_carry = jax.jit(make_train_step(cfg.replace(state_reset_prob=0.0), V))(state, batch, None)
    assert float(m_carry["loss"]) != float(m_p["loss"])  # the reset did change the step


def test_state_reset_prob_is_validated():
    for bad in (-0.1, 1.0):
        with pytest.raises(ConfigError, match="'state_reset_prob'"):
            TrainConfig(state_reset_prob=bad, heldout_files=None).validate()


def test_evaluator_from_the_carried_state(tmp_path):
    """`Evaluator(params, lstm_state)` starts from the first `rows` rows of the given state: zeros
    give the zero-state result exactly, rows beyond them are ignored, a real state differs."""
    cfg = tiny_config(tmp_path, batch_size=8)
    cfg = cfg.replace(model=cfg.model.for_training())
    vocab = Vocabulary.from_file(cfg.vocab)
    cfg = cfg.replace(model=cfg.model.with_vocab_size(len(vocab), vocab.source))
    params = init_state(cfg, len(vocab), jax.random.key(0))["params"]
    ev = loop.Evaluator(cfg, resolve_files(cfg.train_files), vocab, shd.make_mesh(), max_batches=3, batch_size=4)
    assert ev.rows == 4
    zero = ev(params)
    assert ev(params, zero_state(cfg.model, 8)) == zero
    carried = _random_state(cfg.model, 8)
    first_rows = {k: np.asarray(v) for k, v in carried.items()}
    other = {k: jnp.asarray(np.concatenate([v[:, :, :4], 7 * v[:, :, 4:]], axis=2)) for k, v in first_rows.items()}
    got = ev(params, carried)
    assert got != zero
    assert ev(params, other) == got


def test_carried_state_diagnosis_names_the_zero_state_start():
    zero_start = {"val_perplexity": 7.4e5, "val_perplexity_fwd": 9.9e7, "val_perplexity_bwd": 5460.6}
    sound = {"val_perplexity": 279.7, "val_perplexity_fwd": 286.8, "val_perplexity_bwd": 272.7}
    text = loop.carried_state_diagnosis(zero_start, sound, 288.8)
    assert "perplexity 279.7 (forward 286.8, backward 272.7)" in text and "set state_reset_prob" in text
    assert "raise state_reset_prob (now 0.02)" in loop.carried_state_diagnosis(zero_start, sound, 288.8, 0.02)
    poor = {"val_perplexity": 9e4, "val_perplexity_fwd": 9e6, "val_perplexity_bwd": 900.0}
    assert "check the softmax setting" in loop.carried_state_diagnosis(zero_start, poor, 288.8)
    rising = {"val_perplexity": 250.0, "val_perplexity_fwd": 240.0, "val_perplexity_bwd": 260.0}
    same = loop.carried_state_diagnosis(rising, dict(rising), 230.0)
    assert "state_reset_prob" not in same and "softmax" not in same


def test_a_warning_runs_validation_from_the_carried_state(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(loop, "WARN_VAL_OVER_TRAIN", 0.01)  # any model now counts as 'far above'
    train_glob, _ = write_corpus(tmp_path / "corpus")
    cfg = tiny_config(tmp_path, max_steps=2, heldout_files=train_glob, eval_batches=1, checkpoint_every=2)
    loop.train(cfg, str(tmp_path / "run"), progress=False)
    err = capsys.readouterr().err
    assert "WARNING at step 2: validation from the LSTM state training carried: perplexity" in err
    last = json.loads((tmp_path / "run" / "metrics.jsonl").read_text().splitlines()[-1])
    assert last["val_carried_perplexity"] > 0 and last["val_carried_perplexity_fwd"] > 0
    assert last["val_carried_perplexity"] != last["val_perplexity"]
    assert any("carried" in w for w in last["warnings"])


def test_perplexity_command_from_the_training_state(tmp_path, capsys):
    """`elmo-jax perplexity --from-training-state` starts from the checkpoint's carried LSTM state
    (the training batch's first rows): the Evaluator's result from that state, not the zero-state one."""
    from elmo_jax.cli import main
    from elmo_jax.train.rundir import load_run_state

    cfg = tiny_config(tmp_path, max_steps=2, checkpoint_every=2, batch_size=8)
    run = str(tmp_path / "run")
    loop.train(cfg, run, progress=False)
    capsys.readouterr()
    out = {}
    for flag in ([], ["--from-training-state"]):
        assert main(["perplexity", "--run-dir", run, "--files", cfg.train_files, "--batch-size", "16",
                     "--max-batches", "2", "--unroll-steps", "5"] + flag) == 0
        out[bool(flag)] = json.loads(capsys.readouterr().out)
    assert out[True]["start"] == "the LSTM state training carried (its first 8 rows)"
    assert out[False]["start"] == "the zero LSTM state"
    saved_cfg, state, _, _ = load_run_state(run)
    vocab = Vocabulary.from_file(cfg.vocab)
    ev = loop.Evaluator(saved_cfg, resolve_files(cfg.train_files), vocab, shd.make_mesh(), max_batches=2, batch_size=8)
    want = ev(state["params"], state["lstm_state"])
    assert float(np.abs(np.asarray(state["lstm_state"]["c"])).max()) > 0  # training did carry a state
    assert out[True]["perplexity_average"] == pytest.approx(want["val_perplexity"], rel=1e-6)
    assert out[True]["perplexity_average"] != out[False]["perplexity_average"]
