"""BatchNorm with PyTorch's BatchNorm2d semantics, over the last (channel) axis."""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp


class BatchNorm(nn.Module):
    """y = (x - mean) / sqrt(var + eps) * scale + bias in float32 (float64 for float64 x).

    Training uses the batch's biased variance and updates the running variance
    with the unbiased one (n / (n - 1)), as torch.nn.BatchNorm2d does; flax's
    nn.BatchNorm updates with the biased one. `momentum` is PyTorch's (weight of
    the new batch). Under jit with a batch-sharded global array the statistics
    are those of the global batch.
    """

    use_running_average: bool
    momentum: float = 0.1
    epsilon: float = 1e-5
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
        channels = x.shape[-1]
        scale = self.param("scale", nn.initializers.ones, (channels,), self.param_dtype)
        bias = self.param("bias", nn.initializers.zeros, (channels,), self.param_dtype)
        stat_dtype = jnp.promote_types(jnp.float32, x.dtype)
        running_mean = self.variable(
            "batch_stats", "mean", lambda: jnp.zeros((channels,), stat_dtype)
        )
        running_var = self.variable("batch_stats", "var", lambda: jnp.ones((channels,), stat_dtype))
        x32 = x.astype(stat_dtype)
        if self.use_running_average:
            mean, var = running_mean.value, running_var.value
        else:
            axes = tuple(range(x.ndim - 1))
            mean = jnp.mean(x32, axes)
            var = jnp.mean(jnp.square(x32 - mean), axes)
            if not self.is_initializing():
                count = x.size // channels
                unbiased = var * (count / max(count - 1, 1))
                m = self.momentum
                running_mean.value = (1 - m) * running_mean.value + m * jax.lax.stop_gradient(mean)
                running_var.value = (1 - m) * running_var.value + m * jax.lax.stop_gradient(
                    unbiased
                )
        multiplier = scale.astype(stat_dtype) * jax.lax.rsqrt(var + self.epsilon)
        y = (x32 - mean) * multiplier + bias.astype(stat_dtype)
        return y.astype(self.dtype)
