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
from .chars import batch_to_ids, token_to_char_ids
from .elmo import Elmo, init_elmo, remove_sentence_boundaries
from .embed import ElmoEmbedder, dump_token_embeddings
from .errors import ElmoError, InputError, OptionsError, WeightsError
from .modules import BiLM, ScalarMix
from .options import ModelOptions
from .weights import export_npz, import_npz, load_model, write_bilm_hdf5

__version__ = "0.1.0"

__all__ = ["BiLM", "Elmo", "ElmoEmbedder", "ElmoError", "InputError", "ModelOptions", "OptionsError",
           "ScalarMix", "WeightsError", "batch_to_ids", "dump_token_embeddings", "export_npz",
           "import_npz", "init_elmo", "load_model", "remove_sentence_boundaries", "token_to_char_ids",
           "write_bilm_hdf5"]
