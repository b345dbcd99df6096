"""Every key of the training and task configs is type-checked from its annotation: a wrong type is
one `ConfigError` line naming the key and the expected type (never a bare TypeError), from a file,
from `--set`, from the task flags and through the CLI, before any compute."""
from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from elmo_jax.config import ConfigError, TrainConfig
from elmo_jax.errors import ElmoError
from elmo_jax.tasks.config import TaskConfig

REPO = Path(__file__).resolve().parents[1]
TINY = REPO / "configs" / "tiny.json"
TASK_BASE = {"task": "classify", "train": "train.tsv", "options": "options.json", "weights": "weights.hdf5"}


def write_json(path: Path, data) -> Path:
    path.write_text(json.dumps(data, indent=2), encoding="utf-8")
    return path


def tiny_with(tmp_path: Path, **changes) -> Path:
    data = json.loads(TINY.read_text(encoding="utf-8"))
    data.update(changes)
    return write_json(tmp_path / "c.json", data)


# --------------------------------------------------------------------------- --set on the training config
@pytest.mark.parametrize("item, message", [
    ("max_steps=true", "config key 'max_steps' must be an integer or null, got true"),
    ("max_steps=2.5", "config key 'max_steps' must be an integer or null, got 2.5"),
    ("learning_rate=true", "config key 'learning_rate' must be a number, got true"),
    ("dropout=high", "config key 'dropout' must be a number, got 'high'"),
    ("batch_size=8.0", "config key 'batch_size' must be an integer, got 8.0"),
    ("batch_size=[8]", "config key 'batch_size' must be an integer, got [8]"),
    ("remat=1", "config key 'remat' must be true or false, got 1"),
    ("streaming=yes", "config key 'streaming' must be true or false, got 'yes'"),
    ("hoist_input=0", "config key 'hoist_input' must be true or false, got 0"),
    ("clip_norm=NaN", "config key 'clip_norm' must be a finite number, got nan"),
    ("optimizer=sgd", "config key 'optimizer' must be one of 'adagrad', 'adam', got 'sgd'"),
    ("precision=float16", "config key 'precision' must be one of 'float32', 'bfloat16', got 'float16'"),
    ("char_cnn_scan_rows=-4", "config key 'char_cnn_scan_rows' must be an integer >= 0, got -4"),
    ("char_cnn_scan_rows=2.5", "config key 'char_cnn_scan_rows' must be an integer or null, got 2.5"),
    ("heldout_files=3", None),  # a str key takes the text: accepted as the string "3"
])
def test_set_values_are_type_checked(item: str, message) -> None:
    if message is None:
        cfg = TrainConfig.from_json(TINY, [item])
        assert cfg.heldout_files == "3"
        return
    with pytest.raises(ConfigError) as err:
        TrainConfig.from_json(TINY, [item])
    text = str(err.value)
    assert message in text, text
    assert "\n" not in text and text.startswith(str(TINY))


def test_set_values_fit_their_annotation() -> None:
    """`--set` values are JSON when that fits the key's type, else the text: `shard_softmax=true`
    is the string 'true', `init_from=null` is None, numbers become floats for float keys."""
    cfg = TrainConfig.from_json(TINY, ["shard_softmax=true", "init_from=null", "learning_rate=1",
                                       "max_steps=null", "vocab=123", "heldout_files=null"])
    assert cfg.shard_softmax == "true" and cfg.init_from is None and cfg.max_steps is None
    assert cfg.learning_rate == 1.0 and type(cfg.learning_rate) is float
    assert cfg.vocab == "123" and cfg.heldout_files is None


# --------------------------------------------------------------------------- config files
@pytest.mark.parametrize("key, value, message", [
    ("clip_norm", "10", "config key 'clip_norm' must be a number, got '10'"),
    ("max_steps", 3.0, "config key 'max_steps' must be an integer or null, got 3.0"),
    ("remat", 1, "config key 'remat' must be true or false, got 1"),
    ("seed", True, "config key 'seed' must be an integer, got true"),
    ("vocab", 5, "config key 'vocab' must be a string, got 5"),
    ("heldout_files", ["a", "b"], "config key 'heldout_files' must be a string or null, got ['a', 'b']"),
    ("n_epochs", None, "config key 'n_epochs' must be a number, got null"),
    ("model", 5, "config key 'model' must be an object, got 5"),
])
def test_file_values_are_type_checked(tmp_path: Path, key: str, value, message: str) -> None:
    path = tiny_with(tmp_path, **{key: value})
    with pytest.raises(ConfigError) as err:
        TrainConfig.from_json(path)
    assert str(err.value) == f"{path}: {message}"


