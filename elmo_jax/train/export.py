"""Export a checkpoint as files bilm-tf, AllenNLP and elmo-jax read: options.json (n_characters
262), weights.hdf5 (exact bilm-tf layout, no softmax), params.npz (everything, softmax included,
bilm-tf names + `softmax/W`, `softmax/b`) and the vocabulary."""
from __future__ import annotations

import json
import os
import shutil
from typing import Optional

import jax
import numpy as np

from ..config import TrainConfig
from ..errors import ElmoError
from ..weights import export_npz, write_bilm_hdf5
from .checkpoint import CheckpointError, Checkpoints


def load_run_params(run_dir: str, step: Optional[int] = None) -> tuple[TrainConfig, dict, int, dict]:
    """(config, params as NumPy, step, meta) of a run's checkpoint (latest, or `step`)."""
    from .step import init_state

    config_file = os.path.join(run_dir, "config.json")
    if not os.path.exists(config_file):
        raise ElmoError("not a run directory (no config.json)", run_dir)
    cfg = TrainConfig.from_json(config_file)
    ckpts = Checkpoints(os.path.join(run_dir, "checkpoints"), async_save=False)
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
        data_abstract = _data_abstract(ckpts, step)
        state, _, meta = ckpts.restore(step, abstract, data_abstract)
    finally:
        ckpts.close()
    params = jax.tree_util.tree_map(np.asarray, state["params"])
    return cfg, params, step, meta


def _data_abstract(ckpts: Checkpoints, step: int):
    """The saved data-position tree's shapes, read from the checkpoint's own metadata."""
    from .checkpoint import _quiet_partial_restore

    with _quiet_partial_restore():
        item = ckpts.manager.item_metadata(step)
    tree = item["data"] if item is not None and "data" in item else None
    if tree is None:
        return None
    return jax.tree_util.tree_map(lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype), tree,
                                  is_leaf=lambda x: hasattr(x, "shape") and hasattr(x, "dtype"))


def export_run(run_dir: str, output_dir: str, step: Optional[int] = None) -> dict:
    """Write the export files for a run's checkpoint; returns their paths."""
    cfg, params, step, _ = load_run_params(run_dir, step)
    os.makedirs(output_dir, exist_ok=True)
    options = cfg.model.for_inference()
    paths = {name: os.path.join(output_dir, name) for name in ("options.json", "weights.hdf5", "params.npz",
                                                               "vocab.txt")}
    options.to_json(paths["options.json"])
    write_bilm_hdf5(paths["weights.hdf5"], params, options)
    export_npz(paths["params.npz"], params, options, extra={"softmax": params["softmax"]})
    from .loop import resolve_vocab_path

    shutil.copyfile(resolve_vocab_path(cfg), paths["vocab.txt"])
    with open(os.path.join(output_dir, "export.json"), "w", encoding="utf-8") as fh:
        json.dump({"run_dir": os.path.abspath(run_dir), "step": step}, fh)
    return {"step": step, **paths}
