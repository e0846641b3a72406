"""EFAFNet and its Table VI ablations as one flax.linen module."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax.numpy as jnp
import ml_collections

from efafnet_jax.models.heads import DeconvHead, DUCHead
from efafnet_jax.models.layers import as_dtype, conv, head_normal
from efafnet_jax.models.preprocess import normalize_images
from efafnet_jax.models.resnet import ResNet


class PoseNet(nn.Module):
    """Top-down pose network: [B, H, W, 3] crops -> [B, H/4, W/4, K] heatmaps.

    uint8 input is normalised on device (`normalize_images`); floating input is
    taken as already normalised. Backbone = ResNet with optional FAM/FSM; head =
    SimpleBaseline deconvolutions or DUC; with `use_fusion` the head's stride-4
    output is concatenated with conv2 (layer1) before the final 1x1 predictor
    (FFM). With `aux_supervision` a 1x1 predictor on conv2 is sown into the
    'intermediates' collection as `aux_heatmaps` for an intermediate loss.
    """

    num_joints: int = 17
    stage_blocks: Sequence[int] = (3, 4, 6, 3)
    stem_width: int = 64
    width: int = 64
    use_fam: bool = False
    use_fsm: bool = False
    use_fusion: bool = False
    head: str = "deconv"
    fam_base_width: int = 26
    fam_scale: int = 4
    fsm_settings: tuple[tuple[str, Any], ...] = ()
    aux_supervision: bool = False
    deconv_layers: int = 3
    deconv_channels: int = 256
    deconv_kernel: int = 4
    duc_upscale: int = 8
    duc_kernel: int = 3
    final_kernel: int = 1
    color_order: str = "rgb"
    mean: Sequence[float] = (0.485, 0.456, 0.406)
    std: Sequence[float] = (0.229, 0.224, 0.225)
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, images: jnp.ndarray, train: bool = False) -> jnp.ndarray:
        layer = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        if images.dtype == jnp.uint8:
            x = normalize_images(images, self.mean, self.std, self.color_order, self.dtype)
        else:
            x = images.astype(self.dtype)
        conv2, _, _, conv5 = ResNet(
            stage_blocks=self.stage_blocks,
            stem_width=self.stem_width,
            width=self.width,
            use_fam=self.use_fam,
            use_fsm=self.use_fsm,
            fam_base_width=self.fam_base_width,
            fam_scale=self.fam_scale,
            fsm_settings=self.fsm_settings,
            name="backbone",
            **layer,
        )(x, train)

        final_layer = conv(
            self.num_joints,
            self.final_kernel,
            use_bias=True,
            kernel_init=head_normal,
            name="final_layer",
            **layer,
        )
        if self.head == "deconv":
            features = DeconvHead(
                self.deconv_layers, self.deconv_channels, self.deconv_kernel, name="deconv", **layer
            )(conv5, train)
        elif self.head == "duc":
            features = DUCHead(
                self.num_joints, self.duc_upscale, self.duc_kernel, name="duc", **layer
            )(conv5)
        else:
            raise ValueError(f"model.head must be 'deconv' or 'duc', got {self.head!r}")

        if features.shape[1:3] != conv2.shape[1:3]:
            raise ValueError(
                f"the {self.head} head outputs {features.shape[1:3]} maps but "
                f"conv2 (stride 4) is {conv2.shape[1:3]}: check the input size "
                "and the head's upsampling factor"
            )
        if self.use_fusion:
            features = jnp.concatenate([features, conv2], axis=-1)
        if self.aux_supervision:
            aux = conv(
                self.num_joints,
                1,
                use_bias=True,
                kernel_init=head_normal,
                name="aux_conv2",
                **layer,
            )(conv2)
            self.sow("intermediates", "aux_heatmaps", _at_least_float32(aux))
        if self.head == "duc" and not self.use_fusion:
            heatmaps = features  # DUC predicts the heatmaps directly (paper III-D).
        else:
            heatmaps = final_layer(features)
        return _at_least_float32(heatmaps)


def _at_least_float32(x: jnp.ndarray) -> jnp.ndarray:
    """Outputs leave the network in float32 (float64 when computing in float64)."""
    return x.astype(jnp.promote_types(jnp.float32, x.dtype))


def create_model(model_config: ml_collections.ConfigDict) -> PoseNet:
    """Builds the PoseNet described by `config.model`."""
    m = model_config
    if m.head == "deconv" and m.deconv.num_layers < 1:
        raise ValueError("model.deconv.num_layers must be >= 1")
    return PoseNet(
        num_joints=m.num_joints,
        stage_blocks=tuple(m.stage_blocks),
        stem_width=m.stem_width,
        width=m.width,
        use_fam=m.use_fam,
        use_fsm=m.use_fsm,
        use_fusion=m.use_fusion,
        head=m.head,
        fam_base_width=m.fam.base_width,
        fam_scale=m.fam.scale,
        fsm_settings=tuple(sorted(m.fsm.to_dict().items())),
        aux_supervision=m.fusion.aux_supervision,
        deconv_layers=m.deconv.num_layers,
        deconv_channels=m.deconv.channels,
        deconv_kernel=m.deconv.kernel,
        duc_upscale=m.duc.upscale,
        duc_kernel=m.duc.kernel,
        final_kernel=m.final_kernel,
        color_order=m.color_order,
        mean=tuple(m.mean),
        std=tuple(m.std),
        dtype=as_dtype(m.dtype),
        param_dtype=as_dtype(m.param_dtype),
    )
