"""compare --per-layer: each layer's forward error and the first layer over tolerance."""

import functools

import jax
import numpy as np
import pytest
from conftest import CONFIG_DIR, load_test_config, run_json_command

from efafnet_jax.models import create_model
from efafnet_jax.models.summary import abstract_variables

torch = pytest.importorskip("torch", reason="the torch extra is not installed")

from efafnet_jax.interop import per_layer  # noqa: E402
from efafnet_jax.interop.compare import calibrate_batch_norm, normalized_input  # noqa: E402
from efafnet_jax.interop.convert import state_dict_to_flax  # noqa: E402
from efafnet_jax.interop.per_layer import first_over_tolerance, per_layer_errors  # noqa: E402
from efafnet_jax.interop.torch_reference import TorchPoseNet  # noqa: E402

TOLERANCE = 1e-10  # the float64 default


@functools.cache
def _pair(variant: str):
    """float64 torch reference (BatchNorm calibrated), flax model, variable shapes, input."""
    config = load_test_config(f"{CONFIG_DIR / 'tiny.py'}:{variant},64x64")
    m = config.model
    m.dtype = m.param_dtype = "float64"
    torch.manual_seed(0)
    images = np.random.default_rng(0).integers(0, 256, (2, 64, 64, 3), dtype=np.uint8)
    inputs = normalized_input(images, m)
    reference = TorchPoseNet(m)
    calibrate_batch_norm(reference, torch.from_numpy(inputs.astype(np.float32)).permute(0, 3, 1, 2))
    reference = reference.double()
    model = create_model(m)
    with jax.enable_x64(True):
        template = abstract_variables(model, (64, 64))
    return reference, model, template, inputs


def _errors(variant: str, scale: dict[str, float] | None = None) -> dict:
    """per_layer_errors with the flax copy's torch keys in `scale` multiplied (planted)."""
    reference, model, template, inputs = _pair(variant)
    state = {k: v.clone() for k, v in reference.state_dict().items()}
    for key, factor in (scale or {}).items():
        state[key] *= factor
    with jax.enable_x64(True):
        variables, _ = state_dict_to_flax(state, template)
        return per_layer_errors(reference, model, variables, inputs)


def _parameterised_leaves(model) -> set[str]:
    return {
        name
        for name, module in model.named_modules()
        if not list(module.children()) and list(module.parameters(recurse=False))
    }


@pytest.mark.parametrize("variant", ["efafnet", "sbn"])  # sbn: the in-place ReLU head
def test_identical_weights_every_layer_within_float64_rounding(variant):
    errors = _errors(variant)
    assert set(errors) == _parameterised_leaves(_pair(variant)[0])
    assert max(rel for _, rel in errors.values()) < TOLERANCE
    assert first_over_tolerance(errors, TOLERANCE) is None
    names = list(errors)  # network order: the order the torch modules ran
    assert names[0] == "conv1" and names[-1] == "final_layer"
    assert names.index("layer1.0.conv1") < names.index("layer2.0.conv1")


@pytest.mark.parametrize(
    "key",
    ["layer2.0.convs.1.weight", "layer2.0.bn3.running_var", "layer2.0.fsm.cs_fc1.weight"],
)
def test_planted_mismatch_is_the_first_layer_reported(key):
    errors = _errors("efafnet", {key: 1.01})
    planted = key.rsplit(".", 1)[0]
    assert first_over_tolerance(errors, TOLERANCE) == planted
    names = list(errors)
    before = names[: names.index(planted)]
    assert before and all(errors[name][1] <= TOLERANCE for name in before)
    assert errors[planted][1] > 1e-4  # a 1% weight change is far above rounding


def test_a_layer_without_flax_output_is_an_error(monkeypatch):
    owns_params = per_layer._owns_params

    def skip_final_layer(module, method):
        return owns_params(module, method) and module.name != "final_layer"

    monkeypatch.setattr(per_layer, "_owns_params", skip_final_layer)
    with pytest.raises(ValueError, match=r"torch layers with no flax output: \['final_layer'\]"):
        _errors("sbn")


def test_first_over_tolerance_counts_nan_as_over():
    errors = {"a": (0.0, 0.0), "b": (float("nan"), float("nan")), "c": (1.0, 1.0)}
    assert first_over_tolerance(errors, 1e-4) == "b"


@pytest.mark.slow  # a command
def test_compare_command_per_layer_json():
    result = run_json_command(
        "efafnet_jax.interop.compare",
        "--config",
        "tiny:efafnet,64x64",
        "--dtype",
        "float64",
        "--per-layer",
    )
    assert {"max_rel_err_forward", "max_rel_err_grad", "worst_forward", "worst_grad"} <= set(result)
    assert "tensors" not in result and "layer_errors" not in result
    assert result["layer_tolerance"] == 1e-10
    assert result["first_layer_over_tolerance"] is None
    layers = result["layers"]
    assert layers[0][0] == "conv1" and layers[-1][0] == "final_layer"
    assert all(isinstance(name, str) and 0 <= rel < 1e-10 for name, rel in layers)
    assert len(layers) == len(_parameterised_leaves(_pair("efafnet")[0]))
