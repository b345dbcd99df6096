"""The built-in corpus: built from stdlib docstrings, deterministic, atomic, reused, consistent
with its info.json (counts, vocab, unigram perplexity recomputed here independently)."""
from __future__ import annotations

import collections
import json
import math
import os
import shutil
import sysconfig
import time
from pathlib import Path

os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

import datasets  # noqa: E402
import pytest  # noqa: E402

from elmo_jax import corpus as corpus_mod  # noqa: E402
from elmo_jax.corpus import build_builtin_corpus, extract_sentences, tokenize  # noqa: E402
from elmo_jax.data import Batcher  # noqa: E402
from elmo_jax.vocab import Vocabulary, build_vocab, count_tokens  # noqa: E402

datasets.disable_progress_bars()
STDLIB = Path(sysconfig.get_paths()["stdlib"])
SUBSET = ["argparse.py", "textwrap.py", "shlex.py", "fractions.py", "bisect.py", "heapq.py", "json"]


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """The full built-in corpus, built once for this module (a few seconds)."""
    t0 = time.perf_counter()
    info = build_builtin_corpus(str(tmp_path_factory.mktemp("corpus") / "stdlib-v1"))
    info["_build_s"] = time.perf_counter() - t0
    return info


def lines(path: str) -> list[list[str]]:
    return [line.split(" ") for line in Path(path).read_text(encoding="utf-8").splitlines()]


@pytest.fixture
def subset_root(tmp_path: Path) -> str:
    """A small copy of the stdlib (plus a `test/` directory that must be skipped)."""
    root = tmp_path / "stdlib"
    root.mkdir()
    for name in SUBSET:
        src = STDLIB / name
        if src.is_dir():
            shutil.copytree(src, root / name, ignore=shutil.ignore_patterns("__pycache__"))
        elif src.exists():
            shutil.copy(src, root / name)
    (root / "test").mkdir()
    (root / "test" / "test_x.py").write_text('"""This sentence is in a test directory and must be skipped."""\n')
    (root / "broken.py").write_text("def (:\n")  # does not parse: skipped
    return str(root)


def test_layout_counts_and_info(built: dict) -> None:
    assert len(built["train_files"]) == corpus_mod.N_TRAIN_SHARDS and len(built["heldout_files"]) == 1
    for f in built["train_files"] + built["heldout_files"] + [built["vocab_file"], built["info_file"]]:
        assert os.path.isabs(f) and os.path.getsize(f) > 0
    assert built["train_files"] == sorted(built["train_files"])
    train = [s for f in built["train_files"] for s in lines(f)]
    heldout = lines(built["heldout_files"][0])
    assert built["n_train_sentences"] == len(train) and built["n_heldout_sentences"] == len(heldout)
    assert built["n_train_tokens"] == sum(map(len, train)) == count_tokens(built["train_files"])
    assert built["n_heldout_tokens"] == sum(map(len, heldout))
    assert all(3 <= len(s) <= 60 and all(s) for s in train + heldout)
    joined = [" ".join(s) for s in train + heldout]
    assert len(set(joined)) == len(joined)  # deduplicated: heldout never repeats a train sentence
    assert 0.03 < len(heldout) / (len(train) + len(heldout)) < 0.07
    assert built["n_train_tokens"] > 50_000  # real text, enough for the tiny config
    on_disk = json.loads(Path(built["info_file"]).read_text())
    assert on_disk["complete"] is True and on_disk["vocab_size"] == built["vocab_size"]
    assert built["_build_s"] < 30


def test_vocab_is_build_vocab_of_train(built: dict) -> None:
    vocab = Vocabulary.from_file(built["vocab_file"])
    again, n = build_vocab(built["train_files"], min_count=corpus_mod.VOCAB_MIN_COUNT)
    assert vocab == again and n == built["n_train_tokens"] and len(vocab) == built["vocab_size"] > 1000
    assert vocab.words[:4] == ["<S>", "</S>", "<UNK>", "."]  # most frequent token in English prose


def test_unigram_perplexity_independently(built: dict) -> None:
    """Recompute: add-one smoothed train unigram over the vocab; heldout words (OOV -> <UNK>) plus
    one sentence end per sentence."""
    vocab = set(Path(built["vocab_file"]).read_text(encoding="utf-8").split())
    train = [s for f in built["train_files"] for s in lines(f)]
    counts = collections.Counter(w if w in vocab else "<UNK>" for s in train for w in s)
    counts["</S>"] = len(train)
    total = sum(counts.values()) + len(vocab)
    heldout = lines(built["heldout_files"][0])
    nll = [-math.log((counts[w if w in vocab else "<UNK>"] + 1) / total) for s in heldout for w in s + ["</S>"]]
    ppl = math.exp(sum(nll) / len(nll))
    assert ppl == pytest.approx(built["unigram_perplexity"], rel=1e-9)
    assert 100 < ppl < len(vocab)  # sane for English: well below uniform, well above a bigram model
    oov = sum(w not in vocab for s in heldout for w in s) / built["n_heldout_tokens"]
    assert oov == pytest.approx(built["heldout_oov_rate"]) and oov < 0.15


