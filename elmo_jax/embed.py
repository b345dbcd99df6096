"""`ElmoEmbedder`: sentences in, ELMo layers out (NumPy), fast and exact.

    embedder = ElmoEmbedder.from_files("options.json", "weights.hdf5")
    vectors = embedder.embed_sentences([["Hello", "world", "."], ["Hi"]])
    vectors[0].shape   # (L+1, 3, 2P) float32
    for s in embedder.embed_texts(["Hello, world!", "It wasn't me."]):   # raw text (elmo_jax.tokenize)
        s.tokens, s.vectors.shape   # ['Hello', ',', 'world', '!'], (L+1, 4, 2P)

How it is fast, each point measured (benchmarks/embed.py):
- Token vectors (char-CNN + highway + projection, most of the FLOPs) are context-free, so each
  distinct word is encoded once and kept in a bounded cache; batches then run only the LSTMs,
  from token vectors, as in bilm-tf's cached-token mode. The result equals the character path.
- Both directions run in one batched `lax.scan` per layer.
- Shapes are bucketed (rows: powers of two up to the batch size; time: a short fixed ladder;
  token-encoder calls: `elmo_jax.distinct`'s row and char-cut ladders), so jit compiles a bounded
  number of programs however many sentences come.
- Deterministic mode sorts sentences by length within a window of batches, so padding is small.
- `scan_unroll` (default 1, the fastest on a CPU) runs that many LSTM time steps per scan
  iteration; it changes the compiled loop, not the numbers. On an H200, unrolling the training
  window made the train step 1.08-1.12x faster; for embedding it has not been measured on a GPU.

Modes. Deterministic (default): every sentence starts from zero state, so its vectors do not
depend on its batch, row or padding. Stateful (`stateful=True`): as bilm-tf and AllenNLP, each
batch row keeps its LSTM state from the previous call (format.md section 3.9); batches are
consecutive input sentences in input order, never reordered.

Word-input biLMs (options without `char_cnn`) and char models with a word channel read words by
vocabulary id: pass their vocabulary (`vocab=`, `from_files(..., vocab_file=)`); words not in it
get `<UNK>`'s id, as bilm-tf's `TokenBatcher` does. A forward-only LM gives P-wide layers.
"""
from __future__ import annotations

import bisect
import collections
import os
from typing import Any, Iterable, Iterator, NamedTuple, Optional, Sequence, Union

import h5py
import jax
import jax.numpy as jnp
import numpy as np

from .chars import BOS_TOKEN, EOS_TOKEN, CharIdCache, check_sentences
from .distinct import SHIFTED_PADDING, char_cut_needs, distinct_words
from .errors import InputError, WeightsError
from .io_utils import atomic_output, read_lines
from .modules.bilm import BiLM
from .options import ModelOptions
from .tokenize import Tokenizer, split_text
from .vocab import Vocabulary
from .weights import Params, load_model

#: Padded sequence lengths (markers included). Longer rows round up to a multiple of 128.
TIME_BUCKETS = (8, 16, 24, 32, 48, 64, 96, 128)
#: Fewest and most words of a token-encoder call (rows and char cut: `elmo_jax.distinct`).
ENCODE_MIN_ROWS = 32
ENCODE_CHUNK = 512


class EmbeddedSentence(NamedTuple):
    """One sentence of a raw text and its ELMo vectors (`ElmoEmbedder.embed_texts`)."""

    text_index: int  # which input text the sentence comes from
    text: str  # the sentence's text (the whole input text unless sentences are split)
    tokens: list[str]  # its tokens, as the model saw them
    vectors: np.ndarray  # float32 [L+1, len(tokens), 2P]


