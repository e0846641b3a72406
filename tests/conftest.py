"""Shared test helpers: repository paths and config loading."""

from __future__ import annotations

import contextlib
import dataclasses
import os
import pathlib
import shutil
import tempfile

import pytest  # imports no jax: the environment below is still set before jax is imported

# Multi-device logic is tested on 8 fake CPU devices; set before jax is imported.
os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
# Most tests compare like with like (two runs, two layouts, a float64 reference) on tiny
# programs, where XLA's optimisation passes are most of the time: without them a tiny
# EFAFNet's train step compiles in 8.6 s instead of 12-38 s. Inherited by the commands the
# tests start. Tests whose criteria are about the optimised program (float32 and bfloat16
# tolerances, HLO checks) are marked `optimized` and compile with every pass.
os.environ.setdefault("JAX_DISABLE_MOST_OPTIMIZATIONS", "1")
# One XLA compilation cache per pytest process (each xdist worker has its own), read by
# that process and by the commands it starts one at a time: the same train step, init and
# heatmap programs recur across tests (measured: a test with three train_and_evaluate
# calls, 47 s -> 36 s). Only programs that took 1 s or more to compile are stored; the
# hundreds of tiny op programs cost more to store than to compile. Never shared between
# processes that run at once: tests/test_multiprocess.py starts its processes without it
# (processes reading one cache start at different speeds, and gloo gives up on a peer
# 30 s late).
# (xdist workers inherit the controller's environment: the owner's pid tells a cache
# made here from one a user set.)
_PROCESS_COMPILE_CACHE = None
_cache_owner = os.environ.get("EFAFNET_JAX_TEST_CACHE_OWNER")
if "JAX_COMPILATION_CACHE_DIR" not in os.environ or _cache_owner not in (None, str(os.getpid())):
    _PROCESS_COMPILE_CACHE = tempfile.mkdtemp(prefix="efafnet-jax-tests-xla-cache-")
    os.environ["JAX_COMPILATION_CACHE_DIR"] = _PROCESS_COMPILE_CACHE
    os.environ["EFAFNET_JAX_TEST_CACHE_OWNER"] = str(os.getpid())
    os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "1")

REPO = pathlib.Path(__file__).resolve().parents[1]
CONFIG_DIR = REPO / "efafnet_jax" / "configs"


def pytest_sessionfinish(session, exitstatus):
    if _PROCESS_COMPILE_CACHE:
        shutil.rmtree(_PROCESS_COMPILE_CACHE, ignore_errors=True)


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


@contextlib.contextmanager
def every_xla_pass():
    """Programs compiled inside compile with every XLA pass, as production compiles them
    (for module fixtures, which set up before the `optimized` marker's fixture runs)."""
    import jax

    before = jax.config.read("jax_disable_most_optimizations")
    jax.config.update("jax_disable_most_optimizations", False)
    try:
        yield
    finally:
        jax.config.update("jax_disable_most_optimizations", before)


@pytest.fixture(autouse=True)
def _xla_optimizations_for_marked_tests(request, monkeypatch):
    """Tests marked `optimized` (and the commands they start) compile with every XLA pass."""
    if request.node.get_closest_marker("optimized") is None:
        yield
        return
    monkeypatch.setenv("JAX_DISABLE_MOST_OPTIMIZATIONS", "0")
    with every_xla_pass():
        yield


@dataclasses.dataclass(frozen=True)
class TrainedTiny:
    """A tiny EFAFNet (tiny:efafnet,64x64, float32) trained a few steps on a
    generated dataset: what predict, eval, export and to_torch tests start from."""

    spec: str  # the --config argument that rebuilds `config`
    config: object  # ml_collections.ConfigDict with the data paths filled in
    workdir: pathlib.Path
    checkpoint: str  # the latest step folder
    data_root: pathlib.Path
    paths: dict  # generate()'s: train, val, detections annotation files

    def data_flags(self) -> list[str]:
        """The --config.data.* flags that point a command at this dataset (GT val boxes)."""
        images = self.data_root / "images"
        return [
            f"--config.data.train_ann={self.paths['train']}",
            f"--config.data.train_images={images / 'train'}",
            f"--config.data.val_ann={self.paths['val']}",
            f"--config.data.val_images={images / 'val'}",
            "--config.data.val_detections=",
        ]


@pytest.fixture(scope="session")
def trained_tiny(tmp_path_factory) -> TrainedTiny:
    """One trained tiny checkpoint per test session (per xdist worker), trained in-process:
    2 epochs of 19 persons at batch 8 (4 steps, saved at 2 and 4) on the session's 8
    devices; its workdir has the config.json that efafnet-train writes."""
    from efafnet_jax.data.synthetic import generate
    from efafnet_jax.train.loop import train_and_evaluate
    from efafnet_jax.weights import latest_checkpoint

    root = tmp_path_factory.mktemp("trained_tiny")
    paths = generate(str(root / "data"), train=8, val=5, seed=3)
    spec = "tiny:efafnet,64x64"
    config = load_test_config(spec)
    d, t = config.data, config.train
    d.train_ann, d.train_images = paths["train"], str(root / "data" / "images" / "train")
    d.val_ann, d.val_images = paths["val"], str(root / "data" / "images" / "val")
    d.val_detections = ""
    t.batch_size, t.epochs, t.workers, t.eval_every_epochs = 8, 2.0, 0, 0
    t.checkpoint_every_steps = 2  # steps 2 and 4: commands can pick one
    config.eval.batch_size, config.eval.workers = 8, 0
    workdir = root / "run"
    train_and_evaluate(config, str(workdir))
    # What efafnet-train writes, so that commands can take `--workdir` alone.
    (workdir / "config.json").write_text(config.to_json_best_effort(indent=1))
    return TrainedTiny(
        spec=spec,
        config=config,
        workdir=workdir,
        checkpoint=latest_checkpoint(str(workdir)),
        data_root=root / "data",
        paths=paths,
    )


GCS_TEST_BUCKET = "efafnet-test"


@pytest.fixture(scope="session")
def gcs_environment() -> dict[str, str]:
    """A GCS API on localhost (fake-gcs-server) with the bucket GCS_TEST_BUCKET; this
    process's environment points gs:// at it for the rest of the session, and commands
    started with the returned variables do too."""
    import gcs_emulator  # tests/ is on sys.path (rootdir-relative conftest)

    with gcs_emulator.running_emulator(GCS_TEST_BUCKET) as variables:
        with gcs_emulator.environment(variables):
            yield variables


@pytest.fixture
def gs_tmp_path(gcs_environment, request):
    """A fresh gs:// folder in the emulator's bucket, named after the test."""
    import uuid

    from etils import epath

    name = "".join(c if c.isalnum() else "-" for c in request.node.name)[:60]
    return epath.Path(f"gs://{GCS_TEST_BUCKET}/{name}-{uuid.uuid4().hex[:8]}")
