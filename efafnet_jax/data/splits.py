"""Reading a split (train or val) of the dataset that `config.data` describes."""

from __future__ import annotations

import ml_collections
from etils import epath

from efafnet_jax.data.coco_fields import fields_the_metric_reads
from efafnet_jax.data.coco_format import read_coco_keypoints, read_detections
from efafnet_jax.data.codec import target_encoding_for
from efafnet_jax.data.image_store import image_store
from efafnet_jax.data.keypoints import KNOWN_SPECS, KeypointSpec, spec_from_config
from efafnet_jax.data.mpii import read_mpii
from efafnet_jax.data.records import BadRecordError, PersonRecord, ReadSummary
from efafnet_jax.data.sample import SampleConfig
from efafnet_jax.data.transforms import AugmentConfig

SOURCES = ("files", "tfds")
# data.val_detections with data.source="tfds": the detections stored with the split.
STORED_DETECTIONS = "tfds"


def sample_config(data: ml_collections.ConfigDict) -> SampleConfig:
    """Crop/target geometry and augmentation from `config.data`."""
    return SampleConfig(
        crop_hw=tuple(data.crop_hw),
        heatmap_hw=tuple(data.heatmap_hw),
        sigma=data.sigma,
        use_joint_weights=data.use_joint_weights,
        augment=AugmentConfig(**data.augment.to_dict()),
        device_buffer_hw=tuple(data.device_buffer_hw) if data.get("device_augment") else None,
        target_encoding=target_encoding_for(data.target_encoding, data.udp),
        udp=data.udp,
    )


def _source(data: ml_collections.ConfigDict) -> str:
    source = data.get("source", "files")
    if source not in SOURCES:
        raise ValueError(f"data.source must be one of {SOURCES}, got {source!r}")
    if source == "tfds" and data.dataset not in KNOWN_SPECS:
        raise ValueError(
            f"data.source='tfds' reads the builders of {sorted(KNOWN_SPECS)}; "
            f"data.dataset={data.dataset!r} reads its files (data.source='files')"
        )
    return source


def tfds_split(data: ml_collections.ConfigDict, split: str):
    """The built TFDS split that `data` names (data.source='tfds')."""
    from efafnet_jax.data.tfds.source import load_split

    return load_split(data.tfds_name, data.tfds_data_dir, split)


def has_split(data: ml_collections.ConfigDict, split: str) -> bool:
    """Whether `data` describes `split`: its annotation file is set (files), or the built
    dataset has it (tfds)."""
    if _source(data) == "files":
        return bool(data.get(f"{split}_ann"))
    from efafnet_jax.data.tfds.source import prepared_builder

    return split in prepared_builder(data.tfds_name, data.tfds_data_dir).info.splits


def split_images(data: ml_collections.ConfigDict, split: str):
    """Where the images of `split` are read from: a TFDS split, a pack folder or files."""
    if _source(data) == "tfds":
        from efafnet_jax.data.tfds.source import TfdsImages

        return TfdsImages(tfds_split(data, split))
    return image_store(data[f"{split}_images"])


def split_annotations(
    data: ml_collections.ConfigDict, split: str
) -> tuple[str, dict | list | None]:
    """(the annotation file's name, its content when it comes from a TFDS split, else
    None: the readers load the file)."""
    if _source(data) == "tfds":
        built = tfds_split(data, split)
        return built.label, built.content
    return data[f"{split}_ann"], None


def check_split_paths(data: ml_collections.ConfigDict, split: str) -> None:
    """Raises BadRecordError naming the config key of a path of `split` that is missing
    or of the wrong kind (with data.source='tfds': the dataset, its split and the
    stored detections); callers check before training starts, not at its end."""
    expected = {f"{split}_ann": "file", f"{split}_images": "directory"}
    if _source(data) == "tfds":
        expected = {}
        built = tfds_split(data, split)
        if split == "val" and data.get("val_detections") == STORED_DETECTIONS:
            if not built.detections:
                raise BadRecordError(
                    f"data.val_detections={STORED_DETECTIONS!r}: {built.label} stores no "
                    "detections (build it with --detections FILE)"
                )
        elif split == "val" and data.get("val_detections"):
            expected["val_detections"] = "file"
        if split == "val" and data.dataset == "mpii" and built.pckh is None:
            raise BadRecordError(
                f"{built.label} has no head boxes for PCKh: build it with annot/gt_valid.mat "
                "in --manual_dir"
            )
    elif split == "val":
        expected["val_detections"] = "file"
        if data.dataset == "mpii":
            expected["mpii_headboxes"] = "file"
    for key, kind in expected.items():
        path = data.get(key) or ""
        if not path and key == "val_detections":
            continue  # optional: GT boxes
        # A path may be a URL (gs://...); epath.Path('') would be the current folder.
        if not path or not epath.Path(path).exists():
            hint = " (a custom dataset sets or clears it: docs/data.md)" if path else ""
            raise BadRecordError(f"data.{key}={path!r}: no such {kind}{hint}")
        is_dir = epath.Path(path).is_dir()
        if kind == "file" and is_dir:
            raise BadRecordError(f"data.{key}={path!r} is a directory, not a file")
        if kind == "directory" and not is_dir:
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
    ann, content = split_annotations(data, split)
    policy = dict(on_bad_record=data.on_bad_record, check_images=data.check_images)
    images, detections, det_content = data[f"{split}_images"], data.get("val_detections"), None
    entry_positions = None
    if _source(data) == "tfds":
        built = tfds_split(data, split)
        # A build stores only images that exist.
        images, policy["check_images"] = built.image_dir, False
        entry_positions = built.entry_positions
        if detections == STORED_DETECTIONS:
            detections, det_content = f"{built.label} detections", built.detections
    if data.dataset == "mpii":
        records, summary = read_mpii(
            ann, images, spec, **policy, content=content, entry_positions=entry_positions
        )
        return records, summary, spec
    height, width = data.crop_hw
    aspect = width / height
    if split == "val" and detections:
        records, summary = read_detections(
            detections,
            ann,
            images,
            spec,
            aspect,
            data.det_score_threshold,
            data.det_box_extension,
            **policy,
            det_content=det_content,
            gt_content=content,
        )
    else:
        # The val split is read for evaluation: its metric's fields are checked here too.
        metric_fields = fields_the_metric_reads(data.dataset) if split == "val" else ()
        records, summary = read_coco_keypoints(
            ann, images, spec, aspect, **policy, content=content, metric_fields=metric_fields
        )
    return records, summary, spec
