"""Crops per second of one input worker against JPEG decoding alone on the same files.

    python benchmarks/input_pipeline.py [--repeats 5] [--source files|tfds] [--json]

One process does what one grain worker does for each person record: read and
decode its image, draw the augmentation, warp the uint8 crop, make the heatmaps.
The baseline reads and decodes the same files the same number of times. The two are timed in
interleaved repeats; the figures are medians. Images: the real COCO sample
(tests/data/coco) when present, else generated COCO-size (640x480) JPEGs.
cost_ratio = decode rate / pipeline rate (1.0: augmentation and targets are free).
With --source tfds the sample is built as a TFDS dataset (efafnet_jax.data.tfds) in a
temporary folder and both sides read each image's bytes from it; the file source is
measured in the same run, and its figures are reported beside (files_*).
"""

from __future__ import annotations

import dataclasses
import json
import os
import pathlib
import sys
import tempfile
import time
from collections.abc import Callable

import cv2
import numpy as np
from absl import app, flags

from efafnet_jax.data.allocator import keep_large_blocks_in_heap
from efafnet_jax.data.coco_format import read_coco_keypoints
from efafnet_jax.data.image_store import FileImages
from efafnet_jax.data.keypoints import COCO
from efafnet_jax.data.pipeline import HostShard, SampleSource
from efafnet_jax.data.records import PersonRecord
from efafnet_jax.data.sample import SampleConfig
from efafnet_jax.data.transforms import box_to_center_scale

# As the pipeline reads (efafnet_jax/data/images.py).
READ_FLAGS = cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION

_REPEATS = flags.DEFINE_integer("repeats", 5, "Interleaved repeats.")
_ROUNDS = flags.DEFINE_integer("rounds", 20, "Passes over the records per repeat.")
_IMAGES = flags.DEFINE_enum(
    "images",
    "auto",
    ["auto", "coco", "generated"],
    "auto: the real COCO sample when present, else generated.",
)
_SOURCE = flags.DEFINE_enum(
    "source", "files", ["files", "tfds"], "tfds: the COCO sample built as TFDS (and files)."
)
_JSON = flags.DEFINE_bool("json", False, "Print one line of JSON as the last line.")

SAMPLE_COCO = pathlib.Path(__file__).resolve().parents[1] / "tests" / "data" / "coco"


def _generated_records(folder: str) -> list[PersonRecord]:
    from efafnet_jax.data.figures import textured_background

    rng = np.random.default_rng(0)
    records = []
    for i in range(4):
        path = os.path.join(folder, f"{i}.jpg")
        cv2.imwrite(path, textured_background(rng, 640, 480), [cv2.IMWRITE_JPEG_QUALITY, 90])
        for _ in range(3):
            box = [rng.uniform(0, 400), rng.uniform(0, 200), 150, 250]
            center, scale = box_to_center_scale(box, 0.75)
            joints = rng.uniform([box[0], box[1]], [box[0] + 150, box[1] + 250], (17, 2))
            records.append(
                PersonRecord(
                    path, i, center, scale, joints.astype(np.float32), np.ones(17, np.float32)
                )
            )
    return records


@dataclasses.dataclass
class Side:
    """One way of reading the images: the records, the pipeline's image store, and the
    baseline's read-and-decode of a record's image."""

    records: list[PersonRecord]
    store: object
    read_and_decode: Callable[[PersonRecord], np.ndarray]


def file_side(records: list[PersonRecord]) -> Side:
    return Side(records, FileImages(), lambda r: cv2.imread(r.image_path, READ_FLAGS))


