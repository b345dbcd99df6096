"""Flax modules of the biLM: char-CNN, highway, LSTM-with-projection, biLM, scalar mix."""
from .bilm import BiLM, reverse_within_lengths
from .char_cnn import CharCNN
from .highway import Highway
from .lstm import LSTMStack, lstmp_layer_scan
from .scalar_mix import ScalarMix
from .token_encoder import TokenEncoder

__all__ = ["BiLM", "CharCNN", "Highway", "LSTMStack", "ScalarMix", "TokenEncoder",
           "lstmp_layer_scan", "reverse_within_lengths"]
