"""Decoding, flip-back, rescoring, OKS-NMS, metrics, sharded inference and eval.py."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import CONFIG_DIR, DATA_DIR, load_test_config, run_json_command
from reference_loops import final_preds_loop

from efafnet_jax.data.codec import decode, flip_back
from efafnet_jax.data.keypoints import COCO
from efafnet_jax.data.transforms import affine_matrix
from efafnet_jax.evaluation.evaluator import Evaluator
from efafnet_jax.evaluation.heatmaps import make_heatmap_fn
from efafnet_jax.evaluation.mpii_metric import pckh
from efafnet_jax.evaluation.nms import oks, oks_nms, rescore, soft_oks_nms
from efafnet_jax.models import create_model
from efafnet_jax.sharding import data_mesh, global_batch, local_rows

COCO_DIR = DATA_DIR / "coco"


def _gaussian_maps(points, h=64, w=48, sigma=2.0):
    ys, xs = np.mgrid[0:h, 0:w]
    maps = [np.exp(-((xs - x) ** 2 + (ys - y) ** 2) / (2 * sigma**2)) for x, y in points]
    return np.stack(maps, axis=-1).astype(np.float32)


def test_decode_matches_the_reference_procedure():
    rng = np.random.default_rng(0)
    points = rng.uniform([0, 0], [48, 64], size=(3, 17, 2))
    heatmaps = np.stack([_gaussian_maps(p) for p in points])
    heatmaps[0, ..., 4] = -0.1  # a joint whose maximum is <= 0: coordinate (0, 0)
    centers = rng.uniform(100, 300, size=(3, 2))
    scales = rng.uniform(0.5, 2.0, size=(3, 2))
    coords, scores = decode(heatmaps, centers, scales)
    ref, ref_scores = final_preds_loop(
        heatmaps.transpose(0, 3, 1, 2),
        centers,
        scales,
        # The reference loop passes HRNet's (width, height); the package takes (h, w).
        lambda c, s, size: affine_matrix(c, s, 0.0, size[::-1], inverse=True),
    )
    np.testing.assert_allclose(coords, ref, atol=1e-3)
    np.testing.assert_allclose(scores, ref_scores)


def test_quarter_offset_moves_toward_the_higher_neighbour():
    heatmaps = _gaussian_maps([(20.3, 30.0), (1.0, 30.0)])[None]
    # Identity-like mapping: scale so that 48 heatmap px = 48 image px, centred at 24, 32.
    coords, _ = decode(heatmaps, np.array([[24.0, 32.0]]), np.array([[0.24, 0.32]]))
    np.testing.assert_allclose(coords[0, 0], [20.25, 30.0], atol=1e-4)
    np.testing.assert_allclose(coords[0, 1], [1.0, 30.0], atol=1e-4)  # px = 1: no offset


def test_flip_back_swaps_pairs_mirrors_and_shifts_one_pixel():
    maps = np.zeros((1, 2, 5, 17), np.float32)
    maps[0, 0, 1, 1] = 1.0  # left eye at x = 1 in the mirrored crop
    maps[0, 1, 4, 0] = 7.0  # nose at the mirrored crop's last column
    out = np.asarray(flip_back(jnp.asarray(maps), COCO.flip_permutation()))
    # Mirror: x = 1 -> 3; becomes the right eye; shift right: x = 4.
    assert out[0, 0, 4, 2] == 1.0 and out[0, 0, :, 1].max() == 0
    # x = 4 -> 0 after mirroring; the shift copies column 0 into 1 and keeps column 0.
    assert out[0, 1, 0, 0] == 7.0 and out[0, 1, 1, 0] == 7.0
    unshifted = np.asarray(flip_back(jnp.asarray(maps), COCO.flip_permutation(), shift=False))
    assert unshifted[0, 0, 3, 2] == 1.0


def test_rescoring_uses_keypoints_above_the_threshold():
    scores = np.array([[0.9, 0.5, 0.1, 0.05], [0.1, 0.1, 0.1, 0.1]])
    np.testing.assert_allclose(rescore(np.array([0.8, 1.0]), scores), [0.8 * 0.7, 0.0])


def test_oks_matches_the_formula():
    sigmas = np.array([0.1, 0.2])
    a = np.array([[0.0, 0.0], [10.0, 0.0]])
    b = np.array([[[3.0, 4.0], [10.0, 0.0]]])
    # Joint 0: d^2 = 25, var = 0.04, scale = (100 + 300)/2 -> e = 25/0.04/200/2.
    expected = (np.exp(-25 / 0.04 / 200 / 2) + 1.0) / 2
    np.testing.assert_allclose(oks(a, b, 100.0, np.array([300.0]), sigmas), [expected], rtol=1e-9)


def test_oks_nms_hand_case():
    sigmas = np.full(3, 0.1)
    base = np.array([[10.0, 10.0], [20.0, 10.0], [15.0, 30.0]])
    people = np.stack([base, base + 0.5, base + 200.0, base + 0.2])
    scores = np.array([0.6, 0.9, 0.5, 0.7])
    areas = np.full(4, 400.0)
    # 1 (best) suppresses 0 and 3 (OKS ~0.98 > 0.9); 2 is far away.
    assert oks_nms(people, scores, areas, sigmas, 0.9) == [1, 2]
    assert oks_nms(people, scores, areas, sigmas, 0.999) == [1, 3, 0, 2]
    assert soft_oks_nms(people, scores, areas, sigmas, 0.9)[:2] == [1, 2]


def test_pckh_hand_case():
    gt = np.zeros((2, 16, 2))
    boxes = np.array([[[0, 0], [30, 40]], [[0, 0], [60, 80]]], float)  # 0.6 x 50, 0.6 x 100
    pred = gt.copy()
    pred[0, :, 0] = 14.0  # person 0: error 14 <= 0.5 x 30 -> hit at 0.5; > 0.1 x 30
    pred[1, :, 0] = 31.0  # person 1: 31 > 0.5 x 60 -> miss
    visible = np.ones((2, 16), bool)
    visible[1, 0] = False  # right ankle of person 1 unlabelled
    result = pckh(pred, gt, visible, boxes)
    assert result["Head"] == 50.0 and result["Ankle"] == pytest.approx((100 + 50) / 2)
    # Mean over 14 joints (no pelvis/thorax) weighted by counts: 14 hits of 27 labelled.
    assert result["Mean"] == pytest.approx(100 * 14 / 27)
    assert result["Mean@0.1"] == 0.0


def test_pckh_at_0_1_is_exact_and_hrnet_mean_is_at_0_11():
    """An error of 0.105 head sizes: a miss at 0.1, a hit at HRNet's 0.11; 0.115 misses both."""
    gt = np.zeros((3, 16, 2))
    boxes = np.tile(np.array([[0.0, 0.0], [30.0, 40.0]]), (3, 1, 1))  # head size 0.6 x 50 = 30
    pred = gt.copy()
    pred[0, :, 0] = 0.105 * 30
    pred[1, :, 0] = 0.115 * 30
    pred[2, :, 0] = 0.05 * 30
    result = pckh(pred, gt, np.ones((3, 16), bool), boxes)
    assert result["Mean@0.1"] == pytest.approx(100 / 3)
    assert result["Mean@0.1_hrnet"] == pytest.approx(200 / 3)
    assert result["Mean"] == 100.0


