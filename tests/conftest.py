"""Shared test helpers: repository paths and config loading."""

from __future__ import annotations

import os
import pathlib

# Multi-device logic is tested on 8 fake CPU devices; set before jax is imported.
os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")

import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]
CONFIG_DIR = REPO / "configs"


@pytest.fixture(scope="session")
def repo_root() -> pathlib.Path:
    return REPO


def run_json_command(*args: str) -> dict:
    """Runs `python -m ARGS --json` in the repository; returns its last stdout line as JSON."""
    import json
    import subprocess
    import sys

    proc = subprocess.run(
        [sys.executable, "-m", *args, "--json"], cwd=REPO, capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


# Real COCO and MPII samples (mmpose's tests/data; provenance and licences beside them).
DATA_DIR = REPO / "tests" / "data"


def load_test_config(path_and_spec: str, conv_impl: str = "xla"):
    """`load_config` with the convolution form and compute dtype chosen here (float32), as
    an entry point would."""
    from efafnet_jax.config import load_config

    config = load_config(path_and_spec)
    config.model.conv_impl = conv_impl
    config.train.compute_dtype = "float32"
    return config


# float64 runs that differ only in reduction order (device or process count) agree to
# ~1e-15 of each tensor's largest value; a lost optimiser state or data position moves
# parameters by ~1e-4 of it. 1e-9 sits between the two with margin on both sides.
FLOAT64_SAME_RUN = 1e-9


def largest_relative_difference(a, b) -> float:
    """max over tensors of max|a - b| / max|a| (two variable trees of the same structure)."""
    import jax
    import numpy as np

    leaves_a, leaves_b = jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)
    assert len(leaves_a) == len(leaves_b)
    worst = 0.0
    for x, y in zip(leaves_a, leaves_b, strict=True):
        assert x.dtype == y.dtype == np.float64, (x.dtype, y.dtype)
        scale = max(float(np.max(np.abs(x))), 1e-12)  # no floor above 1e-12
        worst = max(worst, float(np.max(np.abs(x - y))) / scale)
    return worst
