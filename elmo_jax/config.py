"""Training configuration: one JSON file = model options (bilm-tf `options.json` schema) + training
settings, with dotted `--set key=value` overrides and validation before any compute: every key is
type-checked from its annotation (`configbase.ConfigBase`, shared with the task config).

    {
      "model": { ...options.json: "char_cnn": {...}, "lstm": {...} ... },
      "train_files": "builtin:train",    "heldout_files": "builtin:heldout",   "vocab": "builtin",
      "batch_size": 128, "unroll_steps": 20, "n_negative_samples": 0, ...
    }

`builtin:*` names the built-in corpus (standard-library docstrings, built offline on first use).
"""
from __future__ import annotations

import dataclasses
from typing import Any, Literal, Optional, Sequence

from .configbase import ConfigBase, ConfigError
from .options import ModelOptions
from .tokenize import TOKENIZERS

__all__ = ["ConfigError", "TrainConfig", "apply_overrides"]


@dataclasses.dataclass(frozen=True)
class TrainConfig(ConfigBase):
    """Everything a pretraining run needs besides its run directory. Every key is type-checked
    from its annotation (see `configbase`); `validate` adds the range checks."""

    key_word = "config key"
    config_name = "config"

    model: ModelOptions = dataclasses.field(default_factory=ModelOptions)
    train_files: str = "builtin:train"  # glob of one-sentence-per-line shards
    heldout_files: Optional[str] = "builtin:heldout"  # glob for validation perplexity (None: none)
    vocab: str = "builtin"  # bilm-tf vocab file (<S>, </S>, <UNK> first, frequency sorted)
    streaming: bool = False  # read shards through `datasets` streaming (corpora larger than disk cache)
    tokenize: bool = False  # the corpus is raw text: tokenize it once, cached with the encoded corpus
    tokenizer: Literal[TOKENIZERS] = "moses"  # with tokenize: moses (as the 1B Word Benchmark) or a HF pre-tokenizer
    language: str = "en"  # with tokenize: language code of the tokenizer and of the sentence splitter
    split_sentences: bool = False  # with tokenize: split each line into sentences first (a line = a paragraph)
    batch_size: int = 128  # GLOBAL rows per step, divided over all devices and hosts
    unroll_steps: int = 20  # truncated-BPTT window
    n_negative_samples: int = 0  # sampled softmax negatives; 0 = full softmax
    optimizer: Literal["adagrad", "adam"] = "adagrad"  # adagrad: as bilm-tf
    learning_rate: float = 0.2
    initial_accumulator: float = 1.0  # Adagrad
    clip_norm: float = 10.0  # global-norm gradient clip (0 = none)
    dropout: float = 0.1  # on each LSTM layer's input and the top output
    state_reset_prob: float = 0.02  # each step, each row's carried LSTM state restarts from zero with this
    #   probability, so that the zero state evaluation and embedders start from is one the LM learned from
    #   (0: always carried, bilm-tf's recipe; see train/step.py reset_rows and the README)
    max_steps: Optional[int] = None  # stop after this many steps (None: n_epochs decides)
    n_epochs: float = 10.0  # epochs of the training data (its token count decides the steps)
    log_every: int = 10
    checkpoint_every: int = 500
    keep_checkpoints: int = 2
    eval_every: int = 0  # steps between validation perplexities (0: only at the end)
    eval_batches: int = 50  # at most this many heldout batches per validation
    precision: Literal["float32", "bfloat16"] = "float32"  # compute; params and optimizer stay float32
    matmul_precision: Literal["float32", "bfloat16"] = "float32"  # matmul operands (modules/matmul.py):
    #   bfloat16 rounds them, float32 accumulation, all else float32; 2-4x faster matmuls with AMX or GPUs
    seed: int = 0
    remat: bool = True  # rematerialise the LSTM scan body in the backward pass (autodiff path only)
    hoist_input: bool = False  # LSTM input matmul for all steps at once (slower on CPU; no faster on an H200)
    scan_unroll: Optional[int] = None  # LSTM time steps per scan iteration (lax.scan unroll); None: 1 on a
    #   CPU (unrolling was slower there), the whole unroll_steps window on an accelerator (faster on an H200)
    fused_backward: bool = True  # hand-written LSTM backward pass (weight gradients as one matmul each)
    char_cnn_scan_rows: Optional[int] = None  # char-CNN rows per device per scan step; 0: one convolution
    #   per width; None: 16 on a CPU (2x faster there), 0 on an accelerator (modules/char_cnn.py)
    shard_softmax: Literal["auto", "true", "false"] = "auto"  # shard the softmax rows over devices
    sparse_softmax_update: bool = True  # sampled softmax + Adagrad: gather, update and write back only the
    #   softmax rows a step reads (its targets and negatives), the dense update's numbers (train/step.py)
    init_from: Optional[str] = None  # fine-tune: a run dir (restart.py), an export dir or a model name (original, URL)
    init_optimizer_state: bool = True  # init_from a run dir: continue its optimizer state (false: a fresh one)
    word_vectors: Optional[str] = None  # GloVe text file: initial word embedding (word input) or word channel
    word_vectors_projection: Literal["none", "pca", "random"] = "none"  # GloVe dim != target dim: how to map
    freeze_word_vectors: bool = False  # keep the word embedding / word channel fixed (input side)

    @classmethod
    def parse_dict(cls, data: Any, source: Optional[str] = None) -> dict:
        """The base checks, and a misspelt key inside the model's lstm / char_cnn sections is an error
        (options.json readers ignore such keys; in a training config it would go unnoticed)."""
        unknown = ModelOptions.unknown_section_keys(data.get("model")) if isinstance(data, dict) else []
        if unknown:
            key, known = unknown[0]
            raise ConfigError(f"unknown config key 'model.{key}' (known in that section: {', '.join(known)})", source)
        return super().parse_dict(data, source)

    # ------------------------------------------------------------------ validation
    def validate(self, source: Optional[str] = None) -> "TrainConfig":
        """Types (from the annotations), then ranges, then the model options."""
        super().validate(source)

        self.check_ranges(
            source, positive=("batch_size", "unroll_steps", "log_every", "checkpoint_every", "keep_checkpoints",
                              "eval_batches", "max_steps", "scan_unroll"),
            non_negative=("n_negative_samples", "eval_every", "seed", "char_cnn_scan_rows"),
            probability=("dropout", "state_reset_prob"),
            positive_number=("learning_rate", "n_epochs"), at_least_zero=("clip_norm", "initial_accumulator"))
        self.model.validate(source)
        if not self.tokenize:
            unused = [k for k, default in (("tokenizer", "moses"), ("language", "en"), ("split_sentences", False))
                      if getattr(self, k) != default]
            if unused:
                keys = ", ".join(repr(k) for k in unused)
                raise ConfigError(f"config {'keys' if len(unused) > 1 else 'key'} {keys} only "
                                  f"{'apply' if len(unused) > 1 else 'applies'} to raw text: set 'tokenize': true, "
                                  f"or remove {'them' if len(unused) > 1 else 'it'}", source)
        m = self.model
        if self.freeze_word_vectors and m.char_inputs and not m.word_channel_dim:
            raise ConfigError("config key 'freeze_word_vectors' needs a word-input model or a word channel "
                              "(model.char_cnn.word_channel_dim)", source)
        if self.freeze_word_vectors and m.share_embedding_softmax:
            raise ConfigError("config key 'freeze_word_vectors' would freeze the softmax too: the model shares "
                              "its embedding with the softmax (share_embedding_softmax)", source)
        if self.word_vectors is not None and m.char_inputs and not m.word_channel_dim:
            raise ConfigError("config key 'word_vectors' needs a word-input model (options without char_cnn) or "
                              "a word channel (model.char_cnn.word_channel_dim > 0)", source)
        return self


def apply_overrides(data: dict, overrides: Sequence[str], source: Optional[str] = None) -> dict:
    """Apply `a.b.c=value` strings to a training config dict (copy); unknown keys are errors.
    (`TrainConfig.apply_overrides`; kept for callers of the function.)"""
    return TrainConfig.apply_overrides(data, overrides, source)
