"""`elmo-jax task train | evaluate | predict`: task models from the command line.

    elmo-jax task train --task tag --train eng.train --dev eng.testa --test eng.testb \\
        --options elmo/options.json --weights elmo/weights.hdf5 --output-dir runs/ner --crf
    elmo-jax task train --config ner.json --set dropout=0.3 --output-dir runs/ner2
    elmo-jax task evaluate --model-dir runs/ner --data eng.testb
    elmo-jax task predict --model-dir runs/ner --input new.conll --output predicted.conll
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import typing
from typing import Callable

from ..configbase import ConfigError, check_value, parse_value, show, strip_optional
from ..errors import ElmoError
from ..io_utils import atomic_write_text
from ..runtime import enable_compilation_cache
from .config import TaskConfig
from .loop import train_task
from .metrics import format_report
from .modeldir import check_output_file
from .predictor import TaskPredictor, read_model_input

#: help of the `task train` flags; every TaskConfig key gets a flag (`--hidden-dim` for hidden_dim,
#: `--crf/--no-crf` for a bool), so a new key needs no code here.
FLAG_HELP = {
    "task": "required (or in --config): classify (TSV/JSONL text + label) or tag (CoNLL columns)",
    "train": "training file (.tsv/.jsonl for classify, CoNLL for tag)",
    "dev": "dev file: evaluated every epoch, selects the model, drives early stopping",
    "test": "test file: evaluated once with the selected model",
    "model": "a pretrained biLM by name: small, medium, original, original-5.5b, pubmed, portuguese, a URL, "
             "hf://owner/repo or a directory (instead of --options/--weights)",
    "options": "biLM options.json (or an export directory)",
    "weights": "biLM weights.hdf5 or params.npz",
    "untrained_bilm": "random biLM of the options' shape (a baseline)",
    "encoder": "classify: BiLSTM or mean+max pooling",
    "num_mixes": "2: an output ELMo mix too (as in the paper)",
    "l2_coef": "L2 on the scalar-mix weights",
    "layer_norm": "layer-normalise the biLM layers before mixing",
    "crf": "tag: CRF output layer (BIO-constrained)",
    "constrain_crf": "tag + crf: forbid invalid BIO/BIOES transitions",
    "word_vectors": "GloVe text file: static vectors concatenated to ELMo",
    "fine_tune": "train the biLM too, at --bilm-learning-rate",
    "patience": "epochs without dev improvement before stopping (0: never)",
    "metric": "model selection: accuracy|macro_f1 (classify), span_f1|accuracy (tag)",
    "cache_tokens": "precompute each word's biLM token vector once (frozen biLM only)",
    "text_field": "classify: the text's column (TSV header) or key (JSONL)",
    "label_field": "classify: the label's column (TSV header) or key (JSONL)",
    "token_column": "tag: the CoNLL column of the tokens",
    "tag_column": "tag: the CoNLL column of the tags (-1: the last)",
}


def add_config_flags(parser: argparse.ArgumentParser, cls: type, helps: dict[str, str],
                     hide_defaults: tuple[str, ...] = ()) -> None:
    """One flag per key of a ConfigBase dataclass: `--a-key VALUE`, or `--a-key/--no-a-key` for a
    bool. Values stay text here and are converted and type-checked with the config's keys (so a
    wrong one is the same one-line error as from --set); unset flags stay None."""

    defaults = {f.name: f.default for f in dataclasses.fields(cls)}
    for name, annotation in cls.field_types().items():
        value = defaults[name]
        hidden = value in (None, "", dataclasses.MISSING) or name in hide_defaults
        default = "" if hidden else f"default {show(value)}"
        text = "; ".join(t for t in (helps.get(name), default) if t)
        kw: dict = {"dest": name, "default": None, "help": text.replace("%", "%%")}
        base = strip_optional(annotation)
        if base is bool:
            kw["action"] = argparse.BooleanOptionalAction
        elif typing.get_origin(base) is typing.Literal:
            kw["metavar"] = "{" + ",".join(str(c) for c in typing.get_args(base)) + "}"
        elif base in (int, float):
            kw["metavar"] = {int: "INT", float: "NUMBER"}[base]
        parser.add_argument("--" + name.replace("_", "-"), **kw)


def config_flag_values(args: argparse.Namespace, cls: type) -> dict:
    """{key: value} of the config flags given: the text of a key that takes a string, else the
    text read as JSON (as --set reads it)."""

    out = {}
    for name, annotation in cls.field_types().items():
        value = getattr(args, name, None)
        if isinstance(value, str):
            try:
                check_value(name, value, annotation)
            except ConfigError:
                value = parse_value(value, annotation)
        if value is not None:
            out[name] = value
    return out


def add_task_parser(sub: argparse._SubParsersAction, add: Callable) -> None:
    p = add("task", None, "Train, evaluate and predict with ELMo task models (classification, NER tagging).")
    task_sub = p.add_subparsers(dest="task_command", metavar="SUBCOMMAND")

    t = task_sub.add_parser("train", help="train a classifier or tagger on ELMo",
                            description="Train a classifier (TSV/JSONL: text, label) or a tagger (CoNLL-2003 "
                                        "columns) on a pretrained biLM, with early stopping on --dev. The task "
                                        "options come from --config, then the flags, then --set.")
    t.set_defaults(func=cmd_task_train)
    t.add_argument("--config", help="a task config JSON (e.g. a saved task_config.json) to start from")
    t.add_argument("--set", action="append", metavar="KEY=VALUE",
                   help="any task option, e.g. --set cache_tokens=false (applied after the flags)")
    t.add_argument("--output-dir", required=True)
    t.add_argument("--resume", action="store_true",
                   help="continue the run in --output-dir exactly where it stopped (also inside an epoch: a "
                        "stopped run saves its place), with the same options (max_epochs and patience may change)")
    t.add_argument("--quiet", action="store_true", help="no progress bar")
    add_config_flags(t.add_argument_group("task options (each also a --set key)"), TaskConfig, FLAG_HELP,
                     hide_defaults=("task",))

    e = task_sub.add_parser("evaluate", help="metrics of a trained task model on a labelled file",
                            description="Score a trained task model (--model-dir of `task train`) on a labelled "
                                        "file in its training format: accuracy, per-class P/R/F1 and macro-F1 "
                                        "(classify), or CoNLL entity-span P/R/F1 and token accuracy (tag).")
    e.set_defaults(func=cmd_task_evaluate)
    e.add_argument("--model-dir", required=True)
    e.add_argument("--data", required=True, help="labelled file in the training format")
    e.add_argument("--output", help="also write the report as JSON here (not the data file, not inside --model-dir)")
    e.add_argument("--overwrite", action="store_true", help="replace an existing --output file")
    e.add_argument("--batch-size", type=int, default=64, metavar="INT", help="sentences per prediction batch "
                                                                             "(>= 1); default 64")

    r = task_sub.add_parser("predict", help="labels or tags for a file (labels in it are kept as gold)",
                            description="Label (classify) or tag (tag) every sentence of --input with a trained "
                                        "task model (--model-dir of `task train`) and write the predictions; "
                                        "labels or tags already in the file are kept as gold.")
    r.set_defaults(func=cmd_task_predict)
    r.add_argument("--model-dir", required=True)
    r.add_argument("--input", required=True, help="a file in the training format (labels optional)")
    r.add_argument("--output", required=True, help="classify: JSONL with probabilities; tag: CoNLL columns "
                                                   "(not the input, not inside --model-dir)")
    r.add_argument("--overwrite", action="store_true", help="replace an existing --output file")
    r.add_argument("--batch-size", type=int, default=64, metavar="INT", help="sentences per prediction batch "
                                                                             "(>= 1); default 64")
    p.set_defaults(func=lambda args: (p.print_help(), 2)[1])


def _compilation_cache() -> None:
    enable_compilation_cache()


def config_from_args(args: argparse.Namespace):
    """The TaskConfig of `task train`: --config, then the flags, then --set; the file's own keys
    are checked (and errors name it) before the flags are merged."""

    data: dict = {}
    if args.config:
        data = TaskConfig.parse_dict(TaskConfig.load_json(args.config), source=args.config)
    data.update(config_flag_values(args, TaskConfig))
    data = TaskConfig.apply_overrides(data, args.set or [])
    if "task" not in data:
        raise ConfigError("task option 'task' is required: --task classify|tag (or in --config / --set)")
    return TaskConfig.from_dict(data, source="command line")


def cmd_task_train(args: argparse.Namespace) -> int:
    cfg = config_from_args(args)  # a bad option is reported before anything else happens
    cfg.check_applicable("command line")
    _compilation_cache()

    summary = train_task(cfg, args.output_dir, resume=args.resume, progress=not args.quiet)
    if summary["preempted"]:
        print(stopped_message(summary))
        return 0
    print(f"trained {summary['epochs']} epochs; best epoch {summary['best_epoch']} by dev {summary['metric']}"
          + (" (stopped early)" if summary["stopped_early"] else ""))
    for name in ("dev", "test"):
        if name in summary:
            print(f"\n{name} ({getattr(cfg, name)}):\n{format_report(summary[name])}")
    print(f"\nmodel and reports in {summary['output_dir']}")
    return 0


def stopped_message(summary: dict) -> str:
    """What a run stopped by a signal saved: whole epochs, and the batches of a partial one."""
    epochs = summary["epochs"]
    whole = f"{epochs} complete epoch{'s' if epochs != 1 else ''}"
    stopped = summary.get("stopped")
    if stopped and stopped["batches"] < stopped["of"]:
        return (f"stopped in epoch {stopped['epoch']} after {stopped['batches']} of its {stopped['of']} batches "
                f"({whole} before it); --resume continues exactly there")
    return f"stopped after {whole}; continue with --resume"


def _check_batch_size(args: argparse.Namespace) -> None:
    if args.batch_size < 1:
        raise ElmoError(f"--batch-size must be >= 1, got {args.batch_size}")


def cmd_task_evaluate(args: argparse.Namespace) -> int:
    # everything checked before the model loads: options, the output path, the data and its labels
    _check_batch_size(args)
    if args.output:
        check_output_file(args.output, [args.data], args.model_dir, overwrite=args.overwrite)
    data = read_model_input(args.model_dir, args.data, require_labels=True)
    _compilation_cache()

    predictor = TaskPredictor(args.model_dir, batch_size=args.batch_size)
    report = predictor.evaluate(data)
    print(format_report(report))
    if args.output:
        atomic_write_text(args.output, json.dumps(report, indent=2) + "\n")
    return 0


def cmd_task_predict(args: argparse.Namespace) -> int:
    _check_batch_size(args)
    check_output_file(args.output, [args.input], args.model_dir, overwrite=args.overwrite)
    data = read_model_input(args.model_dir, args.input, require_labels=False)
    _compilation_cache()

    predictor = TaskPredictor(args.model_dir, batch_size=args.batch_size)
    n = predictor.predict_file(data, args.output)
    print(f"wrote predictions for {n} sentences to {args.output}", file=sys.stderr)
    return 0
