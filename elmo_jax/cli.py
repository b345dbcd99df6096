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

import h5py
import jax.numpy as jnp
import numpy as np
from tqdm import tqdm

from . import __version__
from .config import TrainConfig
from .corpus import builtin_corpus
from .embed import ElmoEmbedder, dump_token_embeddings
from .errors import ElmoError
from .io_utils import atomic_output, check_output_file, read_lines
from .options import ModelOptions
from .tasks.cli import add_task_parser
from .train.export import export_run
from .train.loop import run_perplexity, train
from .train.plot import plot_run
from .train.tfimport import import_tf_checkpoint
from .vocab import build_vocab, resolve_files
from .weights import export_npz, import_npz, load_model, write_bilm_hdf5
from .hub import format_size, list_models, models_dir, offline_mode, resolve_model
from .runtime import enable_compilation_cache, init_distributed
from .tokenize import TEXT_EXTRA, TOKENIZERS, Tokenizer

EXAMPLES = """\
commands and examples:
  embed                  contextual vectors for a file of tokenized sentences (one per line)
      elmo-jax embed --model original --input text.txt --output vectors.hdf5
      elmo-jax embed --options options.json --weights weights.hdf5 --input text.txt --output vectors.hdf5
      elmo-jax embed ... --layers top --batch-size 64 --stateful
      elmo-jax embed ... --input raw.txt --tokenize [--tokenizer moses] [--split-sentences]   (untokenized text)
  dump-token-embeddings  context-free token vectors of a vocabulary (bilm-tf format)
      elmo-jax dump-token-embeddings --model small --vocab vocab.txt --output tokens.hdf5
  models                 the published models (small, medium, original, ...): shape, size, cached or not
      elmo-jax models
      elmo-jax models --download original     (then ELMO_JAX_OFFLINE=1 elmo-jax embed --model original ...)
  export-npz             bilm-tf hdf5 weights -> NumPy .npz (bilm-tf dataset names, options inside)
      elmo-jax export-npz --options options.json --weights weights.hdf5 --output params.npz
  import-npz             NumPy .npz -> bilm-tf hdf5 weights (+ options.json)
      elmo-jax import-npz --npz params.npz --output weights.hdf5 --options-output options.json
  train                  pretrain a biLM from a config (python train.py is the same)
      elmo-jax train --config configs/tiny.json --run-dir runs/tiny [--set max_steps=200]
  perplexity             full-softmax perplexity of a run on text files
      elmo-jax perplexity --run-dir runs/tiny --files 'heldout/*.txt'
  export                 a run's checkpoint -> options.json + weights.hdf5 (bilm-tf) + params.npz
      elmo-jax export --run-dir runs/tiny --output-dir exported/
  import-tf-checkpoint   bilm-tf TF training checkpoint (softmax, Adagrad state) -> run directory, no TF
      elmo-jax import-tf-checkpoint --checkpoint tf_checkpoint/ --vocab vocab-2016-09-10.txt --output-dir runs/original
      elmo-jax train --config runs/original/config.json --run-dir runs/tuned \\
          --set init_from=runs/original --set train_files='my_text/*.txt' --set max_steps=1000
  build-vocab            frequency-sorted vocabulary of a corpus (bilm-tf format)
      elmo-jax build-vocab --corpus 'corpus/*.txt' --output vocab.txt --min-count 2 [--tokenize]   (raw text:
          then train with --set tokenize=true)
  plot                   learning curve PNG of a run
      elmo-jax plot runs/tiny
  task                   ELMo task models: sentence classification, NER tagging (train / evaluate / predict)
      elmo-jax task train --task tag --train eng.train --dev eng.testa --options elmo/options.json \\
          --weights elmo/weights.hdf5 --output-dir runs/ner --crf
      elmo-jax task train --task classify --train train.tsv --dev dev.tsv --model original --output-dir runs/sst
      elmo-jax task evaluate --model-dir runs/ner --data eng.testb
      elmo-jax task predict --model-dir runs/ner --input new.conll --output tagged.conll
  demo                   pretrain configs/tiny.json on the built-in corpus, export it, embed a sentence
      elmo-jax demo [--config configs/tiny.json --run-dir runs/tiny]
"""


