"""CrowdPose and COCO keypoint AP against their reference evaluators, and the parity fixture.

    python benchmarks/crowdpose_evaluator_check.py [--coco-dir tests/data/coco] [--json]
    python benchmarks/crowdpose_evaluator_check.py --write-fixture PATH

(the fixture's PATH is tests/data/metric_parity/cases.json)

Needs xtcocotools, pycocotools and faster-coco-eval in one scratch venv; xtcocotools' wheel
needs numpy 1.x (the fixture's versions, Python 3.11): `python -m venv /tmp/xtco/venv &&
/tmp/xtco/venv/bin/pip install "numpy<2" xtcocotools==1.14.3 pycocotools==2.0.11
faster-coco-eval==1.8.0`; or build xtcocotools against numpy 2: `pip install numpy cython
setuptools pycocotools faster-coco-eval && pip install --no-build-isolation --no-binary
xtcocotools xtcocotools`.

Builds cases from the real COCO sample: a CrowdPose-format file (CrowdPose's 14 joints,
crowd indices, no `area`) and the COCO file itself, seeded noisy predictions (and a few false
positives), then variants: keypoint scores all 0, negative or NaN (xtcocotools does not count
such a prediction), a tiny positive score, GT annotation id 0, crowd indices on the 0.2 / 0.8
boundaries, an empty crowd level. Scores the CrowdPose variants with xtcocotools
`keypoints_crowd` (the reference, 9 numbers) and with faster-coco-eval as efafnet_jax calls
it, and the COCO variants with pycocotools (10 numbers). The report prints both side by side;
--write-fixture stores the cases and the reference numbers for tests/test_metric_parity.py.
Standalone on purpose: it imports neither jax nor this package.
"""

import argparse
import contextlib
import copy
import io
import json
import math
import pathlib
import platform
import sys
import tempfile
import warnings
from collections.abc import Callable
from importlib import metadata

import numpy as np

# CrowdPose joint k <- COCO joint: shoulders..ankles (COCO 5..16), head <- nose, neck <- eyes.
COCO_ORDER = list(range(5, 17))
SIGMAS = [0.079, 0.079, 0.072, 0.072, 0.062, 0.062, 0.107, 0.107, 0.087, 0.087]
SIGMAS += [0.089, 0.089, 0.079, 0.079]
COCO_SIGMAS = [0.026, 0.025, 0.025, 0.035, 0.035, 0.079, 0.079, 0.072, 0.072, 0.062, 0.062]
COCO_SIGMAS += [0.107, 0.107, 0.087, 0.087, 0.089, 0.089]
NAMES = ["AP", "AP50", "AP75", "AR", "AR50", "AR75", "AP_easy", "AP_medium", "AP_hard"]
COCO_NAMES = ["AP", "AP50", "AP75", "APm", "APl", "AR", "AR50", "AR75", "ARm", "ARl"]
BASE_CROWD_INDEX = (0.05, 0.5, 0.9, 0.3)  # easy, medium, hard, medium
HARD_IMAGE = 196141  # the image with crowd index 0.9
# JSON has no NaN: a NaN keypoint value is stored as this string (float("NaN") reads it back).
NAN = "NaN"
FIXTURE_COMMAND = (
    "python benchmarks/crowdpose_evaluator_check.py --write-fixture "
    "tests/data/metric_parity/cases.json"
)


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


def _stats(gt: dict, results: list[dict], coco_class, evaluator: Callable, count: int) -> list:
    """The first `count` summary numbers of `evaluator(COCO(gt), COCO(gt).loadRes(results))`."""
    # xtcocotools reads the crowd levels back from the GT file, so every library gets a file.
    with tempfile.TemporaryDirectory() as tmp:
        gt_file = pathlib.Path(tmp) / "gt.json"
        gt_file.write_text(json.dumps(gt))
        with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            coco = coco_class(str(gt_file))
            ev = evaluator(coco, coco.loadRes(copy.deepcopy(results)))
            ev.evaluate()
            ev.accumulate()
            ev.summarize()
    return [float(v) for v in ev.stats[:count]]


def xtcocotools_stats(gt: dict, results: list[dict]) -> list[float]:
    from xtcocotools.coco import COCO
    from xtcocotools.cocoeval import COCOeval

    def evaluator(coco, dt):
        return COCOeval(coco, dt, "keypoints_crowd", np.array(SIGMAS), use_area=False)

    return _stats(gt, results, COCO, evaluator, 9)


def pycocotools_stats(gt: dict, results: list[dict]) -> list[float]:
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    def evaluator(coco, dt):
        ev = COCOeval(coco, dt, "keypoints")
        ev.params.kpt_oks_sigmas = np.array(COCO_SIGMAS)
        return ev

    return _stats(gt, results, COCO, evaluator, 10)


def faster_coco_eval_stats(gt: dict, results: list[dict], as_project: bool) -> list[float]:
    """faster-coco-eval `keypoints_crowd`; as_project: with efafnet_jax's two adjustments
    (efafnet_jax/evaluation/coco_metric.py), restated here to stay standalone."""
    from faster_coco_eval import COCO, COCOeval_faster

    if as_project:
        results = [r for r in results if np.any(np.asarray(r["keypoints"][2::3], float) > 0)]
        if min(ann["id"] for ann in gt["annotations"]) == 0:
            gt = copy.deepcopy(gt)
            for ann in gt["annotations"]:
                ann["id"] += 1

    def evaluator(coco, dt):
        return COCOeval_faster(coco, dt, "keypoints_crowd", kpt_oks_sigmas=SIGMAS, use_area=False)

    return _stats(gt, results, COCO, evaluator, 9)


