"""The metric parity cases: the real COCO sample as a CrowdPose-format file and as itself,
seeded noisy predictions, and the edits that each case makes to them (scores all 0,
negative or NaN, GT id 0, crowd-index boundaries, ...). Used by
crowdpose_evaluator_check.py, which scores them with the reference evaluators. Standalone:
imports neither jax nor this package."""

import copy
import json
import pathlib

import numpy as np

# CrowdPose joint k <- COCO joint: shoulders..ankles (COCO 5..16), head <- nose, neck <- eyes.
COCO_ORDER = list(range(5, 17))
SIGMAS = [0.079, 0.079, 0.072, 0.072, 0.062, 0.062, 0.107, 0.107, 0.087, 0.087]
SIGMAS += [0.089, 0.089, 0.079, 0.079]
COCO_SIGMAS = [0.026, 0.025, 0.025, 0.035, 0.035, 0.079, 0.079, 0.072, 0.072, 0.062, 0.062]
COCO_SIGMAS += [0.107, 0.107, 0.087, 0.087, 0.089, 0.089]
BASE_CROWD_INDEX = (0.05, 0.5, 0.9, 0.3)  # easy, medium, hard, medium
HARD_IMAGE = 196141  # the image with crowd index 0.9
# JSON has no NaN: a NaN keypoint value is stored as this string (float("NaN") reads it back).
NAN = "NaN"


def sample_case(coco_file: pathlib.Path, crowdpose: bool, seed: int = 0) -> tuple[dict, list]:
    """GT (CrowdPose 14-joint or the COCO file) and seeded noisy predictions on it."""
    data = json.loads(coco_file.read_text())
    rng = np.random.default_rng(seed)
    for key in ("info", "licenses"):
        data.pop(key, None)
    data["images"] = [
        {k: image[k] for k in ("id", "file_name", "width", "height")} for image in data["images"]
    ]
    if crowdpose:
        for image, crowd in zip(data["images"], BASE_CROWD_INDEX, strict=True):
            image["crowdIndex"] = crowd
    joints = 14 if crowdpose else 17
    results = []
    for ann in data["annotations"]:
        ann.pop("segmentation", None)
        k = np.array(ann["keypoints"], float).reshape(17, 3)
        if crowdpose:
            cp = np.concatenate([k[COCO_ORDER], k[0][None], ((k[1] + k[2]) / 2)[None]])
            cp[12:, 2] = np.where(cp[12:, 2] > 0, 2, 0)
            ann["keypoints"] = cp.ravel().tolist()
            ann["num_keypoints"] = int((cp[:12, 2] > 0).sum())
            ann.pop("area", None)
            k = cp
        if ann["num_keypoints"] == 0:
            continue
        x, y, w, h = ann["bbox"]
        for _ in range(2):  # a good and a poorer guess per person
            noise = rng.normal(0, rng.uniform(0.02, 0.15) * np.sqrt(w * h), (joints, 2))
            pred = np.concatenate([k[:, :2] + noise, rng.uniform(0.3, 1, (joints, 1))], 1)
            results.append(_result(ann["image_id"], pred, float(rng.uniform())))
    for image in data["images"]:  # false positives
        pred = np.concatenate([rng.uniform(0, 300, (joints, 2)), rng.uniform(0, 1, (joints, 1))], 1)
        results.append(_result(image["id"], pred, 0.05))
    return data, results


def _result(image_id: int, pred: np.ndarray, score: float) -> dict:
    # Rounded to keep the fixture small; the reference numbers are those of the rounded values.
    pred = np.concatenate([pred[:, :2].round(2), pred[:, 2:].round(3)], 1)
    return {
        "image_id": image_id,
        "category_id": 1,
        "keypoints": pred.ravel().tolist(),
        "score": round(score, 4),
    }


def set_scores(result: dict, scores) -> None:
    kpts = np.array(result["keypoints"], float).reshape(-1, 3)
    kpts[:, 2] = scores
    result["keypoints"] = kpts.ravel().tolist()


def gt_predictions(gt: dict, score: float) -> list[dict]:
    """Each labelled GT person's own coordinates as a prediction, keypoint scores `score`."""
    out = []
    for ann in gt["annotations"]:
        if ann["num_keypoints"] > 0:
            kpts = np.array(ann["keypoints"], float).reshape(-1, 3)
            out.append(_result(ann["image_id"], kpts, 1.0))
            set_scores(out[-1], score)
    return out


# A case edits copies of (gt, results) in place, or returns new results; its docstring says
# what it is. The crowd-index cases have no COCO variant.


def _base(gt, res):
    """Seeded noisy predictions: 2 per person, 1 false positive per image."""


