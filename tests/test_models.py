"""Output shapes, modes and dtypes of every variant at tiny widths."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import CONFIG_DIR, load_test_config

from efafnet_jax.config import VARIANTS
from efafnet_jax.models import create_model


def _tiny(spec):
    return load_test_config(f"{CONFIG_DIR / 'tiny.py'}:{spec}")


def _init(config, batch=2, seed=0):
    model = create_model(config.model)
    height, width = config.data.crop_hw
    images = jax.random.randint(
        jax.random.key(seed), (batch, height, width, 3), 0, 256, jnp.int32
    ).astype(jnp.uint8)
    variables = model.init(jax.random.key(1), images, train=False)
    return model, variables, images


@pytest.mark.parametrize("variant", sorted(VARIANTS))
@pytest.mark.parametrize("size", ["256x192", "384x288", "256x256"])
def test_heatmap_shape_every_variant_and_size(variant, size):
    config = _tiny(f"{variant},{size}")
    model, variables, images = _init(config)
    height, width = config.data.crop_hw
    out = model.apply(variables, images, train=False)
    assert out.shape == (2, height // 4, width // 4, 17)
    assert out.dtype == jnp.float32
    assert np.isfinite(np.asarray(out)).all()


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_train_mode_updates_batch_statistics(variant):
    model, variables, images = _init(_tiny(variant))
    _, updates = model.apply(variables, images, train=True, mutable=["batch_stats"])
    before = jax.tree_util.tree_leaves(variables["batch_stats"])
    after = jax.tree_util.tree_leaves(updates["batch_stats"])
    assert len(before) == len(after) > 0
    assert any(not np.allclose(a, b) for a, b in zip(before, after, strict=True))


def test_variant_switches_change_the_graph():
    def names(variant):
        _, variables, _ = _init(_tiny(variant), batch=1)
        flat = jax.tree_util.tree_flatten_with_path(variables["params"])[0]
        return {jax.tree_util.keystr(path) for path, _ in flat}

    sbn, fam, fsm, ffm, duc = (
        names(v) for v in ("sbn", "sbn_fam", "sbn_fsm", "sbn_ffm", "sbn_duc")
    )
    assert not any("convs_0" in n for n in sbn) and any("convs_2" in n for n in fam)
    assert any("cs_fc1" in n for n in fsm) and any("lss_conv2" in n for n in fsm)
    assert not any("fsm" in n for n in sbn)
    assert any("'duc'" in n for n in duc) and not any("deconv" in n for n in duc)
    # Fusion widens the final predictor's input by conv2's 4 * width channels.
    _, v_sbn, _ = _init(_tiny("sbn"), batch=1)
    _, v_ffm, _ = _init(_tiny("sbn_ffm"), batch=1)
    k_sbn = v_sbn["params"]["final_layer"]["kernel"].shape
    k_ffm = v_ffm["params"]["final_layer"]["kernel"].shape
    assert k_ffm[2] == k_sbn[2] + 4 * 8
    assert ffm - sbn == set()  # same parameter names, different final-layer width


@pytest.mark.parametrize("arrangement", ["parallel", "cs_lss", "lss_cs"])
def test_fsm_arrangements_differ(arrangement):
    config = _tiny("sbn_fsm")
    config.model.fsm.arrangement = arrangement
    model, variables, images = _init(config, batch=1)
    out = model.apply(variables, images)
    assert out.shape[-1] == 17
    config.model.fsm.arrangement = "parallel"
    reference = create_model(config.model).apply(variables, images)
    assert (arrangement == "parallel") == np.allclose(out, reference, rtol=0, atol=0)


def test_bad_fsm_arrangement_is_named():
    config = _tiny("sbn_fsm")
    config.model.fsm.arrangement = "diagonal"
    with pytest.raises(ValueError, match="fsm.arrangement"):
        _init(config, batch=1)


def test_aux_supervision_sows_a_conv2_heatmap_that_the_loss_uses():
    from efafnet_jax.train.losses import heatmap_loss
    from efafnet_jax.train.step import loss_and_gradients

    config = _tiny("efafnet")
    config.model.fusion.aux_supervision = True
    model, variables, images = _init(config)
    out, state = model.apply(
        variables, images, train=True, mutable=["intermediates", "batch_stats"]
    )
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
    for aux_weight in (0.5, 0.0):
        t.aux_loss_weight = aux_weight
        loss, _, grads = loss_and_gradients(
            variables["params"], variables["batch_stats"], batch, model=model, train=t
        )
        np.testing.assert_allclose(float(loss), main + aux_weight * side, rtol=1e-6)
        aux_grad = np.abs(np.asarray(grads["aux_conv2"]["kernel"])).max()
        assert (aux_grad > 0) == (aux_weight > 0)


def test_bfloat16_compute_keeps_float32_params_and_output():
    config = _tiny("efafnet")
    config.model.dtype = "bfloat16"
    model, variables, images = _init(config)
    assert all(p.dtype == jnp.float32 for p in jax.tree_util.tree_leaves(variables["params"]))
    out = model.apply(variables, images)
    assert out.dtype == jnp.float32
    config.model.dtype = "float32"
    ref = create_model(config.model).apply(variables, images)
    scale = float(jnp.max(jnp.abs(ref)))
    assert float(jnp.max(jnp.abs(out - ref))) <= 0.1 * scale


def test_normalised_float_input_equals_uint8_input():
    config = _tiny("sbn")
    model, variables, images = _init(config)
    from efafnet_jax.models.preprocess import normalize_images

    m = config.model
    floats = normalize_images(images, m.mean, m.std, m.color_order)
    np.testing.assert_array_equal(model.apply(variables, images), model.apply(variables, floats))


def test_head_that_misses_stride_four_is_reported():
    config = _tiny("sbn_duc")
    config.model.duc.upscale = 4
    with pytest.raises(ValueError, match="conv2 \\(stride 4\\)"):
        _init(config, batch=1)
