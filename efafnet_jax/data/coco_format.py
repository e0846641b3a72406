"""COCO-format keypoint annotations (COCO, CrowdPose) and person-detection files.

GT persons follow HRNet lib/dataset/coco.py `_load_coco_keypoint_annotation_kernal`:
crowd annotations dropped, boxes cleaned (x1 = max(0, x), x2 = min(W - 1, x1 +
max(0, w - 1)), kept if area > 0 and the box is non-empty), persons without any
labelled keypoint dropped, visibility > 1 set to 1, centre/scale from the clean
box. Detections follow `_load_coco_person_detection_results`.
"""

from __future__ import annotations

import logging

import numpy as np
from etils import epath

from efafnet_jax.data.coco_fields import (
    annotation_label,
    image_table,
    person_category_id,
    read_ground_truth,
)
from efafnet_jax.data.json_files import finite_number, finite_numbers, integer, load_json
from efafnet_jax.data.keypoints import KeypointSpec
from efafnet_jax.data.records import (
    BadRecordError,
    BadRecordHandler,
    PersonRecord,
    ReadSummary,
    drop_missing_images,
)
from efafnet_jax.data.transforms import box_to_center_scale, extend_box


def _clean_box(box: list[float], width: float, height: float) -> list[float] | None:
    x, y, w, h = box
    x1, y1 = max(0.0, x), max(0.0, y)
    x2 = min(width - 1, x1 + max(0.0, w - 1))
    y2 = min(height - 1, y1 + max(0.0, h - 1))
    if x2 >= x1 and y2 >= y1:
        return [x1, y1, x2 - x1, y2 - y1]
    return None


def read_coco_keypoints(
    ann_file: str,
    image_dir: str,
    spec: KeypointSpec,
    aspect_ratio: float,
    on_bad_record: str = "raise",
    check_images: bool = True,
    content: dict | None = None,
    metric_fields: tuple[str, ...] = (),
) -> tuple[list[PersonRecord], ReadSummary]:
    """GT person records of a COCO-format keypoint file, in the reference's order.

    `content`: the file's parsed JSON when it comes from elsewhere (a TFDS split);
    `ann_file` then only names it in messages. `metric_fields`: annotation fields the
    metric will read (a split read for evaluation; `fields_the_metric_reads`).
    """
    summary = ReadSummary(source=ann_file)
    handler = BadRecordHandler(on_bad_record, summary)
    data = load_json(ann_file) if content is None else content
    gt = read_ground_truth(data, ann_file, spec, handler, metric_fields)
    by_image: dict[int, list[tuple[int, dict]]] = {image_id: [] for image_id in gt.images}
    for position, ann in gt.annotations:
        by_image[ann["image_id"]].append((position, ann))

    records = []
    folder = epath.Path(image_dir)
    for image_id, anns in by_image.items():
        image = gt.images[image_id]
        path = str(folder / image["file_name"])
        for position, ann in anns:
            where = f"{ann_file}: {annotation_label(position, ann)}"
            try:
                record = _gt_record(
                    ann, image, path, spec, gt.category, aspect_ratio, where, summary
                )
            except BadRecordError as err:
                handler.bad(str(err))
                summary.skipped_annotations.append(position)
                continue
            if record is not None:
                records.append(record)
    if check_images:
        records = drop_missing_images(records, handler)
    summary.kept = len(records)
    return records, handler.finish()


def _get(record, field):
    return record.get(field, "?") if isinstance(record, dict) else "?"


def _gt_record(
    ann: dict,
    image: dict,
    path: str,
    spec: KeypointSpec,
    category: int,
    aspect_ratio: float,
    where: str,
    summary: ReadSummary,
) -> PersonRecord | None:
    if ann.get("iscrowd", 0):
        summary.filtered["crowd annotations"] += 1
        return None
    if ann.get("category_id", category) != category:
        summary.filtered["other categories"] += 1
        return None
    # read_ground_truth has checked the types: these are lists of finite numbers.
    box = [float(v) for v in ann["bbox"]]
    keypoints = [float(v) for v in ann["keypoints"]]
    for field in ("width", "height"):
        if field not in image:
            raise BadRecordError(f"{where}: image entry lacks a numeric '{field}'")
    clean = _clean_box(box, image["width"], image["height"])
    # CrowdPose has no 'area'; its box area stands in for the reference's test.
    area = float(ann["area"]) if "area" in ann else box[2] * box[3]
    if clean is None or area <= 0:
        summary.filtered["empty boxes"] += 1
        return None
    if max(keypoints) == 0:
        summary.filtered["persons without labelled joints"] += 1
        return None
    kpts = np.asarray(keypoints, np.float64).reshape(spec.num_joints, 3)
    center, scale = box_to_center_scale(clean, aspect_ratio)
    return PersonRecord(
        image_path=path,
        image_id=int(image["id"]),
        center=center,
        scale=scale,
        joints=kpts[:, :2].astype(np.float32),
        visibility=np.minimum(kpts[:, 2], 1).astype(np.float32),
        box_score=1.0,
        area=area,
        box=np.asarray(clean, np.float32),
        annotation_id=ann["id"],
        image_hw=(int(image["height"]), int(image["width"])),
    )


