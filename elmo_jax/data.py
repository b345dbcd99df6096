"""The pretraining batcher: shards of one-sentence-per-line text -> bilm-tf truncated-BPTT batches.

Semantics (bilm-tf `_get_batch`, see docs/training.md "Batching"):
- Each of the B rows of the global batch is an independent endless stream of sentences. A
  sentence of n words is `<S> w1 .. wn </S>` and contributes n+1 (input, target) pairs: inputs
  `<S> w1 .. wn`, targets `w1 .. wn </S>` (`</S>` is never an input; the next sentence's `<S>`
  follows). Pairs are packed without padding and cut into windows of `unroll_steps`; a sentence
  cut by a window continues at the start of the same row in the next batch.
- The backward stream uses the same sentences, each reversed with the markers swapped
  (`</S> wn .. w1 <S>`, bilm-tf's `encode(reverse=True)`), with the same windowing; so window k of
  the backward stream covers exactly the sentences of window k of the forward stream.
- Targets are vocabulary ids (OOV -> `<UNK>`); inputs are character ids (raw training ids, 261
  values) of the actual word, so OOV words keep their spelling.

Sentence order: the sentences of all shards form one sequence per epoch: shards in a seeded
random order (`[seed, 0, epoch]`), each shard's sentences in a seeded random permutation
(`[seed, 1, epoch, shard]`). Epochs follow each other into one endless sequence; row r takes the
sentences at positions r, r+B, r+2B, ... of it. A row's stream depends only on its own positions,
so a host can produce just its rows (`row_start`, `row_count`) and the union over hosts is the
single-host batch. Evaluation (`train=False`) uses one epoch in file order without shuffling and
pads rows that ran out of data with weight 0; it stops when every row of the global batch is
done (the same batch count on every host).

Data position (`state()`/`restore()`): per global row, the position of its current sentence in
the endless sequence and how many of its pairs were already emitted. That fully determines the
leftover of a cut sentence, is tiny, is identical on every host (all hosts track all rows; only
lengths are needed for the rows of other hosts), and survives a change of host count.

Reading: Hugging Face `datasets` (`load_dataset("text", ...)`, one dataset per shard so shard
boundaries are kept), in two passes: (1) count sentences/tokens and collect the distinct words,
(2) `map` lines to int32 word ids with the sentence markers, cached by `datasets` (memory-mapped
Arrow) or, with `streaming=True`, recomputed when a shard is needed (for corpora larger than
disk cache or memory; only a few shards are held at once). Raw-text corpora (`tokenizer` given,
`elmo_jax.tokenize`) are first mapped once to a `tokens` column (sentence splitting may make
several rows of a line), cached the same way under a fingerprint that includes `Tokenizer.key`
(so another tokenizer, its settings or its library version re-tokenizes and re-encodes); both
passes then read that column. Character ids are never stored per
token: each distinct word gets one row of the input table `input_chars [n_input_words, C]`
(uint16), gathered at batch time.
"""
from __future__ import annotations

import collections
import contextlib
import hashlib
import math
import os
import zlib
from typing import Any, Iterator, Optional, Sequence, Union

import numpy as np

from .chars import DEFAULT_MAX_CHARS, char_table
from .errors import ElmoError, InputError
from .io_utils import read_lines
from .prefetch import Prefetcher
from .tokenize import Tokenizer, split_text
from .vocab import Vocabulary, check_corpus_file, resolve_files

Batch = dict[str, np.ndarray]
State = dict[str, Union[np.ndarray, int]]

STATE_VERSION = 1
_ENCODE_VERSION = "elmo-jax-ids-v1"
BATCH_KEYS = ("inputs_fwd", "inputs_bwd", "targets_fwd", "targets_bwd", "weights_fwd", "weights_bwd")


class DataError(ElmoError):
    """A corpus, vocabulary or saved data position that cannot be used."""


# ---------------------------------------------------------------------- datasets access
@contextlib.contextmanager
def _quiet_datasets() -> Iterator[None]:
    """Silence `datasets` progress bars (one per shard is noise), restoring the setting after."""
    from datasets.utils import logging as ds_logging

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
    from datasets import load_dataset

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
    import datasets

    list_type = getattr(datasets, "List", None) or datasets.Sequence
    return datasets.Features({name: list_type(datasets.Value(dtype))})


