"""A run directory and its data: config.json, the model-shape compatibility check, loading a
run's params, and resolving the corpus files and vocabulary a config names.

    RUN_DIR/config.json          the TrainConfig of the run
    RUN_DIR/metrics.jsonl        one JSON record per logging interval (process 0)
    RUN_DIR/tensorboard/         the same scalars as TensorBoard events (when tensorboardX is installed)
    RUN_DIR/checkpoints/<step>/  Orbax: {state, data, meta}
    RUN_DIR/.lock                held by the run using the directory
"""
from __future__ import annotations

import json
import os
from typing import Optional

import jax
import numpy as np

from ..config import ConfigError, TrainConfig
from ..corpus import builtin_corpus
from ..errors import ElmoError
from ..options import ModelOptions
from ..tokenize import Tokenizer
from ..vocab import Vocabulary, resolve_files
from .checkpoint import CheckpointError, Checkpoints, quiet_partial_restore
from .step import init_state

CONFIG_FILE = "config.json"
CHECKPOINT_DIR = "checkpoints"
#: Checkpoint meta key of a run written by `import-tf-checkpoint`: the TF checkpoint prefix.
IMPORTED_KEY = "imported_from"


def resolve_vocab_path(cfg: TrainConfig) -> str:
    return builtin_corpus()["vocab_file"] if cfg.vocab == "builtin" else cfg.vocab


def resolve_tokenizer(cfg: TrainConfig) -> Optional[Tokenizer]:
    """The tokenizer of a raw-text corpus (`tokenize: true`), or None for whitespace-tokenized text."""
    if not cfg.tokenize:
        return None
    return Tokenizer(cfg.tokenizer, language=cfg.language, split_sentences=cfg.split_sentences)


def resolve_data(cfg: TrainConfig) -> tuple[list[str], list[str], Vocabulary]:
    """(train files, heldout files or [], vocabulary) with every check done up front."""
    builtin = None

    def files_of(spec: str) -> list[str]:
        nonlocal builtin
        if spec.startswith("builtin:"):
            builtin = builtin or builtin_corpus()
            key = spec.split(":", 1)[1]
            if key not in ("train", "heldout"):
                raise ConfigError(f"unknown built-in corpus part '{spec}' (use builtin:train or builtin:heldout)")
            return list(builtin["train_files"] if key == "train" else builtin["heldout_files"])
        return resolve_files(spec)

    if not cfg.train_files:  # an imported TF checkpoint's config names no text (import-tf-checkpoint)
        raise ConfigError("config key 'train_files' is empty: name the text to train on, "
                          "e.g. --set train_files='my_text/train/*.txt'")
    train_files = files_of(cfg.train_files)
    heldout = files_of(cfg.heldout_files) if cfg.heldout_files else []
    vocab_path = resolve_vocab_path(cfg)
    vocab = Vocabulary.from_file(vocab_path)
    if cfg.n_negative_samples and cfg.n_negative_samples >= len(vocab):
        raise ConfigError(f"config key 'n_negative_samples' ({cfg.n_negative_samples}) must be smaller than "
                          f"the vocabulary ({len(vocab)} words in {vocab_path})")
    return train_files, heldout, vocab


def checkpoint_meta(cfg: TrainConfig, vocab_size: int) -> dict:
    return {"model": cfg.model.to_dict(), "vocab_size": vocab_size, "batch_size": cfg.batch_size}


def check_compatible(meta: dict, cfg: TrainConfig, vocab_size: int, where: str,
                     advice: str = "use another --run-dir or the matching config") -> None:
    """A checkpoint's model shape and vocabulary size must be the config's; `advice` ends the error."""
    saved = ModelOptions.from_dict(meta.get("model", {}), source=where).for_training()
    if saved != cfg.model.for_training() or meta.get("vocab_size") != vocab_size:
        raise CheckpointError(
            "checkpoint is from a different model shape "
            f"(checkpoint: {json.dumps(meta.get('model', {}).get('lstm'))}, vocab {meta.get('vocab_size')}; "
            f"config: {json.dumps(cfg.model.to_dict()['lstm'])}, vocab {vocab_size}); "
            f"{advice}", where)


def data_abstract(ckpts: Checkpoints, step: int):
    """The saved data-position tree's shapes, read from the checkpoint's own metadata."""
    with quiet_partial_restore():
        item = ckpts.manager.item_metadata(step)
    tree = item["data"] if item is not None and "data" in item else None
    if tree is None:
        return None
    return jax.tree_util.tree_map(lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype), tree,
                                  is_leaf=lambda x: hasattr(x, "shape") and hasattr(x, "dtype"))


def load_run_state(run_dir: str, step: Optional[int] = None, *,
                   optimizer: bool = True) -> tuple[TrainConfig, dict, int, dict]:
    """(config, whole train state: params, optimizer, step, rng, carried LSTM state; step, meta) of a
    run's checkpoint (latest, or `step`). `optimizer=False`: the state without 'opt_state', which is
    then not read (for a 793k-word softmax its Adagrad slots are 1.6 GB)."""
    config_file = os.path.join(run_dir, CONFIG_FILE)
    if not os.path.exists(config_file):
        raise ElmoError("not a run directory (no config.json)", run_dir)
    cfg = TrainConfig.from_json(config_file)
    ckpts = Checkpoints(os.path.join(run_dir, CHECKPOINT_DIR), async_save=False, read_only=True)
    try:
        steps = ckpts.all_steps()
        if not steps:
            raise CheckpointError("no complete checkpoint in the run directory", run_dir)
        if step is None:
            step = max(steps)
        elif step not in steps:
            raise CheckpointError(f"no checkpoint for step {step} (have {sorted(steps)})", run_dir)
        meta = ckpts.read_meta(step)
        vocab_size = int(meta["vocab_size"])
        abstract = jax.eval_shape(lambda k: init_state(cfg, vocab_size, k), jax.random.key(0))
        if optimizer:
            state, _, meta = ckpts.restore(step, abstract, data_abstract(ckpts, step))
        else:
            state = ckpts.restore_part(step, {k: v for k, v in abstract.items() if k != "opt_state"})
    finally:
        ckpts.close()
    return cfg, state, step, meta


def load_run_params(run_dir: str, step: Optional[int] = None) -> tuple[TrainConfig, dict, int, dict]:
    """(config, params as NumPy, step, meta) of a run's checkpoint (latest, or `step`)."""
    cfg, state, step, meta = load_run_state(run_dir, step, optimizer=False)
    params = jax.tree_util.tree_map(np.asarray, state["params"])
    return cfg, params, step, meta
