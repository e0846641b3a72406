"""DARK decoding and unbiased targets (docs/evaluation.md "Codecs") against hand-derived cases."""

import jax.numpy as jnp
import numpy as np
import pytest

from efafnet_jax.data.codec import (
    DARK_KERNEL,
    dark_refine,
    decode,
    encode,
    encode_on_device,
    max_positions,
    quarter_offset,
    to_image_coordinates,
)

HEATMAP_HW, CROP_HW, SIGMA = (64, 48), (256, 192), 2.0
# Sub-pixel peaks (x, y) in heatmap pixels; (20.5, 30.5) is the quarter rule's worst case.
PEAKS = [(20.3, 15.6), (20.5, 30.5), (10.1, 40.9), (30.45, 12.2), (25.0, 25.0)]


def sampled_gaussian(x0: float, y0: float, sigma: float = SIGMA) -> np.ndarray:
    """exp(-|p - p0|^2 / 2 sigma^2) at every pixel centre p of a [1, h, w, 1] map."""
    y, x = np.mgrid[0 : HEATMAP_HW[0], 0 : HEATMAP_HW[1]]
    values = np.exp(-((x - x0) ** 2 + (y - y0) ** 2) / (2 * sigma**2))
    return values.astype(np.float32)[None, :, :, None]


@pytest.mark.parametrize("peak", PEAKS)
def test_dark_recovers_a_sub_pixel_peak_the_quarter_rule_misses(peak):
    heatmaps = sampled_gaussian(*peak)
    argmax, _ = max_positions(heatmaps)
    dark = dark_refine(heatmaps, argmax, DARK_KERNEL)[0, 0]
    quarter = quarter_offset(heatmaps, argmax)[0, 0]
    assert np.abs(dark - peak).max() < 0.02
    # The quarter rule moves 0.25 px toward the higher neighbour, whatever the offset.
    fraction = np.abs(np.asarray(peak) - np.round(peak))
    expected = np.where(fraction > 0, np.abs(0.25 - fraction), 0.0)
    np.testing.assert_allclose(np.abs(quarter - peak), expected, atol=1e-6)
    if peak == (20.5, 30.5):
        np.testing.assert_allclose(np.abs(quarter - peak), 0.25, atol=1e-6)


@pytest.mark.parametrize("seed", [0, 1])
def test_dark_matches_darkpose_map_by_map(seed):
    """Against a loop transcription of DarkPose (tests/reference_loops.py): noisy peaks,
    negative values (MSE-trained outputs), peaks at the border, a flat map."""
    from reference_loops import dark_loop

    rng = np.random.default_rng(seed)
    peaks = rng.uniform([0, 0], [HEATMAP_HW[1] - 1, HEATMAP_HW[0] - 1], (6, 17, 2))
    peaks[0, :3] = [[0.4, 10.0], [47.0, 30.2], [1.6, 62.8]]  # at and near the border
    heatmaps = np.concatenate(
        [sampled_gaussian(*p)[..., 0] for p in peaks.reshape(-1, 2)], axis=0
    ).reshape(6, 17, *HEATMAP_HW)
    heatmaps = heatmaps * rng.uniform(0.1, 1, (6, 17, 1, 1)) + rng.normal(0, 0.03, heatmaps.shape)
    heatmaps[1, 4] = 0.0  # a flat map
    heatmaps = heatmaps.astype(np.float32).transpose(0, 2, 3, 1)  # channels last
    argmax, _ = max_positions(heatmaps)
    expected = dark_loop(heatmaps.transpose(0, 3, 1, 2), argmax, kernel=11)
    np.testing.assert_allclose(dark_refine(heatmaps, argmax, DARK_KERNEL), expected, atol=1e-4)
    assert np.abs(expected - argmax).max() > 0.1  # the step moved the peaks


def test_dark_leaves_peaks_at_the_border_and_flat_maps_alone():
    border = sampled_gaussian(1.3, 30.2)
    argmax, _ = max_positions(border)
    np.testing.assert_array_equal(dark_refine(border, argmax, DARK_KERNEL), argmax)  # x = 1
    flat = np.zeros((1, *HEATMAP_HW, 1), np.float32)
    argmax, _ = max_positions(flat)
    np.testing.assert_array_equal(dark_refine(flat, argmax, DARK_KERNEL), argmax)