def _time_bucket(length: int) -> int:
    i = bisect.bisect_left(TIME_BUCKETS, length)
    if i < len(TIME_BUCKETS):
        return TIME_BUCKETS[i]
    return -(-length // 128) * 128


def _row_bucket(rows: int, batch_size: int) -> int:
    bucket = 1
    while bucket < rows:
        bucket *= 2
    return min(bucket, max(batch_size, rows))


class ElmoEmbedder:
    """Embeds tokenized sentences with a pretrained biLM; see the module docstring."""

    def __init__(
        self,
        options: ModelOptions,
        params: Params,
        *,
        batch_size: int = 64,
        stateful: bool = False,
        dtype: Any = jnp.float32,
        cache_tokens: bool = True,
        token_cache_size: int = 100_000,
        hoist_input: bool = False,
        scan_unroll: int = 1,
        sort_window: int = 32,
        vocab: Optional[Vocabulary] = None,
    ):
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if scan_unroll < 1:
            raise ValueError(f"scan_unroll must be >= 1, got {scan_unroll}")
        if options.needs_vocab:
            if vocab is None:
                kind = "a word-input biLM" if not options.char_inputs else "a char biLM with a word channel"
                raise InputError(f"the options describe {kind}: it needs the vocabulary it was trained with "
                                 "(vocab=..., or --vocab vocab.txt on the command line)")
            options = options.with_vocab_size(len(vocab), vocab.source)
        self.vocab = vocab
        self.options = options
        self.batch_size = batch_size
        self.stateful = stateful
        self.dtype = jnp.dtype(dtype)
        self.cache_tokens = cache_tokens
        self.token_cache_size = token_cache_size
        self.sort_window = sort_window
        precision = jax.lax.Precision.HIGHEST if self.dtype == jnp.float32 else None
        self.model = BiLM(options, dtype=self.dtype, precision=precision, hoist_input=hoist_input,
                          scan_unroll=scan_unroll)
        self.params = jax.tree_util.tree_map(lambda x: jnp.asarray(x, jnp.float32), params.get("params", params))
        self._char_ids = CharIdCache(options.max_characters_per_token, shift=True)
        self.notes: list[str] = []  # weight-conversion notes (`from_files` fills them)
        model = self.model

        def encode(p, ids, word_ids):
            return model.apply({"params": p}, ids, word_ids=word_ids, method=BiLM.encode_tokens).astype(jnp.float32)

        def run_lstm(p, tokens, mask, state):
            out = model.apply({"params": p}, tokens, mask, state, method=BiLM.from_token_embeddings)
            return out["layers"].astype(jnp.float32), out["final_state"]

        def run_chars(p, ids, state, word_ids):
            out = model.apply({"params": p}, ids, state, word_ids=word_ids)
            return out["layers"].astype(jnp.float32), out["final_state"]

        self._encode = jax.jit(encode)
        self._run_lstm = jax.jit(run_lstm)
        self._run_chars = jax.jit(run_chars)
        self._token_index: dict[str, int] = {}
        self._token_table = np.zeros((0, options.projection_dim), np.float32)
        self.reset_states()

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_files(cls, options_file: os.PathLike | str, weight_file: os.PathLike | str,
                   vocab_file: Optional[os.PathLike | str] = None, **kwargs: Any) -> "ElmoEmbedder":
        """Load bilm-tf/AllenNLP `options.json` + `weights.hdf5` (conversion notes in `.notes`);
        `vocab_file` for a word-input model (or a word channel)."""
        return cls._with_notes(*load_model(options_file, weight_file), vocab_file=vocab_file, **kwargs)

    @classmethod
    def from_pretrained(cls, name: os.PathLike | str, *, verify: Optional[bool] = None,
                        offline: Optional[bool] = None, progress: bool = True, **kwargs: Any) -> "ElmoEmbedder":
        """Load a model by name: a published id (`small`, `medium`, `original`, `original-5.5b`,
        `pubmed`, `portuguese`), a URL, `hf://owner/repo`, or a directory with options.json +
        weights.hdf5; downloads are cached (`elmo_jax.hub`). `verify`: also check the cached
        files' sha256; `offline`: no network (default `$ELMO_JAX_OFFLINE`). Other keyword
        arguments go to the constructor (batch_size, stateful, dtype, vocab, ...)."""
        return cls._with_notes(*load_model(name, verify=verify, offline=offline, progress=progress), **kwargs)

    @classmethod
    def _with_notes(cls, options: ModelOptions, params: Params, notes: list[str],
                    vocab_file: Optional[os.PathLike | str] = None, **kwargs: Any) -> "ElmoEmbedder":
        if vocab_file is not None and "vocab" not in kwargs:
            kwargs["vocab"] = Vocabulary.from_file(vocab_file)
        embedder = cls(options, params, **kwargs)
        embedder.notes = notes
        return embedder

    # ------------------------------------------------------------------ state
    def reset_states(self) -> None:
        """Zero every row's carried LSTM state (stateful mode)."""
        opts = self.options
        p = opts.projection_dim if opts.has_lstm_projection else opts.lstm_dim
        self._state_h = np.zeros((opts.n_layers, opts.n_directions, 0, p), np.float32)
        self._state_c = np.zeros((opts.n_layers, opts.n_directions, 0, opts.lstm_dim), np.float32)

    def _initial_state(self, rows: int, padded_rows: int) -> dict[str, np.ndarray]:
        opts = self.options
        h = np.zeros(self._state_h.shape[:2] + (padded_rows, self._state_h.shape[3]), np.float32)
        c = np.zeros(self._state_c.shape[:2] + (padded_rows, opts.lstm_dim), np.float32)
        if self.stateful:
            have = min(rows, self._state_h.shape[2])
            h[:, :, :have] = self._state_h[:, :, :have]
            c[:, :, :have] = self._state_c[:, :, :have]
        return {"h": h, "c": c}

    def _store_state(self, final_state: dict, rows: int) -> None:
        """Row r's final state becomes row r's stored state; rows beyond `rows` keep theirs."""
        h, c = np.asarray(final_state["h"]), np.asarray(final_state["c"])
        if self._state_h.shape[2] < rows:
            grow = rows - self._state_h.shape[2]
            self._state_h = np.concatenate([self._state_h, np.zeros_like(h[:, :, :grow])], axis=2)
            self._state_c = np.concatenate([self._state_c, np.zeros_like(c[:, :, :grow])], axis=2)
        self._state_h[:, :, :rows] = h[:, :, :rows]
        self._state_c[:, :, :rows] = c[:, :, :rows]

    # ------------------------------------------------------------------ token vectors
    def _word_ids(self, words: Sequence[str]) -> np.ndarray:
        """Shifted vocabulary ids (index + 1; OOV -> <UNK>) int32 [len(words)]."""
        return np.fromiter((self.vocab.word_to_id(w) + 1 for w in words), np.int32, len(words))

    def _encode_chars(self, ids: np.ndarray, word_ids: Optional[np.ndarray] = None) -> np.ndarray:
        """Token vectors [N, P] of shifted char ids [N, C] (and word-channel ids [N]), in bucketed calls.

        Each call encodes distinct words with the char axis cut to what they need (exact, see
        `elmo_jax.distinct`). Words are sorted by that need so that most chunks use a short cut
        (English words: 16-24 of 50)."""
        opts = self.options
        need = char_cut_needs(ids, max(w for w, _ in opts.filters), SHIFTED_PADDING)
        order = np.argsort(need, kind="stable")
        out = np.empty((len(ids), opts.projection_dim), np.float32)
        for start in range(0, len(ids), ENCODE_CHUNK):
            idx = order[start:start + ENCODE_CHUNK]
            chars, inverse, _ = distinct_words(idx, ids, need, min_rows=ENCODE_MIN_ROWS)
            wids = None
            if word_ids is not None:  # rows of `chars` are the sorted idx, then padding
                wids = np.zeros(len(chars), np.int32)
                wids[:len(idx)] = word_ids[np.sort(idx)]
            out[idx] = np.asarray(self._encode(self.params, chars, wids))[inverse]
        return out

    def token_embeddings(self, words: Sequence[str]) -> np.ndarray:
        """Context-free token vectors [len(words), P] ("layer 0", one direction). `<S>`/`</S>` give
        the sentence-marker vectors."""
        words = check_sentences([list(words)])[0]
        if not words:
            return np.zeros((0, self.options.projection_dim), np.float32)
        if not self.options.char_inputs:  # a row of the word embedding (exact: no compute)
            return np.asarray(self.params["token_encoder"]["embedding"], np.float32)[self._word_ids(words) - 1]
        word_ids = self._word_ids(words) if self.options.word_channel_dim else None
        return self._encode_chars(np.stack([self._char_ids(w) for w in words]), word_ids)

    def _cached_rows(self, words: Iterable[str]) -> None:
        """Make sure every word has a row in the token cache (encoding the missing ones)."""
        missing = [w for w in dict.fromkeys(words) if w not in self._token_index]
        if not missing:
            return
        if len(self._token_index) + len(missing) > max(self.token_cache_size, len(missing)):
            self._token_index.clear()  # bounded memory: start over (the current batch is re-added)
            missing = list(dict.fromkeys(words))
            self._token_table = self._token_table[:0]
        vectors = self.token_embeddings(missing)
        base = len(self._token_table)
        self._token_table = np.concatenate([self._token_table, vectors]) if base else vectors
        for k, w in enumerate(missing):
            self._token_index[w] = base + k

    # ------------------------------------------------------------------ batches
    def _run_batch(self, sentences: list[list[str]]):
        """Dispatch one batch; returns (layers on device [L+1, B', T', 2P], lengths)."""
        rows = len(sentences)
        lengths = np.array([len(s) + 2 for s in sentences], np.int32)
        padded_rows = _row_bucket(rows, self.batch_size)
        width = _time_bucket(int(lengths.max()))
        mask = np.arange(width)[None, :] < np.pad(lengths, (0, padded_rows - rows))[:, None]
        state = self._initial_state(rows, padded_rows)
        if self.cache_tokens:
            rows_of = [[BOS_TOKEN, *s, EOS_TOKEN] for s in sentences]
            self._cached_rows(w for row in rows_of for w in row)
            index = np.zeros((padded_rows, width), np.int64)
            for b, row in enumerate(rows_of):
                index[b, : len(row)] = [self._token_index[w] for w in row]
            tokens = self._token_table[index]  # [B', T', P]; padding rows are masked out
            layers, final = self._run_lstm(self.params, tokens, mask, state)
        else:
            word_ids = np.zeros((padded_rows, width), np.int32) if self.options.needs_vocab else None
            if word_ids is not None:
                for b, s in enumerate(sentences):
                    word_ids[b, :len(s) + 2] = self._word_ids([BOS_TOKEN, *s, EOS_TOKEN])
            if self.options.char_inputs:
                ids = np.zeros((padded_rows, width, self.options.max_characters_per_token), np.int32)
                for b, s in enumerate(sentences):
                    for t, w in enumerate([BOS_TOKEN, *s, EOS_TOKEN]):
                        ids[b, t] = self._char_ids(w)
            else:
                ids, word_ids = word_ids, None
            layers, final = self._run_chars(self.params, ids, state, word_ids)
        if self.stateful:
            self._store_state(final, rows)
        return layers, lengths

    def embed_batch(self, sentences: Sequence[Sequence[str]]) -> tuple[np.ndarray, np.ndarray]:
        """One batch, as bilm-tf's `lm_embeddings`: (float32 [L+1, B, n_max, 2P] markers removed
        and zero past each sentence, bool mask [B, n_max]). In stateful mode row r continues row r."""
        sentences = check_sentences(sentences)
        if not sentences:
            return (np.zeros((self.options.n_output_layers, 0, 0, self.options.output_dim), np.float32),
                    np.zeros((0, 0), bool))
        layers, lengths = self._run_batch(sentences)
        n_max = int(lengths.max()) - 2
        out = np.array(layers[:, : len(sentences), 1:1 + n_max])
        mask = np.arange(n_max)[None, :] < (lengths[:, None] - 2)
        out *= mask[None, :, :, None]
        return out, mask

    def iter_embeddings(self, sentences: Iterable[Sequence[str]],
                        batch_size: Optional[int] = None) -> Iterator[tuple[int, np.ndarray]]:
        """Stream `(index, float32 [L+1, n_tokens, 2P])` for each input sentence, in input order.

        Memory stays bounded (a window of `sort_window` batches) for any number of sentences."""
        batch_size = batch_size or self.batch_size
        window = batch_size if self.stateful else batch_size * self.sort_window
        buffer: list[list[str]] = []
        offset = 0
        for sentence in sentences:
            buffer.append(sentence)
            if len(buffer) == window:
                yield from self._embed_window(buffer, offset, batch_size)
                offset += len(buffer)
                buffer = []
        if buffer:
            yield from self._embed_window(buffer, offset, batch_size)

    def _embed_window(self, window: list, offset: int, batch_size: int) -> Iterator[tuple[int, np.ndarray]]:
        window = check_sentences(window)
        if self.stateful:
            order = np.arange(len(window))  # consecutive sentences, never reordered
        else:
            order = np.argsort([len(s) for s in window], kind="stable")
        results: list[Optional[np.ndarray]] = [None] * len(window)
        pending = None
        for start in range(0, len(window), batch_size):
            idx = order[start:start + batch_size]
            dispatched = self._run_batch([window[i] for i in idx])  # async: overlaps the copy below
            if pending is not None:
                self._collect(pending, results)
            pending = (idx, dispatched)
        if pending is not None:
            self._collect(pending, results)
        for i, vectors in enumerate(results):
            yield offset + i, vectors

    @staticmethod
    def _collect(pending, results: list) -> None:
        idx, (layers, lengths) = pending
        host = np.asarray(layers)
        for b, i in enumerate(idx):
            results[i] = np.array(host[:, b, 1:lengths[b] - 1])

    def embed_sentences(self, sentences: Sequence[Sequence[str]],
                        batch_size: Optional[int] = None) -> list[np.ndarray]:
        """One float32 array (L+1, n_tokens, 2P) per sentence, in input order."""
        return [v for _, v in self.iter_embeddings(check_sentences(sentences), batch_size)]

    def embed_sentence(self, sentence: Sequence[str]) -> np.ndarray:
        """(L+1, n_tokens, 2P) for one tokenized sentence."""
        return self.embed_sentences([sentence])[0]

    # ------------------------------------------------------------------ raw text
    def iter_text_embeddings(self, texts: Iterable[str], tokenizer: Optional[Tokenizer],
                             batch_size: Optional[int] = None) -> Iterator[EmbeddedSentence]:
        """Stream an `EmbeddedSentence` per sentence of raw `texts`, in input order (memory bounded
        as in `iter_embeddings`). `tokenizer` None: the texts are whitespace-tokenized already."""
        pending: collections.deque[tuple[int, str, list[str]]] = collections.deque()

        def sentences() -> Iterator[list[str]]:
            for i, text in enumerate(texts):
                if not isinstance(text, str):
                    raise InputError(f"text {i} is a {type(text).__name__}, expected a str "
                                     "(embed_sentences takes lists of tokens)")
                for sentence, tokens in split_text(text, tokenizer):
                    pending.append((i, sentence, tokens))
                    yield tokens

        for _, vectors in self.iter_embeddings(sentences(), batch_size):
            yield EmbeddedSentence(*pending.popleft(), vectors)

    def embed_texts(self, texts: Sequence[str], tokenizer: Union[Tokenizer, str] = "moses",
                    batch_size: Optional[int] = None) -> list[EmbeddedSentence]:
        """Raw (untokenized) texts -> per sentence its tokens and vectors [L+1, n_tokens, 2P].

        `tokenizer`: a name of `elmo_jax.tokenize.TOKENIZERS` ("moses", the default, splits as the
        published models' training text was split) or a `Tokenizer`; with
        `Tokenizer(split_sentences=True)` a text may give several sentences (`text_index` says
        which text), else each text is one sentence."""
        if isinstance(texts, str):
            raise InputError("embed_texts takes a list of texts, got one str (wrap it in a list)")
        tok = Tokenizer(tokenizer) if isinstance(tokenizer, str) else tokenizer
        return list(self.iter_text_embeddings(texts, tok, batch_size))

    # ------------------------------------------------------------------ cached vocabularies
    def preload_token_embeddings(self, words: Sequence[str], vectors: np.ndarray) -> None:
        """Seed the token cache with precomputed vectors (e.g. a `dump_token_embeddings` file, see
        `read_token_embeddings`), so those words skip the char-CNN; other words still use it."""
        vectors = np.asarray(vectors, np.float32)
        if vectors.shape != (len(words), self.options.projection_dim):
            raise ValueError(f"vectors have shape {vectors.shape}, expected "
                             f"({len(words)}, {self.options.projection_dim})")
        self._token_index = {w: i for i, w in enumerate(words)}
        self._token_table = vectors.copy()
        self.token_cache_size = max(self.token_cache_size, 2 * len(words))

    def token_embedding_table(self, vocab: Sequence[str]) -> np.ndarray:
        """[len(vocab) + 1, P] with a zero row 0: the table `Elmo(vocab_size=...)` takes for
        `token_ids` (id = vocab index + 1), as bilm-tf's cached-token mode loads it."""
        vectors = self.token_embeddings(list(vocab))
        return np.concatenate([np.zeros((1, self.options.projection_dim), np.float32), vectors])


def dump_token_embeddings(options_file: os.PathLike | str, weight_file: os.PathLike | str,
                          vocab_file: os.PathLike | str, output_file: os.PathLike | str) -> int:
    """bilm-tf's `dump_token_embeddings`: hdf5 with dataset `embedding` [n_vocab, P], row v = the
    token vector of vocab line v+1 (`<S>`/`</S>` as markers). Returns the vocab size."""
    vocab = []
    for lineno, line in enumerate(read_lines(vocab_file), start=1):
        if not line.strip():  # row v of the output is line v+1: a blank line would shift the rows after it
            raise InputError(f"line {lineno} is blank: the output has one row per vocabulary line", vocab_file)
        vocab.append(line.strip())
    if not vocab:
        raise InputError("vocabulary file is empty", vocab_file)
    options = ModelOptions.from_json(options_file)
    embedder = ElmoEmbedder.from_files(options_file, weight_file, vocab_file if options.needs_vocab else None)
    table = embedder.token_embeddings(vocab)
    with atomic_output(output_file, suffix=".hdf5.tmp") as tmp:
        with h5py.File(tmp, "w") as f:
            f.create_dataset("embedding", data=table, dtype="float32")
    return len(vocab)


def read_token_embeddings(embedding_file: os.PathLike | str, vocab_file: os.PathLike | str,
                          expected_dim: Optional[int] = None) -> tuple[list[str], np.ndarray]:
    """Read a `dump_token_embeddings` hdf5 and its vocabulary: (words, float32 [n_vocab, P])."""
    words = [w for w in (line.strip() for line in read_lines(vocab_file)) if w]
    path = os.fspath(embedding_file)
    if not os.path.exists(path):
        raise WeightsError("token embedding file not found", path)
    if os.path.isdir(path):
        raise WeightsError("is a directory, expected an HDF5 file", path)
    try:
        with h5py.File(path, "r") as f:
            if "embedding" not in f:
                raise WeightsError("missing dataset 'embedding'", path)
            table = np.asarray(f["embedding"][()], np.float32)
    except OSError as e:
        raise WeightsError(f"not a readable HDF5 file ({' '.join(str(e).split())})", path)
    if table.ndim != 2 or table.shape[0] != len(words):
        raise InputError(f"dataset 'embedding' has shape {table.shape}, expected ({len(words)}, P) "
                         f"for the {len(words)} words of {os.fspath(vocab_file)}", path)
    if expected_dim is not None and table.shape[1] != expected_dim:
        raise WeightsError(f"dataset 'embedding' has width {table.shape[1]}, the model's projection "
                           f"is {expected_dim}", path)
    return words, table
