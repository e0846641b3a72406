"""Articulated human-like figures with COCO's 17 keypoints, drawn with OpenCV.

Figures face the camera, so the person's left side is on the image's right when
upright, as in a frontal photo; a face (eyes, nose, ears) shows which way is up,
and left limbs are drawn lighter than right ones. Everything is a function of
the numpy Generator passed in.
"""

from __future__ import annotations

import dataclasses

import cv2
import numpy as np

# COCO joint ids (data/keypoints.py COCO.names).
NOSE, L_EYE, R_EYE, L_EAR, R_EAR = 0, 1, 2, 3, 4
L_SHOULDER, R_SHOULDER, L_ELBOW, R_ELBOW, L_WRIST, R_WRIST = 5, 6, 7, 8, 9, 10
L_HIP, R_HIP, L_KNEE, R_KNEE, L_ANKLE, R_ANKLE = 11, 12, 13, 14, 15, 16

# Segment lengths as fractions of the figure's height (rough adult proportions).
TORSO, NECK_TO_HEAD, UPPER_ARM, FOREARM, THIGH, SHIN = 0.30, 0.10, 0.16, 0.15, 0.23, 0.23
SHOULDER_HALF, HIP_HALF, HEAD_RADIUS = 0.10, 0.07, 0.065


@dataclasses.dataclass
class Figure:
    """A posed figure: joints [17, 2] in image pixels, its height and colours."""

    joints: np.ndarray
    height: float
    clothes: tuple[int, int, int]
    skin: tuple[int, int, int]


def _direction(angle_deg: np.ndarray | float) -> np.ndarray:
    a = np.deg2rad(angle_deg)
    return np.array([np.sin(a), np.cos(a)])  # 0 degrees points down (+y)


def pose_figure(
    rng: np.random.Generator, center: np.ndarray, height: float, rotation_deg: float
) -> Figure:
    """Random limb angles around a standing pose, rotated about the pelvis."""
    pts = np.zeros((17, 2))
    neck = np.array([0.0, -TORSO])
    pts[L_SHOULDER] = neck + [SHOULDER_HALF, 0.02]
    pts[R_SHOULDER] = neck + [-SHOULDER_HALF, 0.02]
    pts[L_HIP], pts[R_HIP] = [HIP_HALF, 0.0], [-HIP_HALF, 0.0]
    for side, shoulder, elbow, wrist in (
        (1, L_SHOULDER, L_ELBOW, L_WRIST),
        (-1, R_SHOULDER, R_ELBOW, R_WRIST),
    ):
        up = rng.uniform(-20, 160)  # upper arm: from hanging down to raised overhead
        bend = rng.uniform(0, 130)
        pts[elbow] = pts[shoulder] + UPPER_ARM * _direction(side * up)
        pts[wrist] = pts[elbow] + FOREARM * _direction(side * (up + bend))
    for side, hip, knee, ankle in ((1, L_HIP, L_KNEE, L_ANKLE), (-1, R_HIP, R_KNEE, R_ANKLE)):
        out = rng.uniform(-10, 45)
        bend = rng.uniform(0, 80)
        pts[knee] = pts[hip] + THIGH * _direction(side * out)
        pts[ankle] = pts[knee] + SHIN * _direction(side * (out - bend * 0.5))
    head = neck + [0.0, -NECK_TO_HEAD]
    yaw = rng.uniform(-0.5, 0.5)  # turns the face a little; ears shift with it
    pts[NOSE] = head + [0.03 * yaw, 0.012]
    pts[L_EYE], pts[R_EYE] = (
        head + [0.025 + 0.02 * yaw, -0.012],
        head + [-0.025 + 0.02 * yaw, -0.012],
    )
    pts[L_EAR], pts[R_EAR] = (
        head + [HEAD_RADIUS - 0.01 * yaw, 0.0],
        head + [-HEAD_RADIUS - 0.01 * yaw, 0.0],
    )
    a = np.deg2rad(rotation_deg)
    rot = np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])
    joints = pts @ rot.T * height + center
    clothes = tuple(int(v) for v in rng.integers(40, 216, 3))
    skin = tuple(int(v) for v in rng.integers(120, 240, 3))
    return Figure(joints, height, clothes, skin)