def _print_notes(notes: Sequence[str]) -> None:
    for note in notes:
        print(f"elmo-jax: note: {note}", file=sys.stderr)


def _model_files(args: argparse.Namespace) -> tuple[str, str]:
    """(options.json, weights.hdf5) from `--model NAME` (resolved, downloaded if needed) or from
    `--options` + `--weights`; giving both forms, or neither, is an error."""
    if args.model:
        if args.options or args.weights:
            raise ElmoError("--model and --options/--weights are mutually exclusive: give a model name, "
                            "or the two files")
        files = resolve_model(args.model, verify=args.verify or None, progress=not getattr(args, "quiet", False))
        _print_notes(files.notes)
        return files.options_file, files.weight_file
    if args.verify:
        raise ElmoError("--verify checks a --model download; it does not apply to --options/--weights")
    if not (args.options and args.weights):
        raise ElmoError("give --model NAME (a published id such as 'original', a URL, hf://owner/repo or a "
                        "directory), or both --options and --weights")
    return args.options, args.weights


def _dtype(name: str):
    return {"float32": jnp.float32, "bfloat16": jnp.bfloat16}[name]


# --------------------------------------------------------------------------- embed
def cmd_embed(args: argparse.Namespace) -> int:

    if args.batch_size < 1:
        raise ElmoError(f"--batch-size must be >= 1, got {args.batch_size}")
    if not os.path.isfile(args.input):
        raise ElmoError("input file not found" if not os.path.exists(args.input) else "input is not a file",
                        args.input)
    tokenizer = text_tokenizer(args)  # before loading the model: a missing library fails first
    model_files = _model_files(args)
    check_output_file(args.output, inputs=(args.input, args.vocab, *model_files), overwrite=args.overwrite)
    enable_compilation_cache()
    embedder = ElmoEmbedder.from_files(*model_files, vocab_file=args.vocab, batch_size=args.batch_size,
                                       stateful=args.stateful, dtype=_dtype(args.dtype))
    _print_notes(embedder.notes)
    if args.vocab and not embedder.options.needs_vocab:
        _print_notes([f"--vocab {args.vocab} is not used: this model reads characters only"])
    sentence_to_index: dict[str, str] = {}  # as AllenNLP's `elmo` command writes it
    n_lines = 0

    def lines():
        nonlocal n_lines
        for line in read_lines(args.input):
            n_lines += 1
            yield line

    start = time.perf_counter()
    n_tokens = n_sentences = 0
    with atomic_output(args.output, suffix=".hdf5.tmp") as tmp:
        with h5py.File(tmp, "w") as fout, tqdm(unit=" sentences", desc="embedding", file=sys.stderr,
                                               disable=args.quiet) as bar:
            for index, sentence in enumerate(embedder.iter_text_embeddings(lines(), tokenizer)):
                vectors = sentence.vectors
                if args.layers == "top":
                    vectors = vectors[-1]
                elif args.layers == "average":
                    vectors = vectors.mean(axis=0)
                ds = fout.create_dataset(str(index), data=vectors.astype(np.float32), dtype="float32")
                ds.attrs["tokens"] = json.dumps(sentence.tokens, ensure_ascii=False)
                if args.split_sentences:
                    ds.attrs["line"] = sentence.text_index
                sentence_to_index.setdefault(sentence.text.strip(), str(index))
                n_tokens += vectors.shape[-2]
                n_sentences += 1
                bar.update(1)
            ds = fout.create_dataset("sentence_to_index", (1,), dtype=h5py.special_dtype(vlen=str))
            ds[0] = json.dumps(sentence_to_index)
    elapsed = time.perf_counter() - start
    if not args.quiet:
        print(f"elmo-jax: embedded {n_sentences} sentences of {n_lines} lines ({n_tokens} tokens) in {elapsed:.1f} s "
              f"({n_tokens / max(elapsed, 1e-9):.0f} tokens/s) -> {args.output}", file=sys.stderr)
    return 0


def text_tokenizer(args: argparse.Namespace):
    """The `Tokenizer` of `--tokenize [--tokenizer NAME] [--language CODE] [--split-sentences]`, or
    None (whitespace-tokenized input)."""
    if not args.tokenize:
        given = [flag for flag, value in (("--tokenizer", args.tokenizer), ("--language", args.language),
                                          ("--split-sentences", args.split_sentences)) if value]
        if given:
            raise ElmoError(f"{', '.join(given)} only apply to raw text: add --tokenize")
        return None
    return Tokenizer(args.tokenizer or "moses", language=args.language or "en",
                     split_sentences=args.split_sentences)


