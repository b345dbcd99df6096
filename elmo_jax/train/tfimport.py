"""Import a bilm-tf training checkpoint (TF tensor bundle: softmax and Adagrad slots included) as
an elmo-jax run directory, so that `elmo-jax perplexity`, `export` and `train` with
`init_from=RUN_DIR` (bilm-tf's restart.py, optimizer state included, or a fresh optimizer with
`init_optimizer_state=false`) work on the published TF checkpoints. No TensorFlow.

    RUN_DIR/config.json              TrainConfig: the model and training keys of the options.json
    RUN_DIR/vocab.txt                the vocabulary (a copy; config.json names it)
    RUN_DIR/checkpoints/<step>/      one Orbax checkpoint at the TF `global_step`

Mapping (format.md section 7): each biLM variable `lm/...` is the weight-file dataset bilm-tf's
`dump_weights` makes of it (`weights.tf_variable_name`), so `weights.arrays_to_params` builds the
params (LSTM layout and gate order as for weight files); `lm/softmax/{W,b}` become
`params['softmax']`; each `<variable>/Adagrad` slot (TF Adagrad's accumulator, initial value 1.0,
updated as acc += g^2, var -= lr g / sqrt(acc)) becomes the same leaf of optax's Adagrad
`sum_of_squares`, which is the same quantity. The LSTM carry starts at zero (bilm-tf does not
save it).

Bounded memory: every check (files, shapes against options.json, vocabulary size against the
softmax rows, checksums) comes before anything is written; the tensors are memory-mapped from the
data file and written chunk by chunk (plain zarr, not OCDBT), so the softmax is never copied into
this process's memory (only the direction-stacked LSTM arrays are). The run directory is written
under a temporary name and renamed when complete.
"""
from __future__ import annotations

import contextlib
import os
import shutil
import sys
from typing import Any, Optional

import jax
import numpy as np
import optax
from tqdm import tqdm

from ..config import TrainConfig
from ..errors import ElmoError, WeightsError
from ..options import ModelOptions
from ..tfcheckpoint import TFCheckpoint
from ..vocab import Vocabulary
from ..weights import arrays_to_params, expected_shapes, tf_variable_name
from .checkpoint import Checkpoints, quiet_partial_restore
from .rundir import CHECKPOINT_DIR, CONFIG_FILE, IMPORTED_KEY, checkpoint_meta
from .step import init_state

SLOT_SUFFIX = "/Adagrad"
SOFTMAX_VARIABLES = {"W": "lm/softmax/W", "b": "lm/softmax/b"}
STEP_VARIABLE = "global_step"
VOCAB_FILE = "vocab.txt"
CHUNK_BYTES = 64 << 20  # stored chunk size of the state's arrays

#: options.json training keys (bilm-tf `train_elmo.py`) -> TrainConfig keys.
TRAINING_KEYS = {"batch_size": "batch_size", "unroll_steps": "unroll_steps", "dropout": "dropout",
                 "all_clip_norm_val": "clip_norm", "n_epochs": "n_epochs", "learning_rate": "learning_rate"}


class ReadOnlyArray(np.ndarray):
    """A host array Orbax may write without its defensive deep copy (these are read-only memory
    maps of the TF data file, or arrays made for this save only; a copy would double the memory)."""

    def __deepcopy__(self, memo: dict) -> "ReadOnlyArray":
        return self


def _unshared(x: Any) -> ReadOnlyArray:
    return np.asarray(x).view(ReadOnlyArray)


def config_from_options(options: ModelOptions, vocab_path: str, vocab_size: int,
                        source: str) -> tuple[TrainConfig, list[str]]:
    """The run's TrainConfig: the model, the training keys bilm-tf keeps in options.json, bilm-tf's
    optimizer (Adagrad, initial accumulator 1.0) and the vocabulary. Returns (config, notes)."""
    extra, notes = options.extra, []
    data: dict[str, Any] = {"model": options.for_training().to_dict(), "vocab": vocab_path,
                            "train_files": "", "heldout_files": None, "optimizer": "adagrad", "initial_accumulator": 1.0}
    for key, field in TRAINING_KEYS.items():
        if extra.get(key) is not None:
            data[field] = extra[key]
    negatives = extra.get("n_negative_samples_batch")
    if negatives:
        if negatives < vocab_size:
            data["n_negative_samples"] = negatives
        else:
            notes.append(f"n_negative_samples_batch {negatives} is not below the vocabulary size {vocab_size}: "
                         "the run uses the full softmax")
    return TrainConfig.from_dict(data, source=source).validate(source), notes


