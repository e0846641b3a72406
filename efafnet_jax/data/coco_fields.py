"""Field checks of COCO-format content: every field that the readers, the TFDS builders
and the metrics use has its JSON type (numbers that are numbers, ids that are integers)
and ids are unique. A bad entry goes through the reader's bad-record policy."""

from __future__ import annotations

import dataclasses

from efafnet_jax.data.json_files import (
    describe,
    finite_number,
    finite_numbers,
    integer,
    is_integer,
    text,
)
from efafnet_jax.data.keypoints import KeypointSpec
from efafnet_jax.data.records import BadRecordError, BadRecordHandler


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
        data["images"][i].get("id")
        for i in handler.summary.skipped_images
        if isinstance(data["images"][i], dict)
    }
    accepted: list[tuple[int, dict]] = []
    position_of: dict[int, int] = {}
    for i, ann in enumerate(annotations):
        where = f"{path}: {annotation_label(i, ann)}"
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


def annotation_label(position: int, ann) -> str:
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