@pytest.mark.parametrize("joint", [(81.2, 62.4), (100.0, 150.0), (33.7, 201.3)])
def test_unbiased_targets_centre_the_gaussian_at_the_joint(joint):
    target, weight = encode(
        np.array([joint]), np.ones(1), CROP_HW, HEATMAP_HW, SIGMA, encoding="unbiased"
    )
    stride = CROP_HW[0] / HEATMAP_HW[0]  # 4 in both directions
    mu = np.asarray(joint) / stride
    np.testing.assert_allclose(target, sampled_gaussian(*mu)[0], atol=1e-7)
    assert weight[0] == 1
    msra, _ = encode(np.array([joint]), np.ones(1), CROP_HW, HEATMAP_HW, SIGMA)
    # Decoded as predictions: unbiased + DARK lands on the joint; msra + quarter does not.
    center, scale = np.array([[96.0, 128.0]]), np.array([[192 / 200, 256 / 200]])
    exact, _ = decode(target[None], center, scale, decoder="dark", sigma=SIGMA)
    assert np.abs(exact[0, 0] - joint).max() < 0.02 * stride
    standard, _ = decode(msra[None], center, scale)
    if np.any(np.abs(mu - np.round(mu)) > 0.1):
        assert np.abs(standard[0, 0] - joint).max() > 0.1 * stride


def test_the_dark_kernel_is_a_setting_defaulting_to_the_references_11():
    """eval.dark_kernel: 11 by default at every sigma (DarkPose's configs and mmpose 1.x's
    codecs, sigma 2 and 3); 0 derives 6 sigma - 1 made odd (17 at sigma 3); decode's own
    default is the config's."""
    import inspect

    from efafnet_jax.config import build_config
    from efafnet_jax.data.codec import dark_kernel_size

    config = build_config("coco", num_joints=17, spec="sbn", default_size=CROP_HW)
    assert config.eval.dark_kernel == DARK_KERNEL == 11
    assert inspect.signature(decode).parameters["dark_kernel"].default == DARK_KERNEL
    assert [dark_kernel_size(sigma) for sigma in (2.0, 3.0)] == [11, 11]
    assert [dark_kernel_size(sigma, 0) for sigma in (1.5, 2.0, 3.0)] == [9, 11, 17]
    assert dark_kernel_size(3.0, 13) == 13
    for bad in (-1, 12):
        with pytest.raises(ValueError, match="eval.dark_kernel"):
            dark_kernel_size(2.0, bad)
    # decode blurs with the kernel it is given: a skewed peak moves with the blur.
    heatmaps = sampled_gaussian(20.3, 15.6) + 0.5 * sampled_gaussian(24.0, 19.0, sigma=4.0)
    argmax, _ = max_positions(heatmaps)
    center, scale = np.array([[96.0, 128.0]]), np.array([[192 / 200, 256 / 200]])
    decoded = {}
    for kernel in (11, 17):
        decoded[kernel], _ = decode(heatmaps, center, scale, True, "dark", 3.0, dark_kernel=kernel)
        refined = dark_refine(heatmaps, argmax, kernel)
        expected = to_image_coordinates(refined, center, scale, HEATMAP_HW)
        np.testing.assert_array_equal(decoded[kernel], expected)
    assert np.abs(decoded[11] - decoded[17]).max() > 0.01


def test_unbiased_targets_on_device_equal_the_host_ones():
    rng = np.random.default_rng(0)
    joints = rng.uniform(-20, 210, (2, 17, 2))
    visibility = (rng.uniform(size=(2, 17)) > 0.2).astype(np.float32)
    host = [
        encode(j, v, CROP_HW, HEATMAP_HW, SIGMA, encoding="unbiased")
        for j, v in zip(joints, visibility, strict=True)
    ]
    device = encode_on_device(joints, visibility, CROP_HW, HEATMAP_HW, SIGMA, encoding="unbiased")
    np.testing.assert_allclose(np.asarray(device[0]), np.stack([t for t, _ in host]), atol=2e-6)
    np.testing.assert_array_equal(np.asarray(device[1]), np.stack([w for _, w in host]))
    assert np.stack([w for _, w in host]).min() == 0  # some joints fell off the map


def test_unknown_codec_names_are_refused():
    with pytest.raises(ValueError, match="target_encoding"):
        encode(np.zeros((1, 2)), np.ones(1), CROP_HW, HEATMAP_HW, SIGMA, encoding="udp")
    with pytest.raises(ValueError, match="eval.decoder"):
        decode(np.zeros((1, *HEATMAP_HW, 1)), np.zeros((1, 2)), np.ones((1, 2)), decoder="x")


