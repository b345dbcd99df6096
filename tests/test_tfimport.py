"""`import-tf-checkpoint`: a bilm-tf training checkpoint -> an elmo-jax run directory. Checked on
the checkpoint bilm-tf itself wrote (its test() perplexity at batch size 1, its dump_weights hdf5,
its Adagrad slots), on synthetic checkpoints of other shapes, and on a 793,471-word softmax."""
from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import time
from pathlib import Path

import jax
import numpy as np
import optax
import pytest

from conftest import make_random_arrays
from elmo_jax.cli import main
from elmo_jax.config import TrainConfig
from elmo_jax.options import ModelOptions
from elmo_jax.tfcheckpoint import TFCheckpoint
from elmo_jax.train.checkpoint import Checkpoints
from elmo_jax.train.rundir import data_abstract, load_run_params
from elmo_jax.train.step import init_state
from elmo_jax.train.tfimport import import_tf_checkpoint
from elmo_jax.vocab import Vocabulary
from elmo_jax.weights import load_model, params_to_arrays, read_hdf5_arrays, tf_variable_name
from tf_bundle import bilm_tf_variables, write_bundle


def cli(*args: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(list(args))
    return code, out.getvalue(), err.getvalue()


def restore_state(run_dir: str) -> dict:
    """The whole train state of a run's latest checkpoint, as NumPy."""
    cfg = TrainConfig.from_json(os.path.join(run_dir, "config.json"))
    ckpts = Checkpoints(os.path.join(run_dir, "checkpoints"), async_save=False)
    try:
        step = ckpts.latest_step()
        vocab_size = ckpts.read_meta(step)["vocab_size"]
        abstract = jax.eval_shape(lambda k: init_state(cfg, vocab_size, k), jax.random.key(0))
        state, _, _ = ckpts.restore(step, abstract, data_abstract(ckpts, step))
    finally:
        ckpts.close()
    return jax.tree_util.tree_map(np.asarray, state)


def leaves(tree) -> dict[str, np.ndarray]:
    return {jax.tree_util.keystr(p): np.asarray(x) for p, x in jax.tree_util.tree_leaves_with_path(tree)}


@pytest.fixture(scope="module")
def imported(tf_checkpoint_dir, tmp_path_factory) -> str:
    run = str(tmp_path_factory.mktemp("imported") / "run")
    code, _, err = cli("import-tf-checkpoint", "--checkpoint", str(tf_checkpoint_dir), "--vocab",
                       str(tf_checkpoint_dir / "vocab.txt"), "--output-dir", run, "--quiet")
    assert code == 0, err
    assert "step 120" in err and "init_from=" in err
    return run


def test_perplexity_reproduces_bilm_tf_test(imported, tf_checkpoint_dir):
    """bilm-tf's test() at batch size 1 (unroll 1, state carried, mean of 0.5 (l_f + l_b) over all
    predictions) equals exp of the mean of the two directions' mean losses here: every prediction
    of the file is counted once in both (the evaluation pads the last window with weight 0), and
    the carried state makes the window length irrelevant."""
    reference = json.loads((tf_checkpoint_dir / "reference.json").read_text())["perplexity_batch1"]
    code, out, err = cli("perplexity", "--run-dir", imported, "--files", str(tf_checkpoint_dir / "data.txt"),
                         "--batch-size", "1")
    assert code == 0, err
    result = json.loads(out)
    assert result["step"] == 120
    assert result["perplexity_average"] == pytest.approx(reference, rel=1e-4)


def test_imported_state_is_the_checkpoint(imported, tf_checkpoint_dir):
    """The biLM equals bilm-tf's dump_weights of the checkpoint exactly; the softmax, every Adagrad
    slot and the step are the TF values."""
    cfg, params, step, meta = load_run_params(imported)
    assert step == 120 and meta["vocab_size"] == 32 and meta["imported_from"].endswith("model.ckpt-120")
    options, reference, _ = load_model(tf_checkpoint_dir / "options.json", tf_checkpoint_dir / "weights.hdf5")
    assert cfg.model.for_training() == options.for_training()
    ours = leaves({k: v for k, v in params.items() if k != "softmax"})
    theirs = leaves(reference)
    assert ours.keys() == theirs.keys()
    for name, value in theirs.items():
        np.testing.assert_array_equal(ours[name], value, err_msg=name)
    ckpt = TFCheckpoint(tf_checkpoint_dir)
    np.testing.assert_array_equal(params["softmax"]["W"], ckpt.array("lm/softmax/W"))
    np.testing.assert_array_equal(params["softmax"]["b"], ckpt.array("lm/softmax/b"))

    state = restore_state(imported)
    assert int(state["step"]) == 120
    accumulators = optax.tree_utils.tree_get(state["opt_state"], "sum_of_squares")
    slots = {name: ckpt.array(name + "/Adagrad") for name in ckpt.names if name + "/Adagrad" in ckpt.entries}
    assert len(slots) == 29  # every trainable variable has one: 27 biLM + 2 softmax
    imported_acc = params_to_arrays(accumulators, cfg.model)
    for name, value in read_hdf5_arrays(tf_checkpoint_dir / "weights.hdf5").items():
        np.testing.assert_array_equal(imported_acc[name], slots[tf_variable_name(name)], err_msg=name)
    np.testing.assert_array_equal(accumulators["softmax"]["W"], slots["lm/softmax/W"])
    assert not np.allclose(slots["lm/softmax/W"], 1.0)  # trained: the accumulators moved off 1.0
    # bilm-tf's training settings from options.json
    assert (cfg.batch_size, cfg.unroll_steps, cfg.n_negative_samples, cfg.clip_norm) == (2, 10, 16, 10.0)
    assert (cfg.optimizer, cfg.learning_rate, cfg.initial_accumulator) == ("adagrad", 0.2, 1.0)
    assert Vocabulary.from_file(cfg.vocab) == Vocabulary.from_file(tf_checkpoint_dir / "vocab.txt")


def test_export_of_the_imported_run_is_bilm_tf_dump_weights(imported, tf_checkpoint_dir, tmp_path):
    code, _, err = cli("export", "--run-dir", imported, "--output-dir", str(tmp_path / "export"))
    assert code == 0, err
    ours = read_hdf5_arrays(tmp_path / "export" / "weights.hdf5")
    theirs = read_hdf5_arrays(tf_checkpoint_dir / "weights.hdf5")
    assert ours.keys() == theirs.keys()
    for name in theirs:
        np.testing.assert_array_equal(ours[name], theirs[name], err_msg=name)


@pytest.mark.slow
def test_fine_tuning_continues_adagrad_or_starts_fresh(imported, tf_checkpoint_dir, tmp_path):
    """`train --set init_from=RUN`: one step from the imported params, continuing the imported
    Adagrad state (restart.py) or, with init_optimizer_state=false, a fresh one. For the same
    gradient g (same params, batch, negatives and dropout), the update is -lr g / sqrt(acc + g^2)
    with acc the TF slot or 1.0, and the accumulator becomes acc + g^2. g is recovered from the
    fresh run's update and predicts the other run's update and both accumulators."""
    before = restore_state(imported)
    runs = {}
    for keep in ("true", "false"):  # the second run's train step comes from the compilation cache
        run = str(tmp_path / f"tuned_{keep}")
        code, _, err = cli("train", "--config", str(Path(imported) / "config.json"), "--run-dir", run, "--quiet",
                           "--set", f"train_files={tf_checkpoint_dir / 'data.txt'}", "--set", "max_steps=1",
                           "--set", f"init_from={imported}", "--set", f"init_optimizer_state={keep}")
        assert code == 0, err
        runs[keep] = restore_state(run)
        assert int(runs[keep]["step"]) == 1  # a new run (restart.py semantics)
    slots = leaves(optax.tree_utils.tree_get(before["opt_state"], "sum_of_squares"))
    acc_kept = leaves(optax.tree_utils.tree_get(runs["true"]["opt_state"], "sum_of_squares"))
    acc_fresh = leaves(optax.tree_utils.tree_get(runs["false"]["opt_state"], "sum_of_squares"))
    p0, p_kept, p_fresh = (leaves(s["params"]) for s in (before, runs["true"], runs["false"]))
    lr, differs = 0.2, 0
    for name, slot in slots.items():
        d_fresh = (p_fresh[name] - p0[name]).astype(np.float64)
        g2 = d_fresh ** 2 / (lr ** 2 - d_fresh ** 2)  # from d = -lr g / sqrt(1 + g^2)
        g = -np.sign(d_fresh) * np.sqrt(g2)
        np.testing.assert_allclose(acc_fresh[name], 1.0 + g2, rtol=1e-5, atol=1e-5, err_msg=name)
        np.testing.assert_allclose(acc_kept[name], slot + g2, rtol=1e-5, atol=1e-5, err_msg=name)
        np.testing.assert_allclose(p_kept[name] - p0[name], -lr * g / np.sqrt(slot + g2), atol=2e-6, err_msg=name)
        differs += int(np.sum(np.abs(p_kept[name] - p_fresh[name]) > 1e-4))
    assert differs > 100  # the trained slots (not 1.0) really changed the step


def test_errors_are_one_line_before_any_output(imported, tf_checkpoint_dir, tmp_path):
    src = tf_checkpoint_dir
    vocab = tmp_path / "vocab_plus.txt"
    vocab.write_text((src / "vocab.txt").read_text() + "extra\n")
    code, _, err = cli("import-tf-checkpoint", "--checkpoint", str(src), "--vocab", str(vocab),
                       "--output-dir", str(tmp_path / "a"), "--quiet")
    assert code == 1 and err.count("\n") == 1 and not (tmp_path / "a").exists()
    assert "the vocabulary has 33 words but the checkpoint's softmax 'lm/softmax/W' has 32 rows" in err
    assert "model.ckpt-120.index" in err

    options = json.loads((src / "options.json").read_text())
    options["char_cnn"]["n_highway"] = 2
    bad = tmp_path / "options.json"
    bad.write_text(json.dumps(options))
    code, _, err = cli("import-tf-checkpoint", "--checkpoint", str(src), "--vocab", str(src / "vocab.txt"),
                       "--options", str(bad), "--output-dir", str(tmp_path / "b"), "--quiet")
    assert code == 1 and err.count("\n") == 1 and not (tmp_path / "b").exists()
    assert "no variable 'lm/CNN_high_1/W_carry'" in err

    options["char_cnn"]["n_highway"] = 1
    options["lstm"]["dim"] = 64
    bad.write_text(json.dumps(options))
    code, _, err = cli("import-tf-checkpoint", "--checkpoint", str(src), "--vocab", str(src / "vocab.txt"),
                       "--options", str(bad), "--output-dir", str(tmp_path / "b"), "--quiet")
    assert code == 1 and err.count("\n") == 1
    assert "variable 'lm/RNN_0/rnn/multi_rnn_cell/cell_0/lstm_cell/kernel' has shape [32, 128], expected " \
           "[32, 256]" in err

    code, _, err = cli("import-tf-checkpoint", "--checkpoint", str(src), "--vocab", str(src / "vocab.txt"),
                       "--output-dir", imported, "--quiet")
    assert code == 1 and "not empty" in err and err.count("\n") == 1

    lone = tmp_path / "lone"  # a checkpoint without options.json beside it
    lone.mkdir()
    for name in ("model.ckpt-120.index", "model.ckpt-120.data-00000-of-00001"):
        shutil.copyfile(src / name, lone / name)
    code, _, err = cli("import-tf-checkpoint", "--checkpoint", str(lone / "model.ckpt-120"), "--vocab",
                       str(src / "vocab.txt"), "--output-dir", str(tmp_path / "c"), "--quiet")
    assert code == 1 and "pass --options" in err and err.count("\n") == 1
    os.remove(lone / "model.ckpt-120.data-00000-of-00001")
    code, _, err = cli("import-tf-checkpoint", "--checkpoint", str(lone), "--vocab", str(src / "vocab.txt"),
                       "--options", str(src / "options.json"), "--output-dir", str(tmp_path / "c"), "--quiet")
    assert code == 1 and err.count("\n") == 1 and not (tmp_path / "c").exists()
    assert f"{lone / 'model.ckpt-120.data-00000-of-00001'}: missing data shard 0 of 1" in err

    # resuming the imported directory itself is refused with the way to fine-tune it
    code, _, err = cli("train", "--config", str(Path(imported) / "config.json"), "--run-dir", imported,
                       "--set", f"train_files={src / 'data.txt'}", "--quiet")
    assert code == 1 and "init_from=" in err and err.count("\n") == 1


SHAPES = {
    "3 layers, no skip, tanh, 2 highways": dict(n_layers=3, use_skip_connections=False, activation="tanh",
                                                n_highway=2),
    "no LSTM projection (P = H)": dict(lstm_dim=8, projection_dim=8, cell_clip=None, proj_clip=None),
    "no token projection (F = P), no highway": dict(filters=((1, 4), (2, 4)), projection_dim=8, n_highway=0),
}


@pytest.mark.parametrize("shape", list(SHAPES))
def test_other_shapes_round_trip(tmp_path, shape):
    """A checkpoint of another shape, written with bilm-tf's variable names by the independent test
    writer (two shards, snappy blocks): the run holds exactly its arrays."""
    options = ModelOptions(char_embed_dim=3, filters=((1, 4), (2, 6)), n_highway=1, n_characters=261,
                           max_characters_per_token=10, lstm_dim=12, projection_dim=6, n_layers=2)
    options = options.replace(**SHAPES[shape]).validate()
    words = ["<S>", "</S>", "<UNK>"] + [f"w{i}" for i in range(9)]
    rng = np.random.default_rng(1)
    bilm = make_random_arrays(options, seed=2)
    variables = bilm_tf_variables(bilm)
    variables["lm/softmax/W"] = rng.standard_normal((len(words), options.projection_dim)).astype(np.float32)
    variables["lm/softmax/b"] = rng.standard_normal(len(words)).astype(np.float32)
    slots = {f"{k}/Adagrad": (1.0 + rng.random(v.shape)).astype(np.float32) for k, v in variables.items()}
    ckpt_dir = tmp_path / "tf"
    ckpt_dir.mkdir()
    write_bundle(str(ckpt_dir / "model.ckpt-42"), {**variables, **slots, "global_step": np.array(42, np.int64),
                                                   "train_perplexity": np.array(3.5, np.float32)},
                 num_shards=2, snappy=True, block_entries=8)
    options.to_json(ckpt_dir / "options.json")
    (tmp_path / "vocab.txt").write_text("\n".join(words) + "\n")
    result = import_tf_checkpoint(str(ckpt_dir), str(tmp_path / "vocab.txt"), str(tmp_path / "run"), progress=False)
    assert result["step"] == 42 and any("train_perplexity" in n for n in result["notes"])
    state = restore_state(str(tmp_path / "run"))
    assert int(state["step"]) == 42
    cfg = TrainConfig.from_json(tmp_path / "run" / "config.json")
    for tree, source in ((state["params"], variables), (optax.tree_utils.tree_get(state["opt_state"],
                                                                                  "sum_of_squares"), slots)):
        arrays = params_to_arrays(tree, cfg.model)
        suffix = "" if source is variables else "/Adagrad"
        assert set(bilm_tf_variables(arrays)) | {"lm/softmax/W", "lm/softmax/b"} == {
            k[: len(k) - len(suffix)] for k in source}
        for name, value in bilm_tf_variables(arrays).items():
            np.testing.assert_array_equal(value, source[name + suffix], err_msg=name)
        np.testing.assert_array_equal(tree["softmax"]["W"], source["lm/softmax/W" + suffix])
        np.testing.assert_array_equal(tree["softmax"]["b"], source["lm/softmax/b" + suffix])


def one_billion_word_sized(tmp_path: Path, rows: int = 793_471, dim: int = 16) -> tuple[Path, Path]:
    """A checkpoint with a `rows` x `dim` softmax (+ Adagrad slots) on a tiny biLM, and its vocabulary."""
    options = ModelOptions(char_embed_dim=2, filters=((1, 4), (2, 4)), n_highway=1, n_characters=261,
                           max_characters_per_token=10, lstm_dim=dim, projection_dim=dim, n_layers=1)
    variables = bilm_tf_variables(make_random_arrays(options, seed=3))
    variables["lm/softmax/W"] = np.arange(rows * dim, dtype=np.float32).reshape(rows, dim) / rows
    variables["lm/softmax/b"] = -np.arange(rows, dtype=np.float32)
    slots = {f"{k}/Adagrad": v + 1.0 for k, v in variables.items()}
    ckpt_dir = tmp_path / "tf"
    ckpt_dir.mkdir()
    write_bundle(str(ckpt_dir / "model.ckpt-935588"), {**variables, **slots,
                                                       "global_step": np.array(935588, np.int64)})
    options.to_json(ckpt_dir / "options.json")
    vocab = tmp_path / "vocab-2016-09-10.txt"
    vocab.write_text("<S>\n</S>\n<UNK>\n" + "".join(f"word{i}\n" for i in range(rows - 3)))
    return ckpt_dir, vocab


@pytest.mark.slow
def test_one_billion_word_vocabulary_size(tmp_path):
    """The published model's 793,471-word vocabulary loads in seconds, and a checkpoint with a
    softmax of that many rows imports (memory-mapped, written in chunks) with every row in place."""
    ckpt_dir, vocab = one_billion_word_sized(tmp_path)
    t0 = time.perf_counter()
    assert len(Vocabulary.from_file(vocab)) == 793_471
    assert time.perf_counter() - t0 < 30  # about 1-2 s; generous for a loaded CI machine
    result = import_tf_checkpoint(str(ckpt_dir), str(vocab), str(tmp_path / "run"), progress=False)
    assert result["step"] == 935588 and result["vocab_size"] == 793_471
    _, params, step, _ = load_run_params(str(tmp_path / "run"))
    ckpt = TFCheckpoint(ckpt_dir)
    np.testing.assert_array_equal(params["softmax"]["W"], ckpt.array("lm/softmax/W"))
    np.testing.assert_array_equal(params["softmax"]["b"], ckpt.array("lm/softmax/b"))


BILM_TF_3LAYER = Path(__file__).resolve().parent / "data" / "bilm_tf_3layer_tanh"


def test_other_shape_written_by_bilm_tf(tmp_path):
    """A checkpoint bilm-tf wrote for another shape (3 layers, no skip connections, tanh, 2 highway
    layers; tests/data/bilm_tf_3layer_tanh/generate.py): test() perplexity at batch size 1 and
    dump_weights reproduced."""
    src = BILM_TF_3LAYER
    run = str(tmp_path / "run")
    code, _, err = cli("import-tf-checkpoint", "--checkpoint", str(src), "--vocab", str(src / "vocab.txt"),
                       "--output-dir", run, "--quiet")
    assert code == 0, err
    code, out, err = cli("perplexity", "--run-dir", run, "--files", str(src / "data.txt"), "--batch-size", "1")
    assert code == 0, err
    reference = json.loads((src / "reference.json").read_text())
    assert json.loads(out)["perplexity_average"] == pytest.approx(reference["perplexity_batch1"], rel=1e-4)
    code, _, err = cli("export", "--run-dir", run, "--output-dir", str(tmp_path / "export"))
    assert code == 0, err
    ours = read_hdf5_arrays(tmp_path / "export" / "weights.hdf5")
    theirs = read_hdf5_arrays(src / "weights.hdf5")
    assert ours.keys() == theirs.keys() and len(theirs) == 1 + 6 + 8 + 2 + 18
    for name in theirs:
        np.testing.assert_array_equal(ours[name], theirs[name], err_msg=name)


def test_fine_tuning_an_imported_run_without_train_files_is_one_line(imported, tmp_path):
    """The imported config names no training text, so forgetting `train_files` is an error before
    compute rather than a silent run on the built-in corpus."""
    assert TrainConfig.from_json(os.path.join(imported, "config.json")).train_files == ""
    code, _, err = cli("train", "--config", os.path.join(imported, "config.json"), "--run-dir", str(tmp_path / "t"),
                       "--set", f"init_from={imported}", "--set", "max_steps=1", "--quiet")
    assert code == 1 and err.count("\n") == 1, err
    assert "config key 'train_files' is empty" in err
