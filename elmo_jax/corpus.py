"""The built-in corpus: English sentences from the docstrings of the Python standard library,
shipped with the package, so that `elmo-jax demo` and the shipped configs (`builtin:train`,
`builtin:heldout`, vocab `builtin`) train on the same text on every machine, with no download.

The corpus is built once by `examples/build_corpus.py` (the extraction rules are there) and
shipped gzip-compressed in `elmo_jax/corpus_data/`: `info.json` (counts, unigram perplexity, the
size and SHA-256 of every file), `train.000.txt.gz` ..., `heldout.txt.gz`, `vocab.txt.gz`.
`builtin_corpus()` unpacks it once into `$ELMO_JAX_CACHE_DIR/corpus/<name>-<hash of info.json>`
(default `~/.cache/elmo-jax/...`, `runtime.cache_dir`), where the batcher reads plain text files:

- checked: every unpacked file must have the size and SHA-256 that info.json records;
- atomic: unpacked into a temporary sibling directory and renamed into place when complete, so
  an interrupted unpack never leaves a half corpus;
- reused: a complete directory (info.json present, every file with its recorded size) is used
  as it is; a damaged one is unpacked again.
"""
from __future__ import annotations

import contextlib
import gzip
import hashlib
import json
import os
import shutil
import tempfile
from importlib import resources
from typing import Any, Optional

from .errors import ElmoError
from .runtime import cache_dir

INFO_FILE = "info.json"
PACKED_SUFFIX = ".gz"
Source = Any  # a directory of a packed corpus: a pathlib.Path, or an importlib.resources Traversable


def shipped_corpus() -> Source:
    """The package's corpus directory (`elmo_jax/corpus_data`)."""
    return resources.files(__package__).joinpath("corpus_data")


def _read_info(source: Source) -> tuple[dict, str]:
    """(info, SHA-256 of info.json) of a packed corpus."""
    try:
        raw = source.joinpath(INFO_FILE).read_bytes()
        info = json.loads(raw)
        files = info["files"]
        if not isinstance(files, dict) or not files:
            raise ValueError("no 'files'")
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise ElmoError(f"the built-in corpus is missing or damaged ({e}); reinstall elmo-jax or rebuild it with "
                        "examples/build_corpus.py", str(source))
    return info, hashlib.sha256(raw).hexdigest()


def default_corpus_dir(source: Optional[Source] = None) -> str:
    """Where `builtin_corpus` unpacks `source` (default: the shipped corpus)."""
    info, digest = _read_info(source or shipped_corpus())
    return cache_dir("corpus", f"{info['name']}-{digest[:12]}")


def _complete(out_dir: str) -> Optional[dict]:
    """The info of a complete unpacked corpus in `out_dir`, or None (missing, partial, damaged)."""
    try:
        with open(os.path.join(out_dir, INFO_FILE), encoding="utf-8") as fh:
            info = json.load(fh)
        for name, entry in info["files"].items():
            if os.path.getsize(os.path.join(out_dir, name)) != entry["size"]:
                return None
        return info
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None


def _with_paths(out_dir: str, info: dict) -> dict[str, Any]:
    out = dict(info)
    out["dir"] = out_dir
    out["train_files"] = [os.path.join(out_dir, n) for n in info["train_files"]]
    out["heldout_files"] = [os.path.join(out_dir, n) for n in info["heldout_files"]]
    out["vocab_file"] = os.path.join(out_dir, info["vocab_file"])
    out["info_file"] = os.path.join(out_dir, INFO_FILE)
    return out


def _unpack(source: Source, info: dict, tmp: str) -> None:
    for name, entry in info["files"].items():
        digest = hashlib.sha256()
        with source.joinpath(name + PACKED_SUFFIX).open("rb") as packed, gzip.GzipFile(fileobj=packed) as fh, \
                open(os.path.join(tmp, name), "wb") as out:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                digest.update(chunk)
                out.write(chunk)
        if digest.hexdigest() != entry["sha256"] or os.path.getsize(os.path.join(tmp, name)) != entry["size"]:
            raise ElmoError(f"the built-in corpus file {name} is damaged (its SHA-256 or size differs from "
                            f"info.json); reinstall elmo-jax", str(source))
    with source.joinpath(INFO_FILE).open("rb") as src, open(os.path.join(tmp, INFO_FILE), "wb") as out:
        shutil.copyfileobj(src, out)


def builtin_corpus(out_dir: Optional[str] = None, force: bool = False,
                   source: Optional[Source] = None) -> dict[str, Any]:
    """The built-in corpus, unpacked (once) from `source` (default: the shipped one) into `out_dir`
    (default `default_corpus_dir()`); returns its info with absolute paths.

    Keys: everything in info.json, with `train_files` (sorted list), `heldout_files` (list) and
    `vocab_file` as absolute paths, plus `dir` and `info_file`. Reuses a complete directory
    unless `force`."""
    source = source or shipped_corpus()
    info, _ = _read_info(source)
    out_dir = os.path.abspath(os.path.expanduser(out_dir or default_corpus_dir(source)))
    if not force:
        done = _complete(out_dir)
        if done is not None:
            return _with_paths(out_dir, done)
    parent = os.path.dirname(out_dir)
    try:
        os.makedirs(parent, exist_ok=True)
        tmp = tempfile.mkdtemp(prefix=f".{os.path.basename(out_dir)}.unpacking-", dir=parent)
    except OSError as e:
        raise ElmoError(f"cannot create the built-in corpus directory ({e.strerror or e})", out_dir)
    try:
        _unpack(source, info, tmp)
        install_directory(tmp, out_dir, replace=force, is_complete=lambda d: _complete(d) is not None)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    final = _complete(out_dir)
    if final is None:  # pragma: no cover - only if another process broke it in between
        raise ElmoError("the built-in corpus is incomplete after unpacking it", out_dir)
    return _with_paths(out_dir, final)


def install_directory(tmp: str, out_dir: str, replace: bool, is_complete) -> None:
    """Rename the finished directory `tmp` onto `out_dir`, moving an old one aside (a partial one,
    or any with `replace`); a complete one installed meanwhile by another process is kept."""
    old = None
    if os.path.lexists(out_dir):
        if not replace and is_complete(out_dir):  # a concurrent unpack finished first
            shutil.rmtree(tmp, ignore_errors=True)
            return
        old = tempfile.mkdtemp(prefix=f".{os.path.basename(out_dir)}.old-", dir=os.path.dirname(out_dir))
        os.rename(out_dir, os.path.join(old, "corpus"))
    try:
        os.rename(tmp, out_dir)
    except OSError:
        if not is_complete(out_dir):
            raise
        shutil.rmtree(tmp, ignore_errors=True)  # another process installed a complete one
    if old is not None:
        with contextlib.suppress(OSError):
            shutil.rmtree(old)
