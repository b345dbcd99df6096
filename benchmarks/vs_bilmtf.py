"""elmo-jax's and bilm-tf's train steps measured side by side on THIS machine (prints numbers; not a test).

    bash ../shared/tools/bilm-tf/setup.sh ~/.cache/bilm-tf-ref      # once, ~2 minutes
    python benchmarks/vs_bilmtf.py [--bilm-tf ~/.cache/bilm-tf-ref] [--shapes small,mid] [--rounds 2]
        [--env KEY=VALUE ...] [--set matmul_precision=bfloat16 ...]

bilm-tf (allenai/bilm-tf, the 2018 trainer of the published models) runs on TensorFlow 2.x
through `tf.compat.v1` in its own virtualenv (`../shared/tools/bilm-tf/`); this project never
imports TensorFlow. The two alternate, one shape at a time, for `--rounds` rounds, so that a
slow minute of a shared machine hits both: quoting another day's bilm-tf figure is not like for
like (on the 2-core CPU the same bilm-tf recipe measured 861-957 tokens/s at mid one day and
1,814-2,256 another).

Both train the shape of `benchmarks/train.py` (model, batch, unroll, sampled negatives, Adagrad,
clipping, dropout) on the built-in corpus with a 40,000-word vocabulary (the corpus's words, then
filler words: the softmax has its real size). bilm-tf's step is the interval between consecutive
`Session.run` calls of `bilm.training.train` (its own input pipeline included, as when it trains),
median over the steps after the first three; elmo-jax's is `benchmarks/train.py`'s median step
(its input pipeline runs in a prefetch thread). Tokens/s = batch x unroll per second. Each runs as
its own command does: on a Linux CPU `benchmarks/train.py`, like `elmo-jax train`, restarts
itself with `GLIBC_TUNABLES=glibc.malloc.hugetlb=1` (`elmo_jax/launch.py`), bilm-tf runs in the
environment as given. `--env` sets an environment variable in both trainers' processes alike:
`--env GLIBC_TUNABLES=glibc.malloc.hugetlb=1` gives bilm-tf the tunable too,
`--env ELMO_JAX_MALLOC_TUNING=0` runs elmo-jax without it (see the README's performance section).
`--set KEY=VALUE` adds a second elmo-jax column, the same runs with that TrainConfig override, in
the same rounds: `--set matmul_precision=bfloat16` measures bfloat16-operand matmuls against
bilm-tf's float32 recipe (a different precision: say so when quoting it).
"""
from __future__ import annotations

import argparse
import gzip
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)  # before the repository root, whose train.py has the same name

import train as bench  # noqa: E402  (benchmarks/train.py: the shapes)

VOCAB_SIZE = 40_000
DEFAULT_STEPS = {"small": 20, "mid": 60}  # bilm-tf steps per round (about a minute each)

# Runs inside bilm-tf's virtualenv through its shim (tensorflow -> tf.compat.v1).
BILMTF_CHILD = r'''
import json, statistics, sys, time
import tensorflow as tf
from bilm.data import BidirectionalLMDataset
from bilm.training import load_vocab, train

options_path, train_glob, vocab_path, save_dir = sys.argv[1:5]
with open(options_path) as fh:
    options = json.load(fh)
tf.set_random_seed(0)
vocab = load_vocab(vocab_path, options["char_cnn"]["max_characters_per_token"])
data = BidirectionalLMDataset(train_glob, vocab, test=False, shuffle_on_load=True)
stamps = []
run = tf.Session.run


def timed_run(self, *args, **kwargs):
    out = run(self, *args, **kwargs)
    stamps.append(time.perf_counter())
    return out


tf.Session.run = timed_run
train(options, data, 1, save_dir, save_dir)
steps = [b - a for a, b in zip(stamps, stamps[1:])][3:]
print("BILMTF_STEP_S " + json.dumps({"median": statistics.median(steps), "n": len(steps)}), flush=True)
'''


def bilmtf_options(shape: str, steps: int) -> dict:
    """bilm-tf's training options for a `benchmarks/train.py` shape."""
    cfg, _, _ = bench.shape_config(shape, [])
    opts = cfg.model.to_dict()
    opts["char_cnn"]["n_characters"] = 261  # bilm-tf trains with 261 (262 at inference)
    opts.update({
        "bidirectional": True, "dropout": cfg.dropout, "all_clip_norm_val": cfg.clip_norm, "n_epochs": 1,
        "n_train_tokens": steps * cfg.batch_size * cfg.unroll_steps, "batch_size": cfg.batch_size,
        "n_tokens_vocab": VOCAB_SIZE, "unroll_steps": cfg.unroll_steps,
        "n_negative_samples_batch": cfg.n_negative_samples,
    })
    return opts


