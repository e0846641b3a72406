"""MPII (16 joints): `mpii:VARIANT,rDEPTH,HxW`, default 256x256."""

from efafnet_jax.config import build_config


def get_config(spec=None):
    return build_config("mpii", num_joints=16, spec=spec, default_size=(256, 256))