def _coco_sample_config(detections=False):
    config = load_test_config(f"{CONFIG_DIR / 'tiny.py'}:sbn,128x96")
    config.data.val_ann = str(COCO_DIR / "test_coco.json")
    config.data.val_images = str(COCO_DIR)
    config.data.val_detections = str(COCO_DIR / "test_coco_det_AP_H_56.json") if detections else ""
    config.eval.batch_size = 8
    return config


def test_ground_truth_through_the_result_writer_scores_ap_one():
    evaluator = Evaluator(_coco_sample_config())
    keypoints = np.stack(
        [np.concatenate([r.joints, np.ones((17, 1))], 1) for r in evaluator.records]
    )
    metrics = evaluator.metrics(keypoints)
    assert metrics["AP"] == pytest.approx(1.0) and metrics["AR"] == pytest.approx(1.0)


def test_detection_mode_reads_the_detections_file():
    evaluator = Evaluator(_coco_sample_config(detections=True))
    assert len(evaluator.records) == 118
    assert min(r.box_score for r in evaluator.records) < 0.01


def test_crowdpose_metrics_have_the_crowd_levels(tmp_path):
    from test_readers import _crowdpose_file

    config = load_test_config(f"{CONFIG_DIR / 'crowdpose.py'}")
    config.data.val_ann = str(_crowdpose_file(tmp_path))
    config.data.val_images = str(COCO_DIR)
    evaluator = Evaluator(config)
    keypoints = np.stack(
        [np.concatenate([r.joints, np.ones((14, 1))], 1) for r in evaluator.records]
    )
    metrics = evaluator.metrics(keypoints)
    assert set(metrics) == {
        "AP",
        "AP50",
        "AP75",
        "AR",
        "AR50",
        "AR75",
        "AP_easy",
        "AP_medium",
        "AP_hard",
    }
    assert metrics["AP"] == pytest.approx(1.0)


