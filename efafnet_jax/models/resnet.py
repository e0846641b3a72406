"""ResNet-50/101/152 backbone in torchvision's layout, returning every stage."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import flax.linen as nn
import jax.numpy as jnp

from efafnet_jax.models.bottleneck import Bottleneck
from efafnet_jax.models.layers import LayerSettings, batch_norm, conv


class ResNet(nn.Module):
    """Stem (7x7/2 conv, 3x3/2 max-pool) and four bottleneck stages.

    Returns the outputs of layer1..layer4 (the paper's conv2..conv5, strides 4,
    8, 16 and 32). Stage i has `width * 2**i` planes; block j of stage i is named
    `layer{i+1}_{j}` after torchvision's `layer{i+1}.{j}`.
    """

    stage_blocks: Sequence[int] = (3, 4, 6, 3)
    stem_width: int = 64
    width: int = 64
    use_fam: bool = False
    fam_base_width: int = 26
    fam_scale: int = 4
    feature_selection: Callable[..., nn.Module] | None = None  # a FeatureSelection partial
    layers: LayerSettings = LayerSettings()

    @nn.compact
    def __call__(self, x: jnp.ndarray, train: bool) -> list[jnp.ndarray]:
        x = conv(self.stem_width, 7, 2, layers=self.layers, name="conv1")(x)
        x = nn.relu(batch_norm(train, layers=self.layers, name="bn1")(x))
        x = nn.max_pool(x, (3, 3), (2, 2), padding=((1, 1), (1, 1)))
        stages = []
        for i, num_blocks in enumerate(self.stage_blocks):
            for j in range(num_blocks):
                x = Bottleneck(
                    planes=self.width * 2**i,
                    stride=2 if (i > 0 and j == 0) else 1,
                    first_of_stage=j == 0,
                    use_fam=self.use_fam,
                    fam_base_width=self.fam_base_width,
                    fam_scale=self.fam_scale,
                    feature_selection=self.feature_selection,
                    layers=self.layers,
                    name=f"layer{i + 1}_{j}",
                )(x, train)
            stages.append(x)
        return stages
