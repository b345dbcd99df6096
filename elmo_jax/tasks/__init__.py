"""Downstream task models on ELMo: sentence classification and sequence tagging (NER).

    data.py      classification TSV/JSONL and CoNLL-2003 readers (line-numbered errors)
    vectors.py   GloVe-style static word vectors
    metrics.py   accuracy / macro-F1, CoNLL entity-span precision/recall/F1
    crf.py       linear-chain CRF (log-likelihood, Viterbi)
    models.py    ElmoClassifier, ElmoTagger (Flax)
    loop.py      train / evaluate / predict (data-parallel, Orbax checkpoints, early stopping)
"""
from .config import TaskConfig
from .loop import TaskPredictor, train_task
from .models import ElmoClassifier, ElmoFeatures, ElmoTagger

__all__ = ["ElmoClassifier", "ElmoFeatures", "ElmoTagger", "TaskConfig", "TaskPredictor", "train_task"]
