"""COCO-format keypoint annotations (COCO, CrowdPose) and person-detection files.

GT persons follow HRNet lib/dataset/coco.py `_load_coco_keypoint_annotation_kernal`:
crowd annotations dropped, boxes cleaned (x1 = max(0, x), x2 = min(W - 1, x1 +
max(0, w - 1)), kept if area > 0 and the box is non-empty), persons without any
labelled keypoint dropped, visibility > 1 set to 1, centre/scale from the clean
box. Detections follow `_load_coco_person_detection_results`.
"""

from __future__ import annotations

import dataclasses
import logging

import numpy as np
from etils import epath

from efafnet_jax.data.json_files import (
    describe,
    finite_number,
    finite_numbers,
    integer,
    is_integer,
    load_json,
    text,
)
from efafnet_jax.data.keypoints import KeypointSpec
from efafnet_jax.data.records import (
    BadRecordError,
    BadRecordHandler,
    PersonRecord,
    ReadSummary,
    drop_missing_images,
)
from efafnet_jax.data.transforms import box_to_center_scale, extend_box


@dataclasses.dataclass
class GroundTruth:
    """The entries of a COCO-format file that passed the field checks.

    images: {image id: entry} in the file's order (a repeated id keeps its first entry).
    category: the id of the category with keypoints. annotations: (position in the file's
    list, annotation), in the file's order.
    """

    images: dict[int, dict]
    category: int
    annotations: list[tuple[int, dict]]


def person_category_id(data: dict, path: str) -> int:
    """The id of the category that carries keypoints (COCO's person: 1). The file cannot
    be read without it, whatever the bad-record policy."""
    categories = data.get("categories") or []
    if not isinstance(categories, list):
        raise BadRecordError(f"annotation file {path}: field 'categories' is not a list")
    for i, category in enumerate(categories):
        if isinstance(category, dict) and category.get("keypoints"):
            where = f"annotation file {path}: categories[{i}]"
            names = category["keypoints"]
            if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
                raise BadRecordError(f"{where}: field 'keypoints' is not a list of joint names")
            return integer(category, "id", where)
    raise BadRecordError(f"annotation file {path}: no category with a 'keypoints' list")


def image_table(data: dict, path: str, handler: BadRecordHandler) -> dict[int, dict]:
    """{image id: image entry} of the entries whose fields have their types, in the file's
    order. A bad or repeated entry is a bad record: its position goes to the summary's
    `skipped_images` and the first entry with that id stands."""
    if not isinstance(data, dict) or not isinstance(data.get("images"), list):
        raise BadRecordError(f"annotation file {path}: top-level field 'images' is missing")
    table: dict[int, dict] = {}
    position_of: dict[int, int] = {}
    for i, image in enumerate(data["images"]):
        where = f"{path}: images[{i}]"
        try:
            if not isinstance(image, dict):
                raise BadRecordError(f"{where} is {describe(image)}, not an object")
            image_id = integer(image, "id", where)
            where += f" (id {image_id})"
            text(image, "file_name", where)
            for field in OPTIONAL_IMAGE_NUMBERS:
                if field in image:
                    finite_number(image, field, where)
            _check_unique(image_id, position_of, where, "images")
        except BadRecordError as err:
            handler.bad(str(err))
            handler.summary.skipped_images.append(i)
            continue
        table[image_id] = image
        position_of[image_id] = i
    return table


def _check_unique(entry_id: int, position_of: dict[int, int], where: str, listed: str) -> None:
    """Raises BadRecordError when an accepted entry of the list `listed` has `entry_id`."""
    if entry_id in position_of:
        raise BadRecordError(
            f"{where}: field 'id' repeats the id of {listed}[{position_of[entry_id]}]"
        )


# Image fields that readers and metrics use when present: the size (boxes are clipped to
# it, crops checked against it) and CrowdPose's crowd index (AP easy/medium/hard).
OPTIONAL_IMAGE_NUMBERS = ("width", "height", "crowdIndex")
# Annotation fields that readers, builders and the metrics use when present.
OPTIONAL_ANNOTATION_INTEGERS = ("category_id", "num_keypoints")


