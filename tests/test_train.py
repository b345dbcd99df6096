"""Pretraining: end to end, exact resume, multi-device and multi-host equality, kill -9, export,
fine-tuning start, sampled softmax, bad input."""
from __future__ import annotations

import json
import signal
import time
from pathlib import Path

import jax
import numpy as np
import pytest

from elmo_jax.config import ConfigError, TrainConfig
from elmo_jax.errors import ElmoError
from elmo_jax.options import ModelOptions

from conftest import free_port, run_worker

TINY_MODEL = ModelOptions(char_embed_dim=4, filters=((1, 8), (2, 8), (3, 16)), n_highway=1, n_characters=261,
                          lstm_dim=32, projection_dim=16, n_layers=2, use_skip_connections=True)


def write_corpus(directory: Path, n_sentences: int = 300, seed: int = 0) -> tuple[str, str]:
    """A small synthetic corpus (2 shards) with a vocabulary file; returns (train glob, vocab path)."""
    from elmo_jax.vocab import build_vocab, resolve_files

    rng = np.random.default_rng(seed)
    subjects, verbs, objects = ["the cat", "a dog", "my friend", "the old man", "she"], \
        ["sees", "likes", "eats", "finds", "wants"], ["the ball", "a fish", "some bread", "it", "the red car"]
    directory.mkdir(parents=True, exist_ok=True)
    lines = [f"{rng.choice(subjects)} {rng.choice(verbs)} {rng.choice(objects)} ." for _ in range(n_sentences)]
    for k in range(2):
        (directory / f"train.{k}.txt").write_text("\n".join(lines[k::2]) + "\n", encoding="utf-8")
    vocab, _ = build_vocab(resolve_files(str(directory / "train.*.txt")))
    vocab.save(directory / "vocab.txt")
    return str(directory / "train.*.txt"), str(directory / "vocab.txt")


def tiny_config(tmp_path: Path, **changes) -> TrainConfig:
    train_glob, vocab = write_corpus(tmp_path / "corpus")
    base = dict(model=TINY_MODEL, train_files=train_glob, heldout_files=None, vocab=vocab, batch_size=8,
                unroll_steps=5, max_steps=4, log_every=1, checkpoint_every=2, dropout=0.1, seed=3)
    base.update(changes)
    return TrainConfig(**base).validate()


def config_file(cfg: TrainConfig, path: Path) -> str:
    cfg.to_json(path)
    return str(path)


def load_npz(path: Path) -> dict[str, np.ndarray]:
    with np.load(path) as z:
        return {k: z[k] for k in z.files}


def max_param_diff(a: dict, b: dict) -> float:
    assert set(a) == set(b)
    return max(float(np.abs(a[k] - b[k]).max()) for k in a)


# --------------------------------------------------------------------------- in-process
def test_train_writes_run_dir_and_resumes_exactly(tmp_path):
    from elmo_jax.train.loop import train

    cfg = tiny_config(tmp_path)
    straight = train(cfg, str(tmp_path / "a"), progress=False, return_params=True)
    half = train(cfg.replace(max_steps=2), str(tmp_path / "b"), progress=False)
    resumed = train(cfg, str(tmp_path / "b"), progress=False, return_params=True)
    run = tmp_path / "a"
    assert (run / "config.json").exists() and TrainConfig.from_json(run / "config.json").max_steps == 4
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [1, 2, 3, 4]
    for key in ("step", "loss", "perplexity", "tokens_per_s"):
        assert all(key in r for r in records), key
    assert sorted(int(p.name) for p in (run / "checkpoints").iterdir() if p.name.isdigit()) == [2, 4]
    assert half["step"] == 2
    # 4 steps in one run == 2 steps + restart + 2 steps: identical params and losses.
    for k, (a, b) in enumerate(zip(_leaves(straight["params"]), _leaves(resumed["params"]))):
        np.testing.assert_array_equal(a, b, err_msg=f"param leaf {k} differs after resume")
    resumed_records = [json.loads(line) for line in (tmp_path / "b" / "metrics.jsonl").read_text().splitlines()]
    assert [r["loss"] for r in resumed_records] == [r["loss"] for r in records]


