"""Does pretraining help? The swap-detection task (real sentence vs two words swapped) with the same
classifier on frozen ELMo from the pretrained tiny biLM and from an untrained biLM of the same
shape (prints numbers; tests/test_tasks.py asserts the margin).

    python benchmarks/pretraining_helps.py [--export runs/tiny/export] [--encoders bilstm,pool] [--seeds 0]
        [--n-train 2000]

`--export` defaults to runs/tiny/export (what `elmo-jax demo` writes); it is trained first if missing.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--export", default="runs/tiny/export")
    ap.add_argument("--encoders", default="bilstm,pool")
    ap.add_argument("--seeds", default="0")
    ap.add_argument("--n-train", type=int, default=2000)
    args = ap.parse_args()

    from elmo_jax.corpus import builtin_corpus
    from elmo_jax.tasks.config import TaskConfig
    from elmo_jax.tasks.loop import train_task
    from examples.swap_task import write_swap_task

    if not os.path.exists(os.path.join(args.export, "options.json")):
        from elmo_jax.config import TrainConfig
        from elmo_jax.train.export import export_run
        from elmo_jax.train.loop import train

        run_dir = os.path.dirname(os.path.abspath(args.export))
        train(TrainConfig.from_json("configs/tiny.json"), run_dir, progress=False)
        export_run(run_dir, args.export)
    corpus = builtin_corpus()
    with tempfile.TemporaryDirectory() as tmp:
        for encoder in args.encoders.split(","):
            results: dict[str, list[float]] = {"pretrained": [], "untrained": []}
            for seed in map(int, args.seeds.split(",")):
                paths = write_swap_task(os.path.join(tmp, f"swap{seed}"), corpus["train_files"],
                                        corpus["heldout_files"], n_train=args.n_train, n_dev=200, n_test=400, seed=seed)
                for name in results:
                    cfg = TaskConfig(task="classify", train=paths["train"], dev=paths["dev"], test=paths["test"],
                                     options=args.export, untrained_bilm=name == "untrained", encoder=encoder,
                                     hidden_dim=64, max_epochs=15, patience=3, batch_size=32, learning_rate=0.003,
                                     seed=seed)
                    t0 = time.time()
                    s = train_task(cfg, os.path.join(tmp, f"{encoder}-{name}-{seed}"), progress=False, log=lambda m: None)
                    results[name].append(s["test"]["accuracy"])
                    print(f"  {encoder:6s} {name:10s} seed {seed}: test accuracy {s['test']['accuracy']:.3f} "
                          f"(best epoch {s['best_epoch']}, {time.time() - t0:.0f} s)", flush=True)
            print(f"{encoder}: pretrained {statistics.median(results['pretrained']):.3f} vs untrained "
                  f"{statistics.median(results['untrained']):.3f} (median test accuracy over seeds {args.seeds})")


if __name__ == "__main__":
    main()
