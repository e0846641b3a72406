"""COCO keypoints (17 joints): `coco:VARIANT,rDEPTH,HxW`.

VARIANT is a Table VI row (sbn, sbn_fam, sbn_fsm, sbn_fasm, sbn_ffm, sbn_duc,
efafnet); DEPTH is 50, 101 or 152; HxW is 256x192 or 384x288 in the paper.
Default: efafnet,r50,256x192.
"""

from efafnet_jax.config import build_config


def get_config(spec=None):
    return build_config("coco", num_joints=17, spec=spec, default_size=(256, 192))
