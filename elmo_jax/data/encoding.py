"""A corpus read through Hugging Face `datasets`: shards of one-sentence-per-line text -> int32
input ids per sentence, with the input table they index.

Two passes over `load_dataset("text", ...)` (one dataset per shard, so shard boundaries are
kept): (1) count sentences/tokens and collect the distinct words, (2) `map` lines to int32 word
ids with the sentence markers, cached by `datasets` (memory-mapped Arrow) or, with
`streaming=True`, recomputed when a shard is needed (for corpora larger than disk cache or
memory; only a few shards are held at once). Raw-text corpora (`tokenizer` given,
`elmo_jax.tokenize`) are first mapped once to a `tokens` column (sentence splitting may make
several rows of a line), cached the same way under a fingerprint that includes `Tokenizer.key`
(so another tokenizer, its settings or its library version re-tokenizes and re-encodes); both
passes then read that column.

Character ids are never stored per token: each distinct word gets one row of the input table
`input_chars [n_input_words, C]` (uint16). Input ids are the vocab ids first (input id == vocab
id for known words), then the corpus's out-of-vocabulary words in sorted order (deterministic on
every host); `input_to_target` maps input ids to target ids (OOV -> `<UNK>`).
"""
from __future__ import annotations

import collections
import contextlib
import hashlib
import os
import zlib
from typing import Any, Iterator, Optional, Sequence, Union

import datasets
import numpy as np
import pyarrow as pa  # datasets' storage format, used directly here (declared in pyproject.toml)
from datasets import load_dataset
from datasets.utils import logging as ds_logging

from ..chars import char_table
from ..errors import DataError, ElmoError, InputError
from ..io_utils import read_lines
from ..tokenize import Tokenizer, split_text
from ..vocab import Vocabulary, check_corpus_file, resolve_files

_ENCODE_VERSION = "elmo-jax-ids-v1"


# ---------------------------------------------------------------------- datasets access
@contextlib.contextmanager
def _quiet_datasets() -> Iterator[None]:
    """Silence `datasets` progress bars (one per shard is noise), restoring the setting after."""
    was_enabled = ds_logging.is_progress_bar_enabled()
    ds_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was_enabled:
            ds_logging.enable_progress_bar()


def _reraise_read_error(path: str, exc: BaseException) -> None:
    """Turn a `datasets` failure into an `InputError` naming the file (and line, for bad UTF-8)."""
    if isinstance(exc, ElmoError):
        raise exc
    for _ in read_lines(path):  # raises InputError(file, line) on the first non-UTF-8 line
        pass
    raise InputError(f"cannot read corpus file through datasets ({type(exc).__name__}: {exc})", path) from exc


def _load_text(path: str, streaming: bool, cache_dir: Optional[str]):
    return load_dataset("text", data_files=[path], split="train", streaming=streaming, cache_dir=cache_dir)


def _load_sentences(path: str, streaming: bool, cache_dir: Optional[str], tokenizer: Optional[Tokenizer]):
    """A shard as a dataset of `text` lines, or with a tokenizer, of `tokens` (one row per sentence;
    tokenized once and cached by `datasets` under a fingerprint holding `tokenizer.key`)."""
    ds = _load_text(path, streaming, cache_dir)
    if tokenizer is None:
        return ds
    kwargs = dict(batched=True, batch_size=1024, remove_columns=["text"])
    if streaming:
        return ds.with_format("arrow").map(_Tokenize(tokenizer), **kwargs)
    fp = hashlib.sha1(f"{_ENCODE_VERSION}|{getattr(ds, '_fingerprint', path)}|{tokenizer.key}".encode()).hexdigest()
    return ds.with_format("arrow").map(_Tokenize(tokenizer), features=_list_feature("tokens", "string"),
                                       new_fingerprint=fp, **kwargs)


def _table_sentences(table) -> Iterator[list[str]]:
    """The non-empty token lists of an Arrow table or batch: its `tokens` (a tokenized corpus), or
    its `text` lines split on whitespace (blank lines dropped)."""
    if "tokens" in table.schema.names:
        yield from table.column("tokens").to_pylist()
        return
    for line in table.column("text").to_pylist():
        toks = line.split()
        if toks:
            yield toks


def _sentence_batches(ds, streaming: bool, batch_size: int = 8192) -> Iterator[list[list[str]]]:
    """The sentences (token lists) of a shard's dataset in order, a list at a time."""
    tables = (ds.with_format("arrow").iter(batch_size=batch_size) if streaming
              else ds.data.table.to_batches(max_chunksize=batch_size))
    for table in tables:
        yield list(_table_sentences(table))