def test_the_default_target_encoding_is_the_geometrys_own():
    """data.target_encoding "" : HRNet's rounding for the standard transform, UDP's
    sub-pixel Gaussian under data.udp; an explicit value is kept in either geometry."""
    from efafnet_jax.config import build_config
    from efafnet_jax.data.splits import sample_config

    data = build_config("coco", num_joints=17, spec="sbn", default_size=CROP_HW).data
    assert data.target_encoding == ""
    assert sample_config(data).target_encoding == "msra"
    data.udp = True
    assert sample_config(data).target_encoding == "unbiased"
    data.target_encoding = "msra"
    assert sample_config(data).target_encoding == "msra"
    data.udp, data.target_encoding = False, "unbiased"
    assert sample_config(data).target_encoding == "unbiased"
    data.target_encoding = "udp"
    with pytest.raises(ValueError, match="data.target_encoding must be '' or one of"):
        sample_config(data)


def _crop_then_mirror_and_mirror_then_crop(udp: bool):
    """Keypoints (x) cropped from the image, and cropped from the mirrored image then
    mirrored back in the crop (x -> (width - 1) - x), as the flip test does."""
    from efafnet_jax.data.transforms import affine_matrix, affine_points

    image_width, center, scale = 640, np.array([300.3, 200.7]), np.array([1.2, 1.6])
    points = np.random.default_rng(0).uniform([150, 60], [450, 340], (20, 2))
    direct = affine_points(points, affine_matrix(center, scale, 0.0, CROP_HW, udp=udp))
    mirrored_center = np.array([image_width - 1 - center[0], center[1]])
    mirrored_points = np.stack([image_width - 1 - points[:, 0], points[:, 1]], axis=-1)
    matrix = affine_matrix(mirrored_center, scale, 0.0, CROP_HW, udp=udp)
    via_mirror = affine_points(mirrored_points, matrix)[:, 0]
    return direct[:, 0], CROP_HW[1] - 1 - via_mirror


class CropReader:
    """A stand-in model that reads its heatmaps off the crop, so that nothing of a network
    is compiled: heatmap pixel (x, y) of channel k is crop channel k % 3 at crop point
    (x, y) * stride, linearly interpolated, / 255. Given a geometry's stride (crop pixels
    per heatmap pixel, x and y) it is that geometry's perfect model: a spot drawn at crop
    point p peaks at heatmap point p / stride."""

    heatmap_activation = "identity"

    def __init__(self, stride, heatmap_hw: tuple[int, int], num_joints: int):
        self.stride, self.heatmap_hw, self.num_joints = stride, heatmap_hw, num_joints

    def apply(self, variables, crops, train):
        del variables, train
        images = jnp.asarray(crops).astype(jnp.float32) / 255
        rows = _sample_along(images, 1, self.heatmap_hw[0], self.stride[1])
        heatmaps = _sample_along(rows, 2, self.heatmap_hw[1], self.stride[0])
        return heatmaps[..., np.arange(self.num_joints) % 3]


def _sample_along(images, axis: int, size: int, stride: float):
    """`images` at positions 0, stride, ..., (size - 1) stride of `axis`, linearly."""
    position = jnp.arange(size) * stride
    low = jnp.clip(jnp.floor(position).astype(jnp.int32), 0, images.shape[axis] - 1)
    high = jnp.minimum(low + 1, images.shape[axis] - 1)
    weight = jnp.expand_dims(position - low, [d for d in range(images.ndim) if d != axis])
    return jnp.take(images, low, axis) * (1 - weight) + jnp.take(images, high, axis) * weight


# Crop points (x, y) of three spots, well inside the crop.
SPOTS = np.array([[60, 100], [97, 31], [130, 200]])


def _spots(points: np.ndarray) -> np.ndarray:
    """A [1, H, W, 3] uint8 crop with a Gaussian spot (sigma 6 px) per channel at `points`."""
    y, x = np.mgrid[0 : CROP_HW[0], 0 : CROP_HW[1]]
    spots = [np.exp(-((x - px) ** 2 + (y - py) ** 2) / (2 * 6.0**2)) for px, py in points]
    return np.round(255 * np.stack(spots, axis=-1))[None].astype(np.uint8)


