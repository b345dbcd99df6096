"""Task-model configuration: one dataclass, saved as `task_config.json` in the output directory.

`elmo-jax task train` fills it from flags (and `--set key=value`); `TaskConfig.from_json` reads
a saved one back, so `task evaluate` / `predict` rebuild exactly the trained model.
"""
from __future__ import annotations

import dataclasses
import json
import os
from typing import Any, Optional

from ..config import ConfigError

TASKS = ("classify", "tag")
METRICS = {"classify": ("accuracy", "macro_f1"), "tag": ("span_f1", "accuracy")}


@dataclasses.dataclass(frozen=True)
class TaskConfig:
    """Everything `task train` needs besides the output directory."""

    task: str = "classify"  # classify | tag
    train: str = ""  # classify: .tsv/.jsonl; tag: CoNLL-2003 columns
    dev: Optional[str] = None  # early stopping and model selection (None: the epoch of lowest training loss)
    test: Optional[str] = None  # evaluated once with the selected model
    options: Optional[str] = None  # bilm-tf options.json (or a directory holding options.json + weights.hdf5)
    weights: Optional[str] = None  # weights.hdf5 (bilm-tf/AllenNLP) or params.npz (elmo-jax export)
    untrained_bilm: bool = False  # randomly initialised biLM of the options' shape (a baseline)
    # model
    encoder: str = "bilstm"  # classify: bilstm | pool (mean+max of the ELMo mix)
    hidden_dim: int = 200
    num_mixes: int = 1  # 1: ELMo at the input; 2: also concatenated to the encoder output
    dropout: float = 0.5
    l2_coef: float = 0.001  # L2 on the scalar-mix weights
    layer_norm: bool = False  # layer-normalise each biLM layer before mixing
    crf: bool = False  # tag: CRF output layer
    constrain_crf: bool = True  # tag + crf: forbid invalid BIO/BIOES transitions
    word_vectors: Optional[str] = None  # GloVe text file concatenated to the ELMo input
    lowercase_word_vectors: bool = False
    # training
    fine_tune: bool = False  # train the biLM too (at bilm_learning_rate)
    learning_rate: float = 1e-3  # Adam
    bilm_learning_rate: float = 1e-4
    clip_norm: float = 5.0
    batch_size: int = 32  # global rows per step, split over all devices
    max_epochs: int = 20
    patience: int = 3  # stop after this many epochs without dev improvement (0: never stop early)
    metric: str = "auto"  # model selection: accuracy | macro_f1 (classify), span_f1 | accuracy (tag)
    cache_tokens: bool = True  # precompute each word's biLM token vector once (frozen biLM only)
    seed: int = 0
    # file formats
    text_field: str = "text"
    label_field: str = "label"
    token_column: int = 0
    tag_column: int = -1

    def replace(self, **changes: Any) -> "TaskConfig":
        return dataclasses.replace(self, **changes)

    @property
    def selection_metric(self) -> str:
        return METRICS[self.task][0] if self.metric == "auto" else self.metric

    def validate(self, source: Optional[str] = None) -> "TaskConfig":
        def bad(key: str, why: str) -> ConfigError:
            return ConfigError(f"task option '{key}' {why}", source)

        if self.task not in TASKS:
            raise bad("task", f"must be one of {', '.join(TASKS)}, got {self.task!r}")
        if not self.train:
            raise bad("train", "is required (a training file)")
        if self.options is None:
            raise bad("options", "is required (bilm-tf options.json, or an export directory)")
        if self.weights is None and not self.untrained_bilm and not os.path.isdir(self.options):
            raise bad("weights", "is required unless untrained_bilm is set (weights.hdf5 or params.npz)")
        if self.encoder not in ("bilstm", "pool"):
            raise bad("encoder", f"must be 'bilstm' or 'pool', got {self.encoder!r}")
        if self.task == "tag" and self.encoder != "bilstm":
            raise bad("encoder", "must be 'bilstm' for tagging")
        if self.num_mixes not in (1, 2):
            raise bad("num_mixes", f"must be 1 or 2, got {self.num_mixes!r}")
        if self.metric != "auto" and self.metric not in METRICS[self.task]:
            raise bad("metric", f"must be auto or one of {', '.join(METRICS[self.task])} for task "
                                f"'{self.task}', got {self.metric!r}")
        for key in ("hidden_dim", "batch_size", "max_epochs"):
            v = getattr(self, key)
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise bad(key, f"must be a positive integer, got {v!r}")
        for key in ("patience", "seed"):
            v = getattr(self, key)
            if not isinstance(v, int) or isinstance(v, bool) or v < 0:
                raise bad(key, f"must be an integer >= 0, got {v!r}")
        if not 0.0 <= self.dropout < 1.0:
            raise bad("dropout", f"must be in [0, 1), got {self.dropout!r}")
        for key in ("learning_rate", "bilm_learning_rate"):
            if not isinstance(getattr(self, key), (int, float)) or getattr(self, key) <= 0:
                raise bad(key, f"must be a positive number, got {getattr(self, key)!r}")
        for key in ("l2_coef", "clip_norm"):
            if getattr(self, key) < 0:
                raise bad(key, "must be >= 0")
        return self

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Any, source: Optional[str] = None) -> "TaskConfig":
        if not isinstance(data, dict):
            raise ConfigError("a task config must be a JSON object", source)
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"unknown task option(s): {', '.join(unknown)} (known: {', '.join(sorted(known))})",
                              source)
        try:
            return cls(**data).validate(source)
        except TypeError as e:
            raise ConfigError(f"bad task config ({e})", source)

    @classmethod
    def from_json(cls, path: os.PathLike | str) -> "TaskConfig":
        path = os.fspath(path)
        try:
            with open(path, encoding="utf-8") as fh:
                data = json.load(fh)
        except FileNotFoundError:
            raise ConfigError("task config not found", path)
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise ConfigError(f"malformed task config ({e})", path)
        return cls.from_dict(data, source=path)

    def to_json(self, path: os.PathLike | str) -> None:
        from ..io_utils import atomic_write_text

        atomic_write_text(path, json.dumps(self.to_dict(), indent=2) + "\n")


def parse_set(overrides: list[str], source: str = "--set") -> dict:
    """`key=value` strings (values parsed as JSON when they parse) -> dict; keys checked later."""
    out = {}
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"{source} expects key=value, got {item!r}")
        key, raw = item.split("=", 1)
        try:
            out[key.strip()] = json.loads(raw)
        except json.JSONDecodeError:
            out[key.strip()] = raw
    return out
