"""Does faster-coco-eval's `keypoints_crowd` agree with xtcocotools'? (a one-time check)

    python benchmarks/crowdpose_evaluator_check.py [--coco-dir tests/data/coco] [--json]

Needs faster-coco-eval and xtcocotools in one environment; xtcocotools' wheel needs
numpy 1.x, so build it against numpy 2 from source in a scratch venv:
`pip install numpy cython setuptools faster-coco-eval && pip install --no-build-isolation
xtcocotools`. Builds a CrowdPose-format file from the real COCO sample (CrowdPose's 14
joints, crowd indices in all three levels, no `area`), scores seeded noisy predictions
(and a few false positives) with both, and prints the 9 numbers side by side.
Standalone on purpose: it imports neither jax nor this package.
"""

import argparse
import contextlib
import copy
import io
import json
import pathlib
import sys
import tempfile

import numpy as np

# CrowdPose joint k <- COCO joint: shoulders..ankles (COCO 5..16), head <- nose, neck <- eyes.
COCO_ORDER = list(range(5, 17))
SIGMAS = [
    0.079,
    0.079,
    0.072,
    0.072,
    0.062,
    0.062,
    0.107,
    0.107,
    0.087,
    0.087,
    0.089,
    0.089,
    0.079,
    0.079,
]
NAMES = ["AP", "AP50", "AP75", "AR", "AR50", "AR75", "AP_easy", "AP_medium", "AP_hard"]


def crowdpose_case(coco_file: pathlib.Path, seed: int = 0) -> tuple[dict, list[dict]]:
    data = json.loads(coco_file.read_text())
    rng = np.random.default_rng(seed)
    for image, crowd in zip(data["images"], (0.05, 0.5, 0.9, 0.3), strict=True):
        image["crowdIndex"] = crowd
    results = []
    for ann in data["annotations"]:
        k = np.array(ann["keypoints"], float).reshape(17, 3)
        cp = np.concatenate([k[COCO_ORDER], k[0][None], ((k[1] + k[2]) / 2)[None]])
        cp[12:, 2] = np.where(cp[12:, 2] > 0, 2, 0)
        ann["keypoints"] = cp.ravel().tolist()
        ann["num_keypoints"] = int((cp[:12, 2] > 0).sum())
        ann.pop("area", None)
        if ann["num_keypoints"] == 0:
            continue
        x, y, w, h = ann["bbox"]
        for _ in range(2):  # a good and a poorer guess per person
            noise = rng.normal(0, rng.uniform(0.02, 0.15) * np.sqrt(w * h), (14, 2))
            pred = np.concatenate([cp[:, :2] + noise, rng.uniform(0.3, 1, (14, 1))], 1)
            results.append(
                {
                    "image_id": ann["image_id"],
                    "category_id": 1,
                    "keypoints": pred.ravel().tolist(),
                    "score": float(rng.uniform()),
                }
            )
    for image in data["images"]:  # false positives
        pred = np.concatenate([rng.uniform(0, 300, (14, 2)), rng.uniform(0, 1, (14, 1))], 1)
        results.append(
            {
                "image_id": image["id"],
                "category_id": 1,
                "keypoints": pred.ravel().tolist(),
                "score": 0.05,
            }
        )
    return data, results


def faster_coco_eval_stats(gt_file: str, results: list[dict]) -> list[float]:
    from faster_coco_eval import COCO, COCOeval_faster

    gt = COCO(gt_file)
    ev = COCOeval_faster(
        gt,
        gt.loadRes(copy.deepcopy(results)),
        "keypoints_crowd",
        kpt_oks_sigmas=SIGMAS,
        use_area=False,
    )
    with contextlib.redirect_stdout(io.StringIO()):
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return [float(v) for v in ev.stats[:9]]


def xtcocotools_stats(gt_file: str, results: list[dict]) -> list[float]:
    from xtcocotools.coco import COCO
    from xtcocotools.cocoeval import COCOeval

    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO(gt_file)
        ev = COCOeval(
            gt,
            gt.loadRes(copy.deepcopy(results)),
            "keypoints_crowd",
            np.array(SIGMAS),
            use_area=False,
        )
        ev.params.useSegm = None
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return [float(v) for v in ev.stats[:9]]


def main() -> int:
    parser = argparse.ArgumentParser()
    default = pathlib.Path(__file__).resolve().parents[1] / "tests" / "data" / "coco"
    parser.add_argument("--coco-dir", type=pathlib.Path, default=default)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    data, results = crowdpose_case(args.coco_dir / "test_coco.json")
    with tempfile.TemporaryDirectory() as tmp:
        gt_file = str(pathlib.Path(tmp) / "crowdpose_case.json")
        pathlib.Path(gt_file).write_text(json.dumps(data))
        ours = faster_coco_eval_stats(gt_file, results)
        reference = xtcocotools_stats(gt_file, results)
    diff = max(abs(a - b) for a, b in zip(ours, reference, strict=True))
    print(f"{'':10}{'faster-coco-eval':>18}{'xtcocotools':>14}")
    for name, a, b in zip(NAMES, ours, reference, strict=True):
        print(f"{name:10}{a:18.6f}{b:14.6f}")
    print(f"max |difference| = {diff:.2e} over {len(results)} predictions")
    if args.json:
        print(
            json.dumps({"faster_coco_eval": ours, "xtcocotools": reference, "max_abs_diff": diff})
        )
    return 0 if diff < 1e-9 else 1


if __name__ == "__main__":
    sys.exit(main())
