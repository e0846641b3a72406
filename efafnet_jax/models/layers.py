"""Convolution, batch-norm and initialiser settings shared by all model parts.

Initialisers follow torchvision's ResNet (Kaiming normal, fan_out) and
SimpleBaseline's head (normal, std 0.001), so a model trained from scratch here
starts where the PyTorch references start.
"""

from __future__ import annotations

import flax.linen as nn
import jax.numpy as jnp

from efafnet_jax.models.batch_norm import BatchNorm

# torchvision resnet.py: kaiming_normal_(mode="fan_out", nonlinearity="relu").
kaiming_fan_out = nn.initializers.variance_scaling(2.0, "fan_out", "normal")
# SimpleBaseline pose_resnet.py init_weights: normal_(std=0.001) for deconvs and final layer.
head_normal = nn.initializers.normal(stddev=0.001)


def conv(
    features: int,
    kernel: int,
    stride: int = 1,
    *,
    dtype,
    param_dtype,
    use_bias: bool = False,
    kernel_init=kaiming_fan_out,
    name: str | None = None,
) -> nn.Conv:
    """A square convolution with PyTorch's symmetric padding of kernel // 2."""
    pad = kernel // 2
    return nn.Conv(
        features,
        (kernel, kernel),
        strides=(stride, stride),
        padding=((pad, pad), (pad, pad)),
        use_bias=use_bias,
        dtype=dtype,
        param_dtype=param_dtype,
        kernel_init=kernel_init,
        name=name,
    )


def batch_norm(train: bool, *, dtype, param_dtype, name: str | None = None) -> BatchNorm:
    """BatchNorm2d as PyTorch computes it (momentum 0.1, eps 1e-5, unbiased running var)."""
    return BatchNorm(use_running_average=not train, dtype=dtype, param_dtype=param_dtype, name=name)


def as_dtype(name: str):
    """'float32' / 'bfloat16' / 'float16' -> the jnp dtype."""
    return jnp.dtype(name)