def _max_diff(a: list[float], b: list[float]) -> float:
    return max(abs(x - y) for x, y in zip(a, b, strict=True))


def _stored(results: list[dict]) -> list[dict]:
    """`results` with NaN keypoint values as the string NAN (strict JSON)."""
    out = copy.deepcopy(results)
    for r in out:
        r["keypoints"] = [NAN if math.isnan(v) else v for v in r["keypoints"]]
    return out


def write_fixture(path: pathlib.Path, cases: list[dict]) -> None:
    """One JSON file: the GT dicts and results lists (each stored once, cases name them by
    key), and per case the reference numbers."""
    fixture = {
        "command": FIXTURE_COMMAND,
        "versions": {
            name: metadata.version(name)
            for name in ("xtcocotools", "pycocotools", "faster-coco-eval", "numpy")
        }
        | {"python": platform.python_version()},
        "nan": NAN,
        "crowdpose": {"sigmas": SIGMAS, "names": NAMES, "reference": "xtcocotools"},
        "coco": {"sigmas": COCO_SIGMAS, "names": COCO_NAMES, "reference": "pycocotools"},
        "gt": {},
        "results": {},
        "cases": [],
    }

    def key(kind: str, name: str, value) -> str:
        pool = fixture[kind]
        for k, v in pool.items():
            if v == value:
                return k
        pool[name] = value
        return name

    for case in cases:
        stored = {"name": case["name"], "what": case["what"]}
        for variant, ref in (("crowdpose", "xtcocotools"), ("coco", "pycocotools")):
            part, name = case[variant], f"{variant}/{case['name']}"
            stored[variant] = part and {
                "gt": key("gt", name, part["gt"]),
                "results": key("results", name, _stored(part["results"])),
                ref: part[ref],
            }
        fixture["cases"].append(stored)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(fixture, allow_nan=False, separators=(",", ":")) + "\n")


def main() -> int:
    parser = argparse.ArgumentParser()
    default = pathlib.Path(__file__).resolve().parents[1] / "tests" / "data" / "coco"
    parser.add_argument("--coco-dir", type=pathlib.Path, default=default)
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--write-fixture", type=pathlib.Path, metavar="PATH")
    args = parser.parse_args()
    cases = build_cases(args.coco_dir / "test_coco.json")
    for case in cases:
        crowd, coco = case["crowdpose"], case["coco"]
        crowd["xtcocotools"] = xtcocotools_stats(crowd["gt"], crowd["results"])
        crowd["fce"] = faster_coco_eval_stats(crowd["gt"], crowd["results"], as_project=False)
        crowd["ours"] = faster_coco_eval_stats(crowd["gt"], crowd["results"], as_project=True)
        if coco:
            coco["pycocotools"] = pycocotools_stats(coco["gt"], coco["results"])

    base = cases[0]["crowdpose"]
    print(f"base case: {'':10}{'faster-coco-eval':>18}{'xtcocotools':>14}")
    for name, a, b in zip(NAMES, base["ours"], base["xtcocotools"], strict=True):
        print(f"{name:20}{a:18.6f}{b:14.6f}")
    print(
        f"\n{'case':24}{'xt AP':>8}{'xt AP_hard':>11}{'pc AP':>8}{'|fce-xt|':>10}{'|ours-xt|':>11}"
    )
    for case in cases:
        crowd, coco = case["crowdpose"], case["coco"]
        raw = _max_diff(crowd["fce"], crowd["xtcocotools"])
        ours = _max_diff(crowd["ours"], crowd["xtcocotools"])
        pc = f"{coco['pycocotools'][0]:8.4f}" if coco else f"{'-':>8}"
        xt = crowd["xtcocotools"]
        print(f"{case['name']:24}{xt[0]:8.4f}{xt[8]:11.4f}{pc}{raw:10.2e}{ours:11.2e}")
    diff = max(_max_diff(c["crowdpose"]["ours"], c["crowdpose"]["xtcocotools"]) for c in cases)
    print(f"max |difference| (faster-coco-eval as efafnet_jax calls it) = {diff:.2e}")
    print("fce: faster-coco-eval alone; ours: without predictions lacking a positive keypoint")
    print("score and with GT annotation ids shifted from 0 to 1")
    if args.json:
        report = {
            "faster_coco_eval": base["ours"],
            "xtcocotools": base["xtcocotools"],
            "max_abs_diff": diff,
            "cases": {
                c["name"]: {k: c["crowdpose"][k] for k in ("xtcocotools", "fce", "ours")}
                | {"pycocotools": c["coco"] and c["coco"]["pycocotools"]}
                for c in cases
            },
        }
        print(json.dumps(report))
    if args.write_fixture:
        write_fixture(args.write_fixture, cases)
        print(f"wrote {args.write_fixture} ({args.write_fixture.stat().st_size} bytes)")
    return 0 if diff < 1e-9 else 1


if __name__ == "__main__":
    sys.exit(main())