def fields_of(cls) -> list[str]:
    return [f.name for f in dataclasses.fields(cls)]


@pytest.mark.parametrize("key", [k for k in fields_of(TrainConfig) if k != "model"])
def test_every_training_key_is_checked(tmp_path: Path, key: str) -> None:
    """A JSON object is the wrong type for every key but `model`; a bool for every non-bool key."""
    for bad in ({"x": 1}, True if TrainConfig.__dataclass_fields__[key].type != "bool" else 1):
        with pytest.raises(ConfigError, match=rf"config key '{key}' must be [a-z]"):
            TrainConfig.from_json(tiny_with(tmp_path, **{key: bad}))


@pytest.mark.parametrize("key", [k for k in fields_of(TaskConfig)])
def test_every_task_key_is_checked(key: str) -> None:
    for bad in ({"x": 1}, True if TaskConfig.__dataclass_fields__[key].type != "bool" else 1):
        with pytest.raises(ConfigError, match=rf"task option '{key}' must be [a-z]"):
            TaskConfig.from_dict({**TASK_BASE, key: bad})


def test_programmatic_configs_are_checked_by_validate() -> None:
    with pytest.raises(ConfigError, match="config key 'dropout' must be a number, got 'high'"):
        TrainConfig(dropout="high").validate()
    with pytest.raises(ConfigError, match="config key 'clip_norm' must be a number, got '10'"):
        TrainConfig(clip_norm="10").validate()
    with pytest.raises(ConfigError, match="task option 'dropout' must be a number, got 'high'"):
        TaskConfig(**TASK_BASE, dropout="high").validate()
    TrainConfig(dropout=0, learning_rate=1).validate()  # an int is a number


def test_nested_model_keys_still_checked() -> None:
    with pytest.raises(ElmoError, match=r"lstm\.dim.*must be a positive integer, got True"):
        TrainConfig.from_json(TINY, ["model.lstm.dim=true"])
    with pytest.raises(ConfigError, match=r"unknown config key 'model\.lstm\.dimm'"):
        TrainConfig.from_json(TINY, ["model.lstm.dimm=3"])
    assert TrainConfig.from_json(TINY, ["model.lstm.dim=128"]).model.lstm_dim == 128


def test_model_keys_the_config_file_omits_can_be_set() -> None:
    """Options that options.json leaves out at their defaults (tiny.json has none of them) are
    known keys of --set, as they are in the file."""
    assert "bidirectional" not in json.loads(Path(TINY).read_text())["model"]
    model = TrainConfig.from_json(TINY, ["model.bidirectional=false", "model.char_cnn.word_channel_dim=20",
                                         "model.n_tokens_vocab=100"]).model
    assert (model.bidirectional, model.word_channel_dim, model.n_tokens_vocab) == (False, 20, 100)
    with pytest.raises(ElmoError, match="share_embedding_softmax.*needs word input"):  # known; then validated
        TrainConfig.from_json(TINY, ["model.share_embedding_softmax=true"])
    with pytest.raises(ConfigError, match=r"unknown config key 'model\.char_cnn\.word_channel'"):
        TrainConfig.from_json(TINY, ["model.char_cnn.word_channel=20"])


def test_unknown_keys_list_the_known_ones(tmp_path: Path) -> None:
    path = tiny_with(tmp_path, learning_rat=0.1)
    with pytest.raises(ConfigError) as err:
        TrainConfig.from_json(path)
    assert "unknown config key(s): learning_rat (known: " in str(err.value)
    assert "learning_rate" in str(err.value) and "fused_backward" in str(err.value)
    with pytest.raises(ConfigError, match=r"unknown task option\(s\): colour \(known: .*batch_size"):
        TaskConfig.from_dict({**TASK_BASE, "colour": 1})
    with pytest.raises(ConfigError, match=r"--set colour: unknown task option 'colour'"):
        TaskConfig.from_json(write_json(tmp_path / "t.json", TASK_BASE), ["colour=1"])


