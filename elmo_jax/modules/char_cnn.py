"""Character CNN: char embedding, one 'valid' 1-D convolution per filter width, max over positions."""
from __future__ import annotations

import functools
from typing import Any, Callable, Optional, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax

from ..options import ModelOptions
from . import matmul as mm


def char_embed_init(key: jax.Array, shape: tuple[int, ...], dtype: Any = jnp.float32) -> jax.Array:
    """bilm-tf: char embedding U(-1, 1)."""
    return jax.random.uniform(key, shape, dtype, -1.0, 1.0)


def cnn_kernel_init(activation: str) -> Callable:
    """bilm-tf: U(-0.05, 0.05) for relu, N(0, sqrt(1 / (w * D))) for tanh."""

    def init(key, shape, dtype=jnp.float32):
        if activation == "relu":
            return jax.random.uniform(key, shape, dtype, -0.05, 0.05)
        w, d, _ = shape
        return jax.random.normal(key, shape, dtype) * jnp.sqrt(1.0 / (w * d)).astype(dtype)

    return init


@functools.partial(jax.custom_vjp, nondiff_argnums=(0,))
def _max_over_positions(length: int, z: jax.Array) -> jax.Array:
    """max over axis 1 of z [N, L, n] -> [N, n], whose gradient goes to ONE maximal position.

    Autodiff of `jnp.max` splits the gradient evenly over tied maxima, which costs a float mask
    of z's size in the forward pass, a reduction counting the ties and a select in the backward
    pass. Here the forward pass keeps only the first maximal position [N, n] and the backward pass
    writes z's gradient in one elementwise op (bilm-tf's small shape: the CPU train step 3.6%
    faster). The weight and input gradients are the same: ties come from identical windows (a
    word's trailing padding, repeated letters), which have identical inputs, so the gradient
    reaching the char embedding and the kernel does not depend on how it is split among them."""
    del length
    return jnp.max(z, axis=1)


def _countdown(length: int) -> jax.Array:
    """L - position, float32 [1, L, 1]: the first maximal position is the largest of these."""
    return (length - lax.broadcasted_iota(jnp.int32, (1, length, 1), 1)).astype(jnp.float32)


def _max_over_positions_fwd(length, z):
    # The first maximal position, as a float max-reduction (XLA:CPU vectorises it; argmax's
    # two-operand reduction runs an order of magnitude slower).
    m = jnp.max(z, axis=1)
    first = jnp.max(jnp.where(z == m[:, None, :], _countdown(length), 0.0), axis=1)  # L - argmax, [N, n]
    return m, first


def _max_over_positions_bwd(length, first, g):
    return (jnp.where(_countdown(length) == first[:, None, :], g[:, None, :], jnp.zeros((), g.dtype)),)


_max_over_positions.defvjp(_max_over_positions_fwd, _max_over_positions_bwd)


def max_over_positions(z: jax.Array) -> jax.Array:
    """z [N, L, n] -> max over L, [N, n] (see `_max_over_positions` for its gradient)."""
    return _max_over_positions(z.shape[1], z)


#: Distinct-word rows per device per scan step of `pooled_convolutions` in training on a CPU
#: (`TrainConfig.char_cnn_scan_rows` None). bilm-tf's small shape, 768 rows, 2-core CPU: the
#: char-CNN's forward + backward 510 ms as one convolution per width, 250 ms in 48 scan steps of
#: 16 rows; the whole train step 1,390 -> 1,128 ms (interleaved); mid shape (widths up to 5) about
#: equal. Inference keeps one convolution: forward only, it gained nothing and compiled slower.
CPU_SCAN_ROWS = 16


def resolve_scan_rows(scan_rows: Optional[int]) -> int:
    """`scan_rows` None -> `CPU_SCAN_ROWS` on a CPU backend, 0 (one convolution per width) elsewhere."""
    if scan_rows is None:
        return CPU_SCAN_ROWS if jax.default_backend() == "cpu" else 0
    if scan_rows < 0:
        raise ValueError(f"scan_rows must be >= 0 (0: one convolution per filter width), got {scan_rows}")
    return scan_rows


def _windows(x: jax.Array, width: int) -> jax.Array:
    """x [n, C, D] -> every window of `width` chars flattened, [n, C - width + 1, width * D]."""
    length = x.shape[1] - width + 1
    if width == 1:
        return x
    return jnp.concatenate([x[:, k:k + length, :] for k in range(width)], axis=-1)


