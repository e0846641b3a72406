"""Start-up on a TFDS split: the bytes `load_split` reads and its time, from the
annotations file beside the shards against reading every example, images included
(how a dataset built before #28 is read).

    python benchmarks/tfds_startup.py [--images 20000] [--workdir /tmp/tfds_startup]
        [--repeats 5] [--baseline_source FILE] [--json]

Generates a COCO-format dataset of --images training images with
`efafnet_jax.data.synthetic` (real JPEGs: 320x240, 256x256 or 240x320, quality 90)
and builds it as TFDS coco_keypoints (ArrayRecord, 256 MiB shards), both under
--workdir, where the next run finds them. Each measurement is a fresh process that
imports what `load_split` needs, then times one `load_split` of the train split and
reads /proc/self/io around it: rchar, the bytes its read calls returned (page cache
hits included), and read_bytes, what came from storage (page cache misses only, so
near zero once the files are cached; the cache cannot be dropped here). "full read"
moves the annotations file away for its process, so that `load_split` reads the
dataset as it reads one built before #28. --baseline_source times another copy of
efafnet_jax/data/tfds/source.py as a third way, e.g. the code before #28:
`git show af6cbfd:efafnet_jax/data/tfds/source.py > /tmp/source_before.py`.
The ways alternate within each repeat; medians are reported.
"""

from __future__ import annotations

import json
import pathlib
import statistics
import subprocess
import sys
import time

from absl import app, flags

_IMAGES = flags.DEFINE_integer("images", 20000, "Training images to generate (at least 1).")
_WORKDIR = flags.DEFINE_string(
    "workdir", "/tmp/tfds_startup", "Generated and built data, kept for the next run."
)
_REPEATS = flags.DEFINE_integer("repeats", 5, "Measurements of each way, alternating.")
_BASELINE = flags.DEFINE_string(
    "baseline_source", None, "Another source.py whose load_split is timed too."
)
_JSON = flags.DEFINE_bool("json", False, "Print one line of JSON as the last line of stdout.")

NAME, SPLIT = "coco_keypoints", "train"

# One measurement, in its own process: argv = data_dir, and optionally a source.py.
MEASURE = """
import hashlib, importlib.util, json, sys, time

import tensorflow_datasets as tfds
from tensorflow_datasets.core.data_sources import array_record  # the full read's reader

from efafnet_jax.data.tfds import builders, source

if len(sys.argv) > 2:
    spec = importlib.util.spec_from_file_location("baseline_source", sys.argv[2])
    source = sys.modules[spec.name] = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(source)


def counters():
    with open("/proc/self/io") as f:
        return {key: int(value) for key, value in (line.split(": ") for line in f)}


before, start = counters(), time.perf_counter()
split = source.load_split("coco_keypoints", sys.argv[1], "train")
seconds, after = time.perf_counter() - start, counters()
print(json.dumps({
    "seconds": seconds,
    "rchar": after["rchar"] - before["rchar"],
    "read_bytes": after["read_bytes"] - before["read_bytes"],
    "images": len(split.content["images"]),
    "annotations": len(split.content["annotations"]),
    "content_sha256": hashlib.sha256(json.dumps(split.content).encode()).hexdigest(),
}))
"""


def built_dataset(workdir: pathlib.Path, images: int) -> tuple[pathlib.Path, str, pathlib.Path]:
    """(the generated images, the TFDS data dir, the dataset's folder): generated and
    built unless there."""
    from efafnet_jax.data.records import BadRecordError
    from efafnet_jax.data.synthetic import generate
    from efafnet_jax.data.tfds.build import build
    from efafnet_jax.data.tfds.source import prepared_builder

    generated = workdir / f"generated_{images}"
    data_dir = str(workdir / f"tfds_{images}")
    if not (generated / "annotations" / "person_keypoints_train.json").is_file():
        start = time.perf_counter()
        generate(str(generated), train=images, val=0, seed=0)
        print(f"generated {images} images in {time.perf_counter() - start:.0f} s")
    try:
        builder = prepared_builder(NAME, data_dir)
    except BadRecordError:
        start = time.perf_counter()
        builder = build(NAME, str(generated), data_dir, splits=(SPLIT,))
        print(f"built {data_dir} in {time.perf_counter() - start:.0f} s")
    return generated / "images" / SPLIT, data_dir, pathlib.Path(builder.data_dir)


