"""Where image bytes come from: single files, or ArrayRecord shards written by `pack`."""

from __future__ import annotations

import json

import numpy as np
from etils import epath

from efafnet_jax.data.images import decode_image, read_image
from efafnet_jax.data.records import BadRecordError, PersonRecord, image_label

PACK_INDEX = "index.json"


def checked_size(record: PersonRecord, image: np.ndarray) -> np.ndarray:
    """`image`, if its size is the one the annotation file gives (when it gives one).

    Joints and boxes are in the annotated pixel grid: a resized or replaced file
    would silently shift every crop.
    """
    if record.image_hw is not None and tuple(image.shape[:2]) != tuple(record.image_hw):
        (height, width), (want_h, want_w) = image.shape[:2], record.image_hw
        raise BadRecordError(
            f"{image_label(record.image_path, record.image_id)} is {width}x{height} pixels, "
            f"but the annotation file's images[].width/height say {want_w}x{want_h}"
        )
    return image


class FileImages:
    """Reads each record's image file."""

    def load(self, record: PersonRecord, rgb: bool = True) -> np.ndarray:
        return checked_size(record, read_image(record.image_path, record.image_id, rgb))


class ShardedImages:
    """Reads encoded images by position from ArrayRecord shards.

    Records keep paths of the form <folder>/<file name>, so that file and sharded
    stores serve the same records; the shards are opened lazily in each worker
    process. Subclasses say how a stored record holds the encoded image. ArrayRecord
    reads gs:// shards with its own GCS client (google-cloud-cpp), not through epath.
    """

    def __init__(self, shards: list[str], folder: str, positions: dict[str, int], where: str):
        self.shards, self.folder, self.positions, self.where = shards, folder, positions, where
        self._source = None

    def __getstate__(self):
        return {**self.__dict__, "_source": None}  # each process opens its own readers

    def encoded(self, stored: bytes) -> bytes:
        """The encoded image in a stored record."""
        return stored

    def load(self, record: PersonRecord, rgb: bool = True) -> np.ndarray:
        try:
            name = str(epath.Path(record.image_path).relative_to(self.folder))
        except ValueError:  # a path outside the folder: not one of its images
            name = record.image_path
        if name not in self.positions:
            raise BadRecordError(
                f"image {name} (image id {record.image_id}) is not in {self.where}"
            )
        if self._source is None:
            from grain.sources import ArrayRecordDataSource

            self._source = ArrayRecordDataSource(list(self.shards))
        data = self.encoded(self._source[self.positions[name]])
        return checked_size(record, decode_image(data, record.image_path, record.image_id, rgb))


class PackedImages(ShardedImages):
    """Reads JPEG bytes from a pack folder (a local path or a URL): shards plus index.json
    {file name: position}."""

    def __init__(self, pack_dir: str):
        folder = epath.Path(pack_dir)
        if not (folder / PACK_INDEX).is_file():
            raise BadRecordError(f"{pack_dir} is not a pack folder: {PACK_INDEX} is missing")
        index = json.loads((folder / PACK_INDEX).read_text())
        shards = [str(folder / name) for name in index["shards"]]
        missing = [s for s in shards if not epath.Path(s).is_file()]
        if missing:
            raise BadRecordError(f"pack {pack_dir}: shard {missing[0]} is missing")
        super().__init__(shards, pack_dir, index["images"], f"the pack {pack_dir}")


def image_store(images_dir: str):
    """PackedImages for a pack folder, else FileImages."""
    if (epath.Path(images_dir) / PACK_INDEX).is_file():
        return PackedImages(images_dir)
    return FileImages()