def _leaves(tree):
    import jax

    return jax.tree_util.tree_leaves(tree)


def test_sampled_softmax_bf16_and_eval(tmp_path):
    from elmo_jax.train.loop import train

    train_glob, _ = write_corpus(tmp_path / "corpus")
    cfg = tiny_config(tmp_path, n_negative_samples=10, precision="bfloat16", heldout_files=train_glob,
                      eval_batches=3, max_steps=3, checkpoint_every=3)
    last = train(cfg, str(tmp_path / "run"), progress=False)
    assert np.isfinite(last["loss"]) and last["val_perplexity"] > 1
    final = json.loads((tmp_path / "run" / "metrics.jsonl").read_text().splitlines()[-1])
    assert final["step"] == 3 and {"loss", "perplexity", "tokens_per_s", "val_perplexity"} <= set(final)
    assert last["val_perplexity"] == pytest.approx(np.sqrt(last["val_perplexity_fwd"] * last["val_perplexity_bwd"]),
                                                   rel=1e-6)


def test_export_gives_the_checkpointed_model(tmp_path):
    from elmo_jax import BiLM, ElmoEmbedder, batch_to_ids
    from elmo_jax.train.export import export_run, load_run_params
    from elmo_jax.train.loop import train
    from elmo_jax.weights import expected_shapes, import_npz, read_hdf5_arrays

    cfg = tiny_config(tmp_path, max_steps=2)
    train(cfg, str(tmp_path / "run"), progress=False)
    paths = export_run(str(tmp_path / "run"), str(tmp_path / "out"))
    options = ModelOptions.from_json(paths["options.json"])
    assert options.n_characters == 262
    arrays = read_hdf5_arrays(paths["weights.hdf5"])
    assert {k: v.shape for k, v in arrays.items()} == expected_shapes(options)
    assert all(v.dtype == np.float32 for v in arrays.values())
    _, _, extra = import_npz(paths["params.npz"])
    assert extra["softmax"]["W"].shape == (len(Path(paths["vocab.txt"]).read_text().split()), 16)

    _, params, step, _ = load_run_params(str(tmp_path / "run"))
    assert step == 2
    # params are read without the optimizer state, and equal the whole state's
    from elmo_jax.train.rundir import load_run_state
    _, whole, _, _ = load_run_state(str(tmp_path / "run"))
    _, part, _, _ = load_run_state(str(tmp_path / "run"), optimizer=False)
    assert "opt_state" in whole and "opt_state" not in part
    for a, b in zip(jax.tree_util.tree_leaves(whole["params"]) + jax.tree_util.tree_leaves(whole["lstm_state"]),
                    jax.tree_util.tree_leaves(params) + jax.tree_util.tree_leaves(part["lstm_state"])):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    sentences = [["the", "cat", "sees", "a", "fish", "."], ["unseen", "words"]]
    ids, _ = batch_to_ids(sentences)
    direct = BiLM(cfg.model.for_inference()).apply({"params": {"token_encoder": params["token_encoder"],
                                                               "lstm": params["lstm"]}}, ids)["layers"]
    vectors = ElmoEmbedder.from_files(paths["options.json"], paths["weights.hdf5"]).embed_sentences(sentences)
    for b, v in enumerate(vectors):
        np.testing.assert_allclose(v, np.asarray(direct)[:, b, 1:1 + v.shape[1]], atol=1e-6, rtol=0)


