"""`import-tf-checkpoint` at the published model's size: seconds and peak memory (prints numbers).

    python benchmarks/import_tf_checkpoint.py [--rows 793471] [--dim 512] [--model original|tiny]
        [--dir DIR] [--keep]

1. Writes a bilm-tf training checkpoint of the published shape into a temporary folder (or
   `--dir`; removed at the end unless `--keep`): the biLM of `--model` (original:
   2x4096_512_2048cnn_2xhighway, 93.6M parameters; tiny: a few thousand) with random values,
   a `--rows` x `--dim` softmax (default 793,471 x 512, the 1B Word vocabulary), an Adagrad slot
   for every variable, `global_step`; 4.0 GB for the defaults, like the published checkpoint.
   Plus a vocabulary of `--rows` words. (Written by tests/tf_bundle.py, in 64 MiB pieces.)
2. Imports it in a fresh process (`elmo_jax.train.tfimport.import_tf_checkpoint`) and prints:
   the vocabulary load seconds, the import seconds, the child's peak RSS (ru_maxrss; this
   counts the pages of the memory-mapped checkpoint file the process touched, which the kernel
   can drop at any time) and its peak anonymous memory (RssAnon sampled every 20 ms: the memory
   the process really holds), the checkpoint and run directory sizes.

Needs about 2 x 4 GB of free disk for the defaults (checkpoint + run directory).
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
sys.path.insert(0, os.path.join(REPO, "tests"))  # the test-suite's independent TF checkpoint writer

from conftest import make_random_arrays  # noqa: E402
from elmo_jax.options import ModelOptions, original_options  # noqa: E402
from elmo_jax.train.tfimport import import_tf_checkpoint  # noqa: E402
from elmo_jax.vocab import Vocabulary  # noqa: E402
from tf_bundle import bilm_tf_variables, write_bundle  # noqa: E402


def _du(path: str) -> int:
    return sum(os.path.getsize(os.path.join(d, f)) for d, _, files in os.walk(path) for f in files)


def write_checkpoint(out: str, rows: int, dim: int, model: str) -> tuple[str, str]:
    if model == "original":
        options = original_options().replace(projection_dim=dim, n_characters=261)
    else:
        options = ModelOptions(char_embed_dim=4, filters=((1, 8), (2, 8)), n_highway=1, n_characters=261,
                               lstm_dim=2 * dim, projection_dim=dim, n_layers=2)
    ckpt_dir = os.path.join(out, "tf_checkpoint")
    os.makedirs(ckpt_dir, exist_ok=True)
    variables = bilm_tf_variables(make_random_arrays(options, seed=0))
    rng = np.random.default_rng(0)
    big = {}
    for name, shape, fill in (("lm/softmax/W", (rows, dim), None), ("lm/softmax/W/Adagrad", (rows, dim), 1.0),
                              ("lm/softmax/b", (rows,), None), ("lm/softmax/b/Adagrad", (rows,), 1.0)):
        path = os.path.join(out, name.replace("/", "_") + ".f32")
        m = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=shape)
        step = max(1, (64 << 20) // (4 * (shape[1] if len(shape) > 1 else 1)))
        for start in range(0, rows, step):
            part = rng.standard_normal((min(step, rows - start),) + shape[1:], dtype=np.float32)
            m[start:start + step] = part * 0.05 if fill is None else fill + part * part
        m.flush()
        big[name] = np.load(path, mmap_mode="r")
    slots = {f"{k}/Adagrad": (1.0 + rng.random(v.shape)).astype(np.float32) for k, v in variables.items()}
    write_bundle(os.path.join(ckpt_dir, "model.ckpt-935588"),
                 {**variables, **slots, **big, "global_step": np.array(935588, np.int64)})
    for name in big:
        os.remove(os.path.join(out, name.replace("/", "_") + ".f32"))
    options.to_json(os.path.join(ckpt_dir, "options.json"))
    vocab = os.path.join(out, "vocab-2016-09-10.txt")
    with open(vocab, "w", encoding="utf-8") as fh:
        fh.write("<S>\n</S>\n<UNK>\n" + "".join(f"word{i}\n" for i in range(rows - 3)))
    return ckpt_dir, vocab


def child(ckpt_dir: str, vocab: str, run_dir: str) -> None:
    """The measured process: load the vocabulary, import, report."""
    peak = {"anon_kib": 0}
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            with open("/proc/self/status") as fh:
                for line in fh:
                    if line.startswith("RssAnon:"):
                        peak["anon_kib"] = max(peak["anon_kib"], int(line.split()[1]))
            time.sleep(0.02)

    threading.Thread(target=sample, daemon=True).start()
    t0 = time.perf_counter()
    n_words = len(Vocabulary.from_file(vocab))
    t1 = time.perf_counter()
    result = import_tf_checkpoint(ckpt_dir, vocab, run_dir, progress=False)
    t2 = time.perf_counter()
    done.set()
    print(json.dumps({"vocab_words": n_words, "vocab_load_s": t1 - t0, "import_s": t2 - t1,
                      "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                      "peak_anon_mib": peak["anon_kib"] / 1024, "step": result["step"]}))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rows", type=int, default=793_471, help="softmax rows = vocabulary words")
    ap.add_argument("--dim", type=int, default=512, help="projection dim (softmax columns)")
    ap.add_argument("--model", choices=("original", "tiny"), default="original", help="biLM shape")
    ap.add_argument("--dir", help="work folder (default: a temporary one)")
    ap.add_argument("--keep", action="store_true", help="keep the work folder")
    ap.add_argument("--child", nargs=3, metavar=("CKPT", "VOCAB", "RUN"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(*args.child)
        return
    out = args.dir or tempfile.mkdtemp(prefix="elmo_jax_import_bench_")
    try:
        t0 = time.perf_counter()
        ckpt_dir, vocab = write_checkpoint(out, args.rows, args.dim, args.model)
        print(f"wrote the checkpoint ({_du(ckpt_dir) / 2 ** 30:.2f} GiB, {args.model} biLM, softmax "
              f"{args.rows} x {args.dim}) in {time.perf_counter() - t0:.0f} s", flush=True)
        run_dir = os.path.join(out, "run")
        env = dict(os.environ, JAX_PLATFORMS=os.environ.get("JAX_PLATFORMS", "cpu"))
        proc = subprocess.run([sys.executable, os.path.abspath(__file__), "--child", ckpt_dir, vocab, run_dir],
                              capture_output=True, text=True, env=env)
        if proc.returncode:
            sys.exit(f"import failed:\n{proc.stderr[-3000:]}")
        r = json.loads(proc.stdout.strip().splitlines()[-1])
        print(f"vocabulary: {r['vocab_words']} words loaded in {r['vocab_load_s']:.2f} s")
        print(f"import: {r['import_s']:.1f} s; peak RSS {r['peak_rss_mib']:.0f} MiB (incl. touched pages of the "
              f"memory-mapped checkpoint), peak anonymous memory {r['peak_anon_mib']:.0f} MiB; "
              f"run directory {_du(run_dir) / 2 ** 30:.2f} GiB")
    finally:
        if not args.keep:
            shutil.rmtree(out, ignore_errors=True)


if __name__ == "__main__":
    main()
