"""Pretrain ELMo: `python train.py --config configs/tiny.json [--run-dir DIR] [--set key=value ...]`.

The same as `elmo-jax train`; see `elmo-jax train --help`."""
import sys

from elmo_jax.launch import main

if __name__ == "__main__":
    sys.exit(main(prefix=("train",)))
