"""The ELMo side of a task model: the biLM's files and weights, static word vectors, the model
built from a TaskConfig, its initial params, and the frozen lookup tables (constants) it reads."""
from __future__ import annotations

import os
from typing import Any, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from ..chars import BOS_TOKEN, EOS_TOKEN, token_to_char_ids
from ..elmo import CACHE_COLLECTION
from ..embed import ElmoEmbedder
from ..configbase import ConfigError
from ..errors import ElmoError
from ..hub import resolve_model
from ..options import ModelOptions
from ..vocab import Vocabulary
from ..weights import import_npz, load_model
from .config import TaskConfig
from .crf import allowed_transitions
from .inputs import TaskInputs
from .models import ElmoClassifier, ElmoFeatures, ElmoTagger
from ..vectors import WordVectors, read_glove


def resolve_bilm_files(cfg: TaskConfig) -> tuple[str, Optional[str]]:
    """(options.json, weights or None) — a model name or an export directory names both."""
    if cfg.model:
        files = resolve_model(cfg.model)
        return files.options_file, None if cfg.untrained_bilm else files.weight_file
    options, weights = cfg.options, cfg.weights
    if options and os.path.isdir(options):
        directory = options
        options = os.path.join(directory, "options.json")
        if weights is None and not cfg.untrained_bilm:
            for name in ("weights.hdf5", "params.npz"):
                if os.path.exists(os.path.join(directory, name)):
                    weights = os.path.join(directory, name)
                    break
            else:
                raise ElmoError("directory has no weights.hdf5 or params.npz", directory)
    return options, weights


def load_bilm(cfg: TaskConfig) -> tuple[ModelOptions, Optional[dict]]:
    """The biLM's options and pretrained params (None for `untrained_bilm`)."""
    options_file, weights = resolve_bilm_files(cfg)
    if cfg.untrained_bilm:
        return ModelOptions.from_json(options_file).for_inference(), None
    if weights.endswith(".npz"):
        options, params, _ = import_npz(weights, ModelOptions.from_json(options_file))
    else:
        options, params, _ = load_model(options_file, weights)
    if options.needs_vocab and uses_chars(cfg):
        raise ConfigError("task config: a word-input biLM (or one with a word channel) is used frozen, through "
                          "its token table: set fine_tune false and cache_tokens true")
    return options.for_inference(), params


def load_word_vectors(cfg: TaskConfig, sentences: Sequence[Sequence[str]]) -> Optional[WordVectors]:
    """The GloVe vectors of the words in `sentences` (both cases unless lower-casing)."""
    if not cfg.word_vectors:
        return None
    words = {w for s in sentences for w in s}
    words |= {w.lower() for w in words}
    return read_glove(cfg.word_vectors, lowercase=cfg.lowercase_word_vectors, vocab=words)


def uses_chars(cfg: TaskConfig) -> bool:
    """Characters in the step (fine-tuning the char-CNN), or a precomputed token table."""
    return cfg.fine_tune or not cfg.cache_tokens


def build_model(cfg: TaskConfig, options: ModelOptions, labels: Sequence[str], inputs: TaskInputs):
    features = ElmoFeatures(options, num_mixes=cfg.num_mixes, dropout=cfg.dropout, l2_coef=cfg.l2_coef,
                            do_layer_norm=cfg.layer_norm, fine_tune=cfg.fine_tune,
                            vocab_size=None if uses_chars(cfg) else inputs.table_size,
                            word_vocab_size=inputs.word_table_rows,
                            word_dim=0 if inputs.word_vectors is None else inputs.word_vectors.dim)
    common = dict(features=features, hidden_dim=cfg.hidden_dim, dropout=cfg.dropout)
    if cfg.task == "classify":
        return ElmoClassifier(num_classes=len(labels), encoder=cfg.encoder, **common)
    constraints = None
    if cfg.crf and cfg.constrain_crf:
        constraints = tuple(tuple(map(tuple, a)) if a.ndim == 2 else tuple(a)
                            for a in map(np.asarray, allowed_transitions(list(labels))))
    return ElmoTagger(num_tags=len(labels), use_crf=cfg.crf, constraints=constraints, **common)


def model_inputs(batch: dict) -> dict:
    return {k: batch[k] for k in ("word_chars", "token_ids", "word_ids") if k in batch}


def init_params(cfg: TaskConfig, model, inputs: TaskInputs, key: jax.Array) -> dict:
    """Randomly initialised params of `model` (the biLM too; replace it with `put_bilm`)."""
    # characters in either mode, so that the biLM's char-CNN params exist
    c = inputs.options.max_characters_per_token
    chars = np.stack([token_to_char_ids(w, c) for w in (BOS_TOKEN, "x", EOS_TOKEN)])[None]
    if uses_chars(cfg):
        dummy = {"word_chars": np.concatenate([np.zeros((1, c), np.int32), chars[0]]),
                 "token_ids": np.array([[1, 2, 3]], np.int32)}
    elif not inputs.options.char_inputs:  # a word-input biLM: its token table only
        dummy = {"token_ids": np.array([[1, 2, 2]], np.int32)}
    else:
        dummy = {"char_ids": chars, "token_ids": np.array([[1, 2, 2]], np.int32)}
    if inputs.word_vectors is not None:
        dummy["word_ids"] = np.zeros((1, 1), np.int32)
    if cfg.task == "classify":
        variables = model.init({"params": key}, **dummy)
    else:
        variables = model.init({"params": key}, jnp.zeros((1, 1), jnp.int32), **dummy,
                               method=ElmoTagger.loss)
    return variables["params"]


def get_bilm(params: dict) -> dict:
    return params["features"]["elmo"]["bilm"]


def put_bilm(params: dict, bilm_params: dict, source: str = "") -> dict:
    expected = jax.tree_util.tree_structure(get_bilm(params))
    if jax.tree_util.tree_structure(bilm_params) != expected:
        raise ElmoError("the biLM weights do not match the options (different parameter tree)", source or None)
    features = dict(params["features"])
    features["elmo"] = {**features["elmo"], "bilm": jax.tree_util.tree_map(jnp.asarray, bilm_params)}
    return {**params, "features": features}


def token_embedder(cfg: TaskConfig, options: ModelOptions, bilm_params: dict):
    """The frozen biLM's token encoder (an `ElmoEmbedder`), or None when the step reads characters."""
    if uses_chars(cfg):
        return None
    vocab = None
    if options.needs_vocab:  # its words are looked up by vocabulary id
        vocab = Vocabulary.from_file(cfg.bilm_vocab or os.path.join(
            os.path.dirname(os.path.abspath(resolve_bilm_files(cfg)[0])), "vocab.txt"))
    return ElmoEmbedder(options, bilm_params, batch_size=256, vocab=vocab)


def constants(cfg: TaskConfig, inputs: TaskInputs, embedder: Any) -> dict:
    """The non-trained lookup tables: the biLM token table (frozen, cached) and static vectors."""
    cache: dict = {}
    features: dict = {}
    if embedder is not None:
        features["elmo"] = {"token_embedding": jnp.asarray(inputs.token_table(embedder))}
    if inputs.word_vectors is not None:
        features["word_vectors"] = jnp.asarray(inputs.word_table())
    if features:
        cache["features"] = features
    return {CACHE_COLLECTION: cache} if cache else {}
