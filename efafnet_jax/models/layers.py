"""Convolution, batch-norm and initialiser settings shared by all model parts.

Initialisers follow torchvision's ResNet (Kaiming normal, fan_out) and
SimpleBaseline's head (normal, std 0.001), so a model trained from scratch here
starts where the PyTorch references start.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from efafnet_jax.models.batch_norm import BatchNorm
from efafnet_jax.models.kernels import conv2d, conv_transpose2d

# torchvision resnet.py: kaiming_normal_(mode="fan_out", nonlinearity="relu").
kaiming_fan_out = nn.initializers.variance_scaling(2.0, "fan_out", "normal")
# SimpleBaseline pose_resnet.py init_weights: normal_(std=0.001) for deconvs and final layer.
head_normal = nn.initializers.normal(stddev=0.001)


@dataclasses.dataclass(frozen=True)
class LayerSettings:
    """What every layer of one network shares: the compute and parameter dtypes and
    the convolution form (`kernels.CONV_IMPLS`)."""

    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32
    conv_impl: str = "xla"  # checked where it is used, by kernels.conv2d / conv_transpose2d


class Conv(nn.Module):
    """A square convolution, flax `nn.Conv`'s parameters ('kernel' HWIO, 'bias'),
    computed by `kernels.conv2d` in the form `impl`."""

    features: int
    kernel_size: int
    stride: int = 1
    padding: int = 0
    use_bias: bool = False
    kernel_init: Callable = kaiming_fan_out
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32
    impl: str = "xla"

    @nn.compact
    def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
        shape = (self.kernel_size, self.kernel_size, x.shape[-1], self.features)
        kernel = self.param("kernel", self.kernel_init, shape, self.param_dtype)
        pad = ((self.padding, self.padding),) * 2
        y = conv2d(x.astype(self.dtype), kernel.astype(self.dtype), self.stride, pad, self.impl)
        if self.use_bias:
            bias = self.param("bias", nn.initializers.zeros, (self.features,), self.param_dtype)
            y = y + bias.astype(self.dtype)
        return y


class ConvTranspose(nn.Module):
    """flax `nn.ConvTranspose(transpose_kernel=True)`'s parameters ('kernel' [k, k, out,
    in]), computed by `kernels.conv_transpose2d` in the form `impl`.
    `padding` is that of the zero-inserted input, per spatial axis (low, high)."""

    features: int
    kernel_size: int
    stride: int
    padding: tuple[tuple[int, int], tuple[int, int]]
    kernel_init: Callable = head_normal
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32
    impl: str = "xla"

    @nn.compact
    def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
        shape = (self.kernel_size, self.kernel_size, self.features, x.shape[-1])
        kernel = self.param("kernel", self.kernel_init, shape, self.param_dtype)
        return conv_transpose2d(
            x.astype(self.dtype), kernel.astype(self.dtype), self.stride, self.padding, self.impl
        )


def conv(
    features: int,
    kernel: int,
    stride: int = 1,
    *,
    layers: LayerSettings,
    use_bias: bool = False,
    kernel_init=kaiming_fan_out,
    name: str | None = None,
) -> Conv:
    """A square convolution with PyTorch's symmetric padding of kernel // 2."""
    return Conv(
        features,
        kernel,
        stride,
        kernel // 2,
        use_bias=use_bias,
        kernel_init=kernel_init,
        dtype=layers.dtype,
        param_dtype=layers.param_dtype,
        impl=layers.conv_impl,
        name=name,
    )


def batch_norm(train: bool, *, layers: LayerSettings, name: str | None = None) -> BatchNorm:
    """BatchNorm2d as PyTorch computes it (momentum 0.1, eps 1e-5, unbiased running var)."""
    return BatchNorm(
        use_running_average=not train,
        dtype=layers.dtype,
        param_dtype=layers.param_dtype,
        name=name,
    )
