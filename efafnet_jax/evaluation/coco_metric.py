"""Keypoint AP/AR: pycocotools for COCO-format sets, faster-coco-eval's
`keypoints_crowd` (xtcocotools' protocol, no area field) for CrowdPose."""

from __future__ import annotations

import contextlib
import copy
import io

import numpy as np

from efafnet_jax.data.json_files import load_json

COCO_NAMES = ("AP", "AP50", "AP75", "APm", "APl", "AR", "AR50", "AR75", "ARm", "ARl")
# xtcocotools' keypoints_crowd summary order.
CROWDPOSE_NAMES = ("AP", "AP50", "AP75", "AR", "AR50", "AR75", "AP_easy", "AP_medium", "AP_hard")


def keypoint_ap(gt_file: str, results: list[dict], sigmas, crowd: bool = False) -> dict:
    """The standard summary numbers for `results` (COCO results format) on `gt_file`.

    crowd=False: pycocotools COCOeval('keypoints') with `sigmas`, every prediction counted.
    crowd=True: faster-coco-eval COCOeval_faster('keypoints_crowd', use_area=False), given
    what xtcocotools would score (`_as_xtcocotools`); equal to xtcocotools on all 9 numbers
    (tests/test_metric_parity.py).
    """
    names = CROWDPOSE_NAMES if crowd else COCO_NAMES
    if not results and not crowd:  # pycocotools' loadRes fails on an empty list
        return dict.fromkeys(names, 0.0)
    gt_data = load_json(gt_file)
    if crowd:
        from faster_coco_eval import COCO, COCOeval_faster

        gt_data, results = _as_xtcocotools(gt_file, gt_data, results)
        gt = COCO(gt_data)
        dt = gt.loadRes(copy.deepcopy(results))
        evaluator = COCOeval_faster(
            gt, dt, "keypoints_crowd", kpt_oks_sigmas=list(sigmas), use_area=False
        )
    else:
        from pycocotools.coco import COCO
        from pycocotools.cocoeval import COCOeval

        # No filter here: pycocotools (HRNet's and SimpleBaseline's evaluator) counts a
        # prediction whatever its keypoint scores (OKS uses coordinates only).
        with contextlib.redirect_stdout(io.StringIO()):
            gt = COCO()
            gt.dataset = gt_data
            gt.createIndex()
            dt = gt.loadRes(copy.deepcopy(results))
        evaluator = COCOeval(gt, dt, "keypoints")
        evaluator.params.kpt_oks_sigmas = np.asarray(sigmas)
        evaluator.params.useSegm = None
    with contextlib.redirect_stdout(io.StringIO()):
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    return {name: float(v) for name, v in zip(names, evaluator.stats, strict=False)}


def _as_xtcocotools(gt_file: str, gt_data: dict, results: list[dict]) -> tuple[dict, list[dict]]:
    """(GT, results) such that faster-coco-eval's keypoints_crowd scores them as xtcocotools
    scores the originals. Raises ValueError on what xtcocotools would fail on or mis-score."""
    if any("crowdIndex" not in image for image in gt_data.get("images", [])):
        raise ValueError(
            f"{gt_file}: CrowdPose evaluation needs images[].crowdIndex "
            "(the crowd level of AP easy/medium/hard)"
        )
    annotations = gt_data.get("annotations", [])
    for ann in annotations:
        # xtcocotools ignores a person whose num_keypoints is 0 and raises KeyError without
        # it; faster-coco-eval would take a missing one as 0 and score differently.
        if "num_keypoints" not in ann:
            raise ValueError(f"{gt_file}: annotation id {ann.get('id')} has no 'num_keypoints'")
        # xtcocotools marks "unmatched" with -1: a match to a negative id counts as a false
        # positive there; faster-coco-eval marks it with 0 and treats it differently again.
        if ann["id"] < 0:
            raise ValueError(f"{gt_file}: annotation id {ann['id']} is negative")
    # faster-coco-eval's "unmatched" is 0, so a person with id 0 could never be a true
    # positive (xtcocotools counts it): shift every id by one, order kept.
    if annotations and min(ann["id"] for ann in annotations) == 0:
        gt_data = copy.deepcopy(gt_data)
        for ann in gt_data["annotations"]:
            ann["id"] += 1
    # xtcocotools COCOeval._prepare (cocoeval.py) skips, before maxDets, every prediction
    # with no keypoint score > 0 (`np.count_nonzero(d[2::3] > 0) == 0`): neither a match
    # nor a false positive. faster-coco-eval counts it (OKS uses coordinates only), and
    # random-init outputs and undecodable-image rows have all scores 0.
    results = [r for r in results if np.any(np.asarray(r["keypoints"][2::3], float) > 0)]
    return gt_data, results
