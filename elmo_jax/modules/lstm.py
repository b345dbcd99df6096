"""LSTM with projection (TF `LSTMCell(num_proj=...)` semantics), scanned over time with `lax.scan`.

Both directions of the biLM run in ONE scan: their weights are stacked on a leading direction
axis `Dn` (0 = forward LM, 1 = backward LM) and each step is a batched matmul over it. The
caller arranges the backward input (reversed within each row's length at inference, a separate
reversed stream in training).

One step, per direction (format.md section 3.4):
    z = [x_t ; h_{t-1}] @ W + b            gate blocks (i, j, f, o)
    c_t = sigmoid(f + 1) * c_{t-1} + sigmoid(i) * tanh(j);  c_t = clip(c_t, cell_clip)
    h_t = clip((sigmoid(o) * tanh(c_t)) @ W_P, proj_clip)
Rows whose mask is False at step t keep their state (it is frozen after the row's last token)
and output zeros there.
"""
from __future__ import annotations

from typing import Any, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax

from ..options import ModelOptions

FORGET_BIAS = 1.0  # added to the forget gate at run time; not stored in weight files


def lstmp_layer_scan(
    kernel: jax.Array,  # [Dn, I + P, 4H]: input rows first, then recurrent rows
    bias: jax.Array,  # [Dn, 4H]
    projection: Optional[jax.Array],  # [Dn, H, P] or None (then P == H)
    xs: jax.Array,  # [T, Dn, B, I] time-major layer input
    mask: jax.Array,  # [T, B] bool: real positions
    h0: jax.Array,  # [Dn, B, P]
    c0: jax.Array,  # [Dn, B, H]
    *,
    cell_clip: Optional[float],
    proj_clip: Optional[float],
    precision: Any = lax.Precision.HIGHEST,
    hoist_input: bool = False,
    remat: bool = False,
    unroll: int = 1,
) -> tuple[jax.Array, tuple[jax.Array, jax.Array]]:
    """Run one LSTMP layer (all directions at once) over time.

    Returns `(outputs [T, Dn, B, P], (h_T [Dn, B, P], c_T [Dn, B, H]))`, where the final state
    is each row's state after its last real step."""
    dtype = xs.dtype
    n_in = xs.shape[-1]
    kernel = kernel.astype(dtype)
    w_x, w_h = kernel[:, :n_in], kernel[:, n_in:]
    bias = bias.astype(dtype)[:, None, :]  # [Dn, 1, 4H]
    proj = None if projection is None else projection.astype(dtype)

    def step(carry, inputs):
        h_prev, c_prev = carry
        x_or_xw, m = inputs
        if hoist_input:
            z = x_or_xw + jnp.einsum("dbp,dpg->dbg", h_prev, w_h, precision=precision)
        else:
            xh = jnp.concatenate([x_or_xw, h_prev], axis=-1)
            z = jnp.einsum("dbk,dkg->dbg", xh, kernel, precision=precision) + bias
        i, j, f, o = jnp.split(z, 4, axis=-1)
        c = jax.nn.sigmoid(f + FORGET_BIAS) * c_prev + jax.nn.sigmoid(i) * jnp.tanh(j)
        if cell_clip is not None:
            c = jnp.clip(c, -cell_clip, cell_clip)
        h = jax.nn.sigmoid(o) * jnp.tanh(c)
        if proj is not None:
            h = jnp.einsum("dbh,dhp->dbp", h, proj, precision=precision)
            if proj_clip is not None:
                h = jnp.clip(h, -proj_clip, proj_clip)
        keep = m[None, :, None]  # [1, B, 1]
        h_new = jnp.where(keep, h, h_prev)
        c_new = jnp.where(keep, c, c_prev)
        return (h_new, c_new), jnp.where(keep, h, jnp.zeros_like(h))

    if remat:
        step = jax.checkpoint(step)
    if hoist_input:
        seq = jnp.einsum("tdbi,dig->tdbg", xs, w_x, precision=precision) + bias[None]
    else:
        seq = xs
    (h_t, c_t), outputs = lax.scan(step, (h0.astype(dtype), c0.astype(dtype)), (seq, mask), unroll=unroll)
    return outputs, (h_t, c_t)


def zero_state(options: ModelOptions, batch_size: int, n_directions: int = 2,
               dtype: Any = jnp.float32) -> dict[str, jax.Array]:
    """All-zero LSTM state: {'h': [L, Dn, B, P], 'c': [L, Dn, B, H]}."""
    p = options.projection_dim if options.has_lstm_projection else options.lstm_dim
    return {
        "h": jnp.zeros((options.n_layers, n_directions, batch_size, p), dtype),
        "c": jnp.zeros((options.n_layers, n_directions, batch_size, options.lstm_dim), dtype),
    }


