"""benchmarks/eval_postprocess.py runs end to end at a tiny scale and measures a real pipeline."""

import json
import subprocess
import sys

from conftest import REPO

STAGES = ("decode", "rescore", "oks_nms", "results", "cocoeval")


def test_eval_postprocess_benchmark_times_every_stage_and_scores_well():
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
    # Decoded keypoints land near the GT only if decode, rescoring and NMS are right
    # (decoding without the crop -> image transform gives AP ~0).
    assert out["AP"] > 0.5