def add_tokenize_args(p: argparse.ArgumentParser, what: str) -> None:
    p.add_argument("--tokenize", action="store_true",
                   help=f"{what} is raw text: tokenize it (needs pip install '{TEXT_EXTRA}')")
    p.add_argument("--tokenizer", choices=TOKENIZERS,
                   help="with --tokenize: moses (default; as the 1B Word Benchmark the published models "
                        "were trained on), or a Hugging Face tokenizers pre-tokenizer")
    p.add_argument("--language", help="with --tokenize: language code for the tokenizer and the sentence "
                                      "splitter (default en)")
    p.add_argument("--split-sentences", action="store_true",
                   help="with --tokenize: split each line into sentences (sentence-splitter, Moses rules)")


def cmd_dump_token_embeddings(args: argparse.Namespace) -> int:
    model_files = _model_files(args)
    check_output_file(args.output, inputs=(args.vocab, *model_files), overwrite=args.overwrite)
    n = dump_token_embeddings(*model_files, args.vocab, args.output)
    print(f"elmo-jax: wrote {n} token vectors -> {args.output}", file=sys.stderr)
    return 0


def cmd_export_npz(args: argparse.Namespace) -> int:
    model_files = _model_files(args)
    check_output_file(args.output, inputs=model_files, overwrite=args.overwrite)
    options, params, notes = load_model(*model_files)
    _print_notes(notes)
    export_npz(args.output, params, options.for_inference())
    print(f"elmo-jax: wrote {args.output}", file=sys.stderr)
    return 0


def cmd_import_npz(args: argparse.Namespace) -> int:
    inputs = (args.npz, args.options)
    check_output_file(args.output, inputs=inputs, overwrite=args.overwrite)
    if args.options_output:
        check_output_file(args.options_output, inputs=inputs, overwrite=args.overwrite, option="--options-output")
        if os.path.abspath(args.options_output) == os.path.abspath(args.output):
            raise ElmoError("--options-output and --output name the same file", args.output)
    options = ModelOptions.from_json(args.options) if args.options else None
    options, params, extra = import_npz(args.npz, options)
    write_bilm_hdf5(args.output, params, options)  # both outputs were checked before anything was written
    if args.options_output:
        options.for_inference().to_json(args.options_output)
    if extra:
        print(f"elmo-jax: note: not in the hdf5 (bilm-tf weight files hold no softmax): "
              f"{', '.join(sorted(extra))}", file=sys.stderr)
    print(f"elmo-jax: wrote {args.output}" + (f" and {args.options_output}" if args.options_output else ""),
          file=sys.stderr)
    return 0


def cmd_models(args: argparse.Namespace) -> int:
    """List the published models and what the cache holds (no network); `--download NAME` fetches one."""
    if args.download:
        files = resolve_model(args.download, verify=args.verify or None, progress=not args.quiet)
        _print_notes(files.notes)
        print(f"elmo-jax: {args.download} -> {files.directory}", file=sys.stderr)
        return 0
    rows = [("id", "shape", "params", "size", "cached")]
    for row in list_models():
        params = f"{row['params_m']:.1f}M" if row["params_m"] else ""
        rows.append((row["id"], row["shape"], params, format_size(row["bytes"], row["size_exact"]), row["cached"]))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for r in rows:
        print("  ".join(cell.ljust(w) for cell, w in zip(r, widths)).rstrip())
    print(f"\ncache: {models_dir()} (ELMO_JAX_CACHE_DIR); "
          + ("offline: only cached models load" if offline_mode() else "others download on first use"))
    return 0


DEMO_CONFIG = os.path.join("configs", "tiny.json")


def demo_config(path: Optional[str]) -> str:
    """The demo's config: `path` if given; else configs/tiny.json in the current directory, else the
    one of the source tree elmo-jax runs from (an editable install), so the demo runs from anywhere."""
    if path is not None or os.path.exists(DEMO_CONFIG):
        return path or DEMO_CONFIG
    beside = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), DEMO_CONFIG)
    if os.path.exists(beside):
        return beside
    raise ElmoError("the demo's config is neither in this directory nor beside the installed package; run from "
                    "the repository root or pass --config", DEMO_CONFIG)


