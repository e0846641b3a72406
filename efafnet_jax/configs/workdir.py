"""A training run's own config: `--config workdir:W` loads W/config.json, the config the
run was started with (`efafnet-eval --workdir W` does this unless --config is given).

config.json holds the config before the machine-dependent "auto" settings were resolved
(`efafnet_jax.platform.for_this_machine`), so evaluating on another kind of machine
resolves them for that machine.
"""

import json
import logging
import re

import ml_collections
from etils import epath

CONFIG_JSON = "config.json"


def config_json_path(workdir: str) -> epath.Path:
    """<workdir>/config.json (the workdir may be a gs:// URL)."""
    return epath.Path(workdir) / CONFIG_JSON


def _tuples(value):
    # JSON has lists where the configs have tuples (crop sizes, stage blocks, decay epochs);
    # the configs hold no lists, so every list was a tuple.
    if isinstance(value, list):
        return tuple(_tuples(v) for v in value)
    if isinstance(value, dict):
        return {k: _tuples(v) for k, v in value.items()}
    return value


def config_from_json(text: str) -> ml_collections.ConfigDict:
    """The ConfigDict that `ConfigDict.to_json_best_effort` wrote as `text`."""
    return ml_collections.ConfigDict(_tuples(json.loads(text)))


# The names build_config gives ("coco_sbn_r50_256x192"; "tiny_" + that for tiny).
_BUILT_NAME = re.compile(r"(tiny_)?(coco|crowdpose|mpii)_([a-z_]+)_r(\d+)_(\d+x\d+)")


def packaged_defaults(saved: ml_collections.ConfigDict) -> ml_collections.ConfigDict | None:
    """The packaged config that a saved run's config came from, rebuilt by its `name`
    (today's defaults); None for a config of the user's own."""
    from efafnet_jax.config import load_config, packaged_config_names

    name = saved.get("name", "")
    if name in packaged_config_names():
        return load_config(name)
    built = _BUILT_NAME.fullmatch(name)
    if built is None:
        return None
    tiny, dataset, variant, depth, size = built.groups()
    return load_config(f"{'tiny' if tiny else dataset}:{variant},r{depth},{size}")


def with_keys_added_since(
    saved: ml_collections.ConfigDict, label: str
) -> ml_collections.ConfigDict:
    """`saved` plus the keys its packaged config has and it lacks (added to the code after
    the run was saved), at today's defaults, named in a warning: without them the run
    could not be evaluated at all."""
    defaults = packaged_defaults(saved)
    added = [] if defaults is None else _add_missing(saved, defaults, "")
    if added:
        logging.warning(
            "%s lacks %s (added after this run was saved): using today's defaults; "
            "--config.KEY=VALUE sets them",
            label,
            ", ".join(
                key if isinstance(value, ml_collections.ConfigDict) else f"{key}={value!r}"
                for key, value in added
            ),
        )
    return saved


def _add_missing(saved, defaults, prefix: str) -> list[tuple[str, object]]:
    added = []
    for key, value in defaults.items():
        if key not in saved:
            saved[key] = value
            added.append((prefix + key, value))
        elif isinstance(value, ml_collections.ConfigDict) and isinstance(
            saved[key], ml_collections.ConfigDict
        ):
            added += _add_missing(saved[key], value, f"{prefix}{key}.")
    return added


def get_config(workdir: str) -> ml_collections.ConfigDict:
    path = config_json_path(workdir)
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist (not a training workdir?)")
    return with_keys_added_since(config_from_json(path.read_text()), str(path))
