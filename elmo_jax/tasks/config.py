"""Task-model configuration: one dataclass, saved as `task_config.json` in the output directory.

`elmo-jax task train` fills it from `--config FILE`, its flags (one per key) and `--set key=value`;
`TaskConfig.from_json` reads a saved one back, so `task evaluate` / `predict` rebuild exactly the
trained model. Parsing, type checks (every key, from its annotation) and overrides are
`configbase.ConfigBase`'s, shared with the training config.
"""
from __future__ import annotations

import dataclasses
import os
from typing import Literal, Optional

from ..configbase import ConfigBase, ConfigError

TASKS = ("classify", "tag")
METRICS = {"classify": ("accuracy", "macro_f1"), "tag": ("span_f1", "accuracy")}
#: the options only one task reads (`check_applicable`: a value other than the default for the
#: other task is an error, not silently ignored); `encoder` is checked by `validate`.
TASK_ONLY = {"tag": ("crf", "constrain_crf", "token_column", "tag_column"),
             "classify": ("text_field", "label_field")}


@dataclasses.dataclass(frozen=True)
class TaskConfig(ConfigBase):
    """Everything `task train` needs besides the output directory."""

    key_word = "task option"
    config_name = "task config"

    task: Literal["classify", "tag"] = "classify"
    train: str = ""  # classify: .tsv/.jsonl; tag: CoNLL-2003 columns
    dev: Optional[str] = None  # early stopping and model selection (None: the epoch of lowest training loss)
    test: Optional[str] = None  # evaluated once with the selected model
    model: Optional[str] = None  # a model name: published id (original, ...), URL, hf://owner/repo or directory
    options: Optional[str] = None  # bilm-tf options.json (or a directory holding options.json + weights.hdf5)
    weights: Optional[str] = None  # weights.hdf5 (bilm-tf/AllenNLP) or params.npz (elmo-jax export)
    untrained_bilm: bool = False  # randomly initialised biLM of the options' shape (a baseline)
    bilm_vocab: Optional[str] = None  # word-input biLM: its vocabulary (default: vocab.txt beside the options)
    # model
    encoder: Literal["bilstm", "pool"] = "bilstm"  # classify: pool = mean+max of the ELMo mix
    hidden_dim: int = 200
    num_mixes: Literal[1, 2] = 1  # 1: ELMo at the input; 2: also concatenated to the encoder output
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
    log_every: int = 50  # steps per metrics.jsonl record of the training loss and gradient norm (0: epochs only)
    metric: str = "auto"  # model selection: accuracy | macro_f1 (classify), span_f1 | accuracy (tag)
    cache_tokens: bool = True  # precompute each word's biLM token vector once (frozen biLM only)
    seed: int = 0
    # file formats
    text_field: str = "text"
    label_field: str = "label"
    token_column: int = 0
    tag_column: int = -1

    @property
    def selection_metric(self) -> str:
        return METRICS[self.task][0] if self.metric == "auto" else self.metric

    def validate(self, source: Optional[str] = None) -> "TaskConfig":
        """Types (from the annotations), then the values."""
        super().validate(source)

        def bad(key: str, why: str) -> ConfigError:
            return ConfigError(f"task option '{key}' {why}", source)

        if not self.train:
            raise bad("train", "is required (a training file)")
        if self.model is not None:
            if self.options is not None or self.weights is not None:
                raise bad("model", "excludes options/weights: give a model name, or the files")
        elif self.options is None:
            raise bad("options", "is required (bilm-tf options.json, or an export directory), or a model name")
        elif self.weights is None and not self.untrained_bilm and not os.path.isdir(self.options):
            raise bad("weights", "is required unless untrained_bilm is set (weights.hdf5 or params.npz)")
        if self.task == "tag" and self.encoder != "bilstm":
            raise bad("encoder", "must be 'bilstm' for tagging")
        if self.metric != "auto" and self.metric not in METRICS[self.task]:
            raise bad("metric", f"must be auto or one of {', '.join(METRICS[self.task])} for task "
                                f"'{self.task}', got {self.metric!r}")
        self.check_ranges(source, positive=("hidden_dim", "batch_size", "max_epochs"),
                          non_negative=("patience", "seed", "log_every"), probability=("dropout",),
                          positive_number=("learning_rate", "bilm_learning_rate"),
                          at_least_zero=("l2_coef", "clip_norm"))
        return self

    def check_applicable(self, source: Optional[str] = None) -> "TaskConfig":
        """A new training run: an option set away from its default must apply to the task (and
        `constrain_crf` needs `crf`). Not part of `validate`, so that a model directory saved
        before this check still loads."""
        defaults = {f.name: f.default for f in dataclasses.fields(self)}
        for task, keys in TASK_ONLY.items():
            if task == self.task:
                continue
            for key in keys:
                if getattr(self, key) != defaults[key]:
                    raise ConfigError(f"task option '{key}' applies only to task '{task}', not to "
                                      f"'{self.task}' (got {getattr(self, key)!r})", source)
        if self.task == "tag" and not self.crf and self.constrain_crf != defaults["constrain_crf"]:
            raise ConfigError("task option 'constrain_crf' applies only with crf (a CRF output layer)", source)
        return self
