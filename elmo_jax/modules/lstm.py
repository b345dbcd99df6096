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

import functools
from typing import Any, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from ..options import ModelOptions
from . import matmul as mm

FORGET_BIAS = 1.0  # added to the forget gate at run time; not stored in weight files


def _lstmp_cell(z, c_prev, proj, cell_clip, proj_clip, precision):
    """One LSTMP step after the gate matmul: z [Dn, B, 4H] (bias included), c_prev [Dn, B, H]
    -> (c_raw, c, m, h_raw, h): the cell before/after its clip, the unprojected output, the
    projected output before/after its clip."""
    i, j, f, o = jnp.split(z, 4, axis=-1)
    c_raw = jax.nn.sigmoid(f + FORGET_BIAS) * c_prev + jax.nn.sigmoid(i) * jnp.tanh(j)
    c = c_raw if cell_clip is None else jnp.clip(c_raw, -cell_clip, cell_clip)
    m = jax.nn.sigmoid(o) * jnp.tanh(c)
    h_raw = m if proj is None else mm.einsum("dbh,dhp->dbp", m, proj, precision)
    h = h_raw if proj_clip is None else jnp.clip(h_raw, -proj_clip, proj_clip)
    return c_raw, c, m, h_raw, h


def _forward_scan(kernel, bias, proj, xs, keep, h0, c0, cell_clip, proj_clip, precision, hoist_input, unroll,
                  save, remat=False):
    """The recurrence; with `save`, also the per-step residuals the fused backward needs:
    h_prev [T, Dn, B, P] and c_prev [T, Dn, B, H] (carried state entering each step), h_raw
    [T, Dn, B, P] (projection before its clip) and the gates z [T, Dn, B, 4H] (bias included)."""
    n_in = xs.shape[-1]
    w_h = kernel[:, n_in:]
    bias_b = bias[:, None, :]  # [Dn, 1, 4H]
    if hoist_input:
        if mm.bf16_operands(precision):  # [Dn, T B, I] x [Dn, I, 4H]: XLA:CPU's form for a bfloat16 matmul
            n_t, n_d, n_b = xs.shape[:3]
            x_rows = jnp.transpose(xs, (1, 0, 2, 3)).reshape(n_d, n_t * n_b, n_in)
            xw = mm.einsum("dni,dig->dng", x_rows, kernel[:, :n_in], precision)
            seq = jnp.transpose(xw.reshape(n_d, n_t, n_b, -1), (1, 0, 2, 3)) + bias_b[None]
        else:
            seq = mm.einsum("tdbi,dig->tdbg", xs, kernel[:, :n_in], precision) + bias_b[None]
    else:
        seq = xs

    def step(carry, inputs):
        h_prev, c_prev = carry
        x_or_xw, k = inputs
        if hoist_input:
            z = x_or_xw + mm.einsum("dbp,dpg->dbg", h_prev, w_h, precision)
        else:
            xh = jnp.concatenate([x_or_xw, h_prev], axis=-1)
            z = mm.einsum("dbk,dkg->dbg", xh, kernel, precision) + bias_b
        _, c, _, h_raw, h = _lstmp_cell(z, c_prev, proj, cell_clip, proj_clip, precision)
        k = k[None, :, None]  # [1, B, 1]
        h_new = jnp.where(k, h, h_prev)
        c_new = jnp.where(k, c, c_prev)
        out = jnp.where(k, h, jnp.zeros_like(h))
        return (h_new, c_new), ((out, h_prev, c_prev, h_raw, z) if save else out)

    if remat:
        step = jax.checkpoint(step)
    (h_t, c_t), ys = lax.scan(step, (h0, c0), (seq, keep), unroll=unroll)
    return (h_t, c_t), ys


@functools.partial(jax.custom_vjp, nondiff_argnums=(7, 8, 9, 10, 11))
def _lstmp_fused(kernel, bias, proj, xs, keep, h0, c0, cell_clip, proj_clip, precision, hoist_input, unroll):
    # matmul operands (bfloat16 under `matmul.BF16_OPERANDS`) cast once, not at every step
    kernel, proj = mm.operand(kernel, precision), None if proj is None else mm.operand(proj, precision)
    (h_t, c_t), outputs = _forward_scan(kernel, bias, proj, xs, keep, h0, c0, cell_clip, proj_clip, precision,
                                        hoist_input, unroll, save=False)
    return outputs, (h_t, c_t)


def _lstmp_fused_fwd(kernel, bias, proj, xs, keep, h0, c0, cell_clip, proj_clip, precision, hoist_input, unroll):
    kernel, proj = mm.operand(kernel, precision), None if proj is None else mm.operand(proj, precision)
    (h_t, c_t), (outputs, h_prev, c_prev, h_raw, z) = _forward_scan(
        kernel, bias, proj, xs, keep, h0, c0, cell_clip, proj_clip, precision, hoist_input, unroll, save=True)
    return (outputs, (h_t, c_t)), (kernel, proj, xs, keep, h_prev, c_prev, h_raw, z)


