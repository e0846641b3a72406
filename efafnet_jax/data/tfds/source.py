"""Reading a split written by `efafnet_jax.data.tfds.builders` as the file readers read
the released files.

The split's examples rebuild the released file's content in the file's order (the
COCO-format dict, or MPII's JSON list, and the detections list); the file readers'
own functions turn it into `PersonRecord`s, so filtering, bad-record handling and
centre/scale follow the config exactly as with files. The examples come without
their images from the annotations file beside the split's shards (`annotations`);
images are read by example index from the shards, undecoded (no TensorFlow).
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import math

import numpy as np
from etils import epath

from efafnet_jax.data.image_store import ShardedImages
from efafnet_jax.data.records import BadRecordError
from efafnet_jax.data.tfds.annotations import annotations_path, read_annotations

# Examples read per call while reading a split's annotations from its shards.
READ_CHUNK = 256


@dataclasses.dataclass(frozen=True)
class TfdsSplit:
    """One built split, its annotations rebuilt in file form.

    label: names the split in messages (and stands for the file name). image_dir:
    the prefix of record image paths (<dataset folder>/<split>). content: the
    COCO-format dict, or MPII's JSON list. detections: the detections list stored
    with the split (None without). positions: {file name: example index}. pckh: MPII
    val's gt_valid.mat arrays (None without). shards: the split's ArrayRecord files in
    example order. entry_positions: for MPII, each entry's position in the file the
    split was built from (entries a build skipped leave gaps); None for COCO formats.
    """

    name: str
    data_dir: str
    split: str
    label: str
    image_dir: str
    content: dict | list
    detections: list | None
    positions: dict[str, int]
    pckh: dict[str, np.ndarray] | None
    shards: tuple[str, ...]
    entry_positions: tuple[int, ...] | None = None


def prepared_builder(name: str, data_dir: str):
    """The builder of a completely built dataset; BadRecordError naming the config keys
    when it is not (an interrupted build leaves only an incomplete.* folder)."""
    import tensorflow_datasets as tfds

    from efafnet_jax.data.tfds import builders  # registers the builders

    if name not in builders.BUILDERS:
        raise BadRecordError(
            f"data.tfds_name={name!r} is none of this project's builders "
            f"{sorted(builders.BUILDERS)}"
        )
    builder = tfds.builder(name, data_dir=data_dir or None)
    if not builder.is_prepared():
        raise BadRecordError(
            f"data.tfds_name={name!r}, data.tfds_data_dir={data_dir!r}: no complete dataset "
            f"in {builder.data_dir} (python -m efafnet_jax.data.tfds.build --dataset {name} "
            "builds it; an interrupted build leaves only an incomplete.* folder)"
        )
    return builder


def _split_builder(name: str, data_dir: str, split: str):
    builder = prepared_builder(name, data_dir)
    if split not in builder.info.splits:
        raise BadRecordError(
            f"data.tfds_name={name!r}: the dataset in {builder.data_dir} has no {split!r} "
            f"split (it has {sorted(builder.info.splits)})"
        )
    return builder


@functools.lru_cache(maxsize=4)
def load_split(name: str, data_dir: str, split: str) -> TfdsSplit:
    """The split's annotations in file form (read once per process: the evaluator needs
    them for the records and for the metric's GT), from the annotations file beside the
    split's shards; no image is read. A dataset built without that file is read example
    by example, images included, with a warning to rebuild it."""
    builder = _split_builder(name, data_dir, split)
    folder = epath.Path(builder.data_dir)
    examples = _examples_without_images(builder, name, data_dir, split)
    meta = dict(builder.info.metadata or {}).get(split, {})
    label = f"{folder} (TFDS {name}, split {split})"
    file_names = [_text(e["file_name"]) for e in examples]
    positions = {n: i for i, n in enumerate(file_names)}
    if name == "mpii":
        content, pckh, entry_positions = _mpii_content(examples, file_names)
        detections = None
    else:
        content, detections = _coco_content(examples, file_names, meta.get("categories", []))
        pckh, entry_positions = None, None
    shards = tuple(str(path) for path in builder.info.splits[split].filepaths)
    return TfdsSplit(
        name, data_dir, split, label, str(folder / split), content, detections, positions,
        pckh, shards, entry_positions,
    )  # fmt: skip


def _examples_without_images(builder, name: str, data_dir: str, split: str) -> list[dict]:
    """The split's examples but their images: from its annotations file, else (a dataset
    built before the builders wrote one) from its shards, with a warning."""
    folder = epath.Path(builder.data_dir)
    annotations = annotations_path(folder, name, split)
    if not annotations.exists():
        logging.warning(
            "%s has no %s (built by an older version of the builders): reading every "
            "example of split %r, images included, for its annotations. Rebuild it for a "
            "start-up that reads the annotations alone: %s",
            folder,
            annotations.name,
            split,
            _rebuild_command(name, builder),
        )
        return _examples_from_shards(name, data_dir, split)
    examples = read_annotations(annotations)
    expected = builder.info.splits[split].num_examples
    if len(examples) != expected:
        raise BadRecordError(
            f"{annotations} holds {len(examples)} examples, the split {expected}: "
            f"rebuild the dataset ({_rebuild_command(name, builder)})"
        )
    return examples


def _rebuild_command(name: str, builder) -> str:
    return (
        f"python -m efafnet_jax.data.tfds.build --dataset {name} --manual_dir DIR "
        f"--data_dir {builder.data_dir_root}"
    )


def _examples_from_shards(name: str, data_dir: str, split: str) -> list[dict]:
    """Every stored example of the split but its image, read from the shards (the image
    bytes are read too: they are in the same records)."""
    import tensorflow_datasets as tfds

    source = tfds.data_source(
        name,
        split=split,
        data_dir=data_dir or None,
        decoders={"image": tfds.decode.SkipDecoding()},
    )
    examples = []
    for start in range(0, len(source), READ_CHUNK):
        chunk = source.__getitems__(list(range(start, min(start + READ_CHUNK, len(source)))))
        examples.extend({k: v for k, v in e.items() if k != "image"} for e in chunk)
    return examples


def _text(value) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _coco_content(examples: list[dict], file_names: list[str], categories: list) -> tuple:
    """(COCO-format dict, detections list or None) in the released files' order."""
    images, annotations, detections = [], [], []
    for example, file_name in zip(examples, file_names, strict=True):
        image = {"id": int(example["image_id"]), "file_name": file_name}
        for field in ("width", "height"):
            if int(example[field]) > 0:
                image[field] = int(example[field])
        if "crowd_index" in example and not math.isnan(float(example["crowd_index"])):
            image["crowdIndex"] = float(example["crowd_index"])
        images.append(image)
        p = example["persons"]
        for i in range(len(p["file_position"])):
            ann = {
                "id": int(p["annotation_id"][i]),
                "image_id": image["id"],
                "bbox": p["bbox"][i].tolist(),
                "keypoints": p["keypoints"][i].ravel().tolist(),
                "iscrowd": int(p["iscrowd"][i]),
            }
            if p["category_id"][i] >= 0:
                ann["category_id"] = int(p["category_id"][i])
            if not math.isnan(p["area"][i]):
                ann["area"] = float(p["area"][i])
            if p["num_keypoints"][i] >= 0:
                ann["num_keypoints"] = int(p["num_keypoints"][i])
            annotations.append((int(p["file_position"][i]), ann))
        d = example["detections"]
        for i in range(len(d["file_position"])):
            det = {"image_id": image["id"], "bbox": d["bbox"][i].tolist()}
            det["score"] = float(d["score"][i])
            if d["category_id"][i] >= 0:
                det["category_id"] = int(d["category_id"][i])
            detections.append((int(d["file_position"][i]), det))
    content = {
        "images": images,
        "annotations": [a for _, a in sorted(annotations, key=lambda pa: pa[0])],
        "categories": categories,
    }
    ordered = [d for _, d in sorted(detections, key=lambda pd: pd[0])]
    return content, ordered or None


