"""Convolution kernels: the stock lax ops, or faster equivalent forms on CPU.

XLA:CPU runs a 1x1 convolution slower than the same contraction as a matmul,
and a stride-2 transposed convolution (lowered as a convolution of the input
with zeros inserted between pixels) about an order of magnitude slower than
PyTorch (Speed 1/2 in benchmarks/RESULTS.md). The equivalent forms here compute
the same sums over the same products, so they agree with the stock ops to
float rounding (tests/test_kernels.py), gradients included:

- 1x1 convolution: a strided slice, then a matmul of [N*H*W, C] rows.
- stride-2 transposed convolution: PyTorch's own form (GEMM, then col2im). One
  matmul [N*H*W, C_in] x [C_in, k*k*C_out] gives every tap's product; input pixel
  i adds its tap-a product to output pixel 2 i + a - padding, which for each
  output phase (even or odd row and column) is a sum of shifted copies. Same
  multiply-adds as the definition (no inserted zeros), and the gradients are
  matmuls too.

Which form runs is the caller's choice, `impl`: "xla" (the stock ops) or
"cpu_gemm" (the forms above). The entry points choose it for the platform they run
on (`efafnet_jax.platform.resolve_conv_impl`); nothing here looks at the backend.
"""

from __future__ import annotations

from collections.abc import Sequence

import jax.numpy as jnp
from jax import lax

_NHWC = ("NHWC", "HWIO", "NHWC")

CONV_IMPLS = ("xla", "cpu_gemm")


def check_conv_impl(impl: str) -> str:
    """`impl` if it names a form; a ValueError that says where "auto" is resolved."""
    if impl not in CONV_IMPLS:
        raise ValueError(
            f"model.conv_impl must be one of {CONV_IMPLS} when the model is built, got "
            f"{impl!r} ('auto' is resolved by the entry points: "
            "efafnet_jax.platform.resolve_conv_impl)"
        )
    return impl


def conv2d(
    x: jnp.ndarray,
    kernel: jnp.ndarray,
    stride: int,
    padding: Sequence[tuple[int, int]],
    impl: str = "xla",
) -> jnp.ndarray:
    """NHWC x HWIO convolution with explicit padding; "cpu_gemm": a 1x1 kernel as a matmul."""
    pointwise = kernel.shape[:2] == (1, 1) and all(p == (0, 0) for p in padding)
    if check_conv_impl(impl) == "cpu_gemm" and pointwise:
        if stride > 1:
            x = x[:, ::stride, ::stride, :]
        # As a 2-D matmul: XLA:CPU runs the weight gradient of a 4-D dot_general 2-4x
        # slower than the same contraction on [N*H*W, C] rows.
        batch, height, width, channels = x.shape
        y = lax.dot(x.reshape(-1, channels), kernel[0, 0])
        return y.reshape(batch, height, width, kernel.shape[-1])
    return lax.conv_general_dilated(
        x, kernel, (stride, stride), tuple(padding), dimension_numbers=_NHWC
    )


def conv_transpose2d(
    x: jnp.ndarray,
    kernel: jnp.ndarray,
    stride: int,
    padding: Sequence[tuple[int, int]],
    impl: str = "xla",
) -> jnp.ndarray:
    """`lax.conv_transpose(x, kernel, strides, padding, transpose_kernel=True)` in NHWC.

    `kernel` is flax's transposed layout [kh, kw, out, in] (PyTorch's ConvTranspose2d
    weight [in, out, kh, kw], transposed); `padding` is the (low, high) padding of
    the zero-inserted input, per spatial axis, as flax's ConvTranspose takes it.
    """
    size = kernel.shape[0]
    low, high = padding[0]
    square = kernel.shape[0] == kernel.shape[1] and padding[0] == padding[1]
    if not (check_conv_impl(impl) == "cpu_gemm" and stride == 2 and square and low <= size - 1):
        return lax.conv_transpose(
            x,
            kernel,
            (stride, stride),
            tuple(padding),
            dimension_numbers=_NHWC,
            transpose_kernel=True,
        )
    batch, height, width, channels = x.shape
    out_channels = kernel.shape[2]
    # PyTorch's scatter form: input pixel i adds x[i] . K[a] to full-output pixel 2 i + a.
    # One matmul gives every tap's product: [N*H*W, C] x [C, k*k*O].
    taps = kernel.transpose(3, 0, 1, 2).reshape(channels, size * size * out_channels)
    products = lax.dot(x.reshape(-1, channels), taps)
    products = products.reshape(batch, height, width, size, size, out_channels)
    # Full-output pixel n = 2 q + r gathers taps a = r + 2 j from input pixel q - j.
    reach = (size + 1) // 2  # j = 0 .. reach - 1
    phases = []
    for ry in (0, 1):
        for rx in (0, 1):
            total = 0.0
            for a in range(ry, size, 2):
                for b in range(rx, size, 2):
                    ja, jb = a // 2, b // 2
                    shift = ((0, 0), (ja, reach - 1 - ja), (jb, reach - 1 - jb), (0, 0))
                    total = total + jnp.pad(products[:, :, :, a, b], shift)
            phases.append(total)
    # [B, H + reach - 1, W + reach - 1, (ry, rx), O] -> interleaved rows and columns.
    full = jnp.stack(phases, axis=3).reshape(
        batch, height + reach - 1, width + reach - 1, 2, 2, out_channels
    )
    full = full.transpose(0, 1, 3, 2, 4, 5).reshape(
        batch, 2 * (height + reach - 1), 2 * (width + reach - 1), out_channels
    )
    # The stock op's padding (low, high) of the dilated input is PyTorch's
    # padding p = size - 1 - low and output_padding = high - low.
    crop = size - 1 - low
    out_h = 2 * (height - 1) + 1 + low + high - size + 1
    out_w = 2 * (width - 1) + 1 + low + high - size + 1
    full = jnp.pad(
        full,
        (
            (0, 0),
            (0, max(0, crop + out_h - full.shape[1])),
            (0, max(0, crop + out_w - full.shape[2])),
            (0, 0),
        ),
    )
    return full[:, crop : crop + out_h, crop : crop + out_w, :]