@pytest.mark.slow  # two float64 compiles; the fast tier evaluates on 8 devices below
def test_sharded_inference_on_8_devices_equals_one_device(trained_tiny):
    """float64, so that the 8-device and one-device heatmaps agree to rounding and the
    decoded keypoints (argmax, quarter offset, scores) must be identical."""
    assert jax.device_count() == 8, "tests run with 8 fake CPU devices (tests/conftest.py)"
    from efafnet_jax.weights import restore_variables

    config = trained_tiny.config.copy_and_resolve_references()
    images = np.random.default_rng(0).integers(0, 256, (8, 64, 64, 3), dtype=np.uint8)
    centers = np.random.default_rng(1).uniform(20, 40, (8, 2))
    scales = np.full((8, 2), 0.32)
    outputs = []
    with jax.enable_x64(True):
        config.model.dtype = config.model.param_dtype = "float64"
        model = create_model(config.model)
        variables = jax.tree_util.tree_map(
            lambda x: jnp.asarray(x, jnp.float64), restore_variables(trained_tiny.checkpoint)
        )
        for devices in (jax.devices(), jax.devices()[:1]):
            mesh = data_mesh(devices)
            fn = make_heatmap_fn(model, COCO, 2.0, True, True, mesh)
            outputs.append(local_rows(fn(variables, global_batch(mesh, images))))
    sharded, single = outputs
    assert sharded.dtype == np.float64 and sharded.shape == single.shape == (8, 16, 16, 17)
    assert np.abs(sharded - single).max() <= 1e-12 * np.abs(single).max()
    # Decoding runs in float32 (as the reference's); identical inputs decode identically.
    coords_sharded, scores_sharded = decode(sharded.astype(np.float32), centers, scales)
    coords_single, scores_single = decode(single.astype(np.float32), centers, scales)
    np.testing.assert_allclose(coords_sharded, coords_single, rtol=0, atol=1e-9)
    np.testing.assert_allclose(scores_sharded, scores_single, rtol=1e-6)


def _one_batch_evaluator(config) -> Evaluator:
    """An evaluator of the first eval batch of `config`'s persons (unoptimised, the tiny
    model's inference costs about 0.1 s a crop)."""
    from efafnet_jax.data.splits import read_split

    records, _, spec = read_split(config.data, "val")
    return Evaluator(config, records[: config.eval.batch_size], spec)


def test_decoding_reads_the_activation_from_the_model_not_the_training_loss(trained_tiny):
    """Any weights serve: the outputs are read as the model's activation says whatever
    loss trained them (trained_tiny's are trained with the MSE loss on raw heatmaps)."""
    from efafnet_jax.weights import restore_variables

    variables = restore_variables(trained_tiny.checkpoint)

    def keypoints(config):
        evaluator = _one_batch_evaluator(config)
        return evaluator.predict(create_model(config.model), variables, progress=False)

    softmax_config = trained_tiny.config.copy_and_resolve_references()
    softmax_config.train.loss = "spatial_softmax"
    softmax_config.model.heatmap_activation = "spatial_softmax"
    mse_config = softmax_config.copy_and_resolve_references()
    mse_config.train.loss = "mse"
    expected = keypoints(softmax_config)
    np.testing.assert_array_equal(keypoints(mse_config), expected)
    # The control: read as raw heatmaps, the same outputs give other keypoint scores.
    assert np.abs(keypoints(trained_tiny.config)[..., 2] - expected[..., 2]).max() > 0.01


def test_periodic_validations_compile_the_heatmap_function_once(trained_tiny):
    from efafnet_jax.weights import restore_variables

    config = trained_tiny.config
    evaluator = _one_batch_evaluator(config)
    model = create_model(config.model)
    variables = restore_variables(trained_tiny.checkpoint)
    first = evaluator.predict(model, variables, progress=False)
    second = evaluator.predict(model, variables, progress=False)
    np.testing.assert_array_equal(first, second)
    assert evaluator.heatmap_fn(model, data_mesh())._cache_size() == 1


def test_a_loss_that_does_not_fit_the_model_activation_is_refused():
    from efafnet_jax.train.losses import check_loss_fits_model

    with pytest.raises(ValueError, match="model.heatmap_activation='spatial_softmax'"):
        check_loss_fits_model("spatial_softmax", "identity")
    with pytest.raises(ValueError, match="model.heatmap_activation='identity'"):
        check_loss_fits_model("mse", "spatial_softmax")
    check_loss_fits_model("ohkm", "identity")


@pytest.mark.slow
def test_eval_command_on_the_coco_sample(tmp_path, trained_tiny):
    metrics = run_json_command(
        "eval",
        "--config",
        trained_tiny.spec,
        "--checkpoint",
        trained_tiny.checkpoint,
        f"--config.data.val_ann={COCO_DIR / 'test_coco.json'}",
        f"--config.data.val_images={COCO_DIR}",
        "--config.data.val_detections=",
        "--config.eval.batch_size=8",
        "--out",
        str(tmp_path),
        "--vis",
        "2",
    )
    assert set(metrics) >= {"AP", "AP50", "AR"}
    results = json.loads((tmp_path / "results" / "val_keypoints.json").read_text())
    assert len(results) > 0 and len(results[0]["keypoints"]) == 51
    assert metrics["step"] == 4 and metrics.pop("checkpoint") == trained_tiny.checkpoint
    metrics.pop("step")  # the --json line also names the weights evaluated
    assert json.loads((tmp_path / "results" / "val_metrics.json").read_text()) == metrics
    assert len(list((tmp_path / "vis").glob("*.png"))) == 2
