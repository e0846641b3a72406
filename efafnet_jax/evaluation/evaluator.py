"""The evaluator that eval.py wraps and the training loop calls for periodic AP."""

from __future__ import annotations

import json
import os
import tempfile
from collections import defaultdict

import jax
import ml_collections
import numpy as np
from etils import epath

from efafnet_jax.data.coco_fields import fields_the_metric_reads
from efafnet_jax.data.coco_format import read_coco_keypoints
from efafnet_jax.data.codec import decode, flip_test_shift
from efafnet_jax.data.json_files import load_json
from efafnet_jax.data.keypoints import KeypointSpec
from efafnet_jax.data.mpii import headboxes_from_official, mat_contents, read_gt_valid
from efafnet_jax.data.pipeline import HostShard, build_pipeline
from efafnet_jax.data.records import BadRecordError, PersonRecord, ReadSummary
from efafnet_jax.data.splits import (
    read_split,
    sample_config,
    split_annotations,
    split_images,
    tfds_split,
)
from efafnet_jax.evaluation.coco_metric import keypoint_ap
from efafnet_jax.evaluation.heatmaps import make_heatmap_fn
from efafnet_jax.evaluation.mpii_metric import pckh
from efafnet_jax.evaluation.nms import oks_nms, rescore, soft_oks_nms
from efafnet_jax.progress import progress_bar
from efafnet_jax.sharding import data_mesh, global_batch, local_rows, prefetched