def _image_hw(image: dict) -> tuple[int, int] | None:
    """(height, width) of an image entry, None when it gives no numeric size."""
    size = image.get("height"), image.get("width")
    if all(isinstance(v, (int, float)) and v > 0 for v in size):
        return int(size[0]), int(size[1])
    return None


def degenerate_box_problem(box, width: float | None = None, height: float | None = None) -> str:
    """Why a detection box [x, y, w, h] cannot hold a person ('' if it can): no area, or
    (when the image size is known) wholly outside the image."""
    x, y, w, h = (float(v) for v in box)
    if not w > 0 or not h > 0:
        return f"has no area (width {w:g}, height {h:g})"
    if width and height and (x >= width or y >= height or x + w <= 0 or y + h <= 0):
        return f"lies wholly outside the {width:g}x{height:g} image"
    return ""


def read_detections(
    det_file: str,
    ann_file: str,
    image_dir: str,
    spec: KeypointSpec,
    aspect_ratio: float,
    score_threshold: float = 0.0,
    box_extension: float = 0.0,
    on_bad_record: str = "raise",
    check_images: bool = True,
    det_content: list | None = None,
    gt_content: dict | None = None,
) -> tuple[list[PersonRecord], ReadSummary]:
    """Person records from `[{image_id, category_id, bbox, score}]`.

    `ann_file` (the split's COCO file) maps image ids to file names. Boxes scoring
    below `score_threshold` are dropped (HRNet's image_thre, 0.0); `box_extension`
    enlarges each box about its centre (0.3 for CrowdPose, paper IV.C). Joints are
    zeros and visibility ones, as the reference's detection records. `det_content`,
    `gt_content`: the files' parsed JSON when it comes from elsewhere (a TFDS split).
    """
    summary = ReadSummary(source=det_file)
    handler = BadRecordHandler(on_bad_record, summary)
    gt = load_json(ann_file) if gt_content is None else gt_content
    images = image_table(gt, ann_file, handler)
    category = person_category_id(gt, ann_file)
    detections = load_json(det_file) if det_content is None else det_content
    if not isinstance(detections, list):
        raise BadRecordError(f"detections file {det_file} is not a JSON list of detections")
    folder = epath.Path(image_dir)
    records = []
    for i, det in enumerate(detections):
        where = f"{det_file}: detection {i} (image id {_get(det, 'image_id')})"
        try:
            if not isinstance(det, dict):
                raise BadRecordError(f"{where}: not a JSON object")
            if "category_id" in det and integer(det, "category_id", where) != category:
                summary.filtered["other categories"] += 1
                continue
            if integer(det, "image_id", where) not in images:
                raise BadRecordError(f"{where}: field 'image_id' names no image in {ann_file}")
            box = finite_numbers(det, "bbox", 4, where)
            score = finite_number(det, "score", where)
        except BadRecordError as err:
            handler.bad(str(err))
            summary.skipped_annotations.append(i)
            continue
        if score < score_threshold:
            summary.filtered["boxes below the score threshold"] += 1
            continue
        image = images[det["image_id"]]
        problem = degenerate_box_problem(box, image.get("width"), image.get("height"))
        if problem:
            # A crop of such a box is no person: predict skips these too.
            logging.warning("%s: field 'bbox' %s %s; skipped", where, box, problem)
            summary.filtered["degenerate boxes (warned)"] += 1
            continue
        used_box = extend_box(box, box_extension) if box_extension else np.asarray(box)
        center, scale = box_to_center_scale(used_box, aspect_ratio)
        records.append(
            PersonRecord(
                image_path=str(folder / image["file_name"]),
                image_id=int(det["image_id"]),
                center=center,
                scale=scale,
                joints=np.zeros((spec.num_joints, 2), np.float32),
                visibility=np.ones(spec.num_joints, np.float32),
                box_score=score,
                area=float(box[2] * box[3]),
                box=np.asarray(used_box, np.float32),
                image_hw=_image_hw(image),
            )
        )
    if check_images:
        records = drop_missing_images(records, handler)
    summary.kept = len(records)
    return records, handler.finish()