def measure_once(data_dir: str, source_file: str | None) -> dict:
    """One load_split in a fresh process: seconds and the /proc/self/io deltas."""
    command = [sys.executable, "-c", MEASURE, data_dir, *([source_file] if source_file else [])]
    proc = subprocess.run(command, capture_output=True, text=True, check=False)
    if proc.returncode:
        raise RuntimeError(f"measurement failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def measure(data_dir: str, annotations: pathlib.Path, repeats: int, baseline: str | None):
    """Per way, the measurements of `repeats` alternating rounds."""
    hidden = annotations.with_name(annotations.name + ".hidden")
    runs = {"annotations file": [], "full read": []}
    if baseline:
        runs["baseline source"] = []
    for _ in range(repeats):
        runs["annotations file"].append(measure_once(data_dir, None))
        annotations.rename(hidden)
        try:
            runs["full read"].append(measure_once(data_dir, None))
        finally:
            hidden.rename(annotations)
        if baseline:
            runs["baseline source"].append(measure_once(data_dir, baseline))
    return runs


def summary(runs: list[dict]) -> dict:
    """Medians and extremes of one way's measurements."""
    seconds = [run["seconds"] for run in runs]
    return {
        "seconds_median": statistics.median(seconds),
        "seconds_min": min(seconds),
        "seconds_max": max(seconds),
        "rchar_median": statistics.median(run["rchar"] for run in runs),
        "read_bytes_max": max(run["read_bytes"] for run in runs),
        "annotations": runs[0]["annotations"],
    }


def main(argv):
    del argv
    from efafnet_jax.data.tfds.annotations import annotations_path

    if _IMAGES.value < 1:
        raise app.UsageError("--images must be at least 1")
    image_dir, data_dir, folder = built_dataset(pathlib.Path(_WORKDIR.value), _IMAGES.value)
    annotations = pathlib.Path(annotations_path(folder, NAME, SPLIT))
    shard_bytes = sum(p.stat().st_size for p in folder.glob(f"{NAME}-{SPLIT}.array_record-*"))
    image_bytes = sum(p.stat().st_size for p in image_dir.iterdir())
    runs = measure(data_dir, annotations, _REPEATS.value, _BASELINE.value)
    contents = {run["content_sha256"] for measured in runs.values() for run in measured}
    if len(contents) != 1:
        raise RuntimeError(f"the ways gave different splits: {sorted(contents)}")
    result = {
        "images": _IMAGES.value,
        "image_bytes": image_bytes,
        "shard_bytes": shard_bytes,
        "annotations_file_bytes": annotations.stat().st_size,
        "repeats": _REPEATS.value,
        **{way: summary(measured) for way, measured in runs.items()},
    }
    print(
        f"{_IMAGES.value} images: JPEGs {image_bytes / 1e6:.1f} MB, shards "
        f"{shard_bytes / 1e6:.1f} MB, annotations file {annotations.stat().st_size / 1e6:.2f} MB"
    )
    for way in runs:
        s = result[way]
        print(
            f"{way:17s} {s['seconds_median']:7.2f} s (min {s['seconds_min']:.2f}, max "
            f"{s['seconds_max']:.2f})  rchar {s['rchar_median'] / 1e6:8.1f} MB  read_bytes max "
            f"{s['read_bytes_max'] / 1e6:8.1f} MB  ({s['annotations']} annotations)"
        )
    if _JSON.value:
        print(json.dumps(result))


if __name__ == "__main__":
    sys.exit(app.run(main))
