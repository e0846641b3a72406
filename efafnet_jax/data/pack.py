"""Packs a dataset's JPEGs into a few ArrayRecord shards that the pipeline reads directly.

    python -m efafnet_jax.data.pack --ann FILE --images DIR --out DIR [--shards N]

The pack folder holds images-SSSSS-of-NNNNN.array_record (raw JPEG bytes, one
image per record), index.json ({file name: position}) and a copy of the
annotation file. Point `data.train_images` (or `val_images`) at the folder; the
annotation file is read as before. Each path may be a URL (gs://bucket/...).
"""

from __future__ import annotations

import json
import tempfile

from absl import flags
from etils import epath

from efafnet_jax.cli import run
from efafnet_jax.data.image_store import PACK_INDEX
from efafnet_jax.data.json_files import describe, load_json, text
from efafnet_jax.data.records import BadRecordError, is_url, read_file


def image_names(ann_file: str) -> list[str]:
    """File names of a COCO-format file's images, or of an MPII JSON's entries, in order."""
    data = load_json(ann_file)
    if isinstance(data, dict) and isinstance(data.get("images"), list):
        entries, field, label = data["images"], "file_name", "images"
    elif isinstance(data, list):
        entries, field, label = data, "image", "entry"
    else:
        raise BadRecordError(f"{ann_file} is neither a COCO-format file nor an MPII JSON list")
    names = []
    for i, entry in enumerate(entries):
        where = f"{ann_file}: {label}[{i}]"
        if not isinstance(entry, dict):
            raise BadRecordError(f"{where} is {describe(entry)}, not an object")
        names.append(text(entry, field, where))
    return list(dict.fromkeys(names))


def pack(ann_file: str, images_dir: str, out_dir: str, shards: int = 1) -> dict:
    """Writes the pack; returns its index."""
    from array_record.python.array_record_module import ArrayRecordWriter

    names = image_names(ann_file)
    if shards < 1:
        raise ValueError(f"--shards must be >= 1, got {shards}")
    out, images = epath.Path(out_dir), epath.Path(images_dir)
    out.mkdir(parents=True, exist_ok=True)
    shard_names = [f"images-{s:05d}-of-{shards:05d}.array_record" for s in range(shards)]
    per_shard = -(-len(names) // shards)
    positions = {}
    # ArrayRecord writes local files only: shards for a URL are written to local scratch
    # first, one at a time.
    with tempfile.TemporaryDirectory(prefix="efafnet-pack-") as scratch:
        staging = epath.Path(scratch) if is_url(out_dir) else out
        for s, shard_name in enumerate(shard_names):
            writer = ArrayRecordWriter(str(staging / shard_name), "group_size:1")
            try:
                for name in names[s * per_shard : (s + 1) * per_shard]:
                    path = images / name
                    writer.write(read_file(str(path), f"image file {path} named in {ann_file}"))
                    positions[name] = len(positions)
            finally:
                writer.close()
            if staging != out:
                (staging / shard_name).copy(out / shard_name, overwrite=True)
                (staging / shard_name).unlink()
    ann_name = epath.Path(ann_file).name
    index = {"images": positions, "shards": shard_names, "annotations": ann_name}
    epath.Path(ann_file).copy(out / ann_name, overwrite=True)
    (out / PACK_INDEX).write_text(json.dumps(index))
    return index


def main(argv):
    del argv
    f = flags.FLAGS
    index = pack(f.ann, f.images, f.out, f.shards)
    print(f"packed {len(index['images'])} images into {len(index['shards'])} shard(s) in {f.out}")


def cli() -> None:
    """The efafnet-pack-images console script."""
    flags.DEFINE_string("ann", None, "Annotation file (COCO format or MPII JSON).", required=True)
    flags.DEFINE_string("images", None, "Folder the file names are relative to.", required=True)
    flags.DEFINE_string("out", None, "Pack folder (or URL) to write.", required=True)
    flags.DEFINE_integer("shards", 1, "Number of ArrayRecord shards.")
    run(main)


if __name__ == "__main__":
    cli()
