"""The elmo-jax command line: embed output format, layer choices, conversions, one-line errors."""
from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys

import h5py
import numpy as np
import pytest

from elmo_jax.cli import build_parser, main
from elmo_jax.embed import ElmoEmbedder
from elmo_jax.tokenize import Tokenizer, split_text
from elmo_jax.weights import read_hdf5_arrays

from test_embed import expected_top, fixture_lines


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "elmo_jax", *args], capture_output=True, text=True,
                          env={**os.environ, "JAX_PLATFORMS": "cpu"}, timeout=300)


@pytest.fixture
def model_args(fixture_dir):
    return ["--options", str(fixture_dir / "options.json"), "--weights", str(fixture_dir / "lm_weights.hdf5")]


def subcommands(parser: argparse.ArgumentParser) -> dict[str, str]:
    """Registered subcommand name -> its help text ("" if it has none), from the parser itself."""
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    helps = {pseudo.dest: pseudo.help or "" for pseudo in action._choices_actions}
    return {name: helps.get(name, "") for name in action.choices}


def command_parsers(parser: argparse.ArgumentParser, path: tuple[str, ...] = ()):
    """(argv path, parser) of every command and nested subcommand, e.g. (("task", "train"), p)."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield (*path, name), sub
                yield from command_parsers(sub, (*path, name))


COMMANDS = dict(command_parsers(build_parser()))


def test_help_lists_every_command():
    """`elmo-jax --help` (the real entry point) names every registered command with its help text and
    an example line; a command registered without help= or without an example fails here."""
    out = run_cli("--help")
    assert out.returncode == 0, out.stderr
    listing, _, examples = out.stdout.partition("commands and examples:")
    assert examples, "the epilog with the examples is missing"
    top = subcommands(build_parser())
    assert len(top) >= 11 and "task" in top
    for name, help_text in top.items():
        assert help_text.strip(), f"command {name!r} has no help text"
        assert re.search(rf"^ +{re.escape(name)}\b", listing, re.M), f"{name!r} missing from the command list"
        assert f"elmo-jax {name}" in examples, f"no example for {name!r} in the --help epilog"
    for name, help_text in subcommands(COMMANDS[("task",)]).items():
        assert help_text.strip(), f"task subcommand {name!r} has no help text"
        assert f"elmo-jax task {name}" in examples, f"no example for 'task {name}' in the --help epilog"


@pytest.mark.parametrize("path", sorted(COMMANDS), ids=" ".join)
def test_every_command_help_names_its_required_flags(path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main([*path, "--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    usage, _, _ = out.partition("\n\n")
    assert usage.startswith(f"usage: elmo-jax {' '.join(path)}"), usage
    usage = " ".join(usage.split())  # undo line wrapping
    parser = COMMANDS[path]
    required = [a for a in parser._actions if a.required and not isinstance(a, argparse._SubParsersAction)]
    for action in required:
        if action.option_strings:
            flag = action.option_strings[-1]
            # a required flag is shown bare ("--output OUTPUT"), an optional one in brackets
            assert re.search(rf"(?<![\[\w-]){re.escape(flag)} {re.escape(action.metavar or action.dest.upper())}\b",
                             usage), f"usage of {' '.join(path)} does not name required {flag}: {usage}"
        else:
            assert action.dest in usage, f"usage of {' '.join(path)} does not name {action.dest}: {usage}"
    if not parser._subparsers:  # a leaf command parses its required flags, then errors naming the missing ones
        if required:
            with pytest.raises(SystemExit) as exit_info:
                main(list(path))
            assert exit_info.value.code == 2
            err = capsys.readouterr().err
            for action in required:
                assert (action.option_strings[-1] if action.option_strings else action.dest) in err, err


def test_embed_stateful_reproduces_fixtures(fixture_dir, model_args, tmp_path):
    lines = fixture_lines(fixture_dir)
    text = tmp_path / "in.txt"
    text.write_text("\n".join(" ".join(s) for s in lines) + "\n\n", encoding="utf-8")  # + an empty line
    out = tmp_path / "out.hdf5"
    rc = main(["embed", *model_args, "--input", str(text), "--output", str(out), "--stateful",
               "--batch-size", "3", "--quiet"])
    assert rc == 0
    with h5py.File(out, "r") as f:
        assert set(f.keys()) == {str(i) for i in range(31)} | {"sentence_to_index"}
        index = json.loads(f["sentence_to_index"][0])
        assert index[" ".join(lines[4])] == "4"
        assert f["30"].shape == (3, 0, 32)
        worst = max(float(np.abs(f[str(j)][2] - expected_top(fixture_dir, j % 3, j // 3)).max())
                    for j in range(30))
    assert worst <= 1e-5, f"max abs difference {worst:.3g} > 1e-5"


def test_embed_layers_top_and_average(fixture_dir, model_args, tmp_path):
    text = tmp_path / "in.txt"
    text.write_text("Hello world .\nA second line\n", encoding="utf-8")
    outs = {}
    for layers in ("all", "top", "average"):
        out = tmp_path / f"{layers}.hdf5"
        assert main(["embed", *model_args, "--input", str(text), "--output", str(out), "--layers", layers,
                     "--quiet"]) == 0
        with h5py.File(out, "r") as f:
            outs[layers] = f["0"][()]
    assert outs["all"].shape == (3, 3, 32) and outs["top"].shape == (3, 32)
    np.testing.assert_array_equal(outs["top"], outs["all"][-1])
    np.testing.assert_allclose(outs["average"], outs["all"].mean(0), atol=1e-7)


def test_embed_errors_are_one_line_and_leave_nothing(fixture_dir, model_args, tmp_path):
    bad = tmp_path / "bad.txt"
    bad.write_bytes(b"fine line\n\xff\xfe not utf-8\n")
    out = tmp_path / "out.hdf5"
    r = run_cli("embed", *model_args, "--input", str(bad), "--output", str(out), "--quiet")
    assert r.returncode == 1 and "Traceback" not in r.stderr
    assert str(bad) in r.stderr and "line 2 is not valid UTF-8" in r.stderr
    assert os.listdir(tmp_path) == ["bad.txt"], "no partial or temporary output may remain"

    r = run_cli("embed", *model_args, "--input", str(tmp_path / "missing.txt"), "--output", str(out))
    assert r.returncode == 1 and "missing.txt" in r.stderr and "not found" in r.stderr

    good = tmp_path / "good.txt"
    good.write_text("a b\n", encoding="utf-8")
    r = run_cli("embed", *model_args, "--input", str(good), "--output", str(tmp_path / "no" / "out.hdf5"))
    assert r.returncode == 1 and "directory does not exist" in r.stderr and "Traceback" not in r.stderr


def test_bad_weight_file_errors_name_dataset(fixture_dir, tmp_path):
    arrays = read_hdf5_arrays(fixture_dir / "lm_weights.hdf5")
    broken = tmp_path / "broken.hdf5"
    with h5py.File(broken, "w") as f:
        for name, a in arrays.items():
            if name == "CNN_high_1/W_carry":
                a = a[:, :100]
            if name != "CNN/b_cnn_2":
                f.create_dataset(name, data=a)
    text = tmp_path / "in.txt"
    text.write_text("a b\n", encoding="utf-8")
    r = run_cli("embed", "--options", str(fixture_dir / "options.json"), "--weights", str(broken),
                "--input", str(text), "--output", str(tmp_path / "o.hdf5"))
    assert r.returncode == 1 and "Traceback" not in r.stderr
    assert str(broken) in r.stderr and "CNN/b_cnn_2" in r.stderr and "(16,)" in r.stderr
    assert not (tmp_path / "o.hdf5").exists()


def test_npz_round_trip_through_cli(fixture_dir, model_args, tmp_path):
    npz, hdf5, opts = tmp_path / "p.npz", tmp_path / "w.hdf5", tmp_path / "options.json"
    assert main(["export-npz", *model_args, "--output", str(npz)]) == 0
    assert main(["import-npz", "--npz", str(npz), "--output", str(hdf5), "--options-output", str(opts)]) == 0
    original, back = read_hdf5_arrays(fixture_dir / "lm_weights.hdf5"), read_hdf5_arrays(hdf5)
    assert set(original) == set(back)
    for name in original:
        np.testing.assert_array_equal(original[name], back[name], err_msg=name)
    assert json.loads(opts.read_text()) == json.loads((fixture_dir / "options.json").read_text())


def test_dump_token_embeddings_cli(fixture_dir, model_args, tmp_path):
    vocab = tmp_path / "vocab.txt"
    vocab.write_text("<S>\n</S>\nthe\nDisease\n", encoding="utf-8")
    out = tmp_path / "tok.hdf5"
    assert main(["dump-token-embeddings", *model_args, "--vocab", str(vocab), "--output", str(out)]) == 0
    with h5py.File(out, "r") as f:
        assert f["embedding"].shape == (4, 16)


@pytest.mark.slow
def test_demo_trains_exports_and_embeds(tmp_path):
    """The README's main job on a short run: trains, exports, embeds (shape from the tiny config)."""
    config = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "configs", "tiny.json")
    r = run_cli("demo", "--config", config, "--run-dir", str(tmp_path / "run"), "--set", "max_steps=3",
                "--set", "eval_batches=2", "--quiet")
    assert r.returncode == 0, r.stderr[-2000:]
    assert "ELMo layers: shape (3, 9, 128)" in r.stdout and "heldout perplexity after 3 steps" in r.stdout
    assert (tmp_path / "run" / "export" / "weights.hdf5").exists()


