"""Seconds per stage of COCO keypoint evaluation after the network, at val2017 scale.

    python benchmarks/eval_postprocess.py [--images 5000] [--detections 104000] [--seed 0]
        [--decoder quarter_offset|dark] [--json]

Times, one by one, what `Evaluator.predict` / `coco_results` / `metrics` do with the
network's heatmaps: decode (argmax + quarter offset or DARK, back to image pixels), box x
keypoint rescoring, OKS-NMS per image, building the COCO results list, and pycocotools'
COCOeval against the ground-truth file.

The case is generated from a seed: 640x480 images with 0-4 persons each (17 keypoints,
most visible), and as many person detections as val2017's detection file has (~104k,
~21 per image): one jittered box per person, duplicates of persons at lower scores and
false positives at random places. Each detection's heatmaps [64, 48, 17] hold a sigma-2
Gaussian per joint plus noise; for a person's detections the peak sits at the person's
joint seen through that detection's crop (plus about a heatmap pixel of error), so AP
comes out near a trained model's (~0.75) only if every stage is right. Heatmaps are
generated in chunks of CHUNK detections, untimed.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import json
import os
import platform
import tempfile
import time
from collections import defaultdict
from collections.abc import Iterator

import numpy as np
from absl import flags

from efafnet_jax.cli import run
from efafnet_jax.data.codec import decode
from efafnet_jax.data.keypoints import COCO
from efafnet_jax.data.records import PersonRecord
from efafnet_jax.data.transforms import affine_matrix, affine_points, box_to_center_scale
from efafnet_jax.evaluation.coco_metric import keypoint_ap
from efafnet_jax.evaluation.nms import oks_nms, rescore

IMAGE_SIZE = (640, 480)  # width, height
HEATMAP_HW = (64, 48)  # the heatmaps of a 256x192 crop
ASPECT_RATIO = 192 / 256
SIGMA = 2.0
CHUNK = 1024  # detections per generated heatmap block: ~200 MB of float32
IN_VIS_THRESHOLD, OKS_THRESHOLD = 0.2, 0.9  # the config's eval defaults
STAGES = ("decode", "rescore", "oks_nms", "results", "cocoeval")


@dataclasses.dataclass(frozen=True)
class Kind:
    """How one kind of detection is drawn."""

    box_jitter: float  # std of the box's shift and log-size change, fractions of its size
    box_score: tuple[float, float]  # uniform range of the detector's score
    joint_score: tuple[float, float]  # uniform range of a visible joint's peak height
    peak_noise: float  # std of a visible joint's peak position, heatmap pixels


# A good detection's peak noise of 1 heatmap pixel puts AP near a trained model's (~0.75).
GOOD = Kind(0.05, (0.7, 1.0), (0.6, 0.95), 1.0)
DUPLICATE = Kind(0.15, (0.2, 0.7), (0.3, 0.8), 1.5)
FALSE_POSITIVE = Kind(0.05, (0.01, 0.5), (0.05, 0.4), 1.0)  # of a person not in the GT

# A standing person's joints as fractions of their box (x, y), COCO joint order.
TEMPLATE = np.array(
    [
        [0.50, 0.08],
        [0.55, 0.06],
        [0.45, 0.06],
        [0.60, 0.08],
        [0.40, 0.08],
        [0.70, 0.22],
        [0.30, 0.22],
        [0.80, 0.38],
        [0.20, 0.38],
        [0.85, 0.52],
        [0.15, 0.52],
        [0.62, 0.55],
        [0.38, 0.55],
        [0.63, 0.75],
        [0.37, 0.75],
        [0.64, 0.95],
        [0.36, 0.95],
    ]
)


@dataclasses.dataclass
class Case:
    """A ground-truth file, the detections as the COCO reader gives them, and per
    detection where (heatmap pixels, [N, K, 2]) and how high ([N, K]) each joint peaks."""

    gt_file: str
    persons: int
    records: list[PersonRecord]
    peaks: np.ndarray
    amplitudes: np.ndarray


def _person(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A ground-truth person: box (x, y, w, h), joints [K, 2], visible [K]."""
    w = rng.uniform(40, 220)
    h = min(w * rng.uniform(1.6, 2.6), IMAGE_SIZE[1] - 10)
    x, y = rng.uniform(0, IMAGE_SIZE[0] - w), rng.uniform(0, IMAGE_SIZE[1] - h)
    joints = (TEMPLATE + rng.normal(0, 0.03, TEMPLATE.shape)) * [w, h] + [x, y]
    visible = rng.random(len(TEMPLATE)) > 0.15
    visible[0] = True  # a person with no visible joint would be ignored by COCOeval
    return np.array([x, y, w, h]), joints, visible


