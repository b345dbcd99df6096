"""Train a task model: `train_task(cfg, output_dir)`.

    summary = train_task(cfg, "out/ner")   # -> out/ner: config, labels, checkpoints, reports
    TaskPredictor("out/ner")              # (tasks/predictor.py) predicts and evaluates with it

Everything is checked before any compute (files, labels, options, weights, the output directory
and its lock). Then one compiled step runs over a mesh of all devices of all hosts, params
replicated and the batch split over the 'data' axis (each host feeds its slice of every global
batch); at most one step is in flight (the previous step's metrics are read while the next one
runs). Training loss and gradient norm, averaged over each `log_every` steps, and one record per
epoch go to metrics.jsonl (and TensorBoard); a non-finite loss stops the run naming the step.
After each epoch the model is evaluated on the dev file: an improvement is saved to `best/`
(Orbax), and training stops after `patience` epochs without one. `checkpoints/` holds the last
epoch's whole train state for `--resume` (a run stopped by a signal inside an epoch saves that
state with the epoch's progress, and `--resume` continues at the next batch). The directory's
layout: `tasks/modeldir.py`.
"""
from __future__ import annotations

import math
import os
import sys
import time
from typing import Any, Optional

import jax
import jax.numpy as jnp
import numpy as np

from .. import sharding as shd
from ..errors import InputError
from ..train import kit
from ..train.checkpoint import Checkpoints
from ..train.metrics import IntervalMeans, MetricsWriter
from ..train.preemption import PreemptionGuard
from ..train.runlock import RunLock
from .config import TaskConfig
from .features import (build_model, constants, get_bilm, init_params, load_bilm, load_word_vectors, put_bilm,
                       token_embedder, uses_chars)
from .inputs import TaskInputs, epoch_order
from .labels import check_labels, label_arrays, label_names, model_view, read_task_file, score, selection_value
from .modeldir import (BEST_DIR, CHECKPOINT_DIR, METRICS_FILE, TENSORBOARD_DIR, check_output_dir, load_best_params,
                       write_model_files, write_report)
from .step import global_batch, make_optimizer, make_predict_fn, make_train_step, padded_rows, predict_all


def train_task(cfg: TaskConfig, output_dir: str, *, resume: bool = False, progress: bool = True,
               log: Any = None, return_params: bool = False) -> dict:
    """Train a task model; returns {'epochs', 'best_epoch', 'dev': report, 'test': report, 'history',
    ...} and, with `return_params`, the selected params as NumPy ('params'). A run stopped by a
    signal returns 'preempted': True and 'stopped': {'epoch' (1-based), 'batches' done of it, 'of'
    (its batches)}; `resume=True` continues exactly there (also inside an epoch)."""
    log = log or (lambda msg: print(msg, file=sys.stderr))
    cfg.validate().check_applicable()
    output_dir = os.path.abspath(output_dir)
    # ---- everything checked before compute
    train = read_task_file(cfg, cfg.train)
    if train.labels is None:
        raise InputError("the training file has no labels", cfg.train)
    scheme = train.scheme if cfg.task == "tag" else None  # the training file's tag scheme
    train = model_view(train, scheme)  # IOB1 -> IOB2
    names = label_names(cfg, train)
    if cfg.task == "classify" and len(names) < 2:
        raise InputError(f"the training file has only one label ({names[0]!r}); a classifier needs two or more",
                         cfg.train)
    dev = read_task_file(cfg, cfg.dev) if cfg.dev else None
    test = read_task_file(cfg, cfg.test) if cfg.test else None
    for data in (dev, test):
        if data is not None:
            if data.labels is None:
                raise InputError("an evaluation file needs gold labels", data.path)
            check_labels(cfg, model_view(data, scheme), names)
    options, bilm_params = load_bilm(cfg)
    all_sentences = train.tokens + (dev.tokens if dev else []) + (test.tokens if test else [])
    vectors = load_word_vectors(cfg, all_sentences)
    check_output_dir(cfg, output_dir, resume)
    with RunLock(output_dir, enabled=jax.process_index() == 0), PreemptionGuard() as guard:
        write_model_files(cfg, output_dir, resume, names, scheme, options, vectors)
        if vectors is not None:
            log(f"word vectors: {len(vectors.words)} of the data's words found in {cfg.word_vectors} "
                f"(dim {vectors.dim}); coverage of the training tokens "
                f"{vectors.coverage([w for s in train.tokens for w in s]):.1%}")
        return _train(cfg, output_dir, resume, progress, log, return_params, train, dev, test, names, scheme,
                      options, bilm_params, vectors, all_sentences, guard)