RAW_LINES = ["It wasn't me. Dr. Smith left.", "", "Привет, мир! Как дела? 😀"]


def test_embed_tokenize_writes_tokens_in_the_allennlp_layout(fixture_dir, model_args, tmp_path):
    text = tmp_path / "raw.txt"
    text.write_text("".join(line + "\n" for line in RAW_LINES), encoding="utf-8")
    embedder = ElmoEmbedder.from_files(fixture_dir / "options.json", fixture_dir / "lm_weights.hdf5")
    for split in (False, True):
        out = tmp_path / f"split{split}.hdf5"
        assert main(["embed", *model_args, "--input", str(text), "--output", str(out), "--tokenize", "--quiet",
                     *(["--split-sentences"] if split else [])]) == 0
        tok = Tokenizer(split_sentences=split)
        expected = [(i, s, toks) for i, line in enumerate(RAW_LINES) for s, toks in split_text(line, tok)]
        if split:
            assert [e[0] for e in expected] == [0, 0, 2, 2]  # two sentences in lines 0 and 2, none in line 1
        vectors = embedder.embed_sentences([toks for _, _, toks in expected])
        with h5py.File(out, "r") as f:
            assert set(f.keys()) == {str(k) for k in range(len(expected))} | {"sentence_to_index"}
            assert json.loads(f["sentence_to_index"][0]) == {s.strip(): str(k) for k, (_, s, _) in enumerate(expected)}
            for k, (line, _, toks) in enumerate(expected):
                assert json.loads(f[str(k)].attrs["tokens"]) == toks
                assert (int(f[str(k)].attrs["line"]) == line) if split else ("line" not in f[str(k)].attrs)
                np.testing.assert_allclose(f[str(k)][()], vectors[k], atol=1e-5, rtol=0)
    assert expected[0][2] == ["It", "wasn", "'t", "me", "."]


