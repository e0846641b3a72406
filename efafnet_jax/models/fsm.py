"""Feature Selection Module (paper section III-B.2, Eqs. 2-7, Fig. 4)."""

from __future__ import annotations

import flax.linen as nn
import jax.numpy as jnp

from efafnet_jax.models.layers import LayerSettings, conv

ARRANGEMENTS = ("parallel", "cs_lss", "lss_cs")  # Table VII


def spatial_max(x: jnp.ndarray) -> jnp.ndarray:
    """Max over H, W whose gradient goes to the first maximum's position.

    jnp.max's gradient re-compares the input with the result; under jit XLA may
    recompute the input in another fusion, rounded differently, and the
    comparison then misses the maximum. A gather at the argmax has no such
    equality test (PyTorch's amax splits the gradient between exact ties; ties
    do not occur in real features).
    """
    b, h, w, c = x.shape
    flat = x.reshape(b, h * w, c)
    index = jnp.argmax(flat, axis=1)
    return jnp.take_along_axis(flat, index[:, None, :], axis=1)[:, 0, :]


class FeatureSelection(nn.Module):
    """Channel-wise (CS) and location-sensitive (LSS) selection, each x + w * x.

    CS: alpha = sigmoid(FC2(ReLU(FC1(avgpool(x) + maxpool(x))))) (Eqs. 4-7), FC1
    reducing by `reduction`. LSS: beta = sigmoid([ReLU](W2(ReLU(W1 x)))) (Eq. 2),
    W1: C -> `lss_hidden` 1x1 conv, W2: -> 1 channel. `parallel` returns
    CS(x) + LSS(x) (Eq. 8's sum); `cs_lss` / `lss_cs` apply them in series.
    """

    reduction: int = 16
    lss_hidden: int = 1
    lss_relu_before_sigmoid: bool = True
    arrangement: str = "parallel"
    layers: LayerSettings = LayerSettings()

    @nn.compact
    def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
        if self.arrangement not in ARRANGEMENTS:
            raise ValueError(
                f"fsm.arrangement must be one of {ARRANGEMENTS}, got {self.arrangement!r}"
            )
        channels = x.shape[-1]
        dense = dict(dtype=self.layers.dtype, param_dtype=self.layers.param_dtype)

        def channel_selection(f):
            pooled = jnp.mean(f, axis=(1, 2)) + spatial_max(f)
            hidden = nn.relu(
                nn.Dense(max(channels // self.reduction, 1), name="cs_fc1", **dense)(pooled)
            )
            alpha = nn.sigmoid(nn.Dense(channels, name="cs_fc2", **dense)(hidden))
            return f + alpha[:, None, None, :] * f

        def location_selection(f):
            hidden = conv(self.lss_hidden, 1, use_bias=True, layers=self.layers, name="lss_conv1")
            logits = conv(1, 1, use_bias=True, layers=self.layers, name="lss_conv2")
            logits = logits(nn.relu(hidden(f)))
            if self.lss_relu_before_sigmoid:
                logits = nn.relu(logits)
            return f + nn.sigmoid(logits) * f

        if self.arrangement == "parallel":
            return channel_selection(x) + location_selection(x)
        if self.arrangement == "cs_lss":
            return location_selection(channel_selection(x))
        return channel_selection(location_selection(x))
