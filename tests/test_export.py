"""Export for serving (jax.export) and trained weights out to PyTorch: both round trips."""

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
from conftest import CONFIG_DIR, REPO, load_test_config, run_json_command

from efafnet_jax.data.keypoints import spec_from_config
from efafnet_jax.evaluation.heatmaps import heatmap_function
from efafnet_jax.inference.export import export_inference
from efafnet_jax.inference.serving import load_exported
from efafnet_jax.models import create_model

SPEC = "efafnet,64x64"


def _variables(config, seed=0):
    """Random parameters and non-trivial BatchNorm statistics."""
    model = create_model(config.model)
    variables = model.init(jax.random.key(seed), jnp.zeros((1, 64, 64, 3), jnp.uint8))
    leaves, tree = jax.tree_util.tree_flatten(variables["batch_stats"])
    keys = jax.random.split(jax.random.key(seed + 1), len(leaves))
    stats = [
        jax.random.uniform(k, x.shape, x.dtype, 0.5, 1.5) for k, x in zip(keys, leaves, strict=True)
    ]
    return model, {**variables, "batch_stats": jax.tree_util.tree_unflatten(tree, stats)}


@pytest.mark.parametrize("activation", ["identity", "spatial_softmax"])
def test_exported_function_equals_the_live_one(tmp_path, activation):
    config = load_test_config(f"{CONFIG_DIR / 'tiny.py'}:{SPEC}")
    config.model.heatmap_activation = activation
    model, variables = _variables(config)
    path = tmp_path / "model.jaxexport"
    path.write_bytes(export_inference(config, variables, platforms=("cpu",)).serialize())
    served = load_exported(str(path))
    live = jax.jit(
        heatmap_function(model, spec_from_config(config.data), config.data.sigma, True, True)
    )
    rng = np.random.default_rng(0)
    for batch in (1, 3):  # one file, any batch size
        crops = rng.integers(0, 256, (batch, 64, 64, 3), dtype=np.uint8)
        np.testing.assert_allclose(served(crops), live(variables, crops), rtol=1e-6, atol=1e-6)


def _checkpoint(tmp_path, config):
    _, variables = _variables(config, seed=3)
    path = tmp_path / "checkpoints" / "7"
    ocp.StandardCheckpointer().save(path / "state", {**variables, "step": 7})
    ocp.StandardCheckpointer().wait_until_finished()
    return path, variables


def _command(module: str, checkpoint, out, spec: str = SPEC) -> dict:
    return run_json_command(
        module,
        "--config",
        f"configs/tiny.py:{spec}",
        "--checkpoint",
        str(checkpoint),
        "--out",
        str(out),
    )


def test_export_command(tmp_path):
    config = load_test_config(f"{CONFIG_DIR / 'tiny.py'}:{SPEC}")
    checkpoint, variables = _checkpoint(tmp_path, config)
    out = tmp_path / "model.jaxexport"
    summary = _command("efafnet_jax.inference.export", checkpoint, out)
    assert summary["platforms"] == ["cpu", "cuda", "tpu"] and out.stat().st_size == summary["bytes"]
    crops = np.random.default_rng(1).integers(0, 256, (2, 64, 64, 3), dtype=np.uint8)
    model = create_model(config.model)
    live = heatmap_function(model, spec_from_config(config.data), config.data.sigma, True, True)
    np.testing.assert_allclose(
        load_exported(str(out))(crops), live(variables, crops), rtol=1e-5, atol=1e-6
    )


def test_export_on_one_cpu_device_lowers_native_transposed_convolutions(tmp_path):
    """Exported on a one-device CPU, where "auto" means the CPU forms, and even with them
    asked for: the module that GPU and TPU servers run holds the native transposed
    convolutions (dilated-input convolutions) and none of the GEMM + col2im matmuls."""
    config = load_test_config(f"{CONFIG_DIR / 'tiny.py'}:sbn,64x64")  # deconv head, no FSM
    checkpoint, _ = _checkpoint(tmp_path, config)
    for conv_impl in ("auto", "cpu_gemm"):
        out = tmp_path / f"{conv_impl}.jaxexport"
        command = [
            *("-m", "efafnet_jax.inference.export", "--config", "configs/tiny.py:sbn,64x64"),
            *("--checkpoint", str(checkpoint), "--out", str(out), "--json"),
            f"--config.model.conv_impl={conv_impl}",
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
        exported = jax.export.deserialize(bytearray(out.read_bytes()))
        assert "cuda" in exported.platforms
        text = exported.mlir_module()
        convolutions = re.findall(r"stablehlo\.convolution.*", text)
        transposed = [c for c in convolutions if "lhs_dilate = [2, 2]" in c]
        # 3 deconvolution layers, each run on the crop and on its mirror (flip test).
        assert len(transposed) >= 2 * config.model.deconv.num_layers
        assert "stablehlo.dot_general" not in text


def test_to_torch_round_trip_is_exact(tmp_path):
    torch = pytest.importorskip("torch", reason="the torch extra is not installed")
    from efafnet_jax.interop.convert import state_dict_to_flax
    from efafnet_jax.interop.torch_reference import TorchPoseNet

    config = load_test_config(f"{CONFIG_DIR / 'tiny.py'}:{SPEC}")
    checkpoint, variables = _checkpoint(tmp_path, config)
    out = tmp_path / "model.pth"
    summary = _command("efafnet_jax.inference.to_torch", checkpoint, out)
    state = torch.load(out, weights_only=True)
    assert summary["tensors"] == len(state)
    TorchPoseNet(config.model).load_state_dict(state, strict=True)
    back, _ = state_dict_to_flax({k: v.numpy() for k, v in state.items()}, variables)
    for a, b in zip(
        jax.tree_util.tree_leaves(variables), jax.tree_util.tree_leaves(back), strict=True
    ):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