def _stacked_glorot(key, shape, dtype=jnp.float32):
    """Glorot-uniform per direction for a [Dn, fan_in, fan_out] kernel (TF's default LSTM init)."""
    return nn.initializers.glorot_uniform(in_axis=-2, out_axis=-1, batch_axis=(0,))(key, shape, dtype)


class LSTMPLayer(nn.Module):
    """One LSTMP layer for all directions. Params: `kernel` [Dn, 2P, 4H] (bilm-tf `W_0`),
    `bias` [Dn, 4H] (`B`), `projection` [Dn, H, P] (`W_P_0`, only when P < H)."""

    options: ModelOptions
    dtype: Any = jnp.float32
    precision: Any = lax.Precision.HIGHEST
    hoist_input: bool = False
    remat: bool = False

    @nn.compact
    def __call__(self, xs, mask, h0, c0):
        """xs [T, Dn, B, P], mask [T, B], h0 [Dn, B, P], c0 [Dn, B, H] -> lstmp_layer_scan's result."""
        opts = self.options
        n_dir = xs.shape[1]
        p, hdim = opts.projection_dim, opts.lstm_dim
        kernel = self.param("kernel", _stacked_glorot, (n_dir, xs.shape[-1] + p, 4 * hdim))
        bias = self.param("bias", nn.initializers.zeros, (n_dir, 4 * hdim))
        proj = self.param("projection", _stacked_glorot, (n_dir, hdim, p)) if opts.has_lstm_projection else None
        return lstmp_layer_scan(
            kernel, bias, proj, xs, mask, h0, c0,
            cell_clip=opts.cell_clip, proj_clip=opts.proj_clip if proj is not None else None,
            precision=self.precision, hoist_input=self.hoist_input, remat=self.remat)


class LSTMStack(nn.Module):
    """L stacked LSTMP layers for `n_directions` independent LMs, each layer one scan.

    Submodules `layer_{l}` (see `LSTMPLayer`). Layers l >= 1 add their input to their
    output when `use_skip_connections` (after the recurrence, never fed into it)."""

    options: ModelOptions
    n_directions: int = 2
    dtype: Any = jnp.float32
    precision: Any = lax.Precision.HIGHEST
    hoist_input: bool = False  # precompute x @ W_x for all steps (faster on GPUs, slower on CPU)
    remat: bool = False  # rematerialise the scan body in the backward pass (training)
    dropout_rate: float = 0.0  # on each layer's input (bilm-tf training uses 0.1)

    @nn.compact
    def __call__(
        self,
        xs: jax.Array,  # [Dn, B, T, P]
        mask: jax.Array,  # [B, T] bool
        initial_state: Optional[dict] = None,  # {'h': [L, Dn, B, P], 'c': [L, Dn, B, H]}
        deterministic: bool = True,
    ) -> tuple[list[jax.Array], dict]:
        """Returns (per-layer outputs, each [Dn, B, T, P]; final state like `initial_state`)."""
        opts = self.options
        n_dir, batch = xs.shape[0], xs.shape[1]
        if initial_state is None:
            initial_state = zero_state(opts, batch, n_dir, self.dtype)
        mask_tm = jnp.swapaxes(mask, 0, 1)  # [T, B]
        x = jnp.transpose(xs, (2, 0, 1, 3)).astype(self.dtype)  # [T, Dn, B, P]
        outputs, h_final, c_final = [], [], []
        for layer in range(opts.n_layers):
            layer_in = x
            if self.dropout_rate > 0.0:
                layer_in = nn.Dropout(self.dropout_rate)(layer_in, deterministic=deterministic)
            out, (h_t, c_t) = LSTMPLayer(
                opts, self.dtype, self.precision, self.hoist_input, self.remat, name=f"layer_{layer}")(
                layer_in, mask_tm, initial_state["h"][layer], initial_state["c"][layer])
            if opts.use_skip_connections and layer > 0:
                # bilm-tf wraps ResidualWrapper in DropoutWrapper: the residual is the dropped input.
                out = out + layer_in * mask_tm[:, None, :, None]
            outputs.append(jnp.transpose(out, (1, 2, 0, 3)))  # [Dn, B, T, P]
            h_final.append(h_t)
            c_final.append(c_t)
            x = out
        return outputs, {"h": jnp.stack(h_final), "c": jnp.stack(c_final)}
