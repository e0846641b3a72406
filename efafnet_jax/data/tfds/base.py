"""What the three TFDS builders share: the shard-based base class, the feature types,
sharding in file order and build progress.

The builders are `tfds.core.ShardBasedBuilder`s: each shard is written in file order
by its own generator, so no split goes through TFDS's shuffle buffer, whose spill to
disk above 1 GiB (`tensorflow_datasets/core/shuffle.py`) needs `tf.io.gfile`.
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Iterator

import numpy as np
import tensorflow_datasets as tfds
import tqdm
from etils import epath

from efafnet_jax.data.keypoints import KeypointSpec
from efafnet_jax.data.records import BadRecordError, BadRecordHandler, ReadSummary, image_label
from efafnet_jax.data.tfds.annotations import annotations_path, write_annotations
from efafnet_jax.progress import progress_bar

# Shards of about this many image bytes: COCO train2017 (19 GB) becomes ~75 shards.
DEFAULT_SHARD_BYTES = 256 << 20

Example = dict
ShardGenerator = Callable[[], Iterator[tuple[int, Example]]]


def float64_tensor(*shape: int | None) -> tfds.features.Tensor:
    """A float64 feature of `shape`, stored as raw bytes."""
    # Bytes, because a tf.train.Example float list is float32, and the JSON's numbers
    # must survive exactly for the records to match the file reader's.
    return tfds.features.Tensor(
        shape=shape, dtype=np.float64, encoding=tfds.features.Encoding.BYTES
    )


def float_column(*shape: int | None) -> tfds.features.Tensor:
    """One float64 value of `shape` per person (or detection) of the image."""
    return float64_tensor(None, *shape)


def int_column(*shape: int | None) -> tfds.features.Tensor:
    """One int64 value of `shape` per person (or detection) of the image."""
    return tfds.features.Tensor(shape=(None, *shape), dtype=np.int64)


class PoseBuilder(tfds.core.ShardBasedBuilder, skip_registration=True):
    """What the three builders share: options, sharding, progress and the build summary."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "First release: one example per image, file order."}
    spec: KeypointSpec
    homepage: str

    def __init__(
        self,
        *,
        on_bad_record: str = "raise",
        shard_bytes: int = DEFAULT_SHARD_BYTES,
        splits: tuple[str, ...] = (),
        detections: str = "",
        **kwargs,
    ):
        """on_bad_record: 'raise' or 'skip' (bad records left out and counted in the
        metadata). shard_bytes: image bytes per shard. splits: build only these
        ('train', 'val'); all found when empty. detections: a person-detections file
        stored with the val split (COCO-format builders)."""
        self.on_bad_record = on_bad_record
        self.shard_bytes = shard_bytes
        self.only_splits = tuple(splits)
        self.detections_file = detections
        super().__init__(**kwargs)

    def _info(self) -> tfds.core.DatasetInfo:
        return tfds.core.DatasetInfo(
            builder=self,
            description=self.__doc__,
            features=tfds.features.FeaturesDict(self.feature_spec()),
            homepage=self.homepage,
            metadata=tfds.core.MetadataDict(),
        )

    @abc.abstractmethod
    def feature_spec(self) -> dict:
        """The example's features (`tfds.features` types by name)."""

    @abc.abstractmethod
    def split_files(self, manual_dir: str) -> dict[str, dict[str, str]]:
        """{split: its released files} for the splits present in `manual_dir`."""

    @abc.abstractmethod
    def split_examples(self, files: dict[str, str]) -> tuple[list[Example], ReadSummary]:
        """The split's examples (image as a path) and what the build kept and skipped."""

    def _shard_iterators_per_split(self, dl_manager) -> dict[str, list[ShardGenerator]]:
        manual_dir = str(dl_manager.manual_dir)
        found = self.split_files(manual_dir)
        wanted = self.only_splits or tuple(found)
        missing = [s for s in wanted if s not in found]
        if missing or not found:
            raise BadRecordError(
                f"{self.name}: manual_dir {manual_dir} has no {missing or 'train or val'} split "
                f"in the released layout ({self.MANUAL_DOWNLOAD_INSTRUCTIONS.strip()})"
            )
        shards = {}
        for split in wanted:
            examples, summary = self.split_examples(found[split])
            if not examples:
                raise BadRecordError(f"{self.name} {split}: no usable image in {summary.line()}")
            self.info.metadata[split] = {
                "files": found[split],
                "images": len(examples),
                "stored_annotations": summary.kept,
                "skipped_records": len(summary.skipped),
                "skipped": summary.skipped[:100],
                "on_bad_record": self.on_bad_record,
                **self.split_metadata(found[split]),
            }
            # self.data_path is the build's incomplete.* folder here: the file appears
            # with the shards, when TFDS renames the folder at the end of the build.
            write_annotations(annotations_path(self.data_path, self.name, split), examples)
            shards[split] = self._shards(split, examples)
        return shards

    def split_metadata(self, files: dict[str, str]) -> dict:
        """Extra per-split metadata the reader needs (COCO's categories)."""
        return {}

    def _shards(self, split: str, examples: list[Example]) -> list[ShardGenerator]:
        groups, size = [[]], 0
        for example in examples:
            image_bytes = epath.Path(example["image"]).stat().length
            if groups[-1] and size + image_bytes > self.shard_bytes:
                groups.append([])
                size = 0
            groups[-1].append(example)
            size += image_bytes
        bar = progress_bar(len(examples), f"{self.name} {split}", "img", lines=20)
        return [_ShardGenerator(group, start, bar) for group, start in _starts(groups)]


def _starts(groups: list[list[Example]]) -> Iterator[tuple[list[Example], int]]:
    start = 0
    for group in groups:
        yield group, start
        start += len(group)


class _ShardGenerator:
    """One shard's (key, example) pairs; the key is the image's position in the split."""

    def __init__(self, examples: list[Example], start: int, bar: tqdm.tqdm):
        self.examples, self.start, self.bar = examples, start, bar

    def __call__(self) -> Iterator[tuple[int, Example]]:
        for offset, example in enumerate(self.examples):
            yield self.start + offset, example
            self.bar.update(1)
            if self.bar.n == self.bar.total:  # the split's last image: the final line
                self.bar.close()


def existing_files(files: dict[str, str]) -> dict[str, str] | None:
    """`files` if its annotation file and image folder exist, else None."""
    if epath.Path(files["annotations"]).is_file() and epath.Path(files["images"]).is_dir():
        return files
    return None


def missing_image_check(
    paths_and_ids: list[tuple[str, int]], handler: BadRecordHandler
) -> set[str]:
    """Paths of images whose file is missing, each reported once under the policy (the
    message the file readers give, not repeated if the reader gave it already)."""
    missing = set()
    for path, image_id in paths_and_ids:
        if path in missing or epath.Path(path).is_file():
            continue
        message = f"{image_label(path, image_id)} does not exist"
        if message not in handler.summary.skipped:
            handler.bad(message)
        missing.add(path)
    return missing
