"""Train, evaluate and predict with ELMo task models.

    summary = train_task(cfg, "out/ner")                   # -> out/ner: config, labels, checkpoints, reports
    predictor = TaskPredictor("out/ner")
    predictor.predict([["EU", "rejects", "German", "call"]])  # -> [["B-ORG", "O", "B-MISC", "O"]]
    predictor.evaluate("test.conll")                       # -> span P/R/F1 report

Everything is checked before any compute (files, labels, options, weights). Then one compiled
step runs over a mesh of all devices of all hosts, params replicated and the batch split over
the 'data' axis (each host feeds its slice of every global batch); at most one step is in
flight. After each epoch the model is evaluated on the dev file: an improvement is saved to
`best/` (Orbax), and training stops after `patience` epochs without one. `checkpoints/` holds
the last epoch's whole train state for `--resume`.

Output directory: task_config.json, labels.json, [tag_scheme.json], options.json, [word_vectors.npz],
metrics.jsonl, best/, checkpoints/, dev_report.{json,txt}, [test_report.{json,txt}].

Tag schemes: a tagger whose training file is IOB1 trains on the same entities in IOB2 (labels.json
lists the IOB2 tags, so that the CRF constraints know where an entity starts), and
tag_scheme.json records the training file's scheme. Predictions go out in the scheme of the file
they are for (read from its tags; the training file's scheme when they tell nothing), and
evaluation compares them with the file's own tags. A model directory without tag_scheme.json
(written before) converts nothing.
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
import sys
import time
from typing import Any, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax

from .. import sharding as shd
from ..config import ConfigError
from ..elmo import CACHE_COLLECTION
from ..errors import ElmoError, InputError
from ..hub import resolve_model
from ..io_utils import atomic_write_text
from ..options import ModelOptions
from ..train.checkpoint import CheckpointError, Checkpoints, abstract_tree
from ..vocab import Vocabulary
from .config import TaskConfig
from .inputs import TaskInputs, epoch_order
from .metrics import classification_report, format_report, span_f1
from .models import ElmoClassifier, ElmoFeatures, ElmoTagger
from .tags import SCHEMES, convert_all, convertible, detect_scheme, internal_scheme
from .vectors import WordVectors

CONFIG_FILE = "task_config.json"
LABELS_FILE = "labels.json"
SCHEME_FILE = "tag_scheme.json"  # tag: {"scheme": the training file's, "labels": that of labels.json}
OPTIONS_FILE = "options.json"
VECTORS_FILE = "word_vectors.npz"
METRICS_FILE = "metrics.jsonl"


# --------------------------------------------------------------------------- data
@dataclasses.dataclass
class TaskData:
    """Sentences of one file with their gold labels (classify: one per sentence; tag: one per token)."""

    path: str
    tokens: list[list[str]]
    labels: Optional[list]  # None when the file has no labels
    scheme: Optional[str] = None  # tag: IOB1 | IOB2 | BIOES of `labels` (None: no labels, or no entity)


def read_task_file(cfg: TaskConfig, path: str, require_labels: bool = True) -> TaskData:
    from .data import read_classification, read_conll

    scheme = None
    if cfg.task == "classify":
        ds = read_classification(path, cfg.text_field, cfg.label_field, require_labels=require_labels)
        labels = list(ds["label"])
        has = all(label != "" for label in labels)
    else:
        ds = read_conll(path, cfg.token_column, cfg.tag_column, require_tags=require_labels)
        labels = [list(t) for t in ds["tags"]]
        has = all(len(t) == len(s) and all(t) for t, s in zip(labels, ds["tokens"]))  # "" = no tag column
        scheme = detect_scheme(labels) if has else None
    return TaskData(os.fspath(path), [list(s) for s in ds["tokens"]], labels if has else None, scheme)


def from_model_tags(tag_seqs: Sequence[Sequence[str]], scheme: Optional[str], target: Optional[str]) -> list:
    """The predicted tags of a model trained on a file in `scheme` (IOB2 labels for IOB1) in
    scheme `target` (IOB2 -> IOB1); anything else unchanged. The inverse of `model_view`."""
    source = internal_scheme(scheme)
    return convert_all(tag_seqs, source, target) if convertible(source, target) else list(tag_seqs)


def output_scheme(data: TaskData, scheme: Optional[str]) -> Optional[str]:
    """The scheme predictions for `data` are written in: its own tags', else the training file's."""
    return data.scheme or scheme


def model_view(data: TaskData, scheme: Optional[str]) -> TaskData:
    """`data` with its tags as the labels of a model trained on a file in `scheme`: IOB1 -> IOB2
    when both are IOB1 or IOB2 (`data`'s own scheme, else `scheme`); anything else (BIOES,
    classification, no labels) unchanged."""
    source, target = output_scheme(data, scheme), internal_scheme(scheme)
    if data.labels is None or source == target or not convertible(source, target):
        return data
    return dataclasses.replace(data, labels=convert_all(data.labels, source, target), scheme=target)


def label_names(cfg: TaskConfig, train: TaskData) -> list[str]:
    from .data import label_set, tag_set

    return label_set(train.labels) if cfg.task == "classify" else tag_set(train.labels)


def check_labels(cfg: TaskConfig, data: TaskData, names: Sequence[str]) -> None:
    """Every gold label of `data` must be one the model knows (from the training file)."""
    known = set(names)
    seen = set(data.labels) if cfg.task == "classify" else {t for tags in data.labels for t in tags}
    unknown = sorted(seen - known)
    if unknown:
        what = "label" if cfg.task == "classify" else "tag"
        raise InputError(f"{what}(s) {', '.join(map(repr, unknown[:10]))} do not occur in the training data "
                         f"(known: {', '.join(names)})", data.path)


# --------------------------------------------------------------------------- biLM + vectors
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
    from ..weights import import_npz, load_model

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
    from .vectors import read_glove

    words = {w for s in sentences for w in s}
    words |= {w.lower() for w in words}
    return read_glove(cfg.word_vectors, lowercase=cfg.lowercase_word_vectors, vocab=words)


# --------------------------------------------------------------------------- model
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
        from .crf import allowed_transitions

        constraints = tuple(tuple(map(tuple, a)) if a.ndim == 2 else tuple(a)
                            for a in map(np.asarray, allowed_transitions(list(labels))))
    return ElmoTagger(num_tags=len(labels), use_crf=cfg.crf, constraints=constraints, **common)


def model_inputs(batch: dict) -> dict:
    return {k: batch[k] for k in ("word_chars", "token_ids", "word_ids") if k in batch}


def init_params(cfg: TaskConfig, model, inputs: TaskInputs, key: jax.Array) -> dict:
    """Randomly initialised params of `model` (the biLM too; replace it with `put_bilm`)."""
    from ..chars import BOS_TOKEN, EOS_TOKEN, token_to_char_ids

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
    from ..embed import ElmoEmbedder

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


def make_optimizer(cfg: TaskConfig) -> optax.GradientTransformation:
    """Adam for the task params; the biLM frozen (exact zero updates) or Adam at its own rate."""

    def labels(params):
        return jax.tree_util.tree_map_with_path(
            lambda path, _: "bilm" if "'bilm'" in jax.tree_util.keystr(path) else "task", params)

    bilm = optax.adam(cfg.bilm_learning_rate) if cfg.fine_tune else optax.set_to_zero()
    tx = optax.multi_transform({"task": optax.adam(cfg.learning_rate), "bilm": bilm}, labels)
    return optax.chain(optax.clip_by_global_norm(cfg.clip_norm), tx) if cfg.clip_norm > 0 else tx


def make_loss_fn(cfg: TaskConfig, model):
    def loss_fn(params, consts, batch, rng):
        variables = {"params": params, **consts}
        kwargs = dict(deterministic=False, rngs={"dropout": rng}, mutable=["losses"])
        if cfg.task == "classify":
            logits, aux = model.apply(variables, **model_inputs(batch), **kwargs)
            ce = optax.softmax_cross_entropy_with_integer_labels(logits.astype(jnp.float32), batch["labels"])
            w = batch["weights"]
            data_loss = jnp.sum(ce * w) / jnp.maximum(jnp.sum(w), 1.0)
        else:
            (total, count), aux = model.apply(variables, batch["tags"], **model_inputs(batch),
                                              method=ElmoTagger.loss, **kwargs)
            data_loss = total / jnp.maximum(count, 1.0)
        reg = sum(jnp.sum(x) for x in jax.tree_util.tree_leaves(aux.get("losses", {})))
        return data_loss + reg, data_loss

    return loss_fn


def make_train_step(cfg: TaskConfig, model, tx: optax.GradientTransformation, state_sharding: Any, mesh):
    loss_fn = make_loss_fn(cfg, model)

    def step(state, consts, batch):
        rng = jax.random.fold_in(jax.random.wrap_key_data(state["rng"]), state["step"])
        (total, data_loss), grads = jax.value_and_grad(loss_fn, has_aux=True)(state["params"], consts, batch, rng)
        updates, opt_state = tx.update(grads, state["opt_state"], state["params"])
        params = optax.apply_updates(state["params"], updates)
        new = {"step": state["step"] + 1, "params": params, "opt_state": opt_state, "rng": state["rng"]}
        return new, {"loss": data_loss, "total_loss": total, "grad_norm": optax.tree.norm(grads)}

    return jax.jit(step, out_shardings=(state_sharding, shd.replicated(mesh)), donate_argnums=0)


def make_predict_fn(cfg: TaskConfig, model):
    def predict(params, consts, batch):
        variables = {"params": params, **consts}
        if cfg.task == "classify":
            return jax.nn.softmax(model.apply(variables, **model_inputs(batch)).astype(jnp.float32), axis=-1)
        tags, _ = model.apply(variables, **model_inputs(batch), method=ElmoTagger.predict)
        return tags

    return jax.jit(predict)


def to_host(x: jax.Array) -> np.ndarray:
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        return np.asarray(multihost_utils.process_allgather(x, tiled=True))
    return np.asarray(x)


def padded_rows(batch_size: int) -> int:
    """Global rows per step: `batch_size` rounded up to a multiple of the device count."""
    n = jax.device_count()
    return -(-batch_size // n) * n


#: Batch arrays that are not split by rows: the batch's distinct words (every host has them all).
REPLICATED_INPUTS = ("word_chars",)


def global_batch(local_global: dict[str, np.ndarray], mesh) -> dict[str, jax.Array]:
    """Every host builds the same global batch; each feeds its own rows (and all of `word_chars`)."""
    rows = local_global["token_ids"].shape[0]
    start, count = shd.host_rows(rows)
    out = shd.global_batch({k: v[start:start + count] for k, v in local_global.items()
                            if k not in REPLICATED_INPUTS}, mesh)
    for k in REPLICATED_INPUTS:
        if k in local_global:
            out[k] = jax.make_array_from_process_local_data(shd.replicated(mesh), local_global[k])
    return out


def label_arrays(cfg: TaskConfig, labels: Sequence, index: dict[str, int], rows: int, length: int) -> dict:
    """Gold labels padded to the batch: classify {'labels' [rows], 'weights' [rows]}, tag {'tags' [rows, T-2]}."""
    if cfg.task == "classify":
        ids = np.zeros(rows, np.int32)
        weights = np.zeros(rows, np.float32)
        for r, label in enumerate(labels):
            ids[r], weights[r] = index[label], 1.0
        return {"labels": ids, "weights": weights}
    tags = np.zeros((rows, length - 2), np.int32)
    for r, seq in enumerate(labels):
        tags[r, :len(seq)] = [index[t] for t in seq]
    return {"tags": tags}


def predict_all(cfg: TaskConfig, predict_fn, params, consts, inputs: TaskInputs, sentences: Sequence[Sequence[str]],
                mesh, batch_size: int) -> list:
    """Model outputs for every sentence, in input order: class probabilities [K] or tag ids [n]."""
    rows = padded_rows(batch_size)
    encoded = [inputs.encode(s) for s in sentences]
    out: list = [None] * len(sentences)
    for idx in epoch_order([len(s) for s in sentences], rows, None):
        batch = inputs.batch([encoded[i] for i in idx], rows)
        result = to_host(predict_fn(params, consts, global_batch(batch, mesh)))
        for r, i in enumerate(idx):
            out[i] = result[r] if cfg.task == "classify" else result[r, :len(sentences[i])]
    return out


def score(cfg: TaskConfig, data: TaskData, outputs: list, names: Sequence[str], scheme: Optional[str] = None) -> dict:
    """Metrics of predictions against `data`'s gold labels (the report the CLI prints); tag:
    the predictions in `data`'s own scheme (`scheme`: the training file's, see `from_model_tags`)."""
    if cfg.task == "classify":
        pred = [names[int(np.argmax(p))] for p in outputs]
        return classification_report(data.labels, pred, list(names))
    pred = from_model_tags([[names[int(t)] for t in seq] for seq in outputs], scheme, output_scheme(data, scheme))
    report = span_f1(data.labels, pred)
    gold_flat = [t for s in data.labels for t in s]
    pred_flat = [t for s in pred for t in s]
    report["accuracy"] = float(np.mean([g == p for g, p in zip(gold_flat, pred_flat)])) if gold_flat else 0.0
    return report


def selection_value(cfg: TaskConfig, report: dict) -> float:
    metric = cfg.selection_metric
    return float(report["f1"] if metric == "span_f1" else report[metric])


def write_report(output_dir: str, name: str, report: dict) -> None:
    atomic_write_text(os.path.join(output_dir, f"{name}_report.json"), json.dumps(report, indent=2) + "\n")
    atomic_write_text(os.path.join(output_dir, f"{name}_report.txt"), format_report(report) + "\n")


# --------------------------------------------------------------------------- training
def _check_output_dir(cfg: TaskConfig, output_dir: str, resume: bool) -> None:
    saved = os.path.join(output_dir, CONFIG_FILE)
    has_ckpt = os.path.isdir(os.path.join(output_dir, "checkpoints")) and os.listdir(os.path.join(output_dir, "checkpoints"))
    if resume:
        if not os.path.exists(saved):
            raise ElmoError("--resume: the output directory holds no task run (no task_config.json)", output_dir)
        old = TaskConfig.from_json(saved).to_dict()
        new = cfg.to_dict()
        changed = sorted(k for k in old if k not in ("max_epochs", "patience") and old[k] != new[k])
        if changed:
            raise ConfigError(f"--resume with different settings: {', '.join(changed)} (the saved run has "
                              + ", ".join(f"{k}={old[k]!r}" for k in changed) + ")", saved)
    elif has_ckpt or os.path.exists(os.path.join(output_dir, "best")):
        raise ElmoError("the output directory already holds a trained task model; pass --resume to continue "
                        "it, or choose another --output-dir (nothing was overwritten)", output_dir)


def train_task(cfg: TaskConfig, output_dir: str, *, resume: bool = False, progress: bool = True,
               log: Any = None, return_params: bool = False) -> dict:
    """Train a task model; returns {'epochs', 'best_epoch', 'dev': report, 'test': report, 'history',
    ...} and, with `return_params`, the selected params as NumPy ('params')."""
    log = log or (lambda msg: print(msg, file=sys.stderr))
    cfg.validate()
    output_dir = os.path.abspath(output_dir)
    # ---- everything checked before compute
    train = read_task_file(cfg, cfg.train)
    if train.labels is None:
        raise InputError("the training file has no labels", cfg.train)
    scheme = train.scheme if cfg.task == "tag" else None  # the training file's tag scheme
    train = model_view(train, scheme)  # IOB1 -> IOB2
    names = label_names(cfg, train)
    if cfg.task == "classify" and len(names) < 2:
        raise InputError(f"the training file has only one label ({names[0]!r}); a classifier needs two or more",
                         cfg.train)
    dev = read_task_file(cfg, cfg.dev) if cfg.dev else None
    test = read_task_file(cfg, cfg.test) if cfg.test else None
    for data in (dev, test):
        if data is not None:
            if data.labels is None:
                raise InputError("an evaluation file needs gold labels", data.path)
            check_labels(cfg, model_view(data, scheme), names)
    options, bilm_params = load_bilm(cfg)
    all_sentences = train.tokens + (dev.tokens if dev else []) + (test.tokens if test else [])
    vectors = load_word_vectors(cfg, all_sentences)
    if os.path.exists(output_dir) and not os.path.isdir(output_dir):
        raise ElmoError("the output directory is a file", output_dir)
    _check_output_dir(cfg, output_dir, resume)
    os.makedirs(output_dir, exist_ok=True)
    if not resume and os.path.exists(os.path.join(output_dir, METRICS_FILE)):
        os.remove(os.path.join(output_dir, METRICS_FILE))  # left by a run that saved no model
    cfg.to_json(os.path.join(output_dir, CONFIG_FILE))
    atomic_write_text(os.path.join(output_dir, LABELS_FILE), json.dumps(list(names)) + "\n")
    if cfg.task == "tag":
        atomic_write_text(os.path.join(output_dir, SCHEME_FILE),
                          json.dumps({"scheme": scheme, "labels": internal_scheme(scheme)}) + "\n")
    options.to_json(os.path.join(output_dir, OPTIONS_FILE))
    if vectors is not None:
        save_word_vectors(os.path.join(output_dir, VECTORS_FILE), vectors)
        log(f"word vectors: {len(vectors.words)} of the data's words found in {cfg.word_vectors} "
            f"(dim {vectors.dim}); coverage of the training tokens "
            f"{vectors.coverage([w for s in train.tokens for w in s]):.1%}")

    # ---- model, state, mesh
    mesh = shd.make_mesh()
    inputs = TaskInputs(options, all_sentences, word_vectors=vectors, use_chars=uses_chars(cfg))
    model = build_model(cfg, options, names, inputs)
    key = jax.random.key(cfg.seed)
    params = init_params(cfg, model, inputs, jax.random.fold_in(key, 0))
    if bilm_params is not None:
        params = put_bilm(params, bilm_params, cfg.weights or cfg.options)
    t0 = time.time()
    consts = constants(cfg, inputs, token_embedder(cfg, options, jax.device_get(get_bilm(params))))
    if not uses_chars(cfg):
        log(f"token table: {inputs.vocab_size} distinct words through the char-CNN in {time.time() - t0:.1f} s")
    tx = make_optimizer(cfg)
    state = {"step": jnp.zeros((), jnp.int32), "params": params, "opt_state": tx.init(params),
             "rng": jax.random.key_data(jax.random.fold_in(key, 1))}
    repl = shd.replicated(mesh)
    state_sharding = jax.tree_util.tree_map(lambda _: repl, state)
    consts = jax.device_put(consts, repl)
    last_ckpt = Checkpoints(os.path.join(output_dir, "checkpoints"), keep=1)
    best_ckpt = Checkpoints(os.path.join(output_dir, "best"), keep=1)
    history: list[dict] = []
    start_epoch, best_value, best_epoch, bad_epochs = 0, -math.inf, -1, 0
    if resume and last_ckpt.latest_step() is not None:
        step = last_ckpt.latest_step()
        abstract = abstract_tree(state, state_sharding)
        state, _, meta = last_ckpt.restore(step, abstract, {"epoch": np.zeros((), np.int32)})
        start_epoch, best_value, best_epoch = int(meta["epoch"]) + 1, float(meta["best_value"]), int(meta["best_epoch"])
        bad_epochs, history = int(meta["bad_epochs"]), list(meta["history"])
        log(f"resuming after epoch {start_epoch} (best {cfg.selection_metric} {best_value:.4f} at epoch {best_epoch + 1})")
    else:
        state = jax.device_put(state, repl)
    train_step = make_train_step(cfg, model, tx, state_sharding, mesh)
    predict_fn = make_predict_fn(cfg, model)
    index = {name: i for i, name in enumerate(names)}
    rows = padded_rows(cfg.batch_size)
    encoded = [inputs.encode(s) for s in train.tokens]
    lengths = [len(s) for s in train.tokens]
    write_metrics = jax.process_index() == 0

    def evaluate(data: TaskData) -> dict:
        outputs = predict_all(cfg, predict_fn, state["params"], consts, inputs, data.tokens, mesh, cfg.batch_size * 2)
        return score(cfg, data, outputs, names, scheme)

    stopped_early = False
    epoch = start_epoch - 1
    for epoch in range(start_epoch, cfg.max_epochs):
        if cfg.patience and bad_epochs >= cfg.patience:
            stopped_early = True
            break
        order = epoch_order(lengths, rows, np.random.default_rng([cfg.seed, epoch]))
        bar = _progress(len(order), f"epoch {epoch + 1}/{cfg.max_epochs}", progress and write_metrics)
        t0, losses, pending = time.time(), [], None
        for idx in order:
            batch = inputs.batch([encoded[i] for i in idx], rows)
            batch.update(label_arrays(cfg, [train.labels[i] for i in idx], index, rows, batch["token_ids"].shape[1]))
            state, metrics = train_step(state, consts, global_batch(batch, mesh))
            if pending is not None:  # lag-1: read the previous step's loss while this one runs
                losses.append(float(pending["loss"]))
                _advance(bar, losses[-1])
            pending = metrics
        if pending is not None:
            losses.append(float(pending["loss"]))
            _advance(bar, losses[-1])
        if bar is not None:
            bar.close()
        record = {"epoch": epoch + 1, "step": int(state["step"]), "train_loss": float(np.mean(losses)),
                  "seconds": round(time.time() - t0, 2), "sentences_per_s": round(len(encoded) / (time.time() - t0), 1)}
        value = -float(np.mean(losses))
        if dev is not None:
            report = evaluate(dev)
            value = selection_value(cfg, report)
            record[f"dev_{cfg.selection_metric}"] = value
            if cfg.task == "tag":
                record.update(dev_precision=report["precision"], dev_recall=report["recall"])
        improved = value > best_value
        if improved:
            best_value, best_epoch, bad_epochs = value, epoch, 0
            best_ckpt.save(epoch, {"params": state["params"]}, {"epoch": np.int32(epoch)},
                           {"epoch": epoch, "value": value, "metric": cfg.selection_metric}, force=True)
        else:
            bad_epochs += 1
        record["best_epoch"] = best_epoch + 1
        history.append(record)
        last_ckpt.save(epoch, state, {"epoch": np.int32(epoch)},
                       {"epoch": epoch, "best_value": best_value, "best_epoch": best_epoch,
                        "bad_epochs": bad_epochs, "history": history}, force=True)
        if write_metrics:
            with open(os.path.join(output_dir, METRICS_FILE), "a", encoding="utf-8") as fh:
                fh.write(json.dumps(record) + "\n")
        log("  ".join(f"{k} {v:.4f}" if isinstance(v, float) else f"{k} {v}" for k, v in record.items()))
    last_ckpt.close()
    best_ckpt.wait()
    # ---- the selected model on dev and test
    best_params, best_meta = load_best_params(best_ckpt, state["params"], state_sharding["params"])
    best_ckpt.close()
    state = {**state, "params": best_params}
    summary: dict = {"epochs": len(history), "best_epoch": best_epoch + 1, "stopped_early": stopped_early,
                     "metric": cfg.selection_metric, "history": history, "output_dir": output_dir}
    for name, data in (("dev", dev), ("test", test)):
        if data is not None:
            report = evaluate(data)
            summary[name] = report
            if write_metrics:
                write_report(output_dir, name, report)
    if return_params:  # replicated: this host's copy
        summary["params"] = jax.tree_util.tree_map(lambda x: np.asarray(x.addressable_data(0)), best_params)
    return summary


def read_scheme(model_dir: str) -> Optional[str]:
    """The training file's tag scheme recorded in `model_dir` (None without tag_scheme.json)."""
    path = os.path.join(model_dir, SCHEME_FILE)
    if not os.path.exists(path):
        return None
    with open(path, encoding="utf-8") as fh:
        scheme = json.load(fh).get("scheme")
    if scheme is not None and scheme not in SCHEMES:
        raise ElmoError(f"unknown tag scheme {scheme!r} (expected one of {', '.join(SCHEMES)})", path)
    return scheme