def _mpii_content(examples: list[dict], file_names: list[str]) -> tuple:
    """(HRNet's MPII JSON list, gt_valid.mat's arrays or None, each entry's position in
    the file) in the file's order."""
    entries, head = [], []
    for example, file_name in zip(examples, file_names, strict=True):
        p = example["persons"]
        for i in range(len(p["file_position"])):
            entry = {
                "image": file_name,
                "center": p["center"][i].tolist(),
                "scale": float(p["scale"][i]),
                "joints": p["joints"][i].tolist(),
                "joints_vis": p["joints_vis"][i].tolist(),
            }
            columns = (p["head_box"][i], p["pckh_joints"][i], p["pckh_joint_missing"][i])
            entries.append((int(p["file_position"][i]), entry))
            head.append((int(p["file_position"][i]), columns))
    entries.sort(key=lambda pe: pe[0])
    head.sort(key=lambda ph: ph[0])
    boxes = np.stack([h[1][0] for h in head]) if head else np.zeros((0, 2, 2))
    pckh = None
    if len(boxes) and not np.isnan(boxes).any():
        pckh = {
            "headboxes": boxes,
            "joints": np.stack([h[1][1] for h in head]),
            "joint_missing": np.stack([h[1][2] for h in head]).astype(bool),
        }
    return [e for _, e in entries], pckh, tuple(p for p, _ in entries)


class TfdsImages(ShardedImages):
    """Reads each record's image from its split's examples, by file name.

    Only the image's bytes are taken from the stored tf.train.Example (0.14 ms a read
    on these CPUs, against 0.8 ms for TFDS's decoding of every feature). Records keep
    paths of the form <dataset folder>/<split>/<file name>.
    """

    def __init__(self, split: TfdsSplit):
        super().__init__(list(split.shards), split.image_dir, split.positions, split.label)

    def encoded(self, stored: bytes) -> bytes:
        return image_bytes(stored)


def image_bytes(serialized_example: bytes) -> bytes:
    """The encoded image of a stored example (TFDS keeps an Image feature's bytes as the
    tf.train.Example's 'image' bytes list)."""
    from tensorflow_datasets.proto import tf_example_pb2

    example = tf_example_pb2.Example.FromString(serialized_example)
    return example.features.feature["image"].bytes_list.value[0]
