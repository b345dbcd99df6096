"""Export a checkpoint as files bilm-tf, AllenNLP and elmo-jax read: options.json (n_characters
262), weights.hdf5 (exact bilm-tf layout, no softmax), params.npz (everything, softmax included,
bilm-tf names + `softmax/W`, `softmax/b`) and the vocabulary."""
from __future__ import annotations

import json
import os
import shutil
from typing import Optional

from ..weights import export_npz, write_bilm_hdf5
from .rundir import load_run_params, resolve_vocab_path


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
    shutil.copyfile(resolve_vocab_path(cfg), paths["vocab.txt"])
    with open(os.path.join(output_dir, "export.json"), "w", encoding="utf-8") as fh:
        json.dump({"run_dir": os.path.abspath(run_dir), "step": step}, fh)
    return {"step": step, **paths}
