"""The `elmo-jax` command line (also `python -m elmo_jax`).

Every user error (a missing or non-UTF-8 file, a weight file without a dataset or with a wrong
shape, an unwritable output) is one line on stderr and exit status 1; outputs are written to a
temporary file and renamed, so a failed run leaves no partial file.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from typing import Callable, Optional, Sequence

from .errors import ElmoError

EXAMPLES = """\
commands and examples:
  embed                  contextual vectors for a file of tokenized sentences (one per line)
      elmo-jax embed --options options.json --weights weights.hdf5 --input text.txt --output vectors.hdf5
      elmo-jax embed ... --layers top --batch-size 64 --stateful
  dump-token-embeddings  context-free token vectors of a vocabulary (bilm-tf format)
      elmo-jax dump-token-embeddings --options options.json --weights weights.hdf5 --vocab vocab.txt --output tokens.hdf5
  export-npz             bilm-tf hdf5 weights -> NumPy .npz (bilm-tf dataset names, options inside)
      elmo-jax export-npz --options options.json --weights weights.hdf5 --output params.npz
  import-npz             NumPy .npz -> bilm-tf hdf5 weights (+ options.json)
      elmo-jax import-npz --npz params.npz --output weights.hdf5 --options-output options.json
  demo                   build a tiny random model, write it in bilm-tf format, embed a sentence
      elmo-jax demo
