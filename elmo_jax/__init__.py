"""elmo-jax: ELMo (deep contextualized word representations) in JAX/Flax.

Public API:
    ElmoEmbedder        sentences -> ELMo layers (NumPy), deterministic or stateful;
                        ElmoEmbedder.from_pretrained("original") loads a model by name (elmo_jax.hub)
    Elmo, init_elmo     Flax module for downstream models (scalar mixes, frozen or fine-tuned biLM)
    BiLM, ScalarMix     the underlying Flax modules
    ModelOptions        bilm-tf options.json
    batch_to_ids        sentences -> char ids + mask
    load_model, write_bilm_hdf5, export_npz, import_npz   weights I/O (load_model also takes a model name)
"""
from . import malloc

malloc.tune()  # opt-in (ELMO_JAX_MALLOC=keep), before XLA starts its threads: see elmo_jax/malloc.py

from .chars import batch_to_ids, token_to_char_ids  # noqa: E402
from .elmo import Elmo, init_elmo, remove_sentence_boundaries  # noqa: E402
from .embed import ElmoEmbedder, dump_token_embeddings  # noqa: E402
from .errors import ElmoError, InputError, OptionsError, WeightsError  # noqa: E402
from .modules import BiLM, ScalarMix  # noqa: E402
from .options import ModelOptions  # noqa: E402
from .weights import export_npz, import_npz, load_model, write_bilm_hdf5  # noqa: E402

__version__ = "0.1.0"

__all__ = ["BiLM", "Elmo", "ElmoEmbedder", "ElmoError", "InputError", "ModelOptions", "OptionsError",
           "ScalarMix", "WeightsError", "batch_to_ids", "dump_token_embeddings", "export_npz",
           "import_npz", "init_elmo", "load_model", "remove_sentence_boundaries", "token_to_char_ids",
           "write_bilm_hdf5"]