def _train(cfg, output_dir, resume, progress, log, return_params, train, dev, test, names, scheme, options,
           bilm_params, vectors, all_sentences, guard) -> dict:
    # ---- model, state, mesh
    mesh = shd.make_mesh()
    inputs = TaskInputs(options, all_sentences, word_vectors=vectors, use_chars=uses_chars(cfg))
    model = build_model(cfg, options, names, inputs)
    key = jax.random.key(cfg.seed)
    tx = make_optimizer(cfg)
    source = cfg.weights or cfg.options

    def init(k, bilm):
        params = init_params(cfg, model, inputs, jax.random.fold_in(k, 0))
        if bilm is not None:
            params = put_bilm(params, bilm, source)
        return {"step": jnp.zeros((), jnp.int32), "params": params, "opt_state": tx.init(params),
                "rng": jax.random.key_data(jax.random.fold_in(k, 1))}

    abstract, state_sharding = kit.plan_state(init, kit.replicated_shardings(mesh), key, bilm_params)
    last_ckpt = Checkpoints(os.path.join(output_dir, CHECKPOINT_DIR), keep=1)
    best_ckpt = Checkpoints(os.path.join(output_dir, BEST_DIR), keep=1)
    writer = None
    try:
        history: list[dict] = []
        start_epoch, best_value, best_epoch, bad_epochs = 0, -math.inf, -1, 0
        partial = None  # a preempted epoch: {"epoch", "batches" done, "means" of their losses}
        restored = last_ckpt.restore_latest(abstract, {"epoch": np.zeros((), np.int32)}) if resume else None
        if restored is not None:
            state, meta = restored.state, restored.meta
            start_epoch, best_epoch = int(meta["epoch"]) + 1, int(meta["best_epoch"])
            best_value = -math.inf if meta["best_value"] is None else float(meta["best_value"])
            bad_epochs, history, partial = int(meta["bad_epochs"]), list(meta["history"]), meta.get("partial")
            where = (f"epoch {partial['epoch'] + 1}, batch {partial['batches']}" if partial
                     else f"epoch {start_epoch}")
            log(f"resuming after {where} (best {cfg.selection_metric} {best_value:.4f} at epoch {best_epoch + 1})")
        else:
            state = kit.create_state(init, state_sharding, key, bilm_params)
        t0 = time.time()
        consts = constants(cfg, inputs, token_embedder(cfg, options, jax.device_get(get_bilm(state["params"]))))
        if not uses_chars(cfg):
            log(f"token table: {inputs.vocab_size} distinct words through the char-CNN in {time.time() - t0:.1f} s")
        consts = jax.device_put(consts, shd.replicated(mesh))
        train_step = make_train_step(cfg, model, tx, state_sharding, mesh)
        predict_fn = make_predict_fn(cfg, model)
        index = {name: i for i, name in enumerate(names)}
        rows = padded_rows(cfg.batch_size)
        encoded = [inputs.encode(s) for s in train.tokens]
        lengths = [len(s) for s in train.tokens]
        writer = MetricsWriter(os.path.join(output_dir, METRICS_FILE), os.path.join(output_dir, TENSORBOARD_DIR),
                               purge_step=int(state["step"]) + 1 if restored is not None else None)
        interval = IntervalMeans()  # the `log_every` records: means over their steps (across epochs)
        clock = {"t": time.perf_counter(), "sentences": 0}

        def drain(item, epoch: int, epoch_means: IntervalMeans, bar) -> dict:
            """Read a finished step's metrics; stop on a non-finite loss; log at interval ends."""
            step_no, metrics, n_sentences = item
            values = kit.read_metrics(metrics)
            kit.check_finite(values, step_no, ("loss", "grad_norm"), last_ckpt, output_dir,
                             "lower the learning rate or check the data; --resume continues from the last "
                             "saved checkpoint")
            for means in (interval, epoch_means):
                means.add({"loss": values["loss_sum"]}, {"loss": values["loss_count"]})
                means.add_scalar("grad_norm", values["grad_norm"])
                means.step_done()
            clock["sentences"] += n_sentences
            bar.update(1)
            bar.set_postfix(loss=f"{values['loss']:.4f}", refresh=False)
            if cfg.log_every and step_no % cfg.log_every == 0:
                now = time.perf_counter()
                rate = clock["sentences"] / max(now - clock["t"], 1e-9)
                clock.update(t=now, sentences=0)
                m = interval.means()
                writer.write({"step": step_no, "epoch": epoch + 1, "loss": m["loss"], "grad_norm": m["grad_norm"],
                              "sentences_per_s": rate, "interval_steps": m["steps"]})
            return values

        def save_last(epoch: int, extra: Optional[dict] = None) -> None:
            """The whole train state after `epoch` (+ a preempted epoch's progress), as step N."""
            meta = {"epoch": epoch, "best_value": None if best_value == -math.inf else best_value,
                    "best_epoch": best_epoch, "bad_epochs": bad_epochs, "history": history, **(extra or {})}
            last_ckpt.save(int(state["step"]), state, {"epoch": np.int32(epoch)}, meta, force=True)

        def evaluate(data) -> dict:
            outputs = predict_all(cfg, predict_fn, state["params"], consts, inputs, data.tokens, mesh,
                                  cfg.batch_size * 2)
            return score(cfg, data, outputs, names, scheme)

        stopped_early, stopped_at = False, None
        epoch = start_epoch - 1
        for epoch in range(start_epoch, cfg.max_epochs):
            if cfg.patience and bad_epochs >= cfg.patience:
                stopped_early = True
                break
            order = epoch_order(lengths, rows, np.random.default_rng([cfg.seed, epoch]))
            skip = partial["batches"] if partial and partial["epoch"] == epoch else 0
            epoch_means = IntervalMeans().restore(partial["means"]) if skip else IntervalMeans()
            bar = kit.progress_bar(len(order), initial=skip, enabled=progress,
                                   desc=f"epoch {epoch + 1}/{cfg.max_epochs}", unit="batch", leave=False)
            t0, step0, flight = time.time(), int(state["step"]), kit.InFlight()
            for k in range(skip, len(order)):
                idx = order[k]
                batch = inputs.batch([encoded[i] for i in idx], rows)
                batch.update(label_arrays(cfg, [train.labels[i] for i in idx], index, rows, batch["token_ids"].shape[1]))
                batch = dict(global_batch(batch, mesh), stop=kit.stop_input(guard.requested, mesh))
                state, metrics = train_step(state, consts, batch)
                previous = flight.push((step0 + k - skip + 1, metrics, len(idx)))
                # lag-1: read the previous step's metrics while this one runs; a stop request
                # (any host's) ends the epoch after this step, on every host alike
                if previous is not None and drain(previous, epoch, epoch_means, bar)["stop"] > 0:
                    stopped_at = k + 1
                    break
            if flight.pending is not None and drain(flight.pop(), epoch, epoch_means, bar)["stop"] > 0:
                stopped_at = stopped_at or len(order)
            bar.close()
            if stopped_at is not None and stopped_at < len(order):  # preempted inside the epoch
                save_last(epoch - 1, {"partial": {"epoch": epoch, "batches": stopped_at,
                                                  "means": epoch_means.state()}})
                break
            train_loss = epoch_means.means()["loss"]  # exact: over the epoch's tokens (tag) or sentences
            seconds = time.time() - t0
            record = {"epoch": epoch + 1, "step": int(state["step"]), "train_loss": train_loss,
                      "seconds": round(seconds, 2),
                      "sentences_per_s": round(sum(len(order[k]) for k in range(skip, len(order))) / seconds, 1)}
            value = -train_loss
            if dev is not None:
                report = evaluate(dev)
                value = selection_value(cfg, report)
                record[f"dev_{cfg.selection_metric}"] = value
                if cfg.task == "tag":
                    record.update(dev_precision=report["precision"], dev_recall=report["recall"])
            improved = value > best_value
            if improved:
                best_value, best_epoch, bad_epochs = value, epoch, 0
                best_ckpt.save(epoch, {"params": state["params"]}, {"epoch": np.int32(epoch)},
                               {"epoch": epoch, "value": value, "metric": cfg.selection_metric}, force=True)
            else:
                bad_epochs += 1
            record["best_epoch"] = best_epoch + 1
            history.append(record)
            save_last(epoch)
            writer.write(record)
            writer.flush()
            log("  ".join(f"{k} {v:.4f}" if isinstance(v, float) else f"{k} {v}" for k, v in record.items()))
            if stopped_at is not None:
                break
        last_ckpt.wait()
        best_ckpt.wait()
        if stopped_at is not None:
            log(f"elmo-jax: stopped by {guard.signal_name or 'a signal on another host'} at step "
                f"{int(state['step'])}; saved {last_ckpt.describe_latest()}; continue with --resume")
            stopped = {"epoch": epoch + 1, "batches": stopped_at, "of": len(order)}  # 1-based epoch
            return {"epochs": len(history), "best_epoch": best_epoch + 1, "stopped_early": False, "preempted": True,
                    "stopped": stopped, "metric": cfg.selection_metric, "history": history,
                    "output_dir": output_dir}
        # ---- the selected model on dev and test
        best_params, _ = load_best_params(best_ckpt, state["params"], state_sharding["params"])
    finally:
        last_ckpt.close()
        best_ckpt.close()
        if writer is not None:
            writer.close()
    state = {**state, "params": best_params}
    summary: dict = {"epochs": len(history), "best_epoch": best_epoch + 1, "stopped_early": stopped_early,
                     "preempted": False, "metric": cfg.selection_metric, "history": history,
                     "output_dir": output_dir}
    for name, data in (("dev", dev), ("test", test)):
        if data is not None:
            report = evaluate(data)
            summary[name] = report
            if jax.process_index() == 0:
                write_report(output_dir, name, report)
    if return_params:  # replicated: this host's copy
        summary["params"] = jax.tree_util.tree_map(lambda x: np.asarray(x.addressable_data(0)), best_params)
    return summary
