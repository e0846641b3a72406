"""Keypoint sets: names, flip pairs, OKS sigmas, body halves, weights, skeleton."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import ml_collections
import numpy as np

from efafnet_jax.data.json_files import is_integer, load_json
from efafnet_jax.data.records import BadRecordError


@dataclasses.dataclass(frozen=True)
class KeypointSpec:
    """One dataset's keypoint set. Ids are 0-based indices into `names`."""

    name: str
    names: tuple[str, ...]
    flip_pairs: tuple[tuple[int, int], ...]
    sigmas: tuple[float, ...]
    upper_body_ids: tuple[int, ...]
    skeleton: tuple[tuple[int, int], ...]
    joint_weights: tuple[float, ...] | None = None

    def __post_init__(self):
        k = len(self.names)
        if len(self.sigmas) != k:
            raise ValueError(f"keypoint spec {self.name!r}: {len(self.sigmas)} sigmas, {k} joints")
        if self.joint_weights is not None and len(self.joint_weights) != k:
            raise ValueError(
                f"keypoint spec {self.name!r}: {len(self.joint_weights)} joint weights, {k} joints"
            )
        ids = [i for pair in (*self.flip_pairs, *self.skeleton) for i in pair]
        ids += list(self.upper_body_ids)
        if any(not 0 <= i < k for i in ids):
            raise ValueError(f"keypoint spec {self.name!r}: a joint id is outside 0..{k - 1}")

    @property
    def num_joints(self) -> int:
        return len(self.names)

    def flip_permutation(self) -> np.ndarray:
        """perm[i] = the joint that i becomes under a horizontal flip."""
        perm = np.arange(self.num_joints)
        for a, b in self.flip_pairs:
            perm[a], perm[b] = b, a
        return perm


# fmt: off
# COCO: names and skeleton from person_keypoints_*.json (skeleton made 0-based),
# sigmas from pycocotools, flip pairs / upper body / weights from HRNet lib/dataset/coco.py.
COCO = KeypointSpec(
    name="coco",
    names=("nose", "left_eye", "right_eye", "left_ear", "right_ear", "left_shoulder",
           "right_shoulder", "left_elbow", "right_elbow", "left_wrist", "right_wrist",
           "left_hip", "right_hip", "left_knee", "right_knee", "left_ankle", "right_ankle"),
    flip_pairs=((1, 2), (3, 4), (5, 6), (7, 8), (9, 10), (11, 12), (13, 14), (15, 16)),
    sigmas=tuple(s / 10.0 for s in (.26, .25, .25, .35, .35, .79, .79, .72, .72, .62, .62,
                                    1.07, 1.07, .87, .87, .89, .89)),
    upper_body_ids=tuple(range(11)),
    skeleton=((15, 13), (13, 11), (16, 14), (14, 12), (11, 12), (5, 11), (6, 12), (5, 6),
              (5, 7), (6, 8), (7, 9), (8, 10), (1, 2), (0, 1), (0, 2), (1, 3), (2, 4),
              (3, 5), (4, 6)),
    joint_weights=(1., 1., 1., 1., 1., 1., 1., 1.2, 1.2, 1.5, 1.5, 1., 1., 1.2, 1.2, 1.5, 1.5),
)

# CrowdPose: joint order and sigmas from the CrowdPose release / xtcocotools
# (crowdpose_sigmas); flip pairs and upper body from mmpose's crowdpose dataset info.
CROWDPOSE = KeypointSpec(
    name="crowdpose",
    names=COCO.names[5:] + ("head", "neck"),  # the 12 limb joints in COCO's order
    flip_pairs=((0, 1), (2, 3), (4, 5), (6, 7), (8, 9), (10, 11)),
    sigmas=tuple(s / 10.0 for s in (.79, .79, .72, .72, .62, .62, 1.07, 1.07, .87, .87, .89,
                                    .89, .79, .79)),
    upper_body_ids=(0, 1, 2, 3, 4, 5, 12, 13),
    skeleton=((0, 2), (2, 4), (1, 3), (3, 5), (0, 1), (0, 6), (1, 7), (6, 7), (6, 8), (8, 10),
              (7, 9), (9, 11), (12, 13), (13, 0), (13, 1)),
)