@pytest.mark.parametrize("cls", [TrainConfig, TaskConfig])
def test_json_errors_name_file_and_line(tmp_path: Path, cls) -> None:
    path = tmp_path / "bad.json"
    path.write_text('{\n  "seed": 1,\n  "dropout": 0.1,,\n}\n', encoding="utf-8")
    with pytest.raises(ConfigError, match=r"bad\.json: malformed JSON: .* at line 3 column"):
        cls.from_json(path)
    path.write_text('{"seed": 1, "seed": 2}', encoding="utf-8")
    with pytest.raises(ConfigError, match=r"bad\.json: duplicate key 'seed'"):
        cls.from_json(path)
    path.write_text('[1, 2]', encoding="utf-8")
    with pytest.raises(ConfigError, match=r"bad\.json: .*must be a JSON object, got a list"):
        cls.from_json(path)
    with pytest.raises(ConfigError, match="not found"):
        cls.from_json(tmp_path / "absent.json")


def test_task_config_types() -> None:
    ok = TaskConfig.from_dict({**TASK_BASE, "dropout": 0, "num_mixes": 2})
    assert ok.dropout == 0.0 and type(ok.dropout) is float and ok.num_mixes == 2
    for key, value, message in [
            ("num_mixes", True, "task option 'num_mixes' must be one of 1, 2, got true"),
            ("hidden_dim", 2.0, "task option 'hidden_dim' must be an integer, got 2.0"),
            ("crf", "yes", "task option 'crf' must be true or false, got 'yes'"),
            ("dev", 3, "task option 'dev' must be a string or null, got 3"),
            ("task", "parse", "task option 'task' must be one of 'classify', 'tag', got 'parse'")]:
        with pytest.raises(ConfigError) as err:
            TaskConfig.from_dict({**TASK_BASE, key: value}, source="t.json")
        assert str(err.value) == f"t.json: {message}"


def test_round_trips(tmp_path: Path) -> None:
    cfg = TrainConfig.from_json(TINY, ["max_steps=7", "hoist_input=true", "n_epochs=3"])
    cfg.to_json(tmp_path / "c.json")
    assert TrainConfig.from_json(tmp_path / "c.json") == cfg
    task = TaskConfig.from_dict({**TASK_BASE, "crf": True, "task": "tag", "patience": 0})
    task.to_json(tmp_path / "t.json")
    assert TaskConfig.from_json(tmp_path / "t.json") == task


# --------------------------------------------------------------------------- the command lines
CLI_ENV = {**os.environ, "JAX_PLATFORMS": "cpu", "HF_DATASETS_OFFLINE": "1"}


def run_cli(*args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "elmo_jax", *args], capture_output=True, text=True,
                           env=CLI_ENV, cwd=REPO, timeout=timeout)


def assert_one_line_error(r: subprocess.CompletedProcess, *needles: str) -> None:
    assert r.returncode == 1, (r.returncode, r.stderr[-2000:])
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in r.stderr, r.stderr[-2000:]
    for needle in needles:
        assert needle in lines[0], lines[0]


def test_train_cli_bad_set_is_one_line_before_compute(tmp_path: Path) -> None:
    run = tmp_path / "run"
    r = run_cli("train", "--config", str(TINY), "--run-dir", str(run), "--set", "dropout=high")
    assert_one_line_error(r, "config key 'dropout' must be a number, got 'high'")
    assert not run.exists()
    bad = tiny_with(tmp_path, clip_norm="10")
    r = run_cli("train", "--config", str(bad), "--run-dir", str(run))
    assert_one_line_error(r, str(bad), "config key 'clip_norm' must be a number, got '10'")
    assert not run.exists()


def test_task_train_cli_takes_config_and_set(tmp_path: Path) -> None:
    cfg = write_json(tmp_path / "t.json", TASK_BASE)
    out = tmp_path / "out"
    r = run_cli("task", "train", "--config", str(cfg), "--set", "dropout=high", "--output-dir", str(out))
    assert_one_line_error(r, "task option 'dropout' must be a number, got 'high'")
    assert not out.exists()


def parse_task_train(*argv: str) -> TaskConfig:
    from elmo_jax.cli import build_parser
    from elmo_jax.tasks.cli import config_from_args

    return config_from_args(build_parser().parse_args(["task", "train", "--output-dir", "out", *argv]))


