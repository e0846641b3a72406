"""Poses on your own images: a skeleton PNG and a JSON per image.

    python -m efafnet_jax.inference.predict --config coco:efafnet,r50,256x192 \
        (--workdir W | --checkpoint DIR | --torch-checkpoint FILE) --images PATH[,PATH...] \
        (--boxes FILE [--ann FILE] | --whole-image) --out DIR [--heatmaps] [--noflip_test]

Boxes: `{"file.jpg": [[x, y, w, h, score], ...]}` (used as given), or COCO detections
(`[{image_id, bbox, score}]`) with `--ann` naming the COCO file that maps image ids to
file names, read by eval.py's reader (`data.det_score_threshold`,
`data.det_box_extension`): the same detections give eval.py's keypoints. Writes
DIR/<stem>.png (skeletons, a colour per limb) and DIR/<stem>.json (per person: box,
keypoints [[x, y, score], ...] in image pixels, score); --heatmaps adds
DIR/<stem>_heatmaps.png.

Bad input (`--on_bad_record`): an unreadable image, a malformed or non-finite box and
(detections) an image of another size than the annotation file says are skipped with a
warning naming the file (and the box and field) and counted in the summary line (and the
--json line) under `skip`, the default, so that one bad file does not lose a folder's
results; under `raise` the first one stops the command with that message (exit status 2).
Under both, a box of no area or wholly outside its image (as eval.py's reader), a
boxes-file key that matches no image and an image without boxes are warned about and
counted.
"""

from __future__ import annotations

import json
import logging

import cv2
import ml_collections
import numpy as np
from absl import flags
from etils import epath

from efafnet_jax.cli import define_common_flags, define_weight_flags, run, weights_from_flags
from efafnet_jax.data.images import read_image
from efafnet_jax.data.keypoints import KeypointSpec, spec_from_config
from efafnet_jax.data.records import BAD_RECORD_POLICIES, BadRecordError, PersonRecord
from efafnet_jax.inference.boxes import (
    LabelledRecord,
    box_record,
    list_images,
    match_images,
    read_boxes_file,
    read_coco_detections,
    usable_boxes,
    whole_image_box,
)
from efafnet_jax.inference.predictor import PersonPoses, PosePredictor
from efafnet_jax.models import create_model
from efafnet_jax.platform import for_this_machine
from efafnet_jax.viz import draw_pose, heatmap_panel, write_png
from efafnet_jax.weights import load_variables

BOX_COLOR = (200, 200, 200)  # BGR


def write_outputs(
    out_dir: str,
    image_path: str,
    image_rgb: np.ndarray,
    poses: PersonPoses,
    spec: KeypointSpec,
    threshold: float,
    with_heatmaps: bool,
) -> dict:
    """Writes <stem>.png, <stem>.json (and <stem>_heatmaps.png); returns the JSON object."""
    stem = epath.Path(image_path).stem
    picture = cv2.cvtColor(image_rgb, cv2.COLOR_RGB2BGR)
    people = []
    for box, keypoints, score in zip(poses.boxes, poses.keypoints, poses.scores, strict=True):
        x, y, w, h = (int(round(v)) for v in box[:4])
        cv2.rectangle(picture, (x, y), (x + w, y + h), BOX_COLOR, 1)
        draw_pose(picture, keypoints, spec.skeleton, threshold=threshold)
        people.append(
            {
                "box": [round(float(v), 2) for v in box[:4]],
                "box_score": round(float(box[4]), 5),
                # 3 decimals, as evaluation's results file.
                "keypoints": [
                    [round(float(v), 3) for v in k[:2]] + [round(float(k[2]), 5)] for k in keypoints
                ],
                "score": round(float(score), 5),
            }
        )
    result = {
        "image": image_path,
        "width": int(image_rgb.shape[1]),
        "height": int(image_rgb.shape[0]),
        "keypoint_names": list(spec.names),
        "people": people,
    }
    out = epath.Path(out_dir)
    write_png(out / f"{stem}.png", picture)
    (out / f"{stem}.json").write_text(json.dumps(result, indent=1))
    if with_heatmaps and len(poses.boxes):
        panel = heatmap_panel(poses.crops, poses.heatmaps, spec.names)
        write_png(out / f"{stem}_heatmaps.png", panel)
    return result


def boxes_by_image(
    boxes_file: str,
    ann_file: str | None,
    data: ml_collections.ConfigDict,
    images: list[str],
    counts: dict[str, int],
    on_bad_record: str,
) -> dict[str, list[LabelledRecord]]:
    """Each image's boxes from `--boxes` (with `--ann`: COCO detections, read as eval.py
    reads them). A bad box stops the command (`on_bad_record="raise"`) or is skipped;
    skipped boxes, keys that match no image and images without boxes are each warned
    about (naming the file, the box and the field) and counted in `counts`."""
    if ann_file:
        table, summary = read_coco_detections(boxes_file, ann_file, data, on_bad_record)
    else:
        height, width = data.crop_hw
        num_joints = spec_from_config(data).num_joints
        table, summary = read_boxes_file(boxes_file, width / height, num_joints, on_bad_record)
    for message in summary.skipped:
        logging.warning("%s; skipped", message)
    counts["bad_boxes"] = len(summary.skipped)
    # eval.py's reader drops, with a warning, detections of no area or outside the image.
    counts["degenerate_boxes"] = summary.filtered["degenerate boxes (warned)"]
    boxes_of, unmatched = match_images(table, images)
    for key in unmatched:
        logging.warning(
            "%s: %r matches no image of --images (by path or file name); boxes not used: %d",
            boxes_file,
            key,
            len(table[key]),
        )
    counts["unmatched_keys"] = len(unmatched)
    for path in images:
        if not boxes_of[path]:
            logging.warning("image %s: no boxes for it in %s; no people", path, boxes_file)
            counts["images_without_boxes"] += 1
    return boxes_of


