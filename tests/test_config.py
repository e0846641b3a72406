"""Every config file builds, and the spec grammar is parsed as documented."""

import json
import sys

import pytest
from conftest import CONFIG_DIR

from efafnet_jax.config import VARIANTS, load_config, packaged_config_names, parse_spec
from efafnet_jax.models import create_model
from efafnet_jax.platform import for_this_machine, resolve_compute_dtype, resolve_conv_impl

CONFIG_FILES = [f"{name}.py" for name in packaged_config_names()]


@pytest.mark.parametrize("name", CONFIG_FILES)
def test_every_config_file_builds_a_model(name):
    config = load_config(str(CONFIG_DIR / name))
    assert config.model.conv_impl == "auto"
    with pytest.raises(ValueError, match="resolved by the entry points"):
        create_model(config.model)
    config = for_this_machine(config)
    assert config.model.conv_impl == "cpu_gemm"  # the tests run on CPU
    model = create_model(config.model)
    assert model.num_joints == config.model.num_joints
    height, width = config.data.crop_hw
    assert config.data.heatmap_hw == (height // 4, width // 4)


@pytest.mark.parametrize("variant", sorted(VARIANTS))
@pytest.mark.parametrize("size", ["256x192", "384x288"])
@pytest.mark.parametrize("depth", ["r50", "r101", "r152"])
def test_coco_spec_sets_variant_depth_and_size(variant, size, depth):
    config = load_config(f"{CONFIG_DIR / 'coco.py'}:{variant},{depth},{size}")
    assert config.model.variant == variant
    assert config.model.depth == int(depth[1:])
    assert config.data.crop_hw == tuple(int(v) for v in size.split("x"))
    for switch, value in VARIANTS[variant].items():
        assert config.model[switch] == value


def test_default_spec_is_efafnet_r50_256x192():
    config = load_config(str(CONFIG_DIR / "coco.py"))
    assert (config.model.variant, config.model.depth, config.data.crop_hw) == (
        "efafnet",
        50,
        (256, 192),
    )
    assert config.data.sigma == 2.0


def test_dataset_joint_counts():
    assert load_config(str(CONFIG_DIR / "crowdpose.py")).model.num_joints == 14
    mpii = load_config(str(CONFIG_DIR / "mpii.py"))
    assert mpii.model.num_joints == 16 and mpii.data.crop_hw == (256, 256)


def test_spec_parts_in_any_order():
    assert parse_spec("384x288,r101,sbn", "efafnet", 50, (256, 192)) == ("sbn", 101, (384, 288))


@pytest.mark.parametrize(
    "spec, fragment",
    [
        ("resnet", "part 'resnet'"),
        ("r34", "depth 34"),
    ],
)
def test_bad_spec_is_named(spec, fragment):
    with pytest.raises(ValueError, match=fragment):
        load_config(f"{CONFIG_DIR / 'coco.py'}:{spec}")


def test_input_size_must_fit_backbone_stride():
    with pytest.raises(ValueError, match="multiple of the backbone stride"):
        load_config(f"{CONFIG_DIR / 'coco.py'}:sbn,250x190")


def test_missing_config_file_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.py"):
        load_config(str(tmp_path / "nope.py"))


def test_conv_impl_auto_resolves_by_backend_and_keeps_explicit_choices():
    assert resolve_conv_impl("auto", "cpu") == "cpu_gemm"
    assert resolve_conv_impl("auto", "gpu") == resolve_conv_impl("auto", "tpu") == "xla"
    assert resolve_conv_impl("xla", "cpu") == "xla"
    assert resolve_conv_impl("cpu_gemm", "gpu") == "cpu_gemm"


def test_compute_dtype_auto_resolves_by_backend_at_the_entry_point():
    assert resolve_compute_dtype("auto", "cpu") == "float32"
    assert resolve_compute_dtype("auto", "gpu") == "bfloat16"
    assert resolve_compute_dtype("auto", "tpu") == "bfloat16"
    assert resolve_compute_dtype("float64", "gpu") == "float64"
    assert for_this_machine(load_config(str(CONFIG_DIR / "tiny.py"))).train.compute_dtype == (
        "float32"  # these tests run on CPU
    )


def test_unknown_model_config_key_is_named():
    config = for_this_machine(load_config(str(CONFIG_DIR / "tiny.py")))
    config.model.deconv_layerz = 2
    with pytest.raises(ValueError, match="deconv_layerz"):
        create_model(config.model)


def test_load_config_does_not_read_the_running_commands_arguments(monkeypatch):
    # config_flags looks up each --config.KEY override in sys.argv unless given the
    # arguments: the command's own overrides (one naming a key that does not exist, when
    # the command names it in its error) must not reach load_config.
    monkeypatch.setattr(
        sys, "argv", ["efafnet-eval", "--config.train.bogus=1", "--config.train.batch_size=3"]
    )
    assert load_config("tiny:sbn,64x64").train.batch_size != 3


def test_a_runs_config_saved_before_a_key_existed_gets_the_keys_default_named(tmp_path, caplog):
    from efafnet_jax.configs.workdir import CONFIG_JSON, get_config

    saved = load_config("tiny:sbn,64x64")
    saved.train.batch_size = 3  # the run's own choice, kept
    old = json.loads(saved.to_json_best_effort())
    del old["eval"]["dark_kernel"], old["data"]["augment"]  # keys added after that run
    (tmp_path / CONFIG_JSON).write_text(json.dumps(old))
    config = get_config(str(tmp_path))
    today = load_config("tiny:sbn,64x64")
    assert config.eval.dark_kernel == today.eval.dark_kernel
    assert config.data.augment == today.data.augment
    assert config.train.batch_size == 3 and config.model == today.model
    kernel = today.eval.dark_kernel
    assert f"config.json lacks data.augment, eval.dark_kernel={kernel} (added after" in caplog.text
    # A config of one's own (a name no packaged config builds) is taken as saved.
    old["name"] = "my_own"
    (tmp_path / CONFIG_JSON).write_text(json.dumps(old))
    assert "dark_kernel" not in get_config(str(tmp_path)).eval
