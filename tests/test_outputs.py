"""Outputs never destroy data: a command refuses, in one line and before any compute, an output that
is one of its inputs, a directory, an existing file (without --overwrite), a run's own files; new
outputs get the mode a plain open() gives; a failed check writes nothing."""
from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import numpy as np
import pytest

from elmo_jax.cli import main
from elmo_jax.errors import ElmoError
from elmo_jax.io_utils import UMASK, atomic_write_text, check_output_dir, check_output_file
from elmo_jax.train.checkpoint import CheckpointError
from elmo_jax.train.export import check_export_dir
from elmo_jax.train.rundir import load_run_state

from test_plot import train_records, write_run


def mode(path: Path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_check_output_file(tmp_path: Path) -> None:
    data = tmp_path / "data.txt"
    data.write_text("precious\n")
    link = tmp_path / "link.txt"
    link.symlink_to(data)
    with pytest.raises(ElmoError, match="--output is a directory"):
        check_output_file(tmp_path)
    for same in (data, link):  # also through a link, and with --overwrite
        with pytest.raises(ElmoError, match="also an input of this command"):
            check_output_file(same, inputs=(None, data), overwrite=True)
    with pytest.raises(ElmoError, match=r"already exists; nothing was written \(pass --overwrite"):
        check_output_file(data)
    check_output_file(data, overwrite=True)
    check_output_file(tmp_path / "new.txt", inputs=(data,))
    with pytest.raises(ElmoError, match="data.txt is a file, not a directory"):
        check_output_file(data / "out.txt")
    with pytest.raises(ElmoError, match="cannot write --output: its directory does not exist"):
        check_output_file(tmp_path / "missing" / "out.txt")
    assert data.read_text() == "precious\n"


def test_check_output_dir(tmp_path: Path) -> None:
    afile = tmp_path / "a"
    afile.write_text("x")
    with pytest.raises(ElmoError, match=r"^.*a: the run directory is a file, expected a directory$"):
        check_output_dir(afile, "the run directory")
    with pytest.raises(ElmoError, match="cannot be made: .*a is a file"):
        check_output_dir(afile / "sub" / "deeper", "--output-dir")
    check_output_dir(tmp_path / "new" / "deeper", "--output-dir")
    check_output_dir(tmp_path, "--output-dir")


def test_atomic_outputs_get_a_plain_files_mode(tmp_path: Path) -> None:
    new = tmp_path / "new.json"
    atomic_write_text(new, "{}")
    assert mode(new) == 0o666 & ~UMASK  # not mkstemp's 0600
    kept = tmp_path / "kept.json"
    kept.write_text("[]")
    os.chmod(kept, 0o640)
    atomic_write_text(kept, "{}")
    assert mode(kept) == 0o640 and kept.read_text() == "{}"  # a replaced file keeps its mode


def test_build_vocab_keeps_an_existing_file_and_its_input(tmp_path: Path, capsys) -> None:
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("a b c\nb c\n")
    out = tmp_path / "keep.txt"
    out.write_text("precious\n")
    assert main(["build-vocab", "--corpus", str(corpus), "--output", str(out)]) == 1
    assert out.read_text() == "precious\n"
    assert main(["build-vocab", "--corpus", str(corpus), "--output", str(corpus), "--overwrite"]) == 1
    assert corpus.read_text() == "a b c\nb c\n"
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and "already exists" in err[0] and "also an input" in err[1]
    assert main(["build-vocab", "--corpus", str(corpus), "--output", str(out), "--overwrite"]) == 0
    assert out.read_text().split()[:4] == ["<S>", "</S>", "<UNK>", "b"]
    assert main(["build-vocab", "--corpus", str(tmp_path), "--output", str(tmp_path / "v.txt")]) == 1
    assert "is a directory: give a glob of its files" in capsys.readouterr().err


def test_import_npz_checks_both_outputs_before_writing(fixture_dir, tmp_path: Path, capsys) -> None:
    npz = tmp_path / "p.npz"
    assert main(["export-npz", "--options", str(fixture_dir / "options.json"), "--weights",
                 str(fixture_dir / "lm_weights.hdf5"), "--output", str(npz)]) == 0
    out = tmp_path / "w.hdf5"
    assert main(["import-npz", "--npz", str(npz), "--output", str(out), "--options-output", str(out)]) == 1
    assert main(["import-npz", "--npz", str(npz), "--output", str(out), "--options-output", str(tmp_path)]) == 1
    assert main(["import-npz", "--npz", str(npz), "--output", str(npz), "--overwrite"]) == 1
    assert not out.exists() and np.load(npz).files  # nothing written, the input intact
    err = capsys.readouterr().err
    assert "name the same file" in err and "--options-output is a directory" in err and "also an input" in err


def test_export_dir_rules(tmp_path: Path) -> None:
    run = tmp_path / "run"
    (run / "checkpoints" / "3").mkdir(parents=True)
    for bad in (run, run / "checkpoints", run / "checkpoints" / "3"):
        with pytest.raises(ElmoError, match="the run directory or inside its checkpoints"):
            check_export_dir(str(run), str(bad), overwrite=True)
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("x")
    with pytest.raises(ElmoError, match="not empty and is not an earlier export of this run"):
        check_export_dir(str(run), str(foreign))
    check_export_dir(str(run), str(foreign), overwrite=True)
    other = tmp_path / "other_export"
    other.mkdir()
    (other / "export.json").write_text(json.dumps({"run_dir": str(tmp_path / "another_run"), "step": 200}))
    with pytest.raises(ElmoError, match="an export of another run"):
        check_export_dir(str(run), str(other))
    same = run / "export"
    same.mkdir()
    (same / "export.json").write_text(json.dumps({"run_dir": str(run), "step": 2}))
    check_export_dir(str(run), str(same))  # an earlier export of this run is replaced
    check_export_dir(str(run), str(tmp_path / "empty_or_new"))
    with pytest.raises(ElmoError, match="--output-dir is a file"):
        check_export_dir(str(run), str(foreign / "notes.txt"))


def test_export_and_perplexity_of_a_run_without_checkpoints_create_nothing(tmp_path: Path, capsys) -> None:
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_text(Path("configs/tiny.json").read_text())
    with pytest.raises(CheckpointError, match="no complete checkpoint"):
        load_run_state(str(run))
    assert main(["export", "--run-dir", str(run), "--output-dir", str(tmp_path / "out")]) == 1
    assert sorted(os.listdir(run)) == ["config.json"] and not (tmp_path / "out").exists()
    assert "no complete checkpoint" in capsys.readouterr().err


def test_plot_never_writes_over_its_metrics(tmp_path: Path, capsys) -> None:
    pytest.importorskip("matplotlib")
    run = write_run(tmp_path, train_records())
    metrics = (run / "metrics.jsonl").read_text()
    assert main(["plot", str(run), "--output", str(run / "metrics.jsonl"), "--overwrite"]) == 1
    assert (run / "metrics.jsonl").read_text() == metrics
    other = run / "config.json"
    other.write_text("{}")
    assert main(["plot", str(run), "--output", str(other)]) == 1 and other.read_text() == "{}"
    assert main(["plot", str(run)]) == 0 and main(["plot", str(run)]) == 0  # its own default file is replaced
    assert "also an input" in capsys.readouterr().err


def test_dump_token_embeddings_rejects_a_blank_vocabulary_line(fixture_dir, tmp_path: Path, capsys) -> None:
    vocab = tmp_path / "vocab.txt"
    vocab.write_text("<S>\n\nthe\n")
    out = tmp_path / "tok.hdf5"
    assert main(["dump-token-embeddings", "--options", str(fixture_dir / "options.json"), "--weights",
                 str(fixture_dir / "lm_weights.hdf5"), "--vocab", str(vocab), "--output", str(out)]) == 1
    assert "line 2 is blank" in capsys.readouterr().err and not out.exists()


def test_perplexity_and_train_flags_are_checked(tmp_path: Path, capsys) -> None:
    for flag in ("--batch-size", "--unroll-steps", "--max-batches"):
        assert main(["perplexity", "--run-dir", str(tmp_path), "--files", "x", flag, "0"]) == 1
        assert f"{flag} must be >= 1, got 0" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["train", "--config", "configs/tiny.json", "--resume", "--no-resume"])
    assert "not allowed with argument" in capsys.readouterr().err


def test_embed_says_when_vocab_is_not_used(fixture_dir, tmp_path: Path, capsys) -> None:
    text, vocab = tmp_path / "t.txt", tmp_path / "vocab.txt"
    text.write_text("a b\n")
    vocab.write_text("<S>\n</S>\n<UNK>\na\n")
    assert main(["embed", "--options", str(fixture_dir / "options.json"), "--weights",
                 str(fixture_dir / "lm_weights.hdf5"), "--input", str(text), "--output", str(tmp_path / "o.hdf5"),
                 "--vocab", str(vocab), "--quiet"]) == 0
    assert "--vocab" in capsys.readouterr().err.split("is not used")[0]
