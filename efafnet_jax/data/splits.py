"""Reading a split (train or val) of the dataset that `config.data` describes."""

from __future__ import annotations

import os

import ml_collections

from efafnet_jax.data.coco_format import read_coco_keypoints, read_detections
from efafnet_jax.data.keypoints import KeypointSpec, spec_from_config
from efafnet_jax.data.mpii import read_mpii
from efafnet_jax.data.records import BadRecordError, PersonRecord, ReadSummary
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


def check_split_paths(data: ml_collections.ConfigDict, split: str) -> None:
    """Raises BadRecordError naming the config key of a path of `split` that is missing
    or of the wrong kind; callers check before training starts, not at its end."""
    expected = {f"{split}_ann": "file", f"{split}_images": "directory"}
    if split == "val":
        expected["val_detections"] = "file"
        if data.dataset == "mpii":
            expected["mpii_headboxes"] = "file"
    for key, kind in expected.items():
        path = data.get(key) or ""
        if not path and key == "val_detections":
            continue  # optional: GT boxes
        if not os.path.exists(path):
            hint = " (a custom dataset sets or clears it: README, Datasets)" if path else ""
            raise BadRecordError(f"data.{key}={path!r}: no such {kind}{hint}")
        if kind == "file" and os.path.isdir(path):
            raise BadRecordError(f"data.{key}={path!r} is a directory, not a file")
        if kind == "directory" and not os.path.isdir(path):
            raise BadRecordError(f"data.{key}={path!r} is a file, not a directory")


def read_split(
    data: ml_collections.ConfigDict, split: str
) -> tuple[list[PersonRecord], ReadSummary, KeypointSpec]:
    """Records of `split` ('train' or 'val'); val uses `data.val_detections` when set.

    No record at all (an empty file, no person, no detection above the threshold)
    is an error that names the file and the reason.
    """
    if split not in ("train", "val"):
        raise ValueError(f"split must be 'train' or 'val', got {split!r}")
    check_split_paths(data, split)
    records, summary, spec = _read(data, split)
    if not records:
        what = "detections" if split == "val" and data.get("val_detections") else "persons"
        if not summary.filtered and not summary.skipped:
            raise BadRecordError(f"no {what} in {summary.source}")
        raise BadRecordError(f"no usable {what} in {summary.line()}")
    return records, summary, spec


def _read(
    data: ml_collections.ConfigDict, split: str
) -> tuple[list[PersonRecord], ReadSummary, KeypointSpec]:
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
