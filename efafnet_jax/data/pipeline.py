"""The grain input pipeline: deterministic, sharded per host, checkpointable.

Every sample is a pure function of (seed, epoch, record index): the epoch's
shuffle is a permutation drawn from (seed, epoch), and the augmentation draws
come from (seed, epoch, record index). Training reads each epoch as global
batches of that permutation (the remainder dropped); host p of n reads rows
[p*b, (p+1)*b) of every global batch, b = global batch / n. So the global
batches are the same for any number of hosts and of worker processes, and the
data position after k steps is k global batches whatever the host count: a run
resumes on another host count by starting the pipeline at its step
(`start_batch`). The grain iterator state (`get_state` / `set_state`) still
restores a position on the same host count.
"""

from __future__ import annotations

import dataclasses
import logging
import math

import grain
import numpy as np

from efafnet_jax.data.allocator import keep_large_blocks_in_heap
from efafnet_jax.data.keypoints import KeypointSpec
from efafnet_jax.data.records import BadRecordError, PersonRecord
from efafnet_jax.data.region import region_sample
from efafnet_jax.data.sample import SampleConfig, make_sample
from efafnet_jax.data.transforms import draw_augmentation


@dataclasses.dataclass(frozen=True)
class HostShard:
    """Which part of the global batch this host feeds (jax.process_index/count)."""

    index: int = 0
    count: int = 1


class SampleSource:
    """Stream position -> one sample dict. Picklable: it travels to grain's workers."""

    def __init__(
        self,
        records: list[PersonRecord],
        spec: KeypointSpec,
        config: SampleConfig,
        store,
        seed: int,
        train: bool,
        shard: HostShard,
        on_bad_record: str,
        batch_size: int = 1,
    ):
        """`batch_size`: this host's rows of each global batch (training only)."""
        if not records:
            raise ValueError("the pipeline got no records")
        self.records, self.spec, self.config, self.store = records, spec, config, store
        self.seed, self.train, self.shard, self.on_bad_record = seed, train, shard, on_bad_record
        self.batch_size = batch_size
        if train:
            global_batch = batch_size * shard.count
            self.per_host = steps_per_epoch(len(records), global_batch) * batch_size
            if self.per_host == 0:
                raise ValueError(
                    f"{len(records)} records are fewer than one global batch of {global_batch}"
                )
        else:
            self.per_host = math.ceil(len(records) / shard.count)
        self._permutation = (None, None)

    def _epoch_order(self, epoch: int) -> np.ndarray:
        cached_epoch, order = self._permutation
        if cached_epoch != epoch:
            order = np.random.default_rng([self.seed, epoch]).permutation(len(self.records))
            self._permutation = (epoch, order)
        return order

    def locate(self, position: int) -> tuple[int, int, bool]:
        """(epoch, record index, valid) of this host's `position`-th sample."""
        if not self.train:  # one pass in file order; positions past the end are padding
            slot = self.shard.index + position * self.shard.count
            if position >= self.per_host or slot >= len(self.records):
                return 0, 0, False
            return 0, slot, True
        epoch, in_epoch = divmod(position, self.per_host)
        batch, row = divmod(in_epoch, self.batch_size)
        slot = (batch * self.shard.count + self.shard.index) * self.batch_size + row
        return epoch, int(self._epoch_order(epoch)[slot]), True

    def __call__(self, position: int) -> dict[str, np.ndarray]:
        keep_large_blocks_in_heap()  # once per process (grain workers included)
        epoch, index, valid = self.locate(position)
        record, skipped = self.records[index], False
        draws = None
        if self.train:
            draws = draw_augmentation(np.random.default_rng([self.seed, epoch, index]))
        on_device = self.train and self.config.device_buffer_hw is not None
        try:
            # Decode to cv2's BGR; the crop alone is converted to RGB.
            bgr = self.store.load(record, rgb=False)
            if on_device:
                arrays = region_sample(
                    record, bgr, self.spec, self.config, draws, self.config.device_buffer_hw
                )
            else:
                sample = make_sample(record, bgr, self.spec, self.config, draws, swap_red_blue=True)
                arrays = {
                    "image": sample.image,
                    "target": sample.target,
                    "target_weight": sample.target_weight,
                    "center": sample.center,
                    "scale": sample.scale,
                }
        except BadRecordError as err:
            if self.on_bad_record == "raise":
                raise
            # A zero-weight stand-in keeps every other sample (and the batch shape) as is.
            logging.warning("skipping sample of record %d: %s", index, err)
            arrays = self._stand_in(record, on_device)
            valid, skipped = False, True
        return {
            **arrays,
            "record_index": np.int32(index),
            "box_score": np.float32(record.box_score),
            "image_id": np.int64(record.image_id),
            "valid": np.bool_(valid),
            # A real record replaced by a zero-weight stand-in (valid is False too);
            # padding has neither flag.
            "skipped": np.bool_(skipped),
        }

    def _stand_in(self, record: PersonRecord, on_device: bool) -> dict[str, np.ndarray]:
        """All-zero arrays of a sample's shapes, every joint weighted 0."""
        k = self.spec.num_joints
        geometry = {
            "center": np.asarray(record.center, np.float32),
            "scale": np.asarray(record.scale, np.float32),
        }
        if on_device:
            return {
                "source": np.zeros((*self.config.device_buffer_hw, 3), np.uint8),
                "to_source": np.zeros((2, 3), np.float32),
                "joints": np.zeros((k, 2), np.float32),
                "visibility": np.zeros(k, np.float32),
                **geometry,
            }
        return {
            "image": np.zeros((*self.config.crop_hw, 3), np.uint8),
            "target": np.zeros((*self.config.heatmap_hw, k), np.float32),
            "target_weight": np.zeros(k, np.float32),
            **geometry,
        }


def build_pipeline(
    records: list[PersonRecord],
    spec: KeypointSpec,
    config: SampleConfig,
    store,
    *,
    batch_size: int,
    seed: int = 0,
    train: bool = True,
    num_epochs: int = 1,
    workers: int = 0,
    shard: HostShard = HostShard(),
    on_bad_record: str = "raise",
    threads: int = 8,
    start_batch: int = 0,
) -> grain.IterDataset:
    """Batches of this host's samples (`batch_size` per host).

    Train: `num_epochs` epochs of shuffled, augmented samples in global batches
    of `batch_size * shard.count` (each epoch's remainder dropped), from global
    batch `start_batch` on. Eval: every record once in file order (this host's
    share), the last batch padded, `valid` marking real samples.
    """
    source = SampleSource(
        records, spec, config, store, seed, train, shard, on_bad_record, batch_size
    )
    start = 0
    if train:
        total = source.per_host * num_epochs
        start = start_batch * batch_size
    else:
        total = math.ceil(source.per_host / batch_size) * batch_size
    dataset = grain.MapDataset.range(start, total).map(source)
    dataset = dataset.batch(batch_size, drop_remainder=train)
    iterable = dataset.to_iter_dataset(
        grain.ReadOptions(num_threads=threads, prefetch_buffer_size=4 * batch_size)
    )
    if workers > 0:
        iterable = iterable.mp_prefetch(grain.MultiprocessingOptions(num_workers=workers))
    return iterable


def steps_per_epoch(num_records: int, global_batch: int) -> int:
    """Training steps per epoch: whole global batches, the same for any host count."""
    return num_records // global_batch