def _to_steps(a: jax.Array, steps: int) -> jax.Array:
    """[N, ...] -> [steps, N / steps, ...] with row i at (i % steps, i // steps): a split of N over
    devices stays a split of the second axis, so each device scans its own rows."""
    return a.reshape(a.shape[0] // steps, steps, *a.shape[1:]).swapaxes(0, 1)


def _from_steps(a: jax.Array) -> jax.Array:
    """Inverse of `_to_steps`."""
    return a.swapaxes(0, 1).reshape(a.shape[0] * a.shape[1], *a.shape[2:])


def _conv_max(x, kernels, precision, with_first):
    """One block of rows: x [n, C, D] -> per kernel [w, D, k]: max over positions [n, k] (and the
    first maximal position as L - position, float, when `with_first`)."""
    maxima, firsts = [], []
    for kernel in kernels:
        width, dim, count = kernel.shape
        z = mm.matmul(_windows(x, width), kernel.reshape(width * dim, count), precision)  # [n, L, k]
        if with_first:
            m, first = _max_over_positions_fwd(z.shape[1], z)
            firsts.append(first)
        else:
            m = jnp.max(z, axis=1)
        maxima.append(m)
    return tuple(maxima), tuple(firsts)


def _operands(x: jax.Array, kernels: tuple, precision: Any) -> tuple[jax.Array, tuple]:
    """The chars and kernels as matmul operands (bfloat16 under `matmul.BF16_OPERANDS`), cast once
    before the scan; the custom backward pass returns gradients in the inputs' own dtypes."""
    return mm.operand(x, precision), tuple(mm.operand(k, precision) for k in kernels)


@functools.partial(jax.custom_vjp, nondiff_argnums=(0, 1))
def _pooled(steps: int, precision: Any, x: jax.Array, kernels: tuple) -> tuple:
    x, kernels = _operands(x, kernels, precision)

    def body(_, block):
        return None, _conv_max(block, kernels, precision, False)[0]
    return tuple(_from_steps(m) for m in lax.scan(body, None, _to_steps(x, steps))[1])


def _pooled_fwd(steps, precision, x, kernels):
    xc, kc = _operands(x, kernels, precision)

    def body(_, block):
        return None, _conv_max(block, kc, precision, True)
    maxima, firsts = lax.scan(body, None, _to_steps(xc, steps))[1]
    return tuple(_from_steps(m) for m in maxima), (x, kernels, firsts)


def _pooled_bwd(steps, precision, res, grads):
    x, kernels, firsts = res
    xc, kc = _operands(x, kernels, precision)
    chars = x.shape[1]
    # The kernels' gradients are summed per device inside the scan ([groups, w D, k], rows split
    # over devices as `_to_steps` keeps them) and over devices once after it: a sum over all of a
    # block's rows would be one all-reduce per scan step.
    groups = jax.device_count() if (x.shape[0] // steps) % jax.device_count() == 0 else 1

    def body(dkernels, block):
        xb, fb, gb = block
        dx = jnp.zeros(xb.shape, jnp.float32)
        out = []
        for kernel, dk, first, g in zip(kc, dkernels, fb, gb):
            width, dim, count = kernel.shape
            windows = _windows(xb, width)
            length = windows.shape[1]
            (dz,) = _max_over_positions_bwd(length, first, g)  # g at the first maximal position, [n, L, k]
            out.append(dk + mm.einsum("gnlj,gnlk->gjk", windows.reshape(groups, -1, *windows.shape[1:]),
                                      dz.reshape(groups, -1, *dz.shape[1:]), precision,
                                      preferred_element_type=jnp.float32))
            dwin = mm.einsum("nlk,jk->nlj", dz, kernel.reshape(width * dim, count), precision,
                             preferred_element_type=jnp.float32)  # [n, L, w D]
            for k in range(width):  # each window slot back to its chars
                dx = dx + jnp.pad(dwin[:, :, k * dim:(k + 1) * dim], ((0, 0), (k, chars - length - k), (0, 0)))
        return tuple(out), dx

    zeros = tuple(jnp.zeros((groups, k.shape[0] * k.shape[1], k.shape[2]), jnp.float32) for k in kernels)
    blocks = (_to_steps(xc, steps), firsts, tuple(_to_steps(g, steps) for g in grads))
    dkernels, dx = lax.scan(body, zeros, blocks)
    return _from_steps(dx).astype(x.dtype), tuple(jnp.sum(d, axis=0).reshape(k.shape).astype(k.dtype)
                                                  for d, k in zip(dkernels, kernels))


_pooled.defvjp(_pooled_fwd, _pooled_bwd)


def pooled_convolutions(x: jax.Array, kernels: Sequence[jax.Array], scan_rows: int,
                        precision: Any = None) -> tuple[jax.Array, ...]:
    """'valid' 1-D convolutions of x [N, C, D] with each kernel [w, D, k], max over positions:
    one [N, k] per kernel (no bias or activation: both commute with the max).

    `scan_rows` 0: one `lax.conv_general_dilated` per kernel (what accelerators prefer). Otherwise
    a `lax.scan` over blocks of `scan_rows` x `jax.device_count()` rows, each block's convolutions
    one matmul over its windows: the [rows, L, k] activations then stay block-sized (on a CPU the
    full-size ones are written and read back at memory speed, twice as slow in all), and a custom
    backward pass rebuilds each block's windows instead of storing them. Both give the gradient
    to one maximal position (see `_max_over_positions`). Rows are padded to whole blocks where
    they do not fill them."""
    if not scan_rows:
        bf16 = mm.bf16_operands(precision)
        return tuple(max_over_positions(lax.conv_general_dilated(
            mm.operand(x, precision), mm.operand(kernel, precision), window_strides=(1,), padding="VALID",
            dimension_numbers=("NWC", "WIO", "NWC"), precision=None if bf16 else precision,
            preferred_element_type=jnp.float32 if bf16 else None)) for kernel in kernels)
    rows = x.shape[0]
    block = scan_rows * jax.device_count()
    steps = -(-rows // block)
    if rows % block:
        if steps == 1:
            block = rows  # one block of all rows, unpadded
        else:
            x = jnp.pad(x, ((0, steps * block - rows), (0, 0), (0, 0)))
    return tuple(m[:rows] for m in _pooled(steps, precision, x, tuple(kernels)))


class CharCNN(nn.Module):
    """Token char ids -> F-dim vector (F = sum of filter counts).

    Params: `char_embed` [261, D] indexed by raw id (as stored in bilm-tf weight files);
    `W_cnn_{i}` [w_i, D, n_i] and `b_cnn_{i}` [n_i] per filter bank.
    With `shifted=True` (inference) ids are raw + 1 and id 0 looks up a zero row."""

    options: ModelOptions
    dtype: Any = jnp.float32  # compute dtype
    precision: Any = lax.Precision.HIGHEST
    scan_rows: int = 0  # `pooled_convolutions` (training resolves TrainConfig.char_cnn_scan_rows)

    @nn.compact
    def __call__(self, char_ids: jax.Array, shifted: bool = True) -> jax.Array:
        """char_ids: int [..., C] -> float [..., F]."""
        opts = self.options
        table = self.param("char_embed", char_embed_init, (261, opts.char_embed_dim))
        if shifted:
            table = jnp.concatenate([jnp.zeros((1, table.shape[1]), table.dtype), table], axis=0)
        lead = char_ids.shape[:-1]
        ids = char_ids.reshape(-1, char_ids.shape[-1])
        x = jnp.take(table, ids, axis=0).astype(self.dtype)  # [N, C, D]
        act = jax.nn.relu if opts.activation == "relu" else jnp.tanh
        kernels, biases = [], []
        for i, (width, count) in enumerate(opts.filters):
            kernels.append(self.param(f"W_cnn_{i}", cnn_kernel_init(opts.activation),
                                      (width, opts.char_embed_dim, count)).astype(self.dtype))
            biases.append(self.param(f"b_cnn_{i}", nn.initializers.zeros, (count,)).astype(self.dtype))
        maxima = pooled_convolutions(x, kernels, self.scan_rows, self.precision)
        # max commutes with adding the (position-independent) bias and with relu/tanh.
        out = jnp.concatenate([act(m + b) for m, b in zip(maxima, biases)], axis=-1)  # [N, F]
        return out.reshape(*lead, out.shape[-1])
