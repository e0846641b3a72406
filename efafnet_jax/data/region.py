"""Host half of on-device augmentation: the source region a crop samples, in a fixed buffer.

The host decodes the image and copies out only the pixels the augmented crop will
read (mirrored when flipped), into a zero-padded [buffer_h, buffer_w, 3] buffer, with
the crop -> buffer matrix. The warp, bilinear sampling and the targets then run in
the jitted step (`efafnet_jax.data.device_warp`, `codec.encode_on_device`). Regions
larger than the buffer are shrunk by an integer factor (cv2.INTER_AREA) and the matrix follows.
"""

from __future__ import annotations

import math

import cv2
import numpy as np

from efafnet_jax.data.keypoints import KeypointSpec
from efafnet_jax.data.records import PersonRecord
from efafnet_jax.data.sample import SampleConfig, crop_geometry
from efafnet_jax.data.transforms import AugmentDraws, sampled_region


def region_sample(
    record: PersonRecord,
    image_bgr: np.ndarray,
    spec: KeypointSpec,
    config: SampleConfig,
    draws: AugmentDraws | None,
    buffer_hw: tuple[int, int],
) -> dict[str, np.ndarray]:
    """{'source' [bh, bw, 3] uint8 RGB, 'to_source' [2, 3] crop -> buffer pixels,
    'joints' [K, 2] crop pixels, 'visibility' [K], 'center', 'scale'}.

    The geometry is `crop_geometry`'s, so the
    random draws mean what they mean on the host path.
    """
    g = crop_geometry(record, image_bgr.shape[1], spec, config, draws)
    region, x0, y0 = sampled_region(image_bgr, g.matrix, config.crop_hw, g.flip)
    buffer_h, buffer_w = buffer_hw
    source = np.zeros((buffer_h, buffer_w, 3), np.uint8)
    to_source = cv2.invertAffineTransform(g.matrix).astype(np.float64)  # crop -> image
    to_source[:, 2] -= (x0, y0)
    if region is not None:
        h, w = region.shape[:2]
        factor = max(1, math.ceil(max(h / buffer_h, w / buffer_w)))
        if factor > 1:
            # Pad to a multiple of the factor so INTER_AREA averages exact f x f blocks
            # (the padding lies outside the footprint: never sampled, or off the image).
            size = (math.ceil(w / factor), math.ceil(h / factor))
            region = cv2.copyMakeBorder(
                region, 0, size[1] * factor - h, 0, size[0] * factor - w, cv2.BORDER_CONSTANT
            )
            region = cv2.resize(region, size, interpolation=cv2.INTER_AREA)
            # Shrunk pixel i covers [i f, (i + 1) f): its centre is at i f + (f - 1) / 2.
            to_source[:, 2] -= (factor - 1) / 2
            to_source /= factor
        h, w = region.shape[:2]
        source[:h, :w] = cv2.cvtColor(region, cv2.COLOR_BGR2RGB)
    return {
        "source": source,
        "to_source": to_source.astype(np.float32),
        "joints": g.joints.astype(np.float32),
        "visibility": g.visibility.astype(np.float32),
        "center": np.asarray(g.center, np.float32),
        "scale": np.asarray(g.scale, np.float32),
    }
