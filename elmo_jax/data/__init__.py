"""The pretraining data: shards of one-sentence-per-line text -> bilm-tf truncated-BPTT batches.

One module per concept:
  encoding.py   the corpus through Hugging Face `datasets`: scan, input table, ids (cached), tokenization
  order.py      the seeded, resumable order of the sentences (shards and sentences shuffled per epoch)
  windows.py    `Batcher`: rows of sentence streams cut into `unroll_steps` windows; `BatchStream`
  position.py   the data position after each batch and its saved form (`State`)

    batcher = Batcher("corpus/*.txt", "vocab.txt", global_batch_size=128, unroll_steps=20)
    batch = next(batcher)            # inputs/targets/weights, fwd and bwd, [rows, unroll]
    batcher.corpus.input_chars       # uint16 [n_input_words, 50]: the rows `inputs_*` index
    state = batcher.state()          # save with the checkpoint; `batcher.restore(state)` resumes
"""
from .windows import BATCH_KEYS, Batch, Batcher, BatchStream

__all__ = ["BATCH_KEYS", "Batch", "BatchStream", "Batcher"]
