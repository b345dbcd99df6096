"""Model options in the bilm-tf `options.json` schema, read and written as is.

`ModelOptions` holds the keys the model reads (see `../shared/docs/format.md`, section 1); any
other key of the file (bilm-tf's training keys such as `n_epochs`, `unroll_steps`, `dropout`,
...) is kept verbatim in `extra` and written back unchanged.

Model kinds, as bilm-tf decides them:
- character input when the file has a `char_cnn` section, else **word input**: a token embedding
  `embedding` [n_tokens_vocab, P] looked up by vocabulary id (`share_embedding_softmax` ties it
  to the softmax weights; bilm-tf refuses that with characters);
- `bidirectional` (bilm-tf training's default is false; inference files of the published models
  have no such key and are bidirectional, so a missing key means true here);
- elmo-jax extension: `char_cnn.word_channel_dim` > 0 adds a word-vector channel (a table
  [n_tokens_vocab, D_w]) concatenated before the char-CNN output ahead of the projection, as
  ELMoForManyLangs' token embedder does.
"""
from __future__ import annotations

import copy
import dataclasses
import json
import os
from typing import Any, Optional

from .errors import OptionsError
from .io_utils import atomic_write_text

#: Rows of the char table at inference (ids shifted by +1, row 0 = "no token").
INFERENCE_N_CHARACTERS = 262
#: Rows of the char table as stored and as used for training (unshifted raw ids).
TRAINING_N_CHARACTERS = 261

_ACTIVATIONS = ("relu", "tanh")