def write_corpus(work: str) -> tuple[str, str]:
    """The built-in corpus as bilm-tf reads it: (train file glob, vocabulary file of VOCAB_SIZE words)."""
    from elmo_jax.corpus import builtin_corpus

    corpus = builtin_corpus()
    os.makedirs(os.path.join(work, "train"), exist_ok=True)
    for i, path in enumerate(corpus["train_files"]):
        opener = gzip.open if path.endswith(".gz") else open
        with opener(path, "rt", encoding="utf-8") as src, \
                open(os.path.join(work, "train", f"train.{i:03d}.txt"), "w", encoding="utf-8") as dst:
            shutil.copyfileobj(src, dst)
    vocab_path = corpus["vocab_file"]
    opener = gzip.open if vocab_path.endswith(".gz") else open
    with opener(vocab_path, "rt", encoding="utf-8") as fh:
        words = [line.strip() for line in fh if line.strip()]
    words += [f"filler{i}" for i in range(VOCAB_SIZE - len(words))]
    out = os.path.join(work, "vocab.txt")
    with open(out, "w", encoding="utf-8") as fh:
        fh.write("\n".join(words[:VOCAB_SIZE]) + "\n")
    return os.path.join(work, "train", "*.txt"), out


def failed(what: str, proc: subprocess.CompletedProcess) -> None:
    """Stop with one line: what failed, its exit status and the last lines it printed."""
    tail = (proc.stderr or proc.stdout).strip().splitlines()[-5:]
    raise SystemExit(f"{what} failed (exit {proc.returncode}): " + " | ".join(tail))


def bilmtf_interpreter(bilm_tf: str, shim: str) -> tuple[str, str]:
    """(python, src) of the directory `../shared/tools/bilm-tf/setup.sh` made, checked with the shim."""
    python = os.path.join(bilm_tf, "venv", "bin", "python")
    src = os.path.join(bilm_tf, "src")
    if not os.path.exists(python) or not os.path.isdir(os.path.join(src, "bilm")):
        raise SystemExit(f"--bilm-tf {bilm_tf}: no venv/bin/python and src/bilm there; make them with "
                         f"`bash ../shared/tools/bilm-tf/setup.sh {bilm_tf}`")
    if not os.path.exists(shim):
        raise SystemExit(f"--shim {shim}: not found (it is ../shared/tools/bilm-tf/bilmtf_shim.py)")
    return python, src


def run_bilmtf(python: str, shim: str, src: str, child: str, options: dict, train_glob: str, vocab: str,
               work: str, env: dict) -> float:
    """bilm-tf's median step seconds for `options` (a fresh process, a fresh save directory)."""
    opts_path = os.path.join(work, "options.json")
    with open(opts_path, "w", encoding="utf-8") as fh:
        json.dump(options, fh)
    save = os.path.join(work, "save")
    shutil.rmtree(save, ignore_errors=True)
    os.makedirs(save)
    proc = subprocess.run([python, shim, src, child, opts_path, train_glob, vocab, save],
                          capture_output=True, text=True, env=env)
    for line in proc.stdout.splitlines():
        if line.startswith("BILMTF_STEP_S "):
            return json.loads(line.split(" ", 1)[1])["median"]
    failed("bilm-tf run", proc)


