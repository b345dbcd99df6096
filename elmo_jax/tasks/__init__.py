"""Downstream task models on ELMo: sentence classification and sequence tagging (NER).

    config.py    TaskConfig: the task options (JSON, flags, --set), validated
    data.py      classification TSV/JSONL and CoNLL-2003 readers (line-numbered errors)
    tags.py      tag schemes: the tag splitter, scheme detection, exact IOB1 <-> IOB2 conversion
    metrics.py   accuracy / macro-F1, CoNLL entity-span precision/recall/F1
    crf.py       linear-chain CRF (log-likelihood, Viterbi)
    models.py    ElmoClassifier, ElmoTagger (Flax)
    inputs.py    distinct words, token/char tables and padded batches of sentences
    labels.py    gold labels in the model's view (tag schemes), scores of predictions
    features.py  the biLM, static vectors, the model built from a TaskConfig, its constants
    step.py      optimizer, loss, train step, prediction over the device mesh
    modeldir.py  the output directory: files written by training, read by the predictor
    loop.py      train_task (data-parallel, Orbax checkpoints, early stopping, metrics.jsonl)
    predictor.py TaskPredictor: predict / evaluate / predict_file from a model directory
    cli.py       the `elmo-jax task` commands
GloVe-style static word vectors are read by `elmo_jax.vectors`.
"""
from .config import TaskConfig
from .loop import train_task
from .predictor import TaskPredictor
from .models import ElmoClassifier, ElmoFeatures, ElmoTagger

__all__ = ["ElmoClassifier", "ElmoFeatures", "ElmoTagger", "TaskConfig", "TaskPredictor", "train_task"]
