"""Training configuration: one JSON file = model options (bilm-tf `options.json` schema) + training
settings, with dotted `--set key=value` overrides and validation before any compute.

    {
      "model": { ...options.json: "char_cnn": {...}, "lstm": {...} ... },
      "train_files": "builtin:train",    "heldout_files": "builtin:heldout",   "vocab": "builtin",
      "batch_size": 128, "unroll_steps": 20, "n_negative_samples": 0, ...
    }

`builtin:*` names the built-in corpus (standard-library docstrings, built offline on first use).
"""
from __future__ import annotations

import dataclasses
import json
import os
from typing import Any, Optional, Sequence

from .errors import ElmoError
from .options import ModelOptions


class ConfigError(ElmoError):
    """A config file or `--set` override that is malformed or names a key that does not exist."""


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """Everything a pretraining run needs besides its run directory."""

    model: ModelOptions = dataclasses.field(default_factory=ModelOptions)
    train_files: str = "builtin:train"  # glob of one-sentence-per-line shards
    heldout_files: Optional[str] = "builtin:heldout"  # glob for validation perplexity (None: none)
    vocab: str = "builtin"  # bilm-tf vocab file (<S>, </S>, <UNK> first, frequency sorted)
    streaming: bool = False  # read shards through `datasets` streaming (corpora larger than disk cache)
    batch_size: int = 128  # GLOBAL rows per step, divided over all devices and hosts
    unroll_steps: int = 20  # truncated-BPTT window
    n_negative_samples: int = 0  # sampled softmax negatives; 0 = full softmax
    optimizer: str = "adagrad"  # adagrad (bilm-tf) | adam
    learning_rate: float = 0.2
    initial_accumulator: float = 1.0  # Adagrad
    clip_norm: float = 10.0  # global-norm gradient clip (0 = none)
    dropout: float = 0.1  # on each LSTM layer's input and the top output
    max_steps: Optional[int] = None  # stop after this many steps (None: n_epochs decides)
    n_epochs: float = 10.0  # epochs of the training data (its token count decides the steps)
    log_every: int = 10
    checkpoint_every: int = 500
    keep_checkpoints: int = 2
    eval_every: int = 0  # steps between validation perplexities (0: only at the end)
    eval_batches: int = 50  # at most this many heldout batches per validation
    precision: str = "float32"  # float32 | bfloat16 (compute; params and optimizer stay float32)
    seed: int = 0
    remat: bool = True  # rematerialise the LSTM scan body in the backward pass
    shard_softmax: str = "auto"  # auto | true | false: shard the softmax rows over devices
    init_from: Optional[str] = None  # fine-tune: an export/bilm-tf dir, or a run dir (bilm-tf restart.py)

    def replace(self, **changes: Any) -> "TrainConfig":
        return dataclasses.replace(self, **changes)

    # ------------------------------------------------------------------ validation
    def validate(self, source: Optional[str] = None) -> "TrainConfig":
        def bad(key: str, why: str) -> ConfigError:
            return ConfigError(f"config key '{key}' {why}", source)

        for key in ("batch_size", "unroll_steps", "log_every", "checkpoint_every", "keep_checkpoints",
                    "eval_batches"):
            v = getattr(self, key)
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise bad(key, f"must be a positive integer, got {v!r}")
        for key in ("n_negative_samples", "eval_every", "seed"):
            v = getattr(self, key)
            if not isinstance(v, int) or isinstance(v, bool) or v < 0:
                raise bad(key, f"must be an integer >= 0, got {v!r}")
        if self.max_steps is not None and (not isinstance(self.max_steps, int) or self.max_steps < 1):
            raise bad("max_steps", f"must be a positive integer or null, got {self.max_steps!r}")
        if self.optimizer not in ("adagrad", "adam"):
            raise bad("optimizer", f"must be 'adagrad' or 'adam', got {self.optimizer!r}")
        if self.precision not in ("float32", "bfloat16"):
            raise bad("precision", f"must be 'float32' or 'bfloat16', got {self.precision!r}")
        if self.shard_softmax not in ("auto", "true", "false"):
            raise bad("shard_softmax", f"must be auto, true or false, got {self.shard_softmax!r}")
        if not 0.0 <= self.dropout < 1.0:
            raise bad("dropout", f"must be in [0, 1), got {self.dropout!r}")
        for key in ("learning_rate", "n_epochs"):
            if not isinstance(getattr(self, key), (int, float)) or getattr(self, key) <= 0:
                raise bad(key, f"must be a positive number, got {getattr(self, key)!r}")
        if self.clip_norm < 0 or self.initial_accumulator < 0:
            raise bad("clip_norm" if self.clip_norm < 0 else "initial_accumulator", "must be >= 0")
        self.model.validate(source)
        return self

    # ------------------------------------------------------------------ JSON
    def to_dict(self) -> dict:
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "model"}
        return {"model": self.model.to_dict(), **out}

    @classmethod
    def from_dict(cls, data: Any, source: Optional[str] = None) -> "TrainConfig":
        if not isinstance(data, dict):
            raise ConfigError("a config must be a JSON object", source)
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"unknown config key(s): {', '.join(unknown)} "
                              f"(known: {', '.join(sorted(known))})", source)
        values = dict(data)
        if "model" in values:
            values["model"] = ModelOptions.from_dict(values["model"], source=source)
        return cls(**values).validate(source)

    @classmethod
    def from_json(cls, path: os.PathLike | str, overrides: Sequence[str] = ()) -> "TrainConfig":
        """Read a config file and apply `key=value` overrides (values parsed as JSON when they
        parse, else taken as strings; dotted keys reach into the model options)."""
        path = os.fspath(path)
        try:
            with open(path, encoding="utf-8") as fh:
                data = json.load(fh)
        except FileNotFoundError:
            raise ConfigError("config file not found", path)
        except UnicodeDecodeError:
            raise ConfigError("config file is not UTF-8", path)
        except json.JSONDecodeError as e:
            raise ConfigError(f"malformed JSON: {e.msg} at line {e.lineno} column {e.colno}", path)
        return cls.from_dict(apply_overrides(data, overrides, path), source=path)

    def to_json(self, path: os.PathLike | str) -> None:
        from .io_utils import atomic_write_text

        atomic_write_text(path, json.dumps(self.to_dict(), indent=2) + "\n")


def apply_overrides(data: dict, overrides: Sequence[str], source: Optional[str] = None) -> dict:
    """Apply `a.b.c=value` strings to a nested config dict (copy); unknown keys are errors."""
    data = json.loads(json.dumps(data))
    known_top = {f.name for f in dataclasses.fields(TrainConfig)}
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"--set expects key=value, got {item!r}", source)
        key, raw = item.split("=", 1)
        try:
            value = json.loads(raw)
        except json.JSONDecodeError:
            value = raw
        parts = key.strip().split(".")
        if parts[0] not in known_top:
            raise ConfigError(f"--set {key}: unknown config key '{parts[0]}'", source)
        node = data
        for depth, part in enumerate(parts[:-1]):
            if part not in node or not isinstance(node[part], dict):
                if parts[0] == "model" and depth == 0:
                    node = node.setdefault(part, {})
                    continue
                raise ConfigError(f"--set {key}: unknown config key '{'.'.join(parts[:depth + 1])}'", source)
            node = node[part]
        if len(parts) > 1 and parts[-1] not in node:
            raise ConfigError(f"--set {key}: unknown config key '{key}'", source)
        node[parts[-1]] = value
    return data