def plan_variables(ckpt: TFCheckpoint, options: ModelOptions, vocab_size: int,
                   options_file: str) -> tuple[dict[str, str], bool, list[str]]:
    """Check the checkpoint against the options and the vocabulary before reading any tensor:
    ({weight-file name: TF variable}, whether Adagrad slots are present, notes)."""
    where = ckpt.index_file
    wanted = {name: (tf_variable_name(name), shape) for name, shape in expected_shapes(options).items()}
    p = options.projection_dim
    wanted["softmax/W"] = (SOFTMAX_VARIABLES["W"], (vocab_size, p))
    wanted["softmax/b"] = (SOFTMAX_VARIABLES["b"], (vocab_size,))
    for name, (variable, shape) in wanted.items():
        if variable not in ckpt:
            raise WeightsError(f"the checkpoint has no variable '{variable}' (expected shape {list(shape)} from "
                               f"{options_file}); is it a bilm-tf training checkpoint of these options?", where)
        actual = ckpt.entries[variable].shape
        if variable == SOFTMAX_VARIABLES["W"] and len(actual) == 2 and actual[0] != vocab_size:
            raise WeightsError(f"the vocabulary has {vocab_size} words but the checkpoint's softmax "
                               f"'{variable}' has {actual[0]} rows: pass the vocabulary the model was trained "
                               "with", where)
        if actual != shape:
            raise WeightsError(f"variable '{variable}' has shape {list(actual)}, expected {list(shape)} from "
                               f"{options_file} (do the options belong to this checkpoint?)", where)
        if ckpt.entries[variable].dtype_code != 1:
            raise WeightsError(f"variable '{variable}' has dtype {ckpt.entries[variable].dtype_name}, "
                               "expected float32", where)
    slots = [variable + SLOT_SUFFIX for variable, _ in wanted.values()]
    present = [s for s in slots if s in ckpt]
    if present and len(present) != len(slots):
        missing = sorted(set(slots) - set(present))
        raise WeightsError(f"the checkpoint has Adagrad slots for some variables but not for "
                           f"{', '.join(missing[:3])}{' ...' if len(missing) > 3 else ''}", where)
    for slot in present:
        if ckpt.entries[slot].shape != ckpt.entries[slot[: -len(SLOT_SUFFIX)]].shape:
            raise WeightsError(f"Adagrad slot '{slot}' has shape {list(ckpt.entries[slot].shape)}, unlike its "
                               "variable", where)
    notes = [] if present else ["the checkpoint has no Adagrad slots: the accumulators start at 1.0 "
                                "(bilm-tf's initial value)"]
    used = {v for v, _ in wanted.values()} | set(present) | {STEP_VARIABLE}
    ignored = sorted(set(ckpt.entries) - used)
    if ignored:
        notes.append(f"ignored {len(ignored)} checkpoint variable(s): {', '.join(ignored[:5])}"
                     + (" ..." if len(ignored) > 5 else ""))
    return {name: variable for name, (variable, _) in wanted.items()}, bool(present), notes


def _tree(ckpt: TFCheckpoint, names: dict[str, str], options: ModelOptions, suffix: str = "") -> dict:
    """The params tree (softmax included) of the variables, or of their slots (`suffix`)."""
    arrays = {name: ckpt.array(variable + suffix, verify=False) for name, variable in names.items()}
    params = arrays_to_params({k: v for k, v in arrays.items() if not k.startswith("softmax/")}, options)
    params["softmax"] = {"W": arrays["softmax/W"], "b": arrays["softmax/b"]}
    return params


