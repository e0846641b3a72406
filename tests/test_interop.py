"""PyTorch reference parity, exact conversion both ways, and load error messages."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import CONFIG_DIR, load_test_config, run_json_command

from efafnet_jax.models import create_model
from efafnet_jax.models.summary import abstract_variables

torch = pytest.importorskip("torch", reason="the torch extra is not installed")

from efafnet_jax.interop.compare import compare  # noqa: E402
from efafnet_jax.interop.convert import (  # noqa: E402
    ConversionError,
    flax_to_state_dict,
    load_torch_checkpoint,
    state_dict_to_flax,
)
from efafnet_jax.interop.torch_reference import TorchPoseNet  # noqa: E402


def _tiny(spec):
    return load_test_config(f"{CONFIG_DIR / 'tiny.py'}:{spec}")


def _template(config):
    """The model's variable shapes and dtypes: all that a strict conversion reads."""
    return abstract_variables(create_model(config.model), tuple(config.data.crop_hw))


def _random_variables(config, seed):
    """Variables of the model's shapes and dtypes, standard normal values (no init)."""
    rng = np.random.default_rng(seed)
    return jax.tree_util.tree_map(
        lambda leaf: rng.standard_normal(leaf.shape).astype(leaf.dtype), _template(config)
    )


# Every branch of the model and of the reference, each switch on and off: EFAFNet (FAM, FSM,
# fusion into the DUC head), SimpleBaseline (none; the deconvolution head), fusion into the
# deconvolution head, the DUC head without fusion (no final layer). sbn_fam, sbn_fsm and
# sbn_fasm combine branches of these; their own parity is 3 float64 training steps in
# tests/test_compare_training.py. EFAFNet's runs in the fast tier.
@pytest.mark.parametrize(
    "variant",
    ["efafnet", *(pytest.param(v, marks=pytest.mark.slow) for v in ("sbn", "sbn_ffm", "sbn_duc"))],
)
def test_float64_parity_every_branch(variant):
    """Same weights, same input: outputs and all gradients agree to float64 rounding."""
    result = compare(_tiny(f"{variant},64x64"), dtype="float64")
    assert len(result["tensors"]) > 50
    assert result["max_rel_err_forward"] < 1e-10
    assert result["max_rel_err_grad"] < 1e-10


@pytest.mark.slow
@pytest.mark.parametrize("arrangement", ["cs_lss", "lss_cs"])
def test_float64_parity_serial_fsm_and_aux_head(arrangement):
    config = _tiny("efafnet,64x64")
    config.model.fsm.arrangement = arrangement
    config.model.fsm.lss_relu_before_sigmoid = False
    config.model.fusion.aux_supervision = True
    result = compare(config, dtype="float64")
    assert result["max_rel_err_forward"] < 1e-10 and result["max_rel_err_grad"] < 1e-10


@pytest.mark.slow
@pytest.mark.optimized  # float32 criteria
def test_float32_parity_is_as_close_as_pytorch_to_the_exact_result():
    result = compare(_tiny("efafnet,64x64"), dtype="float32")
    assert result["max_rel_err_forward"] < 1e-5
    assert result["jax_vs_float64_rel_err_forward"] < 1e-5
    # JAX's float32 gradients are no further from the float64 result than PyTorch's.
    assert result["jax_vs_float64_rel_err_grad"] <= 2 * result["torch_vs_float64_rel_err_grad"]


@pytest.mark.parametrize("variant", ["sbn", "efafnet"])
def test_torch_to_flax_to_torch_is_the_identity(variant):
    config = _tiny(variant)
    config.model.fusion.aux_supervision = True
    reference = TorchPoseNet(config.model)
    for buffer in reference.buffers():  # non-trivial statistics
        if buffer.dtype.is_floating_point:
            buffer.uniform_(0.5, 2.0)
    original = reference.state_dict()
    variables, report = state_dict_to_flax(original, _template(config))
    assert not report.initialised and not report.unused
    back = flax_to_state_dict(variables)
    assert set(back) == set(original)
    for key, value in original.items():
        if key.endswith("num_batches_tracked"):
            assert back[key] == 0  # flax keeps no step counter (documented)
            continue
        np.testing.assert_array_equal(back[key], value.numpy(), err_msg=key)


