"""ResNet bottlenecks: torchvision's, and the FASM bottleneck of Fig. 3(b).

Submodule names mirror the PyTorch state_dict keys (torchvision's Bottleneck,
Res2Net's `convs.N` / `bns.N`) so that weight conversion is a renaming.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import flax.linen as nn
import jax.numpy as jnp

from efafnet_jax.models.layers import LayerSettings, batch_norm, conv

EXPANSION = 4


def fam_split_width(planes: int, base_width: int) -> int:
    """Channels per FAM split: floor(planes * base_width / 64) (Res2Net's 26w x 4s)."""
    return int(math.floor(planes * base_width / 64.0))


class Bottleneck(nn.Module):
    """One residual bottleneck, optionally with FAM and/or FSM.

    Plain: 1x1 -> 3x3 (stride here, as torchvision) -> 1x1. With `use_fam` the 3x3
    becomes FAM (Eq. 1): the 1x1 output is split into `fam_scale` groups,
    y_1 = G_1(x_1), y_i = G_i(x_i + y_{i-1}) and the last group passes through,
    as in Res2Net's official code; the first block of a stage (`first_of_stage`)
    has no hierarchical add and average-pools its pass-through group. With a
    `feature_selection` (a FeatureSelection partial) the FSM acts on the branch
    output before the residual add: out = ReLU(x + FSM(F)) (Eq. 8, X counted once).
    """

    planes: int
    stride: int = 1
    first_of_stage: bool = False
    use_fam: bool = False
    fam_base_width: int = 26
    fam_scale: int = 4
    feature_selection: Callable[..., nn.Module] | None = None
    layers: LayerSettings = LayerSettings()

    @nn.compact
    def __call__(self, x: jnp.ndarray, train: bool) -> jnp.ndarray:
        layers = self.layers
        out_channels = self.planes * EXPANSION
        if self.use_fam:
            out = self._aggregate(x, train)
        else:
            out = conv(self.planes, 1, layers=layers, name="conv1")(x)
            out = nn.relu(batch_norm(train, layers=layers, name="bn1")(out))
            out = conv(self.planes, 3, self.stride, layers=layers, name="conv2")(out)
            out = nn.relu(batch_norm(train, layers=layers, name="bn2")(out))
        out = conv(out_channels, 1, layers=layers, name="conv3")(out)
        out = batch_norm(train, layers=layers, name="bn3")(out)
        if self.feature_selection is not None:
            out = self.feature_selection(layers=layers, name="fsm")(out)
        identity = x
        if self.stride != 1 or x.shape[-1] != out_channels:
            identity = conv(out_channels, 1, self.stride, layers=layers, name="downsample_0")(x)
            identity = batch_norm(train, layers=layers, name="downsample_1")(identity)
        return nn.relu(identity + out)

    def _aggregate(self, x: jnp.ndarray, train: bool) -> jnp.ndarray:
        layers = self.layers
        width = fam_split_width(self.planes, self.fam_base_width)
        if self.fam_scale < 2:
            raise ValueError(f"model.fam.scale must be >= 2, got {self.fam_scale}")
        if width < 1:
            raise ValueError(
                f"FAM split width floor({self.planes}*{self.fam_base_width}/64) "
                "is 0; raise model.width or model.fam.base_width"
            )
        out = conv(width * self.fam_scale, 1, layers=layers, name="conv1")(x)
        out = nn.relu(batch_norm(train, layers=layers, name="bn1")(out))
        splits = jnp.split(out, self.fam_scale, axis=-1)
        outputs = []
        for i in range(self.fam_scale - 1):
            group = splits[i] if (i == 0 or self.first_of_stage) else splits[i] + outputs[-1]
            group = conv(width, 3, self.stride, layers=layers, name=f"convs_{i}")(group)
            outputs.append(nn.relu(batch_norm(train, layers=layers, name=f"bns_{i}")(group)))
        last = splits[-1]
        if self.first_of_stage:
            # Res2Net: AvgPool2d(3, stride, padding=1), zero padding counted in the mean.
            last = nn.avg_pool(
                last,
                (3, 3),
                (self.stride, self.stride),
                padding=((1, 1), (1, 1)),
                count_include_pad=True,
            )
        outputs.append(last)
        return jnp.concatenate(outputs, axis=-1)
