"""Builds a dataset as TFDS (ArrayRecord) from its released files, without TensorFlow.

    python -m efafnet_jax.data.tfds.build --dataset coco_keypoints|crowdpose|mpii \\
        --manual_dir DIR --data_dir DIR [--split train --split val] [--on_bad_record skip]

Through TFDS's Python API (`download_and_prepare`), not `tfds build`, which imports
TensorFlow. `--data_dir` may be a `gs://` path (gcsfs, in the [tfds] extra). The
dataset appears under <data_dir>/<dataset>/1.0.0 only when every split is written;
until then TFDS keeps it in an incomplete.* folder that no reader accepts.
"""

from __future__ import annotations

import json
import sys

from absl import flags

from efafnet_jax.cli import run
from efafnet_jax.data.records import BAD_RECORD_POLICIES


def build(
    dataset: str,
    manual_dir: str,
    data_dir: str,
    splits: tuple[str, ...] = (),
    on_bad_record: str = "raise",
    shard_bytes: int | None = None,
    detections: str = "",
):
    """Builds `dataset` from `manual_dir` into `data_dir`; returns the builder."""
    import tensorflow_datasets as tfds

    from efafnet_jax.data.tfds.builders import BUILDERS, DEFAULT_SHARD_BYTES

    if dataset not in BUILDERS:
        raise ValueError(f"--dataset must be one of {sorted(BUILDERS)}, got {dataset!r}")
    builder = BUILDERS[dataset](
        data_dir=data_dir,
        on_bad_record=on_bad_record,
        shard_bytes=shard_bytes or DEFAULT_SHARD_BYTES,
        splits=tuple(splits),
        detections=detections,
    )
    builder.download_and_prepare(
        file_format="array_record",
        download_config=tfds.download.DownloadConfig(manual_dir=manual_dir),
    )
    return builder


def main(argv):
    del argv
    f = flags.FLAGS
    builder = build(
        f.dataset,
        f.manual_dir,
        f.data_dir,
        tuple(f.split or ()),
        f.on_bad_record,
        f.shard_bytes,
        f.detections or "",
    )
    splits = {name: info.num_examples for name, info in builder.info.splits.items()}
    skipped = {s: m.get("skipped_records", 0) for s, m in dict(builder.info.metadata).items()}
    print(f"built {builder.name} in {builder.data_dir}: images {splits}, bad records skipped "
          f"{skipped}", file=sys.stderr)  # fmt: skip
    if f.json:
        print(json.dumps({"data_dir": str(builder.data_dir), "images": splits, "skipped": skipped}))


def cli() -> None:
    """The efafnet-build-tfds console script."""
    flags.DEFINE_enum("dataset", None, ["coco_keypoints", "crowdpose", "mpii"], "The builder.")
    flags.DEFINE_string("manual_dir", None, "The released files (layout: docs/data.md).")
    flags.DEFINE_string("data_dir", None, "TFDS data dir to write (a local path or gs://).")
    flags.DEFINE_multi_enum("split", None, ["train", "val"], "Build only this split (repeatable).")
    flags.DEFINE_enum("on_bad_record", "raise", list(BAD_RECORD_POLICIES), "Bad input policy.")
    flags.DEFINE_integer("shard_bytes", None, "Image bytes per shard (default 256 MiB).")
    flags.DEFINE_string("detections", None, "Person detections stored with the val split.")
    flags.DEFINE_bool("json", False, "Print one line of JSON as the last line of stdout.")
    flags.mark_flags_as_required(["dataset", "manual_dir", "data_dir"])
    run(main)


if __name__ == "__main__":
    cli()
