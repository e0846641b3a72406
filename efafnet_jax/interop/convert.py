"""Exact weight conversion between PyTorch state_dicts and flax variables.

Flax path -> torch key: the wrapper modules `backbone` and `deconv` vanish,
`name_N` becomes `name.N`, and leaves are renamed (kernel -> weight, BatchNorm
scale -> weight, mean/var -> running_mean/running_var). Kernels are transposed
between layouts: conv HWIO <-> OIHW, transposed conv (kh, kw, out, in) <->
(in, out, kh, kw), dense (in, out) <-> (out, in). No arithmetic, so both
directions are exact.
"""

from __future__ import annotations

import dataclasses
import io
import re
from collections.abc import Mapping

import flax
import numpy as np
from flax import traverse_util

_WRAPPERS = ("backbone", "deconv")
_INDEXED = re.compile(r"^(layer\d+|downsample|convs|bns|deconv_layers)_(\d+)$")
_LEAF_NAMES = {
    ("params", "kernel"): "weight",
    ("params", "scale"): "weight",
    ("params", "bias"): "bias",
    ("batch_stats", "mean"): "running_mean",
    ("batch_stats", "var"): "running_var",
}
# Torch entries with no flax counterpart: the BatchNorm step counter and a
# classifier's fc layer (torchvision / Res2Net ImageNet checkpoints).
_IGNORED = re.compile(r"(^|\.)num_batches_tracked$|^fc\.(weight|bias)$")


def torch_key(path: tuple[str, ...]) -> str:
    """('params', 'backbone', 'layer1_0', 'conv1', 'kernel') -> 'layer1.0.conv1.weight'."""
    collection, *modules, leaf = path
    parts = [_INDEXED.sub(r"\1.\2", m) for m in modules if m not in _WRAPPERS]
    return ".".join(parts + [_LEAF_NAMES[(collection, leaf)]])


def _layout(path: tuple[str, ...], ndim: int) -> str:
    if path[-1] != "kernel":
        return "same"
    if ndim == 2:
        return "dense"
    return "deconv" if path[-2].startswith("deconv_layers") else "conv"


_TO_TORCH = {"conv": (3, 2, 0, 1), "deconv": (3, 2, 0, 1), "dense": (1, 0)}
_TO_FLAX = {"conv": (2, 3, 1, 0), "deconv": (2, 3, 1, 0), "dense": (1, 0)}


def to_torch_layout(path: tuple[str, ...], value: np.ndarray) -> np.ndarray:
    """A flax leaf in the torch layout of the same tensor."""
    layout = _layout(path, value.ndim)
    return value if layout == "same" else np.transpose(value, _TO_TORCH[layout])


def to_flax_layout(path: tuple[str, ...], value: np.ndarray) -> np.ndarray:
    """A torch tensor (as NumPy) in the layout of the flax leaf at `path`."""
    layout = _layout(path, value.ndim)
    return value if layout == "same" else np.transpose(value, _TO_FLAX[layout])


def flax_to_state_dict(variables: Mapping) -> dict[str, np.ndarray]:
    """Flax {'params', 'batch_stats'} -> {torch key: array in torch layout}.

    Every BatchNorm also gets `num_batches_tracked` = 0: flax keeps no step
    counter, and PyTorch reads it only when momentum is None.
    """
    state = {}
    for path, value in traverse_util.flatten_dict(_plain(variables)).items():
        if path[0] not in ("params", "batch_stats"):
            continue
        state[torch_key(path)] = to_torch_layout(path, np.asarray(value))
        if path[0] == "batch_stats" and path[-1] == "mean":
            prefix = torch_key(path).rsplit(".", 1)[0]
            state[f"{prefix}.num_batches_tracked"] = np.zeros((), np.int64)
    return state


