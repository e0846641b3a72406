"""Reading a split (train or val) of the dataset that `config.data` describes."""

from __future__ import annotations

import ml_collections

from efafnet_jax.data.coco_format import read_coco_keypoints, read_detections
from efafnet_jax.data.keypoints import KeypointSpec, spec_from_config
from efafnet_jax.data.mpii import read_mpii
from efafnet_jax.data.records import PersonRecord, ReadSummary
from efafnet_jax.data.sample import SampleConfig
from efafnet_jax.data.transforms import AugmentConfig


def sample_config(data: ml_collections.ConfigDict) -> SampleConfig:
    """Crop/target geometry and augmentation from `config.data`."""
    return SampleConfig(
        crop_hw=tuple(data.crop_hw),
        heatmap_hw=tuple(data.heatmap_hw),
        sigma=data.sigma,
        use_joint_weights=data.use_joint_weights,
        augment=AugmentConfig(**data.augment.to_dict()),
        device_buffer_hw=tuple(data.device_buffer_hw) if data.get("device_augment") else None,
    )


def read_split(
    data: ml_collections.ConfigDict, split: str
) -> tuple[list[PersonRecord], ReadSummary, KeypointSpec]:
    """Records of `split` ('train' or 'val'); val uses `data.val_detections` when set."""
    if split not in ("train", "val"):
        raise ValueError(f"split must be 'train' or 'val', got {split!r}")
    spec = spec_from_config(data)
    ann, images = data[f"{split}_ann"], data[f"{split}_images"]
    policy = dict(on_bad_record=data.on_bad_record, check_images=data.check_images)
    if data.dataset == "mpii":
        records, summary = read_mpii(ann, images, spec, **policy)
        return records, summary, spec
    height, width = data.crop_hw
    aspect = width / height
    if split == "val" and data.val_detections:
        records, summary = read_detections(
            data.val_detections,
            ann,
            images,
            spec,
            aspect,
            data.det_score_threshold,
            data.det_box_extension,
            **policy,
        )
    else:
        records, summary = read_coco_keypoints(ann, images, spec, aspect, **policy)
    return records, summary, spec
