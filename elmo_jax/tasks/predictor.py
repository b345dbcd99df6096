"""A trained task model from its output directory: `TaskPredictor(model_dir)` predicts labels or
tags for tokenized sentences, evaluates a labelled file and writes predictions for a file.

    predictor = TaskPredictor("out/ner")
    predictor.predict([["EU", "rejects", "German", "call"]])  # -> [["B-ORG", "O", "B-MISC", "O"]]
    predictor.evaluate("test.conll")                       # -> span P/R/F1 report
"""
from __future__ import annotations

import os
from typing import Any, Optional, Sequence

import jax
import numpy as np

from .. import sharding as shd
from ..chars import check_sentences
from ..errors import ElmoError, InputError
from ..options import ModelOptions
from ..train.checkpoint import Checkpoints
from .config import TaskConfig
from .data import write_classification_predictions, write_conll_predictions
from .features import build_model, constants, get_bilm, init_params, token_embedder, uses_chars
from .inputs import TaskInputs
from .labels import TaskData, check_labels, from_model_tags, model_view, output_scheme, read_task_file, score
from .modeldir import (BEST_DIR, OPTIONS_FILE, VECTORS_FILE, check_output_file, load_best_params, read_labels,
                       read_model_config, read_scheme, read_word_vectors)
from .step import make_predict_fn, predict_all
from ..vectors import WordVectors, read_glove


