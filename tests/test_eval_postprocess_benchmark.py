"""benchmarks/eval_postprocess.py runs end to end at a tiny scale and measures a real pipeline."""

import importlib.util
import json
import subprocess
import sys

import numpy as np
import pytest
from conftest import REPO

STAGES = ("decode", "rescore", "oks_nms", "results", "cocoeval")


def _benchmark():
    path = REPO / "benchmarks" / "eval_postprocess.py"
    spec = importlib.util.spec_from_file_location("eval_postprocess", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def test_every_stage_is_timed_and_the_pipeline_scores_well(tmp_path):
    """What the command runs (its `main` prints these), in-process at 30 images."""
    benchmark = _benchmark()
    assert benchmark.STAGES == STAGES
    rng = np.random.default_rng(0)
    case = benchmark.make_case(rng, images=30, detections=400, folder=str(tmp_path))
    seconds, results, metrics = benchmark.measure(rng, case)
    assert len(case.records) == 400 and 0 < len(results) < 400  # NMS dropped some
    for stage in STAGES:
        assert seconds[stage] > 0, stage
    # Decoded keypoints land near the GT only if decode, rescoring and NMS are right
    # (decoding without the crop -> image transform gives AP ~0).
    assert metrics["AP"] > 0.5


@pytest.mark.slow
def test_the_command_reports_its_stages_settings_and_machine():
    proc = subprocess.run(
        [
            sys.executable,
            "benchmarks/eval_postprocess.py",
            "--images=50",
            "--detections=1000",
            "--json",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    for key in ("images", "detections", "total_s", "AP", "machine", "date"):
        assert key in out
    assert (out["images"], out["detections"]) == (50, 1000)
    for stage in STAGES:
        assert out[f"{stage}_s"] > 0, stage
