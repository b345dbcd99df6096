"""GloVe-style static word vectors for task models: the shared reader lives in `elmo_jax.vectors`
(the core package uses it to initialise biLMs; the core must not import from `tasks/`)."""
from ..vectors import OOV_ID, OOV_MODES, PAD_ID, WordVectors, read_glove

__all__ = ["OOV_ID", "OOV_MODES", "PAD_ID", "WordVectors", "read_glove"]