def build_state(ckpt: TFCheckpoint, names: dict[str, str], has_slots: bool, cfg: TrainConfig,
                vocab_size: int, step: int) -> dict:
    """The train state (host arrays, memory-mapped where they can be) in `init_state`'s exact
    structure, shapes and dtypes."""
    abstract = jax.eval_shape(lambda k: init_state(cfg, vocab_size, k), jax.random.key(cfg.seed))
    params = _tree(ckpt, names, cfg.model)
    if has_slots:
        accumulators = _tree(ckpt, names, cfg.model, SLOT_SUFFIX)
    else:
        accumulators = jax.tree_util.tree_map(lambda x: np.full(x.shape, cfg.initial_accumulator, np.float32), params)
    state = {
        "step": np.asarray(step, np.int32),
        "params": params,
        "opt_state": optax.tree_utils.tree_set(abstract["opt_state"], sum_of_squares=accumulators),
        "rng": np.asarray(jax.random.key_data(jax.random.fold_in(jax.random.key(cfg.seed), 1))),
        "lstm_state": jax.tree_util.tree_map(lambda x: np.zeros(x.shape, x.dtype), abstract["lstm_state"]),
    }
    if jax.tree_util.tree_structure(state) != jax.tree_util.tree_structure(abstract):
        raise AssertionError(f"imported state structure {jax.tree_util.tree_structure(state)} differs from "
                             f"the train state's {jax.tree_util.tree_structure(abstract)}")
    for (path, leaf), want in zip(jax.tree_util.tree_leaves_with_path(state), jax.tree_util.tree_leaves(abstract)):
        if np.shape(leaf) != want.shape or np.asarray(leaf).dtype != want.dtype:
            raise AssertionError(f"imported {jax.tree_util.keystr(path)}: {np.shape(leaf)} {np.asarray(leaf).dtype}, "
                                 f"train state {want.shape} {want.dtype}")
    return jax.tree_util.tree_map(_unshared, state)


def _checked_output_dir(output_dir: str) -> None:
    if os.path.exists(output_dir) and (not os.path.isdir(output_dir) or os.listdir(output_dir)):
        raise ElmoError("the output directory exists and is not empty; choose a new --output-dir "
                        "(nothing was overwritten)", output_dir)
    parent = os.path.dirname(os.path.abspath(output_dir))
    if not os.path.isdir(parent):
        raise ElmoError("cannot write the run directory: its parent directory does not exist", output_dir)


def import_tf_checkpoint(checkpoint: str, vocab_file: str, output_dir: str, options_file: Optional[str] = None,
                         progress: bool = True) -> dict:
    """Write `output_dir` as an elmo-jax run directory holding the TF checkpoint (see the module
    docstring). Returns a summary: step, vocabulary size, notes, paths."""
    ckpt = TFCheckpoint(checkpoint)  # index, shards and their sizes checked here
    options_file = options_file or os.path.join(os.path.dirname(ckpt.prefix), "options.json")
    if not os.path.exists(options_file):
        raise ElmoError("no options.json next to the checkpoint; pass --options (bilm-tf's options.json of "
                        "this model)", options_file)
    options = ModelOptions.from_json(options_file)
    vocab = Vocabulary.from_file(vocab_file)
    output_dir = os.path.abspath(output_dir)
    _checked_output_dir(output_dir)
    cfg, notes = config_from_options(options, os.path.join(output_dir, VOCAB_FILE), len(vocab), options_file)
    names, has_slots, more = plan_variables(ckpt, options, len(vocab), options_file)
    notes += more
    step = 0
    if STEP_VARIABLE in ckpt:
        step = int(np.asarray(ckpt.array(STEP_VARIABLE)).reshape(-1)[0])
    else:
        notes.append("the checkpoint has no global_step: step 0")

    used = list(names.values()) + ([v + SLOT_SUFFIX for v in names.values()] if has_slots else [])
    total = sum(ckpt.entries[v].size for v in used)
    with tqdm(total=total, unit="B", unit_scale=True, desc="verifying checksums", file=sys.stderr,
              disable=not progress) as bar:
        ckpt.verify(used, progress=bar.update)

    tmp = f"{output_dir}.importing-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    os.makedirs(tmp)
    try:
        vocab.save(os.path.join(tmp, VOCAB_FILE))
        cfg.to_json(os.path.join(tmp, CONFIG_FILE))
        state = build_state(ckpt, names, has_slots, cfg, len(vocab), step)
        meta = {**checkpoint_meta(cfg, len(vocab)), IMPORTED_KEY: ckpt.prefix}
        ckpts = Checkpoints(os.path.join(tmp, CHECKPOINT_DIR), keep=1, async_save=False, use_ocdbt=False)
        try:
            with quiet_partial_restore():  # absl's notes about OCDBT on a plain-zarr save are noise
                ckpts.save(step, state, {"imported": np.zeros((), np.int32)}, meta, force=True,
                           chunk_bytes=CHUNK_BYTES)
        finally:
            ckpts.close()
        del state
        with contextlib.suppress(FileNotFoundError):
            os.rmdir(output_dir)  # an empty directory (checked above) is replaced
        os.rename(tmp, output_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return {"step": step, "vocab_size": len(vocab), "notes": notes, "run_dir": output_dir,
            "checkpoint": ckpt.prefix, "options": os.path.abspath(options_file)}
