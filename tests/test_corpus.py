"""The built-in corpus: shipped with the package and unpacked (checked, atomic, reused) into the
cache, consistent with its info.json (counts, vocab, unigram perplexity recomputed here
independently); and its builder (`examples/build_corpus.py`): deterministic, reproduces the
shipped corpus on the Python that built it."""
from __future__ import annotations

import collections
import gzip
import json
import math
import os
import shutil
import sys
import sysconfig
import time
from pathlib import Path

os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

import datasets  # noqa: E402
import pytest  # noqa: E402

from elmo_jax import corpus as corpus_mod  # noqa: E402
from elmo_jax.corpus import builtin_corpus, default_corpus_dir, shipped_corpus  # noqa: E402
from elmo_jax.data import Batcher  # noqa: E402
from elmo_jax.errors import ElmoError  # noqa: E402
from elmo_jax.vocab import Vocabulary, build_vocab, count_tokens  # noqa: E402
from examples import build_corpus as builder  # noqa: E402

datasets.disable_progress_bars()
STDLIB = Path(sysconfig.get_paths()["stdlib"])
SUBSET = ["argparse.py", "textwrap.py", "shlex.py", "fractions.py", "bisect.py", "heapq.py", "json"]
SHIPPED_INFO = json.loads(shipped_corpus().joinpath("info.json").read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def shipped(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """The shipped corpus, unpacked once for this module."""
    return builtin_corpus(str(tmp_path_factory.mktemp("cache") / "corpus"))


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


@pytest.fixture
def packed_subset(subset_root: str, tmp_path: Path) -> Path:
    """A packed corpus built from `subset_root`."""
    builder.build(str(tmp_path / "packed"), stdlib_root=subset_root)
    return tmp_path / "packed"


# --------------------------------------------------------------------------- the shipped corpus
def test_layout_counts_and_info(shipped: dict) -> None:
    assert len(shipped["train_files"]) == builder.N_TRAIN_SHARDS and len(shipped["heldout_files"]) == 1
    for f in shipped["train_files"] + shipped["heldout_files"] + [shipped["vocab_file"], shipped["info_file"]]:
        assert os.path.isabs(f) and os.path.getsize(f) > 0
    assert shipped["train_files"] == sorted(shipped["train_files"])
    train = [s for f in shipped["train_files"] for s in lines(f)]
    heldout = lines(shipped["heldout_files"][0])
    assert shipped["n_train_sentences"] == len(train) and shipped["n_heldout_sentences"] == len(heldout)
    assert shipped["n_train_tokens"] == sum(map(len, train)) == count_tokens(shipped["train_files"])
    assert shipped["n_heldout_tokens"] == sum(map(len, heldout))
    assert all(3 <= len(s) <= 60 and all(s) for s in train + heldout)
    joined = [" ".join(s) for s in train + heldout]
    assert len(set(joined)) == len(joined)  # deduplicated: heldout never repeats a train sentence
    assert 0.03 < len(heldout) / (len(train) + len(heldout)) < 0.07
    assert shipped["n_train_tokens"] > 50_000  # real text, enough for the tiny config
    assert json.loads(Path(shipped["info_file"]).read_text()) == SHIPPED_INFO
    packed = sum(len(shipped_corpus().joinpath(n + ".gz").read_bytes()) for n in SHIPPED_INFO["files"])
    assert packed < 600_000, f"the shipped corpus takes {packed} bytes"


def test_vocab_is_build_vocab_of_train(shipped: dict) -> None:
    vocab = Vocabulary.from_file(shipped["vocab_file"])
    again, n = build_vocab(shipped["train_files"], min_count=builder.VOCAB_MIN_COUNT)
    assert vocab == again and n == shipped["n_train_tokens"] and len(vocab) == shipped["vocab_size"] > 1000
    assert vocab.words[:4] == ["<S>", "</S>", "<UNK>", "."]  # most frequent token in English prose


def test_unigram_perplexity_independently(shipped: dict) -> None:
    """Recompute: add-one smoothed train unigram over the vocab; heldout words (OOV -> <UNK>) plus
    one sentence end per sentence."""
    vocab = set(Path(shipped["vocab_file"]).read_text(encoding="utf-8").split())
    train = [s for f in shipped["train_files"] for s in lines(f)]
    counts = collections.Counter(w if w in vocab else "<UNK>" for s in train for w in s)
    counts["</S>"] = len(train)
    total = sum(counts.values()) + len(vocab)
    heldout = lines(shipped["heldout_files"][0])
    nll = [-math.log((counts[w if w in vocab else "<UNK>"] + 1) / total) for s in heldout for w in s + ["</S>"]]
    ppl = math.exp(sum(nll) / len(nll))
    assert ppl == pytest.approx(shipped["unigram_perplexity"], rel=1e-9)
    assert 100 < ppl < len(vocab)  # sane for English: well below uniform, well above a bigram model
    oov = sum(w not in vocab for s in heldout for w in s) / shipped["n_heldout_tokens"]
    assert oov == pytest.approx(shipped["heldout_oov_rate"]) and oov < 0.15


def test_batcher_reads_builtin_corpus(shipped: dict, tmp_path: Path) -> None:
    kw = dict(global_batch_size=8, unroll_steps=5, cache_dir=str(tmp_path / "hf"))
    train = Batcher(shipped["train_files"], shipped["vocab_file"], **kw)
    corpus = train.corpus
    assert corpus.n_tokens == shipped["n_train_tokens"] and corpus.n_sentences == shipped["n_train_sentences"]
    batch = next(train)
    assert batch["inputs_fwd"].shape == (8, 5) and batch["weights_fwd"].all()
    assert train.corpus.input_chars[batch["inputs_fwd"]].shape == (8, 5, 50)
    heldout = Batcher(shipped["heldout_files"], shipped["vocab_file"], train=False, **kw)
    assert heldout.n_batches is not None and heldout.n_batches > 0


def test_cache_directory_is_named_by_the_shipped_content(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                                         packed_subset: Path) -> None:
    monkeypatch.setenv("ELMO_JAX_CACHE_DIR", str(tmp_path / "c"))
    shipped_dir, subset_dir = default_corpus_dir(), default_corpus_dir(packed_subset)
    assert shipped_dir.startswith(str(tmp_path / "c" / "corpus" / SHIPPED_INFO["name"]))
    assert subset_dir != shipped_dir  # another content, another directory: never a stale reuse
    assert builtin_corpus(source=packed_subset)["dir"] == subset_dir


# --------------------------------------------------------------------------- unpacking: atomic, checked, reused
def test_reused_when_complete_and_unpacked_again_when_damaged(packed_subset: Path, tmp_path: Path) -> None:
    out = tmp_path / "cache" / "corpus"
    info = builtin_corpus(str(out), source=packed_subset)
    mtime = os.path.getmtime(info["info_file"])
    t0 = time.perf_counter()
    assert builtin_corpus(str(out), source=packed_subset) == info
    assert time.perf_counter() - t0 < 1.0 and os.path.getmtime(info["info_file"]) == mtime
    (out / "info.json").unlink()  # e.g. a copy interrupted by hand
    assert builtin_corpus(str(out), source=packed_subset) == info
    with open(out / "train.001.txt", "a") as fh:
        fh.write("truncated or edited\n")
    again = builtin_corpus(str(out), source=packed_subset)
    assert os.path.getsize(again["train_files"][1]) == info["files"]["train.001.txt"]["size"]
    assert builtin_corpus(str(out), force=True, source=packed_subset) == info
    assert sorted(os.listdir(out.parent)) == ["corpus"]  # no temporary directories left


def test_interrupted_unpack_leaves_nothing(packed_subset: Path, tmp_path: Path,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "c" / "corpus"
    real = corpus_mod._unpack

    def crash(*a, **k):
        real(*a, **k)
        raise KeyboardInterrupt  # killed after writing everything but before the rename

    monkeypatch.setattr(corpus_mod, "_unpack", crash)
    with pytest.raises(KeyboardInterrupt):
        builtin_corpus(str(out), source=packed_subset)
    assert not out.exists() and os.listdir(out.parent) == []


def test_a_damaged_package_is_one_clear_error(packed_subset: Path, tmp_path: Path) -> None:
    with open(packed_subset / "train.000.txt.gz", "wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb") as fh:
        fh.write(b"not the shipped text\n")
    with pytest.raises(ElmoError, match=r"train\.000\.txt is damaged"):
        builtin_corpus(str(tmp_path / "a"), source=packed_subset)
    assert not (tmp_path / "a").exists()
    (packed_subset / "info.json").unlink()
    with pytest.raises(ElmoError, match="the built-in corpus is missing or damaged"):
        builtin_corpus(str(tmp_path / "b"), source=packed_subset)


# --------------------------------------------------------------------------- the builder (examples/)
@pytest.mark.skipif(sys.version.split()[0] != SHIPPED_INFO["python"],
                    reason=f"the shipped corpus was built with Python {SHIPPED_INFO['python']}")
def test_builder_reproduces_the_shipped_corpus(tmp_path: Path) -> None:
    info = builder.build(str(tmp_path / "packed"))
    assert info == SHIPPED_INFO
    assert (tmp_path / "packed" / "info.json").read_bytes() == shipped_corpus().joinpath("info.json").read_bytes()
    for name in info["files"]:
        assert (tmp_path / "packed" / (name + ".gz")).read_bytes() == \
            shipped_corpus().joinpath(name + ".gz").read_bytes(), name


def test_builder_is_deterministic_and_skips_tests(subset_root: str, tmp_path: Path) -> None:
    a = builder.build(str(tmp_path / "a"), stdlib_root=subset_root)
    b = builder.build(str(tmp_path / "b"), stdlib_root=subset_root)
    assert a == b and sorted(os.listdir(tmp_path)) == ["a", "b", "stdlib"]  # no temporary directories left
    for name in os.listdir(tmp_path / "a"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name
    unpacked = builtin_corpus(str(tmp_path / "u"), source=tmp_path / "a")
    text = "".join(Path(f).read_text() for f in unpacked["train_files"] + unpacked["heldout_files"])
    assert "test directory" not in text and a["stats"]["files_parsed"] >= 6


def test_tokenizer_and_code_filter(tmp_path: Path) -> None:
    assert builder.tokenize("It's 3.11, e.g. foo_bar() -- done!") == \
        ["It's", "3.11", ",", "e", ".", "g", ".", "foo_bar", "(", ")", "-", "-", "done", "!"]
    src = tmp_path / "root"
    src.mkdir()
    (src / "m.py").write_text(
        '"""Return the value of the thing.\n\nExample::\n\n    x = compute(1)\n    print(x)\n\n'
        '>>> compute(2)\n4\n\nThe result is cached. It is not copied.\n"""\n'
        'class C:\n    """A class that holds a :func:`value` for the caller."""\n'
        '    def f(self):\n        """Compute it \u00e9l\u00e8ve in the cache."""\n')
    sentences, stats = builder.extract_sentences(str(src))
    # the literal block after '::', the doctest, the 2-token 'Example :' and the non-ASCII
    # sentence are dropped; the reST role is unwrapped
    assert [" ".join(s) for s in sentences] == [
        "Return the value of the thing .", "The result is cached .", "It is not copied .",
        "A class that holds a value for the caller ."]
    assert stats["docstrings"] == 3
