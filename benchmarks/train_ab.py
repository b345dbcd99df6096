"""Compare train-step variants in ONE process, their steps interleaved (prints numbers; not a test).

    python benchmarks/train_ab.py --shape mid --steps 30 \
        --variant default= --variant autodiff=fused_backward=false [--variant ...]

Each `--variant NAME=KEY=VALUE,KEY=VALUE` is a set of TrainConfig overrides (empty: the shape as
it is); a key starting with `xla_` is an XLA compiler option for that variant alone, e.g.
`--variant eigen=xla_cpu_experimental_ynn_fusion_type=LIBRARY_FUSION_TYPE_INVALID`. Every
variant is compiled first, then the variants take turns, one step each, `--steps` rounds: a
slow minute of a shared machine then hits every variant alike. Separate runs of
`benchmarks/train.py` differ by about +-10% on the 2-core CPU, so two variants closer than that
cannot be told apart there; interleaved, an A/A pair (the same variant twice) differed by ~5%,
which is the resolution to expect. Prints each variant's median step, tokens/s, its ratio to the
first variant and its first and last loss (the variants see the same batches and negatives).
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import train as bench  # noqa: E402  (benchmarks/train.py: shapes, corpus batches, step inputs)


def build(shape: str, overrides: list[str], mesh, n_negative_sets: int = 4) -> dict:
    """One variant: its compiled step, state, batch and negatives (benchmarks/train.py's set-up).
    Overrides whose key starts with `xla_` are XLA compiler options of this variant's executable."""
    xla = {k: {"true": True, "false": False}.get(v, v)
           for k, v in (o.split("=", 1) for o in overrides if o.startswith("xla_"))}
    cfg, vocab_size, _ = bench.shape_config(shape, [o for o in overrides if not o.startswith("xla_")])
    batcher, raw = bench.shape_batch(cfg, vocab_size, seed=0)
    local = bench.step_input_fn(batcher, max(w for w, _ in cfg.model.filters), cfg.batch_size)(raw)
    compiled, state, batch, negatives, compile_s = bench.compiled_step(cfg, vocab_size, local, mesh, 0,
                                                                       n_negative_sets, xla)
    for i in range(2):  # warm-up
        state, m = compiled(state, batch, negatives[i % n_negative_sets])
        float(m["loss"])
    return {"compiled": compiled, "state": state, "batch": batch, "negatives": negatives,
            "tokens": cfg.batch_size * cfg.unroll_steps, "compile_s": compile_s, "times": [], "losses": []}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shape", default="mid", help="a shape of benchmarks/train.py or a config .json")
    ap.add_argument("--steps", type=int, default=20, help="timed rounds (one step of each variant per round)")
    ap.add_argument("--variant", action="append", default=[], metavar="NAME=OVERRIDES",
                    help="NAME=key=value,key=value (repeatable; at least two)")
    args = ap.parse_args()
    variants = []
    for spec in args.variant or ["default=", "default-again="]:
        name, _, sets = spec.partition("=")
        if not name:
            raise SystemExit(f"--variant {spec!r}: expected NAME=key=value,...")
        overrides: list[str] = []
        for item in (s for s in sets.split(",") if s):
            if "=" in item or not overrides:
                overrides.append(item)
            else:  # a comma inside a value (xla_...=A,B)
                overrides[-1] += "," + item
        variants.append((name, overrides))
    if len(variants) < 2:
        raise SystemExit("give at least two --variant (e.g. the same one twice for an A/A baseline)")

    import jax

    from elmo_jax import sharding as shd

    mesh = shd.make_mesh()
    built = []
    for name, overrides in variants:
        built.append((name, build(args.shape, overrides, mesh)))
        print(f"compiled {name} ({', '.join(overrides) or 'no overrides'}) in {built[-1][1]['compile_s']:.1f} s",
              flush=True)
    for i in range(args.steps):
        for _, v in built:
            t0 = time.perf_counter()
            v["state"], m = v["compiled"](v["state"], v["batch"], v["negatives"][i % len(v["negatives"])])
            v["losses"].append(float(m["loss"]))
            v["times"].append(time.perf_counter() - t0)
    first = statistics.median(built[0][1]["times"])
    print(f"jax {jax.__version__}, {jax.device_count()} x {jax.devices()[0].platform}; shape {args.shape}, "
          f"{args.steps} interleaved rounds")
    print(f"{'variant':16s} {'median ms':>10s} {'tokens/s':>9s} {'vs first':>8s} {'first loss':>10s} {'last loss':>10s}")
    for name, v in built:
        med = statistics.median(v["times"])
        print(f"{name:16s} {med * 1e3:10.1f} {v['tokens'] / med:9.0f} {first / med:8.3f} "
              f"{v['losses'][0]:10.4f} {v['losses'][-1]:10.4f}")


if __name__ == "__main__":
    main()
