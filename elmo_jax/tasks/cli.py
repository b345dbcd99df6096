"""`elmo-jax task train | evaluate | predict`: task models from the command line.

    elmo-jax task train --task tag --train eng.train --dev eng.testa --test eng.testb \\
        --options elmo/options.json --weights elmo/weights.hdf5 --output-dir runs/ner --crf
    elmo-jax task evaluate --model-dir runs/ner --data eng.testb
    elmo-jax task predict --model-dir runs/ner --input new.conll --output predicted.conll
"""
from __future__ import annotations

import argparse
import json
import sys
from typing import Callable

#: flag -> TaskConfig key for the flags that only set a config value.
VALUE_FLAGS = {
    "train": str, "dev": str, "test": str, "options": str, "weights": str, "encoder": str, "hidden_dim": int,
    "num_mixes": int, "dropout": float, "l2_coef": float, "word_vectors": str, "learning_rate": float,
    "bilm_learning_rate": float, "batch_size": int, "max_epochs": int, "patience": int, "metric": str,
    "seed": int, "text_field": str, "label_field": str, "token_column": int, "tag_column": int,
}
SWITCH_FLAGS = ("crf", "fine_tune", "layer_norm", "untrained_bilm", "lowercase_word_vectors")


def add_task_parser(sub: argparse._SubParsersAction, add: Callable) -> None:
    p = add("task", None, "Train, evaluate and predict with ELMo task models (classification, NER tagging).")
    task_sub = p.add_subparsers(dest="task_command", metavar="SUBCOMMAND")

    t = task_sub.add_parser("train", help="train a classifier or tagger on ELMo",
                            description="Train a classifier (TSV/JSONL: text, label) or a tagger (CoNLL-2003 "
                                        "columns) on a pretrained biLM, with early stopping on --dev.")
    t.set_defaults(func=cmd_task_train)
    t.add_argument("--task", choices=("classify", "tag"), required=True)
    t.add_argument("--train", required=True, help="training file (.tsv/.jsonl for classify, CoNLL for tag)")
    t.add_argument("--dev", help="dev file: evaluated every epoch, selects the model, drives early stopping")
    t.add_argument("--test", help="test file: evaluated once with the selected model")
    t.add_argument("--options", required=True, help="biLM options.json (or an export directory)")
    t.add_argument("--weights", help="biLM weights.hdf5 or params.npz")
    t.add_argument("--output-dir", required=True)
    t.add_argument("--untrained-bilm", action="store_true", help="random biLM of the options' shape (a baseline)")
    t.add_argument("--encoder", choices=("bilstm", "pool"), help="classify: BiLSTM or mean+max pooling")
    t.add_argument("--hidden-dim", type=int)
    t.add_argument("--num-mixes", type=int, choices=(1, 2), help="2: an output ELMo mix too (as in the paper)")
    t.add_argument("--dropout", type=float)
    t.add_argument("--l2-coef", type=float, help="L2 on the scalar-mix weights (default 0.001)")
    t.add_argument("--layer-norm", action="store_true", help="layer-normalise the biLM layers before mixing")
    t.add_argument("--crf", action="store_true", help="tag: CRF output layer (BIO-constrained)")
    t.add_argument("--word-vectors", help="GloVe text file: static vectors concatenated to ELMo")
    t.add_argument("--lowercase-word-vectors", action="store_true")
    t.add_argument("--fine-tune", action="store_true", help="train the biLM too, at --bilm-learning-rate")
    t.add_argument("--learning-rate", type=float)
    t.add_argument("--bilm-learning-rate", type=float)
    t.add_argument("--batch-size", type=int)
    t.add_argument("--max-epochs", type=int)
    t.add_argument("--patience", type=int, help="epochs without dev improvement before stopping (0: never)")
    t.add_argument("--metric", help="model selection: accuracy|macro_f1 (classify), span_f1|accuracy (tag)")
    t.add_argument("--seed", type=int)
    t.add_argument("--text-field")
    t.add_argument("--label-field")
    t.add_argument("--token-column", type=int)
    t.add_argument("--tag-column", type=int)
    t.add_argument("--config", help="a task_config.json to start from (flags override it)")
    t.add_argument("--set", action="append", metavar="KEY=VALUE", help="any task option, e.g. --set cache_tokens=false")
    t.add_argument("--resume", action="store_true", help="continue a run in --output-dir from its last epoch")
    t.add_argument("--quiet", action="store_true", help="no progress bar")

    e = task_sub.add_parser("evaluate", help="metrics of a trained task model on a labelled file")
    e.set_defaults(func=cmd_task_evaluate)
    e.add_argument("--model-dir", required=True)
    e.add_argument("--data", required=True, help="labelled file in the training format")
    e.add_argument("--output", help="also write the report as JSON here")
    e.add_argument("--batch-size", type=int, default=64)

    r = task_sub.add_parser("predict", help="labels or tags for a file (labels in it are kept as gold)")
    r.set_defaults(func=cmd_task_predict)
    r.add_argument("--model-dir", required=True)
    r.add_argument("--input", required=True)
    r.add_argument("--output", required=True, help="classify: JSONL with probabilities; tag: CoNLL columns")
    r.add_argument("--batch-size", type=int, default=64)
    p.set_defaults(func=lambda args: (p.print_help(), 2)[1])


def _compilation_cache() -> None:
    from ..cli import _enable_compilation_cache

    _enable_compilation_cache()


def config_from_args(args: argparse.Namespace):
    from .config import TaskConfig, parse_set

    data: dict = {}
    if args.config:
        data = TaskConfig.from_json(args.config).to_dict()
    data["task"] = args.task
    for key in VALUE_FLAGS:
        value = getattr(args, key, None)
        if value is not None:
            data[key] = value
    for key in SWITCH_FLAGS:
        if getattr(args, key, False):
            data[key] = True
    data.update(parse_set(args.set or []))
    return TaskConfig.from_dict(data, source="command line")


def cmd_task_train(args: argparse.Namespace) -> int:
    _compilation_cache()
    from .loop import train_task
    from .metrics import format_report

    cfg = config_from_args(args)
    summary = train_task(cfg, args.output_dir, resume=args.resume, progress=not args.quiet)
    print(f"trained {summary['epochs']} epochs; best epoch {summary['best_epoch']} by dev {summary['metric']}"
          + (" (stopped early)" if summary["stopped_early"] else ""))
    for name in ("dev", "test"):
        if name in summary:
            print(f"\n{name} ({getattr(cfg, name)}):\n{format_report(summary[name])}")
    print(f"\nmodel and reports in {summary['output_dir']}")
    return 0


def cmd_task_evaluate(args: argparse.Namespace) -> int:
    _compilation_cache()
    from ..io_utils import atomic_write_text
    from .loop import TaskPredictor
    from .metrics import format_report

    predictor = TaskPredictor(args.model_dir, batch_size=args.batch_size)
    report = predictor.evaluate(args.data)
    print(format_report(report))
    if args.output:
        atomic_write_text(args.output, json.dumps(report, indent=2) + "\n")
    return 0


def cmd_task_predict(args: argparse.Namespace) -> int:
    _compilation_cache()
    from .loop import TaskPredictor

    predictor = TaskPredictor(args.model_dir, batch_size=args.batch_size)
    n = predictor.predict_file(args.input, args.output)
    print(f"wrote predictions for {n} sentences to {args.output}", file=sys.stderr)
    return 0
