"""Training-data setup at corpus scale: Batcher seconds, encoding tokens/s and memory (prints numbers).

    python benchmarks/corpus_scale.py [--tokens 88000000] [--shards 30] [--out DIR] [--keep]
        [--batches 1000] [--batch-size 128] [--unroll 20]

1. Generates a corpus of `--tokens` tokens in `--shards` shard files (one sentence per line,
   whitespace-tokenized, sentence lengths ~ 1B Word's: mean ~25 tokens) from a Zipfian (s = 1.07)
   vocabulary of `--word-types` word strings: the commonest English words and punctuation
   first, then made-up words built from syllables (longer at rarer ranks, some capitalised, some
   numbers), plus a bilm-tf vocabulary file (`<S>`, `</S>`, `<UNK>`, then the words seen at
   least `--min-count` times, most frequent first). Into `--out` (default: a temporary folder,
   removed at the end unless `--keep`); an existing corpus there with the same settings is reused.
2. Builds the training `Batcher` on it twice, each time in a fresh subprocess, with the Hugging
   Face `datasets` cache in `<out>/hf_cache` (emptied before the first run, so it starts cold):
   run 1 reads the text into Arrow and runs the encoding pass (`datasets.map`), run 2 finds both
   cached. For each: setup seconds (and per phase: scan = read + count, table = the input char
   table, encode = the encoding pass), tokens/s, peak RSS (the child's ru_maxrss) and RSS after
   setup; then it pulls `--batches` batches and prints batches/s and the RSS at five points
   along the way (flat = no growth).

Reference (one measurement on this project's 2-core CPU, 88M tokens, 30 shards; the README's
Performance section quotes it): first run 82.6 s including the encoding pass (1.77M tokens/s),
cached run 30.4 s, 1.5 GB resident, flat over 1,000 batches (435-713 batches/s of 128 x 20).
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
import time

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

REFERENCE = {"tokens": 88_000_000, "shards": 30, "first_s": 125.0, "cached_s": 58.0, "rss_gb": 1.8}
COMMON = ("the , . to of and a in \" 's that for is on was with said he it at as by from his be have has "
          "but are an I they not who will ( ) had this were been their after more one its also year new "
          "would which about up than - : ; ? she or we people can first last two percent $ government all "
          "out when her there time over into other says so just could them like years what no if only some "
          "million you do most world do n't three our because against while before state new during them "
          "country since may under where city many being next both week back between well").split()
CONSONANTS = list("bcdfghjklmnprstvwz") + ["ch", "sh", "th", "st", "tr", "br", "pl", "gr", ""]
VOWELS = ["a", "e", "i", "o", "u", "ea", "ou", "ai", "io", "y"]
CODAS = ["", "", "", "n", "r", "s", "t", "l", "m", "nd", "ng", "rs", "st", "ck"]


def rss_bytes() -> int:
    """Resident set size of this process now (Linux /proc; 0 where unavailable)."""
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def maxrss_bytes(who: int = resource.RUSAGE_SELF) -> int:
    r = resource.getrusage(who).ru_maxrss
    return r if sys.platform == "darwin" else r * 1024  # bytes on macOS, KiB on Linux


# ----------------------------------------------------------------------------- corpus
def make_words(n: int, rng: np.random.Generator) -> list[str]:
    """`n` distinct word strings, commonest first (made-up words get longer with rank)."""
    words = list(dict.fromkeys(COMMON))
    seen = set(words)
    while len(words) < n:
        rank = len(words)
        m = min(100_000, n - len(words))
        n_syl = np.clip(rng.poisson(0.6 + np.log10(rank + 10) / 3.0, m), 1, 6)
        ci = rng.integers(0, len(CONSONANTS), (m, 6))
        vi = rng.integers(0, len(VOWELS), (m, 6))
        ki = rng.integers(0, len(CODAS), m)
        kind = rng.random(m)
        for j in range(m):
            w = "".join(CONSONANTS[ci[j, s]] + VOWELS[vi[j, s]] for s in range(n_syl[j])) + CODAS[ki[j]]
            if kind[j] < 0.12:
                w = w.capitalize()
            elif kind[j] < 0.14:
                w = str(int(rng.integers(0, 100_000)))
            elif kind[j] < 0.15:
                w = w + "-" + CONSONANTS[ci[j, 0]] + VOWELS[vi[j, 1]] + "n"
            if w not in seen:
                seen.add(w)
                words.append(w)
                if len(words) >= n:
                    break
    return words


def generate(out: str, tokens: int, shards: int, word_types: int, min_count: int, seed: int) -> dict:
    """Write shards + vocab into `out`; returns the corpus info (reused when already there)."""
    info_file = os.path.join(out, "corpus.json")
    want = {"tokens": tokens, "shards": shards, "word_types": word_types, "min_count": min_count, "seed": seed,
            "version": 1}
    if os.path.exists(info_file):
        with open(info_file, encoding="utf-8") as fh:
            info = json.load(fh)
        if info.get("settings") == want and all(os.path.exists(f) for f in info["files"] + [info["vocab"]]):
            info["reused"] = True
            return info
    os.makedirs(out, exist_ok=True)
    t0 = time.perf_counter()
    rng = np.random.default_rng(seed)
    words = np.array(make_words(word_types, rng), dtype=object)
    ranks = np.arange(1, word_types + 1, dtype=np.float64)
    cdf = np.cumsum(ranks ** -1.07)
    cdf /= cdf[-1]
    counts = np.zeros(word_types, np.int64)
    files, n_sentences, n_bytes = [], 0, 0
    per_shard = np.full(shards, tokens // shards, np.int64)
    per_shard[: tokens % shards] += 1
    for s in range(shards):
        path = os.path.join(out, f"news.en-{s:05d}-of-{shards:05d}")
        with open(path, "w", encoding="utf-8") as fh:
            left = int(per_shard[s])
            while left > 0:
                n = min(left, 4_000_000)
                ids = np.searchsorted(cdf, rng.random(n), side="right").clip(0, word_types - 1)
                counts += np.bincount(ids, minlength=word_types)
                # sentence ends: lengths ~ 1 + gamma(shape 2.2, scale 11) (mean ~25, long tail), cut at n
                lens = (1 + rng.gamma(2.2, 11.0, n // 10 + 10)).astype(np.int64)
                ends = np.cumsum(lens)
                ends = ends[ends < n]
                sep = np.full(n, " ", dtype=object)
                sep[ends - 1] = "\n"
                sep[-1] = "\n"
                n_sentences += len(ends) + 1
                parts = np.empty(2 * n, dtype=object)
                parts[0::2] = words[ids]
                parts[1::2] = sep
                text = "".join(parts.tolist())
                n_bytes += len(text.encode("utf-8"))
                fh.write(text)
                left -= n
        files.append(path)
    order = np.argsort(-counts, kind="stable")
    keep = order[counts[order] >= min_count]
    vocab = os.path.join(out, "vocab.txt")
    with open(vocab, "w", encoding="utf-8") as fh:
        fh.write("\n".join(["<S>", "</S>", "<UNK>"] + words[keep].tolist()) + "\n")
    info = {"settings": want, "files": files, "vocab": vocab, "n_sentences": n_sentences, "n_bytes": n_bytes,
            "distinct_words": int((counts > 0).sum()), "vocab_size": int(len(keep) + 3),
            "generate_s": time.perf_counter() - t0}
    with open(info_file, "w", encoding="utf-8") as fh:
        json.dump(info, fh)
    info["reused"] = False
    return info


# ----------------------------------------------------------------------------- child
def child(args: argparse.Namespace) -> None:
    """One Batcher build + `--batches` batches; one JSON line on stdout."""
    t_start = time.perf_counter()
    from elmo_jax.data import Batcher
    from elmo_jax.vocab import Vocabulary

    phases: dict[str, float] = {}
    for name in ("_scan", "_build_input_table", "_encode"):  # per-phase timing, where the phase exists
        fn = getattr(Batcher, name, None)
        if fn is None:
            continue

        def timed(self, *a, _fn=fn, _name=name, **k):
            t0 = time.perf_counter()
            try:
                return _fn(self, *a, **k)
            finally:
                phases[_name.strip("_")] = phases.get(_name.strip("_"), 0.0) + time.perf_counter() - t0

        setattr(Batcher, name, timed)
    import_s = time.perf_counter() - t_start
    with open(args.files_json, encoding="utf-8") as fh:
        files = json.load(fh)
    t0 = time.perf_counter()
    vocab = Vocabulary.from_file(args.vocab)
    batcher = Batcher(files, vocab, global_batch_size=args.batch_size, unroll_steps=args.unroll,
                      cache_dir=args.cache_dir)
    setup_s = time.perf_counter() - t0
    rss_setup, peak_setup = rss_bytes(), maxrss_bytes()
    points = sorted({max(1, round(args.batches * f / 5)) for f in range(1, 6)})
    rss_along = [rss_setup]
    t0 = time.perf_counter()
    for i in range(1, args.batches + 1):
        next(batcher)
        if i in points:
            rss_along.append(rss_bytes())
    pull_s = time.perf_counter() - t0
    print(json.dumps({
        "import_s": import_s, "setup_s": setup_s, "phases": phases, "n_tokens": batcher.corpus.n_tokens,
        "n_sentences": batcher.corpus.n_sentences, "n_input_words": batcher.corpus.n_input_words,
        "rss_setup": rss_setup, "maxrss_setup": peak_setup, "maxrss": maxrss_bytes(),
        "maxrss_children": maxrss_bytes(resource.RUSAGE_CHILDREN), "rss_along": rss_along,
        "batches": args.batches, "pull_s": pull_s, "batches_per_s": args.batches / max(pull_s, 1e-9),
    }), flush=True)


# ----------------------------------------------------------------------------- parent
def gb(x: float) -> str:
    return f"{x / 1e9:.2f} GB"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tokens", type=int, default=88_000_000)
    ap.add_argument("--shards", type=int, default=30)
    ap.add_argument("--word-types", type=int, default=1_000_000, help="Zipfian vocabulary to draw from")
    ap.add_argument("--min-count", type=int, default=3, help="vocab.txt keeps words seen this often")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=None, help="corpus + datasets cache folder (default: a temporary one)")
    ap.add_argument("--keep", action="store_true", help="keep the temporary folder")
    ap.add_argument("--batches", type=int, default=1000, help="batches pulled after each setup")
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--unroll", type=int, default=20)
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--files-json", help=argparse.SUPPRESS)
    ap.add_argument("--vocab", help=argparse.SUPPRESS)
    ap.add_argument("--cache-dir", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(args)
        return

    out = args.out or tempfile.mkdtemp(prefix="elmo-corpus-scale-")
    temporary = args.out is None and not args.keep
    try:
        print(f"corpus: {args.tokens:,} tokens in {args.shards} shards, Zipf over {args.word_types:,} word types "
              f"-> {out}", flush=True)
        info = generate(out, args.tokens, args.shards, args.word_types, args.min_count, args.seed)
        how = "reused" if info["reused"] else f"generated in {info['generate_s']:.1f} s"
        print(f"  {how}: {info['n_sentences']:,} sentences, {info['n_bytes'] / 1e9:.2f} GB of text, "
              f"{info['distinct_words']:,} distinct words, vocab.txt {info['vocab_size']:,} words "
              f"(count >= {args.min_count})", flush=True)
        cache = os.path.join(out, "hf_cache")
        shutil.rmtree(cache, ignore_errors=True)  # cold start for run 1
        files_json = os.path.join(out, "files.json")
        with open(files_json, "w", encoding="utf-8") as fh:
            json.dump(info["files"], fh)
        results = []
        for run, what in ((1, "first run (text -> Arrow + encoding pass)"), (2, "second run (cached)")):
            cmd = [sys.executable, os.path.abspath(__file__), "--child", "--files-json", files_json,
                   "--vocab", info["vocab"], "--cache-dir", cache, "--batches", str(args.batches),
                   "--batch-size", str(args.batch_size), "--unroll", str(args.unroll)]
            t0 = time.perf_counter()
            proc = subprocess.run(cmd, stdout=subprocess.PIPE, text=True)
            wall = time.perf_counter() - t0
            if proc.returncode:
                print(f"run {run}: child failed (exit {proc.returncode})", flush=True)
                sys.exit(1)
            r = json.loads(proc.stdout.strip().splitlines()[-1])
            r["wall_s"] = wall
            results.append(r)
            ph = ", ".join(f"{k} {v:.1f} s" for k, v in r["phases"].items())
            print(f"{what}:", flush=True)
            print(f"  setup {r['setup_s']:.1f} s ({ph}; python + imports {r['import_s']:.1f} s apart), "
                  f"{r['n_tokens'] / r['setup_s'] / 1e6:.2f}M tokens/s overall"
                  + (f", encoding pass {r['n_tokens'] / r['phases']['encode'] / 1e6:.2f}M tokens/s"
                     if run == 1 and r["phases"].get("encode") else ", encoding pass cached" if run == 2 else ""),
                  flush=True)
            print(f"  memory: peak RSS {gb(r['maxrss_setup'])} during setup, RSS after setup {gb(r['rss_setup'])}"
                  + (f" (worker processes' peak {gb(r['maxrss_children'])})" if r["maxrss_children"] else ""),
                  flush=True)
            along = " -> ".join(f"{x / 1e9:.2f}" for x in r["rss_along"])
            growth = r["rss_along"][-1] - r["rss_along"][0]
            print(f"  {r['batches']} batches of {args.batch_size} x {args.unroll}: {r['batches_per_s']:.1f} batches/s; "
                  f"RSS GB {along} ({'+' if growth >= 0 else ''}{growth / 1e6:.0f} MB; peak {gb(r['maxrss'])})",
                  flush=True)
        first, second = results
        enc = first["setup_s"] - second["setup_s"]
        print(f"first - cached = {enc:.1f} s -> {first['n_tokens'] / max(enc, 1e-9) / 1e6:.2f}M tokens/s for what "
              f"the cache saves (text -> Arrow and the encoding pass)", flush=True)
        ref = REFERENCE
        scale = args.tokens / ref["tokens"]
        print(f"reference, measured by us ({ref['tokens'] / 1e6:.0f}M tokens, {ref['shards']} shards): first run "
              f"{ref['first_s']:.0f} s including encoding, cached {ref['cached_s']:.0f} s (difference ~67 s, "
              f"~1.3M tokens/s), {ref['rss_gb']:.1f} GB resident, flat"
              + (f"; this run is {scale:.3g} x that size" if abs(scale - 1) > 0.01 else ""), flush=True)
    finally:
        if temporary:
            shutil.rmtree(out, ignore_errors=True)


if __name__ == "__main__":
    main()
