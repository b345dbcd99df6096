"""The built-in corpus: English sentences from the docstrings of the Python standard library.

Every machine that runs elmo-jax has Python, so this corpus needs no download. It is what the
shipped configs train on by default (`builtin:train`, `builtin:heldout`, vocab `builtin`).

How it is built (`build_builtin_corpus`), step by step, deterministically for a given Python:
1. Files: every `*.py` under `sysconfig.get_paths()["stdlib"]`, walked in sorted order, skipping
   the directories `test`, `tests`, `idlelib`, `site-packages` and `__pycache__`. Each is parsed
   with `ast` (files that do not parse are skipped).
2. Docstrings: of the module, and of every class and function reached through class and function
   bodies (`ast.get_docstring`, cleaned indentation), in source order.
3. Code and markup removal, line by line: doctest lines (`>>>`, `...`), reST directives (`.. `),
   field lists (`:param x:`), section underlines (`-----`), and literal blocks (the indented lines
   after a line ending in `::`) are dropped; reST roles and inline markup (`` :func:`x` ``,
   backquotes, `*`) are removed; bullet markers start a new paragraph; blank lines end one.
4. Sentences: each paragraph's lines are joined with spaces and split after `.`, `!` or `?`
   followed by whitespace and an upper-case letter, digit, quote or parenthesis.
5. Tokens: the regex `\\d+(?:[.,]\\d+)+|\\w+(?:'\\w+)*|[^\\w\\s]` (numbers like `3.11`, words with
   internal apostrophes, and every other non-space character as its own token); case is kept.
6. English filter: a sentence is kept only if it is ASCII, has 3 to 60 tokens, starts with an
   upper-case letter, at least 60% of its tokens are alphabetic words, it contains a common
   English function word (the, a, is, of, to, ...), and it has none of the code-like tokens
   `= { } [ ] < > ; | \\ $ @ ^ ~ #`.
7. Deduplication (first occurrence kept), then a seeded shuffle (numpy PCG64, seed 20180215).
8. Split: the last 5% of the shuffled sentences (at least one) are `heldout.txt`; the rest are
   split into `N_TRAIN_SHARDS` contiguous train shards `train.000.txt`, ... One sentence per
   line, tokens separated by single spaces.
9. `vocab.txt`: bilm-tf format (`<S>`, `</S>`, `<UNK>`, then by descending count, ties by word)
   of the train shards with `min_count=2` (`vocab.build_vocab` gives the same file).
10. `info.json`: counts, file names and sizes, the Python version, and `unigram_perplexity`: the
   perplexity of the heldout targets under the train unigram distribution over the vocabulary
   with add-one smoothing. The targets are those a biLM predicts for a sentence of n words: its
   n words (OOV -> `<UNK>`) plus one sentence end (`</S>` forward, `<S>` backward; both have the
   train sentence count as their count), i.e. the same positions the model's perplexity averages.
   A trained model must beat this number.

The build runs in a temporary directory beside the target and is renamed into place only when
complete, so an interrupted build never leaves a half corpus; a complete corpus (info.json
present, every listed file with its recorded size) is reused.
"""
from __future__ import annotations

import ast
import collections
import contextlib
import json
import math
import os
import re
import shutil
import sys
import sysconfig
import tempfile
from typing import Any, Iterator, Optional

import numpy as np

from .errors import ElmoError
from .vocab import SPECIAL_WORDS, Vocabulary

CORPUS_NAME = "stdlib-v1"
CORPUS_VERSION = 1
N_TRAIN_SHARDS = 4
HELDOUT_FRACTION = 0.05
VOCAB_MIN_COUNT = 2
SHUFFLE_SEED = 20180215
MIN_TOKENS, MAX_TOKENS = 3, 60
INFO_FILE = "info.json"
VOCAB_FILE = "vocab.txt"