@dataclasses.dataclass(frozen=True)
class ModelOptions:
    """The shape of a biLM: char-CNN, highway, projection and the LSTM stacks.

    Attributes mirror `options.json` (`char_cnn.*`, `lstm.*`)."""

    char_embed_dim: int = 16  # char_cnn.embedding.dim (D)
    filters: tuple[tuple[int, int], ...] = (
        (1, 32), (2, 32), (3, 64), (4, 128), (5, 256), (6, 512), (7, 1024))  # (width, count)
    n_highway: int = 1  # char_cnn.n_highway
    n_characters: int = INFERENCE_N_CHARACTERS  # 261 (training) or 262 (inference)
    max_characters_per_token: int = 50  # C
    activation: str = "relu"  # char-CNN activation after max-pooling
    lstm_dim: int = 1024  # lstm.dim (H, cell size)
    projection_dim: int = 128  # lstm.projection_dim (P)
    n_layers: int = 2  # lstm.n_layers (L)
    cell_clip: Optional[float] = 3.0  # None = no clip
    proj_clip: Optional[float] = 3.0  # None = no clip
    use_skip_connections: bool = True  # residual around layers >= 1
    char_inputs: bool = True  # False: a word-input biLM (options.json without `char_cnn`)
    n_tokens_vocab: Optional[int] = None  # rows of the word embedding / word channel (None: from the vocab)
    bidirectional: bool = True  # False: only the forward LM (bilm-tf `bidirectional: false`)
    share_embedding_softmax: bool = False  # word input: the softmax weights are the token embedding
    word_channel_dim: int = 0  # char input: width of an extra word-vector channel (0 = none)
    extra: dict = dataclasses.field(default_factory=dict, compare=False)  # other keys, verbatim

    # ---------------------------------------------------------------- derived sizes
    @property
    def n_filters(self) -> int:
        """F: width of the char-CNN output (sum of filter counts)."""
        return sum(n for _, n in self.filters)

    @property
    def token_features(self) -> int:
        """Width before the token projection: F, plus the word channel's D_w."""
        return self.n_filters + self.word_channel_dim

    @property
    def has_token_projection(self) -> bool:
        """bilm-tf builds `CNN_proj` only when F != P (char input; with a word channel F + D_w)."""
        return self.char_inputs and self.token_features != self.projection_dim

    @property
    def n_directions(self) -> int:
        """2 for a biLM, 1 for a forward-only LM."""
        return 2 if self.bidirectional else 1

    @property
    def needs_vocab(self) -> bool:
        """Word input or a word channel: inputs need vocabulary ids."""
        return not self.char_inputs or self.word_channel_dim > 0

    @property
    def has_lstm_projection(self) -> bool:
        """bilm-tf builds the LSTM output projection only when P < H."""
        return self.projection_dim < self.lstm_dim

    @property
    def output_dim(self) -> int:
        """2P: width of every ELMo layer ([forward; backward]); P for a forward-only LM."""
        return self.n_directions * self.projection_dim

    @property
    def n_output_layers(self) -> int:
        """L + 1: the token layer plus one per LSTM layer."""
        return self.n_layers + 1

    def replace(self, **changes: Any) -> "ModelOptions":
        return dataclasses.replace(self, **changes)

    # ---------------------------------------------------------------- validation
    def validate(self, source: Optional[str] = None) -> "ModelOptions":
        """Raise `OptionsError` (naming `source` and the key) if the options cannot describe a biLM."""

        def bad(key: str, why: str) -> OptionsError:
            return OptionsError(f"option '{key}' {why}", source)

        def positive_int(key: str, value: Any) -> None:
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise bad(key, f"must be a positive integer, got {value!r}")

        positive_int("lstm.dim", self.lstm_dim)
        positive_int("lstm.projection_dim", self.projection_dim)
        positive_int("lstm.n_layers", self.n_layers)
        for key, flag in (("bidirectional", self.bidirectional),
                          ("share_embedding_softmax", self.share_embedding_softmax)):
            if not isinstance(flag, bool):
                raise bad(key, f"must be true or false, got {flag!r}")
        if self.n_tokens_vocab is not None:
            positive_int("n_tokens_vocab", self.n_tokens_vocab)
        if self.char_inputs and self.share_embedding_softmax:
            raise bad("share_embedding_softmax", "needs word input: bilm-tf cannot share the softmax with a "
                      "character model (remove 'char_cnn' or set share_embedding_softmax false)")
        if self.projection_dim > self.lstm_dim:
            raise bad("lstm.projection_dim",
                      f"({self.projection_dim}) must not exceed lstm.dim ({self.lstm_dim})")
        if not isinstance(self.use_skip_connections, bool):
            raise bad("lstm.use_skip_connections", f"must be true or false, got {self.use_skip_connections!r}")
        for key, clip in (("lstm.cell_clip", self.cell_clip), ("lstm.proj_clip", self.proj_clip)):
            if clip is not None and (isinstance(clip, bool) or not isinstance(clip, (int, float)) or clip <= 0):
                raise bad(key, f"must be a positive number or null, got {clip!r}")
        if not self.char_inputs:
            if self.word_channel_dim:
                raise bad("char_cnn.word_channel_dim", "is a channel of the char-CNN; a word-input model has none")
            return self
        positive_int("char_cnn.embedding.dim", self.char_embed_dim)
        positive_int("char_cnn.max_characters_per_token", self.max_characters_per_token)
        if (not isinstance(self.word_channel_dim, int) or isinstance(self.word_channel_dim, bool)
                or self.word_channel_dim < 0):
            raise bad("char_cnn.word_channel_dim", f"must be an integer >= 0, got {self.word_channel_dim!r}")
        if not isinstance(self.n_highway, int) or isinstance(self.n_highway, bool) or self.n_highway < 0:
            raise bad("char_cnn.n_highway", f"must be an integer >= 0, got {self.n_highway!r}")
        if self.n_characters not in (TRAINING_N_CHARACTERS, INFERENCE_N_CHARACTERS):
            raise bad("char_cnn.n_characters",
                      f"must be 261 (training) or 262 (inference), got {self.n_characters!r}")
        if self.max_characters_per_token < 3:
            raise bad("char_cnn.max_characters_per_token", "must be at least 3 (BOW, a byte, EOW)")
        if self.activation not in _ACTIVATIONS:
            raise bad("char_cnn.activation", f"must be one of {_ACTIVATIONS}, got {self.activation!r}")
        if not self.filters:
            raise bad("char_cnn.filters", "must list at least one [width, count] pair")
        for k, pair in enumerate(self.filters):
            if (len(pair) != 2 or not all(isinstance(v, int) and not isinstance(v, bool) and v > 0
                                          for v in pair)):
                raise bad(f"char_cnn.filters[{k}]", f"must be [width, count] positive integers, got {pair!r}")
            if pair[0] > self.max_characters_per_token:
                raise bad(f"char_cnn.filters[{k}]",
                          f"width {pair[0]} exceeds max_characters_per_token {self.max_characters_per_token}")
        return self

    # ---------------------------------------------------------------- JSON
    @classmethod
    def optional_keys(cls) -> dict:
        """The keys `from_dict` reads that `to_dict` leaves out at their defaults, with those defaults
        (so that `--set model.bidirectional=false` is a known key of a config that omits it)."""
        return {"n_tokens_vocab": None, "bidirectional": True, "share_embedding_softmax": False,
                "char_cnn": {"word_channel_dim": 0}}

    #: The keys each section of options.json may hold (bilm-tf's and elmo-jax's); the top level
    #: may hold others (bilm-tf's training hyper-parameters), kept as they are.
    SECTION_KEYS = {"lstm": ("dim", "projection_dim", "n_layers", "cell_clip", "proj_clip", "use_skip_connections"),
                    "char_cnn": ("embedding", "filters", "n_highway", "n_characters", "max_characters_per_token",
                                 "activation", "word_channel_dim"),
                    "char_cnn.embedding": ("dim",)}

    @classmethod
    def unknown_section_keys(cls, data: Any) -> list[tuple[str, tuple[str, ...]]]:
        """(dotted key, that section's known keys) of every key in `data`'s lstm / char_cnn sections
        that no reader uses (a misspelt option, silently ignored otherwise)."""
        found = []
        for section, known in cls.SECTION_KEYS.items():
            node = data
            for part in section.split("."):
                node = node.get(part) if isinstance(node, dict) else None
            if isinstance(node, dict):
                found += [(f"{section}.{key}", known) for key in node if key not in known]
        return found

    def to_dict(self) -> dict:
        """The bilm-tf `options.json` dictionary (extra keys included, unchanged)."""
        out = copy.deepcopy(self.extra)
        lstm = dict(out.get("lstm", {}))
        lstm.update(
            dim=self.lstm_dim,
            projection_dim=self.projection_dim,
            n_layers=self.n_layers,
            cell_clip=self.cell_clip,
            proj_clip=self.proj_clip,
            use_skip_connections=self.use_skip_connections,
        )
        out["lstm"] = lstm
        if self.n_tokens_vocab is not None:
            out["n_tokens_vocab"] = self.n_tokens_vocab
        if not self.bidirectional or "bidirectional" in out:
            out["bidirectional"] = self.bidirectional
        if self.share_embedding_softmax or "share_embedding_softmax" in out:
            out["share_embedding_softmax"] = self.share_embedding_softmax
        if not self.char_inputs:
            out.pop("char_cnn", None)  # bilm-tf: no char_cnn section = word input
            return out
        char_cnn = dict(out.get("char_cnn", {}))
        embedding = dict(char_cnn.get("embedding", {}))
        embedding["dim"] = self.char_embed_dim
        char_cnn.update(
            embedding=embedding,
            filters=[list(p) for p in self.filters],
            n_highway=self.n_highway,
            n_characters=self.n_characters,
            max_characters_per_token=self.max_characters_per_token,
            activation=self.activation,
        )
        if self.word_channel_dim:
            char_cnn["word_channel_dim"] = self.word_channel_dim
        else:
            char_cnn.pop("word_channel_dim", None)
        out["char_cnn"] = char_cnn
        return out

    @classmethod
    def from_dict(cls, data: Any, source: Optional[str] = None) -> "ModelOptions":
        """Parse an `options.json` dictionary; missing required keys are an error naming them."""
        if not isinstance(data, dict):
            raise OptionsError(f"expected a JSON object at the top level, got {type(data).__name__}", source)
        if "lstm" not in data and isinstance(data.get("model"), dict):
            data = data["model"]  # an elmo-jax training config: its model section is an options.json
        if not isinstance(data.get("lstm"), dict):
            raise OptionsError("missing or non-object section 'lstm'", source)
        if "char_cnn" in data and not isinstance(data["char_cnn"], dict):
            raise OptionsError("section 'char_cnn' must be an object (omit it for a word-input biLM)", source)
        ls = data["lstm"]

        def need(section: dict, name: str, key: str) -> Any:
            if key not in section:
                raise OptionsError(f"missing required option '{name}.{key}'", source)
            return section[key]

        extra = {k: v for k, v in data.items()}
        common = dict(
            lstm_dim=need(ls, "lstm", "dim"),
            projection_dim=need(ls, "lstm", "projection_dim"),
            n_layers=need(ls, "lstm", "n_layers"),
            cell_clip=ls.get("cell_clip"),
            proj_clip=ls.get("proj_clip"),
            use_skip_connections=ls.get("use_skip_connections", False),
            n_tokens_vocab=data.get("n_tokens_vocab"),
            bidirectional=data.get("bidirectional", True),
            share_embedding_softmax=data.get("share_embedding_softmax", False),
            extra=extra,
        )
        if "char_cnn" not in data:
            return cls(char_inputs=False, **common).validate(source)
        cc = data["char_cnn"]

        emb = cc.get("embedding")
        if not isinstance(emb, dict) or "dim" not in emb:
            raise OptionsError("missing required option 'char_cnn.embedding.dim'", source)
        filters = need(cc, "char_cnn", "filters")
        if not isinstance(filters, (list, tuple)):
            raise OptionsError(f"option 'char_cnn.filters' must be a list of [width, count], got {filters!r}", source)
        try:
            filters_t = tuple(tuple(p) for p in filters)
        except TypeError:
            raise OptionsError(f"option 'char_cnn.filters' must be a list of [width, count], got {filters!r}", source)
        n_highway = cc.get("n_highway") or 0  # bilm-tf: missing/0/null = no highway
        opts = cls(
            char_embed_dim=emb["dim"],
            filters=filters_t,
            n_highway=n_highway,
            n_characters=cc.get("n_characters", INFERENCE_N_CHARACTERS),
            max_characters_per_token=need(cc, "char_cnn", "max_characters_per_token"),
            activation=need(cc, "char_cnn", "activation"),
            word_channel_dim=cc.get("word_channel_dim", 0),
            **common,
        )
        return opts.validate(source)

    @classmethod
    def from_json(cls, path: os.PathLike | str) -> "ModelOptions":
        """Read a bilm-tf `options.json` file."""
        path = os.fspath(path)
        try:
            with open(path, "rb") as fh:
                raw = fh.read()
        except FileNotFoundError:
            raise OptionsError("options file not found", path)
        except OSError as e:
            raise OptionsError(f"cannot read options file ({e.strerror})", path)
        try:
            data = json.loads(raw.decode("utf-8"))
        except UnicodeDecodeError as e:
            raise OptionsError(f"not UTF-8 text (byte {e.start})", path)
        except json.JSONDecodeError as e:
            raise OptionsError(f"malformed JSON: {e.msg} at line {e.lineno} column {e.colno}", path)
        return cls.from_dict(data, source=path)

    def to_json(self, path: os.PathLike | str) -> None:
        """Write an `options.json` that bilm-tf and AllenNLP read."""
        atomic_write_text(path, json.dumps(self.to_dict(), indent=2) + "\n")

    def with_vocab_size(self, n_words: int, vocab_source: Optional[str] = None) -> "ModelOptions":
        """Check a vocabulary of `n_words` against `n_tokens_vocab`, and fill that in, where a word
        table needs it (bilm-tf sets it to the vocabulary size). A char model without a word
        channel has no such table (its softmax takes the vocabulary's size): nothing to check."""
        if not self.needs_vocab:
            return self
        if self.n_tokens_vocab is not None and n_words > self.n_tokens_vocab:
            raise OptionsError(f"option 'n_tokens_vocab' ({self.n_tokens_vocab}) is smaller than the vocabulary "
                               f"({n_words} words{' in ' + vocab_source if vocab_source else ''}); raise it or "
                               "remove it (it is then the vocabulary size)")
        if self.n_tokens_vocab is None:
            return self.replace(n_tokens_vocab=n_words)
        return self

    def for_inference(self) -> "ModelOptions":
        """The same options with `n_characters` 262, as bilm-tf inference requires."""
        return self.replace(n_characters=INFERENCE_N_CHARACTERS)

    def for_training(self) -> "ModelOptions":
        """The same options with `n_characters` 261, as bilm-tf training requires."""
        return self.replace(n_characters=TRAINING_N_CHARACTERS)


def small_options() -> ModelOptions:
    """AllenNLP's 2x1024_128_2048cnn_1xhighway shape."""
    return ModelOptions()


def original_options() -> ModelOptions:
    """AllenNLP's 2x4096_512_2048cnn_2xhighway shape (the paper's model)."""
    return ModelOptions(n_highway=2, lstm_dim=4096, projection_dim=512)
