"""Build the built-in corpus that elmo-jax ships (`elmo_jax/corpus_data/`, read by `elmo_jax.corpus`):
English sentences from the docstrings of the Python standard library.

    python examples/build_corpus.py                      # rewrites elmo_jax/corpus_data/
    python examples/build_corpus.py --output DIR [--stdlib-root DIR]

The package imports nothing from here: it ships the result, so the corpus is the same text on
every Python version and machine (the standard library's docstrings change between versions).
The shipped one was built with the Python that info.json names.

How it is built (`build`), step by step, deterministically for a given Python:
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
10. `info.json`: counts, file names, sizes and SHA-256, the Python version, and `unigram_perplexity`: the
   perplexity of the heldout targets under the train unigram distribution over the vocabulary
   with add-one smoothing. The targets are those a biLM predicts for a sentence of n words: its
   n words (OOV -> `<UNK>`) plus one sentence end (`</S>` forward, `<S>` backward; both have the
   train sentence count as their count), i.e. the same positions the model's perplexity averages.
   A trained model must beat this number.

11. Packing: each file gzip-compressed (level 9, no name or time stamp: the same bytes on every
   build) as `<name>.gz`, beside `info.json`.

The build runs in a temporary directory beside the output and is renamed into place only when
complete, so an interrupted build never leaves a half corpus.
"""
from __future__ import annotations

import argparse
import ast
import collections
import gzip
import hashlib
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

from elmo_jax.corpus import INFO_FILE, PACKED_SUFFIX, install_directory
from elmo_jax.errors import ElmoError
from elmo_jax.vocab import SPECIAL_WORDS, Vocabulary

CORPUS_NAME = "stdlib-v2"
CORPUS_VERSION = 2
N_TRAIN_SHARDS = 4
HELDOUT_FRACTION = 0.05
VOCAB_MIN_COUNT = 2
SHUFFLE_SEED = 20180215
MIN_TOKENS, MAX_TOKENS = 3, 60
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
        with open(os.path.join(tmp, name), "rb") as fh:
            data = fh.read()
        files[name] = {"size": len(data), "sha256": hashlib.sha256(data).hexdigest()}
    n_heldout_tokens = sum(len(s) for s in heldout)
    n_oov = sum(1 for s in heldout for w in s if w not in vocab)
    info = {
        "name": CORPUS_NAME, "version": CORPUS_VERSION,
        "description": "English sentences from the docstrings of the Python standard library "
                       "(see examples/build_corpus.py for how it is built)",
        "python": sys.version.split()[0],
        "train_files": train_names, "heldout_files": ["heldout.txt"], "vocab_file": VOCAB_FILE,
        "files": files,
        "n_train_sentences": len(train), "n_train_tokens": sum(len(s) for s in train),
        "n_heldout_sentences": len(heldout), "n_heldout_tokens": n_heldout_tokens,
        "vocab_size": len(vocab), "vocab_min_count": VOCAB_MIN_COUNT,
        "heldout_oov_rate": n_oov / max(1, n_heldout_tokens),
        "unigram_perplexity": unigram_perplexity(train, heldout, vocab),
        "unigram_perplexity_note": "heldout words (OOV -> <UNK>) plus one sentence end per sentence, "
                                   "under the add-one-smoothed train unigram distribution over the vocab",
        "stats": stats,
    }
    with open(os.path.join(tmp, INFO_FILE), "w", encoding="utf-8") as fh:
        json.dump(info, fh, indent=1, sort_keys=True)
        fh.write("\n")
    return info


def _pack(plain: str, out: str, info: dict) -> None:
    """`plain`'s files gzip-compressed into `out` (reproducible bytes), then info.json."""
    for name in info["files"]:
        with open(os.path.join(plain, name), "rb") as src, open(os.path.join(out, name + PACKED_SUFFIX), "wb") as raw, \
                gzip.GzipFile(filename="", mode="wb", compresslevel=9, fileobj=raw, mtime=0) as fh:
            shutil.copyfileobj(src, fh)
    shutil.copy(os.path.join(plain, INFO_FILE), os.path.join(out, INFO_FILE))


def build(out_dir: str, stdlib_root: Optional[str] = None) -> dict[str, Any]:
    """Build the packed corpus into `out_dir` (replacing what is there); returns its info."""
    out_dir = os.path.abspath(out_dir)
    parent = os.path.dirname(out_dir)
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=f".{os.path.basename(out_dir)}.building-", dir=parent)
    try:
        plain, packed = os.path.join(tmp, "plain"), os.path.join(tmp, "packed")
        os.mkdir(plain)
        os.mkdir(packed)
        sentences, stats = extract_sentences(stdlib_root)
        info = _write_corpus(plain, sentences, stats)
        _pack(plain, packed, info)
        install_directory(packed, out_dir, replace=True, is_complete=lambda d: False)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return info


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--output", default=os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                                                     "elmo_jax", "corpus_data"))
    ap.add_argument("--stdlib-root", default=None, help="default: this Python's standard library")
    args = ap.parse_args()
    info = build(args.output, args.stdlib_root)
    print(f"wrote {args.output}: {info['n_train_sentences']} train sentences ({info['n_train_tokens']} tokens), "
          f"{info['n_heldout_sentences']} heldout, vocabulary {info['vocab_size']}, unigram perplexity "
          f"{info['unigram_perplexity']:.1f} (Python {info['python']})")


if __name__ == "__main__":
    main()
