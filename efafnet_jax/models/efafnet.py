"""EFAFNet and its Table VI ablations as one flax.linen module."""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Mapping, Sequence
from typing import Any

import flax.linen as nn
import jax.numpy as jnp
import ml_collections
from flax.core import FrozenDict

from efafnet_jax.models.fsm import FeatureSelection
from efafnet_jax.models.heads import DeconvHead, DUCHead
from efafnet_jax.models.kernels import check_conv_impl
from efafnet_jax.models.layers import LayerSettings, conv, head_normal
from efafnet_jax.models.preprocess import normalize_images
from efafnet_jax.models.resnet import ResNet

# What the network's output means: raw heatmaps ("identity", MSE-trained) or per-joint
# logits over pixels ("spatial_softmax"). `data.codec.activate` reads it from the model.
HEATMAP_ACTIVATIONS = ("identity", "spatial_softmax")

# config.model keys that describe the model for people and are not PoseNet fields
# (stage_blocks already holds what depth means).
DESCRIPTIVE_KEYS = ("variant", "depth")


class PoseNet(nn.Module):
    """Top-down pose network: [B, H, W, 3] crops -> [B, H/4, W/4, K] outputs.

    The fields are `config.model`'s keys (`create_model`), its sub-configs as frozen
    mappings. uint8 input is normalised on device (`normalize_images`); floating
    input is taken as already normalised. Backbone = ResNet with optional FAM/FSM;
    head = SimpleBaseline deconvolutions or DUC; with `use_fusion` the head's
    stride-4 output is concatenated with conv2 (layer1) before the final 1x1
    predictor (FFM). With `fusion.aux_supervision` a 1x1 predictor on conv2 is
    sown into the 'intermediates' collection as `aux_heatmaps` for an
    intermediate loss. `heatmap_activation` says how outputs become heatmaps.
    """

    num_joints: int = 17
    stage_blocks: Sequence[int] = (3, 4, 6, 3)
    stem_width: int = 64
    width: int = 64
    use_fam: bool = False
    use_fsm: bool = False
    use_fusion: bool = False
    head: str = "deconv"
    fam: Mapping[str, Any] = FrozenDict(base_width=26, scale=4)
    fsm: Mapping[str, Any] = FrozenDict()  # FeatureSelection fields
    fusion: Mapping[str, Any] = FrozenDict(aux_supervision=False)
    deconv: Mapping[str, Any] = FrozenDict(num_layers=3, channels=256, kernel=4)
    duc: Mapping[str, Any] = FrozenDict(upscale=8, kernel=3)
    final_kernel: int = 1
    color_order: str = "rgb"
    mean: Sequence[float] = (0.485, 0.456, 0.406)
    std: Sequence[float] = (0.229, 0.224, 0.225)
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32
    conv_impl: str = "xla"
    heatmap_activation: str = "identity"

    @property
    def aux_supervision(self) -> bool:
        return bool(self.fusion["aux_supervision"])

    @nn.compact
    def __call__(self, images: jnp.ndarray, train: bool = False) -> jnp.ndarray:
        if self.heatmap_activation not in HEATMAP_ACTIVATIONS:
            raise ValueError(
                f"model.heatmap_activation must be one of {HEATMAP_ACTIVATIONS}, "
                f"got {self.heatmap_activation!r}"
            )
        layers = LayerSettings(self.dtype, self.param_dtype, self.conv_impl)
        if images.dtype == jnp.uint8:
            x = normalize_images(images, self.mean, self.std, self.color_order, self.dtype)
        else:
            x = images.astype(self.dtype)
        feature_selection = (
            functools.partial(FeatureSelection, **self.fsm) if self.use_fsm else None
        )
        conv2, _, _, conv5 = ResNet(
            stage_blocks=self.stage_blocks,
            stem_width=self.stem_width,
            width=self.width,
            use_fam=self.use_fam,
            fam_base_width=self.fam["base_width"],
            fam_scale=self.fam["scale"],
            feature_selection=feature_selection,
            layers=layers,
            name="backbone",
        )(x, train)

        final_layer = conv(
            self.num_joints,
            self.final_kernel,
            use_bias=True,
            kernel_init=head_normal,
            layers=layers,
            name="final_layer",
        )
        if self.head == "deconv":
            if self.deconv["num_layers"] < 1:
                raise ValueError("model.deconv.num_layers must be >= 1")
            features = DeconvHead(**self.deconv, layers=layers, name="deconv")(conv5, train)
        elif self.head == "duc":
            features = DUCHead(self.num_joints, **self.duc, layers=layers, name="duc")(conv5)
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
                layers=layers,
                name="aux_conv2",
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


def _field_value(value: Any) -> Any:
    """A config value as a hashable module field: mappings frozen, lists as tuples."""
    if isinstance(value, ml_collections.ConfigDict | Mapping):
        return FrozenDict({k: _field_value(v) for k, v in dict(value).items()})
    if isinstance(value, list | tuple):
        return tuple(_field_value(v) for v in value)
    return value


def create_model(model_config: ml_collections.ConfigDict) -> PoseNet:
    """The PoseNet that `config.model` describes, its keys taken as the fields.

    `conv_impl` must be resolved ("xla" or "cpu_gemm"); an unknown key is an error
    rather than a silently ignored setting.
    """
    fields = {f.name for f in dataclasses.fields(PoseNet)} - {"parent", "name"}
    values = {
        key: _field_value(value)
        for key, value in model_config.items()
        if key not in DESCRIPTIVE_KEYS
    }
    unknown = sorted(set(values) - fields)
    if unknown:
        raise ValueError(f"config.model has keys that PoseNet does not know: {unknown}")
    values["dtype"] = jnp.dtype(values.get("dtype", "float32"))
    values["param_dtype"] = jnp.dtype(values.get("param_dtype", "float32"))
    check_conv_impl(values.get("conv_impl", "xla"))
    return PoseNet(**values)
