"""A task model directory: what `train_task` writes and `TaskPredictor` reads.

    task_config.json   the TaskConfig
    labels.json        the label (classify) or tag (tag) names, in output order
    tag_scheme.json    tag: {"scheme": the training file's, "labels": that of labels.json}
    options.json       the biLM's options
    word_vectors.npz   the static word vectors of the data's words (with `word_vectors`)
    metrics.jsonl      one record per epoch and per `log_every` steps (process 0)
    tensorboard/       the same scalars as TensorBoard events (when tensorboardX is installed)
    best/              Orbax: the selected params
    checkpoints/       Orbax: the last epoch's whole train state, or a stopped epoch's (--resume)
    {dev,test}_report.{json,txt}
    .lock              held by the run using the directory
"""
from __future__ import annotations

import json
import os
from typing import Any, Optional, Sequence

import numpy as np

from ..config import ConfigError
from ..errors import ElmoError
from ..io_utils import atomic_output, atomic_write_text
from ..io_utils import check_output_file as io_check_output_file
from ..options import ModelOptions
from ..train.checkpoint import CheckpointError, Checkpoints, abstract_tree
from .config import TaskConfig
from .metrics import format_report
from .tags import SCHEMES, internal_scheme
from ..vectors import WordVectors

CONFIG_FILE = "task_config.json"
LABELS_FILE = "labels.json"
SCHEME_FILE = "tag_scheme.json"  # tag: {"scheme": the training file's, "labels": that of labels.json}
OPTIONS_FILE = "options.json"
VECTORS_FILE = "word_vectors.npz"
METRICS_FILE = "metrics.jsonl"
TENSORBOARD_DIR = "tensorboard"
CHECKPOINT_DIR = "checkpoints"
BEST_DIR = "best"


def check_output_dir(cfg: TaskConfig, output_dir: str, resume: bool) -> None:
    """A new run needs a directory without a trained model; `resume` one with the same settings."""
    if os.path.exists(output_dir) and not os.path.isdir(output_dir):
        raise ElmoError("the output directory is a file", output_dir)
    saved = os.path.join(output_dir, CONFIG_FILE)
    has_ckpt = (os.path.isdir(os.path.join(output_dir, CHECKPOINT_DIR))
                and os.listdir(os.path.join(output_dir, CHECKPOINT_DIR)))
    if resume:
        if not os.path.exists(saved):
            raise ElmoError("--resume: the output directory holds no task run (no task_config.json)", output_dir)
        old = TaskConfig.from_json(saved).to_dict()
        new = cfg.to_dict()
        changed = sorted(k for k in old if k not in ("max_epochs", "patience") and old[k] != new[k])
        if changed:
            raise ConfigError(f"--resume with different settings: {', '.join(changed)} (the saved run has "
                              + ", ".join(f"{k}={old[k]!r}" for k in changed) + ")", saved)
    elif has_ckpt or os.path.exists(os.path.join(output_dir, BEST_DIR)):
        raise ElmoError("the output directory already holds a trained task model; pass --resume to continue "
                        "it, or choose another --output-dir (nothing was overwritten)", output_dir)


def write_model_files(cfg: TaskConfig, output_dir: str, resume: bool, names: Sequence[str], scheme: Optional[str],
                      options: ModelOptions, vectors: Optional[WordVectors]) -> None:
    """Everything but the checkpoints and reports: config, labels, tag scheme, options, vectors."""
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


def read_model_config(model_dir: str) -> TaskConfig:
    """The TaskConfig of a trained task model directory (an ElmoError when it is none)."""
    config_file = os.path.join(model_dir, CONFIG_FILE)
    if not os.path.isfile(config_file):
        raise ElmoError("not a task model directory (no task_config.json)", model_dir)
    return TaskConfig.from_json(config_file)


def _inside(path: str, directory: str) -> bool:
    path, directory = os.path.realpath(path), os.path.realpath(directory)
    try:
        return os.path.commonpath([path, directory]) == directory
    except ValueError:  # different drives
        return False


def check_output_file(path: str, inputs: Sequence[Optional[str]] = (), model_dir: Optional[str] = None,
                      overwrite: bool = True, option: str = "--output") -> None:
    """Before any compute: `path` (a file that evaluate/predict write) may not lie in the model
    directory (whose files it would damage), nor be one of `inputs`, nor a directory, nor (unless
    `overwrite`) an existing file, nor in a directory that is missing or not writable
    (`io_utils.check_output_file`)."""
    path = os.fspath(path)
    if model_dir is not None and _inside(path, model_dir):
        raise ElmoError(f"{option} lies inside the model directory {model_dir}; write it elsewhere "
                        "(nothing was written)", path)
    io_check_output_file(path, inputs=inputs, overwrite=overwrite, option=option)


def read_labels(model_dir: str) -> list[str]:
    with open(os.path.join(model_dir, LABELS_FILE), encoding="utf-8") as fh:
        return json.load(fh)


def write_report(output_dir: str, name: str, report: dict) -> None:
    atomic_write_text(os.path.join(output_dir, f"{name}_report.json"), json.dumps(report, indent=2) + "\n")
    atomic_write_text(os.path.join(output_dir, f"{name}_report.txt"), format_report(report) + "\n")


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


def read_word_vectors(path: str) -> WordVectors:
    """The vectors `save_word_vectors` wrote."""
    with np.load(path, allow_pickle=False) as z:
        return WordVectors([str(w) for w in z["words"]], np.asarray(z["vectors"], np.float32), bool(z["lowercase"]))


def save_word_vectors(path: str, vectors: WordVectors) -> None:
    with atomic_output(path, suffix=".npz") as tmp:
        with open(tmp, "wb") as fh:
            np.savez(fh, words=np.array(vectors.words, dtype=str), vectors=vectors.vectors,
                     lowercase=np.array(vectors.lowercase))