def test_fine_tune_starts_from_export(tmp_path):
    from elmo_jax.train.export import export_run, load_run_params
    from elmo_jax.train.loop import train

    cfg = tiny_config(tmp_path, max_steps=2)
    train(cfg, str(tmp_path / "pre"), progress=False)
    export_run(str(tmp_path / "pre"), str(tmp_path / "exp"))
    _, pre, _, _ = load_run_params(str(tmp_path / "pre"))
    tuned = train(cfg.replace(max_steps=1, init_from=str(tmp_path / "exp"), learning_rate=1e-9, clip_norm=0.0,
                              dropout=0.0, checkpoint_every=1), str(tmp_path / "ft"), progress=False,
                  return_params=True)["params"]
    # With a vanishing learning rate one step leaves the loaded weights (softmax included) in place.
    for part in ("token_encoder", "lstm", "softmax"):
        for a, b in zip(_leaves(pre[part]), _leaves(tuned[part])):
            np.testing.assert_allclose(a, b, atol=1e-6, err_msg=part)


def test_bad_input_errors_before_compute(tmp_path):
    from elmo_jax.train.loop import train

    cfg = tiny_config(tmp_path)
    empty = tmp_path / "empty.txt"
    empty.write_text("", encoding="utf-8")
    with pytest.raises(ElmoError, match="empty"):
        train(cfg.replace(train_files=str(empty)), str(tmp_path / "r1"), progress=False)
    with pytest.raises(ElmoError, match="nothing matches|no file|not found"):
        train(cfg.replace(train_files=str(tmp_path / "missing*.txt")), str(tmp_path / "r2"), progress=False)
    bad_vocab = tmp_path / "bad_vocab.txt"
    bad_vocab.write_text("<S>\n</S>\nthe\n", encoding="utf-8")
    with pytest.raises(ElmoError, match="<UNK>") as err:
        train(cfg.replace(vocab=str(bad_vocab)), str(tmp_path / "r3"), progress=False)
    assert str(bad_vocab) in str(err.value)
    with pytest.raises(ConfigError, match="n_negative_samples"):
        train(cfg.replace(n_negative_samples=10_000), str(tmp_path / "r4"), progress=False)
    with pytest.raises(ConfigError, match="unknown config key"):
        TrainConfig.from_dict({**cfg.to_dict(), "learning_rat": 0.1})
    with pytest.raises(ConfigError, match="unknown config key 'lstm_size'"):
        TrainConfig.from_json(config_file(cfg, tmp_path / "c.json"), ["lstm_size=3"])
    # a checkpoint from another model shape: clear error, and the checkpoint is untouched
    train(cfg.replace(max_steps=2), str(tmp_path / "run"), progress=False)
    before = sorted(p.name for p in (tmp_path / "run" / "checkpoints").iterdir())
    bigger = cfg.replace(model=cfg.model.replace(lstm_dim=64))
    with pytest.raises(ElmoError, match="different model shape"):
        train(bigger, str(tmp_path / "run"), progress=False)
    assert sorted(p.name for p in (tmp_path / "run" / "checkpoints").iterdir()) == before
    with pytest.raises(ElmoError, match=r"different model shape.*fine-tune with the source run's model and "
                                        r"vocabulary: --config SRC/config\.json"):  # init_from: another remedy
        train(bigger.replace(init_from=str(tmp_path / "run")), str(tmp_path / "r5"), progress=False)
    with pytest.raises(ElmoError, match="already holds checkpoints"):
        train(cfg, str(tmp_path / "run"), resume=False, progress=False)


def test_overrides_and_config_round_trip(tmp_path):
    cfg = tiny_config(tmp_path)
    path = config_file(cfg, tmp_path / "c.json")
    again = TrainConfig.from_json(path, ["max_steps=7", "batch_size=16", "seed=5", "log_every=2",
                                         "checkpoint_every=3", "model.lstm.dim=48"])
    assert (again.max_steps, again.batch_size, again.seed, again.log_every, again.checkpoint_every) == (7, 16, 5, 2, 3)
    assert again.model.lstm_dim == 48 and again.model.projection_dim == 16
    assert TrainConfig.from_json(path) == cfg


