"""Keypoint AP equals the reference evaluators on stored cases: CrowdPose against
xtcocotools' keypoints_crowd, COCO against pycocotools. The cases and the reference numbers
are in tests/data/metric_parity/cases.json, written by benchmarks/crowdpose_evaluator_check.py
with the reference libraries (tests/data/metric_parity/README.md says how to regenerate it)."""

import contextlib
import copy
import io
import json

import numpy as np
import pytest
from conftest import DATA_DIR

from efafnet_jax.evaluation.coco_metric import COCO_NAMES, CROWDPOSE_NAMES, keypoint_ap

FIXTURE = json.loads((DATA_DIR / "metric_parity" / "cases.json").read_text())
CASES = {case["name"]: case for case in FIXTURE["cases"]}
CROWDPOSE = FIXTURE["crowdpose"]
COCO = FIXTURE["coco"]


def _gt(name: str, variant: str = "crowdpose") -> dict:
    return FIXTURE["gt"][CASES[name][variant]["gt"]]


def _case(name: str, variant: str) -> tuple[dict, list[dict], list[float]]:
    """GT dict, results (NaN restored: float("NaN")) and reference numbers of one case."""
    part = CASES[name][variant]
    results = copy.deepcopy(FIXTURE["results"][part["results"]])
    for r in results:
        r["keypoints"] = [float(v) for v in r["keypoints"]]
    return _gt(name, variant), results, part[FIXTURE[variant]["reference"]]


def _ours(tmp_path, gt: dict, results: list[dict], crowd: bool) -> list[float]:
    path = tmp_path / "gt.json"
    path.write_text(json.dumps(gt))
    sigmas = (CROWDPOSE if crowd else COCO)["sigmas"]
    metrics = keypoint_ap(str(path), results, sigmas, crowd=crowd)
    return list(metrics.values())


def _faster_coco_eval_alone(gt: dict, results: list[dict]) -> list[float]:
    from faster_coco_eval import COCO as FasterCOCO
    from faster_coco_eval import COCOeval_faster

    coco = FasterCOCO(copy.deepcopy(gt))
    ev = COCOeval_faster(
        coco,
        coco.loadRes(copy.deepcopy(results)),
        "keypoints_crowd",
        kpt_oks_sigmas=CROWDPOSE["sigmas"],
        use_area=False,
    )
    with contextlib.redirect_stdout(io.StringIO()):
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return [float(v) for v in ev.stats[:9]]


def test_fixture_names_are_ours():
    assert tuple(CROWDPOSE["names"]) == CROWDPOSE_NAMES and tuple(COCO["names"]) == COCO_NAMES


@pytest.mark.parametrize("name", list(CASES))
def test_crowdpose_ap_equals_xtcocotools(tmp_path, name):
    gt, results, reference = _case(name, "crowdpose")
    ours = _ours(tmp_path, gt, results, crowd=True)
    np.testing.assert_allclose(ours, reference, rtol=0, atol=1e-9, err_msg=name)


@pytest.mark.parametrize("name", [name for name, case in CASES.items() if case["coco"]])
def test_coco_ap_equals_pycocotools(tmp_path, name):
    gt, results, reference = _case(name, "coco")
    ours = _ours(tmp_path, gt, results, crowd=False)
    np.testing.assert_allclose(ours, reference, rtol=0, atol=1e-9, err_msg=name)


@pytest.mark.filterwarnings("ignore:Found annotation id 0")  # faster-coco-eval's, expected
@pytest.mark.parametrize(
    "name",
    ["scores0", "all_values0", "negative_scores", "nan_scores", "many_scores0"]
    + ["scores0_hard_image", "scores0_over_max_dets", "gt_scores0", "gt_id0", "gt_id0_perfect"],
)
def test_faster_coco_eval_alone_differs_on_the_hard_cases(name):
    """These cases would catch a missing filter or renumbering: without them,
    faster-coco-eval scores differently from xtcocotools."""
    gt, results, reference = _case(name, "crowdpose")
    assert np.max(np.abs(np.subtract(_faster_coco_eval_alone(gt, results), reference))) > 1e-3


def test_fixture_covers_the_issue_cases():
    def crowd(name):
        return CASES[name]["crowdpose"]["xtcocotools"]

    def coco(name):
        return CASES[name]["coco"]["pycocotools"]

    # GT coordinates with all keypoint scores 0: not counted on CrowdPose, counted on COCO.
    assert crowd("gt_scores0")[0] == 0.0 and coco("gt_scores0")[0] == pytest.approx(1.0)
    assert crowd("gt_scores1")[0] == pytest.approx(1.0)
    # A person with GT id 0 is matched by xtcocotools; pycocotools (so our COCO path too)
    # marks "unmatched" with 0 and never counts that person.
    assert min(ann["id"] for ann in _gt("gt_id0")["annotations"]) == 0
    assert crowd("gt_id0_perfect") == pytest.approx([1.0] * 9)
    assert coco("gt_id0_perfect")[0] < 0.9
    # NaN scores survive the JSON round trip as a marker.
    _, results, _ = _case("nan_scores", "crowdpose")
    assert np.isnan(results[0]["keypoints"][2::3]).all()
    # Crowd levels: easy < 0.2 <= medium < 0.8 <= hard; an empty level averages to -1.
    images = _gt("crowd_boundaries")["images"]
    assert {0.2, 0.8} <= {image["crowdIndex"] for image in images}
    assert crowd("crowd_boundaries")[6:] != crowd("base")[6:]
    assert crowd("no_hard")[8] == -1.0 and crowd("no_hard")[6] != -1.0
    assert crowd("all_hard")[6:8] == [-1.0, -1.0] and crowd("all_hard")[8] != -1.0


def _crowd_gt_file(tmp_path, edit) -> str:
    gt = copy.deepcopy(_gt("base"))
    edit(gt["annotations"][1])
    path = tmp_path / "gt.json"
    path.write_text(json.dumps(gt))
    return str(path)


def test_crowdpose_gt_without_num_keypoints_is_refused(tmp_path):
    """xtcocotools raises KeyError; faster-coco-eval would take it as 0 (person ignored)."""
    path = _crowd_gt_file(tmp_path, lambda ann: ann.pop("num_keypoints"))
    _, results, _ = _case("base", "crowdpose")
    with pytest.raises(ValueError, match=r"gt\.json: annotation id 198196 has no 'num_keypoints'"):
        keypoint_ap(path, results, CROWDPOSE["sigmas"], crowd=True)


def test_crowdpose_gt_with_a_negative_id_is_refused(tmp_path):
    """xtcocotools counts a match to a negative id as a false positive."""
    path = _crowd_gt_file(tmp_path, lambda ann: ann.update(id=-3))
    _, results, _ = _case("base", "crowdpose")
    with pytest.raises(ValueError, match="annotation id -3 is negative"):
        keypoint_ap(path, results, CROWDPOSE["sigmas"], crowd=True)