def size_problem(records: list[PersonRecord], image: np.ndarray, path: str) -> str | None:
    """Why the image's detections do not fit it, if the annotation file gives it another
    size (as evaluation checks: boxes in another pixel grid would give wrong keypoints
    silently); None when they fit."""
    sizes = {tuple(r.image_hw) for r in records if r.image_hw is not None}
    if sizes <= {tuple(image.shape[:2])}:
        return None
    height, width = next(iter(sizes))
    return (
        f"image file {path} is {image.shape[1]}x{image.shape[0]} pixels, but the annotation "
        f"file's images[].width/height say {width}x{height}: its detections do not fit it"
    )


def main(argv):
    del argv
    f = flags.FLAGS
    choice = weights_from_flags()  # bad flags are refused before a backend starts
    config = for_this_machine(f.config)
    if bool(f.boxes) == f.whole_image:
        raise SystemExit("predict: give exactly one of --boxes FILE and --whole-image")
    if f.ann and not f.boxes:
        raise SystemExit("predict: --ann goes with --boxes (a COCO detections file)")
    images = list_images(f.images)
    if not images:
        raise SystemExit(f"predict: no images in {f.images}")
    policy = f.on_bad_record
    counts = dict.fromkeys(
        ("wrong_size", "bad_boxes", "degenerate_boxes", "unmatched_keys", "images_without_boxes"),
        0,
    )
    boxes_of = {}
    if f.boxes:
        boxes_of = boxes_by_image(f.boxes, f.ann, config.data, images, counts, policy)
    model = create_model(config.model)
    weights = load_variables(model, config, choice)
    spec = spec_from_config(config.data)
    predictor = PosePredictor(
        model, weights.variables, config, spec, f.flip_test, f.batch_size, f.clip_to_box
    )
    height, width = config.data.crop_hw
    epath.Path(f.out).mkdir(parents=True, exist_ok=True)
    written, people, failed = 0, 0, 0
    for path in images:
        try:
            image = read_image(path, image_id=-1)
        except BadRecordError as err:
            if policy == "raise":
                raise
            logging.warning("%s; skipped", err)
            failed += 1
            continue
        if f.whole_image:
            box = whole_image_box(image.shape)
            boxes = [("--whole_image box", box_record(path, box, width / height, spec.num_joints))]
        else:
            boxes = boxes_of[path]
        problem = size_problem([record for _, record in boxes], image, path)
        if problem and policy == "raise":
            raise BadRecordError(problem)
        if problem:
            logging.warning("%s; skipped", problem)
            counts["wrong_size"] += 1
            continue
        kept = usable_boxes(boxes, image.shape, path)
        counts["degenerate_boxes"] += len(boxes) - len(kept)
        poses = predictor.on_records(image, kept)
        write_outputs(f.out, path, image, poses, spec, f.threshold, f.heatmaps)
        written += 1
        people += len(poses.boxes)
    summary = {
        "images": written,
        "people": people,
        "unreadable": failed,
        **counts,
        "out": f.out,
        "checkpoint": weights.source,
        "step": weights.step,
    }
    print(
        f"predict: {people} people on {written} images -> {f.out} ({failed} unreadable and "
        f"{counts['wrong_size']} wrong-size images, {counts['bad_boxes']} bad and "
        f"{counts['degenerate_boxes']} degenerate boxes skipped, {counts['unmatched_keys']} "
        f"unmatched keys, {counts['images_without_boxes']} images without boxes)"
    )
    if f.json:
        print(json.dumps(summary))


def cli() -> None:
    """The efafnet-predict console script."""
    define_common_flags()
    define_weight_flags()
    flags.DEFINE_list("images", None, "Image files and/or folders, comma-separated.")
    flags.DEFINE_string(
        "boxes",
        None,
        "Boxes: {file: [[x, y, w, h, score], ...]} (used as given) or, with --ann, COCO "
        "detections (data.det_score_threshold and data.det_box_extension apply, as in eval.py).",
    )
    flags.DEFINE_string(
        "ann", None, "With COCO detections: the COCO file mapping ids to file names."
    )
    flags.DEFINE_bool("whole_image", False, "Treat each whole image as one person box.")
    flags.DEFINE_string("out", None, "Output folder or gs:// URL.")
    flags.DEFINE_float("threshold", 0.2, "Keypoint score below which a joint is not drawn.")
    flags.DEFINE_bool("heatmaps", False, "Also write <stem>_heatmaps.png.")
    flags.DEFINE_bool("flip_test", True, "Average with the mirrored crop's heatmaps.")
    flags.DEFINE_bool(
        "clip_to_box",
        False,
        "Clip keypoints to their box. Off: evaluation and the reference do not clip, and "
        "clipping moves the joints the model places in the crop's margin.",
    )
    flags.DEFINE_integer("batch_size", 32, "Crops per jitted call.")
    flags.DEFINE_enum(
        "on_bad_record",
        "skip",
        BAD_RECORD_POLICIES,
        "An unreadable image, a bad box, an image of the wrong size: 'skip' warns, counts "
        "and goes on (one bad file does not lose a folder's results); 'raise' stops at the "
        "first with its message.",
    )
    flags.mark_flags_as_required(["images", "out"])
    run(main, config_from_workdir=True)


if __name__ == "__main__":
    cli()