def _list_feature(name: str, dtype: str):
    list_type = getattr(datasets, "List", None) or datasets.Sequence
    return datasets.Features({name: list_type(datasets.Value(dtype))})


class _Tokenize:
    """`datasets.map` function on Arrow batches: a `text` table -> a `tokens` table, one row per
    non-empty sentence of the lines (`elmo_jax.tokenize.split_text`)."""

    def __init__(self, tokenizer: Tokenizer):
        self.tokenizer = tokenizer

    def __call__(self, table):
        out = [toks for line in table.column("text").to_pylist()
               for _, toks in split_text(line, self.tokenizer) if toks]
        return pa.table({"tokens": pa.array(out, type=pa.list_(pa.string()))})


class _Encoder:
    """`datasets.map` function on Arrow batches: a `text` (or `tokens`) table -> an `ids` table of
    int32 input ids `[<S>, words..., </S>]` per sentence (blank lines are dropped)."""

    def __init__(self, index: dict[str, int], bos: int, eos: int):
        self.index, self.bos, self.eos = index, bos, eos

    def __call__(self, table):
        index = self.index
        out = [[self.bos, *[index[t] for t in toks], self.eos] for toks in _table_sentences(table)]
        return pa.table({"ids": pa.array(out, type=pa.list_(pa.int32()))})


def _flat_ids(column) -> tuple[np.ndarray, np.ndarray]:
    """A pyarrow list column -> (values int32 [total], offsets int64 [rows + 1])."""
    arr = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    offsets = np.asarray(arr.offsets, dtype=np.int64)
    values = arr.values.to_numpy(zero_copy_only=False).astype(np.int32, copy=False)
    return values, offsets


