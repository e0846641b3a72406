"""Run an exported model (efafnet_jax.inference.export) with jax alone: no model code needed."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from etils import epath
from jax import export


def load_exported(path: str) -> Callable[[np.ndarray], np.ndarray]:
    """uint8 crops [B, H, W, 3] (RGB) -> heatmaps [B, h, w, K], from a serialised export
    at `path` (a local path or a URL)."""
    exported = export.deserialize(bytearray(epath.Path(path).read_bytes()))

    def heatmaps(crops: np.ndarray) -> np.ndarray:
        return np.asarray(exported.call(np.asarray(crops, np.uint8)))

    return heatmaps