def test_reused_when_complete_and_rebuilt_when_not(built: dict) -> None:
    out = built["dir"]
    mtime = os.path.getmtime(built["info_file"])
    t0 = time.perf_counter()
    again = build_builtin_corpus(out)
    assert time.perf_counter() - t0 < 1.0 and os.path.getmtime(built["info_file"]) == mtime
    assert {k: v for k, v in again.items()} == {k: v for k, v in built.items() if k != "_build_s"}


def test_deterministic_and_skips_tests(subset_root: str, tmp_path: Path) -> None:
    a = build_builtin_corpus(str(tmp_path / "a"), stdlib_root=subset_root)
    b = build_builtin_corpus(str(tmp_path / "b"), stdlib_root=subset_root)
    for name in a["file_sizes"]:
        assert (Path(a["dir"]) / name).read_bytes() == (Path(b["dir"]) / name).read_bytes(), name
    text = "".join(Path(f).read_text() for f in a["train_files"] + a["heldout_files"])
    assert "test directory" not in text and a["stats"]["files_parsed"] >= 6
    assert a["unigram_perplexity"] == b["unigram_perplexity"]


def test_interrupted_build_leaves_nothing(subset_root: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "c" / "stdlib-v1"
    real = corpus_mod._write_corpus

    def crash(tmp: str, *a, **k):
        real(tmp, *a, **k)
        raise KeyboardInterrupt  # killed after writing everything but before the rename

    monkeypatch.setattr(corpus_mod, "_write_corpus", crash)
    with pytest.raises(KeyboardInterrupt):
        build_builtin_corpus(str(out), stdlib_root=subset_root)
    assert not out.exists() and os.listdir(out.parent) == []


def test_partial_or_damaged_corpus_is_rebuilt(subset_root: str, tmp_path: Path) -> None:
    out = tmp_path / "stdlib-v1"
    info = build_builtin_corpus(str(out), stdlib_root=subset_root)
    (out / "info.json").unlink()  # e.g. a copy interrupted by hand
    assert build_builtin_corpus(str(out), stdlib_root=subset_root)["n_train_tokens"] == info["n_train_tokens"]
    with open(out / "train.001.txt", "a") as fh:
        fh.write("truncated or edited\n")
    rebuilt = build_builtin_corpus(str(out), stdlib_root=subset_root)
    assert os.path.getsize(rebuilt["train_files"][1]) == info["file_sizes"]["train.001.txt"]
    forced = build_builtin_corpus(str(out), force=True, stdlib_root=subset_root)
    assert forced["n_train_tokens"] == info["n_train_tokens"]
    assert sorted(os.listdir(tmp_path)) == ["stdlib", "stdlib-v1"]  # no temporary directories left


def test_tokenizer_and_code_filter(tmp_path: Path) -> None:
    assert tokenize("It's 3.11, e.g. foo_bar() -- done!") == \
        ["It's", "3.11", ",", "e", ".", "g", ".", "foo_bar", "(", ")", "-", "-", "done", "!"]
    src = tmp_path / "root"
    src.mkdir()
    (src / "m.py").write_text(
        '"""Return the value of the thing.\n\nExample::\n\n    x = compute(1)\n    print(x)\n\n'
        '>>> compute(2)\n4\n\nThe result is cached. It is not copied.\n"""\n'
        'class C:\n    """A class that holds a :func:`value` for the caller."""\n'
        '    def f(self):\n        """Compute it \u00e9l\u00e8ve in the cache."""\n')
    sentences, stats = extract_sentences(str(src))
    # the literal block after '::', the doctest, the 2-token 'Example :' and the non-ASCII
    # sentence are dropped; the reST role is unwrapped
    assert [" ".join(s) for s in sentences] == [
        "Return the value of the thing .", "The result is cached .", "It is not copied .",
        "A class that holds a value for the caller ."]
    assert stats["docstrings"] == 3


def test_batcher_reads_builtin_corpus(built: dict, tmp_path: Path) -> None:
    kw = dict(global_batch_size=8, unroll_steps=5, cache_dir=str(tmp_path / "hf"))
    train = Batcher(built["train_files"], built["vocab_file"], **kw)
    assert train.n_tokens == built["n_train_tokens"] and train.n_sentences == built["n_train_sentences"]
    batch = next(train)
    assert batch["inputs_fwd"].shape == (8, 5) and batch["weights_fwd"].all()
    assert train.input_chars[batch["inputs_fwd"]].shape == (8, 5, 50)
    heldout = Batcher(built["heldout_files"], built["vocab_file"], train=False, **kw)
    assert heldout.n_batches is not None and heldout.n_batches > 0
