"""Task-model training and prediction throughput (prints numbers; not a test).

    python benchmarks/tasks.py [--shape small|tiny|fixture] [--sentences 2000] [--epochs 3]
        [--batch-size 32] [--crf] [--fine-tune]

Workload: a CoNLL tagging file built from the built-in corpus' sentences (natural lengths, tags by
a fixed rule: capitalised words are entities), random biLM weights of the named shape (or the
bilm-tf fixture). Training: sentences/s of each epoch from metrics.jsonl (epoch 1 includes the
compiles), the median of the later epochs. Prediction: `TaskPredictor.predict` sentences/s,
median of 3 passes after a warm-up pass.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

FIXTURES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "shared", "fixtures", "bilm-tf")


def random_bilm(shape: str, directory: str) -> tuple[str, str]:
    import jax

    from elmo_jax.modules import BiLM
    from elmo_jax.options import ModelOptions, small_options
    from elmo_jax.weights import write_bilm_hdf5

    if shape == "fixture":
        return os.path.join(FIXTURES, "options.json"), os.path.join(FIXTURES, "lm_weights.hdf5")
    if shape == "small":
        options = small_options()
    else:
        options = ModelOptions(char_embed_dim=8, filters=((1, 16), (2, 16), (3, 32), (4, 64)), n_highway=1,
                               lstm_dim=256, projection_dim=64, n_layers=2, use_skip_connections=True,
                               cell_clip=3, proj_clip=3)
    options = options.for_inference()
    params = BiLM(options).init(jax.random.key(0), np.ones((1, 3, options.max_characters_per_token), np.int32))
    options.to_json(os.path.join(directory, "options.json"))
    write_bilm_hdf5(os.path.join(directory, "weights.hdf5"), params["params"], options)
    return os.path.join(directory, "options.json"), os.path.join(directory, "weights.hdf5")


def conll_file(path: str, n: int) -> int:
    from elmo_jax.corpus import builtin_corpus
    from examples.swap_task import read_sentences

    sentences = [s for s in read_sentences(builtin_corpus()["train_files"]) if 3 <= len(s) <= 60][:n]
    with open(path, "w", encoding="utf-8") as fh:
        for s in sentences:
            prev = "O"
            for w in s:
                tag = "O" if not w[:1].isupper() else ("I-ENT" if prev != "O" else "B-ENT")
                fh.write(f"{w} {tag}\n")
                prev = tag
            fh.write("\n")
    return sum(len(s) for s in sentences)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shape", default="small", choices=("tiny", "small", "fixture"))
    ap.add_argument("--sentences", type=int, default=2000)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--crf", action="store_true")
    ap.add_argument("--fine-tune", action="store_true")
    args = ap.parse_args()

    from elmo_jax.tasks.config import TaskConfig
    from elmo_jax.tasks.labels import read_task_file
    from elmo_jax.tasks.loop import train_task
    from elmo_jax.tasks.predictor import TaskPredictor

    with tempfile.TemporaryDirectory() as tmp:
        options, weights = random_bilm(args.shape, tmp)
        data = os.path.join(tmp, "train.conll")
        n_tokens = conll_file(data, args.sentences)
        cfg = TaskConfig(task="tag", train=data, options=options, weights=weights, crf=args.crf,
                         fine_tune=args.fine_tune, batch_size=args.batch_size, max_epochs=args.epochs, patience=0)
        t0 = time.time()
        summary = train_task(cfg, os.path.join(tmp, "out"), progress=False, log=lambda m: None)
        total = time.time() - t0
        rates = [h["sentences_per_s"] for h in summary["history"]]
        later = statistics.median(rates[1:]) if len(rates) > 1 else rates[0]
        mode = ("fine-tune" if args.fine_tune else "frozen, cached tokens") + (", CRF" if args.crf else ", softmax")
        print(f"shape {args.shape}, tagger ({mode}), {args.sentences} sentences / {n_tokens} tokens, "
              f"batch {args.batch_size}")
        print(f"  train: epoch 1 (compiles) {rates[0]:.0f} sentences/s; later epochs median {later:.0f} sentences/s "
              f"= {later * n_tokens / args.sentences:.0f} tokens/s; whole run {total:.1f} s")
        predictor = TaskPredictor(os.path.join(tmp, "out"), batch_size=64)
        sentences = read_task_file(cfg, data).tokens
        t0 = time.time()
        predictor.predict(sentences)
        first = time.time() - t0
        times = []
        for _ in range(3):
            t0 = time.time()
            predictor.predict(sentences)
            times.append(time.time() - t0)
        med = statistics.median(times)
        print(f"  predict: first pass {len(sentences) / first:.0f} sentences/s (token table + compiles); "
              f"median of 3 {len(sentences) / med:.0f} sentences/s = {n_tokens / med:.0f} tokens/s")


if __name__ == "__main__":
    main()