def test_embed_without_tokenize_stores_whitespace_tokens(model_args, tmp_path):
    text = tmp_path / "in.txt"
    text.write_text("Hello  world .\n", encoding="utf-8")
    out = tmp_path / "out.hdf5"
    assert main(["embed", *model_args, "--input", str(text), "--output", str(out), "--quiet"]) == 0
    with h5py.File(out, "r") as f:
        assert json.loads(f["0"].attrs["tokens"]) == ["Hello", "world", "."]


def test_tokenizer_flags_errors_are_one_line(model_args, tmp_path, monkeypatch, capsys):
    text = tmp_path / "in.txt"
    text.write_text("Hello world.\n", encoding="utf-8")
    out = tmp_path / "out.hdf5"
    assert main(["embed", *model_args, "--input", str(text), "--output", str(out), "--split-sentences"]) == 1
    assert capsys.readouterr().err.strip() == "elmo-jax: error: --split-sentences only apply to raw text: add --tokenize"
    monkeypatch.setitem(sys.modules, "sacremoses", None)  # as if elmo-jax[text] were not installed
    assert main(["embed", *model_args, "--input", str(text), "--output", str(out), "--tokenize"]) == 1
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "tokenizer 'moses' needs the 'sacremoses' package" in err and "elmo-jax[text]" in err
    assert not out.exists()


def test_build_vocab_tokenize(tmp_path):
    corpus = tmp_path / "raw.txt"
    corpus.write_text("Don't stop. Don't!\nIt's fine.\n", encoding="utf-8")
    out = tmp_path / "vocab.txt"
    assert main(["build-vocab", "--corpus", str(corpus), "--output", str(out), "--tokenize", "--split-sentences"]) == 0
    words = out.read_text(encoding="utf-8").split("\n")
    assert words[:6] == ["<S>", "</S>", "<UNK>", "'t", ".", "Don"] and "Don't" not in words


def test_demo_config_is_found_from_any_directory(tmp_path, monkeypatch) -> None:
    """`elmo-jax demo` outside the repository root reads the tiny config of the source tree it runs from."""
    from elmo_jax import cli
    from elmo_jax.errors import ElmoError

    repo_config = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(cli.__file__))), "configs", "tiny.json")
    monkeypatch.chdir(tmp_path)
    assert cli.demo_config(None) == repo_config
    assert cli.demo_config("mine.json") == "mine.json"  # an explicit --config is taken as given
    (tmp_path / "configs").mkdir()
    (tmp_path / "configs" / "tiny.json").write_text("{}")
    assert cli.demo_config(None) == os.path.join("configs", "tiny.json")  # the one here comes first
    monkeypatch.setattr(cli, "__file__", str(tmp_path / "site-packages" / "elmo_jax" / "cli.py"))
    (tmp_path / "configs" / "tiny.json").unlink()
    with pytest.raises(ElmoError, match="configs/tiny.json: the demo's config is neither in this directory"):
        cli.demo_config(None)