def cmd_demo(args: argparse.Namespace) -> int:
    """The built-in main job: pretrain the tiny config on the built-in corpus (resuming if the run
    directory has a checkpoint), export it in bilm-tf format, and embed a sentence with it."""

    cfg = TrainConfig.from_json(demo_config(args.config), args.set or [])
    last = train(cfg, args.run_dir, progress=not args.quiet)
    out_dir = os.path.join(args.run_dir, "export")
    paths = export_run(args.run_dir, out_dir)
    embedder = ElmoEmbedder.from_files(paths["options.json"], paths["weights.hdf5"])
    sentence = args.sentence.split()
    vectors = embedder.embed_sentence(sentence)
    info = ""
    if cfg.train_files.startswith("builtin:"):
        info = f" (unigram perplexity of the same heldout text: {builtin_corpus()['unigram_perplexity']:.1f})"
    if "val_perplexity" in last:
        print(f"heldout perplexity after {int(last.get('step', 0))} steps: {last['val_perplexity']:.1f}{info}")
    print(f"exported to {out_dir}: options.json, weights.hdf5 (bilm-tf layout), params.npz, vocab.txt")
    print(f"sentence: {sentence}")
    print(f"ELMo layers: shape {vectors.shape} (layers, tokens, 2 x projection)")
    for k, layer in enumerate(vectors):
        print(f"  layer {k}: first token, first 4 dims " + " ".join(f"{v:+.4f}" for v in layer[0, :4]))
    return 0


# --------------------------------------------------------------------------- training
def cmd_train(args: argparse.Namespace) -> int:
    cfg = TrainConfig.from_json(args.config, args.set or [])
    init_distributed(args.coordinator, args.num_processes, args.process_id)
    enable_compilation_cache()

    run_dir = args.run_dir or os.path.join("runs", os.path.splitext(os.path.basename(args.config))[0])
    resume = None if not (args.resume or args.no_resume) else bool(args.resume)
    last = train(cfg, run_dir, resume=resume, progress=not args.quiet)
    summary = ", ".join(f"{k} {v:.4g}" for k, v in last.items() if isinstance(v, float))
    print(f"elmo-jax: finished in {run_dir}: {summary}", file=sys.stderr)
    return 0


def cmd_perplexity(args: argparse.Namespace) -> int:
    for flag, value in (("--batch-size", args.batch_size), ("--unroll-steps", args.unroll_steps),
                        ("--max-batches", args.max_batches)):
        if value is not None and value < 1:
            raise ElmoError(f"{flag} must be >= 1, got {value}")
    result = run_perplexity(args.run_dir, args.files, step=args.step, batch_size=args.batch_size,
                            unroll_steps=args.unroll_steps, max_batches=args.max_batches,
                            from_training_state=args.from_training_state)
    print(json.dumps(result, indent=2))
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    paths = export_run(args.run_dir, args.output_dir, step=args.step, overwrite=args.overwrite)
    print(f"elmo-jax: exported step {paths['step']} -> {args.output_dir} "
          "(options.json, weights.hdf5, params.npz, vocab.txt)", file=sys.stderr)
    return 0


def cmd_import_tf_checkpoint(args: argparse.Namespace) -> int:
    result = import_tf_checkpoint(args.checkpoint, args.vocab, args.output_dir, options_file=args.options,
                                  progress=not args.quiet)
    _print_notes(result["notes"])
    print(f"elmo-jax: imported {result['checkpoint']} (step {result['step']}, {result['vocab_size']} words) -> "
          f"{result['run_dir']}; fine-tune with: elmo-jax train --config {result['run_dir']}/config.json "
          f"--run-dir RUN --set init_from={result['run_dir']} --set train_files='TEXT/*.txt'", file=sys.stderr)
    return 0


def cmd_build_vocab(args: argparse.Namespace) -> int:
    tokenizer = text_tokenizer(args)
    files = resolve_files(args.corpus)
    check_output_file(args.output, inputs=files, overwrite=args.overwrite)
    vocab, n_tokens = build_vocab(files, min_count=args.min_count, max_size=args.max_size, tokenizer=tokenizer)
    vocab.save(args.output)
    print(f"elmo-jax: {len(vocab)} words ({n_tokens} tokens counted) -> {args.output}", file=sys.stderr)
    return 0


