"""Crops per second of one input worker against JPEG decoding alone on the same files.

    python benchmarks/input_pipeline.py [--repeats 5] [--json]

One process does what one grain worker does for each person record: read and
decode its image, draw the augmentation, warp the uint8 crop, make the heatmaps.
The baseline reads and decodes the same files the same number of times. The two are timed in
interleaved repeats; the figures are medians. Images: the real COCO sample
(tests/data/coco) when present, else generated COCO-size (640x480) JPEGs.
cost_ratio = decode rate / pipeline rate (1.0: augmentation and targets are free).
"""

from __future__ import annotations

import json
import os
import pathlib
import sys
import tempfile
import time

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

_REPEATS = flags.DEFINE_integer("repeats", 5, "Interleaved repeats.")
_ROUNDS = flags.DEFINE_integer("rounds", 20, "Passes over the records per repeat.")
_IMAGES = flags.DEFINE_enum(
    "images",
    "auto",
    ["auto", "coco", "generated"],
    "auto: the real COCO sample when present, else generated.",
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


def measure(records: list[PersonRecord], repeats: int, rounds: int, images: str) -> dict:
    source = SampleSource(
        records,
        COCO,
        SampleConfig(crop_hw=(256, 192), heatmap_hw=(64, 48)),
        FileImages(),
        seed=0,
        train=True,
        shard=HostShard(),
        on_bad_record="raise",
    )
    n = len(records) * rounds
    decode_rates, crop_rates = [], []
    position = 0
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(rounds):
            for record in records:  # read and decode the file, as the pipeline does
                cv2.imread(record.image_path, cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION)
        decode_rates.append(n / (time.perf_counter() - start))
        start = time.perf_counter()
        for _ in range(n):
            source(position)
            position += 1
        crop_rates.append(n / (time.perf_counter() - start))
    decode, crops = float(np.median(decode_rates)), float(np.median(crop_rates))
    return {
        "crops_per_s_per_worker": crops,
        "decode_per_s_per_worker": decode,
        "cost_ratio": decode / crops,
        "records": len(records),
        "repeats": repeats,
        "images": images,
    }


def main(argv):
    del argv
    cv2.setNumThreads(1)  # one worker = one core
    keep_large_blocks_in_heap()  # as every pipeline process does; both sides get it
    use_coco = _IMAGES.value == "coco" or (
        _IMAGES.value == "auto" and (SAMPLE_COCO / "test_coco.json").is_file()
    )
    if use_coco:
        records, _ = read_coco_keypoints(
            str(SAMPLE_COCO / "test_coco.json"), str(SAMPLE_COCO), COCO, 0.75
        )
        result = measure(records, _REPEATS.value, _ROUNDS.value, "real COCO sample")
    else:
        with tempfile.TemporaryDirectory() as folder:
            result = measure(
                _generated_records(folder), _REPEATS.value, _ROUNDS.value, "generated 640x480"
            )
    print(f"images          {result['images']} ({result['records']} person records)")
    print(f"decode only     {result['decode_per_s_per_worker']:8.1f} images/s per worker")
    print(f"full pipeline   {result['crops_per_s_per_worker']:8.1f} crops/s per worker")
    print(f"cost ratio      {result['cost_ratio']:8.3f}  (medians of {result['repeats']} repeats)")
    if _JSON.value:
        print(json.dumps(result))


if __name__ == "__main__":
    sys.exit(app.run(main))
