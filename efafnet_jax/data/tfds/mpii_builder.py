"""TFDS builder for MPII (`efafnet_jax.data.tfds.builders`)."""

from __future__ import annotations

import numpy as np
import tensorflow_datasets as tfds
from etils import epath

from efafnet_jax.data.json_files import load_json
from efafnet_jax.data.keypoints import MPII
from efafnet_jax.data.mpii import read_gt_valid, read_mpii
from efafnet_jax.data.records import BadRecordError, BadRecordHandler, ReadSummary
from efafnet_jax.data.tfds.base import (
    Example,
    PoseBuilder,
    existing_files,
    float_column,
    int_column,
    missing_image_check,
)


class Mpii(PoseBuilder):
    """MPII in HRNet's JSON (annot/{train,valid}.json) with gt_valid.mat's head boxes."""

    spec = MPII
    homepage = "http://human-pose.mpi-inf.mpg.de/"
    MANUAL_DOWNLOAD_INSTRUCTIONS = """
    manual_dir/annot/{train,valid}.json (HRNet's MPII JSON), manual_dir/images/*.jpg
    and, for PCKh on the val split, manual_dir/annot/gt_valid.mat."""

    def feature_spec(self) -> dict:
        k = self.spec.num_joints
        return {
            "image": tfds.features.Image(encoding_format="jpeg"),
            "file_name": tfds.features.Text(),
            "image_id": np.int64,
            "persons": {
                "file_position": int_column(),
                "center": float_column(2),
                "scale": float_column(),
                "joints": float_column(k, 2),
                "joints_vis": float_column(k),
                # gt_valid.mat's columns for the val split (NaN / False in train).
                "head_box": float_column(2, 2),
                "pckh_joints": float_column(k, 2),
                "pckh_joint_missing": tfds.features.Tensor(shape=(None, k), dtype=np.bool_),
            },
        }

    def split_files(self, manual_dir: str) -> dict[str, dict[str, str]]:
        manual = epath.Path(manual_dir)
        found = {}
        for split, name in (("train", "train"), ("val", "valid")):
            files = existing_files(
                {
                    "annotations": str(manual / "annot" / f"{name}.json"),
                    "images": str(manual / "images"),
                }
            )
            if files:
                found[split] = files
        head_boxes = manual / "annot" / "gt_valid.mat"
        if "val" in found and head_boxes.is_file():
            found["val"]["head_boxes"] = str(head_boxes)
        return found

    def split_examples(self, files: dict[str, str]) -> tuple[list[Example], ReadSummary]:
        ann_file, image_dir = files["annotations"], files["images"]
        entries = load_json(ann_file)
        _, summary = read_mpii(ann_file, image_dir, self.spec, self.on_bad_record, content=entries)
        handler = BadRecordHandler(self.on_bad_record, summary)
        head = _gt_valid_columns(files.get("head_boxes"), len(entries), self.spec.num_joints)
        skipped = set(summary.skipped_annotations)
        by_image: dict[str, list[int]] = {}
        for position, entry in enumerate(entries):
            if position not in skipped:
                by_image.setdefault(entry["image"], []).append(position)
        images = epath.Path(image_dir)
        # Image ids number the images in order of first appearance, as read_mpii's.
        paths = [(str(images / name), i) for i, name in enumerate(by_image)]
        missing = missing_image_check(paths, handler)
        examples = []
        for image_id, (name, positions) in enumerate(by_image.items()):
            path = str(images / name)
            if path in missing:
                continue
            chosen = [entries[p] for p in positions]
            examples.append(
                {
                    "image": path,
                    "file_name": name,
                    "image_id": image_id,
                    "persons": {
                        "file_position": np.asarray(positions, np.int64),
                        "center": np.asarray([e["center"] for e in chosen], np.float64),
                        "scale": np.asarray([e["scale"] for e in chosen], np.float64),
                        "joints": np.asarray([e["joints"] for e in chosen], np.float64),
                        "joints_vis": np.asarray([e["joints_vis"] for e in chosen], np.float64),
                        **{key: value[positions] for key, value in head.items()},
                    },
                }
            )
        summary.kept = sum(len(e["persons"]["scale"]) for e in examples)
        return examples, summary


def _gt_valid_columns(mat_file: str | None, count: int, num_joints: int) -> dict[str, np.ndarray]:
    """gt_valid.mat's per-person arrays (NaN / False without the file)."""
    if not mat_file:
        return {
            "head_box": np.full((count, 2, 2), np.nan),
            "pckh_joints": np.full((count, num_joints, 2), np.nan),
            "pckh_joint_missing": np.zeros((count, num_joints), bool),
        }
    mat = read_gt_valid(mat_file)
    if len(mat["headboxes"]) != count:
        raise BadRecordError(
            f"{mat_file} has {len(mat['headboxes'])} persons, the val JSON has {count}"
        )
    return {
        "head_box": mat["headboxes"],
        "pckh_joints": mat["joints"],
        "pckh_joint_missing": mat["joint_missing"],
    }
