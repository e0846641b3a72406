"""A training run's own config: `--config workdir:W` loads W/config.json, the config the
run was started with (`efafnet-eval --workdir W` does this unless --config is given).

config.json holds the config before the machine-dependent "auto" settings were resolved
(`efafnet_jax.platform.for_this_machine`), so evaluating on another kind of machine
resolves them for that machine.
"""

import json

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


def get_config(workdir: str) -> ml_collections.ConfigDict:
    path = config_json_path(workdir)
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist (not a training workdir?)")
    return config_from_json(path.read_text())