def _detection(
    rng: np.random.Generator,
    box: np.ndarray,
    joints: np.ndarray,
    visible: np.ndarray,
    kind: Kind,
) -> tuple[float, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """box score, centre, scale, peaks [K, 2], amplitudes [K] of one detection of `box`.

    Visible joints peak at the joint mapped into this crop's heatmap; the others somewhere
    in the heatmap, weakly, as an unsure network's would.
    """
    x, y, w, h = box
    jitter = kind.box_jitter
    jittered = [
        x + rng.normal(0, jitter) * w,
        y + rng.normal(0, jitter) * h,
        w * np.exp(rng.normal(0, jitter)),
        h * np.exp(rng.normal(0, jitter)),
    ]
    center, scale = box_to_center_scale(jittered, ASPECT_RATIO)
    peaks = affine_points(joints, affine_matrix(center, scale, 0.0, HEATMAP_HW))
    peaks += rng.normal(0, kind.peak_noise, peaks.shape)
    k = len(joints)
    map_wh = HEATMAP_HW[::-1]  # peaks are (x, y)
    peaks[~visible] = rng.uniform([0, 0], map_wh, (k, 2))[~visible]
    peaks = np.clip(peaks, 0, np.subtract(map_wh, 1))
    heights = np.where(visible, rng.uniform(*kind.joint_score, k), rng.uniform(0.05, 0.3, k))
    return rng.uniform(*kind.box_score), center, scale, peaks, heights


def make_case(rng: np.random.Generator, images: int, detections: int, folder: str) -> Case:
    """Writes the ground truth to `folder`/gt.json; returns it with `detections` detections.

    Each person gets one good detection; of the remaining detections, spread over the
    images at random, a quarter duplicate a person (looser box and keypoints, lower score)
    and the rest are false positives.
    """
    persons_per_image = rng.integers(0, 5, images)  # 2 on average
    spare = detections - int(persons_per_image.sum())
    if spare < 0:
        raise ValueError(f"{detections} detections < {persons_per_image.sum()} persons")
    extra = rng.multinomial(spare, np.full(images, 1.0 / images))
    annotations, rows, image_ids = [], [], []
    for image_id, count, more in zip(range(1, images + 1), persons_per_image, extra, strict=True):
        people = [_person(rng) for _ in range(count)]
        for box, joints, visible in people:
            keypoints = np.concatenate([joints, 2.0 * visible[:, None]], axis=1) * visible[:, None]
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": image_id,
                    "category_id": 1,
                    "bbox": box.round(2).tolist(),
                    "area": float(box[2] * box[3] * 0.55),  # a segment covers ~half the box
                    "iscrowd": 0,
                    "keypoints": keypoints.round(2).ravel().tolist(),
                    "num_keypoints": int(visible.sum()),
                }
            )
            rows.append(_detection(rng, box, joints, visible, GOOD))
        for _ in range(more):
            if people and rng.random() < 0.25:
                box, joints, visible = people[rng.integers(len(people))]
                rows.append(_detection(rng, box, joints, visible, DUPLICATE))
            else:
                rows.append(_detection(rng, *_person(rng), FALSE_POSITIVE))
        image_ids += [image_id] * (count + more)
    gt = {
        "images": [
            {"id": i, "file_name": f"{i:012d}.jpg", "width": IMAGE_SIZE[0], "height": IMAGE_SIZE[1]}
            for i in range(1, images + 1)
        ],
        "annotations": annotations,
        "categories": [
            {
                "id": 1,
                "name": "person",
                "supercategory": "person",
                "keypoints": list(COCO.names),
                "skeleton": [[a + 1, b + 1] for a, b in COCO.skeleton],
            }
        ],
    }
    gt_file = os.path.join(folder, "gt.json")
    with open(gt_file, "w") as f:
        json.dump(gt, f)
    scores, centers, scales, peaks, heights = zip(*rows, strict=True)
    k = COCO.num_joints
    records = [  # a detection's record, as the COCO reader makes it: no joints
        PersonRecord(
            "", i, c, s, np.zeros((k, 2), np.float32), np.zeros(k, np.float32), float(score)
        )
        for i, score, c, s in zip(image_ids, scores, centers, scales, strict=True)
    ]
    return Case(gt_file, len(annotations), records, np.stack(peaks), np.stack(heights))


def synthetic_heatmaps(
    rng: np.random.Generator, peaks: np.ndarray, amplitudes: np.ndarray
) -> np.ndarray:
    """[n, 64, 48, K] float32: a Gaussian of height `amplitudes` ([n, K]) at each of `peaks`
    (heatmap pixels, [n, K, 2]), plus N(0, 0.01) noise."""
    h, w = HEATMAP_HW
    peaks = peaks.astype(np.float32)
    two_var = np.float32(2 * SIGMA**2)
    gx = np.exp(-((np.arange(w, dtype=np.float32)[:, None] - peaks[:, None, :, 0]) ** 2) / two_var)
    gy = np.exp(-((np.arange(h, dtype=np.float32)[:, None] - peaks[:, None, :, 1]) ** 2) / two_var)
    gy *= amplitudes[:, None, :].astype(np.float32)
    heatmaps = gy[:, :, None, :] * gx[:, None, :, :]  # separable: [n, h, 1, K] x [n, 1, w, K]
    heatmaps += 0.01 * rng.standard_normal(heatmaps.shape, dtype=np.float32)
    return heatmaps


