"""The grain pipeline: determinism across workers, exact resume, packing, sharding."""

import numpy as np
import pytest
from absl import flags
from conftest import DATA_DIR

from efafnet_jax.data.coco_format import read_coco_keypoints
from efafnet_jax.data.image_store import FileImages, PackedImages, image_store
from efafnet_jax.data.keypoints import COCO
from efafnet_jax.data.pack import pack
from efafnet_jax.data.pipeline import HostShard, build_pipeline
from efafnet_jax.data.sample import SampleConfig
from efafnet_jax.data.synthetic import generate

CONFIG = SampleConfig(crop_hw=(128, 96), heatmap_hw=(32, 24))


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("generated")
    paths = generate(str(root), train=16, val=4, seed=3)
    records, _ = read_coco_keypoints(paths["train"], str(root / "images" / "train"), COCO, 0.75)
    return root, paths, records[:16]  # 16 persons: whole batches of 4 per epoch


def _batches(records, n, store=None, state=None, **kw):
    flags.FLAGS.mark_as_parsed()  # grain's worker processes read absl flags
    kw = {"batch_size": 4, "seed": 11, "num_epochs": 3, **kw}
    iterator = iter(build_pipeline(records, COCO, CONFIG, store or FileImages(), **kw))
    if state is not None:
        iterator.set_state(state)
    out = [next(iterator) for _ in range(n)]
    return out, iterator


def _assert_same(a, b):
    assert len(a) == len(b)
    for x, y in zip(a, b, strict=True):
        assert set(x) == set(y)
        for key in x:
            np.testing.assert_array_equal(x[key], y[key], err_msg=key)


def test_batch_layout(dataset):
    _, _, records = dataset
    (batch,), _ = _batches(records, 1)
    assert batch["image"].shape == (4, 128, 96, 3) and batch["image"].dtype == np.uint8
    assert batch["target"].shape == (4, 32, 24, 17) and batch["target"].dtype == np.float32
    assert batch["target_weight"].shape == (4, 17)
    assert batch["center"].shape == (4, 2) and batch["valid"].all()
    assert batch["image_id"].dtype == np.int64 and batch["record_index"].dtype == np.int32


def test_same_batches_for_any_number_of_workers(dataset):
    """In-process and 2 worker processes (interleaved); 1 worker reads the packed store in
    test_packed_equals_unpacked against the in-process batches."""
    _, _, records = dataset
    reference, _ = _batches(records, 6, workers=0)
    other, iterator = _batches(records, 6, workers=2)
    _assert_same(reference, other)
    del iterator


def test_restore_mid_epoch_reproduces_the_next_batches(dataset):
    _, _, records = dataset
    _, iterator = _batches(records, 2)
    state = iterator.get_state()
    expected = [next(iterator) for _ in range(5)]  # crosses into the next epoch
    resumed, _ = _batches(records, 5, state=state)
    _assert_same(expected, resumed)


def test_epochs_reshuffle_and_seeds_differ(dataset):
    _, _, records = dataset
    batches, _ = _batches(records, 8)  # 4 batches per epoch
    first = np.concatenate([b["record_index"] for b in batches[:4]])
    second = np.concatenate([b["record_index"] for b in batches[4:]])
    assert sorted(first) == sorted(second) == list(range(16))
    assert not np.array_equal(first, second)
    other, _ = _batches(records, 1, seed=12)
    assert not np.array_equal(other[0]["image"], batches[0]["image"])


def test_packed_equals_unpacked(dataset, tmp_path):
    root, paths, records = dataset
    pack_dir = tmp_path / "pack"
    pack(paths["train"], str(root / "images" / "train"), str(pack_dir), shards=3)
    packed_records, _ = read_coco_keypoints(
        paths["train"], str(pack_dir), COCO, 0.75, check_images=False
    )
    packed_records = packed_records[:16]
    store = image_store(str(pack_dir))
    assert isinstance(store, PackedImages) and len(store.shards) == 3
    unpacked, _ = _batches(records, 5)
    packed, iterator = _batches(packed_records, 5, store=store, workers=1)
    _assert_same(unpacked, packed)
    del iterator


def _global_batches(records, hosts: int, steps: int, start_batch: int = 0) -> list[dict]:
    """`steps` global batches of 6, as `hosts` simulated processes feed them (host order)."""
    per_host = [
        _batches(
            records,
            steps,
            batch_size=6 // hosts,
            num_epochs=2,
            shard=HostShard(host, hosts),
            start_batch=start_batch,
        )[0]
        for host in range(hosts)
    ]
    return [
        {key: np.concatenate([rows[step][key] for rows in per_host]) for key in per_host[0][0]}
        for step in range(steps)
    ]


def test_one_two_and_three_hosts_read_the_same_global_batches(dataset):
    _, _, records = dataset
    records = records[:13]  # 2 global batches of 6 per epoch; one record left over
    one = _global_batches(records, 1, 4)  # 2 epochs
    for hosts in (2, 3):
        _assert_same(one, _global_batches(records, hosts, 4))
    epochs = [np.concatenate([b["record_index"] for b in one[e : e + 2]]) for e in (0, 2)]
    assert len(set(epochs[0])) == len(set(epochs[1])) == 12  # each epoch: 12 of 13, no repeat
    assert not np.array_equal(epochs[0], epochs[1])
    # The data position is the step: a run saved after 1 step on 2 hosts resumes on 3
    # at global batch 1 and reads what the straight run reads next.
    (saved_on_two,) = _global_batches(records, 2, 1)
    _assert_same(one[:1], [saved_on_two])
    _assert_same(one[1:], _global_batches(records, 3, 3, start_batch=1))


def test_eval_mode_is_fixed_order_padded_and_masked(dataset):
    _, _, records = dataset
    batches, _ = _batches(records[:10], 3, train=False)
    order = np.concatenate([b["record_index"] for b in batches])
    valid = np.concatenate([b["valid"] for b in batches])
    assert valid.tolist() == [True] * 10 + [False] * 2
    assert order[:10].tolist() == list(range(10))
    # No augmentation: the eval crop of record 0 is the plain box crop.
    again, _ = _batches(records[:10], 1, train=False)
    np.testing.assert_array_equal(again[0]["image"], batches[0]["image"])


def test_unreadable_image_stops_or_becomes_a_zero_weight_sample(dataset, tmp_path):
    _, _, records = dataset
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"not a jpeg")
    records = [records[0].__class__(**{**records[0].__dict__, "image_path": str(broken)})]
    records += dataset[2][1:4]
    with pytest.raises(Exception, match=r"broken\.jpg \(image id \d+\) cannot be decoded"):
        _batches(records, 1, train=False)
    (batch,), _ = _batches(records, 1, train=False, on_bad_record="skip")
    assert batch["valid"].tolist() == [False, True, True, True]
    assert batch["target_weight"][0].sum() == 0 and batch["target_weight"][1:].sum() > 0


@pytest.mark.parametrize("train", [True, False])
def test_real_coco_sample_runs_through_the_pipeline(train):
    records, _ = read_coco_keypoints(
        str(DATA_DIR / "coco" / "test_coco.json"), str(DATA_DIR / "coco"), COCO, 0.75
    )
    batches, _ = _batches(records, 3, train=train, batch_size=4)
    images = np.concatenate([b["image"] for b in batches])
    weights = np.concatenate([b["target_weight"] for b in batches])
    assert images.shape == (12, 128, 96, 3) and images.std() > 10
    assert weights.sum() > 50 and np.isfinite(np.concatenate([b["target"] for b in batches])).all()