def _lstmp_fused_bwd(cell_clip, proj_clip, precision, hoist_input, unroll, residuals, cotangents):
    """Backward pass with the weight gradients as ONE matmul each over all T x B positions.

    Plain autodiff of a scan accumulates dW in the loop carry (T small [K, B] x [B, 4H] products
    and a [K, 4H] read-modify-write per step); here the loop only carries (dh, dc) and writes the
    gate gradients dz; dW = [x; h_prev]^T dz, db = sum dz and the input gradient dx = dz W_x^T are
    then single large matmuls (what cuDNN does). The forward pass saves the gates z (recomputing
    them as one large matmul instead was slower on the 2-core CPU).

    Layout: the arrays the loop writes (dz, m, dh) are [Dn, B, T, .], written in place at
    [:, :, t], so that every large matmul is a plain batched matmul over Dn with (B, T) merged
    into one contiguous axis. B is major: where B is sharded over devices, each device's rows stay
    one block and XLA need not reshard. Time-major operands made XLA:CPU insert transposes and
    run the same matmuls 1.3-3x slower. The per-step matmuls use pre-transposed weights."""
    kernel, proj, xs, keep, h_prev, c_prev, h_raw, z_all = residuals
    d_out, (d_ht, d_ct) = cotangents
    kernel_dtype = proj_dtype = xs.dtype  # the primal weights' (lstmp_layer_scan casts them to xs's)
    n_t, n_d, n_b, n_in = xs.shape
    n_g = kernel.shape[-1]
    n_h = n_g // 4
    n = n_b * n_t

    def rows(a):  # [Dn, B, T, F] -> [Dn, B * T, F] (B major: a sharded B stays whole blocks)
        return a.reshape(n_d, n, a.shape[-1])

    xh = jnp.concatenate([xs, h_prev], axis=-1)  # [T, Dn, B, I + P]
    bf16 = mm.bf16_operands(precision)
    if bf16:  # [x; h_prev]^T [Dn, I + P, N] transposed before (B, T) are merged: a real copy with the
        # contracted axis innermost (else XLA folds the transpose into the matmul, which then runs in float32)
        xh_t = jnp.transpose(xh, (1, 3, 2, 0)).reshape(n_d, -1, n)
    else:  # float32: the transpose folded into the matmul (bit for bit the results before bfloat16 existed)
        xh_t = jnp.swapaxes(rows(jnp.transpose(xh, (1, 2, 0, 3))), 1, 2)
    w_h_t = jnp.swapaxes(kernel[:, n_in:], 1, 2)  # [Dn, 4H, P]
    proj_t = None if proj is None else jnp.swapaxes(proj, 1, 2)  # [Dn, P, H]
    n_p = h_prev.shape[-1]

    def step(carry, inputs):
        dh_new, dc_new, dz_buf, m_buf, dhr_buf = carry
        t, z, cp, hr, dout, k = inputs
        k = k[None, :, None]
        dh = jnp.where(k, dh_new + dout, 0.0)
        dc = jnp.where(k, dc_new, 0.0)
        i, j, f, o = jnp.split(z, 4, axis=-1)
        si, tj, sf, so = jax.nn.sigmoid(i), jnp.tanh(j), jax.nn.sigmoid(f + FORGET_BIAS), jax.nn.sigmoid(o)
        c_raw = sf * cp + si * tj
        c = c_raw if cell_clip is None else jnp.clip(c_raw, -cell_clip, cell_clip)
        tc = jnp.tanh(c)
        m = so * tc
        if proj is not None:
            if proj_clip is not None:
                dh = jnp.where(jnp.abs(hr) <= proj_clip, dh, 0.0)
            dm = mm.einsum("dbp,dph->dbh", dh, proj_t, precision)
        else:
            dm = dh
        dc = dc + dm * so * (1.0 - tc * tc)
        if cell_clip is not None:
            dc = jnp.where(jnp.abs(c_raw) <= cell_clip, dc, 0.0)
        dz = jnp.concatenate([dc * tj * si * (1.0 - si), dc * si * (1.0 - tj * tj),
                              dc * cp * sf * (1.0 - sf), dm * tc * so * (1.0 - so)], axis=-1)
        dh_prev = mm.einsum("dbg,dgp->dbp", dz, w_h_t, precision) + jnp.where(k, 0.0, dh_new)
        dc_prev = dc * sf + jnp.where(k, 0.0, dc_new)
        dz_buf = lax.dynamic_update_index_in_dim(dz_buf, dz, t, axis=2)
        m_buf = lax.dynamic_update_index_in_dim(m_buf, m, t, axis=2)
        dhr_buf = lax.dynamic_update_index_in_dim(dhr_buf, dh, t, axis=2)
        return (dh_prev, dc_prev, dz_buf, m_buf, dhr_buf), None

    dtype = xs.dtype
    bufs = (jnp.zeros((n_d, n_b, n_t, n_g), dtype), jnp.zeros((n_d, n_b, n_t, n_h), dtype),
            jnp.zeros((n_d, n_b, n_t, n_p), dtype))
    (dh0, dc0, dz, m, dh_raw), _ = lax.scan(
        step, (d_ht, d_ct) + bufs, (jnp.arange(n_t), z_all, c_prev, h_raw, d_out, keep), reverse=True, unroll=unroll)
    dz = rows(dz)
    d_kernel = mm.einsum("dkn,dng->dkg", xh_t, dz, precision).astype(kernel_dtype)
    d_bias = jnp.sum(dz, axis=1)
    if bf16:  # W_x as stored ([Dn, I, 4H]): the bfloat16 matmul ran 2-4x slower with it transposed first
        d_xs = mm.einsum("dng,dig->dni", dz, kernel[:, :n_in], precision)
    else:
        d_xs = mm.einsum("dng,dgi->dni", dz, jnp.swapaxes(kernel[:, :n_in], 1, 2), precision)
    d_xs = d_xs.astype(xs.dtype)
    d_xs = jnp.transpose(d_xs.reshape(n_d, n_b, n_t, n_in), (2, 0, 1, 3))  # [T, Dn, B, I]
    d_proj = None if proj is None else mm.einsum("dnh,dnp->dhp", rows(m), rows(dh_raw), precision).astype(proj_dtype)
    d_keep = np.zeros(keep.shape, jax.dtypes.float0)
    return d_kernel, d_bias, d_proj, d_xs, d_keep, dh0, dc0