def _shade(color: tuple[int, int, int], factor: float) -> tuple[int, int, int]:
    return tuple(int(np.clip(c * factor, 0, 255)) for c in color)


def draw_figure(canvas: np.ndarray, mask: np.ndarray, figure: Figure, label: int) -> None:
    """Draws `figure` on `canvas` (BGR) and writes `label` into `mask` where it lands."""
    j = figure.joints
    thick = max(2, int(round(0.05 * figure.height)))
    head_center = (j[L_EAR] + j[R_EAR]) / 2
    head_r = max(2, int(round(HEAD_RADIUS * figure.height)))

    def line(a, b, color, width):
        p, q = tuple(np.round(j[a]).astype(int)), tuple(np.round(j[b]).astype(int))
        cv2.line(canvas, p, q, color, width, cv2.LINE_AA)
        cv2.line(mask, p, q, label, width)

    torso = np.round(j[[L_SHOULDER, R_SHOULDER, R_HIP, L_HIP]]).astype(np.int32)
    neck = np.round((j[L_SHOULDER] + j[R_SHOULDER]) / 2).astype(int)
    # Right limbs darker, left limbs lighter: the side is visible in the pixels.
    for (a, b), side in (
        ((R_HIP, R_KNEE), 0.6),
        ((R_KNEE, R_ANKLE), 0.6),
        ((L_HIP, L_KNEE), 1.4),
        ((L_KNEE, L_ANKLE), 1.4),
    ):
        line(a, b, _shade(figure.clothes, side), thick + 1)
    cv2.fillConvexPoly(canvas, torso, figure.clothes, cv2.LINE_AA)
    cv2.fillConvexPoly(mask, torso, label)
    cv2.line(canvas, tuple(neck), tuple(np.round(head_center).astype(int)), figure.skin, thick)
    cv2.line(mask, tuple(neck), tuple(np.round(head_center).astype(int)), label, thick)
    for (a, b), side in (
        ((R_SHOULDER, R_ELBOW), 0.6),
        ((R_ELBOW, R_WRIST), 0.6),
        ((L_SHOULDER, L_ELBOW), 1.4),
        ((L_ELBOW, L_WRIST), 1.4),
    ):
        line(a, b, _shade(figure.clothes, side), thick)
    for wrist in (L_WRIST, R_WRIST):
        center = tuple(np.round(j[wrist]).astype(int))
        cv2.circle(canvas, center, max(1, thick // 2 + 1), figure.skin, -1, cv2.LINE_AA)
        cv2.circle(mask, center, max(1, thick // 2 + 1), label, -1)
    hc = tuple(np.round(head_center).astype(int))
    cv2.circle(canvas, hc, head_r, figure.skin, -1, cv2.LINE_AA)
    cv2.circle(mask, hc, head_r, label, -1)
    dot = max(1, head_r // 4)
    for ear in (L_EAR, R_EAR):
        cv2.circle(canvas, tuple(np.round(j[ear]).astype(int)), dot, _shade(figure.skin, 0.7), -1)
    for eye in (L_EYE, R_EYE):
        cv2.circle(canvas, tuple(np.round(j[eye]).astype(int)), dot, (30, 30, 30), -1)
    cv2.circle(canvas, tuple(np.round(j[NOSE]).astype(int)), dot, (40, 40, 170), -1)


def textured_background(rng: np.random.Generator, width: int, height: int) -> np.ndarray:
    """Smooth colour noise, clutter shapes and grain: [H, W, 3] uint8 BGR."""
    coarse = rng.uniform(0, 255, size=(4, 4, 3)).astype(np.float32)
    image = cv2.resize(coarse, (width, height), interpolation=cv2.INTER_CUBIC)
    for _ in range(int(rng.integers(3, 9))):
        color = tuple(float(v) for v in rng.uniform(0, 255, 3))
        x, y = int(rng.integers(0, width)), int(rng.integers(0, height))
        if rng.random() < 0.5:
            cv2.rectangle(
                image,
                (x, y),
                (x + int(rng.integers(5, width // 3)), y + int(rng.integers(5, height // 3))),
                color,
                -1,
            )
        else:
            cv2.circle(image, (x, y), int(rng.integers(4, min(width, height) // 5)), color, -1)
    image += rng.normal(0, 8, size=image.shape).astype(np.float32)
    return np.clip(image, 0, 255).astype(np.uint8)
