"""The training step's matmul precision: float32 operands (the exact default), or bfloat16 operands
with float32 accumulation and float32 results (`TrainConfig.matmul_precision = "bfloat16"`).

Modules take a `precision` argument; the value `BF16_OPERANDS` (JAX's name for this algorithm,
`lax.DotAlgorithmPreset.BF16_BF16_F32`) selects the bfloat16 operands. XLA:CPU ignores that
preset (it computes in float32), so the operands are rounded to bfloat16 here, explicitly, on
every backend: on a CPU with AMX or AVX512-BF16 such a matmul runs 2-4x faster than in float32
(2-core CPU of these machines: [640, 256] x [256, 2048] 230 -> 516 GFLOP/s), and GPUs run it on
their tensor cores. Activations, the LSTM state, every elementwise op, the loss and the optimizer
stay float32; only each matmul's operands are rounded (8 mantissa bits), as on a TPU by default.

`einsum` and `matmul` also give the backward pass bfloat16 operands: plain autodiff of a matmul
of rounded operands would multiply a float32 cotangent by a bfloat16 operand, which XLA runs as a
float32 matmul. Their gradients are float32.

XLA:CPU runs a bfloat16 x bfloat16 -> float32 matmul only inside its YNNPACK/XNNPACK/oneDNN
fusions; one that its passes leave outside them fails at run time ("Unsupported element type for
DotThunk"). The model's matmuls are written in the forms those fusions take (operands row-major,
the contracted axis last on the left), which the tests check for every model path, and
`unfused_bf16_matmuls` finds any other in a compiled program, so that training stops with a clear
error before its first step instead.
"""
from __future__ import annotations

import functools
import re
from typing import Any

import jax
import jax.numpy as jnp
from jax import lax

#: The `precision` value meaning bfloat16 operands, float32 accumulation and float32 results.
BF16_OPERANDS = lax.DotAlgorithmPreset.BF16_BF16_F32


def bf16_operands(precision: Any) -> bool:
    """Whether `precision` asks for bfloat16 operands (see the module docstring)."""
    return precision is BF16_OPERANDS or precision == BF16_OPERANDS


def operand(x: jax.Array, precision: Any) -> jax.Array:
    """x as a matmul operand under `precision`: rounded to bfloat16 where asked (weights used in a
    loop are cast once, before it), else unchanged."""
    if bf16_operands(precision) and x.dtype == jnp.float32:
        return x.astype(jnp.bfloat16)
    return x


def _split(spec: str) -> tuple[str, str, str]:
    ins, out = spec.replace(" ", "").split("->")
    a, b = ins.split(",")
    if "." in spec or not set(a) <= set(out + b) or not set(b) <= set(out + a):
        raise ValueError(f"einsum {spec!r}: every index of an operand must appear in the other or the output")
    return a, b, out


@functools.partial(jax.custom_vjp, nondiff_argnums=(0,))
def _bf16_einsum(spec: str, a: jax.Array, b: jax.Array) -> jax.Array:
    return jnp.einsum(spec, a.astype(jnp.bfloat16), b.astype(jnp.bfloat16), preferred_element_type=jnp.float32)


def _bf16_einsum_fwd(spec, a, b):
    ab, bb = a.astype(jnp.bfloat16), b.astype(jnp.bfloat16)
    out = jnp.einsum(spec, ab, bb, preferred_element_type=jnp.float32)
    # the residuals are the rounded operands (half the memory); zero-size dtype carriers for the grads
    return out, (ab, bb, jnp.zeros((0,), a.dtype), jnp.zeros((0,), b.dtype))


def _bf16_einsum_bwd(spec, res, g):
    ab, bb, a_dtype, b_dtype = res
    sa, sb, so = _split(spec)
    gb = g.astype(jnp.bfloat16)
    da = jnp.einsum(f"{so},{sb}->{sa}", gb, bb, preferred_element_type=jnp.float32)
    db = jnp.einsum(f"{sa},{so}->{sb}", ab, gb, preferred_element_type=jnp.float32)
    return da.astype(a_dtype.dtype), db.astype(b_dtype.dtype)


_bf16_einsum.defvjp(_bf16_einsum_fwd, _bf16_einsum_bwd)


def einsum(spec: str, a: jax.Array, b: jax.Array, precision: Any, **kwargs) -> jax.Array:
    """`jnp.einsum(spec, a, b, precision=precision, **kwargs)`, or with `BF16_OPERANDS` bfloat16
    operands (forward and backward), float32 accumulation and a float32 result. `spec` names every
    index (no '...'); an index of one operand must appear in the other or in the output."""
    if bf16_operands(precision):
        _split(spec)
        return _bf16_einsum(spec, a, b)
    return jnp.einsum(spec, a, b, precision=precision, **kwargs)


def matmul(x: jax.Array, w: jax.Array, precision: Any, **kwargs) -> jax.Array:
    """x [..., K] @ w [K, N] -> [..., N] (`jnp.dot`'s result; see `einsum` for `BF16_OPERANDS`)."""
    if bf16_operands(precision):
        lead = x.shape[:-1]
        out = _bf16_einsum("nk,kg->ng", x.reshape(-1, x.shape[-1]), w)
        return out.reshape(*lead, w.shape[-1])
    return jnp.dot(x, w, precision=precision, **kwargs)


_COMPUTATION = re.compile(r"^(?:ENTRY )?%(\S+) .*\{$")
_INSTRUCTION = re.compile(r"^\s*(?:ROOT )?%(\S+) = (\S+) ")
_DOT = re.compile(r"^\s*(?:ROOT )?%(\S+) = f32\S* dot\(%([^,\s]+), %([^,)\s]+)\)")
_LIBRARY_FUSION = re.compile(r"calls=%([^,\s]+).*\"kind\":\"__(?:ynn|xnn|onednn)_fusion\"")


def unfused_bf16_matmuls(hlo_text: str) -> list[str]:
    """Names of the bfloat16 x bfloat16 -> float32 matmuls of a compiled XLA:CPU program (its
    `as_text()`) that lie outside a library fusion, where XLA:CPU cannot run them (module docstring)."""
    library = set(_LIBRARY_FUSION.findall(hlo_text))
    found, computation, types = [], None, {}
    for line in hlo_text.splitlines():
        head = _COMPUTATION.match(line)
        if head:
            computation, types = head.group(1), {}
            continue
        inst = _INSTRUCTION.match(line)
        if inst:
            types[inst.group(1)] = inst.group(2)
        dot = _DOT.match(line)
        if dot and computation not in library and \
                any(types.get(name, "").startswith("bf16") for name in dot.group(2, 3)):
            found.append(dot.group(1))
    return found
