"""Convolution kernels: the stock lax ops, or faster equivalent forms on CPU.

XLA:CPU runs a 1x1 convolution slower than the same contraction as a matmul,
and a stride-2 transposed convolution (lowered as a convolution of the input
with zeros inserted between pixels) about an order of magnitude slower than
PyTorch (Speed 1/2 in benchmarks/RESULTS.md). The equivalent forms here compute
the same sums over the same products, so they agree with the stock ops to
float rounding (tests/test_kernels.py), gradients included:

- 1x1 convolution: a strided slice, then `dot_general` over channels.
- stride-2 transposed convolution: the sub-pixel form. Output pixel (2q + r)
  only meets the kernel taps a with (r + a - pad_low) even, at input pixel
  q + (r + a - pad_low) / 2, so the four output phases are ordinary stride-1
  convolutions of the undilated input. One convolution with a combined kernel
  (3x3 for SimpleBaseline's 4x4 deconvolutions) yields all four phases as
  channels, and a depth-to-space interleaves them.

`fast_kernels()` decides: on CPU the equivalent forms, elsewhere the stock ops
(cuDNN and the TPU compiler run transposed convolutions natively).
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

_NHWC = ("NHWC", "HWIO", "NHWC")


def fast_kernels() -> bool:
    """True where the equivalent forms pay off (XLA:CPU)."""
    return jax.default_backend() == "cpu"


def conv2d(
    x: jnp.ndarray,
    kernel: jnp.ndarray,
    stride: int,
    padding: Sequence[tuple[int, int]],
    fast: bool | None = None,
) -> jnp.ndarray:
    """NHWC x HWIO convolution with explicit padding; a 1x1 kernel becomes a matmul."""
    fast = fast_kernels() if fast is None else fast
    if fast and kernel.shape[:2] == (1, 1) and all(p == (0, 0) for p in padding):
        if stride > 1:
            x = x[:, ::stride, ::stride, :]
        return lax.dot_general(x, kernel[0, 0], (((3,), (0,)), ((), ())))
    return lax.conv_general_dilated(
        x, kernel, (stride, stride), tuple(padding), dimension_numbers=_NHWC
    )


def conv_transpose2d(
    x: jnp.ndarray,
    kernel: jnp.ndarray,
    stride: int,
    padding: Sequence[tuple[int, int]],
    fast: bool | None = None,
) -> jnp.ndarray:
    """`lax.conv_transpose(x, kernel, strides, padding, transpose_kernel=True)` in NHWC.

    `kernel` is flax's transposed layout [kh, kw, out, in] (PyTorch's ConvTranspose2d
    weight [in, out, kh, kw], transposed); `padding` is the (low, high) padding of
    the zero-inserted input, per spatial axis, as flax's ConvTranspose takes it.
    """
    fast = fast_kernels() if fast is None else fast
    size = kernel.shape[0]
    low, high = padding[0]
    # The sub-pixel form needs stride 2, a square kernel and padding, and outputs of
    # exactly twice the input (else the phases would differ in length).
    doubles = (x.shape[1] - 1) * 2 + 1 + low + high - size + 1 == 2 * x.shape[1]
    square = kernel.shape[0] == kernel.shape[1] and padding[0] == padding[1]
    if not (fast and stride == 2 and square and doubles):
        return lax.conv_transpose(
            x,
            kernel,
            (stride, stride),
            tuple(padding),
            dimension_numbers=_NHWC,
            transpose_kernel=True,
        )
    # What lax does with transpose_kernel: flip the taps, swap in/out -> [k, k, in, out].
    taps = jnp.flip(kernel, (0, 1)).swapaxes(2, 3)
    select, first = _phase_selection(size, low)
    select = jnp.asarray(select, taps.dtype)  # 0/1: each combined tap is one exact copy
    width = select.shape[1]
    # combined[d, e, i, o, r, s] = taps[a, b, i, o] where phase (r, s) meets tap (a, b)
    # at input offset (d, e); channel order (o, r, s) is depth_to_space's (PixelShuffle's).
    combined = jnp.einsum("rda,seb,abio->deiors", select, select, taps)
    combined = combined.reshape(width, width, taps.shape[2], -1)
    y = lax.conv_general_dilated(
        x, combined, (1, 1), ((-first, first + width - 1),) * 2, dimension_numbers=_NHWC
    )
    batch, height, cols, channels = y.shape
    y = y.reshape(batch, height, cols, channels // 4, 2, 2).transpose(0, 1, 4, 2, 5, 3)
    return y.reshape(batch, 2 * height, 2 * cols, channels // 4)


def _phase_selection(size: int, low: int) -> tuple[np.ndarray, int]:
    """select[r, d, a] = 1 if output phase r reads tap a at input offset first + d."""
    offsets = {
        (r, a): (r + a - low) // 2 for r in (0, 1) for a in range(size) if (r + a - low) % 2 == 0
    }
    first, last = min(offsets.values()), max(offsets.values())
    select = np.zeros((2, last - first + 1, size), np.float32)
    for (r, a), offset in offsets.items():
        select[r, offset - first, a] = 1.0
    return select, first
