"""Shared pieces of the JAX-vs-PyTorch benchmarks: devices, peaks, weights, timing."""

from __future__ import annotations

import datetime
import os
import platform
import statistics
import subprocess
import time
from collections.abc import Callable

import jax
import ml_collections
import numpy as np

from efafnet_jax.models.summary import summarize

# Dense peak TFLOP/s by device name and dtype (vendor datasheets; SXM parts).
GPU_PEAK_TFLOPS = {
    "H100": {"bfloat16": 989.0, "float32": 67.0},
    "H200": {"bfloat16": 989.0, "float32": 67.0},
    "A100": {"bfloat16": 312.0, "float32": 19.5},
    "V100": {"bfloat16": 125.0, "float32": 15.7},
}


def device_name() -> str:
    """The first device's kind, e.g. 'NVIDIA H100 80GB HBM3' or the CPU model."""
    device = jax.devices()[0]
    if device.platform == "cpu":
        return f"{platform.processor() or _cpu_model()} x {os.cpu_count()} cores"
    return device.device_kind


def _cpu_model() -> str:
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.machine()


def peak_tflops(dtype: str, override: float | None) -> tuple[float, str]:
    """(peak TFLOP/s, where it comes from): the flag, a datasheet, or a CPU estimate."""
    if override:
        return override, "--peak-tflops"
    device = jax.devices()[0]
    if device.platform == "gpu":
        for name, peaks in GPU_PEAK_TFLOPS.items():
            if name in device.device_kind:
                return peaks[dtype], f"{name} datasheet (dense)"
        return float("nan"), "unknown GPU: pass --peak-tflops"
    # CPU: cores x GHz x FLOPs per cycle (2 FMA units x vector lanes x 2), an estimate.
    flags = open("/proc/cpuinfo").read() if os.path.exists("/proc/cpuinfo") else ""
    lanes = 16 if "avx512f" in flags else 8 if "avx2" in flags else 4
    ghz = _cpu_ghz()
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return (
        cores * ghz * 2 * lanes * 2 / 1e3,
        f"CPU estimate: {cores} cores x {ghz:.2f} GHz x {4 * lanes} FLOP/cycle",
    )


def _cpu_ghz() -> float:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
        for line in out.splitlines():
            if line.startswith("CPU max MHz"):
                return float(line.split(":")[1]) / 1e3
        for line in open("/proc/cpuinfo"):
            if line.startswith("cpu MHz"):
                return float(line.split(":")[1]) / 1e3
    except (OSError, ValueError):
        pass
    return 2.0


def forward_flops(config: ml_collections.ConfigDict) -> float:
    """True FLOPs of one sample's forward pass (2 x multiply-adds)."""
    return float(summarize(config)["flops"])


def alternate(runners: dict[str, Callable[[], None]], steps: int, rounds: int) -> dict[str, float]:
    """Median seconds per call of each runner, timed in alternating rounds of `steps` calls."""
    times = {name: [] for name in runners}
    for _ in range(rounds):
        for name, run_once in runners.items():
            start = time.perf_counter()
            for _ in range(steps):
                run_once()
            times[name].append((time.perf_counter() - start) / steps)
    return {name: statistics.median(values) for name, values in times.items()}


def torch_device(torch):
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def torch_synchronize(torch) -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def random_batch(config: ml_collections.ConfigDict, batch: int, seed: int = 0) -> dict:
    """uint8 crops, targets in [0, 1) and unit weights of the config's sizes."""
    rng = np.random.default_rng(seed)
    height, width = config.data.crop_hw
    map_h, map_w = config.data.heatmap_hw
    joints = config.model.num_joints
    return {
        "image": rng.integers(0, 256, (batch, height, width, 3), dtype=np.uint8),
        "target": rng.uniform(0, 1, (batch, map_h, map_w, joints)).astype(np.float32),
        "target_weight": np.ones((batch, joints), np.float32),
    }


def run_facts() -> dict:
    """Where and when: device, jax/torch versions, date."""
    facts = {
        "device": device_name(),
        "backend": jax.default_backend(),
        "jax": jax.__version__,
        "date": datetime.date.today().isoformat(),
    }
    try:
        import torch

        facts["torch"] = torch.__version__
    except ImportError:
        pass
    return facts


def define_benchmark_flags(default_batch: int, unit: str) -> None:
    """The flags every JAX-vs-PyTorch benchmark takes (besides --config and --json)."""
    from absl import flags

    flags.DEFINE_integer("batch", default_batch, f"{unit} per call (global).")
    flags.DEFINE_enum("dtype", "float32", ["float32", "bfloat16"], "Compute dtype of both sides.")
    flags.DEFINE_float(
        "peak_tflops", None, "Peak TFLOP/s for MFU (default: datasheet or CPU estimate)."
    )
    flags.DEFINE_bool("torch_compile", False, "torch.compile the reference (minutes on CPU).")
    flags.DEFINE_integer("steps", 3, "Calls per timed round.")
    flags.DEFINE_integer("rounds", 5, "Alternating rounds; medians are reported.")
    flags.DEFINE_integer("warmup", 2, "Untimed calls per side first (compilation included).")