class TaskPredictor:
    """A trained task model from its output directory: `predict(sentences)`, `evaluate(file)`."""

    def __init__(self, model_dir: os.PathLike | str, batch_size: int = 64):
        model_dir = os.fspath(model_dir)
        if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
            raise ElmoError(f"batch_size must be an integer >= 1, got {batch_size!r}")
        self.cfg = read_model_config(model_dir)
        self.model_dir, self.batch_size = model_dir, batch_size
        self.labels: list[str] = read_labels(model_dir)
        self.scheme = read_scheme(model_dir)  # the training file's tag scheme (None: convert nothing)
        self.options = ModelOptions.from_json(os.path.join(model_dir, OPTIONS_FILE))
        self.mesh = shd.make_mesh()
        ckpts = Checkpoints(os.path.join(model_dir, BEST_DIR), async_save=False)
        try:
            inputs = TaskInputs(self.options, [["x"]], word_vectors=self._vectors([], extend=False),
                                use_chars=uses_chars(self.cfg))
            model = build_model(self.cfg, self.options, self.labels, inputs)
            like = jax.eval_shape(lambda k: init_params(self.cfg, model, inputs, k), jax.random.key(0))
            repl = shd.replicated(self.mesh)
            self.params, self.meta = load_best_params(ckpts, like, jax.tree_util.tree_map(lambda _: repl, like))
        finally:
            ckpts.close()
        self.embedder = token_embedder(self.cfg, self.options, jax.device_get(get_bilm(self.params)))
        self._compiled: dict = {}  # (token table rows, word table rows) -> compiled predict fn

    def _vectors(self, sentences: Sequence[Sequence[str]], extend: bool = True) -> Optional[WordVectors]:
        """Saved vectors of the training run, plus (`extend`) the original file's vectors of new words."""
        path = os.path.join(self.model_dir, VECTORS_FILE)
        if not os.path.exists(path):
            return None
        saved = read_word_vectors(path)
        if extend and self.cfg.word_vectors and os.path.exists(self.cfg.word_vectors):
            known = set(saved.words)
            new = {w for s in sentences for w in s}
            new = (new | {w.lower() for w in new}) - known
            if new:
                extra = read_glove(self.cfg.word_vectors, lowercase=saved.lowercase, vocab=new)
                if extra.words:
                    return WordVectors(saved.words + extra.words, np.concatenate([saved.vectors, extra.vectors]),
                                       saved.lowercase)
        return saved

    def predict_outputs(self, sentences: Sequence[Sequence[str]]) -> list:
        """Class probabilities [K] per sentence, or tag ids per token."""
        sentences = check_sentences(sentences)
        if any(len(s) == 0 for s in sentences):
            i = next(i for i, s in enumerate(sentences) if len(s) == 0)
            raise InputError(f"sentence {i} is empty")
        inputs = TaskInputs(self.options, sentences, word_vectors=self._vectors(sentences),
                            use_chars=uses_chars(self.cfg))
        key = (inputs.table_size, inputs.word_table_rows)
        if key not in self._compiled:
            self._compiled[key] = make_predict_fn(self.cfg, build_model(self.cfg, self.options, self.labels, inputs))
        predict_fn = self._compiled[key]
        consts = jax.device_put(constants(self.cfg, inputs, self.embedder), shd.replicated(self.mesh))
        return predict_all(self.cfg, predict_fn, self.params, consts, inputs, sentences, self.mesh, self.batch_size)

    def predict(self, sentences: Sequence[Sequence[str]]) -> list:
        """Labels (classify) or tag lists (tag, in the training file's scheme) for tokenized sentences."""
        outputs = self.predict_outputs(sentences)
        if self.cfg.task == "classify":
            return [self.labels[int(np.argmax(p))] for p in outputs]
        return self.tags(outputs, self.scheme)

    def tags(self, outputs: list, target: Optional[str]) -> list[list[str]]:
        """Predicted tag ids as tags in scheme `target`."""
        return from_model_tags([[self.labels[int(t)] for t in seq] for seq in outputs], self.scheme, target)

    def read(self, path: str, require_labels: bool = True) -> TaskData:
        return read_task_file(self.cfg, path, require_labels=require_labels)

    def evaluate(self, path_or_data: Any) -> dict:
        data = path_or_data if isinstance(path_or_data, TaskData) else self.read(os.fspath(path_or_data))
        check_gold(self.cfg, data, self.labels, self.scheme)
        return score(self.cfg, data, self.predict_outputs(data.tokens), self.labels, self.scheme)

    def predict_file(self, input_path: Any, output_path: str) -> int:
        """Predict every sentence of `input_path` (or of a TaskData read from it) and write them
        (JSONL for classify, CoNLL for tag: the tags in the scheme of the file's own tags, else in
        the training file's). The output may be neither the input nor inside the model directory."""
        data = input_path if isinstance(input_path, TaskData) else None
        check_output_file(output_path, [data.path if data is not None else os.fspath(input_path)], self.model_dir)
        if data is None:
            data = self.read(os.fspath(input_path), require_labels=False)
        outputs = self.predict_outputs(data.tokens)
        if self.cfg.task == "classify":
            labels = [self.labels[int(np.argmax(p))] for p in outputs]
            probs = [[float(x) for x in p] for p in outputs]
            write_classification_predictions(output_path, data.tokens, labels, probabilities=probs,
                                             label_names=self.labels, gold=data.labels)
        else:
            tags = self.tags(outputs, output_scheme(data, self.scheme))
            write_conll_predictions(output_path, data.tokens, tags, gold=data.labels)
        return len(data.tokens)


def check_gold(cfg: TaskConfig, data: TaskData, labels: Sequence[str], scheme: Optional[str]) -> None:
    """An evaluation file needs gold labels, all of them known to the model."""
    if data.labels is None:
        raise InputError("evaluation needs gold labels", data.path)
    check_labels(cfg, model_view(data, scheme), labels)


def read_model_input(model_dir: str, path: str, require_labels: bool) -> TaskData:
    """A file read (and, `require_labels`, its gold labels checked) with a model directory's
    settings, without loading the model: bad input is reported before any compute."""
    cfg = read_model_config(model_dir)
    data = read_task_file(cfg, path, require_labels=require_labels)
    if require_labels:
        check_gold(cfg, data, read_labels(model_dir), read_scheme(model_dir))
    return data
