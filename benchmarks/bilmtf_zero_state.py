"""bilm-tf's own trainer, then its full-softmax heldout perplexity from the zero LSTM state and from
the state its training carried (prints numbers; not a test).

    bash ../shared/tools/bilm-tf/setup.sh ~/.cache/bilm-tf-ref      # once, ~2 minutes
    python benchmarks/bilmtf_zero_state.py --bilm-tf ~/.cache/bilm-tf-ref --train 'corpus/train/*.txt' \\
        --heldout 'corpus/heldout/*.txt' --vocab corpus/vocab.txt [--steps 600] [--seed 0] [--negatives 2048]

bilm-tf carries each batch row's LSTM state from batch to batch and never resets it, so its LM
only learns from carried states, while its `test`, evaluation and every embedder start from the
zero state. This trains bilm-tf (`bilm.training.train`, the mid shape and recipe of
`benchmarks/seeds.py`: LSTM 512 / projection 128, filters to width 5, 1 highway, batch 32 x 20,
Adagrad 0.2, clip 10, dropout 0.1; `--negatives 0`: full softmax), keeps the state its `train()`
ends with (read from its locals when it returns), then runs `--batches` heldout batches of 32 x 20
twice: from the zero state and from that carried state. Each line gives the forward / backward /
average perplexity and the fraction of each LSTM layer's cells at the cell clip at the end.
`benchmarks/seeds.py` prints the same two views of elmo-jax runs (`elmo-jax perplexity` with and
without `--from-training-state`). bilm-tf runs in its own virtualenv through
`../shared/tools/bilm-tf/bilmtf_shim.py`; this project never imports TensorFlow.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)  # before the repository root, whose train.py has the same name

from vs_bilmtf import bilmtf_interpreter  # noqa: E402

# Runs inside bilm-tf's virtualenv through its shim (tensorflow -> tf.compat.v1).
BILMTF_CHILD = r'''
import json, random, sys
import numpy as np
import tensorflow as tf
from bilm.data import BidirectionalLMDataset
from bilm.training import LanguageModel, _get_feed_dict_from_X, load_options_latest_checkpoint, load_vocab, train

train_glob, heldout_glob, vocab_path, save, steps, seed, neg, n_batches = sys.argv[1:9]
steps, seed, neg, n_batches = int(steps), int(seed), int(neg), int(n_batches)
np.random.seed(seed); tf.set_random_seed(seed); random.seed(seed)
vocab = load_vocab(vocab_path, 50)
bs, unroll = 32, 20
options = {"bidirectional": True,
           "char_cnn": {"activation": "relu", "embedding": {"dim": 16},
                        "filters": [[1, 32], [2, 32], [3, 64], [4, 128], [5, 256]],
                        "max_characters_per_token": 50, "n_characters": 261, "n_highway": 1},
           "dropout": 0.1,
           "lstm": {"cell_clip": 3, "dim": 512, "n_layers": 2, "proj_clip": 3, "projection_dim": 128,
                    "use_skip_connections": True},
           "all_clip_norm_val": 10.0, "n_epochs": 1, "n_train_tokens": steps * bs * unroll, "batch_size": bs,
           "n_tokens_vocab": vocab.size, "unroll_steps": unroll, "n_negative_samples_batch": max(neg, 1)}
if neg == 0:
    options["sample_softmax"] = False
captured = {}


def keep_final_state(frame, event, arg):
    if event == "return" and frame.f_code.co_name == "train" and "init_state_values" in frame.f_locals:
        captured["state"] = frame.f_locals["init_state_values"]


data = BidirectionalLMDataset(train_glob, vocab, test=False, shuffle_on_load=True)
sys.setprofile(keep_final_state)
train(options, data, 1, save, save)
sys.setprofile(None)
carried = captured["state"]  # [direction][layer] LSTMStateTuple(c [32, 512], h [32, 128])


def tree_map(f, x):
    if isinstance(x, np.ndarray):
        return f(x)
    values = [tree_map(f, v) for v in x]
    return type(x)(*values) if hasattr(x, "_fields") else type(x)(values)


tf.reset_default_graph()
options, ckpt = load_options_latest_checkpoint(save)
with tf.Session() as sess:
    with tf.variable_scope("lm"):
        model = LanguageModel(dict(options, batch_size=bs, unroll_steps=unroll), False)
        tf.train.Saver().restore(sess, ckpt)
    for name, start in (("zero", tree_map(np.zeros_like, carried)), ("carried", carried)):
        state, losses = start, []
        heldout = BidirectionalLMDataset(heldout_glob, vocab, test=True, shuffle_on_load=False)
        for i, X in enumerate(heldout.iter_batches(bs, unroll)):
            if i >= n_batches:
                break
            feed = {t: v for t, v in zip(model.init_lstm_state, state)}
            feed.update(_get_feed_dict_from_X(X, 0, X["token_ids"].shape[0], model, True, True))
            loss, state = sess.run([model.individual_losses, model.final_lstm_state], feed_dict=feed)
            losses.append(loss)
        mean = np.mean(losses, axis=0)
        clip = float(options["lstm"]["cell_clip"])
        at_clip = [[float(np.mean(np.abs(layer.c) >= clip - 1e-3)) for layer in direction] for direction in state]
        print("BILMTF_RESULT " + json.dumps({"start": name, "batches": len(losses), "forward": float(np.exp(mean[0])),
              "backward": float(np.exp(mean[1])), "average": float(np.exp(mean.mean())), "cells_at_clip": at_clip}),
              flush=True)
'''


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bilm-tf", default=os.path.expanduser("~/.cache/bilm-tf-ref"),
                    help="the directory ../shared/tools/bilm-tf/setup.sh made (venv/ and src/)")
    ap.add_argument("--shim", default=os.path.join(ROOT, "..", "shared", "tools", "bilm-tf", "bilmtf_shim.py"))
    ap.add_argument("--train", required=True, help="glob of training shards")
    ap.add_argument("--heldout", required=True, help="glob of heldout files")
    ap.add_argument("--vocab", required=True)
    ap.add_argument("--steps", type=int, default=600)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--negatives", type=int, default=2048, help="sampled softmax negatives; 0: full softmax")
    ap.add_argument("--batches", type=int, default=40, help="heldout batches of 32 x 20 per start")
    ap.add_argument("--save-dir", default=None, help="bilm-tf's checkpoint directory (default: a temporary one)")
    args = ap.parse_args()
    python, src = bilmtf_interpreter(args.bilm_tf, args.shim)
    save = args.save_dir or tempfile.mkdtemp(prefix="bilmtf_zero_state_")
    os.makedirs(save, exist_ok=True)
    child = os.path.join(save, "bilmtf_zero_state_child.py")
    with open(child, "w", encoding="utf-8") as fh:
        fh.write(BILMTF_CHILD)
    cmd = [python, args.shim, src, child, args.train, args.heldout, args.vocab, save, str(args.steps),
           str(args.seed), str(args.negatives), str(args.batches)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    rows = [json.loads(line.split(" ", 1)[1]) for line in proc.stdout.splitlines() if line.startswith("BILMTF_RESULT ")]
    if proc.returncode or len(rows) != 2:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-8:]
        raise SystemExit(f"bilm-tf run failed (exit {proc.returncode}): " + " | ".join(tail))
    softmax = f"{args.negatives} sampled" if args.negatives else "full softmax"
    print(f"bilm-tf, mid shape, {args.steps} steps, seed {args.seed}, {softmax}; full-softmax heldout perplexity "
          f"over {rows[0]['batches']} batches of 32 x 20 (checkpoint in {save}):")
    print(f"{'start':>8} {'forward':>18} {'backward':>14} {'average':>16}  cells at the clip (forward; backward "
          f"LM, per layer)")
    for r in rows:
        clip = "; ".join(" ".join(f"{x:.1%}" for x in d) for d in r["cells_at_clip"])
        print(f"{r['start']:>8} {r['forward']:>18,.1f} {r['backward']:>14,.1f} {r['average']:>16,.1f}  {clip}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