_lstmp_fused.defvjp(_lstmp_fused_fwd, _lstmp_fused_bwd)


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
    fused_backward: bool = False,
) -> tuple[jax.Array, tuple[jax.Array, jax.Array]]:
    """Run one LSTMP layer (all directions at once) over time.

    Returns `(outputs [T, Dn, B, P], (h_T [Dn, B, P], c_T [Dn, B, H]))`, where the final state
    is each row's state after its last real step.

    Gradients: with `fused_backward` (training's default) a hand-written backward pass computes
    the weight and input gradients as single large matmuls after a reverse scan that only carries
    (dh, dc) (`_lstmp_fused_bwd`); it saves the gates and carried states, so it needs no `remat`.
    On the 2-core CPU, in one process with steps interleaved, the train step was 15-18% faster
    with it at bilm-tf's mid shape and 2-7% at the small one. Without it JAX differentiates the
    scan (then `remat` rematerialises the forward pass)."""
    dtype = xs.dtype
    kernel = kernel.astype(dtype)
    bias = bias.astype(dtype)
    proj = None if projection is None else projection.astype(dtype)
    h0, c0 = h0.astype(dtype), c0.astype(dtype)
    if proj is None:
        proj_clip = None
    if fused_backward:
        return _lstmp_fused(kernel, bias, proj, xs, mask, h0, c0, cell_clip, proj_clip, precision,
                            hoist_input, unroll)
    (h_t, c_t), outputs = _forward_scan(kernel, bias, proj, xs, mask, h0, c0, cell_clip, proj_clip, precision,
                                        hoist_input, unroll, save=False, remat=remat)
    return outputs, (h_t, c_t)


def zero_state(options: ModelOptions, batch_size: int, n_directions: Optional[int] = None,
               dtype: Any = jnp.float32) -> dict[str, jax.Array]:
    """All-zero LSTM state: {'h': [L, Dn, B, P], 'c': [L, Dn, B, H]} (Dn: the options' directions)."""
    n_directions = options.n_directions if n_directions is None else n_directions
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
    fused_backward: bool = False
    unroll: int = 1  # time steps per scan iteration (lax.scan's unroll)

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
            precision=self.precision, hoist_input=self.hoist_input, remat=self.remat,
            unroll=self.unroll, fused_backward=self.fused_backward)


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
    fused_backward: bool = False  # hand-written backward pass (weight gradients as one matmul each)
    unroll: int = 1  # time steps per scan iteration (lax.scan's unroll; see `lstmp_layer_scan`)

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
                opts, self.dtype, self.precision, self.hoist_input, self.remat, self.fused_backward,
                self.unroll, name=f"layer_{layer}")(
                layer_in, mask_tm, initial_state["h"][layer], initial_state["c"][layer])
            if opts.use_skip_connections and layer > 0:
                # bilm-tf wraps ResidualWrapper in DropoutWrapper: the residual is the dropped input.
                out = out + layer_in * mask_tm[:, None, :, None]
            outputs.append(jnp.transpose(out, (1, 2, 0, 3)))  # [Dn, B, T, P]
            h_final.append(h_t)
            c_final.append(c_t)
            x = out
        return outputs, {"h": jnp.stack(h_final), "c": jnp.stack(c_final)}