class _Tokenize:
    """`datasets.map` function on Arrow batches: a `text` table -> a `tokens` table, one row per
    non-empty sentence of the lines (`elmo_jax.tokenize.split_text`)."""

    def __init__(self, tokenizer: Tokenizer):
        self.tokenizer = tokenizer

    def __call__(self, table):
        import pyarrow as pa

        out = [toks for line in table.column("text").to_pylist()
               for _, toks in split_text(line, self.tokenizer) if toks]
        return pa.table({"tokens": pa.array(out, type=pa.list_(pa.string()))})


class _Encoder:
    """`datasets.map` function on Arrow batches: a `text` (or `tokens`) table -> an `ids` table of
    int32 input ids `[<S>, words..., </S>]` per sentence (blank lines are dropped)."""

    def __init__(self, index: dict[str, int], bos: int, eos: int):
        self.index, self.bos, self.eos = index, bos, eos

    def __call__(self, table):
        import pyarrow as pa

        index = self.index
        out = [[self.bos, *[index[t] for t in toks], self.eos] for toks in _table_sentences(table)]
        return pa.table({"ids": pa.array(out, type=pa.list_(pa.int32()))})


def _flat_ids(column) -> tuple[np.ndarray, np.ndarray]:
    """A pyarrow list column -> (values int32 [total], offsets int64 [rows + 1])."""
    import pyarrow as pa

    arr = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    offsets = np.asarray(arr.offsets, dtype=np.int64)
    values = arr.values.to_numpy(zero_copy_only=False).astype(np.int32, copy=False)
    return values, offsets