"""


def _enable_compilation_cache() -> None:
    """Persist XLA programs across runs (~/.cache/elmo-jax/xla), so repeated runs skip compiling."""
    import jax

    cache_dir = os.environ.get("ELMO_JAX_CACHE_DIR",
                               os.path.join(os.path.expanduser("~"), ".cache", "elmo-jax", "xla"))
    try:
        os.makedirs(cache_dir, exist_ok=True)
        jax.config.update("jax_compilation_cache_dir", cache_dir)
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)
    except Exception:  # a read-only home directory must not stop embedding
        pass


def _print_notes(notes: Sequence[str]) -> None:
    for note in notes:
        print(f"elmo-jax: note: {note}", file=sys.stderr)


def _dtype(name: str):
    import jax.numpy as jnp

    return {"float32": jnp.float32, "bfloat16": jnp.bfloat16}[name]


# --------------------------------------------------------------------------- embed
def cmd_embed(args: argparse.Namespace) -> int:
    import h5py
    import numpy as np

    from .embed import ElmoEmbedder
    from .io_utils import atomic_output, read_lines

    if args.batch_size < 1:
        raise ElmoError(f"--batch-size must be >= 1, got {args.batch_size}")
    if not os.path.isfile(args.input):
        raise ElmoError("input file not found" if not os.path.exists(args.input) else "input is not a file",
                        args.input)
    _enable_compilation_cache()
    embedder = ElmoEmbedder.from_files(args.options, args.weights, batch_size=args.batch_size,
                                       stateful=args.stateful, dtype=_dtype(args.dtype))
    _print_notes(embedder.notes)
    sentence_to_index: dict[str, str] = {}  # as AllenNLP's `elmo` command writes it
    n_lines = 0

    def sentences():
        nonlocal n_lines
        for line in read_lines(args.input):
            sentence_to_index.setdefault(line.strip(), str(n_lines))
            n_lines += 1
            yield line.split()

    from tqdm import tqdm

    start = time.perf_counter()
    n_tokens = 0
    with atomic_output(args.output, suffix=".hdf5.tmp") as tmp:
        with h5py.File(tmp, "w") as fout, tqdm(unit=" sentences", desc="embedding", file=sys.stderr,
                                               disable=args.quiet) as bar:
            for index, vectors in embedder.iter_embeddings(sentences()):
                if args.layers == "top":
                    vectors = vectors[-1]
                elif args.layers == "average":
                    vectors = vectors.mean(axis=0)
                fout.create_dataset(str(index), data=vectors.astype(np.float32), dtype="float32")
                n_tokens += vectors.shape[-2]
                bar.update(1)
            ds = fout.create_dataset("sentence_to_index", (1,), dtype=h5py.special_dtype(vlen=str))
            ds[0] = json.dumps(sentence_to_index)
    elapsed = time.perf_counter() - start
    if not args.quiet:
        print(f"elmo-jax: embedded {n_lines} sentences ({n_tokens} tokens) in {elapsed:.1f} s "
              f"({n_tokens / max(elapsed, 1e-9):.0f} tokens/s) -> {args.output}", file=sys.stderr)
    return 0


def cmd_dump_token_embeddings(args: argparse.Namespace) -> int:
    from .embed import dump_token_embeddings

    n = dump_token_embeddings(args.options, args.weights, args.vocab, args.output)
    print(f"elmo-jax: wrote {n} token vectors -> {args.output}", file=sys.stderr)
    return 0


def cmd_export_npz(args: argparse.Namespace) -> int:
    from .weights import export_npz, load_model

    options, params, notes = load_model(args.options, args.weights)
    _print_notes(notes)
    export_npz(args.output, params, options.for_inference())
    print(f"elmo-jax: wrote {args.output}", file=sys.stderr)
    return 0


def cmd_import_npz(args: argparse.Namespace) -> int:
    from .options import ModelOptions
    from .weights import import_npz, write_bilm_hdf5

    options = ModelOptions.from_json(args.options) if args.options else None
    options, params, extra = import_npz(args.npz, options)
    write_bilm_hdf5(args.output, params, options)
    if args.options_output:
        options.for_inference().to_json(args.options_output)
    if extra:
        print(f"elmo-jax: note: not in the hdf5 (bilm-tf weight files hold no softmax): "
              f"{', '.join(sorted(extra))}", file=sys.stderr)
    print(f"elmo-jax: wrote {args.output}" + (f" and {args.options_output}" if args.options_output else ""),
          file=sys.stderr)
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    """A self-contained smoke run: tiny random biLM -> bilm-tf files -> embed a sentence."""
    import tempfile

    import jax
    import jax.numpy as jnp
    import numpy as np

    from .chars import batch_to_ids
    from .embed import ElmoEmbedder
    from .modules import BiLM
    from .options import ModelOptions
    from .weights import write_bilm_hdf5

    options = ModelOptions(char_embed_dim=8, filters=((1, 16), (2, 16), (3, 32)), n_highway=1,
                           lstm_dim=64, projection_dim=32, n_layers=2, use_skip_connections=True)
    ids, _ = batch_to_ids([["hello"]])
    params = BiLM(options).init(jax.random.key(args.seed), jnp.asarray(ids))["params"]
    sentence = args.sentence.split()
    with tempfile.TemporaryDirectory() as tmp:
        options_file, weight_file = os.path.join(tmp, "options.json"), os.path.join(tmp, "weights.hdf5")
        options.to_json(options_file)
        write_bilm_hdf5(weight_file, params, options)
        embedder = ElmoEmbedder.from_files(options_file, weight_file)
        vectors = embedder.embed_sentence(sentence)
    print(f"demo model (random weights): {options.n_layers} layers, cell {options.lstm_dim}, "
          f"projection {options.projection_dim}")
    print(f"sentence: {sentence}")
    print(f"ELMo layers: shape {vectors.shape} (layers, tokens, 2 x projection)")
    for k, layer in enumerate(vectors):
        print(f"  layer {k}: first token, first 4 dims " + " ".join(f"{v:+.4f}" for v in layer[0, :4]))
    return 0


# --------------------------------------------------------------------------- parser
def build_parser() -> argparse.ArgumentParser:
    from . import __version__

    parser = argparse.ArgumentParser(
        prog="elmo-jax", description="ELMo in JAX: embed text, convert weights, pretrain.",
        epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"elmo-jax {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    def add(name: str, fn: Callable, help_text: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_text, description=help_text)
        p.set_defaults(func=fn)
        return p

    def model_args(p: argparse.ArgumentParser) -> None:
        p.add_argument("--options", required=True, help="bilm-tf options.json")
        p.add_argument("--weights", required=True, help="bilm-tf / AllenNLP weights.hdf5")

    p = add("embed", cmd_embed, "Embed a file of tokenized sentences (one per line) into an hdf5 file.")
    model_args(p)
    p.add_argument("--input", required=True, help="UTF-8 text, one whitespace-tokenized sentence per line")
    p.add_argument("--output", required=True, help="hdf5 output: one dataset per line, named by line number")
    p.add_argument("--layers", choices=("all", "top", "average"), default="all",
                   help="all: (L+1, n, 2P); top: the last layer; average: mean of the layers")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--stateful", action="store_true",
                   help="carry each batch row's LSTM state to the next batch, as bilm-tf/AllenNLP do")
    p.add_argument("--dtype", choices=("float32", "bfloat16"), default="float32")
    p.add_argument("--quiet", action="store_true", help="no progress bar")

    p = add("dump-token-embeddings", cmd_dump_token_embeddings,
            "Write the context-free token vectors of a vocabulary (bilm-tf dump_token_embeddings format).")
    model_args(p)
    p.add_argument("--vocab", required=True, help="one word per line")
    p.add_argument("--output", required=True)

    p = add("export-npz", cmd_export_npz, "Convert bilm-tf hdf5 weights to a NumPy .npz.")
    model_args(p)
    p.add_argument("--output", required=True)

    p = add("import-npz", cmd_import_npz, "Convert a NumPy .npz (from export-npz or training) to bilm-tf hdf5.")
    p.add_argument("--npz", required=True)
    p.add_argument("--output", required=True, help="weights.hdf5 to write")
    p.add_argument("--options", help="options.json, if the npz has none inside")
    p.add_argument("--options-output", help="also write the inference options.json here")

    p = add("demo", cmd_demo, "Tiny random model -> bilm-tf files -> embed a sentence (a smoke test).")
    p.add_argument("--sentence", default="ELMo gives every word a vector that depends on its sentence .")
    p.add_argument("--seed", type=int, default=0)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return args.func(args)
    except ElmoError as e:
        print(f"elmo-jax: error: {e}", file=sys.stderr)
        return 1
    except OSError as e:  # e.g. disk full while writing
        where = f"{e.filename}: " if e.filename else ""
        print(f"elmo-jax: error: {where}{e.strerror or e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("elmo-jax: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