def load_best_params(ckpts: Checkpoints, like: Any, sharding: Any) -> tuple[Any, dict]:
    step = ckpts.latest_step()
    if step is None:
        raise CheckpointError("no saved model (no complete checkpoint)", ckpts.directory)
    restored, _, meta = ckpts.restore(step, {"params": abstract_tree(like, sharding)},
                                      {"epoch": np.zeros((), np.int32)})
    return restored["params"], meta


def save_word_vectors(path: str, vectors: WordVectors) -> None:
    from ..io_utils import atomic_output

    with atomic_output(path, suffix=".npz") as tmp:
        with open(tmp, "wb") as fh:
            np.savez(fh, words=np.array(vectors.words, dtype=str), vectors=vectors.vectors,
                     lowercase=np.array(vectors.lowercase))


def _progress(total: int, desc: str, enabled: bool):
    if not enabled:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, leave=False, dynamic_ncols=True)


def _advance(bar, loss: float) -> None:
    if bar is not None:
        bar.update(1)
        bar.set_postfix(loss=f"{loss:.4f}", refresh=False)


# --------------------------------------------------------------------------- loading a trained model
class TaskPredictor:
    """A trained task model from its output directory: `predict(sentences)`, `evaluate(file)`."""

    def __init__(self, model_dir: os.PathLike | str, batch_size: int = 64):
        model_dir = os.fspath(model_dir)
        config_file = os.path.join(model_dir, CONFIG_FILE)
        if not os.path.exists(config_file):
            raise ElmoError("not a task model directory (no task_config.json)", model_dir)
        self.model_dir, self.batch_size = model_dir, batch_size
        self.cfg = TaskConfig.from_json(config_file)
        with open(os.path.join(model_dir, LABELS_FILE), encoding="utf-8") as fh:
            self.labels: list[str] = json.load(fh)
        self.scheme = read_scheme(model_dir)  # the training file's tag scheme (None: convert nothing)
        self.options = ModelOptions.from_json(os.path.join(model_dir, OPTIONS_FILE))
        self.mesh = shd.make_mesh()
        ckpts = Checkpoints(os.path.join(model_dir, "best"), async_save=False)
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
        with np.load(path, allow_pickle=False) as z:
            saved = WordVectors([str(w) for w in z["words"]], np.asarray(z["vectors"], np.float32),
                                bool(z["lowercase"]))
        if extend and self.cfg.word_vectors and os.path.exists(self.cfg.word_vectors):
            known = set(saved.words)
            new = {w for s in sentences for w in s}
            new = (new | {w.lower() for w in new}) - known
            if new:
                from .vectors import read_glove

                extra = read_glove(self.cfg.word_vectors, lowercase=saved.lowercase, vocab=new)
                if extra.words:
                    return WordVectors(saved.words + extra.words, np.concatenate([saved.vectors, extra.vectors]),
                                       saved.lowercase)
        return saved

    def predict_outputs(self, sentences: Sequence[Sequence[str]]) -> list:
        """Class probabilities [K] per sentence, or tag ids per token."""
        from ..chars import check_sentences

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
        if data.labels is None:
            raise InputError("evaluation needs gold labels", data.path)
        check_labels(self.cfg, model_view(data, self.scheme), self.labels)
        return score(self.cfg, data, self.predict_outputs(data.tokens), self.labels, self.scheme)

    def predict_file(self, input_path: str, output_path: str) -> int:
        """Predict every sentence of `input_path` and write them (JSONL for classify, CoNLL for tag:
        the tags in the scheme of the file's own tags, else in the training file's)."""
        from .data import write_classification_predictions, write_conll_predictions

        data = self.read(input_path, require_labels=False)
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