# --------------------------------------------------------------------------- other processes
@pytest.mark.slow
def test_eight_devices_and_two_hosts_equal_one_device(tmp_path):
    """Same global batch: 1 device, 8 simulated devices, and 2 processes x 4 devices through
    jax.distributed give the same params after 3 steps with dropout on (the masks do not depend on
    the sharding) (float32 reductions in another order:
    max abs difference <= 2e-5) and the same losses (rel 1e-5)."""
    cfg = tiny_config(tmp_path, max_steps=3, checkpoint_every=3, dropout=0.3)  # sharded dropout masks too
    path = config_file(cfg, tmp_path / "c.json")
    run_worker(path, tmp_path / "one", tmp_path / "one.npz", 1)
    run_worker(path, tmp_path / "eight", tmp_path / "eight.npz", 8)
    from elmo_jax.vocab import Vocabulary

    words = Vocabulary.from_file(cfg.vocab).words
    padded_vocab = tmp_path / "vocab32.txt"  # a size the 8 devices divide: the softmax rows split evenly
    padded_vocab.write_text("\n".join(words + [f"unusedword{k}" for k in range(32 - len(words))]) + "\n")
    sharded = config_file(cfg.replace(shard_softmax="true", vocab=str(padded_vocab)), tmp_path / "sharded.json")
    run_worker(sharded, tmp_path / "sharded1", tmp_path / "sharded1.npz", 1)
    run_worker(sharded, tmp_path / "sharded", tmp_path / "sharded.npz", 8)  # softmax rows over devices
    diff = max_param_diff(load_npz(tmp_path / "sharded1.npz"), load_npz(tmp_path / "sharded.npz"))
    assert diff <= 2e-5, f"sharded softmax on 8 devices differs from 1 device by {diff:.3g}"
    port = free_port()
    procs = [run_worker(path, tmp_path / "multi", tmp_path / "multi.npz", 4, wait=False,
                        extra=["--coordinator", f"127.0.0.1:{port}", "--num-processes", "2", "--process-id", str(i)])
             for i in range(2)]
    for p in procs:
        _, err = p.communicate(timeout=400)
        assert p.returncode == 0, err[-3000:]
    one = load_npz(tmp_path / "one.npz")
    for name in ("eight", "multi"):
        diff = max_param_diff(one, load_npz(tmp_path / f"{name}.npz"))
        assert diff <= 2e-5, f"{name}: params differ from 1 device by {diff:.3g}"
        a = json.loads((tmp_path / "one.npz.json").read_text())
        b = json.loads((tmp_path / f"{name}.npz.json").read_text())
        assert b["loss"] == pytest.approx(a["loss"], rel=1e-5)


@pytest.mark.slow
def test_kill_9_restarts_from_last_complete_checkpoint(tmp_path):
    """SIGKILL a real training process at several moments (saves included); each restart resumes
    from the latest complete checkpoint and the run finishes with the same params as an
    uninterrupted run."""
    cfg = tiny_config(tmp_path, max_steps=12, checkpoint_every=1, keep_checkpoints=3, dropout=0.0)
    path = config_file(cfg, tmp_path / "c.json")
    run_worker(path, tmp_path / "ref", tmp_path / "ref.npz", 1)
    run = tmp_path / "killed"
    ckpt_dir = run / "checkpoints"
    rng = np.random.default_rng(0)
    kills = 0
    for attempt in range(3):
        proc = run_worker(path, run, tmp_path / "killed.npz", 1, wait=False)
        deadline = time.time() + 120
        target = attempt * 3 + 2 + int(rng.integers(0, 2))
        while time.time() < deadline and proc.poll() is None:
            steps = [int(p.name) for p in ckpt_dir.iterdir() if p.name.isdigit()] if ckpt_dir.exists() else []
            if steps and max(steps) >= target:
                time.sleep(float(rng.uniform(0, 0.3)))  # land anywhere, also inside a save
                break
            time.sleep(0.05)
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            kills += 1
        proc.wait()
    assert kills >= 1, "the process finished before it could be killed"
    run_worker(path, run, tmp_path / "killed.npz", 1)
    diff = max_param_diff(load_npz(tmp_path / "ref.npz"), load_npz(tmp_path / "killed.npz"))
    assert diff == 0.0, f"params after kill -9 + restarts differ from the uninterrupted run by {diff:.3g}"


