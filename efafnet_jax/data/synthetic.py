"""A generated COCO-format keypoint dataset: the project's embedded default.

    python -m efafnet_jax.data.synthetic --out DIR --train 2000 --val 200 --seed 0

writes DIR/images/{train,val}/*.jpg, DIR/annotations/person_keypoints_{train,val}.json
and DIR/annotations/detections_val.json (DIR a folder or a URL, gs://bucket/data).
Several figures per image at varied scale, rotation and pose, over textured
backgrounds, partly occluded by each other and by clutter, and truncated at the
image border. Visibility follows COCO: 2 visible, 1 labelled but occluded, 0 (at 0, 0)
outside the image. `area` is the number of pixels the figure covers. Same arguments,
byte-identical files.
"""

from __future__ import annotations

import json

import cv2
import numpy as np
from absl import flags
from etils import epath

from efafnet_jax.cli import run
from efafnet_jax.data.figures import draw_figure, pose_figure, textured_background
from efafnet_jax.data.keypoints import COCO

IMAGE_SIZES = ((320, 240), (256, 256), (240, 320))  # width, height
MAX_PERSONS = 3
JPEG_QUALITY = 90


def _round(values, digits=2) -> list[float]:
    return [round(float(v), digits) for v in values]


def render_image(rng: np.random.Generator) -> tuple[np.ndarray, list[dict]]:
    """One BGR image and its persons: {'keypoints': [17, 3], 'bbox', 'area'}."""
    width, height = IMAGE_SIZES[int(rng.integers(len(IMAGE_SIZES)))]
    canvas = textured_background(rng, width, height)
    label_map = np.zeros((height, width), np.uint8)
    figures, masks = [], []
    for label in range(1, int(rng.integers(1, MAX_PERSONS + 1)) + 1):
        person_height = rng.uniform(0.35, 0.95) * height
        # Centres may lie near the border: figures get truncated.
        center = rng.uniform([0.1 * width, 0.2 * height], [0.9 * width, 0.9 * height])
        figure = pose_figure(rng, center, person_height, rng.normal(0, 20))
        own = np.zeros((height, width), np.uint8)
        draw_figure(canvas, own, figure, 1)
        label_map[own > 0] = label
        figures.append(figure)
        masks.append(own)
    for _ in range(int(rng.integers(0, 3))):  # clutter in front of the figures
        color = tuple(int(v) for v in rng.integers(0, 256, 3))
        x, y = int(rng.integers(0, width)), int(rng.integers(0, height))
        size = (int(rng.integers(8, width // 4)), int(rng.integers(8, height // 4)))
        cv2.ellipse(canvas, (x, y), size, float(rng.uniform(0, 180)), 0, 360, color, -1)
        cv2.ellipse(label_map, (x, y), size, float(rng.uniform(0, 180)), 0, 360, 255, -1)

    persons = []
    for label, (figure, own) in enumerate(zip(figures, masks, strict=True), start=1):
        ys, xs = np.nonzero(own)
        if len(xs) == 0:
            continue
        keypoints = np.zeros((17, 3))
        for k, (x, y) in enumerate(figure.joints):
            if not (0 <= x < width and 0 <= y < height):
                continue  # outside the image: unlabelled, as COCO leaves it
            visible = label_map[int(y), int(x)] == label
            keypoints[k] = [x, y, 2 if visible else 1]
        persons.append(
            {
                "keypoints": keypoints,
                "bbox": [xs.min(), ys.min(), xs.max() - xs.min() + 1, ys.max() - ys.min() + 1],
                "area": float(len(xs)),
            }
        )
    return canvas, persons


def _noisy_detections(rng, image_id, persons, width, height) -> list[dict]:
    detections = []
    for person in persons:
        if rng.random() < 0.05:
            continue  # a missed person
        x, y, w, h = person["bbox"]
        jitter = rng.normal(0, 0.06, 4) * [w, h, w, h]
        detections.append(
            {
                "image_id": image_id,
                "category_id": 1,
                "bbox": _round(
                    [x + jitter[0], y + jitter[1], max(4.0, w + jitter[2]), max(4.0, h + jitter[3])]
                ),
                "score": round(float(rng.uniform(0.6, 1.0)), 4),
            }
        )
    for _ in range(int(rng.integers(0, 3))):  # false positives
        w, h = rng.uniform(10, width / 3), rng.uniform(20, height / 2)
        detections.append(
            {
                "image_id": image_id,
                "category_id": 1,
                "bbox": _round([rng.uniform(0, width - w), rng.uniform(0, height - h), w, h]),
                "score": round(float(rng.uniform(0.02, 0.4)), 4),
            }
        )
    return detections


def write_split(
    out_dir: str, split: str, count: int, seed: int, first_id: int
) -> tuple[dict, list[dict]]:
    """Renders `count` images of one split; returns the COCO dict and detections."""
    image_dir = epath.Path(out_dir) / "images" / split
    image_dir.mkdir(parents=True, exist_ok=True)
    images, annotations, detections = [], [], []
    for n in range(count):
        image_id = first_id + n
        rng = np.random.default_rng([seed, 0 if split == "train" else 1, n])
        canvas, persons = render_image(rng)
        height, width = canvas.shape[:2]
        file_name = f"{image_id:09d}.jpg"
        ok, encoded = cv2.imencode(".jpg", canvas, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
        if not ok:
            raise RuntimeError(f"JPEG encoding failed for {file_name}")
        (image_dir / file_name).write_bytes(encoded.tobytes())
        images.append({"id": image_id, "file_name": file_name, "width": width, "height": height})
        for person in persons:
            kpts = person["keypoints"]
            annotations.append(
                {
                    "id": first_id + len(annotations),
                    "image_id": image_id,
                    "category_id": 1,
                    "iscrowd": 0,
                    "bbox": _round(person["bbox"]),
                    "area": person["area"],
                    "keypoints": [v for k in kpts for v in (*_round(k[:2]), int(k[2]))],
                    "num_keypoints": int((kpts[:, 2] > 0).sum()),
                }
            )
        detections += _noisy_detections(rng, image_id, persons, width, height)
    category = {
        "id": 1,
        "name": "person",
        "supercategory": "person",
        "keypoints": list(COCO.names),
        "skeleton": [[a + 1, b + 1] for a, b in COCO.skeleton],
    }
    coco = {
        "info": {"description": f"efafnet-jax generated figures, seed {seed}"},
        "images": images,
        "annotations": annotations,
        "categories": [category],
    }
    return coco, detections


def generate(out_dir: str, train: int, val: int, seed: int) -> dict[str, str]:
    """Writes the dataset under `out_dir` (a folder or a URL); returns the paths of its
    annotation files."""
    ann_dir = epath.Path(out_dir) / "annotations"
    ann_dir.mkdir(parents=True, exist_ok=True)
    paths = {}
    for split, count, first_id in (("train", train, 1), ("val", val, 1_000_000)):
        coco, detections = write_split(out_dir, split, count, seed, first_id)
        paths[split] = str(ann_dir / f"person_keypoints_{split}.json")
        _write_json(paths[split], coco)
        if split == "val":
            paths["detections"] = str(ann_dir / "detections_val.json")
            _write_json(paths["detections"], detections)
    return paths


def _write_json(path: str, data) -> None:
    epath.Path(path).write_text(json.dumps(data, separators=(",", ":"), sort_keys=True))


def main(argv):
    del argv
    f = flags.FLAGS
    paths = generate(f.out, f.train, f.val, f.seed)
    for name, path in paths.items():
        print(f"{name}: {path}")


def cli() -> None:
    """The efafnet-generate-data console script."""
    flags.DEFINE_string("out", None, "Output folder or URL (gs://...).", required=True)
    flags.DEFINE_integer("train", 2000, "Training images.")
    flags.DEFINE_integer("val", 200, "Validation images.")
    flags.DEFINE_integer("seed", 0, "Seed: the same arguments write the same bytes.")
    run(main)


if __name__ == "__main__":
    cli()