@pytest.mark.parametrize("variant", ["sbn_ffm", "efafnet"])
def test_flax_to_torch_to_flax_is_the_identity(variant):
    config = _tiny(variant)
    variables = _random_variables(config, seed=3)
    state = {k: torch.from_numpy(np.array(v)) for k, v in flax_to_state_dict(variables).items()}
    reference = TorchPoseNet(config.model)
    reference.load_state_dict(state)  # strict: every key and shape fits the reference
    again, _ = state_dict_to_flax(reference.state_dict(), _template(config))
    flat_a = jax.tree_util.tree_leaves_with_path(variables)
    flat_b = dict(jax.tree_util.tree_leaves_with_path(again))
    for path, value in flat_a:
        np.testing.assert_array_equal(np.asarray(flat_b[path]), np.asarray(value))


def test_duc_order_matches_torch_pixel_shuffle():
    from efafnet_jax.models.heads import depth_to_space

    x = np.random.default_rng(0).normal(size=(2, 3, 4, 5 * 9)).astype(np.float32)
    expected = torch.nn.PixelShuffle(3)(torch.from_numpy(x).permute(0, 3, 1, 2))
    out = depth_to_space(jnp.asarray(x), 3)
    np.testing.assert_array_equal(np.asarray(out), expected.permute(0, 2, 3, 1).numpy())


def _simple_baseline_keys(blocks, num_deconv=3):
    """SimpleBaseline pose_resnet key names, written out from its module layout."""
    bn = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")
    keys = ["conv1.weight"] + [f"bn1.{s}" for s in bn]
    for stage, count in enumerate(blocks, start=1):
        for j in range(count):
            p = f"layer{stage}.{j}"
            for i in (1, 2, 3):
                keys += [f"{p}.conv{i}.weight"] + [f"{p}.bn{i}.{s}" for s in bn]
            if j == 0:
                keys += [f"{p}.downsample.0.weight"] + [f"{p}.downsample.1.{s}" for s in bn]
    for i in range(num_deconv):
        keys += [f"deconv_layers.{3 * i}.weight"] + [f"deconv_layers.{3 * i + 1}.{s}" for s in bn]
    return set(keys + ["final_layer.weight", "final_layer.bias"])


def test_sbn_keys_are_simple_baseline_pose_resnet_keys():
    config = load_test_config(f"{CONFIG_DIR / 'coco.py'}:sbn,r50,256x192")
    reference = TorchPoseNet(config.model)
    assert set(reference.state_dict()) == _simple_baseline_keys((3, 4, 6, 3))
    shapes = {k: tuple(v.shape) for k, v in reference.state_dict().items()}
    assert shapes["deconv_layers.0.weight"] == (2048, 256, 4, 4)
    assert shapes["final_layer.weight"] == (17, 256, 1, 1)


def test_fam_keys_follow_res2net():
    config = _tiny("sbn_fam")
    keys = set(TorchPoseNet(config.model).state_dict())
    for expected in (
        "layer1.0.convs.0.weight",
        "layer1.0.bns.2.running_var",
        "layer2.0.conv1.weight",
        "layer2.0.conv3.weight",
        "layer2.0.bn3.weight",
        "layer2.0.downsample.0.weight",
    ):
        assert expected in keys
    assert "layer1.0.convs.3.weight" not in keys  # scale 4: three 3x3 convs


def _imagenet_resnet_state_dict(config):
    """A torchvision-style ImageNet ResNet state_dict: the backbone plus an fc layer."""
    sbn = config.copy_and_resolve_references()
    for switch in ("use_fam", "use_fsm", "use_fusion"):
        sbn.model[switch] = False
    sbn.model.head = "deconv"
    state = {
        k: v
        for k, v in TorchPoseNet(sbn.model).state_dict().items()
        if k.startswith(("conv1", "bn1", "layer"))
    }
    state["fc.weight"] = torch.zeros(1000, 8 * sbn.model.width * 4)
    state["fc.bias"] = torch.zeros(1000)
    return state


def test_torchvision_backbone_loads_into_sbn_backbone_exactly():
    config = _tiny("sbn")
    state = _imagenet_resnet_state_dict(config)
    variables, report = state_dict_to_flax(state, _template(config), backbone_only=True)
    assert all(name.split("/")[1] == "backbone" for name, _, _ in report.loaded)
    assert {why for _, _, why in report.initialised} == {"not in the backbone"}
    np.testing.assert_array_equal(
        variables["params"]["backbone"]["conv1"]["kernel"],
        state["conv1.weight"].numpy().transpose(2, 3, 1, 0),
    )