@dataclasses.dataclass
class LoadReport:
    """What a state_dict load did, per flax variable and per unused torch key."""

    loaded: list[tuple[str, str, tuple[int, ...]]] = dataclasses.field(default_factory=list)
    initialised: list[tuple[str, str, str]] = dataclasses.field(default_factory=list)
    unused: list[tuple[str, tuple[int, ...]]] = dataclasses.field(default_factory=list)

    def table(self) -> str:
        """A plain-text table: one row per flax variable, then unused torch keys."""
        rows = [("status", "flax variable", "torch key", "note")]
        rows += [("loaded", f, t, str(s)) for f, t, s in self.loaded]
        rows += [("initialised", f, t, why) for f, t, why in self.initialised]
        rows += [("unused", "-", t, str(s)) for t, s in self.unused]
        widths = [max(len(r[i]) for r in rows) for i in range(3)]
        lines = ["  ".join(r[i].ljust(widths[i]) for i in range(3)) + "  " + r[3] for r in rows]
        lines.append(
            f"{len(self.loaded)} loaded, {len(self.initialised)} left initialised, "
            f"{len(self.unused)} torch entries unused"
        )
        return "\n".join(lines)


class ConversionError(ValueError):
    """A state_dict that does not fit the flax model (and the load was not partial)."""


def state_dict_to_flax(
    state_dict: Mapping[str, object],
    template: Mapping,
    *,
    partial: bool = False,
    backbone_only: bool = False,
) -> tuple[dict, LoadReport]:
    """Loads a torch state_dict into a copy of the flax `template` variables.

    `backbone_only`: only backbone variables are expected (an ImageNet ResNet or
    Res2Net); the head keeps the template's values. `partial`: variables whose key
    is missing or whose shape differs keep the template's values and are listed in
    the report; otherwise the first such variable, or an unexpected torch key,
    raises ConversionError naming the key and both shapes.
    """
    arrays = {k: _to_numpy(v) for k, v in state_dict.items()}
    flat = traverse_util.flatten_dict(_plain(template))
    report, used, out = LoadReport(), set(), {}
    for path, init_value in flat.items():
        key = torch_key(path)
        expected = tuple(to_torch_layout(path, np.zeros(init_value.shape, np.int8)).shape)
        name = "/".join(path)
        if backbone_only and path[1] != "backbone":
            out[path] = init_value
            report.initialised.append((name, key, "not in the backbone"))
            continue
        if key not in arrays:
            if not partial:
                raise ConversionError(
                    f"state_dict has no key {key!r} for flax variable {name} "
                    f"(torch shape {expected}, flax shape {tuple(init_value.shape)})"
                )
            out[path] = init_value
            report.initialised.append((name, key, "missing in the state_dict"))
            continue
        value = arrays[key]
        used.add(key)
        if tuple(value.shape) != expected:
            if not partial:
                raise ConversionError(
                    f"state_dict key {key!r} has torch shape {tuple(value.shape)} but flax "
                    f"variable {name} needs torch shape {expected} "
                    f"(flax shape {tuple(init_value.shape)})"
                )
            out[path] = init_value
            report.initialised.append((name, key, f"shape {tuple(value.shape)} != {expected}"))
            continue
        out[path] = to_flax_layout(path, value).astype(init_value.dtype)
        report.loaded.append((name, key, tuple(value.shape)))
    for key, value in arrays.items():
        if key in used or _IGNORED.search(key):
            continue
        if not partial and not backbone_only:
            raise ConversionError(
                f"state_dict key {key!r} (shape {tuple(value.shape)}) has no flax "
                "counterpart in this config's model"
            )
        report.unused.append((key, tuple(value.shape)))
    return traverse_util.unflatten_dict(out), report


def load_torch_checkpoint(path: str) -> dict[str, np.ndarray]:
    """Reads a .pth state_dict (weights_only) from a path or URL (etils.epath), unwrapping
    'state_dict' and 'module.'."""
    import torch
    from etils import epath

    try:
        # torch.load reads local files only; a file-like object comes from anywhere.
        with epath.Path(path).open("rb") as f:
            obj = torch.load(io.BytesIO(f.read()), map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises many types; name the file in any case
        raise ConversionError(f"cannot read torch checkpoint {path}: {err}") from err
    for wrapper in ("state_dict", "model"):
        if isinstance(obj, dict) and isinstance(obj.get(wrapper), dict):
            obj = obj[wrapper]
    if not isinstance(obj, dict):
        raise ConversionError(f"{path} holds a {type(obj).__name__}, not a state_dict")
    return {k.removeprefix("module."): _to_numpy(v) for k, v in obj.items()}


def _to_numpy(value) -> np.ndarray:
    if hasattr(value, "detach"):
        return value.detach().cpu().numpy()
    return np.asarray(value)


def _plain(variables: Mapping) -> dict:
    return flax.core.unfreeze(variables)