@pytest.mark.parametrize("udp", [True, False], ids=["udp", "standard"])
def test_udp_flip_of_a_crop_and_back_is_the_identity(udp):
    """Hand-derived: HRNet's transform maps the box centre to crop x = W/2, so a mirrored
    crop, mirrored back, is 1 crop pixel left; from crop to heatmap (x / s, s = W / w)
    and back the flip moves x by w - 1 - (W - 1) / s = -(s - 1) / s heatmap pixels (0.75
    at stride 4; HRNet's 1-pixel shift compensates it to +0.25). Without a shift, the flip
    test's average of the two is then the known half crop pixel off. UDP's unit lengths
    map [0, W - 1] onto [0, w - 1]: all of them are exact. The heatmap part runs through
    the flip test itself (`heatmap_function`: the mirrored crop, `flip_back`, the shift
    and the average) on the geometry's perfect model."""
    from efafnet_jax.data.codec import flip_test_shift, heatmap_stride
    from efafnet_jax.data.keypoints import KeypointSpec
    from efafnet_jax.evaluation.heatmaps import heatmap_function

    direct, back = _crop_then_mirror_and_mirror_then_crop(udp)
    np.testing.assert_allclose((direct + back) / 2 - direct, 0.0 if udp else -0.5, atol=1e-6)
    np.testing.assert_allclose(back - direct, 0.0 if udp else -1.0, atol=1e-6)

    stride = heatmap_stride(CROP_HW, HEATMAP_HW, udp)
    model = CropReader(stride, HEATMAP_HW, num_joints=3)
    spec = KeypointSpec("spots", ("a", "b", "c"), (), (0.1,) * 3, (), ())
    crop = _spots(SPOTS)

    def flipped_and_back(shift: bool) -> np.ndarray:
        """The flip test's mirrored heatmaps mapped back: 2 x its average - the direct ones."""
        average = heatmap_function(model, spec, SIGMA, True, shift)({}, crop)
        return np.asarray(2 * average - model.apply({}, crop, train=False))

    shifted = flipped_and_back(flip_test_shift(True, udp))
    if udp:
        np.testing.assert_allclose(shifted, model.apply({}, crop, train=False), atol=1e-5)
    else:
        # HRNet's shift: +1 crop pixel (+0.25 heatmap pixels); none: -(s - 1) (-0.75).
        right = model.apply({}, _spots(SPOTS + [1, 0]), train=False)
        np.testing.assert_allclose(shifted, right, atol=1e-6)
        left = model.apply({}, _spots(SPOTS - [stride[0] - 1, 0]), train=False)
        np.testing.assert_allclose(flipped_and_back(False), left, atol=1e-6)


@pytest.mark.parametrize("encoding", ["msra", "unbiased"])
def test_udp_targets_decode_back_to_the_image_keypoints(encoding):
    """image -> crop (UDP) -> targets -> heatmap peak -> image: the joints come back, to
    DARK's accuracy with unbiased targets and within half a heatmap pixel with msra."""
    from efafnet_jax.data.transforms import affine_matrix, affine_points

    center, scale = np.array([300.3, 200.7]), np.array([1.2, 1.6])
    joints = np.array([[280.2, 150.9], [350.0, 260.1], [301.7, 199.2]])
    crop = affine_points(joints, affine_matrix(center, scale, 0.0, CROP_HW, udp=True))
    target, _ = encode(crop, np.ones(3), CROP_HW, HEATMAP_HW, SIGMA, encoding=encoding, udp=True)
    coords, _ = decode(target[None], center[None], scale[None], True, "dark", SIGMA, udp=True)
    pixel = scale[0] * 200 / (HEATMAP_HW[1] - 1)  # image pixels per heatmap pixel
    tolerance = 0.02 if encoding == "unbiased" else 0.5
    assert np.abs(coords[0] - joints).max() < tolerance * pixel
    standard, _ = decode(target[None], center[None], scale[None], True, "dark", SIGMA)
    assert np.abs(standard[0] - joints).max() > 0.3 * pixel  # the geometries differ


def test_the_flip_test_shift_is_off_under_udp():
    from efafnet_jax.data.codec import flip_test_shift

    assert flip_test_shift(True, udp=False) and not flip_test_shift(True, udp=True)
    assert not flip_test_shift(False, udp=False)


