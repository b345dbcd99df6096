"""elmo-jax: ELMo (deep contextualized word representations) in JAX/Flax."""
from .chars import batch_to_ids, token_to_char_ids
from .errors import ElmoError, InputError, OptionsError, WeightsError
from .modules import BiLM, ScalarMix
from .options import ModelOptions

__version__ = "0.1.0"

__all__ = ["BiLM", "ElmoError", "InputError", "ModelOptions", "OptionsError", "ScalarMix",
           "WeightsError", "batch_to_ids", "token_to_char_ids"]
