"""Keypoint AP/AR: pycocotools for COCO-format sets, faster-coco-eval's
`keypoints_crowd` (xtcocotools' protocol, no area field) for CrowdPose."""

from __future__ import annotations

import contextlib
import copy
import io
import json

import numpy as np

COCO_NAMES = ("AP", "AP50", "AP75", "APm", "APl", "AR", "AR50", "AR75", "ARm", "ARl")
# xtcocotools' keypoints_crowd summary order.
CROWDPOSE_NAMES = ("AP", "AP50", "AP75", "AR", "AR50", "AR75", "AP_easy", "AP_medium", "AP_hard")


def keypoint_ap(gt_file: str, results: list[dict], sigmas, crowd: bool = False) -> dict:
    """The standard summary numbers for `results` (COCO results format) on `gt_file`.

    crowd=False: pycocotools COCOeval('keypoints') with `sigmas`. crowd=True:
    faster-coco-eval COCOeval_faster('keypoints_crowd', use_area=False), which
    matched xtcocotools on all 9 numbers (README "Evaluation").
    """
    names = CROWDPOSE_NAMES if crowd else COCO_NAMES
    if not results:
        return dict.fromkeys(names, 0.0)
    with open(gt_file) as f:
        gt_data = json.load(f)
    if crowd:
        from faster_coco_eval import COCO, COCOeval_faster

        if any("crowdIndex" not in image for image in gt_data.get("images", [])):
            raise ValueError(
                f"{gt_file}: CrowdPose evaluation needs images[].crowdIndex "
                "(the crowd level of AP easy/medium/hard)"
            )

        gt = COCO(gt_data)
        dt = gt.loadRes(copy.deepcopy(results))
        evaluator = COCOeval_faster(
            gt, dt, "keypoints_crowd", kpt_oks_sigmas=list(sigmas), use_area=False
        )
    else:
        from pycocotools.coco import COCO
        from pycocotools.cocoeval import COCOeval

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
