"""Export for serving (jax.export) and trained weights out to PyTorch: both round trips.

The weights are trained_tiny's: trained BatchNorm statistics (neither 0 nor 1), nothing
initialised here.
"""

import json
import os
import re
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
import pytest
from conftest import REPO, load_test_config, run_json_command

from efafnet_jax.data.keypoints import spec_from_config
from efafnet_jax.evaluation.heatmaps import heatmap_function
from efafnet_jax.inference.export import export_inference
from efafnet_jax.inference.serving import load_exported
from efafnet_jax.models import create_model
from efafnet_jax.weights import restore_variables


def _live_heatmaps(config):
    """The jitted (variables, crops) -> heatmaps of evaluation (flip test on)."""
    model = create_model(config.model)
    heatmaps = heatmap_function(model, spec_from_config(config.data), config.data.sigma, True, True)
    return jax.jit(heatmaps)


def _crops(seed: int, batch: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (batch, 64, 64, 3), dtype=np.uint8)


@pytest.mark.slow  # every XLA pass: about 5 s a compile (the fast tier exports below)
@pytest.mark.optimized  # a float32 tolerance: the served program is optimised as a server's
@pytest.mark.parametrize("activation", ["identity", "spatial_softmax"])
def test_exported_function_equals_the_live_one(tmp_path, trained_tiny, activation):
    config = trained_tiny.config.copy_and_resolve_references()
    config.model.heatmap_activation = activation
    variables = restore_variables(trained_tiny.checkpoint)
    path = tmp_path / "model.jaxexport"
    path.write_bytes(export_inference(config, variables, platforms=("cpu",)).serialize())
    served = load_exported(str(path))
    crops = _crops(0, 3)
    expected = np.asarray(_live_heatmaps(config)(variables, crops))
    # One file, any batch size (a crop's heatmaps do not depend on the others of its batch).
    for batch in (1, 3):
        np.testing.assert_allclose(served(crops[:batch]), expected[:batch], rtol=1e-6, atol=1e-6)


def _command(module: str, trained_tiny, out) -> dict:
    return run_json_command(
        module,
        "--config",
        trained_tiny.spec,
        "--checkpoint",
        trained_tiny.checkpoint,
        "--out",
        str(out),
    )


@pytest.mark.slow
@pytest.mark.optimized  # a float32 tolerance, as above
def test_export_command(tmp_path, trained_tiny):
    out = tmp_path / "model.jaxexport"
    summary = _command("efafnet_jax.inference.export", trained_tiny, out)
    assert summary["platforms"] == ["cpu", "cuda", "tpu"] and out.stat().st_size == summary["bytes"]
    crops = _crops(1, 2)
    live = _live_heatmaps(trained_tiny.config)
    variables = restore_variables(trained_tiny.checkpoint)
    np.testing.assert_allclose(
        load_exported(str(out))(crops), live(variables, crops), rtol=1e-5, atol=1e-6
    )


SBN = "tiny:sbn,64x64"  # a deconvolution head, no FSM


def _assert_native_transposed_convolutions(exported, config) -> None:
    """The module that GPU and TPU servers run holds the native transposed convolutions
    (dilated-input convolutions) and none of the CPU forms' GEMM + col2im matmuls."""
    assert "cuda" in exported.platforms
    text = exported.mlir_module()
    convolutions = re.findall(r"stablehlo\.convolution.*", text)
    transposed = [c for c in convolutions if "lhs_dilate = [2, 2]" in c]
    # 3 deconvolution layers, each run on the crop and on its mirror (flip test).
    assert len(transposed) >= 2 * config.model.deconv.num_layers
    assert "stablehlo.dot_general" not in text


def _sbn_variables(config) -> dict:
    """Variables of the right shapes (export needs no particular values)."""
    from efafnet_jax.models.summary import abstract_variables

    shapes = abstract_variables(create_model(config.model), tuple(config.data.crop_hw))
    return jax.tree_util.tree_map(lambda x: jnp.full(x.shape, 0.5, x.dtype), shapes)


def test_export_lowers_native_transposed_convolutions_even_when_cpu_forms_are_asked():
    config = load_test_config(SBN, conv_impl="cpu_gemm")
    exported = export_inference(config, _sbn_variables(config))
    _assert_native_transposed_convolutions(exported, config)


@pytest.mark.slow
def test_export_command_on_one_cpu_device_lowers_native_transposed_convolutions(tmp_path):
    """Exported on a one-device CPU, where the default conv_impl ("auto") means the CPU
    forms: the module holds the native transposed convolutions all the same."""
    config = load_test_config(SBN)
    checkpoint = tmp_path / "checkpoints" / "7"
    ocp.StandardCheckpointer().save(checkpoint / "state", {**_sbn_variables(config), "step": 7})
    ocp.StandardCheckpointer().wait_until_finished()
    out = tmp_path / "model.jaxexport"
    command = [
        *("-m", "efafnet_jax.inference.export", "--config", SBN),
        *("--checkpoint", str(checkpoint), "--out", str(out), "--json"),
    ]
    proc = subprocess.run(
        [sys.executable, *command],
        cwd=REPO,
        capture_output=True,
        text=True,
        env={**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=1"},
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "cuda" in json.loads(proc.stdout.splitlines()[-1])["platforms"]
    _assert_native_transposed_convolutions(
        jax.export.deserialize(bytearray(out.read_bytes())), config
    )


def _torch_state(trained_tiny) -> dict:
    """trained_tiny's variables as the PyTorch reference's state_dict (what to_torch writes)."""
    from efafnet_jax.interop.torch_reference import torch_model

    variables = restore_variables(trained_tiny.checkpoint)
    return torch_model(variables, trained_tiny.config.model).state_dict()


def test_a_checkpoint_goes_to_torch_and_back_exactly(trained_tiny):
    pytest.importorskip("torch", reason="the torch extra is not installed")
    from efafnet_jax.interop.convert import state_dict_to_flax
    from efafnet_jax.interop.torch_reference import TorchPoseNet

    state = _torch_state(trained_tiny)
    TorchPoseNet(trained_tiny.config.model).load_state_dict(state, strict=True)
    variables = restore_variables(trained_tiny.checkpoint)
    back, _ = state_dict_to_flax({k: v.numpy() for k, v in state.items()}, variables)
    for a, b in zip(
        jax.tree_util.tree_leaves(variables), jax.tree_util.tree_leaves(back), strict=True
    ):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


@pytest.mark.slow
def test_to_torch_command_writes_that_state_dict(tmp_path, trained_tiny):
    torch = pytest.importorskip("torch", reason="the torch extra is not installed")

    out = tmp_path / "model.pth"
    summary = _command("efafnet_jax.inference.to_torch", trained_tiny, out)
    written, expected = torch.load(out, weights_only=True), _torch_state(trained_tiny)
    assert summary["tensors"] == len(written)
    assert written.keys() == expected.keys()
    for key, value in expected.items():
        assert torch.equal(written[key], value), key