def test_task_train_flags_config_and_set_combine(tmp_path: Path) -> None:
    cfg = write_json(tmp_path / "t.json", {**TASK_BASE, "hidden_dim": 50, "crf": True, "task": "tag"})
    got = parse_task_train("--config", str(cfg), "--hidden-dim", "64", "--set", "cache_tokens=false",
                           "--set", "dev=dev.txt", "--no-crf", "--dropout", "0")
    assert (got.task, got.train, got.hidden_dim, got.crf, got.cache_tokens, got.dev) == \
        ("tag", "train.tsv", 64, False, False, "dev.txt")
    assert got.dropout == 0.0
    # the explicit flags of before still work
    got = parse_task_train("--task", "classify", "--train", "a.tsv", "--options", "o.json", "--weights", "w.h5",
                           "--crf", "--fine-tune", "--num-mixes", "2", "--learning-rate", "0.01",
                           "--encoder", "pool", "--tag-column", "-1", "--untrained-bilm")
    assert (got.crf, got.fine_tune, got.num_mixes, got.learning_rate, got.encoder, got.untrained_bilm) == \
        (True, True, 2, 0.01, "pool", True)
    # every TaskConfig key has a flag
    help_text = _task_train_help()
    for f in dataclasses.fields(TaskConfig):
        assert "--" + f.name.replace("_", "-") in help_text, f.name
    with pytest.raises(ConfigError, match=r"command line: task option 'batch_size' must be an integer, got 'x'"):
        parse_task_train("--config", str(cfg), "--set", "batch_size=x")
    # a flag's wrong value is the same one-line error as from --set (not an argparse usage dump)
    with pytest.raises(ConfigError, match=r"command line: task option 'hidden_dim' must be an integer, got 2\.5"):
        parse_task_train("--config", str(cfg), "--hidden-dim", "2.5")
    with pytest.raises(ConfigError, match=r"task option 'num_mixes' must be one of 1, 2, got 3"):
        parse_task_train("--config", str(cfg), "--num-mixes", "3")
    assert parse_task_train("--config", str(cfg), "--dev", "null", "--train", "123").dev == "null"  # text, verbatim
    with pytest.raises(ConfigError, match=rf"{cfg.name}: task option 'seed' must be an integer, got '1'"):
        parse_task_train("--config", str(write_json(cfg, {**TASK_BASE, "seed": "1"})))
    with pytest.raises(ConfigError, match="task option 'task' is required"):
        parse_task_train("--train", "a.tsv", "--options", "o.json", "--weights", "w.h5")


def _task_train_help() -> str:
    from elmo_jax.cli import build_parser

    parser = build_parser()
    sub = next(a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction")
    task = sub.choices["task"]
    task_sub = next(a for a in task._actions if a.__class__.__name__ == "_SubParsersAction")
    return task_sub.choices["train"].format_help()


@pytest.mark.parametrize("changes,keys", [({"tokenizer": "bert"}, "key 'tokenizer' only applies"),
                                          ({"language": "de", "split_sentences": True},
                                           "keys 'language', 'split_sentences' only apply")])
def test_raw_text_keys_without_tokenize_are_one_line(tmp_path: Path, changes: dict, keys: str) -> None:
    """Tokenizer settings on a pre-tokenized corpus would be ignored: an error names them instead."""
    path = tiny_with(tmp_path, **changes)
    with pytest.raises(ConfigError) as err:
        TrainConfig.from_json(path)
    assert str(err.value).startswith(f"{path}: config {keys} to raw text: set 'tokenize': true")
    assert TrainConfig.from_json(tiny_with(tmp_path, tokenize=True, **changes)).tokenize


@pytest.mark.parametrize("section, key", [("lstm", "cel_clip"), ("char_cnn", "n_higway"), ("char_cnn.embedding", "dims")])
def test_a_misspelt_model_option_in_a_config_file_is_an_error(tmp_path: Path, section: str, key: str) -> None:
    """options.json readers ignore unknown keys in these sections; a training config must not."""
    data = json.loads(TINY.read_text(encoding="utf-8"))
    node = data["model"]
    for part in section.split("."):
        node = node[part]
    node[key] = 3
    with pytest.raises(ConfigError, match=rf"unknown config key 'model\.{section}\.{key}' \(known in that section: "):
        TrainConfig.from_json(write_json(tmp_path / "c.json", data))
    data["model"]["n_train_tokens"] = 5  # bilm-tf's top-level training keys stay allowed
    del node[key]
    TrainConfig.from_json(write_json(tmp_path / "c.json", data))
