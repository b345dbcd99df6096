"""Run pretraining (`train()`) or, with `--task`, task-model training (`train_task()`) in a fresh
process with N simulated CPU devices (and optionally as one process of a multi-host job), then
save the final (task: selected) params and metrics: used by test_train.py and test_tasks.py.

    python train_worker.py CONFIG_JSON RUN_DIR OUT_NPZ --devices 8 [--task] [--coordinator H:P --num-processes 2 --process-id 0]
"""
import argparse
import json
import os
import sys

ap = argparse.ArgumentParser()
ap.add_argument("config")
ap.add_argument("run_dir")
ap.add_argument("out")
ap.add_argument("--devices", type=int, default=1)
ap.add_argument("--task", action="store_true", help="CONFIG_JSON is a task_config.json")
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

from elmo_jax.weights import _flatten  # noqa: E402

assert jax.device_count() == args.devices * (args.num_processes or 1), jax.devices()
if args.task:
    from elmo_jax.tasks.config import TaskConfig
    from elmo_jax.tasks.loop import train_task

    summary = train_task(TaskConfig.from_json(args.config), args.run_dir, progress=False, log=lambda msg: None,
                         return_params=True)
    last = {"history": summary["history"], "dev": summary.get("dev"), "params": summary["params"]}
else:
    from elmo_jax.config import TrainConfig
    from elmo_jax.train.loop import train

    last = train(TrainConfig.from_dict(json.load(open(args.config))), args.run_dir, progress=False,
                 return_params=True)
params = last.pop("params")
if jax.process_index() == 0:
    flat = {k: np.asarray(v) for k, v in _flatten(params).items()}
    np.savez(args.out, **flat)
    with open(args.out + ".json", "w") as fh:
        json.dump(last, fh)
print("worker done", jax.process_index(), file=sys.stderr)
