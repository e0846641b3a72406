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
from metric_parity_cases import COCO_SIGMAS, NAN, SIGMAS, build_cases

NAMES = ["AP", "AP50", "AP75", "AR", "AR50", "AR75", "AP_easy", "AP_medium", "AP_hard"]
COCO_NAMES = ["AP", "AP50", "AP75", "APm", "APl", "AR", "AR50", "AR75", "ARm", "ARl"]
FIXTURE_COMMAND = (
    "python benchmarks/crowdpose_evaluator_check.py --write-fixture "
    "tests/data/metric_parity/cases.json"
)


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
