"""Poses on your own images: a skeleton PNG and a JSON per image.

    python -m efafnet_jax.inference.predict --config configs/coco.py:efafnet,r50,256x192 \
        (--checkpoint DIR | --torch-checkpoint FILE) --images PATH[,PATH...] \
        (--boxes FILE [--ann FILE] | --whole-image) --out DIR [--heatmaps] [--noflip_test]

Boxes: `{"file.jpg": [[x, y, w, h, score], ...]}`, or COCO detections
(`[{image_id, bbox, score}]`) with `--ann` naming the COCO file that maps image
ids to file names. Writes DIR/<stem>.png (skeletons, a colour per limb) and
DIR/<stem>.json (per person: box, keypoints [[x, y, score], ...] in image
pixels, score); --heatmaps adds DIR/<stem>_heatmaps.png.
"""

from __future__ import annotations

import json
import logging
import os

import cv2
import numpy as np
from absl import flags

from efafnet_jax.cli import define_common_flags, run
from efafnet_jax.data.images import read_image
from efafnet_jax.data.keypoints import KeypointSpec, spec_from_config
from efafnet_jax.data.records import BadRecordError
from efafnet_jax.inference.boxes import (
    boxes_for_image,
    list_images,
    read_boxes_file,
    read_coco_detections,
    usable_boxes,
    whole_image_box,
)
from efafnet_jax.inference.predictor import PersonPoses, PosePredictor
from efafnet_jax.models import create_model
from efafnet_jax.platform import for_this_machine
from efafnet_jax.viz import draw_pose, heatmap_panel
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
    stem = os.path.splitext(os.path.basename(image_path))[0]
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
                "keypoints": [
                    [round(float(v), 2) for v in k[:2]] + [round(float(k[2]), 5)] for k in keypoints
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
    cv2.imwrite(os.path.join(out_dir, f"{stem}.png"), picture)
    with open(os.path.join(out_dir, f"{stem}.json"), "w") as f:
        json.dump(result, f, indent=1)
    if with_heatmaps and len(poses.boxes):
        panel = heatmap_panel(poses.crops, poses.heatmaps, spec.names)
        cv2.imwrite(os.path.join(out_dir, f"{stem}_heatmaps.png"), panel)
    return result


def main(argv):
    del argv
    f = flags.FLAGS
    config = for_this_machine(f.config)
    if bool(f.boxes) == f.whole_image:
        raise SystemExit("predict: give exactly one of --boxes FILE and --whole-image")
    if f.ann and not f.boxes:
        raise SystemExit("predict: --ann goes with --boxes (a COCO detections file)")
    table = {}
    if f.boxes:
        table = (
            read_coco_detections(f.boxes, f.ann, config.data.det_score_threshold)
            if f.ann
            else read_boxes_file(f.boxes)
        )
    images = list_images(f.images)
    if not images:
        raise SystemExit(f"predict: no images in {f.images}")
    model = create_model(config.model)
    variables = load_variables(
        model, config, checkpoint=f.checkpoint, torch_checkpoint=f.torch_checkpoint
    )
    spec = spec_from_config(config.data)
    predictor = PosePredictor(
        model, variables, config, spec, f.flip_test, f.batch_size, f.clip_to_box
    )
    os.makedirs(f.out, exist_ok=True)
    written, people, failed = 0, 0, 0
    for path in images:
        try:
            image = read_image(path, image_id=-1)
        except BadRecordError as err:
            logging.warning("%s; skipped", err)
            failed += 1
            continue
        boxes = [whole_image_box(image.shape)] if f.whole_image else boxes_for_image(table, path)
        poses = predictor(image, usable_boxes(boxes, image.shape, path))
        write_outputs(f.out, path, image, poses, spec, f.threshold, f.heatmaps)
        written += 1
        people += len(poses.boxes)
    summary = {"images": written, "people": people, "unreadable": failed, "out": f.out}
    print(f"predict: {people} people on {written} images -> {f.out} ({failed} unreadable)")
    if f.json:
        print(json.dumps(summary))


if __name__ == "__main__":
    define_common_flags()
    flags.DEFINE_string(
        "checkpoint", None, "An orbax checkpoint directory (<workdir>/checkpoints/<step>)."
    )
    flags.DEFINE_string("torch_checkpoint", None, "A PyTorch state_dict (.pth) of the reference.")
    flags.DEFINE_list("images", None, "Image files and/or folders, comma-separated.")
    flags.DEFINE_string(
        "boxes", None, "Boxes: {file: [[x, y, w, h, score], ...]} or COCO detections."
    )
    flags.DEFINE_string(
        "ann", None, "With COCO detections: the COCO file mapping ids to file names."
    )
    flags.DEFINE_bool("whole_image", False, "Treat each whole image as one person box.")
    flags.DEFINE_string("out", None, "Output folder.")
    flags.DEFINE_float("threshold", 0.2, "Keypoint score below which a joint is not drawn.")
    flags.DEFINE_bool("heatmaps", False, "Also write <stem>_heatmaps.png.")
    flags.DEFINE_bool("flip_test", True, "Average with the mirrored crop's heatmaps.")
    flags.DEFINE_bool("clip_to_box", True, "Clip keypoints to their box (else the padded crop).")
    flags.DEFINE_integer("batch_size", 32, "Crops per jitted call.")
    flags.mark_flags_as_required(["images", "out"])
    run(main)
