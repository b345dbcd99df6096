"""How this folder was made (not part of the test suite; needs bilm-tf and TensorFlow):

    python ../shared/tools/bilm-tf/bilmtf_shim.py BILM_TF_SRC tests/data/bilm_tf_3layer_tanh/generate.py \
        ../shared/fixtures/bilm-tf-checkpoint tests/data/bilm_tf_3layer_tanh

bilm-tf (allenai/bilm-tf@7cffee2) trains a tiny biLM of another shape than the shared fixture's
(3 layers, no skip connections, tanh char-CNN, 2 highway layers) for 40 batches on the fixture's
data.txt and vocabulary, then writes: its TF checkpoint (model.ckpt-40.*, checkpoint,
options.json), `dump_weights` of it (weights.hdf5) and `test()` perplexity at batch size 1 on
data.txt (reference.json), the same way as ../shared/fixtures/bilm-tf-checkpoint."""
import json
import os
import random
import shutil
import sys

import numpy as np
import tensorflow as tf
from bilm.data import BidirectionalLMDataset
from bilm.training import dump_weights, load_options_latest_checkpoint, load_vocab, test, train

src, out = sys.argv[1], sys.argv[2]
np.random.seed(0)
tf.set_random_seed(0)
random.seed(0)
save = os.path.join(out, "save")
os.makedirs(save, exist_ok=True)
shutil.copyfile(os.path.join(src, "vocab.txt"), os.path.join(out, "vocab.txt"))
shutil.copyfile(os.path.join(src, "data.txt"), os.path.join(out, "data.txt"))
vocab = load_vocab(os.path.join(out, "vocab.txt"), 50)
options = {"bidirectional": True,
           "char_cnn": {"activation": "tanh", "embedding": {"dim": 4}, "filters": [[1, 4], [2, 4], [3, 8]],
                        "max_characters_per_token": 50, "n_characters": 261, "n_highway": 2},
           "dropout": 0.1,
           "lstm": {"cell_clip": 3, "dim": 16, "n_layers": 3, "proj_clip": 3, "projection_dim": 8,
                    "use_skip_connections": False},
           "all_clip_norm_val": 10.0, "n_epochs": 1, "n_train_tokens": 40 * 2 * 5, "batch_size": 2,
           "n_tokens_vocab": vocab.size, "unroll_steps": 5, "n_negative_samples_batch": 8}
data = BidirectionalLMDataset(os.path.join(out, "data.txt"), vocab, test=False, shuffle_on_load=True)
train(options, data, 1, save, save)
options, ckpt = load_options_latest_checkpoint(save)
tf.reset_default_graph()
dump_weights(save, os.path.join(out, "weights.hdf5"))
tf.reset_default_graph()
test_data = BidirectionalLMDataset(os.path.join(out, "data.txt"), vocab, test=True, shuffle_on_load=False)
perplexity = float(test(options, ckpt, test_data, batch_size=1))
reader = tf.train.NewCheckpointReader(ckpt)
shapes = {k: list(v) for k, v in sorted(reader.get_variable_to_shape_map().items())}
prefix = os.path.basename(ckpt)
for name in os.listdir(save):
    if name.startswith(prefix) and not name.endswith(".meta"):
        shutil.copyfile(os.path.join(save, name), os.path.join(out, name))
shutil.copyfile(os.path.join(save, "options.json"), os.path.join(out, "options.json"))
with open(os.path.join(out, "checkpoint"), "w") as fh:
    fh.write(f'model_checkpoint_path: "{prefix}"\nall_model_checkpoint_paths: "{prefix}"\n')
with open(os.path.join(out, "reference.json"), "w") as fh:
    json.dump({"checkpoint_prefix": prefix, "perplexity_batch1": perplexity, "variables": shapes,
               "made_with": f"allenai/bilm-tf@7cffee2 on TensorFlow {tf.VERSION} (compat.v1)"}, fh, indent=1)
shutil.rmtree(save)