def test_evaluation_predict_and_export_follow_the_codec_settings(monkeypatch):
    """eval.decoder and data.udp reach every path that crops, flips or decodes: the
    evaluator (eval.py and the periodic validation), the predictor and export. Each path's
    decoding and flip are watched on their own; the model reads its heatmaps off the
    crops (`CropReader`), so a flip shifted where it must not be changes them."""
    from conftest import CONFIG_DIR, DATA_DIR, load_test_config

    from efafnet_jax.data import codec
    from efafnet_jax.data.images import read_image
    from efafnet_jax.evaluation import evaluator as evaluator_module
    from efafnet_jax.evaluation import heatmaps as heatmaps_module
    from efafnet_jax.inference import export as export_module
    from efafnet_jax.inference import predictor as predictor_module

    config = load_test_config(f"{CONFIG_DIR / 'tiny.py'}:efafnet,64x64")
    coco = DATA_DIR / "coco"
    d = config.data
    d.val_ann, d.val_images, d.val_detections = str(coco / "test_coco.json"), str(coco), ""
    d.udp, config.eval.decoder, config.eval.batch_size, config.eval.workers = True, "dark", 8, 0
    paths = {"evaluator": evaluator_module, "predictor": predictor_module}
    decoded = {name: [] for name in paths}  # (settings, decoded coordinates) per call
    shifts = {name: [] for name in (*paths, "export")}

    def watch_decode(name):
        def spy(heatmaps, centers, scales, *settings):
            coords, scores = codec.decode(heatmaps, centers, scales, *settings)
            decoded[name].append((settings, coords))
            return coords, scores

        return spy

    def watch_flip(name, make):
        def spy(model, spec, sigma, flip_test, shift, *mesh):
            shifts[name].append(shift)
            return make(model, spec, sigma, flip_test, shift, *mesh)

        return spy

    for name, module in paths.items():
        monkeypatch.setattr(module, "decode", watch_decode(name))
        monkeypatch.setattr(module, "make_heatmap_fn", watch_flip(name, module.make_heatmap_fn))
    heatmaps_of = watch_flip("export", heatmaps_module.heatmap_function)
    monkeypatch.setattr(export_module, "heatmap_function", heatmaps_of)
    model = CropReader((4, 4), tuple(d.heatmap_hw), num_joints=17)
    monkeypatch.setattr(export_module, "create_model", lambda model_config: model)

    evaluator = evaluator_module.Evaluator(config)
    keypoints = evaluator.predict(model, {}, progress=False)
    predictor = predictor_module.PosePredictor(model, {}, config, evaluator.spec, batch_size=8)
    image = read_image(str(coco / "000000196141.jpg"), 196141)  # in colour: the flip's
    poses = predictor(image, [[100, 80, 120, 240, 1]])  # left/right swap changes the maps
    exported = export_module.export_inference(config, {})
    assert shifts == {"evaluator": [False], "predictor": [False], "export": [False]}  # UDP's
    for name in paths:
        assert decoded[name] and all(
            s == (True, "dark", d.sigma, True, config.eval.dark_kernel) for s, _ in decoded[name]
        )
    # Each path answers with what it decoded, not with coordinates of its own.
    evaluated = np.concatenate([coords for _, coords in decoded["evaluator"]])
    np.testing.assert_array_equal(keypoints[..., :2], evaluated[: len(keypoints)])
    ((_, predicted),) = decoded["predictor"]
    np.testing.assert_array_equal(poses.keypoints[..., :2], predicted)
    # The exported function flips as the predictor does.
    np.testing.assert_allclose(exported.call(poses.crops), poses.heatmaps, atol=1e-6)


@pytest.mark.parametrize("udp", [False, True], ids=["standard", "udp"])
def test_training_samples_carry_the_codec_settings(udp):
    """config.data -> sample_config -> make_sample: unbiased targets in the chosen
    geometry decode (DARK, same geometry) onto the record's joints in the image."""
    from conftest import DATA_DIR

    from efafnet_jax.config import build_config
    from efafnet_jax.data.coco_format import read_coco_keypoints
    from efafnet_jax.data.images import read_image
    from efafnet_jax.data.keypoints import COCO
    from efafnet_jax.data.sample import make_sample
    from efafnet_jax.data.splits import sample_config

    data = build_config("coco", num_joints=17, spec="sbn", default_size=CROP_HW).data
    data.target_encoding, data.udp = "unbiased", udp
    records, _ = read_coco_keypoints(
        str(DATA_DIR / "coco" / "test_coco.json"), str(DATA_DIR / "coco"), COCO, 0.75
    )
    record = records[0]
    image = read_image(record.image_path, record.image_id)
    sample = make_sample(record, image, COCO, sample_config(data), draws=None)
    coords, _ = decode(
        sample.target[None], record.center[None], record.scale[None], True, "dark", SIGMA, udp
    )
    visible = (record.visibility > 0) & (sample.target_weight > 0)
    pixel = record.scale[0] * 200 / HEATMAP_HW[1]  # image pixels per heatmap pixel
    assert visible.sum() >= 5
    assert np.abs(coords[0][visible] - record.joints[visible]).max() < 0.03 * pixel
