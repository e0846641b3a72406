"""PCKh on MPII (HRNet lib/dataset/mpii.py `evaluate`)."""

from __future__ import annotations

import numpy as np

SC_BIAS = 0.6  # head size = 0.6 x head-box diagonal
PELVIS, THORAX = 6, 7  # excluded from the means
# (name, joints) in MPII's joint order: right ankle 0 ... left wrist 15.
GROUPS = (
    ("Head", (9,)),
    ("Shoulder", (12, 13)),
    ("Elbow", (11, 14)),
    ("Wrist", (10, 15)),
    ("Hip", (2, 3)),
    ("Knee", (1, 4)),
    ("Ankle", (0, 5)),
)
# HRNet's printed "Mean@0.1" is row 11 of its thresholds np.arange(0, 0.5 + 0.01, 0.01),
# i.e. 0.11 (lib/dataset/mpii.py `evaluate`: `pckAll[11, :]`). Reported as
# "Mean@0.1_hrnet" beside our exact "Mean@0.1", for comparison with HRNet-family tables.
HRNET_MEAN_AT_01_THRESHOLD = float(np.arange(0, 0.5 + 0.01, 0.01)[11])


def pckh(
    predictions: np.ndarray,
    ground_truth: np.ndarray,
    visible: np.ndarray,
    headboxes: np.ndarray,
    thresholds=(0.5, 0.1),
) -> dict:
    """PCKh per joint group and mean, in percent, at each threshold, and
    "Mean@0.1_hrnet", the mean at HRNet's 0.11 (HRNET_MEAN_AT_01_THRESHOLD).

    predictions, ground_truth: [N, 16, 2] in the same pixel convention; visible:
    [N, 16] (not missing in the GT); headboxes [N, 2, 2] (corners). A joint counts
    when its error / (0.6 x head diagonal) <= threshold. Means are weighted by
    labelled-joint counts over all joints but pelvis and thorax, as the reference.
    """
    visible = np.asarray(visible, bool)
    head = np.linalg.norm(headboxes[:, 1] - headboxes[:, 0], axis=-1) * SC_BIAS
    error = np.linalg.norm(predictions - ground_truth, axis=-1) / head[:, None]
    count = visible.sum(axis=0).astype(np.float64)
    weights = count.copy()
    weights[[PELVIS, THORAX]] = 0
    weights /= weights.sum()

    def per_joint_at(threshold: float) -> np.ndarray:
        hits = ((error <= threshold) & visible).sum(axis=0)
        return 100.0 * hits / np.maximum(count, 1)

    result = {}
    for threshold in thresholds:
        per_joint = per_joint_at(threshold)
        suffix = "" if threshold == 0.5 else f"@{threshold:g}"
        for name, joints in GROUPS:
            result[name + suffix] = float(np.mean(per_joint[list(joints)]))
        result["Mean" + suffix] = float(np.sum(per_joint * weights))
    result["Mean@0.1_hrnet"] = float(np.sum(per_joint_at(HRNET_MEAN_AT_01_THRESHOLD) * weights))
    return result
