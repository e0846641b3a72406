"""Box x keypoint rescoring and OKS-NMS per image (HRNet lib/dataset/coco.py, lib/nms/nms.py)."""

from __future__ import annotations

import numpy as np


def rescore(
    box_scores: np.ndarray, keypoint_scores: np.ndarray, threshold: float = 0.2
) -> np.ndarray:
    """box score x mean of the keypoint scores above `threshold` (0 when none is)."""
    above = keypoint_scores > threshold
    count = above.sum(axis=1)
    mean = np.where(count > 0, (keypoint_scores * above).sum(axis=1) / np.maximum(count, 1), 0.0)
    return box_scores * mean


def oks(
    reference: np.ndarray,
    others: np.ndarray,
    reference_area: float,
    other_areas: np.ndarray,
    sigmas: np.ndarray,
) -> np.ndarray:
    """OKS of one person's keypoints [K, 2+] against others [M, K, 2+] (HRNet `oks_iou`).

    e = d^2 / (2 sigma)^2 / ((a_ref + a_other) / 2 + eps) / 2, averaged exp(-e) over
    all joints (the reference passes no visibility threshold).
    """
    variances = (np.asarray(sigmas) * 2) ** 2
    d2 = ((others[..., :2] - reference[None, :, :2]) ** 2).sum(-1)
    scale = (reference_area + other_areas)[:, None] / 2 + np.spacing(1)
    return np.exp(-d2 / variances / scale / 2).mean(axis=1)


def oks_nms(
    keypoints: np.ndarray,
    scores: np.ndarray,
    areas: np.ndarray,
    sigmas: np.ndarray,
    threshold: float = 0.9,
) -> list[int]:
    """Greedy NMS: keep the best, drop those with OKS > threshold to it, repeat."""
    order = np.argsort(scores, kind="stable")[::-1]
    keep = []
    while order.size:
        best = order[0]
        keep.append(int(best))
        overlap = oks(keypoints[best], keypoints[order[1:]], areas[best], areas[order[1:]], sigmas)
        order = order[1:][overlap <= threshold]
    return keep


def soft_oks_nms(
    keypoints: np.ndarray,
    scores: np.ndarray,
    areas: np.ndarray,
    sigmas: np.ndarray,
    threshold: float = 0.9,
    max_keep: int = 20,
) -> list[int]:
    """HRNet's `soft_oks_nms`: instead of dropping, decay the others' scores by
    exp(-OKS^2 / threshold) and pick the next best, up to `max_keep` persons.

    Only the order of picking changes; the persons keep their rescored scores.
    """
    order = np.argsort(scores, kind="stable")[::-1]
    decayed = np.asarray(scores, np.float64)[order]
    keep = []
    while order.size and len(keep) < max_keep:
        best = order[0]
        keep.append(int(best))
        overlap = oks(keypoints[best], keypoints[order[1:]], areas[best], areas[order[1:]], sigmas)
        decayed = decayed[1:] * np.exp(-(overlap**2) / threshold)
        resort = np.argsort(decayed, kind="stable")[::-1]
        order, decayed = order[1:][resort], decayed[resort]
    return keep