SKIP_DIRS = frozenset({"test", "tests", "idlelib", "site-packages", "__pycache__"})
TOKEN_RE = re.compile(r"\d+(?:[.,]\d+)+|\w+(?:'\w+)*|[^\w\s]")
SENTENCE_SPLIT_RE = re.compile(r"(?<=[.!?])\s+(?=[A-Z0-9\"'(])")
WORD_RE = re.compile(r"[A-Za-z]+(?:'[A-Za-z]+)*$")
CODE_LINE_RE = re.compile(r"^(>>>|\.\.\.|\.\. |:\w[^:]*:|[-=~^*+#_`]{3,}$)")
BULLET_RE = re.compile(r"^(?:[-*+\u2022]|\d+[.)]|\(\w\))\s+")
ROLE_RE = re.compile(r":[a-z]+(?::[a-z]+)?:(?=`)")
FUNCTION_WORDS = frozenset(
    "the a an is are was were be been being of to and or in on for with as by at from this that these "
    "it its if not no can may will which when than into".split())
CODE_TOKENS = frozenset("= { } [ ] < > ; | \\ $ @ ^ ~ #".split())


def default_corpus_dir() -> str:
    """`$ELMO_JAX_CACHE/corpus/stdlib-v1`, default `~/.cache/elmo-jax/corpus/stdlib-v1`."""
    root = os.environ.get("ELMO_JAX_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache"), "elmo-jax")
    return os.path.join(root, "corpus", CORPUS_NAME)


# ---------------------------------------------------------------------- extraction
def _stdlib_files(root: str) -> Iterator[str]:
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if d not in SKIP_DIRS)
        for name in sorted(filenames):
            if name.endswith(".py"):
                yield os.path.join(dirpath, name)


def _docstrings(tree: ast.AST) -> Iterator[str]:
    """Docstrings of a module and of the classes/functions nested in class/function bodies."""
    stack = [tree]
    while stack:
        node = stack.pop()
        doc = ast.get_docstring(node, clean=True)
        if doc:
            yield doc
        children = [c for c in node.body if isinstance(c, (ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))]
        stack.extend(reversed(children))  # source order


def _paragraphs(doc: str) -> Iterator[str]:
    """Prose paragraphs of a docstring, with code, literal blocks and reST markup removed."""
    current: list[str] = []
    literal_indent: Optional[int] = None

    def flush() -> Iterator[str]:
        if current:
            yield " ".join(current)
            current.clear()

    for raw in doc.splitlines():
        stripped = raw.strip()
        indent = len(raw) - len(raw.lstrip())
        if literal_indent is not None:
            if not stripped or indent > literal_indent:
                continue  # inside a literal (code) block
            literal_indent = None
        if not stripped:
            yield from flush()
            continue
        if CODE_LINE_RE.match(stripped):
            yield from flush()
            continue
        if stripped.endswith("::"):
            current.append(stripped[:-1])
            yield from flush()
            literal_indent = indent
            continue
        bullet = BULLET_RE.match(stripped)
        if bullet:
            yield from flush()
            stripped = stripped[bullet.end():]
        current.append(stripped)
    yield from flush()


def tokenize(text: str) -> list[str]:
    """The corpus tokenizer: numbers, words (with internal apostrophes) and single punctuation."""
    return TOKEN_RE.findall(text)


def _is_english(tokens: list[str]) -> bool:
    if not MIN_TOKENS <= len(tokens) <= MAX_TOKENS or not tokens[0][0].isupper():
        return False
    if any(t in CODE_TOKENS for t in tokens):
        return False
    n_words = sum(1 for t in tokens if WORD_RE.match(t))
    if n_words < 0.6 * len(tokens):
        return False
    return any(t.lower() in FUNCTION_WORDS for t in tokens)


def extract_sentences(root: Optional[str] = None) -> tuple[list[list[str]], dict[str, int]]:
    """Tokenized English docstring sentences of the stdlib at `root`, deduplicated, in walk order.

    Returns `(sentences, stats)` (stats: files parsed, docstrings, sentences before dedup)."""
    root = root or sysconfig.get_paths()["stdlib"]
    seen: set[str] = set()
    out: list[list[str]] = []
    stats = collections.Counter()
    for path in _stdlib_files(root):
        try:
            with open(path, "rb") as fh:
                tree = ast.parse(fh.read(), filename=path)
        except (SyntaxError, ValueError, OSError, UnicodeDecodeError):
            continue
        stats["files_parsed"] += 1
        for doc in _docstrings(tree):
            stats["docstrings"] += 1
            for para in _paragraphs(doc):
                para = ROLE_RE.sub("", para).replace("`", "").replace("*", "")
                for sent in SENTENCE_SPLIT_RE.split(para):
                    sent = sent.strip()
                    if not sent or not sent.isascii():
                        continue
                    tokens = tokenize(sent)
                    if not _is_english(tokens):
                        continue
                    stats["sentences_kept"] += 1
                    key = " ".join(tokens)
                    if key not in seen:
                        seen.add(key)
                        out.append(tokens)
    return out, dict(stats)