# MPII: joint order of the MPII release; flip pairs, upper body and weights from HRNet
# lib/dataset/mpii.py; sigmas from mmpose's mpii dataset info (MPII itself uses PCKh).
MPII = KeypointSpec(
    name="mpii",
    names=("right_ankle", "right_knee", "right_hip", "left_hip", "left_knee", "left_ankle",
           "pelvis", "thorax", "upper_neck", "head_top", "right_wrist", "right_elbow",
           "right_shoulder", "left_shoulder", "left_elbow", "left_wrist"),
    flip_pairs=((0, 5), (1, 4), (2, 3), (10, 15), (11, 14), (12, 13)),
    sigmas=(.089, .083, .107, .107, .083, .089, .026, .026, .026, .026, .062, .072, .179,
            .179, .072, .062),
    upper_body_ids=(7, 8, 9, 10, 11, 12, 13, 14, 15),
    skeleton=((0, 1), (1, 2), (2, 6), (6, 3), (3, 4), (4, 5), (6, 7), (7, 8), (8, 9),
              (10, 11), (11, 12), (12, 7), (7, 13), (13, 14), (14, 15)),
    joint_weights=(1.5, 1.2, 1., 1., 1.2, 1.5, 1., 1., 1., 1., 1.5, 1.2, 1., 1., 1.2, 1.5),
)
# fmt: on

KNOWN_SPECS = {spec.name: spec for spec in (COCO, CROWDPOSE, MPII)}
# Used when a custom keypoint set gives no sigmas: about the mean of COCO's.
DEFAULT_SIGMA = 0.06


def _left_right_pairs(names: Sequence[str]) -> tuple[tuple[int, int], ...]:
    index = {n: i for i, n in enumerate(names)}
    pairs = []
    for i, n in enumerate(names):
        for left, right in (("left_", "right_"), ("l_", "r_"), ("left", "right")):
            if n.startswith(left) and n.replace(left, right, 1) in index:
                pairs.append((i, index[n.replace(left, right, 1)]))
                break
    return tuple(pairs)


def spec_from_coco_category(ann_file: str, name: str = "custom") -> KeypointSpec:
    """A spec from the person category of a COCO-format file.

    Names and skeleton come from the category (skeleton 1-based there); flip pairs
    pair `left_X` with `right_X`; sigmas default to DEFAULT_SIGMA; the upper body is
    every joint before the first hip.
    """
    data = load_json(ann_file)
    categories = (data.get("categories") if isinstance(data, dict) else None) or []
    people = [c for c in categories if isinstance(c, dict) and c.get("keypoints")]
    if not people:
        raise BadRecordError(f"annotation file {ann_file}: no category with a 'keypoints' list")
    names = people[0]["keypoints"]
    edges = people[0].get("skeleton", [])
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise BadRecordError(
            f"annotation file {ann_file}: the person category's field 'keypoints' is not "
            "a list of joint names"
        )
    if not isinstance(edges, list) or not all(
        isinstance(e, list) and len(e) == 2 and all(is_integer(i) for i in e) for e in edges
    ):
        raise BadRecordError(
            f"annotation file {ann_file}: the person category's field 'skeleton' is not "
            "a list of [joint, joint] pairs of 1-based integers"
        )
    names = tuple(names)
    skeleton = tuple((a - 1, b - 1) for a, b in edges)
    hips = [i for i, n in enumerate(names) if "hip" in n]
    upper = tuple(range(hips[0])) if hips else tuple(range(len(names)))
    return KeypointSpec(
        name, names, _left_right_pairs(names), (DEFAULT_SIGMA,) * len(names), upper, skeleton
    )


def spec_from_config(data: ml_collections.ConfigDict) -> KeypointSpec:
    """The spec that `config.data` names.

    `data.dataset` in ('coco', 'crowdpose', 'mpii') selects the built-in spec, which
    wins over any file's category (CrowdPose's file carries COCO's skeleton).
    Otherwise `data.keypoints` declares it (names, flip_pairs, sigmas, skeleton,
    optional upper_body_ids and joint_weights), or, without it, the person category
    of `data.train_ann` (or `data.val_ann`) supplies it.
    """
    if data.dataset in KNOWN_SPECS:
        return KNOWN_SPECS[data.dataset]
    declared = data.get("keypoints")
    if declared:
        names = tuple(declared.names)
        return KeypointSpec(
            name=data.dataset,
            names=names,
            flip_pairs=tuple(tuple(p) for p in declared.get("flip_pairs", ())),
            sigmas=tuple(declared.get("sigmas") or (DEFAULT_SIGMA,) * len(names)),
            upper_body_ids=tuple(declared.get("upper_body_ids") or range(len(names))),
            skeleton=tuple(tuple(e) for e in declared.get("skeleton", ())),
            joint_weights=tuple(declared.joint_weights) if declared.get("joint_weights") else None,
        )
    ann_file = data.get("train_ann") or data.get("val_ann")
    if not ann_file:
        raise ValueError(
            f"data.dataset {data.dataset!r} is not one of {sorted(KNOWN_SPECS)}; "
            "declare data.keypoints or give data.train_ann / data.val_ann"
        )
    return spec_from_coco_category(ann_file, data.dataset)
