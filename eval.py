"""Evaluate a model on the config's validation split.

    python eval.py --config configs/coco.py:sbn,r50,256x192 \
        [--workdir DIR | --checkpoint PATH | --torch-checkpoint FILE] [--vis N] [--out DIR]

Writes DIR/results/val_keypoints.json (COCO results format) and val_metrics.json
(DIR = --out, default the workdir) and prints the metric table. Boxes: GT, or the
detections file `data.val_detections`.
"""

from __future__ import annotations

import json
import logging
import os

import jax
from absl import flags

from efafnet_jax.cli import define_common_flags, run
from efafnet_jax.data.splits import read_split
from efafnet_jax.distributed import maybe_initialize
from efafnet_jax.evaluation.evaluator import Evaluator
from efafnet_jax.evaluation.pictures import write_pictures
from efafnet_jax.models import create_model
from efafnet_jax.platform import for_this_machine
from efafnet_jax.weights import load_variables


def main(argv):
    del argv
    f = flags.FLAGS
    maybe_initialize()  # several processes: jax.distributed, before any device is used
    config = for_this_machine(f.config)
    out_dir = f.out or f.workdir
    if not out_dir:
        raise SystemExit("eval.py: give --out DIR (or --workdir)")
    model = create_model(config.model)
    variables = load_variables(
        model,
        config,
        checkpoint=f.checkpoint,
        workdir=f.workdir,
        torch_checkpoint=f.torch_checkpoint,
    )
    evaluator = Evaluator(config)
    logging.info("evaluating %d persons on %d devices", len(evaluator.records), jax.device_count())
    metrics, keypoints = evaluator.run(model, variables, out_dir)
    if jax.process_index() != 0:
        return
    width = max(len(k) for k in metrics)
    print(f"{config.name}: {len(evaluator.records)} persons, flip test {config.eval.flip_test}")
    for name, value in metrics.items():
        print(f"{name:<{width}}  {value:.4f}")
    if f.vis:
        with open(os.path.join(out_dir, "results", "val_keypoints.json")) as fp:
            results = json.load(fp)
        truth = evaluator.records  # GT boxes: the records carry the GT joints
        if config.data.val_detections:  # detections: GT comes from the annotation file
            gt_data = config.data.copy_and_resolve_references()
            gt_data.val_detections = ""
            truth = read_split(gt_data, "val")[0]
        paths = write_pictures(
            os.path.join(out_dir, "vis"), f.vis, results, evaluator.records, evaluator.spec, truth
        )
        print(f"wrote {len(paths)} pictures to {os.path.join(out_dir, 'vis')}")
    if f.json:
        print(json.dumps(metrics))


if __name__ == "__main__":
    define_common_flags()
    flags.DEFINE_string("workdir", None, "Training workdir: its latest checkpoint is used.")
    flags.DEFINE_string("checkpoint", None, "An orbax checkpoint (a step folder).")
    flags.DEFINE_string("torch_checkpoint", None, "A PyTorch state_dict, converted on the fly.")
    flags.DEFINE_integer("vis", 0, "Write this many PNGs of predicted skeletons.")
    flags.DEFINE_string("out", None, "Output folder (default: the workdir).")
    run(main)