# ---------------------------------------------------------------------- statistics
def vocab_from_counts(counts: collections.Counter, min_count: int) -> Vocabulary:
    """The bilm-tf vocabulary of `counts` (same rule as `vocab.build_vocab`)."""
    ranked = sorted(((w, c) for w, c in counts.items() if c >= min_count and w not in SPECIAL_WORDS),
                    key=lambda kv: (-kv[1], kv[0]))
    return Vocabulary(list(SPECIAL_WORDS) + [w for w, _ in ranked])


def unigram_perplexity(train: list[list[str]], heldout: list[list[str]], vocab: Vocabulary) -> float:
    """Heldout perplexity of the add-one-smoothed train unigram model over `vocab`.

    Targets per sentence of n words: the n words (OOV -> `<UNK>`) and one sentence end. The
    sentence end's count is the number of train sentences; `<S>` and `</S>` are each a sentence
    end of one direction, so the forward and backward values are equal."""
    counts = np.zeros(len(vocab), np.float64)
    for sent in train:
        for w in sent:
            counts[vocab.word_to_id(w)] += 1
    counts[vocab.eos_id] = len(train)
    probs = (counts + 1.0) / (counts.sum() + len(vocab))
    log_probs = np.log(probs)
    total, n = 0.0, 0
    for sent in heldout:
        total += sum(log_probs[vocab.word_to_id(w)] for w in sent) + log_probs[vocab.eos_id]
        n += len(sent) + 1
    return float(math.exp(-total / n))


# ---------------------------------------------------------------------- build
def _write_corpus(tmp: str, sentences: list[list[str]], stats: dict) -> dict:
    order = np.random.default_rng(SHUFFLE_SEED).permutation(len(sentences))
    shuffled = [sentences[i] for i in order]
    n_heldout = max(1, int(round(HELDOUT_FRACTION * len(shuffled))))
    train, heldout = shuffled[:-n_heldout], shuffled[-n_heldout:]
    if len(train) < N_TRAIN_SHARDS:
        raise ElmoError(f"the standard library gave only {len(sentences)} sentences; too few for a corpus")
    files: dict[str, int] = {}
    train_names = []
    for k, part in enumerate(np.array_split(np.arange(len(train)), N_TRAIN_SHARDS)):
        name = f"train.{k:03d}.txt"
        train_names.append(name)
        with open(os.path.join(tmp, name), "w", encoding="utf-8", newline="\n") as fh:
            fh.writelines(" ".join(train[i]) + "\n" for i in part)
    with open(os.path.join(tmp, "heldout.txt"), "w", encoding="utf-8", newline="\n") as fh:
        fh.writelines(" ".join(s) + "\n" for s in heldout)
    counts = collections.Counter(w for s in train for w in s)
    vocab = vocab_from_counts(counts, VOCAB_MIN_COUNT)
    vocab.save(os.path.join(tmp, VOCAB_FILE))
    for name in train_names + ["heldout.txt", VOCAB_FILE]:
        files[name] = os.path.getsize(os.path.join(tmp, name))
    n_heldout_tokens = sum(len(s) for s in heldout)
    n_oov = sum(1 for s in heldout for w in s if w not in vocab)
    info = {
        "name": CORPUS_NAME, "version": CORPUS_VERSION,
        "description": "English sentences from the docstrings of the Python standard library "
                       "(see elmo_jax/corpus.py for how it is built)",
        "python": sys.version.split()[0],
        "train_files": train_names, "heldout_files": ["heldout.txt"], "vocab_file": VOCAB_FILE,
        "file_sizes": files,
        "n_train_sentences": len(train), "n_train_tokens": sum(len(s) for s in train),
        "n_heldout_sentences": len(heldout), "n_heldout_tokens": n_heldout_tokens,
        "vocab_size": len(vocab), "vocab_min_count": VOCAB_MIN_COUNT,
        "heldout_oov_rate": n_oov / max(1, n_heldout_tokens),
        "unigram_perplexity": unigram_perplexity(train, heldout, vocab),
        "unigram_perplexity_note": "heldout words (OOV -> <UNK>) plus one sentence end per sentence, "
                                   "under the add-one-smoothed train unigram distribution over the vocab",
        "stats": stats,
        "complete": True,
    }
    with open(os.path.join(tmp, INFO_FILE), "w", encoding="utf-8") as fh:
        json.dump(info, fh, indent=1, sort_keys=True)
        fh.write("\n")
    return info


