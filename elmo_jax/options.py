"""Model options in the bilm-tf `options.json` schema, read and written as is.

`ModelOptions` holds the keys the model reads (see `../shared/docs/format.md`, section 1); any
other key of the file (bilm-tf's training keys such as `n_epochs`, `unroll_steps`, `dropout`,
`n_tokens_vocab`, ...) is kept verbatim in `extra` and written back unchanged.
"""
from __future__ import annotations

import copy
import dataclasses
import json
import os
from typing import Any, Optional

from .errors import OptionsError

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
    extra: dict = dataclasses.field(default_factory=dict, compare=False)  # other keys, verbatim

    # ---------------------------------------------------------------- derived sizes
    @property
    def n_filters(self) -> int:
        """F: width of the char-CNN output (sum of filter counts)."""
        return sum(n for _, n in self.filters)

    @property
    def has_token_projection(self) -> bool:
        """bilm-tf builds `CNN_proj` only when F != P."""
        return self.n_filters != self.projection_dim

    @property
    def has_lstm_projection(self) -> bool:
        """bilm-tf builds the LSTM output projection only when P < H."""
        return self.projection_dim < self.lstm_dim

    @property
    def output_dim(self) -> int:
        """2P: width of every ELMo layer ([forward; backward])."""
        return 2 * self.projection_dim

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

        positive_int("char_cnn.embedding.dim", self.char_embed_dim)
        positive_int("char_cnn.max_characters_per_token", self.max_characters_per_token)
        positive_int("lstm.dim", self.lstm_dim)
        positive_int("lstm.projection_dim", self.projection_dim)
        positive_int("lstm.n_layers", self.n_layers)
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
        for key, clip in (("lstm.cell_clip", self.cell_clip), ("lstm.proj_clip", self.proj_clip)):
            if clip is not None and (isinstance(clip, bool) or not isinstance(clip, (int, float)) or clip <= 0):
                raise bad(key, f"must be a positive number or null, got {clip!r}")
        if self.projection_dim > self.lstm_dim:
            raise bad("lstm.projection_dim",
                      f"({self.projection_dim}) must not exceed lstm.dim ({self.lstm_dim})")
        if not isinstance(self.use_skip_connections, bool):
            raise bad("lstm.use_skip_connections", f"must be true or false, got {self.use_skip_connections!r}")
        return self

    # ---------------------------------------------------------------- JSON
    def to_dict(self) -> dict:
        """The bilm-tf `options.json` dictionary (extra keys included, unchanged)."""
        out = copy.deepcopy(self.extra)
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
        lstm = dict(out.get("lstm", {}))
        lstm.update(
            dim=self.lstm_dim,
            projection_dim=self.projection_dim,
            n_layers=self.n_layers,
            cell_clip=self.cell_clip,
            proj_clip=self.proj_clip,
            use_skip_connections=self.use_skip_connections,
        )
        out["char_cnn"] = char_cnn
        out["lstm"] = lstm
        return out

    @classmethod
    def from_dict(cls, data: Any, source: Optional[str] = None) -> "ModelOptions":
        """Parse an `options.json` dictionary; missing required keys are an error naming them."""
        if not isinstance(data, dict):
            raise OptionsError(f"expected a JSON object at the top level, got {type(data).__name__}", source)
        if "char_cnn" not in data and isinstance(data.get("model"), dict):
            data = data["model"]  # an elmo-jax training config: its model section is an options.json
        for section in ("char_cnn", "lstm"):
            if not isinstance(data.get(section), dict):
                raise OptionsError(f"missing or non-object section '{section}'", source)
        cc, ls = data["char_cnn"], data["lstm"]

        def need(section: dict, name: str, key: str) -> Any:
            if key not in section:
                raise OptionsError(f"missing required option '{name}.{key}'", source)
            return section[key]

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
        extra = {k: v for k, v in data.items()}
        opts = cls(
            char_embed_dim=emb["dim"],
            filters=filters_t,
            n_highway=n_highway,
            n_characters=cc.get("n_characters", INFERENCE_N_CHARACTERS),
            max_characters_per_token=need(cc, "char_cnn", "max_characters_per_token"),
            activation=need(cc, "char_cnn", "activation"),
            lstm_dim=need(ls, "lstm", "dim"),
            projection_dim=need(ls, "lstm", "projection_dim"),
            n_layers=need(ls, "lstm", "n_layers"),
            cell_clip=ls.get("cell_clip"),
            proj_clip=ls.get("proj_clip"),
            use_skip_connections=ls.get("use_skip_connections", False),
            extra=extra,
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
        from .io_utils import atomic_write_text

        atomic_write_text(path, json.dumps(self.to_dict(), indent=2) + "\n")

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