@pytest.mark.slow
def test_tiny_config_beats_unigram_perplexity(pretrained_tiny):
    """`configs/tiny.json` on the built-in corpus: heldout perplexity well below the unigram
    perplexity of the same heldout text (measured: about 166 vs 363 after its 200 steps)."""
    from elmo_jax.corpus import builtin_corpus

    last = pretrained_tiny["last"]
    unigram = builtin_corpus()["unigram_perplexity"]
    assert last["step"] == 200
    assert last["val_perplexity"] < 0.75 * unigram, \
        f"tiny heldout perplexity {last['val_perplexity']:.1f} is not well below the unigram {unigram:.1f}"


def test_restart_from_run_dir_and_perplexity_cli(tmp_path):
    """init_from=<run dir> takes params and optimizer state (bilm-tf restart.py) and starts a new run
    at step 0; `elmo-jax perplexity` reports forward, backward and their geometric mean."""
    from elmo_jax.cli import main
    from elmo_jax.train.export import load_run_params
    from elmo_jax.train.loop import train

    cfg = tiny_config(tmp_path, max_steps=2, dropout=0.0)
    train(cfg, str(tmp_path / "pre"), progress=False)
    _, pre, _, _ = load_run_params(str(tmp_path / "pre"))
    again = train(cfg.replace(max_steps=1, init_from=str(tmp_path / "pre"), learning_rate=1e-9,
                              checkpoint_every=1), str(tmp_path / "re"), progress=False,
                  return_params=True)
    assert again["step"] == 1
    for a, b in zip(_leaves(pre), _leaves(again["params"])):
        np.testing.assert_allclose(a, b, atol=1e-6)

    import contextlib
    import io

    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        assert main(["perplexity", "--run-dir", str(tmp_path / "pre"), "--files", cfg.train_files,
                     "--batch-size", "4", "--unroll-steps", "5", "--max-batches", "3"]) == 0
    result = json.loads(buf.getvalue())
    assert result["step"] == 2 and result["tokens"] > 0
    assert result["perplexity_average"] == pytest.approx(
        np.sqrt(result["perplexity_forward"] * result["perplexity_backward"]), rel=1e-6)


def test_build_vocab_cli(tmp_path):
    from elmo_jax.cli import main
    from elmo_jax.vocab import Vocabulary

    glob_pattern, _ = write_corpus(tmp_path / "c")
    out = tmp_path / "v.txt"
    assert main(["build-vocab", "--corpus", glob_pattern, "--output", str(out), "--min-count", "2"]) == 0
    vocab = Vocabulary.from_file(out)
    assert vocab.words[:3] == ["<S>", "</S>", "<UNK>"] and "the" in vocab.words
    assert main(["build-vocab", "--corpus", str(tmp_path / "nothing*.txt"), "--output", str(out)]) == 1


