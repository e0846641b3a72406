"""Output shapes, modes and dtypes of every variant at tiny widths.

Shapes are proved abstractly (`jax.eval_shape`, nothing computed) at every size; values
come from one jitted initialisation per variant at 64x64, shared by the tests here.
"""

import functools
import itertools

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from conftest import CONFIG_DIR, load_test_config

from efafnet_jax.config import VARIANTS
from efafnet_jax.models import create_model
from efafnet_jax.models.summary import abstract_variables
from efafnet_jax.weights import initial_variables

# The per-variant forward of the fast tier: EFAFNet has every module (FAM, FSM, fusion,
# the DUC head); the other rows run in the full suite.
FAST_VARIANT = "efafnet"


def _tiny(spec):
    return load_test_config(f"{CONFIG_DIR / 'tiny.py'}:{spec}")


def _images(crop_hw, batch=2, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (batch, *crop_hw, 3), dtype=np.uint8)


def _mean_and_std(leaf) -> np.ndarray:
    leaf = np.asarray(leaf, np.float64)
    return np.array([leaf.mean(), leaf.std()])


@functools.cache
def _abstract_variables(variant: str):
    """Variable shapes of the tiny `variant` (they do not depend on the crop size)."""
    return abstract_variables(create_model(_tiny(f"{variant},64x64").model), (64, 64))


@functools.cache
def _initialised(variant: str):
    """(config at 64x64, model, its jitted initial variables, 2 random uint8 crops)."""
    config = _tiny(f"{variant},64x64")
    model = create_model(config.model)
    return config, model, initial_variables(model, config), _images(config.data.crop_hw)


@functools.partial(jax.jit, static_argnames=("model", "train"))
def _apply(model, variables, images, train=False):
    """Eval-mode heatmaps; in train mode (heatmaps, BatchNorm statistics updates)."""
    if train:
        return model.apply(variables, images, train=True, mutable=["batch_stats"])
    return model.apply(variables, images, train=False)