def test_partial_load_reports_loaded_and_initialised_as_a_table():
    config = _tiny("sbn_fasm")
    state = _imagenet_resnet_state_dict(config)
    template = _random_variables(config, seed=0)  # values, to see that they are kept
    with pytest.raises(ConversionError):
        state_dict_to_flax(state, template, backbone_only=True)
    variables, report = state_dict_to_flax(state, template, backbone_only=True, partial=True)
    loaded = {key for _, key, _ in report.loaded}
    reasons = {key: why for _, key, why in report.initialised}
    assert "conv1.weight" in loaded and "layer1.0.bn3.weight" in loaded
    assert reasons["layer1.0.conv1.weight"] == "shape (8, 8, 1, 1) != (12, 8, 1, 1)"
    assert reasons["layer1.0.fsm.cs_fc1.weight"] == "missing in the state_dict"
    assert ("layer1.0.conv2.weight", (8, 8, 3, 3)) in report.unused
    table = report.table()
    assert "loaded" in table and "initialised" in table and "unused" in table
    assert table.splitlines()[-1].startswith(f"{len(report.loaded)} loaded")
    np.testing.assert_array_equal(  # what did not fit keeps its initial value
        variables["params"]["backbone"]["layer1_0"]["conv1"]["kernel"],
        template["params"]["backbone"]["layer1_0"]["conv1"]["kernel"],
    )


def test_shape_mismatch_error_names_key_and_both_shapes():
    config = _tiny("sbn")
    state = TorchPoseNet(config.model).state_dict()
    state["final_layer.weight"] = torch.zeros(14, 16, 1, 1)
    with pytest.raises(ConversionError) as err:
        state_dict_to_flax(state, _template(config))
    message = str(err.value)
    assert "'final_layer.weight'" in message
    assert "(14, 16, 1, 1)" in message and "(17, 16, 1, 1)" in message


def test_missing_and_unexpected_keys_are_named():
    config = _tiny("sbn")
    template = _template(config)
    state = TorchPoseNet(config.model).state_dict()
    del state["layer2.0.bn2.running_var"]
    with pytest.raises(ConversionError, match="no key 'layer2.0.bn2.running_var'"):
        state_dict_to_flax(state, template)
    state = TorchPoseNet(config.model).state_dict()
    state["extra_head.weight"] = torch.zeros(3)
    with pytest.raises(ConversionError, match="'extra_head.weight' \\(shape \\(3,\\)\\)"):
        state_dict_to_flax(state, template)


def test_checkpoint_file_unwrapping_and_errors(tmp_path):
    config = _tiny("sbn")
    state = TorchPoseNet(config.model).state_dict()
    wrapped = tmp_path / "wrapped.pth"
    torch.save({"state_dict": {f"module.{k}": v for k, v in state.items()}, "epoch": 3}, wrapped)
    loaded = load_torch_checkpoint(str(wrapped))
    assert set(loaded) == set(state)
    bad = tmp_path / "bad.pth"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(ConversionError, match="bad.pth"):
        load_torch_checkpoint(str(bad))


@pytest.mark.slow  # a command
@pytest.mark.optimized  # a float32 criterion
def test_compare_command_json_and_checkpoint(tmp_path):
    config = _tiny("sbn,64x64")
    checkpoint = tmp_path / "sbn.pth"
    torch.save(TorchPoseNet(config.model).state_dict(), checkpoint)
    result = run_json_command(
        "efafnet_jax.interop.compare",
        "--config",
        "tiny:sbn,64x64",
        "--torch-checkpoint",
        str(checkpoint),
        "--batch",
        "1",
    )
    assert result["batch"] == 1 and result["dtype"] == "float32"
    assert result["max_rel_err_forward"] < 1e-5
    assert {"max_rel_err_grad", "jax_vs_float64_rel_err_grad"} <= set(result)


@pytest.mark.slow
@pytest.mark.optimized  # for speed: unoptimised, the float64 ResNet-50 runs 95 s, not 20 s
def test_full_size_efafnet_r50_float64_parity():
    """ResNet-50 EFAFNet at 256x192: the whole network, both modes, all gradients."""
    result = compare(
        load_test_config(f"{CONFIG_DIR / 'coco.py'}:efafnet,r50,256x192"), batch=1, dtype="float64"
    )
    assert result["max_rel_err_forward"] < 1e-10
    assert result["max_rel_err_grad"] < 1e-8
