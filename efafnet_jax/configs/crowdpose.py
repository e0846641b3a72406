"""CrowdPose (14 joints): `crowdpose:VARIANT,rDEPTH,HxW`, default 256x192."""

from efafnet_jax.config import build_config


def get_config(spec=None):
    return build_config("crowdpose", num_joints=14, spec=spec, default_size=(256, 192))