@contextlib.contextmanager
def _timed(seconds: dict[str, float], stage: str) -> Iterator[None]:
    start = time.perf_counter()
    yield
    seconds[stage] += time.perf_counter() - start


def measure(
    rng: np.random.Generator, case: Case, decoder: str = "quarter_offset"
) -> tuple[dict[str, float], list[dict], dict]:
    """Seconds per stage, the COCO results and COCOeval's numbers.

    Each stage runs the lines `Evaluator` runs, on the same kind of inputs: decode on
    batch arrays, the rest on the list of records.
    """
    records = case.records
    seconds = dict.fromkeys(STAGES, 0.0)
    # The input pipeline hands decode each batch's centres and scales as arrays.
    centers = np.stack([r.center for r in records])
    scales = np.stack([r.scale for r in records])
    keypoints = np.zeros((len(records), COCO.num_joints, 3))
    for start in range(0, len(records), CHUNK):
        part = slice(start, start + CHUNK)
        heatmaps = synthetic_heatmaps(rng, case.peaks[part], case.amplitudes[part])
        with _timed(seconds, "decode"):
            keypoints[part, :, :2], keypoints[part, :, 2] = decode(
                heatmaps, centers[part], scales[part], True, decoder, SIGMA
            )
        del heatmaps  # let the next block reuse the memory

    # Evaluator.coco_results, with the NMS and the building of the list timed apart.
    with _timed(seconds, "rescore"):
        scores = rescore(
            np.array([r.box_score for r in records]), keypoints[..., 2], IN_VIS_THRESHOLD
        )
    with _timed(seconds, "oks_nms"):
        areas = np.array([np.prod(np.asarray(r.scale) * 200.0) for r in records])
        by_image = defaultdict(list)
        for i, record in enumerate(records):
            by_image[record.image_id].append(i)
        sigmas = np.asarray(COCO.sigmas)
        kept_by_image = {}
        for image_id, members in by_image.items():
            members = np.asarray(members)
            kept = oks_nms(
                keypoints[members], scores[members], areas[members], sigmas, OKS_THRESHOLD
            )
            kept_by_image[image_id] = members[kept] if kept else members
    with _timed(seconds, "results"):
        results = [
            {
                "image_id": int(image_id),
                "category_id": 1,
                "keypoints": [round(float(v), 3) for v in keypoints[i].ravel()],
                "score": float(scores[i]),
            }
            for image_id, kept in kept_by_image.items()
            for i in kept
        ]

    with _timed(seconds, "cocoeval"):
        metrics = keypoint_ap(case.gt_file, results, COCO.sigmas, crowd=False)
    return seconds, results, metrics


def main(argv):
    del argv
    f = flags.FLAGS
    rng = np.random.default_rng(f.seed)
    with tempfile.TemporaryDirectory() as folder:
        case = make_case(rng, f.images, f.detections, folder)
        seconds, results, metrics = measure(rng, case, f.decoder)
    n = len(case.records)
    items = {
        "decode": (n, "detections"),
        "rescore": (n, "detections"),
        "oks_nms": (f.images, "images"),
        "results": (len(results), "results"),
        "cocoeval": (len(results), "results"),
    }
    total = sum(seconds.values())
    print(f"{f.images} images, {case.persons} persons, {n} detections, {len(results)} after NMS")
    print(f"{'stage':10s} {'seconds':>9s} {'items/s':>11s}")
    for stage in STAGES:
        count, unit = items[stage]
        rate = count / seconds[stage]
        print(f"{stage:10s} {seconds[stage]:9.3f} {rate:11.1f}  {unit}")
    print(f"{'total':10s} {total:9.3f}")
    print(f"AP {metrics['AP']:.4f}  AP50 {metrics['AP50']:.4f}  AR {metrics['AR']:.4f}")
    if f.json:
        record = {
            "images": f.images,
            "persons": case.persons,
            "detections": n,
            "results": len(results),
            "seed": f.seed,
            "decoder": f.decoder,
            **{f"{stage}_s": seconds[stage] for stage in STAGES},
            "total_s": total,
            "AP": metrics["AP"],
            "AP50": metrics["AP50"],
            "AR": metrics["AR"],
            "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs",
            "date": datetime.date.today().isoformat(),
        }
        print(json.dumps(record))


if __name__ == "__main__":
    flags.DEFINE_integer("images", 5000, "Images (val2017 has 5000).")
    flags.DEFINE_integer("detections", 104000, "Person detections over all images.")
    flags.DEFINE_integer("seed", 0, "Seed of the generated case.")
    flags.DEFINE_enum("decoder", "quarter_offset", ["quarter_offset", "dark"], "eval.decoder.")
    flags.DEFINE_bool("json", False, "Print one line of JSON as the last line of stdout.")
    run(main)
