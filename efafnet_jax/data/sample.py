"""One record + its image -> the uint8 crop, heatmaps and weights (train or eval)."""

from __future__ import annotations

import dataclasses

import numpy as np

from efafnet_jax.data.codec import encode
from efafnet_jax.data.keypoints import KeypointSpec
from efafnet_jax.data.records import PersonRecord
from efafnet_jax.data.transforms import (
    AugmentConfig,
    AugmentDraws,
    affine_matrix,
    affine_points,
    augment_center_scale,
    flip_joints,
    warp_crop,
)


@dataclasses.dataclass(frozen=True)
class SampleConfig:
    """Crop and target geometry; every size is (height, width)."""

    crop_hw: tuple[int, int]
    heatmap_hw: tuple[int, int]
    sigma: float = 2.0
    use_joint_weights: bool = False
    augment: AugmentConfig = AugmentConfig()
    # The source buffer when augmenting on device; None: on the host.
    device_buffer_hw: tuple[int, int] | None = None
    target_encoding: str = "msra"  # or "unbiased" (codec.encode)
    udp: bool = False  # UDP's unit-length crop and heatmap geometry (transforms.udp_matrix)


@dataclasses.dataclass
class Sample:
    """What the pipeline batches: image [H, W, 3] uint8, target [h, w, K], weight [K]."""

    image: np.ndarray
    target: np.ndarray
    target_weight: np.ndarray
    center: np.ndarray
    scale: np.ndarray
    rotation: float
    flipped: bool


@dataclasses.dataclass
class CropGeometry:
    """Where a crop comes from: the image -> crop matrix (of the mirrored image when
    `flip`), the (augmented) centre, scale and rotation, and the joints in crop pixels."""

    matrix: np.ndarray
    center: np.ndarray
    scale: np.ndarray
    rotation: float
    flip: bool
    joints: np.ndarray
    visibility: np.ndarray


def crop_geometry(
    record: PersonRecord,
    image_width: int,
    spec: KeypointSpec,
    config: SampleConfig,
    draws: AugmentDraws | None,
) -> CropGeometry:
    """HRNet JointsDataset's geometry: `draws=None` is evaluation (no augmentation);
    with draws: half body (if enabled), scale, rotation, then the flip of joints and
    centre."""
    joints = np.array(record.joints, np.float64)
    visibility = np.array(record.visibility, np.float64)
    center, scale, rotation, flip = np.array(record.center), np.array(record.scale), 0.0, False
    if draws is not None:
        aspect = config.crop_hw[1] / config.crop_hw[0]
        center, scale, rotation, flip = augment_center_scale(
            center, scale, joints, visibility, draws, config.augment, spec.upper_body_ids, aspect
        )
        if flip:
            joints, visibility = flip_joints(
                joints, visibility, image_width, spec.flip_permutation()
            )
            center = np.array(center, copy=True)
            center[0] = image_width - center[0] - 1
    matrix = affine_matrix(center, scale, rotation, config.crop_hw, udp=config.udp)
    labelled = visibility > 0
    joints[labelled] = affine_points(joints[labelled], matrix)
    return CropGeometry(matrix, center, scale, rotation, flip, joints, visibility)


def make_sample(
    record: PersonRecord,
    image: np.ndarray,
    spec: KeypointSpec,
    config: SampleConfig,
    draws: AugmentDraws | None,
    swap_red_blue: bool = False,
) -> Sample:
    """HRNet JointsDataset `__getitem__` as a pure function of the record, image and draws.

    The crop keeps the image's channel order, or swaps red and blue with
    `swap_red_blue` (cv2's BGR in, RGB out).
    """
    g = crop_geometry(record, image.shape[1], spec, config, draws)
    crop = warp_crop(image, g.matrix, config.crop_hw, mirror=g.flip, swap_red_blue=swap_red_blue)
    weights = spec.joint_weights if config.use_joint_weights else None
    target, target_weight = encode(
        g.joints,
        g.visibility,
        config.crop_hw,
        config.heatmap_hw,
        config.sigma,
        weights,
        config.target_encoding,
        config.udp,
    )
    return Sample(
        crop,
        target,
        target_weight,
        np.asarray(g.center, np.float32),
        np.asarray(g.scale, np.float32),
        g.rotation,
        g.flip,
    )
