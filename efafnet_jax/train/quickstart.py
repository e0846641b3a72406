"""The generated dataset under the workdir, the end-of-run evaluation, the quickstart report."""

from __future__ import annotations

import json

import jax
import ml_collections
from etils import epath

from efafnet_jax.data.splits import has_split
from efafnet_jax.data.synthetic import generate
from efafnet_jax.evaluation.evaluator import Evaluator
from efafnet_jax.evaluation.pictures import write_pictures


def prepare_generated_data(
    config: ml_collections.ConfigDict, workdir: str
) -> ml_collections.ConfigDict:
    """With data.generated, writes the dataset to <workdir>/data once and points data.* at
    it (the workdir a folder or a URL)."""
    if not config.data.generated:
        return config
    root = epath.Path(workdir) / "data"
    spec = config.data.generated_spec
    train_ann = root / "annotations" / "person_keypoints_train.json"
    if jax.process_index() == 0 and not train_ann.is_file():
        generate(str(root), spec.train, spec.val, spec.seed)
    config = config.copy_and_resolve_references()
    config.data.train_ann = str(train_ann)
    config.data.train_images = str(root / "images" / "train")
    config.data.val_ann = str(root / "annotations" / "person_keypoints_val.json")
    config.data.val_images = str(root / "images" / "val")
    config.data.val_detections = ""
    return config


def final_evaluation(
    config: ml_collections.ConfigDict, workdir: str, result: dict, wall_s: float
) -> tuple[dict, Evaluator | None]:
    """The run's summary: steps and wall time, plus the final validation's metrics
    when the data has a val split (results/val_keypoints.json and val_metrics.json)."""
    summary = {"steps": result["steps"], "wall_s": round(wall_s, 1)}
    if not has_split(config.data, "val"):
        return summary, None
    # The loop's evaluator has read the val split and compiled the model already.
    evaluator = result.get("evaluator") or Evaluator(config)
    metrics, _ = evaluator.run(
        result["model"], result["state"].variables(), workdir, progress=False
    )
    return {**metrics, **summary}, evaluator


def write_quickstart_report(workdir: str, summary: dict, evaluator: Evaluator) -> None:
    """The quickstart's report: results/final_metrics.json, skeleton pictures, one line."""
    folder = epath.Path(workdir) / "results"
    (folder / "final_metrics.json").write_text(json.dumps(summary, indent=1))
    results = json.loads((folder / "val_keypoints.json").read_text())
    write_pictures(
        str(folder / "vis"),
        4,
        results,
        evaluator.records,
        evaluator.spec,
        evaluator.records,
    )
    print(
        f"final AP {summary.get('AP', float('nan')):.4f} after {summary['steps']} steps, "
        f"{summary['wall_s']:.0f} s"
    )
