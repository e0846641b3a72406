"""Evaluate a model on its config's validation split.

    efafnet-eval --workdir W [--checkpoint_step best|latest|N] [--out DIR] [--vis N]
    efafnet-eval --config coco:sbn,r50,256x192 (--checkpoint DIR | --torch-checkpoint FILE
        | --random_init) --out DIR

With --workdir the config is the run's own (W/config.json, --config.KEY=VALUE on top)
and the weights are W/best (the best validation score), else the latest checkpoint.
Writes DIR/results/val_keypoints.json (COCO results format) and val_metrics.json
(DIR = --out, default the workdir; either may be a gs:// URL) and prints the metric table
(and, with --json, the metrics with the evaluated checkpoint and step). Boxes: GT, or the
detections file `data.val_detections`.
"""

from __future__ import annotations

import json
import logging

import jax
from absl import flags
from etils import epath

from efafnet_jax.cli import define_common_flags, define_weight_flags, run, weights_from_flags
from efafnet_jax.data.splits import read_split
from efafnet_jax.distributed import maybe_initialize
from efafnet_jax.errors import UsageError
from efafnet_jax.evaluation.evaluator import Evaluator
from efafnet_jax.evaluation.pictures import write_pictures
from efafnet_jax.models import create_model
from efafnet_jax.platform import for_this_machine
from efafnet_jax.train.quickstart import prepare_generated_data
from efafnet_jax.weights import load_variables


def main(argv: list[str]) -> None:
    del argv
    f = flags.FLAGS
    out_dir = f.out or f.workdir
    if not out_dir:
        raise UsageError("give --out DIR (or --workdir)")
    choice = weights_from_flags()  # bad flags are refused before a backend starts
    maybe_initialize()  # several processes: jax.distributed, before any device is used
    # The generated dataset lives in the run's workdir (or, evaluated apart from one, --out).
    config = for_this_machine(prepare_generated_data(f.config, f.workdir or out_dir))
    model = create_model(config.model)
    weights = load_variables(model, config, choice)
    evaluator = Evaluator(config)
    logging.info(
        "evaluating %s (step %s): %d persons on %d devices",
        weights.source,
        weights.step,
        len(evaluator.records),
        jax.device_count(),
    )
    metrics, _ = evaluator.run(model, weights.variables, out_dir)
    if jax.process_index() != 0:
        return
    width = max(len(k) for k in metrics)
    print(
        f"{config.name}: {len(evaluator.records)} persons, flip test {config.eval.flip_test}, "
        f"weights {weights.source} (step {weights.step})"
    )
    for name, value in metrics.items():
        print(f"{name:<{width}}  {value:.4f}")
    if f.vis:
        vis_dir = epath.Path(out_dir) / "vis"
        results = json.loads((epath.Path(out_dir) / "results" / "val_keypoints.json").read_text())
        truth = evaluator.records  # GT boxes: the records carry the GT joints
        if config.data.val_detections:  # detections: GT comes from the annotation file
            gt_data = config.data.copy_and_resolve_references()
            gt_data.val_detections = ""
            truth = read_split(gt_data, "val")[0]
        paths = write_pictures(
            str(vis_dir), f.vis, results, evaluator.records, evaluator.spec, truth
        )
        print(f"wrote {len(paths)} pictures to {vis_dir}")
    if f.json:
        print(json.dumps({**metrics, "checkpoint": weights.source, "step": weights.step}))


def cli() -> None:
    """The efafnet-eval console script."""
    define_common_flags()
    define_weight_flags()
    flags.DEFINE_integer("vis", 0, "Write this many PNGs of predicted skeletons.")
    flags.DEFINE_string("out", None, "Output folder or gs:// URL (default: the workdir).")
    run(main, config_from_workdir=True)


if __name__ == "__main__":
    cli()
