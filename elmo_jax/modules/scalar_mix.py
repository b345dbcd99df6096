"""Scalar mix: gamma * sum_j softmax(w)_j * LN?(layer_j) (format.md section 3.10)."""
from __future__ import annotations

from typing import Optional, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp


def masked_layer_norm(x: jax.Array, mask: jax.Array, eps: float) -> jax.Array:
    """Normalise `x` [B, T, D] with ONE mean and variance over all unmasked positions x all
    features of the batch, as bilm-tf's `weight_layers` and AllenNLP's `ScalarMix` do."""
    m = mask[..., None].astype(x.dtype)
    count = jnp.maximum(jnp.sum(m) * x.shape[-1], 1.0)
    mean = jnp.sum(x * m) / count
    var = jnp.sum(((x - mean) * m) ** 2) / count
    return (x - mean) / jnp.sqrt(var + eps)


class ScalarMix(nn.Module):
    """Learned softmax-weighted sum of layers, times a scale gamma.

    Params: `weights` [n_layers] (init 0, or `initial_weights`), `gamma` [] (init 1).
    With `trainable=False` the weights (not gamma) get no gradient, like AllenNLP's fixed
    `scalar_mix_parameters`. With `l2_coef > 0` the penalty l2_coef * sum(w^2) (bilm-tf's
    `weight_layers` regulariser) is sown into the 'losses' collection as `scalar_mix_l2`."""

    n_layers: int
    do_layer_norm: bool = False
    initial_weights: Optional[Sequence[float]] = None
    trainable: bool = True
    l2_coef: float = 0.0
    layer_norm_eps: float = 1e-13  # AllenNLP; bilm-tf uses 1e-12

    @nn.compact
    def __call__(self, layers: jax.Array, mask: Optional[jax.Array] = None) -> jax.Array:
        """layers: [n_layers, B, T, D]; mask: bool [B, T] (needed for layer norm) -> [B, T, D]."""
        if layers.shape[0] != self.n_layers:
            raise ValueError(f"ScalarMix expects {self.n_layers} layers, got {layers.shape[0]}")
        if self.initial_weights is not None and len(self.initial_weights) != self.n_layers:
            raise ValueError(f"initial_weights has {len(self.initial_weights)} values for {self.n_layers} layers")
        init = (nn.initializers.zeros if self.initial_weights is None
                else lambda k, s, d=jnp.float32: jnp.asarray(self.initial_weights, d))
        w = self.param("weights", init, (self.n_layers,))
        gamma = self.param("gamma", nn.initializers.ones, ())
        if not self.trainable:
            w = jax.lax.stop_gradient(w)
        if self.l2_coef > 0:
            self.sow("losses", "scalar_mix_l2", self.l2_coef * jnp.sum(w ** 2))
        s = jax.nn.softmax(w).astype(layers.dtype)
        if self.do_layer_norm:
            if mask is None:
                raise ValueError("do_layer_norm needs the mask")
            layers = jnp.stack([masked_layer_norm(x, mask, self.layer_norm_eps) for x in layers])
        return gamma.astype(layers.dtype) * jnp.einsum("l,lbtd->btd", s, layers)
