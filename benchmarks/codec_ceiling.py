"""The ceiling AP of each codec: training targets decoded as if they were predictions.

    python benchmarks/codec_ceiling.py [--config quickstart] [--json]

On the generated val split that the quickstart evaluates (GT boxes), each person's
target heatmaps are made by the data pipeline with the codec's encoding and geometry,
then decoded by the codec's decoder and scored by the evaluator's metric. This is what
the heatmap resolution and the codec alone cost: a model that reproduced its targets
exactly would score this. Rows: HRNet's codec (the paper's), DARK's decoding, DARK's
unbiased targets and decoding, then UDP's geometry with each kind of target and decoder
(UDP's own targets and refinement with `dark`: mmpose's `UDPHeatmap`). DARK blurs with
the config's `eval.dark_kernel`.
"""

from __future__ import annotations

import json
import os
import tempfile

import numpy as np
from absl import flags

from efafnet_jax.cli import define_common_flags, run
from efafnet_jax.data.codec import decode
from efafnet_jax.data.pipeline import build_pipeline
from efafnet_jax.data.splits import sample_config, split_images
from efafnet_jax.data.synthetic import generate
from efafnet_jax.evaluation.evaluator import Evaluator

# (name, data.target_encoding, data.udp, eval.decoder)
CODECS = (
    ("standard", "", False, "quarter_offset"),
    ("DARK decoding", "", False, "dark"),
    ("unbiased targets, quarter offset", "unbiased", False, "quarter_offset"),
    ("DARK (unbiased targets + decoding)", "unbiased", False, "dark"),
    ("UDP (its own unbiased targets), quarter offset", "", True, "quarter_offset"),
    ("UDP (its targets and refinement, the reference)", "", True, "dark"),
    ("UDP geometry, HRNet's rounded targets", "msra", True, "quarter_offset"),
)


def ceiling(config, encoding: str, udp: bool, decoder: str) -> dict:
    """Metrics of the val split's targets decoded as predictions."""
    config = config.copy_and_resolve_references()
    config.data.target_encoding, config.data.udp, config.eval.decoder = encoding, udp, decoder
    evaluator = Evaluator(config)
    keypoints = np.full((len(evaluator.records), evaluator.spec.num_joints, 3), np.nan)
    batches = build_pipeline(
        evaluator.records,
        evaluator.spec,
        sample_config(config.data),
        split_images(config.data, "val"),
        batch_size=64,
        train=False,
    )
    for batch in batches:
        coords, scores = decode(
            batch["target"],
            batch["center"],
            batch["scale"],
            True,
            decoder,
            config.data.sigma,
            udp,
            config.eval.dark_kernel,
        )
        rows = batch["record_index"][batch["valid"]]
        keypoints[rows, :, :2] = coords[batch["valid"]]
        keypoints[rows, :, 2] = scores[batch["valid"]]
    return evaluator.metrics(keypoints)


def main(argv):
    del argv
    config = flags.FLAGS.config
    spec = config.data.generated_spec
    with tempfile.TemporaryDirectory() as root:
        # The val split does not depend on the train count (synthetic.write_split's seeds).
        generate(root, train=0, val=spec.val, seed=spec.seed)
        d = config.data
        d.val_ann = os.path.join(root, "annotations", "person_keypoints_val.json")
        d.val_images, d.val_detections = os.path.join(root, "images", "val"), ""
        rows = {name: ceiling(config, *codec) for name, *codec in CODECS}
    height, width = config.data.crop_hw
    print(f"ceiling AP on the generated val split ({spec.val} images), {height}x{width} input:")
    for name, metrics in rows.items():
        print(f"  {name:<40} AP {metrics['AP']:.3f}  AP50 {metrics['AP50']:.3f}  "
              f"AP75 {metrics['AP75']:.3f}")  # fmt: skip
    if flags.FLAGS.json:
        print(json.dumps({name: metrics["AP"] for name, metrics in rows.items()}))


if __name__ == "__main__":
    define_common_flags(default_config="quickstart")
    run(main)
