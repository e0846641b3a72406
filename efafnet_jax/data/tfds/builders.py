"""TFDS builders for COCO keypoints 2017, CrowdPose and MPII, built without TensorFlow.

One example per image: the encoded image as released (the JPEG bytes unchanged), and
every annotation of the image with the fields the readers and the metrics use, each
with its position in the released file, so that a reader of the split can rebuild
the file's content in the file's order (`efafnet_jax.data.tfds.source`). Reference
filtering (crowd annotations, empty boxes, persons without joints) stays at read
time, where the file readers apply it; bad input is handled at build time by the
same reader functions and `on_bad_record` policy, and counted in the dataset's
metadata. Beside each split's shards, the builder writes the split's examples without
their images (`annotations.py`): what a reader loads at start-up instead of the shards.

The shared base lives in `base.py`, the COCO-format builders in `coco_builders.py` and
the MPII builder in `mpii_builder.py`; importing this module registers all three.
"""

from efafnet_jax.data.tfds.base import DEFAULT_SHARD_BYTES
from efafnet_jax.data.tfds.coco_builders import CocoKeypoints, Crowdpose
from efafnet_jax.data.tfds.mpii_builder import Mpii

BUILDERS = {cls.name: cls for cls in (CocoKeypoints, Crowdpose, Mpii)}

__all__ = ["BUILDERS", "DEFAULT_SHARD_BYTES"]