@pytest.mark.parametrize("variant", sorted(VARIANTS))
@pytest.mark.parametrize("size", ["256x192", "384x288", "256x256"])
def test_heatmap_shape_every_variant_and_size(variant, size):
    config = _tiny(f"{variant},{size}")
    height, width = config.data.crop_hw
    images = jax.ShapeDtypeStruct((2, height, width, 3), jnp.uint8)
    out = jax.eval_shape(
        functools.partial(_apply, create_model(config.model)), _abstract_variables(variant), images
    )
    assert out.shape == (2, height // 4, width // 4, 17)
    assert out.dtype == jnp.float32


@pytest.mark.parametrize(
    "variant",
    [v if v == FAST_VARIANT else pytest.param(v, marks=pytest.mark.slow) for v in sorted(VARIANTS)],
)
def test_forward_is_finite_and_train_mode_updates_batch_statistics(variant):
    _, model, variables, images = _initialised(variant)
    out = _apply(model, variables, images)
    assert out.shape == (2, 16, 16, 17) and out.dtype == jnp.float32
    assert np.isfinite(np.asarray(out)).all()
    train_out, updates = _apply(model, variables, images, train=True)
    assert np.isfinite(np.asarray(train_out)).all()
    before = jax.tree_util.tree_leaves(variables["batch_stats"])
    after = jax.tree_util.tree_leaves(updates["batch_stats"])
    assert len(before) == len(after) > 0
    assert any(not np.allclose(a, b) for a, b in zip(before, after, strict=True))


@pytest.mark.slow  # flax's eager init of the tiny model takes ~20 s
def test_jitted_initial_variables_have_the_eager_init_statistics():
    """The production init (`initial_variables`, jitted) may differ from flax's eager
    `model.init` by float32 rounding only: per leaf the same shape and dtype, and mean and
    standard deviation within 1e-4 of the leaf's scale (rounding moves them by 1e-7).
    Another seed moves every random leaf's statistics by 5e-3 of its scale or more, another
    initialiser scale by its factor."""
    _, model, jitted, _ = _initialised("sbn")  # seed 0
    eager = model.init(jax.random.key(0), jnp.zeros((1, 64, 64, 3), jnp.uint8))
    flat_eager = dict(jax.tree_util.tree_leaves_with_path(eager))
    flat_jitted = dict(jax.tree_util.tree_leaves_with_path(jitted))
    assert flat_eager.keys() == flat_jitted.keys()
    for path, want in flat_eager.items():
        got = flat_jitted[path]
        assert (got.shape, got.dtype) == (want.shape, want.dtype), path
        expected = _mean_and_std(want)
        scale = max(float(np.max(np.abs(expected))), 1e-12)
        np.testing.assert_allclose(
            _mean_and_std(got),
            expected,
            rtol=0,
            atol=1e-4 * scale,
            err_msg=jax.tree_util.keystr(path),
        )


def test_variant_switches_change_the_graph():
    def params(variant):
        return _abstract_variables(variant)["params"]

    def names(variant):
        flat = jax.tree_util.tree_flatten_with_path(params(variant))[0]
        return {jax.tree_util.keystr(path) for path, _ in flat}

    sbn, fam, fsm, ffm, duc = (
        names(v) for v in ("sbn", "sbn_fam", "sbn_fsm", "sbn_ffm", "sbn_duc")
    )
    assert not any("convs_0" in n for n in sbn) and any("convs_2" in n for n in fam)
    assert any("cs_fc1" in n for n in fsm) and any("lss_conv2" in n for n in fsm)
    assert not any("fsm" in n for n in sbn)
    assert any("'duc'" in n for n in duc) and not any("deconv" in n for n in duc)
    # Fusion widens the final predictor's input by conv2's 4 * width channels.
    k_sbn = params("sbn")["final_layer"]["kernel"].shape
    k_ffm = params("sbn_ffm")["final_layer"]["kernel"].shape
    assert k_ffm[2] == k_sbn[2] + 4 * 8
    assert ffm - sbn == set()  # same parameter names, different final-layer width


def test_fsm_arrangements_differ():
    """Each arrangement computes its own function of the same weights ('parallel' is the
    default)."""
    config, model, variables, images = _initialised(FAST_VARIANT)  # FSM in every block
    assert config.model.fsm.arrangement == "parallel"
    outputs = {"parallel": _apply(model, variables, images)}
    for arrangement in ("cs_lss", "lss_cs"):
        serial = config.model.copy_and_resolve_references()
        serial.fsm.arrangement = arrangement
        outputs[arrangement] = _apply(create_model(serial), variables, images)
    for (name_a, a), (name_b, b) in itertools.combinations(outputs.items(), 2):
        assert a.shape == b.shape
        assert not np.array_equal(a, b), (name_a, name_b)


def test_bad_fsm_arrangement_is_named():
    config = _tiny("sbn_fsm,64x64")
    config.model.fsm.arrangement = "diagonal"
    with pytest.raises(ValueError, match="fsm.arrangement"):
        abstract_variables(create_model(config.model), (64, 64))


@pytest.mark.slow  # its own init and two gradient programs
def test_aux_supervision_sows_a_conv2_heatmap_that_the_loss_uses():
    from efafnet_jax.train.losses import heatmap_loss
    from efafnet_jax.train.step import loss_and_gradients

    config = _tiny("efafnet,64x64")
    config.model.fusion.aux_supervision = True
    model = create_model(config.model)
    variables = initial_variables(model, config)
    images = _images(config.data.crop_hw)
    out, state = jax.jit(
        functools.partial(model.apply, train=True, mutable=["intermediates", "batch_stats"])
    )(variables, images)
    (aux,) = state["intermediates"]["aux_heatmaps"]
    assert aux.shape == out.shape
    rng = np.random.default_rng(0)
    batch = {
        "image": images,
        "target": rng.uniform(size=out.shape).astype(np.float32),
        "target_weight": np.ones(out.shape[::3], np.float32),
    }
    t = config.train
    main, side = (
        float(heatmap_loss(maps, batch["target"], batch["target_weight"], t.loss, t.ohkm_top_k))
        for maps in (out, aux)
    )

    @jax.jit
    def weighted(aux_weight):  # one program for both weights
        weighted_train = ml_collections.ConfigDict({**t.to_dict(), "aux_loss_weight": aux_weight})
        return loss_and_gradients(
            variables["params"], variables["batch_stats"], batch, model=model, train=weighted_train
        )

    for aux_weight in (0.5, 0.0):
        loss, _, grads = weighted(aux_weight)
        np.testing.assert_allclose(float(loss), main + aux_weight * side, rtol=1e-6)
        aux_grad = np.abs(np.asarray(grads["aux_conv2"]["kernel"])).max()
        assert (aux_grad > 0) == (aux_weight > 0)


@pytest.mark.optimized  # a bfloat16 tolerance
def test_bfloat16_compute_keeps_float32_params_and_output():
    config, model, variables, images = _initialised(FAST_VARIANT)
    low = config.model.copy_and_resolve_references()
    low.dtype = "bfloat16"
    bfloat16_model = create_model(low)
    own = abstract_variables(bfloat16_model, (64, 64))
    assert all(p.dtype == jnp.float32 for p in jax.tree_util.tree_leaves(own["params"]))
    assert jax.tree_util.tree_structure(own) == jax.tree_util.tree_structure(variables)
    out = _apply(bfloat16_model, variables, images)
    assert out.dtype == jnp.float32
    ref = _apply(model, variables, images)
    scale = float(jnp.max(jnp.abs(ref)))
    assert float(jnp.max(jnp.abs(out - ref))) <= 0.1 * scale


def test_normalised_float_input_equals_uint8_input():
    from efafnet_jax.models.preprocess import normalize_images

    config, model, variables, images = _initialised(FAST_VARIANT)
    m = config.model
    floats = normalize_images(images, m.mean, m.std, m.color_order)
    np.testing.assert_array_equal(
        _apply(model, variables, images), _apply(model, variables, floats)
    )


def test_head_that_misses_stride_four_is_reported():
    config = _tiny("sbn_duc,64x64")
    config.model.duc.upscale = 4
    with pytest.raises(ValueError, match="conv2 \\(stride 4\\)"):
        abstract_variables(create_model(config.model), (64, 64))
