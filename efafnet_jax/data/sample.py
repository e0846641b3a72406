"""One record + its image -> the uint8 crop, heatmaps and weights (train or eval)."""

from __future__ import annotations

import dataclasses

import numpy as np

from efafnet_jax.data.keypoints import KeypointSpec
from efafnet_jax.data.records import PersonRecord
from efafnet_jax.data.targets import gaussian_targets
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
    """Crop and target geometry. Sizes are (width, height)."""

    image_size: tuple[int, int]
    heatmap_size: tuple[int, int]
    sigma: float = 2.0
    use_joint_weights: bool = False
    augment: AugmentConfig = AugmentConfig()


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
    `draws=None` is evaluation: no augmentation. With draws: half body (if
    enabled), scale, rotation, then the flip of image, joints and centre.
    """
    joints = np.array(record.joints, np.float64)
    visibility = np.array(record.visibility, np.float64)
    center, scale, rotation, flip = np.array(record.center), np.array(record.scale), 0.0, False
    if draws is not None:
        aspect = config.image_size[0] / config.image_size[1]
        center, scale, rotation, flip = augment_center_scale(
            center, scale, joints, visibility, draws, config.augment, spec.upper_body_ids, aspect
        )
        if flip:
            width = image.shape[1]
            joints, visibility = flip_joints(joints, visibility, width, spec.flip_pairs)
            center = np.array(center, copy=True)
            center[0] = width - center[0] - 1
    matrix = affine_matrix(center, scale, rotation, config.image_size)
    crop = warp_crop(image, matrix, config.image_size, mirror=flip, swap_red_blue=swap_red_blue)
    labelled = visibility > 0
    joints[labelled] = affine_points(joints[labelled], matrix)
    weights = spec.joint_weights if config.use_joint_weights else None
    target, target_weight = gaussian_targets(
        joints, visibility, config.image_size, config.heatmap_size, config.sigma, weights
    )
    return Sample(
        crop,
        target,
        target_weight,
        np.asarray(center, np.float32),
        np.asarray(scale, np.float32),
        rotation,
        flip,
    )
