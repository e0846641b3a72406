"""A split's examples without their images, in one file beside the split's shards.

A host starting up reads this file (megabytes) instead of every stored example,
whose images make up nearly all of the split (~19 GB for COCO train2017). The builder
writes it from the examples it writes into the shards, and `source.load_split`
rebuilds the same examples from it; images are still read by example index from the
shards.

The file is an .npz of columns: one array per top-level feature (one value per
example), and for each group of per-person features (persons, detections) the
concatenated rows of all examples plus '<group>.rows', the rows of each example.
"""

from __future__ import annotations

import io

import numpy as np
from etils import epath

# Left out of the file: the encoded image, read from the shards by example index.
IMAGE_FEATURE = "image"


def annotations_path(dataset_dir: epath.PathLike, name: str, split: str) -> epath.Path:
    """The split's annotations file: <dataset dir>/<name>-<split>.annotations.npz, named
    as TFDS names the split's shards (<name>-<split>.array_record-...)."""
    return epath.Path(dataset_dir) / f"{name}-{split}.annotations.npz"


def write_annotations(path: epath.PathLike, examples: list[dict]) -> None:
    """Writes every feature of `examples` but the image, in example order."""
    columns = {}
    for key, first in examples[0].items():
        if key == IMAGE_FEATURE:
            continue
        values = [example[key] for example in examples]
        if isinstance(first, dict):
            rows = [len(next(iter(group.values()))) for group in values]
            columns[f"{key}.rows"] = np.asarray(rows, np.int64)
            for field in first:
                columns[f"{key}.{field}"] = np.concatenate([group[field] for group in values])
        else:
            columns[key] = np.asarray(values)
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **columns)
    epath.Path(path).write_bytes(buffer.getvalue())


def read_annotations(path: epath.PathLike) -> list[dict]:
    """The examples `write_annotations` wrote, without their images, in example order."""
    # One read of the whole file: np.load seeks within it, a request each on a bucket.
    with np.load(io.BytesIO(epath.Path(path).read_bytes()), allow_pickle=False) as npz:
        columns = {key: npz[key] for key in npz.files}
    top_level = {key: column for key, column in columns.items() if "." not in key}
    examples = [{} for _ in range(len(next(iter(top_level.values()))))]
    for key, column in top_level.items():
        for example, value in zip(examples, column, strict=True):
            example[key] = value
    for rows_key in [key for key in columns if key.endswith(".rows")]:
        group = rows_key.removesuffix(".rows")
        prefix = f"{group}."
        fields = {
            key.removeprefix(prefix): column
            for key, column in columns.items()
            if key.startswith(prefix) and key != rows_key
        }
        ends = np.cumsum(columns[rows_key]).tolist()
        for example, start, end in zip(examples, [0, *ends[:-1]], ends, strict=True):
            example[group] = {field: column[start:end] for field, column in fields.items()}
    return examples