def run_elmo_jax(shape: str, steps: int, work: str, env: dict, sets: list[str]) -> tuple[float, str]:
    """elmo-jax's median step seconds (`benchmarks/train.py` in a fresh process, with TrainConfig
    overrides `sets`) and the GLIBC_TUNABLES it ran with (its header line; it may have added the
    huge-page tunable)."""
    out = os.path.join(work, "elmo_jax.jsonl")
    if os.path.exists(out):
        os.remove(out)
    proc = subprocess.run([sys.executable, os.path.join(HERE, "train.py"), "--shapes", shape, "--steps", str(steps),
                           "--no-data", "--jsonl", out] + [f"--set={item}" for item in sets],
                          capture_output=True, text=True, cwd=ROOT, env=env)
    if proc.returncode or not os.path.exists(out):
        failed("benchmarks/train.py", proc)
    tunables = re.search(r"GLIBC_TUNABLES=(\S+)", proc.stdout)
    with open(out, encoding="utf-8") as fh:
        return json.loads(fh.readline())["step_s"], tunables.group(1) if tunables else "?"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bilm-tf", default=os.path.expanduser("~/.cache/bilm-tf-ref"),
                    help="the directory ../shared/tools/bilm-tf/setup.sh made (venv/ and src/)")
    ap.add_argument("--shim", default=os.path.join(ROOT, "..", "shared", "tools", "bilm-tf", "bilmtf_shim.py"))
    ap.add_argument("--shapes", default="small,mid")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--bilm-tf-steps", type=int, default=None, help="bilm-tf steps per round (default: small "
                    f"{DEFAULT_STEPS['small']}, mid {DEFAULT_STEPS['mid']})")
    ap.add_argument("--steps", type=int, default=10, help="elmo-jax timed steps per round")
    ap.add_argument("--env", action="append", default=[], metavar="KEY=VALUE",
                    help="an environment variable for both trainers' processes (repeatable)")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="a TrainConfig override for a second elmo-jax column, e.g. "
                    "matmul_precision=bfloat16 (repeatable)")
    args = ap.parse_args()
    env = dict(os.environ)
    for item in args.env:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise SystemExit(f"--env {item!r}: expected KEY=VALUE")
        env[key] = value

    python, src = bilmtf_interpreter(args.bilm_tf, args.shim)
    shapes = [s for s in args.shapes.split(",") if s]
    for s in shapes:
        if s not in DEFAULT_STEPS:
            raise SystemExit(f"--shapes: {s!r} has no bilm-tf recipe here (known: {', '.join(DEFAULT_STEPS)})")

    work = tempfile.mkdtemp(prefix="vs_bilmtf_")
    try:
        child = os.path.join(work, "bilmtf_train.py")
        with open(child, "w", encoding="utf-8") as fh:
            fh.write(BILMTF_CHILD)
        train_glob, vocab = write_corpus(work)
        # elmo-jax as it is, and with the `--set` overrides as a second column in the same rounds
        variants = [("elmo-jax", [])] + ([("elmo-jax " + " ".join(args.set), args.set)] if args.set else [])
        results = {s: {name: [] for name in ["bilm-tf"] + [v for v, _ in variants]} for s in shapes}
        if args.env:
            print("both trainers with " + " ".join(args.env), flush=True)
        head = f"{'round':>5s} {'shape':6s} {'bilm-tf tok/s':>13s} {'elmo-jax tok/s':>14s} {'ratio':>6s}"
        if args.set:
            print(f"second elmo-jax column: {' '.join(args.set)} (bilm-tf keeps its float32 recipe)", flush=True)
            head += f" {'2nd tok/s':>10s} {'ratio':>6s}"
        print(head, flush=True)
        said = ""
        for r in range(1, args.rounds + 1):
            for s in shapes:
                cfg, _, _ = bench.shape_config(s, [])
                tokens = cfg.batch_size * cfg.unroll_steps
                steps = args.bilm_tf_steps or DEFAULT_STEPS[s]
                bt = tokens / run_bilmtf(python, args.shim, src, child, bilmtf_options(s, steps), train_glob, vocab,
                                         work, env)
                results[s]["bilm-tf"].append(bt)
                line = f"{r:5d} {s:6s} {bt:13,.0f}"
                for name, sets in variants:
                    step_s, tunables = run_elmo_jax(s, args.steps, work, env, sets)
                    if tunables != said:
                        print(f"      elmo-jax ran with GLIBC_TUNABLES={tunables}, bilm-tf with "
                              f"{env.get('GLIBC_TUNABLES', '(unset)')}", flush=True)
                        said = tunables
                    ej = tokens / step_s
                    results[s][name].append(ej)
                    line += f" {ej:{14 if not sets else 10},.0f} {ej / bt:6.2f}"
                print(line, flush=True)
        print("median over rounds:")
        for s in shapes:
            bt = statistics.median(results[s]["bilm-tf"])
            for name, _ in variants:
                ej = statistics.median(results[s][name])
                print(f"  {s:6s} bilm-tf {bt:,.0f} tokens/s, {name} {ej:,.0f} tokens/s: {ej / bt:.2f}x", flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