# ---------------------------------------------------------------------- the encoded corpus
class EncodedCorpus:
    """The sentences of a corpus as input ids, shard by shard; see the module docstring.

    files: sorted shard paths; shard_sizes int64 [n_shards] sentences per shard; lengths: per
    shard int32 [n_sentences] words per sentence; input_words / input_chars uint16
    [n_input_words, C] / input_to_target int32 [n_input_words]: the input table; fingerprint:
    a checksum of the sizes and the input table (and the tokenizer), saved with a data position."""

    def __init__(self, files: Union[str, os.PathLike, Sequence[str]], vocab: Union[Vocabulary, str, os.PathLike], *,
                 max_characters_per_token: int, streaming: bool = False, cache_dir: Optional[str] = None,
                 max_cached_shards: int = 4, tokenizer: Optional[Tokenizer] = None):
        self.streaming, self.cache_dir = bool(streaming), cache_dir
        self.tokenizer = tokenizer  # None: the corpus is whitespace-tokenized already
        self.max_chars = int(max_characters_per_token)
        self.max_cached_shards = max(1, int(max_cached_shards))
        self.files = (resolve_files(files) if isinstance(files, (str, os.PathLike))
                      else sorted(set(map(os.fspath, files))))
        if not self.files:
            raise DataError("no corpus files given")
        for f in self.files:
            check_corpus_file(f)
        self.vocab = vocab if isinstance(vocab, Vocabulary) else Vocabulary.from_file(vocab)
        with _quiet_datasets():
            self._scan()
            self._build_input_table()
            self._encode()
        self._shard_cache: collections.OrderedDict[int, tuple[np.ndarray, np.ndarray]] = collections.OrderedDict()

    # ------------------------------------------------------------------ pass 1: scan
    def _scan(self) -> None:
        """Per shard: sentence lengths and token counts; all distinct words."""
        self.lengths: list[np.ndarray] = []  # per shard: int32 [n_sentences] words per sentence
        words: set[str] = set()
        self._datasets: list[Any] = []
        for path in self.files:
            lengths: list[int] = []
            try:
                ds = _load_sentences(path, self.streaming, self.cache_dir, self.tokenizer)
                for sentences in _sentence_batches(ds, self.streaming):
                    for toks in sentences:
                        lengths.append(len(toks))
                        words.update(toks)
            except Exception as e:  # noqa: BLE001 - re-raised with the file (and line) named
                _reraise_read_error(path, e)
            if not lengths:
                raise DataError("corpus file has no sentences (only blank lines)", path)
            self._datasets.append(ds)
            self.lengths.append(np.asarray(lengths, np.int32))
        self.shard_sizes = np.array([len(x) for x in self.lengths], np.int64)  # [n_shards] sentences
        self.n_sentences = int(self.shard_sizes.sum())
        self.n_tokens = int(sum(int(x.sum()) for x in self.lengths))
        self._distinct_words = words

    # ------------------------------------------------------------------ input table
    def _build_input_table(self) -> None:
        """Input ids: the vocab ids first (so input id == vocab id for known words), then the OOV
        words of the corpus in sorted order (deterministic on every host)."""
        vocab_words = self.vocab.words
        known = self.vocab.index()
        oov = sorted(w for w in self._distinct_words if w not in known)
        del self._distinct_words
        self.input_words: list[str] = vocab_words + oov
        self._input_index = dict(known)
        for k, w in enumerate(oov, start=len(vocab_words)):
            self._input_index[w] = k
        self.input_chars = char_table(self.input_words, self.max_chars)  # uint16 [n_input_words, C]
        self.input_to_target = np.concatenate([np.arange(len(vocab_words), dtype=np.int32),
                                               np.full(len(oov), self.vocab.unk_id, np.int32)])  # [n_input_words]
        digest = hashlib.sha1("\n".join(self.input_words).encode("utf-8", "surrogatepass"))
        digest.update(f"|{self.vocab.bos_id}|{self.vocab.eos_id}".encode())
        if self.tokenizer is not None:
            digest.update(f"|{self.tokenizer.key}".encode())
        self._table_digest = digest.hexdigest()
        self.fingerprint = zlib.crc32(("|".join(map(str, self.shard_sizes.tolist())) + "|" + str(self.n_tokens)
                                       + "|" + self._table_digest).encode()) & 0x7FFFFFFF

    # ------------------------------------------------------------------ pass 2: encode
    def _encode(self) -> None:
        self._encoder = _Encoder(self._input_index, self.vocab.bos_id, self.vocab.eos_id)
        self._encoded: list[Any] = []
        if self.streaming:
            return  # encoded lazily, shard by shard, in shard_ids
        for s, (path, ds) in enumerate(zip(self.files, self._datasets)):
            fp = hashlib.sha1(f"{_ENCODE_VERSION}|{getattr(ds, '_fingerprint', path)}|{self._table_digest}"
                              .encode()).hexdigest()
            try:
                enc = ds.with_format("arrow").map(self._encoder, batched=True, batch_size=4096,
                                                  remove_columns=ds.column_names, features=_list_feature("ids", "int32"),
                                                  new_fingerprint=fp)
            except Exception as e:  # noqa: BLE001
                if isinstance(e, KeyError):
                    raise DataError("corpus file changed while it was being read; run again", path) from e
                _reraise_read_error(path, e)
            if len(enc) != len(self.lengths[s]):
                raise DataError("corpus file changed while it was being read; run again", path)
            self._encoded.append(enc)

    def shard_ids(self, s: int) -> tuple[np.ndarray, np.ndarray]:
        """Input ids of shard s: (flat int32 [n_tokens + 2 n_sentences], offsets int64 [n_sentences + 1])."""
        hit = self._shard_cache.get(s)
        if hit is not None:
            self._shard_cache.move_to_end(s)
            return hit
        path = self.files[s]
        with _quiet_datasets():
            try:
                if self.streaming:
                    ds = _load_sentences(path, True, self.cache_dir, self.tokenizer)
                    enc = ds.with_format("arrow").map(self._encoder, batched=True, batch_size=4096,
                                                      remove_columns=["tokens" if self.tokenizer else "text"])
                    flats, lens = [np.zeros(0, np.int32)], [np.zeros(0, np.int64)]
                    for table in enc.iter(batch_size=8192):
                        values, offs = _flat_ids(table.column("ids"))
                        flats.append(values[offs[0]:offs[-1]])
                        lens.append(np.diff(offs))
                    flat = np.concatenate(flats)
                    offsets = np.concatenate([[0], np.cumsum(np.concatenate(lens))]).astype(np.int64)
                else:
                    flat, offsets = _flat_ids(self._encoded[s].data.column("ids"))
            except KeyError as e:
                raise DataError("corpus file changed since it was scanned (unknown word); restart", path) from e
            except ElmoError:
                raise
            except Exception as e:  # noqa: BLE001
                _reraise_read_error(path, e)
        if len(offsets) - 1 != len(self.lengths[s]) or not np.array_equal(np.diff(offsets) - 2, self.lengths[s]):
            raise DataError("corpus file changed since it was scanned; restart", path)
        self._shard_cache[s] = (flat, offsets)
        while len(self._shard_cache) > self.max_cached_shards:
            self._shard_cache.popitem(last=False)
        return flat, offsets

    def sentence(self, s: int, j: int) -> np.ndarray:
        """Input ids `[<S>, w1..wn, </S>]` (int32 [n + 2]) of sentence j of shard s."""
        flat, offsets = self.shard_ids(s)
        return flat[offsets[j]:offsets[j + 1]]

    @property
    def n_input_words(self) -> int:
        return len(self.input_words)