def _scores0(gt, res):
    """Prediction 0: keypoint scores all 0, coordinates kept."""
    set_scores(res[0], 0.0)


def _all_values0(gt, res):
    """Prediction 0: every value 0 (a placeholder row of an undecodable image)."""
    res[0]["keypoints"] = [0.0] * len(res[0]["keypoints"])


def _negative_scores(gt, res):
    """Prediction 0: scores -0.5; prediction 2: scores -1e-9 and 0."""
    set_scores(res[0], -0.5)
    set_scores(res[2], np.where(np.arange(len(res[2]["keypoints"]) // 3) % 2, 0.0, -1e-9))


def _nan_scores(gt, res):
    """Prediction 0: scores NaN; prediction 2: scores NaN, 0 and -1."""
    set_scores(res[0], np.nan)
    set_scores(res[2], np.resize([np.nan, 0.0, -1.0], len(res[2]["keypoints"]) // 3))


def _tiny_positive(gt, res):
    """Prediction 0: scores 0 but one of 1e-12 (counted: one score is > 0)."""
    scores = np.zeros(len(res[0]["keypoints"]) // 3)
    scores[3] = 1e-12
    set_scores(res[0], scores)


def _many_scores0(gt, res):
    """Every third prediction: keypoint scores all 0."""
    for r in res[::3]:
        set_scores(r, 0.0)


def _scores0_hard_image(gt, res):
    """All predictions on the hard image (crowd index 0.9): keypoint scores all 0."""
    for r in res:
        if r["image_id"] == HARD_IMAGE:
            set_scores(r, 0.0)


def _scores0_over_max_dets(gt, res):
    """20 more predictions on one image, confident (0.99), keypoint scores all 0."""
    # Counted, they take all maxDets=20 places there; xtcocotools drops them before maxDets.
    rng = np.random.default_rng(1)
    joints = len(res[0]["keypoints"]) // 3
    for _ in range(20):
        pred = np.concatenate([rng.uniform(0, 300, (joints, 2)), np.zeros((joints, 1))], 1)
        res.append(_result(HARD_IMAGE, pred, 0.99))


def _gt_scores0(gt, res):
    """GT coordinates as predictions, keypoint scores all 0."""
    return gt_predictions(gt, 0.0)


def _gt_scores1(gt, res):
    """GT coordinates as predictions, keypoint scores all 1."""
    return gt_predictions(gt, 1.0)


def _gt_id0(gt, res):
    """GT annotation ids 0..13 (the first person has id 0), base predictions."""
    for i, ann in enumerate(gt["annotations"]):
        ann["id"] = i


def _gt_id0_perfect(gt, res):
    """GT annotation ids 0..13, GT coordinates as predictions (scores 1)."""
    _gt_id0(gt, res)
    return gt_predictions(gt, 1.0)


def _set_crowd_index(gt, values):
    for image, value in zip(gt["images"], values, strict=True):
        image["crowdIndex"] = value


def _crowd_boundaries(gt, res):
    """Crowd indices 0.2, 0.8, 0.19999, 0.79999: medium, hard, easy, medium."""
    _set_crowd_index(gt, (0.2, 0.8, 0.19999, 0.79999))


def _no_hard(gt, res):
    """Crowd indices 0.05, 0.5, 0.1, 0.3: no hard image (AP_hard -1)."""
    _set_crowd_index(gt, (0.05, 0.5, 0.1, 0.3))


def _all_hard(gt, res):
    """Crowd indices 0.8, 0.95, 1.0, 0.85: no easy or medium image (their AP -1)."""
    _set_crowd_index(gt, (0.8, 0.95, 1.0, 0.85))


CASES = [_base, _scores0, _all_values0, _negative_scores, _nan_scores, _tiny_positive]
CASES += [_many_scores0, _scores0_hard_image, _scores0_over_max_dets, _gt_scores0, _gt_scores1]
CASES += [_gt_id0, _gt_id0_perfect, _crowd_boundaries, _no_hard, _all_hard]
CROWD_ONLY = (_crowd_boundaries, _no_hard, _all_hard)


def build_cases(coco_file: pathlib.Path) -> list[dict]:
    bases = {
        "crowdpose": sample_case(coco_file, crowdpose=True),
        "coco": sample_case(coco_file, crowdpose=False),
    }
    cases = []
    for edit in CASES:
        case = {"name": edit.__name__[1:], "what": edit.__doc__}
        for variant, (gt, results) in bases.items():
            if variant == "coco" and edit in CROWD_ONLY:
                case[variant] = None
                continue
            gt, results = copy.deepcopy(gt), copy.deepcopy(results)
            new = edit(gt, results)
            case[variant] = {"gt": gt, "results": results if new is None else new}
        cases.append(case)
    return cases