# --------------------------------------------------------------------------- metrics and warnings
def test_interval_means_are_token_weighted_averages_of_the_steps(tmp_path):
    """A record logged every 3 steps holds the token-weighted mean loss of those 3 steps (and the
    mean gradient norm), computed here from a run logging every step (same seed, same steps)."""
    from elmo_jax.train.loop import train

    cfg = tiny_config(tmp_path, max_steps=6, checkpoint_every=6, log_every=1)
    train(cfg, str(tmp_path / "a"), progress=False)
    train(cfg.replace(log_every=3), str(tmp_path / "b"), progress=False)
    every = [json.loads(x) for x in (tmp_path / "a" / "metrics.jsonl").read_text().splitlines()]
    third = [json.loads(x) for x in (tmp_path / "b" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in every] == list(range(1, 7)) and [r["step"] for r in third] == [3, 6]
    for rec in third:
        window = [r for r in every if rec["step"] - 3 < r["step"] <= rec["step"]]
        assert rec["interval_steps"] == 3
        for d in ("fwd", "bwd"):  # every step has the same token count here: a plain mean
            assert rec[f"loss_{d}"] == pytest.approx(np.mean([r[f"loss_{d}"] for r in window]), rel=1e-6)
        assert rec["grad_norm"] == pytest.approx(np.mean([r["grad_norm"] for r in window]), rel=1e-6)
        assert rec["perplexity"] == pytest.approx(np.exp(0.5 * (rec["loss_fwd"] + rec["loss_bwd"])), rel=1e-9)
        assert rec["tokens_per_s"] > 0 and "positions_per_s" not in rec


def test_validation_warnings_flag_broken_models():
    from elmo_jax.train.loop import validation_warnings

    ok = {"val_perplexity": 190.0, "val_perplexity_fwd": 185.0, "val_perplexity_bwd": 195.0}
    assert validation_warnings(ok, 170.0, 200.0) == []
    ruined = {"val_perplexity": 56245.0, "val_perplexity_fwd": 16802995.0, "val_perplexity_bwd": 188.0}
    text = " | ".join(validation_warnings(ruined, 82.0, None))
    assert "forward LM is far worse" in text and "training perplexity" in text
    rising = {"val_perplexity": 250.0, "val_perplexity_fwd": 240.0, "val_perplexity_bwd": 260.0}
    assert any("rose from 200.0" in w for w in validation_warnings(rising, 230.0, 200.0))
    nan = {"val_perplexity": float("nan"), "val_perplexity_fwd": float("nan"), "val_perplexity_bwd": 3.0}
    assert "not finite" in validation_warnings(nan, 10.0, None)[0]


def test_validation_warning_is_printed_and_logged(tmp_path, capsys, monkeypatch):
    """A run whose validation perplexity is far above its training perplexity says so loudly
    (stderr) and records the warning in metrics.jsonl."""
    from elmo_jax.train import loop

    monkeypatch.setattr(loop, "WARN_VAL_OVER_TRAIN", 0.01)  # any model now counts as 'far above'
    train_glob, _ = write_corpus(tmp_path / "corpus")
    cfg = tiny_config(tmp_path, max_steps=2, heldout_files=train_glob, eval_batches=1, checkpoint_every=2)
    loop.train(cfg, str(tmp_path / "run"), progress=False)
    assert "WARNING at step 2: validation perplexity" in capsys.readouterr().err
    last = json.loads((tmp_path / "run" / "metrics.jsonl").read_text().splitlines()[-1])
    assert any("training perplexity" in w for w in last["warnings"])


@pytest.mark.slow
def test_sigterm_on_one_host_stops_every_host_at_the_same_step(tmp_path):
    """2 processes (jax.distributed); SIGTERM reaches only process 1. Its flag rides in the step,
    so both processes stop after the same step, save one checkpoint there and exit 0."""
    cfg = tiny_config(tmp_path, max_steps=100000, checkpoint_every=100000, log_every=1)
    path = config_file(cfg, tmp_path / "c.json")
    port = free_port()
    run = tmp_path / "multi"
    procs = [run_worker(path, run, tmp_path / "multi.npz", 1, wait=False,
                        extra=["--coordinator", f"127.0.0.1:{port}", "--num-processes", "2", "--process-id", str(i)])
             for i in range(2)]
    metrics = run / "metrics.jsonl"
    deadline = time.time() + 300
    while time.time() < deadline and not (metrics.exists() and len(metrics.read_text().splitlines()) >= 3):
        assert all(p.poll() is None for p in procs), procs[0].communicate()[1][-3000:]
        time.sleep(0.2)
    procs[1].send_signal(signal.SIGTERM)
    errs = []
    for p in procs:
        _, err = p.communicate(timeout=300)
        errs.append(err)
        assert p.returncode == 0, err[-3000:]
    steps = [int(d.name) for d in (run / "checkpoints").iterdir() if d.name.isdigit()]
    assert len(steps) == 1, steps
    assert f"at step {steps[0]}" in errs[0] and f"at step {steps[0]}" in errs[1]
    assert "stopped by SIGTERM" in errs[1] and "stopped by a signal on another host" in errs[0]
    assert json.loads((tmp_path / "multi.npz.json").read_text())["preempted"] is True