class Evaluator:
    """Runs a model over a split and scores it with the dataset's protocol.

    COCO and CrowdPose: flip test, argmax + quarter offset, box x keypoint
    rescoring, OKS-NMS per image, then AP. MPII: the same decoding, no NMS, PCKh.
    """

    def __init__(
        self,
        config: ml_collections.ConfigDict,
        records: list[PersonRecord] | None = None,
        spec: KeypointSpec | None = None,
    ):
        self.config = config
        skipped_persons = 0
        summary = None
        if records is None:
            records, summary, spec = read_split(config.data, "val")
            skipped_persons = len(summary.skipped)
        self.records, self.spec = records, spec
        self.sample_config = sample_config(config.data)
        # Checked before inference: everything the metric needs, and the GT as the
        # reader accepted it (the metric must not trip over a record the reader skipped).
        self.skipped = {"skipped_persons": skipped_persons, "skipped_annotations": 0}
        self.metric_gt_file = None
        if config.data.dataset != "mpii":
            self.metric_gt_file, self.skipped["skipped_annotations"] = metric_ground_truth(
                config.data, spec, summary
            )
        # One jitted heatmap function per (model, mesh), reused by every periodic
        # validation: built anew each time, it would compile anew each time.
        self._heatmap_fns: dict = {}

    def heatmap_fn(self, model, mesh):
        """The jitted (variables, images) -> heatmaps of `model` on `mesh`, built once."""
        key = (model, mesh)
        if key not in self._heatmap_fns:
            e = self.config.eval
            shift = flip_test_shift(e.shift_heatmap, self.config.data.udp)
            self._heatmap_fns[key] = make_heatmap_fn(
                model, self.spec, self.config.data.sigma, e.flip_test, shift, mesh
            )
        return self._heatmap_fns[key]

    def predict(self, model, variables, mesh=None, progress: bool = True) -> np.ndarray:
        """Keypoints [N, K, 3] (x, y, score) in image pixels, in record order; NaN for
        persons skipped under on_bad_record=skip."""
        e = self.config.eval
        mesh = mesh or data_mesh()
        if e.batch_size % len(mesh.local_devices):
            raise ValueError(
                f"eval.batch_size={e.batch_size} (crops per process) is not a multiple of "
                f"this process's {len(mesh.local_devices)} devices"
            )
        heatmap_fn = self.heatmap_fn(model, mesh)
        shard = HostShard(jax.process_index(), jax.process_count())
        batches = build_pipeline(
            self.records,
            self.spec,
            self.sample_config,
            split_images(self.config.data, "val"),
            batch_size=e.batch_size,
            train=False,
            workers=e.workers,
            shard=shard,
            on_bad_record=self.config.data.on_bad_record,
        )
        total = -(-len(self.records) // (e.batch_size * shard.count))
        parts = []
        bar = None
        if progress and jax.process_index() == 0:
            # Counted in crops of every host: a batch is batch_size crops per host.
            bar = progress_bar(
                total, "eval", "crop", lines=10, unit_scale=e.batch_size * shard.count
            )

        def finish(step: int, heatmaps: jax.Array, batch: dict) -> None:
            coords, scores = decode(
                local_rows(heatmaps),
                batch["center"],
                batch["scale"],
                e.post_process,
                e.decoder,
                self.config.data.sigma,
                self.config.data.udp,
                e.dark_kernel,
            )
            parts.append((batch["record_index"], coords, scores, batch["valid"], batch["skipped"]))
            if bar is not None:
                bar.update(1)

        # One batch behind: the host decodes batch i while the device runs batch i+1,
        # and the images of the next batches are already on the device.
        pending = None
        on_device = prefetched(batches, lambda b: {**b, "image": global_batch(mesh, b["image"])})
        for step, batch in enumerate(on_device, start=1):
            heatmaps = heatmap_fn(variables, batch["image"])
            if pending:
                finish(*pending)
            pending = (step, heatmaps, batch)
        finish(*pending)
        if bar is not None:
            bar.close()
        rows = tuple(np.concatenate(p) for p in zip(*parts, strict=True))
        if shard.count > 1:
            from jax.experimental import multihost_utils

            # Every host holds the same number of rows (its share, padded to whole
            # batches; `valid` marks the real ones), so all call the all-gather with
            # the same shapes; the padding is dropped after it.
            rows = tuple(np.concatenate(list(a)) for a in multihost_utils.process_allgather(rows))
        index, coords, scores, valid, skipped = rows
        keypoints = np.zeros((len(self.records), self.spec.num_joints, 3))
        keypoints[index[valid], :, :2] = coords[valid]
        keypoints[index[valid], :, 2] = scores[valid]
        # A person whose image could not be used (on_bad_record=skip) has no answer:
        # NaN, left out of the results and counted, never scored as a zero prediction.
        keypoints[index[skipped]] = np.nan
        return keypoints

    def coco_results(self, keypoints: np.ndarray) -> list[dict]:
        """Rescored, OKS-NMSed persons in the COCO results format."""
        e = self.config.eval
        scores = rescore(
            np.array([r.box_score for r in self.records]), keypoints[..., 2], e.in_vis_threshold
        )
        # Reference area for OKS-NMS: the padded crop box, prod(scale * 200).
        areas = np.array([np.prod(np.asarray(r.scale) * 200.0) for r in self.records])
        by_image = defaultdict(list)
        for i, record in enumerate(self.records):
            if not np.isnan(keypoints[i]).any():
                by_image[record.image_id].append(i)
        sigmas = np.asarray(self.spec.sigmas)
        results = []
        for image_id, members in by_image.items():
            members = np.asarray(members)
            nms = soft_oks_nms if e.soft_nms else oks_nms
            kept = nms(keypoints[members], scores[members], areas[members], sigmas, e.oks_threshold)
            for i in members[kept] if kept else members:
                results.append(
                    {
                        "image_id": int(image_id),
                        "category_id": 1,
                        "keypoints": [round(float(v), 3) for v in keypoints[i].ravel()],
                        "score": float(scores[i]),
                    }
                )
        return results

    def metrics(self, keypoints: np.ndarray, results: list[dict] | None = None) -> dict:
        """AP/AR (COCO, CrowdPose) or PCKh (MPII) of `keypoints`."""
        data = self.config.data
        if data.dataset == "mpii":
            return self._pckh(keypoints)
        results = self.coco_results(keypoints) if results is None else results
        return keypoint_ap(
            self.metric_gt_file, results, self.spec.sigmas, crowd=data.dataset == "crowdpose"
        )

    def _pckh(self, keypoints: np.ndarray) -> dict:
        preds = keypoints[..., :2]
        if self.config.data.source == "tfds":  # gt_valid.mat's columns, stored with the split
            origin = f"TFDS {self.config.data.tfds_name} val"
            mat = tfds_split(self.config.data, "val").pckh
        else:
            origin = self.config.data.mpii_headboxes
            if not origin or not epath.Path(origin).is_file():
                raise FileNotFoundError(f"PCKh needs head boxes: data.mpii_headboxes={origin!r}")
            if "RELEASE" in _mat_keys(origin):
                boxes = headboxes_from_official(origin, self.records)
                gt = np.stack([r.joints for r in self.records])
                visible = np.stack([r.visibility for r in self.records]) > 0
                return pckh(preds, gt, visible, boxes)
            mat = read_gt_valid(origin)
        if len(mat["headboxes"]) != len(preds):
            raise ValueError(
                f"{origin} has {len(mat['headboxes'])} persons, the split has {len(preds)}"
            )
        return pckh(preds, mat["joints"] - 1, ~mat["joint_missing"], mat["headboxes"])

    def run(
        self,
        model,
        variables,
        out_dir: str | None = None,
        split: str = "val",
        mesh=None,
        progress: bool = True,
    ) -> tuple[dict, np.ndarray]:
        """(metrics, keypoints [N, K, 3]): `predict` and the metrics; on host 0 it also
        writes results/<split>_keypoints.json and _metrics.json under `out_dir` (a folder
        or a URL)."""
        keypoints = self.predict(model, variables, mesh, progress)
        results = None if self.config.data.dataset == "mpii" else self.coco_results(keypoints)
        metrics = self.metrics(keypoints, results)
        unanswered = int(np.isnan(keypoints).any(axis=(1, 2)).sum())
        metrics["skipped_persons"] = self.skipped["skipped_persons"] + unanswered
        metrics["skipped_annotations"] = self.skipped["skipped_annotations"]
        if out_dir and jax.process_index() == 0:
            folder = epath.Path(out_dir) / "results"
            folder.mkdir(parents=True, exist_ok=True)
            if results is None:
                results = [
                    {
                        "image_id": r.image_id,
                        "image": epath.Path(r.image_path).name,
                        "keypoints": keypoints[i].ravel().round(3).tolist(),
                    }
                    for i, r in enumerate(self.records)
                    if not np.isnan(keypoints[i]).any()
                ]
            (folder / f"{split}_keypoints.json").write_text(json.dumps(results))
            (folder / f"{split}_metrics.json").write_text(json.dumps(metrics, indent=1))
        return metrics, keypoints


def metric_ground_truth(
    data: ml_collections.ConfigDict, spec: KeypointSpec, summary: ReadSummary | None
) -> tuple[str, int]:
    """(GT file the metric scores against, annotations left out of it) for COCO/CrowdPose.

    The GT the reader accepted: annotations it skipped as bad (on_bad_record=skip)
    are dropped from a copy, which is what the metric reads; without any, the file
    itself. With detections the GT was not read for the records, so it is read here
    under the same policy. CrowdPose's crowd indices are checked here, before
    inference, not by the metric after it. A TFDS split's GT is written from the
    split (the file it was built from, less what its build skipped).
    """
    ann_file, content = split_annotations(data, "val")
    if summary is None or data.get("val_detections"):
        height, width = data.crop_hw
        _, summary = read_coco_keypoints(
            ann_file,
            data.val_images,
            spec,
            width / height,
            on_bad_record=data.on_bad_record,
            check_images=False,
            content=content,
            metric_fields=fields_the_metric_reads(data.dataset),
        )
    gt = None if content is None else dict(content)
    if data.dataset == "crowdpose":
        gt = gt or load_json(ann_file)
        for i, image in enumerate(gt.get("images", [])):
            if "crowdIndex" not in image and i not in summary.skipped_images:
                raise BadRecordError(
                    f"{ann_file}: images[{i}] (id {image.get('id')}) lacks 'crowdIndex', "
                    "which CrowdPose's AP easy/medium/hard needs"
                )
    dropped = set(summary.skipped_annotations)
    if not dropped and not summary.skipped_images and content is None:
        return ann_file, 0
    gt = gt or load_json(ann_file)
    gt["annotations"] = [a for i, a in enumerate(gt["annotations"]) if i not in dropped]
    # A repeated image id keeps its first entry, as the reader's.
    skipped_images = set(summary.skipped_images)
    gt["images"] = [image for i, image in enumerate(gt["images"]) if i not in skipped_images]
    handle, path = tempfile.mkstemp(prefix="val_gt_as_read_", suffix=".json")
    with os.fdopen(handle, "w") as f:
        json.dump(gt, f)
    return path, len(dropped)


def _mat_keys(path: str) -> list[str]:
    import scipy.io

    return [name for name, _, _ in scipy.io.whosmat(mat_contents(path, f"head-box file {path}"))]
