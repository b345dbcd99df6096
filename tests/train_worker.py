"""Run `train()` in a fresh process with N simulated CPU devices (and optionally as one process
of a multi-host job), then save the final params and metrics: used by test_train.py.

    python train_worker.py CONFIG_JSON RUN_DIR OUT_NPZ --devices 8 [--coordinator H:P --num-processes 2 --process-id 0]
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

from elmo_jax.config import TrainConfig  # noqa: E402
from elmo_jax.train.loop import train  # noqa: E402
from elmo_jax.weights import _flatten  # noqa: E402

cfg = TrainConfig.from_dict(json.load(open(args.config)))
assert jax.device_count() == args.devices * (args.num_processes or 1), jax.devices()
last = train(cfg, args.run_dir, progress=False, return_params=True)
params = last.pop("params")
if jax.process_index() == 0:
    flat = {k: np.asarray(v) for k, v in _flatten(params).items()}
    np.savez(args.out, **flat)
    with open(args.out + ".json", "w") as fh:
        json.dump(last, fh)
print("worker done", jax.process_index(), file=sys.stderr)