def fields_the_metric_reads(dataset: str) -> tuple[str, ...]:
    """Annotation fields that `dataset`'s metric reads for every person, beyond what the
    readers need: xtcocotools' keypoints_crowd ignores persons by 'num_keypoints' (KeyError
    without it); pycocotools' COCOeval.evaluateImg sorts persons into area ranges by 'area'."""
    return ("num_keypoints",) if dataset == "crowdpose" else ("area",)


def read_ground_truth(
    data: dict,
    path: str,
    spec: KeypointSpec,
    handler: BadRecordHandler,
    metric_fields: tuple[str, ...] = (),
) -> GroundTruth:
    """The images, person category and annotations of a COCO-format file's content whose
    fields have the types the readers and the metric use (numbers that are numbers, ids
    that are integers and unique); `metric_fields` must be present in every annotation
    (`fields_the_metric_reads`). Each bad entry goes through `handler`; the positions
    skipped are in its summary (`skipped_images`, `skipped_annotations`)."""
    images = image_table(data, path, handler)
    category = person_category_id(data, path)
    annotations = data.get("annotations") or []
    if not isinstance(annotations, list):
        raise BadRecordError(f"annotation file {path}: field 'annotations' is not a list")
    skipped_image_ids = {
        image["id"]
        for i, image in enumerate(data["images"])
        if i in handler.summary.skipped_images and isinstance(image, dict)
    }
    accepted: list[tuple[int, dict]] = []
    position_of: dict[int, int] = {}
    for i, ann in enumerate(annotations):
        where = f"{path}: {_annotation_label(i, ann)}"
        try:
            _check_annotation(ann, where, images, skipped_image_ids, category, spec)
            for field in metric_fields:
                if field not in ann:
                    raise BadRecordError(
                        f"{where}: field '{field}' is missing, which the metric reads "
                        "for every person"
                    )
            _check_unique(ann["id"], position_of, where, "annotations")
        except BadRecordError as err:
            handler.bad(str(err))
            handler.summary.skipped_annotations.append(i)
            continue
        position_of[ann["id"]] = i
        accepted.append((i, ann))
    return GroundTruth(images, category, accepted)


def _annotation_label(position: int, ann) -> str:
    """'annotation id N (image id M)' when the ids are integers, else its place in the list."""
    if not isinstance(ann, dict):
        return f"annotations[{position}]"
    label = (
        f"annotation id {ann['id']}" if is_integer(ann.get("id")) else f"annotations[{position}]"
    )
    return label + (f" (image id {ann['image_id']})" if is_integer(ann.get("image_id")) else "")


def _check_annotation(
    ann, where: str, images: dict, skipped_image_ids: set, category: int, spec: KeypointSpec
) -> None:
    """Raises BadRecordError for the first field of `ann` that the readers or the metric
    would misread: pycocotools reads 'id', 'image_id', 'bbox', 'keypoints', 'area' and
    'iscrowd' of every annotation of a scored category."""
    if not isinstance(ann, dict):
        raise BadRecordError(f"{where} is {describe(ann)}, not an object")
    integer(ann, "id", where)
    image_id = integer(ann, "image_id", where)
    if image_id not in images:
        why = "an image entry skipped as bad" if image_id in skipped_image_ids else "no image"
        raise BadRecordError(f"{where}: field 'image_id' {image_id} names {why} in the file")
    for field in OPTIONAL_ANNOTATION_INTEGERS:
        if field in ann:
            integer(ann, field, where)
    if "iscrowd" in ann and integer(ann, "iscrowd", where) not in (0, 1):
        raise BadRecordError(f"{where}: field 'iscrowd' is {ann['iscrowd']}, expected 0 or 1")
    if "area" in ann:
        finite_number(ann, "area", where)
    finite_numbers(ann, "bbox", 4, where)
    # Crowd regions and other categories may carry no keypoints: no reader or metric
    # uses them.
    if "keypoints" in ann or (
        ann.get("category_id", category) == category and not ann.get("iscrowd", 0)
    ):
        finite_numbers(ann, "keypoints", spec.num_joints * 3, where)


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
            where = f"{ann_file}: {_annotation_label(position, ann)}"
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