def cmd_plot(args: argparse.Namespace) -> int:
    out = plot_run(args.run_dir, args.output, overwrite=args.overwrite)
    print(f"elmo-jax: wrote {out}", file=sys.stderr)
    return 0


# --------------------------------------------------------------------------- parser
def build_parser() -> argparse.ArgumentParser:
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
        p.add_argument("--model", metavar="NAME", help="a published model (small, medium, original, original-5.5b, "
                       "pubmed, portuguese), a URL, hf://owner/repo or a directory; downloaded once into the "
                       "cache (instead of --options/--weights)")
        p.add_argument("--options", help="bilm-tf options.json")
        p.add_argument("--weights", help="bilm-tf / AllenNLP weights.hdf5")
        p.add_argument("--verify", action="store_true",
                       help="with --model: also check the cached files' sha256 (or ELMO_JAX_VERIFY_SHA256=1)")

    p = add("embed", cmd_embed, "Embed a file of sentences (one per line) into an hdf5 file.")
    model_args(p)
    p.add_argument("--input", required=True, help="UTF-8 text, one whitespace-tokenized sentence per line "
                                                  "(raw text with --tokenize)")
    p.add_argument("--output", required=True,
                   help="hdf5 output: one dataset per sentence, named by its number (= line number unless "
                        "--split-sentences), with its tokens as a JSON attribute 'tokens'")
    add_tokenize_args(p, "the input")
    p.add_argument("--layers", choices=("all", "top", "average"), default="all",
                   help="all: (L+1, n, 2P); top: the last layer; average: mean of the layers")
    p.add_argument("--vocab", help="the vocabulary of a word-input biLM (or a word channel): one word per line; "
                   "words not in it get <UNK>")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--overwrite", action="store_true", help="replace an existing --output file")
    p.add_argument("--stateful", action="store_true",
                   help="carry each batch row's LSTM state to the next batch, as bilm-tf/AllenNLP do")
    p.add_argument("--dtype", choices=("float32", "bfloat16"), default="float32")
    p.add_argument("--quiet", action="store_true", help="no progress bar")

    p = add("dump-token-embeddings", cmd_dump_token_embeddings,
            "Write the context-free token vectors of a vocabulary (bilm-tf dump_token_embeddings format).")
    model_args(p)
    p.add_argument("--vocab", required=True, help="one word per line")
    p.add_argument("--output", required=True)
    p.add_argument("--overwrite", action="store_true", help="replace an existing output file")

    p = add("export-npz", cmd_export_npz, "Convert bilm-tf hdf5 weights to a NumPy .npz.")
    model_args(p)
    p.add_argument("--output", required=True)
    p.add_argument("--overwrite", action="store_true", help="replace an existing output file")

    p = add("import-npz", cmd_import_npz, "Convert a NumPy .npz (from export-npz or training) to bilm-tf hdf5.")
    p.add_argument("--npz", required=True)
    p.add_argument("--output", required=True, help="weights.hdf5 to write")
    p.add_argument("--options", help="options.json, if the npz has none inside")
    p.add_argument("--options-output", help="also write the inference options.json here")
    p.add_argument("--overwrite", action="store_true", help="replace existing output files")

    p = add("train", cmd_train, "Pretrain a biLM (train.py is the same command).")
    add_train_args(p)

    p = add("perplexity", cmd_perplexity, "Full-softmax perplexity of a run's checkpoint on text files.")
    p.add_argument("--run-dir", required=True)
    p.add_argument("--files", required=True, help="glob of one-sentence-per-line files")
    p.add_argument("--step", type=int, help="checkpoint step (default: latest)")
    p.add_argument("--batch-size", type=int, default=64, help="rows per batch (default 64)")
    p.add_argument("--unroll-steps", type=int, default=20, help="tokens per row and batch (default 20)")
    p.add_argument("--max-batches", type=int, help="stop after this many batches (default: all the text)")
    p.add_argument("--from-training-state", action="store_true",
                   help="start from the LSTM state training carried at that checkpoint instead of the zero state "
                        "(evaluation and embedders start from zero: a model far better from here was trained only "
                        "from carried states; see state_reset_prob)")

    p = add("export", cmd_export, "Export a run's checkpoint: options.json, weights.hdf5 (bilm-tf), params.npz.")
    p.add_argument("--run-dir", required=True)
    p.add_argument("--output-dir", required=True,
                   help="new or empty, or an earlier export of the same run (its export files are replaced)")
    p.add_argument("--step", type=int, help="checkpoint step (default: latest)")
    p.add_argument("--overwrite", action="store_true",
                   help="write into a non-empty directory anyway (only the export's own files are replaced)")

    p = add("import-tf-checkpoint", cmd_import_tf_checkpoint,
            "Import a bilm-tf TensorFlow training checkpoint (softmax and Adagrad state included) as a run "
            "directory for perplexity, export and fine-tuning (train with init_from); no TensorFlow needed.")
    p.add_argument("--checkpoint", required=True,
                   help="checkpoint directory (with its 'checkpoint' file) or prefix such as DIR/model.ckpt-935588")
    p.add_argument("--vocab", required=True, help="the vocabulary the model was trained with (one word per line)")
    p.add_argument("--output-dir", required=True, help="the run directory to write (new or empty)")
    p.add_argument("--options", help="bilm-tf options.json (default: options.json next to the checkpoint)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")

    p = add("build-vocab", cmd_build_vocab, "Build a bilm-tf vocabulary (<S>, </S>, <UNK>, then by frequency).")
    p.add_argument("--corpus", required=True, help="glob of one-sentence-per-line files")
    p.add_argument("--output", required=True)
    p.add_argument("--overwrite", action="store_true", help="replace an existing --output file")
    p.add_argument("--min-count", type=int, default=1, help="keep words seen at least this often (default 1)")
    p.add_argument("--max-size", type=int, help="keep at most this many words, markers included (default: all)")
    add_tokenize_args(p, "the corpus")

    p = add("plot", cmd_plot, "Write a PNG learning curve of a run: train and validation perplexity against "
                               "step, log scale (needs matplotlib: pip install 'elmo-jax[plot]').")
    p.add_argument("run_dir", help="a training run directory (holding metrics.jsonl)")
    p.add_argument("--output", help="PNG path (default RUN_DIR/learning_curve.png, replaced at each call)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --output file")

    p = add("models", cmd_models, "List the published ELMo models: shape, size, and whether each is cached "
                                   "(no network); --download NAME fetches one into the cache.")
    p.add_argument("--download", metavar="NAME", help="download a model (any --model NAME) into the cache")
    p.add_argument("--verify", action="store_true", help="with --download: also check a cached model's sha256")
    p.add_argument("--quiet", action="store_true", help="no progress bar")

    p = add("demo", cmd_demo, "Pretrain the tiny config on the built-in corpus, export it, embed a sentence.")
    p.add_argument("--config", help="default: configs/tiny.json (here, else the repository elmo-jax is installed from)")
    p.add_argument("--run-dir", default="runs/tiny",
                   help="the run directory (default runs/tiny; a second call resumes it, then re-exports)")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a config key")
    p.add_argument("--sentence", default="Return the number of items in the list .",
                   help="the whitespace-tokenized sentence to embed with the exported model")
    p.add_argument("--quiet", action="store_true", help="no progress bar")

    add_task_parser(sub, add)
    return parser


def add_train_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", required=True, help="configs/<name>.json")
    p.add_argument("--run-dir", help="where checkpoints, metrics and the resolved config go "
                                      "(default runs/<config name>)")
    p.add_argument("--set", action="append", metavar="KEY=VALUE",
                   help="override a config key, e.g. --set max_steps=100 --set model.lstm.dim=256")
    resume = p.add_mutually_exclusive_group()
    resume.add_argument("--resume", action="store_true", help="continue from the latest checkpoint (the default "
                                                               "when the run directory holds one)")
    resume.add_argument("--no-resume", action="store_true",
                        help="refuse to start if the run directory has checkpoints")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--coordinator", help="multi-host: coordinator address host:port")
    p.add_argument("--num-processes", type=int, help="multi-host: number of processes")
    p.add_argument("--process-id", type=int, help="multi-host: this process's id")


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
