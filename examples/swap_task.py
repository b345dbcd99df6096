"""A classification task that needs context: is this sentence real, or has it two words swapped?

A swapped sentence has exactly the words of a real one, so a bag of context-free token vectors
cannot tell them apart; only word order (which a pretrained biLM has learned) can. Used to show
that pretraining helps (tests/test_tasks.py, benchmarks/pretraining_helps.py): demo data, not
part of the package.
"""
from __future__ import annotations

import os
from typing import Sequence

import numpy as np

from elmo_jax.io_utils import atomic_write_text, read_lines

REAL, SWAPPED = "real", "swapped"


def swap_two_words(tokens: Sequence[str], rng: np.random.Generator) -> list[str]:
    """`tokens` with two positions holding different words exchanged."""
    tokens = list(tokens)
    while True:
        i, j = sorted(rng.choice(len(tokens), size=2, replace=False))
        if tokens[i] != tokens[j]:
            tokens[i], tokens[j] = tokens[j], tokens[i]
            return tokens


def swap_detection_examples(sentences: Sequence[Sequence[str]], n: int, seed: int,
                            min_len: int = 6, max_len: int = 20) -> list[tuple[list[str], str]]:
    """`n` examples (tokens, 'real' | 'swapped'), half each, from distinct sentences of suitable length
    (each sentence used once, so a real sentence never appears beside its own swapped copy)."""
    rng = np.random.default_rng(seed)
    usable = [list(s) for s in sentences if min_len <= len(s) <= max_len and len(set(s)) > 1]
    if len(usable) < n:
        raise ValueError(f"only {len(usable)} sentences of {min_len}-{max_len} tokens, {n} needed")
    picked = rng.choice(len(usable), size=n, replace=False)
    out = []
    for k, i in enumerate(picked):
        if k % 2:
            out.append((swap_two_words(usable[i], rng), SWAPPED))
        else:
            out.append((usable[i], REAL))
    return [out[i] for i in rng.permutation(n)]


def read_sentences(paths: Sequence[str]) -> list[list[str]]:
    return [line.split() for path in paths for line in read_lines(path) if line.strip()]


def write_tsv(path: os.PathLike | str, examples: Sequence[tuple[Sequence[str], str]]) -> None:
    atomic_write_text(path, "text\tlabel\n" + "".join(f"{' '.join(t)}\t{label}\n" for t, label in examples))


def write_swap_task(directory: os.PathLike | str, train_files: Sequence[str], heldout_files: Sequence[str],
                    n_train: int = 1000, n_dev: int = 200, n_test: int = 400, seed: int = 0) -> dict[str, str]:
    """train/dev .tsv from the training text, test .tsv from the heldout text -> their paths."""
    directory = os.fspath(directory)
    os.makedirs(directory, exist_ok=True)
    pool = swap_detection_examples(read_sentences(train_files), n_train + n_dev, seed)
    test = swap_detection_examples(read_sentences(heldout_files), n_test, seed + 1)
    paths = {name: os.path.join(directory, f"{name}.tsv") for name in ("train", "dev", "test")}
    write_tsv(paths["train"], pool[:n_train])
    write_tsv(paths["dev"], pool[n_train:])
    write_tsv(paths["test"], test)
    return paths