# ---------------------------------------------------------------------- batcher
class Batcher:
    """Endless (training) or single-pass (evaluation) bilm-tf batches of one host's rows.

    `next(batcher)` -> dict of NumPy arrays (R = row_count rows of the global batch, T = unroll):
      inputs_fwd, inputs_bwd    int32 [R, T]      input-table ids of the inputs: rows of
                                                  `input_chars` (raw char ids) and of `input_to_target`
      targets_fwd, targets_bwd  int32 [R, T]      vocab ids of the next token (OOV -> <UNK>)
      weights_fwd, weights_bwd  float32 [R, T]    1 for real targets, 0 for evaluation padding
    Evaluation padding positions hold the `<S>` token as input and target, with weight 0.

    `state()` is the position after the last batch returned by `next`; `restore(state)` moves
    there. With a background thread use `prefetch()` (whose `state()` follows the consumer)."""

    def __init__(self, files: Union[str, Sequence[str]], vocab: Union[Vocabulary, str, os.PathLike], *,
                 global_batch_size: int, unroll_steps: int, row_start: int = 0, row_count: Optional[int] = None,
                 seed: int = 0, train: bool = True, shuffle: bool = True, streaming: bool = False,
                 max_characters_per_token: int = DEFAULT_MAX_CHARS, cache_dir: Optional[str] = None,
                 max_cached_shards: int = 4, tokenizer: Optional[Tokenizer] = None):
        if not isinstance(global_batch_size, (int, np.integer)) or global_batch_size < 1:
            raise DataError(f"global_batch_size must be a positive integer, got {global_batch_size!r}")
        if not isinstance(unroll_steps, (int, np.integer)) or unroll_steps < 1:
            raise DataError(f"unroll_steps must be a positive integer, got {unroll_steps!r}")
        row_count = global_batch_size - row_start if row_count is None else row_count
        if not (0 <= row_start and 0 <= row_count and row_start + row_count <= global_batch_size):
            raise DataError(f"rows [{row_start}, {row_start + row_count}) are not inside the global batch "
                            f"of {global_batch_size} rows")
        if not isinstance(seed, (int, np.integer)) or seed < 0:
            raise DataError(f"seed must be a non-negative integer, got {seed!r}")
        if max_characters_per_token < 3:
            raise DataError(f"max_characters_per_token must be >= 3, got {max_characters_per_token}")
        self.global_batch_size, self.unroll_steps = int(global_batch_size), int(unroll_steps)
        self.row_start, self.row_count = int(row_start), int(row_count)
        self.seed, self.train, self.shuffle = int(seed), bool(train), bool(shuffle) and bool(train)
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
        self._perm_cache: collections.OrderedDict[tuple[int, int], np.ndarray] = collections.OrderedDict()
        self._order_cache: collections.OrderedDict[int, tuple[np.ndarray, np.ndarray]] = collections.OrderedDict()
        self._position = np.arange(self.global_batch_size, dtype=np.int64)  # [B] current sentence per row
        self._offset = np.zeros(self.global_batch_size, dtype=np.int64)  # [B] pairs of it already emitted
        self._batches = 0
        self._current: list[Optional[tuple[int, np.ndarray]]] = [None] * self.row_count

    # ------------------------------------------------------------------ pass 1: scan
    def _scan(self) -> None:
        """Per shard: sentence lengths and token counts; all distinct words."""
        self._lengths: list[np.ndarray] = []  # per shard: int32 [n_sentences] words per sentence
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
            self._lengths.append(np.asarray(lengths, np.int32))
        self.shard_sizes = np.array([len(x) for x in self._lengths], np.int64)  # [n_shards] sentences
        self.n_sentences = int(self.shard_sizes.sum())
        self.n_tokens = int(sum(int(x.sum()) for x in self._lengths))
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
            return  # encoded lazily, shard by shard, in _shard_ids
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
            if len(enc) != len(self._lengths[s]):
                raise DataError("corpus file changed while it was being read; run again", path)
            self._encoded.append(enc)

    def _shard_ids(self, s: int) -> tuple[np.ndarray, np.ndarray]:
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
        if len(offsets) - 1 != len(self._lengths[s]) or not np.array_equal(np.diff(offsets) - 2, self._lengths[s]):
            raise DataError("corpus file changed since it was scanned; restart", path)
        self._shard_cache[s] = (flat, offsets)
        while len(self._shard_cache) > self.max_cached_shards:
            self._shard_cache.popitem(last=False)
        return flat, offsets

    # ------------------------------------------------------------------ sentence order
    def _epoch_order(self, epoch: int) -> tuple[np.ndarray, np.ndarray]:
        """(shard order int [n_shards], cumulative sentence starts int64 [n_shards + 1]) of an epoch."""
        hit = self._order_cache.get(epoch)
        if hit is None:
            n = len(self.files)
            order = (np.random.default_rng([self.seed, 0, epoch]).permutation(n) if self.shuffle
                     else np.arange(n))
            starts = np.concatenate([[0], np.cumsum(self.shard_sizes[order])])
            hit = (order, starts)
            self._order_cache[epoch] = hit
            while len(self._order_cache) > 4:
                self._order_cache.popitem(last=False)
        return hit

    def _perm(self, epoch: int, shard: int) -> np.ndarray:
        key = (epoch, shard)
        hit = self._perm_cache.get(key)
        if hit is None:
            hit = np.random.default_rng([self.seed, 1, epoch, shard]).permutation(int(self.shard_sizes[shard]))
            self._perm_cache[key] = hit
            while len(self._perm_cache) > 2 * self.max_cached_shards:
                self._perm_cache.popitem(last=False)
        else:
            self._perm_cache.move_to_end(key)
        return hit

    def _locate(self, g: int) -> tuple[int, int]:
        """Shard and sentence index inside it of position g of the endless sentence sequence."""
        epoch, i = divmod(g, self.n_sentences)
        order, starts = self._epoch_order(epoch if self.shuffle else 0)
        k = int(np.searchsorted(starts, i, side="right")) - 1
        s, j = int(order[k]), i - int(starts[k])
        if self.shuffle:
            j = int(self._perm(epoch, s)[j])
        return s, j

    def _n_pairs(self, g: int) -> int:
        s, j = self._locate(g)
        return int(self._lengths[s][j]) + 1

    def _sentence(self, local: int, g: int) -> np.ndarray:
        """Input ids `[<S>, w1..wn, </S>]` (int32 [n + 2]) of position g, cached per host row."""
        cur = self._current[local]
        if cur is not None and cur[0] == g:
            return cur[1]
        s, j = self._locate(g)
        flat, offsets = self._shard_ids(s)
        sent = flat[offsets[j]:offsets[j + 1]]
        self._current[local] = (g, sent)
        return sent

    # ------------------------------------------------------------------ batches
    def __iter__(self) -> "Batcher":
        return self

    def __next__(self) -> Batch:
        B, T, N = self.global_batch_size, self.unroll_steps, self.n_sentences
        if not self.train and bool(np.all(self._position >= N)):
            raise StopIteration
        R, r0 = self.row_count, self.row_start
        pad = self.vocab.bos_id  # input id of <S> (input ids of vocab words are their vocab ids)
        fwd_in = np.full((R, T), pad, np.int32)  # input-table ids
        fwd_tg = np.full((R, T), pad, np.int32)
        bwd_in = np.full((R, T), pad, np.int32)
        bwd_tg = np.full((R, T), pad, np.int32)
        weights = np.zeros((R, T), np.float32)
        position, offset = self._position, self._offset
        for b in range(B):
            local = b - r0
            mine = 0 <= local < R
            g, o, t = int(position[b]), int(offset[b]), 0
            while t < T and (self.train or g < N):
                if mine:
                    sent = self._sentence(local, g)
                    n_pairs = len(sent) - 1
                    take = min(n_pairs - o, T - t)
                    fwd_in[local, t:t + take] = sent[o:o + take]
                    fwd_tg[local, t:t + take] = sent[o + 1:o + take + 1]
                    rev = sent[::-1]  # [</S>, wn..w1, <S>]
                    bwd_in[local, t:t + take] = rev[o:o + take]
                    bwd_tg[local, t:t + take] = rev[o + 1:o + take + 1]
                    weights[local, t:t + take] = 1.0
                else:
                    n_pairs = self._n_pairs(g)
                    take = min(n_pairs - o, T - t)
                t, o = t + take, o + take
                if o == n_pairs:
                    g, o = g + B, 0
            position[b], offset[b] = g, o
        self._batches += 1
        to_target = self.input_to_target
        return {
            "inputs_fwd": fwd_in, "inputs_bwd": bwd_in,
            "targets_fwd": to_target[fwd_tg], "targets_bwd": to_target[bwd_tg],
            "weights_fwd": weights, "weights_bwd": weights.copy(),
        }

    def iter_with_state(self) -> Iterator[tuple[Batch, State]]:
        """Yield `(batch, state after that batch)`: what a prefetching consumer must checkpoint."""
        while True:
            try:
                batch = next(self)
            except StopIteration:
                return
            yield batch, self.state()

    def prefetch(self, depth: int = 4) -> "BatchStream":
        """Produce batches in a background thread; see `BatchStream`."""
        return BatchStream(self, depth)

    # ------------------------------------------------------------------ state
    def state(self) -> State:
        """The data position after the last batch returned by `next` (NumPy arrays and ints).

        Identical on every host (all rows are tracked); restoring it continues exactly."""
        return {
            "version": STATE_VERSION,
            "seed": self.seed,
            "train": int(self.train),
            "shuffle": int(self.shuffle),
            "global_batch_size": self.global_batch_size,
            "n_sentences": self.n_sentences,
            "fingerprint": self.fingerprint,
            "batches": self._batches,
            "epochs_completed": int(math.floor(self.epoch)),
            "position": self._position.copy(),  # int64 [B] index of each row's current sentence
            "offset": self._offset.copy(),  # int64 [B] pairs of that sentence already emitted
        }

    def restore(self, state: State) -> None:
        """Continue from a `state()` (leaves may come back as 0-d arrays from a checkpoint)."""
        try:
            get = {k: state[k] for k in ("version", "seed", "train", "shuffle", "global_batch_size",
                                         "n_sentences", "fingerprint", "batches", "position", "offset")}
        except (KeyError, TypeError) as e:
            raise DataError(f"not a data position saved by this Batcher (missing {e})") from e
        scalar = {k: int(np.asarray(v)) for k, v in get.items() if k not in ("position", "offset")}
        if scalar["version"] != STATE_VERSION:
            raise DataError(f"data position version {scalar['version']} is not supported (expected {STATE_VERSION})")
        expected = {"seed": self.seed, "train": int(self.train), "shuffle": int(self.shuffle),
                    "global_batch_size": self.global_batch_size, "n_sentences": self.n_sentences,
                    "fingerprint": self.fingerprint}
        wrong = [f"{k} {scalar[k]} (now {v})" for k, v in expected.items() if scalar[k] != v]
        if wrong:
            what = ("the corpus or vocabulary changed" if any(w.split()[0] in ("n_sentences", "fingerprint")
                                                                for w in wrong) else "the data settings changed")
            raise DataError(f"the saved data position does not fit this run: {what}: saved " + ", ".join(wrong))
        position = np.asarray(get["position"]).astype(np.int64).reshape(-1)
        offset = np.asarray(get["offset"]).astype(np.int64).reshape(-1)
        B = self.global_batch_size
        if position.shape != (B,) or offset.shape != (B,) or (position % B != np.arange(B)).any() \
                or (offset < 0).any():
            raise DataError("the saved data position is malformed (positions must be row + k * batch size)")
        for b in range(B):
            if (self.train or position[b] < self.n_sentences) and offset[b] >= self._n_pairs(int(position[b])):
                raise DataError(f"the saved data position is malformed (row {b}: offset {offset[b]} is past "
                                "the end of its sentence)")
        self._position, self._offset = position.copy(), offset.copy()
        self._batches = scalar["batches"]
        self._current = [None] * self.row_count

    # ------------------------------------------------------------------ sizes
    @property
    def epoch(self) -> float:
        """Epochs of sentences consumed so far (sentences started by all rows / corpus sentences)."""
        started = (self._position - np.arange(self.global_batch_size)) // self.global_batch_size
        return float(started.sum()) / self.n_sentences

    @property
    def n_targets(self) -> int:
        """(input, target) pairs per direction in one pass over the data: tokens + sentences."""
        return self.n_tokens + self.n_sentences

    @property
    def steps_per_epoch(self) -> int:
        """Batches that emit as many targets as one pass over the data has."""
        return max(1, math.ceil(self.n_targets / (self.global_batch_size * self.unroll_steps)))

    @property
    def n_batches(self) -> Optional[int]:
        """Batches of a full evaluation pass (None when training: endless)."""
        if self.train:
            return None
        pairs = np.concatenate(self._lengths).astype(np.int64) + 1  # [N] in file order
        per_row = np.bincount(np.arange(self.n_sentences) % self.global_batch_size, weights=pairs,
                              minlength=self.global_batch_size)
        return int(math.ceil(per_row.max() / self.unroll_steps))

    @property
    def n_input_words(self) -> int:
        return len(self.input_words)

    def __repr__(self) -> str:
        return (f"Batcher({len(self.files)} files, {self.n_sentences} sentences, {self.n_tokens} tokens, "
                f"rows [{self.row_start}, {self.row_start + self.row_count}) of {self.global_batch_size}, "
                f"unroll {self.unroll_steps}, {'train' if self.train else 'eval'})")


class BatchStream:
    """A prefetched `Batcher`: `next()` gives batches; `state()` is the data position after the
    last batch the CONSUMER received (not the producer's, which runs ahead), i.e. what a
    checkpoint saved together with the train state after that batch's step must hold."""

    def __init__(self, batcher: Batcher, depth: int = 4):
        self.batcher = batcher
        self._state = batcher.state()
        self._prefetcher = Prefetcher(batcher.iter_with_state(), depth)

    def __iter__(self) -> "BatchStream":
        return self

    def __next__(self) -> Batch:
        batch, self._state = next(self._prefetcher)
        return batch

    def state(self) -> State:
        return self._state

    def close(self) -> None:
        self._prefetcher.close()

    def __enter__(self) -> "BatchStream":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
