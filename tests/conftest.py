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
    """`load_config` with the convolution form chosen here, as an entry point would."""
    from efafnet_jax.config import load_config

    config = load_config(path_and_spec)
    config.model.conv_impl = conv_impl
    return config
