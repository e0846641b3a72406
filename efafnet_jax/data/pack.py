"""Packs a dataset's JPEGs into a few ArrayRecord shards that the pipeline reads directly.

    python -m efafnet_jax.data.pack --ann FILE --images DIR --out DIR [--shards N]

The pack folder holds images-SSSSS-of-NNNNN.array_record (raw JPEG bytes, one
image per record), index.json ({file name: position}) and a copy of the
annotation file. Point `data.train_images` (or `val_images`) at the folder; the
annotation file is read as before.
"""

from __future__ import annotations

import json
import os
import shutil

from absl import flags

from efafnet_jax.cli import run
from efafnet_jax.data.image_store import PACK_INDEX
from efafnet_jax.data.json_files import load_json
from efafnet_jax.data.records import BadRecordError


def image_names(ann_file: str) -> list[str]:
    """File names of a COCO-format file's images, or of an MPII JSON's entries, in order."""
    data = load_json(ann_file)
    if isinstance(data, dict) and isinstance(data.get("images"), list):
        names = [image["file_name"] for image in data["images"]]
    elif isinstance(data, list):
        names = [entry["image"] for entry in data]
    else:
        raise BadRecordError(f"{ann_file} is neither a COCO-format file nor an MPII JSON list")
    return list(dict.fromkeys(names))


def pack(ann_file: str, images_dir: str, out_dir: str, shards: int = 1) -> dict:
    """Writes the pack; returns its index."""
    from array_record.python.array_record_module import ArrayRecordWriter

    names = image_names(ann_file)
    if shards < 1:
        raise ValueError(f"--shards must be >= 1, got {shards}")
    os.makedirs(out_dir, exist_ok=True)
    shard_names = [f"images-{s:05d}-of-{shards:05d}.array_record" for s in range(shards)]
    per_shard = -(-len(names) // shards)
    positions = {}
    for s, shard_name in enumerate(shard_names):
        writer = ArrayRecordWriter(os.path.join(out_dir, shard_name), "group_size:1")
        for name in names[s * per_shard : (s + 1) * per_shard]:
            path = os.path.join(images_dir, name)
            if not os.path.isfile(path):
                writer.close()
                raise BadRecordError(f"image file {path} named in {ann_file} does not exist")
            with open(path, "rb") as f:
                writer.write(f.read())
            positions[name] = len(positions)
        writer.close()
    index = {"images": positions, "shards": shard_names, "annotations": os.path.basename(ann_file)}
    shutil.copyfile(ann_file, os.path.join(out_dir, os.path.basename(ann_file)))
    with open(os.path.join(out_dir, PACK_INDEX), "w") as f:
        json.dump(index, f)
    return index


def main(argv):
    del argv
    f = flags.FLAGS
    index = pack(f.ann, f.images, f.out, f.shards)
    print(f"packed {len(index['images'])} images into {len(index['shards'])} shard(s) in {f.out}")


if __name__ == "__main__":
    flags.DEFINE_string("ann", None, "Annotation file (COCO format or MPII JSON).", required=True)
    flags.DEFINE_string("images", None, "Folder the file names are relative to.", required=True)
    flags.DEFINE_string("out", None, "Pack folder to write.", required=True)
    flags.DEFINE_integer("shards", 1, "Number of ArrayRecord shards.")
    run(main)
