"""Run `train_task()` in a fresh process with N simulated CPU devices (optionally as one process of
a multi-host job) and save the selected model's params: used by test_tasks.py.

    python task_worker.py TASK_CONFIG_JSON OUTPUT_DIR OUT_NPZ --devices 8 [--coordinator H:P --num-processes 2 --process-id 0]
"""
import argparse
import json
import os
import sys

ap = argparse.ArgumentParser()
ap.add_argument("config")
ap.add_argument("output_dir")
ap.add_argument("out")
ap.add_argument("--devices", type=int, default=1)
ap.add_argument("--coordinator")
ap.add_argument("--num-processes", type=int)
ap.add_argument("--process-id", type=int)
args = ap.parse_args()

os.environ["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={args.devices}"
os.environ["JAX_PLATFORMS"] = "cpu"
import jax  # noqa: E402

if args.coordinator:
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(args.coordinator, args.num_processes, args.process_id)

import numpy as np  # noqa: E402

from elmo_jax.tasks.config import TaskConfig  # noqa: E402
from elmo_jax.tasks.loop import train_task  # noqa: E402
from elmo_jax.weights import _flatten  # noqa: E402

cfg = TaskConfig.from_json(args.config)
assert jax.device_count() == args.devices * (args.num_processes or 1), jax.devices()
summary = train_task(cfg, args.output_dir, progress=False, log=lambda msg: None, return_params=True)
params = summary.pop("params")
if jax.process_index() == 0:
    np.savez(args.out, **{k: np.asarray(v) for k, v in _flatten(params).items()})
    with open(args.out + ".json", "w") as fh:
        json.dump({"history": summary["history"], "dev": summary.get("dev")}, fh)
print("worker done", jax.process_index(), file=sys.stderr)