def _read_complete(out_dir: str) -> Optional[dict]:
    """The info of a complete corpus in `out_dir`, or None (missing, partial, other version)."""
    try:
        with open(os.path.join(out_dir, INFO_FILE), encoding="utf-8") as fh:
            info = json.load(fh)
        if not info.get("complete") or info.get("version") != CORPUS_VERSION:
            return None
        for name, size in info["file_sizes"].items():
            if os.path.getsize(os.path.join(out_dir, name)) != size:
                return None
        for key in ("train_files", "heldout_files", "vocab_file", "n_train_tokens", "unigram_perplexity"):
            if key not in info:
                return None
        return info
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None


def _with_paths(out_dir: str, info: dict) -> dict:
    out = dict(info)
    out["dir"] = out_dir
    out["train_files"] = [os.path.join(out_dir, n) for n in info["train_files"]]
    out["heldout_files"] = [os.path.join(out_dir, n) for n in info["heldout_files"]]
    out["vocab_file"] = os.path.join(out_dir, info["vocab_file"])
    out["info_file"] = os.path.join(out_dir, INFO_FILE)
    return out


def build_builtin_corpus(out_dir: Optional[str] = None, force: bool = False,
                         stdlib_root: Optional[str] = None) -> dict[str, Any]:
    """Build (or reuse) the built-in corpus; returns its info with absolute paths.

    Keys: everything in info.json, with `train_files` (sorted list), `heldout_files` (list) and
    `vocab_file` as absolute paths, plus `dir` and `info_file`. Reuses a complete corpus unless
    `force`. Atomic: built in a temporary sibling directory and renamed into place."""
    out_dir = os.path.abspath(os.path.expanduser(out_dir or default_corpus_dir()))
    if not force:
        info = _read_complete(out_dir)
        if info is not None:
            return _with_paths(out_dir, info)
    parent = os.path.dirname(out_dir)
    try:
        os.makedirs(parent, exist_ok=True)
        tmp = tempfile.mkdtemp(prefix=f".{os.path.basename(out_dir)}.building-", dir=parent)
    except OSError as e:
        raise ElmoError(f"cannot create the built-in corpus directory ({e.strerror or e})", out_dir)
    try:
        sentences, stats = extract_sentences(stdlib_root)
        _write_corpus(tmp, sentences, stats)
        _install(tmp, out_dir, force)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    final = _read_complete(out_dir)
    if final is None:  # pragma: no cover - only if another process broke it in between
        raise ElmoError("the built-in corpus is incomplete after building it", out_dir)
    return _with_paths(out_dir, final)


def _install(tmp: str, out_dir: str, force: bool) -> None:
    """Rename the finished `tmp` onto `out_dir`, moving any old (partial or forced) one aside."""
    old = None
    if os.path.lexists(out_dir):
        if not force and _read_complete(out_dir) is not None:  # a concurrent build finished first
            shutil.rmtree(tmp, ignore_errors=True)
            return
        old = tempfile.mkdtemp(prefix=f".{os.path.basename(out_dir)}.old-", dir=os.path.dirname(out_dir))
        os.rename(out_dir, os.path.join(old, "corpus"))
    try:
        os.rename(tmp, out_dir)
    except OSError:
        if _read_complete(out_dir) is None:
            raise
        shutil.rmtree(tmp, ignore_errors=True)  # another process installed a complete corpus
    if old is not None:
        with contextlib.suppress(OSError):
            shutil.rmtree(old)
