"""Keypoints of people in boxes of any image: crop, jitted heatmaps, decode, score."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import ml_collections
import numpy as np

from efafnet_jax.data.codec import decode, flip_test_shift
from efafnet_jax.data.keypoints import KeypointSpec
from efafnet_jax.data.records import PersonRecord
from efafnet_jax.data.transforms import affine_matrix, warp_crop
from efafnet_jax.evaluation.heatmaps import make_heatmap_fn
from efafnet_jax.evaluation.nms import rescore
from efafnet_jax.inference.boxes import box_record
from efafnet_jax.sharding import data_mesh, global_batch, local_rows


@dataclasses.dataclass
class PersonPoses:
    """Per person: boxes [N, 5] (x, y, w, h, score), keypoints [N, K, 3] (x, y, score)
    in image pixels, person scores [N]; crops [N, H, W, 3] RGB and heatmaps [N, h, w, K]."""

    boxes: np.ndarray
    keypoints: np.ndarray
    scores: np.ndarray
    crops: np.ndarray
    heatmaps: np.ndarray


class PosePredictor:
    """Batched, jitted inference on boxes, with the evaluation's crop and decode.

    Crops follow the training convention (HRNet's centre/scale with the aspect
    ratio and 1.25 padding, zero border outside the image); batches are padded to
    `batch_size` so one compiled function serves every image. Keypoints are not
    clipped to the box unless `clip_to_box`: evaluation does not clip (nor does the
    reference), and clipping moves the joints the model places in the crop's margin.
    """

    def __init__(
        self,
        model,
        variables: dict,
        config: ml_collections.ConfigDict,
        spec: KeypointSpec,
        flip_test: bool = True,
        batch_size: int = 32,
        clip_to_box: bool = False,
    ):
        self.variables, self.config, self.spec = variables, config, spec
        self.mesh = data_mesh()
        self.batch_size = -(-batch_size // self.mesh.size) * self.mesh.size
        self.clip_to_box = clip_to_box
        shift = flip_test_shift(config.eval.shift_heatmap, config.data.udp)
        self.heatmap_fn = make_heatmap_fn(
            model, spec, config.data.sigma, flip_test, shift, self.mesh
        )

    def crop(self, image_rgb: np.ndarray, center: np.ndarray, scale: np.ndarray) -> np.ndarray:
        """The crop [H, W, 3] uint8 of one centre and scale (the evaluation's, unaugmented)."""
        crop_hw = self.config.data.crop_hw
        matrix = affine_matrix(center, scale, 0.0, crop_hw, udp=self.config.data.udp)
        return warp_crop(image_rgb, matrix, crop_hw)

    def __call__(self, image_rgb: np.ndarray, boxes: Sequence[Sequence[float]]) -> PersonPoses:
        """Poses of the people in `boxes` ([x, y, w, h, score] each, used as given)."""
        crop_hw = self.config.data.crop_hw
        return self.on_records(
            image_rgb,
            [box_record("", box, crop_hw[1] / crop_hw[0], self.spec.num_joints) for box in boxes],
        )

    def on_records(self, image_rgb: np.ndarray, records: Sequence[PersonRecord]) -> PersonPoses:
        """Poses of the people of one RGB image, cropped at each record's centre and
        scale (a detection record's come from its extended box, as in evaluation)."""
        if not len(records):
            return _no_people(self.config, self.spec.num_joints)
        boxes = np.array([[*r.box, r.box_score] for r in records], np.float64)
        centers = np.stack([r.center for r in records])
        scales = np.stack([r.scale for r in records])
        crops = np.stack([self.crop(image_rgb, c, s) for c, s in zip(centers, scales, strict=True)])
        heatmaps = np.concatenate(
            [
                self._heatmaps(crops[i : i + self.batch_size])
                for i in range(0, len(crops), self.batch_size)
            ]
        )
        e = self.config.eval
        d = self.config.data
        coords, joint_scores = decode(
            heatmaps, centers, scales, e.post_process, e.decoder, d.sigma, d.udp, e.dark_kernel
        )
        if self.clip_to_box:
            low, high = boxes[:, None, :2], boxes[:, None, :2] + boxes[:, None, 2:4]
            coords = np.clip(coords, low, high)
        keypoints = np.concatenate([coords, joint_scores[..., None]], axis=-1)
        scores = rescore(boxes[:, 4], joint_scores, self.config.eval.in_vis_threshold)
        return PersonPoses(boxes, keypoints, scores, crops, heatmaps)

    def _heatmaps(self, crops: np.ndarray) -> np.ndarray:
        count = len(crops)
        padded = np.zeros((self.batch_size, *crops.shape[1:]), np.uint8)
        padded[:count] = crops
        out = self.heatmap_fn(self.variables, global_batch(self.mesh, padded))
        return local_rows(out)[:count]


def _no_people(config: ml_collections.ConfigDict, num_joints: int) -> PersonPoses:
    return PersonPoses(
        np.zeros((0, 5)),
        np.zeros((0, num_joints, 3)),
        np.zeros(0),
        np.zeros((0, *config.data.crop_hw, 3), np.uint8),
        np.zeros((0, *config.data.heatmap_hw, num_joints), np.float32),
    )
