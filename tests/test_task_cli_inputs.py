"""`elmo-jax task train | evaluate | predict`: bad arguments are one line naming the problem,
reported before any compute (here: before a model would load, so a model directory of only its
JSON files is enough), and the user's files (data, model) are never overwritten."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from elmo_jax.cli import build_parser, main
from elmo_jax.configbase import ConfigError
from elmo_jax.errors import ElmoError, InputError
from elmo_jax.tasks import cli as task_cli, modeldir
from elmo_jax.tasks.config import TaskConfig
from elmo_jax.tasks.labels import check_labels, read_task_file
from elmo_jax.tasks.metrics import format_report, span_f1

TSV = "text\tlabel\ngood film\tpositive\nbad film\tnegative\n"


def fake_model_dir(root: Path, task: str = "classify") -> Path:
    """The JSON files of a task model directory (no checkpoint: loading the model would fail)."""
    d = root / "model"
    d.mkdir()
    TaskConfig(task=task, train="train.tsv", options="o.json", weights="w.hdf5").to_json(d / "task_config.json")
    labels = ["negative", "positive"] if task == "classify" else ["O", "B-PER", "I-PER"]
    (d / "labels.json").write_text(json.dumps(labels) + "\n", encoding="utf-8")
    if task == "tag":
        (d / "tag_scheme.json").write_text('{"scheme": "IOB2", "labels": "IOB2"}\n', encoding="utf-8")
    return d


def snapshot(d: Path) -> dict:
    return {p.name: p.read_bytes() for p in sorted(d.iterdir()) if p.is_file()}


def one_line_error(capsys, *parts: str) -> str:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    for part in parts:
        assert part in err, err
    return err


@pytest.fixture
def setup(tmp_path):
    model = fake_model_dir(tmp_path)
    data = tmp_path / "data.tsv"
    data.write_text(TSV, encoding="utf-8")
    return model, data


# ------------------------------------------------------------------ output paths (defects 1, 2)
@pytest.mark.parametrize("command", ["evaluate", "predict"])
def test_output_into_the_model_directory_is_refused(setup, capsys, command):
    model, data = setup
    before = snapshot(model)
    for target in ("task_config.json", "labels.json", "new_file.json"):
        flag = "--data" if command == "evaluate" else "--input"
        rc = main(["task", command, "--model-dir", str(model), flag, str(data),
                   "--output", str(model / target)])
        assert rc == 1
        one_line_error(capsys, target, "inside the model directory")
    assert snapshot(model) == before
    assert not (model / "new_file.json").exists()


@pytest.mark.parametrize("command", ["evaluate", "predict"])
def test_output_equal_to_the_input_is_refused(setup, capsys, command, tmp_path, monkeypatch):
    model, data = setup
    flag = "--data" if command == "evaluate" else "--input"
    link = tmp_path / "link.tsv"
    link.symlink_to(data)
    monkeypatch.chdir(tmp_path)
    for output in (str(data), "data.tsv", "./sub/../data.tsv", str(link)):
        if output.startswith("./sub"):
            (tmp_path / "sub").mkdir(exist_ok=True)
        assert main(["task", command, "--model-dir", str(model), flag, str(data), "--output", output]) == 1
        one_line_error(capsys, "is also an input")
        assert data.read_text(encoding="utf-8") == TSV


@pytest.mark.parametrize("command", ["evaluate", "predict"])
def test_unwritable_output_is_refused_before_the_model_loads(setup, capsys, tmp_path, command):
    model, data = setup
    flag = "--data" if command == "evaluate" else "--input"
    somedir = tmp_path / "somedir"
    somedir.mkdir()
    assert main(["task", command, "--model-dir", str(model), flag, str(data), "--output", str(somedir)]) == 1
    one_line_error(capsys, "somedir", "is a directory")
    assert main(["task", command, "--model-dir", str(model), flag, str(data),
                 "--output", str(tmp_path / "missing" / "out.json")]) == 1
    one_line_error(capsys, "its directory does not exist")
    assert not (tmp_path / "missing").exists()


@pytest.mark.parametrize("command", ["evaluate", "predict"])
def test_an_existing_output_is_replaced_only_with_overwrite(setup, capsys, tmp_path, command):
    model, data = setup
    flag = "--data" if command == "evaluate" else "--input"
    old = tmp_path / "old.json"
    old.write_text("keep me\n", encoding="utf-8")
    assert main(["task", command, "--model-dir", str(model), flag, str(data), "--output", str(old)]) == 1
    one_line_error(capsys, "old.json", "already exists", "--overwrite")
    assert old.read_text(encoding="utf-8") == "keep me\n"
    modeldir.check_output_file(str(old), [str(data)], str(model), overwrite=True)
    # --overwrite never allows writing over the input or into the model directory
    for target, why in ((data, "is also an input"), (model / "labels.json", "inside the model directory")):
        assert main(["task", command, "--model-dir", str(model), flag, str(data), "--output", str(target),
                     "--overwrite"]) == 1
        one_line_error(capsys, why)


def test_check_output_file_accepts_a_new_file_beside_the_input(tmp_path):
    (tmp_path / "in.tsv").write_text(TSV, encoding="utf-8")
    (tmp_path / "model").mkdir()
    modeldir.check_output_file(str(tmp_path / "out.jsonl"), [str(tmp_path / "in.tsv")], str(tmp_path / "model"))
    # a model directory named like the prefix of the output's directory is not that directory
    (tmp_path / "model2").mkdir()
    modeldir.check_output_file(str(tmp_path / "model2" / "out.jsonl"), [], str(tmp_path / "model"))
    with pytest.raises(ElmoError, match="inside the model directory"):
        modeldir.check_output_file(str(tmp_path / "model" / "sub" / "x"), [], str(tmp_path / "model"))


# ------------------------------------------------------------------ batch size (defect 3)
@pytest.mark.parametrize("command", ["evaluate", "predict"])
@pytest.mark.parametrize("size", ["0", "-3"])
def test_batch_size_must_be_positive(setup, capsys, tmp_path, command, size):
    model, data = setup
    flag = "--data" if command == "evaluate" else "--input"
    rc = main(["task", command, "--model-dir", str(model), flag, str(data), "--output", str(tmp_path / "o.json"),
               "--batch-size", size])
    assert rc == 1
    one_line_error(capsys, f"--batch-size must be >= 1, got {size}")


def test_predictor_rejects_a_zero_batch_size(setup):
    from elmo_jax.tasks.predictor import TaskPredictor

    model, _ = setup
    with pytest.raises(ElmoError, match="batch_size must be an integer >= 1, got 0"):
        TaskPredictor(model, batch_size=0)


# ------------------------------------------------------------------ input files (defects 7, 10)
def test_predict_on_a_directory_says_it_is_a_directory(setup, capsys, tmp_path):
    model, _ = setup
    somedir = tmp_path / "inputs"
    somedir.mkdir()
    assert main(["task", "predict", "--model-dir", str(model), "--input", str(somedir),
                 "--output", str(tmp_path / "p.jsonl")]) == 1
    one_line_error(capsys, "inputs", "is a directory")
    assert main(["task", "predict", "--model-dir", str(model), "--input", str(tmp_path / "nope"),
                 "--output", str(tmp_path / "p.jsonl")]) == 1
    one_line_error(capsys, "not found")


def test_unknown_evaluation_labels_name_their_first_line(setup, capsys, tmp_path):
    model, _ = setup
    bad = tmp_path / "dev_bad.tsv"
    bad.write_text("text\tlabel\ngood\tpositive\nmeh\tneutral\nso so\tneutral\nugh\tawful\n", encoding="utf-8")
    assert main(["task", "evaluate", "--model-dir", str(model), "--data", str(bad)]) == 1
    one_line_error(capsys, "dev_bad.tsv: label(s) 'awful' (line 5), 'neutral' (line 3) do not occur in the training "
                           "data (known: negative, positive)")


def test_unknown_tags_name_the_line_of_the_token(tmp_path):
    cfg = TaskConfig(task="tag", train="x", options="o", weights="w")
    path = tmp_path / "d.conll"
    path.write_text("-DOCSTART- -X- O\n\nAnn B-PER\nsaid O\n\n\nin O\nLisbon B-LOC\nand O\nRome B-LOC\n",
                    encoding="utf-8")
    data = read_task_file(cfg, str(path))
    assert data.lines == [3, 7]
    with pytest.raises(InputError, match=r"d\.conll: tag\(s\) 'B-LOC' \(line 8\) do not occur"):
        check_labels(cfg, data, ["O", "B-PER"])


# ------------------------------------------------------------------ headers (defect 4)
def test_train_with_a_text_field_the_header_lacks_is_an_error(tmp_path, capsys):
    train = tmp_path / "train.tsv"
    train.write_text(TSV, encoding="utf-8")
    out = tmp_path / "out"
    rc = main(["task", "train", "--task", "classify", "--train", str(train), "--options", "o.json",
               "--weights", "w.hdf5", "--text-field", "foo", "--output-dir", str(out), "--quiet"])
    assert rc == 1
    one_line_error(capsys, "train.tsv: line 1: the header has no text column 'foo' (its columns: 'text', 'label')")
    assert not out.exists()


# ------------------------------------------------------------------ options of the other task (defect 5)
@pytest.mark.parametrize("task, flags, key", [
    ("classify", ["--crf"], "crf"),
    ("classify", ["--no-constrain-crf"], "constrain_crf"),
    ("classify", ["--tag-column", "2"], "tag_column"),
    ("classify", ["--token-column", "1"], "token_column"),
    ("tag", ["--text-field", "sentence"], "text_field"),
    ("tag", ["--label-field", "y"], "label_field"),
])
def test_options_of_the_other_task_are_errors(tmp_path, capsys, task, flags, key):
    out = tmp_path / "out"
    rc = main(["task", "train", "--task", task, "--train", "t.txt", "--options", "o.json", "--weights", "w.hdf5",
               "--output-dir", str(out), "--quiet", *flags])
    assert rc == 1
    one_line_error(capsys, f"task option '{key}' applies only to task")
    assert not out.exists()


def test_check_applicable():
    base = dict(train="t", options="o", weights="w")
    TaskConfig(task="tag", crf=True, constrain_crf=False, tag_column=3, **base).check_applicable()
    TaskConfig(task="classify", text_field="review", label_field="y", **base).check_applicable()
    with pytest.raises(ConfigError, match="'constrain_crf' applies only with crf"):
        TaskConfig(task="tag", constrain_crf=False, **base).check_applicable()
    with pytest.raises(ConfigError, match="'crf' applies only to task 'tag', not to 'classify'"):
        TaskConfig(task="classify", crf=True, **base).check_applicable()
    # a saved model directory of before still loads: validate does not include the check
    TaskConfig(task="classify", crf=True, **base).validate()


# ------------------------------------------------------------------ help and messages (defects 6, 8, 9)
def help_text(capsys, *argv: str) -> str:
    with pytest.raises(SystemExit):
        build_parser().parse_args([*argv, "--help"])
    return " ".join(capsys.readouterr().out.split())


def test_help_texts(capsys):
    train = help_text(capsys, "task", "train")
    assert "from its last epoch" not in train and "exactly where it stopped" in train
    for command, words in (("evaluate", "Score a trained task model"), ("predict", "Label (classify) or tag")):
        text = help_text(capsys, "task", command)
        assert words in text, text
        assert "(>= 1)" in text


def test_stopped_message_tells_a_partial_epoch():
    partial = {"epochs": 1, "stopped": {"epoch": 2, "batches": 3, "of": 5}, "preempted": True}
    assert task_cli.stopped_message(partial) == ("stopped in epoch 2 after 3 of its 5 batches (1 complete epoch "
                                                 "before it); --resume continues exactly there")
    whole = {"epochs": 2, "stopped": {"epoch": 2, "batches": 5, "of": 5}, "preempted": True}
    assert task_cli.stopped_message(whole) == "stopped after 2 complete epochs; continue with --resume"


def test_tag_report_text_has_the_token_accuracy():
    report = span_f1([["B-PER", "O", "B-LOC"]], [["B-PER", "O", "O"]])
    assert "accuracy" not in format_report(report)
    report["accuracy"] = 2 / 3
    last = format_report(report).splitlines()[-1]
    assert last.split() == ["tokens", "accuracy", "0.6667"]
