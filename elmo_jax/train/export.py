"""Export a checkpoint as files bilm-tf, AllenNLP and elmo-jax read: options.json (n_characters
262), weights.hdf5 (exact bilm-tf layout, no softmax), params.npz (everything, softmax included,
bilm-tf names + `softmax/W`, `softmax/b`) and the vocabulary."""
from __future__ import annotations

import json
import os
import shutil
from typing import Optional

from ..errors import ElmoError
from ..io_utils import atomic_write_text, check_output_dir
from ..weights import export_npz, write_bilm_hdf5
from .rundir import CHECKPOINT_DIR, load_run_params, resolve_vocab_path


EXPORT_FILES = ("options.json", "weights.hdf5", "params.npz", "vocab.txt", "export.json")


def check_export_dir(run_dir: str, output_dir: str, overwrite: bool = False) -> None:
    """One `ElmoError` line, before anything is read or written, if `output_dir` may not receive an
    export of `run_dir`: a file; the run directory itself or a folder inside its checkpoints; a
    non-empty directory that is not an earlier export of the same run (unless `overwrite`)."""
    check_output_dir(output_dir, "--output-dir")
    out, run = os.path.realpath(output_dir), os.path.realpath(run_dir)
    checkpoints = os.path.join(run, CHECKPOINT_DIR)
    if out == run or out == checkpoints or out.startswith(checkpoints + os.sep):
        raise ElmoError("--output-dir is the run directory or inside its checkpoints; export to a folder of its own "
                        "(e.g. RUN_DIR/export)", output_dir)
    if not os.path.isdir(out) or not os.listdir(out) or overwrite:
        return
    try:
        with open(os.path.join(out, "export.json"), encoding="utf-8") as fh:
            source = json.load(fh).get("run_dir")
    except (OSError, ValueError, AttributeError):
        source = None
    if source is None or os.path.realpath(source) != run:
        what = f"an export of another run ({source})" if source else "not an earlier export of this run"
        raise ElmoError(f"--output-dir is not empty and is {what}; nothing was written (choose a new directory, "
                        f"or pass --overwrite to replace its {', '.join(EXPORT_FILES)})", output_dir)


def export_run(run_dir: str, output_dir: str, step: Optional[int] = None, overwrite: bool = False) -> dict:
    """Write the export files for a run's checkpoint; returns their paths. `output_dir` must be new,
    empty or an earlier export of the same run (whose files are replaced), unless `overwrite`."""
    check_export_dir(run_dir, output_dir, overwrite)
    cfg, params, step, _ = load_run_params(run_dir, step)
    os.makedirs(output_dir, exist_ok=True)
    options = cfg.model.for_inference()
    paths = {name: os.path.join(output_dir, name) for name in ("options.json", "weights.hdf5", "params.npz",
                                                               "vocab.txt")}
    options.to_json(paths["options.json"])
    write_bilm_hdf5(paths["weights.hdf5"], params, options)
    export_npz(paths["params.npz"], params, options, extra={"softmax": params["softmax"]})
    shutil.copyfile(resolve_vocab_path(cfg), paths["vocab.txt"])
    atomic_write_text(os.path.join(output_dir, "export.json"),
                      json.dumps({"run_dir": os.path.abspath(run_dir), "step": step}))
    return {"step": step, **paths}