def measure(sides: dict[str, Side], repeats: int, rounds: int) -> dict[str, dict]:
    """Per side, medians over repeats of crops/s and decodes/s. The sides and the two
    measurements alternate pass by pass (a pass: each record once, ~50 ms), so that
    they share the machine's drift."""
    rates = {name: ([], []) for name in sides}
    positions = dict.fromkeys(sides, 0)
    sources = {
        name: SampleSource(
            side.records,
            COCO,
            SampleConfig(crop_hw=(256, 192), heatmap_hw=(64, 48)),
            side.store,
            seed=0,
            train=True,
            shard=HostShard(),
            on_bad_record="raise",
        )
        for name, side in sides.items()
    }
    for _ in range(repeats):
        seconds = {name: [0.0, 0.0] for name in sides}
        for _ in range(rounds):
            for name, side in sides.items():
                start = time.perf_counter()
                for record in side.records:  # read and decode the image, as the pipeline does
                    side.read_and_decode(record)
                middle = time.perf_counter()
                for _ in side.records:
                    sources[name](positions[name])
                    positions[name] += 1
                seconds[name][0] += middle - start
                seconds[name][1] += time.perf_counter() - middle
        for name, side in sides.items():
            n = len(side.records) * rounds
            rates[name][0].append(n / seconds[name][0])
            rates[name][1].append(n / seconds[name][1])
    results = {}
    for name, (decode_rates, crop_rates) in rates.items():
        decode, crops = float(np.median(decode_rates)), float(np.median(crop_rates))
        results[name] = {
            "crops_per_s_per_worker": crops,
            "decode_per_s_per_worker": decode,
            "cost_ratio": decode / crops,
            "records": len(sides[name].records),
            "repeats": repeats,
        }
    return results


def tfds_side(folder: str) -> Side:
    """The COCO sample built as TFDS under `folder`, read from there."""
    from grain.sources import ArrayRecordDataSource

    from efafnet_jax.config import build_config
    from efafnet_jax.data.splits import read_split, split_images
    from efafnet_jax.data.tfds.build import build
    from efafnet_jax.data.tfds.source import image_bytes

    manual = pathlib.Path(folder, "manual")
    (manual / "annotations").mkdir(parents=True)
    (manual / "images").mkdir()
    annotations = manual / "annotations" / "person_keypoints_val2017.json"
    os.symlink(SAMPLE_COCO / "test_coco.json", annotations)
    os.symlink(SAMPLE_COCO, manual / "images" / "val2017")
    build("coco_keypoints", str(manual), os.path.join(folder, "tfds"), splits=("val",))
    data = build_config("coco", num_joints=17, spec="sbn", default_size=(256, 192)).data
    data.source, data.tfds_data_dir, data.val_detections = "tfds", f"{folder}/tfds", ""
    records, _, _ = read_split(data, "val")
    store = split_images(data, "val")
    examples = ArrayRecordDataSource(list(store.shards))

    def read_and_decode(record: PersonRecord) -> np.ndarray:
        position = store.positions[os.path.relpath(record.image_path, store.folder)]
        encoded = image_bytes(examples[position])
        return cv2.imdecode(np.frombuffer(encoded, np.uint8), READ_FLAGS)

    return Side(records, store, read_and_decode)


def main(argv):
    del argv
    cv2.setNumThreads(1)  # one worker = one core
    keep_large_blocks_in_heap()  # as every pipeline process does; both sides get it
    use_coco = _IMAGES.value == "coco" or (
        _IMAGES.value == "auto" and (SAMPLE_COCO / "test_coco.json").is_file()
    )
    if _SOURCE.value == "tfds" and not use_coco:
        raise SystemExit("--source tfds builds the real COCO sample (tests/data/coco)")
    with tempfile.TemporaryDirectory() as folder:
        if use_coco:
            records, _ = read_coco_keypoints(
                str(SAMPLE_COCO / "test_coco.json"), str(SAMPLE_COCO), COCO, 0.75
            )
            images = "real COCO sample"
        else:
            records, images = _generated_records(folder), "generated 640x480"
        sides = {"files": file_side(records)}
        if _SOURCE.value == "tfds":
            sides["tfds"] = tfds_side(folder)
            images += " as TFDS"
        results = measure(sides, _REPEATS.value, _ROUNDS.value)
    result = {**results[_SOURCE.value], "images": images, "source": _SOURCE.value}
    if _SOURCE.value == "tfds":
        result.update({f"files_{k}": v for k, v in results["files"].items() if "_s" in k})
        result["files_cost_ratio"] = results["files"]["cost_ratio"]
        print(f"files (same run): cost ratio {result['files_cost_ratio']:.3f}")
    print(f"images          {result['images']} ({result['records']} person records)")
    print(f"decode only     {result['decode_per_s_per_worker']:8.1f} images/s per worker")
    print(f"full pipeline   {result['crops_per_s_per_worker']:8.1f} crops/s per worker")
    print(f"cost ratio      {result['cost_ratio']:8.3f}  (medians of {result['repeats']} repeats)")
    if _JSON.value:
        print(json.dumps(result))


if __name__ == "__main__":
    sys.exit(app.run(main))
