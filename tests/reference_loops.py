"""Loop-by-loop renderings of SimpleBaseline/HRNet procedures, written independently of
the package, as the ground truth for its vectorised code.

Sources (leoxiaobin/deep-high-resolution-net.pytorch; SimpleBaseline's
microsoft/human-pose-estimation.pytorch has the same functions):
- `generate_target_loop`: lib/dataset/JointsDataset.py `generate_target` (gaussian branch).
- `half_body_loop`: lib/dataset/JointsDataset.py `half_body_transform`.
- `final_preds_loop`: lib/core/inference.py `get_max_preds` and `get_final_preds`.
- `dark_loop`: DARK's lib/core/inference.py (ilovepose/DarkPose) `gaussian_blur` and
  `taylor`, map by map, on 1-based-free heatmap coordinates.
"""

import cv2
import numpy as np


def generate_target_loop(joints, joints_vis, image_size, heatmap_size, sigma):
    """Per-joint loop: window pasted clipped; weight 0 when wholly off the map."""
    num_joints = len(joints)
    target_weight = np.array(joints_vis, np.float32).reshape(num_joints).copy()
    target = np.zeros((num_joints, heatmap_size[1], heatmap_size[0]), np.float32)
    tmp_size = sigma * 3
    stride = np.array(image_size) / np.array(heatmap_size)
    for k in range(num_joints):
        mu_x = int(joints[k][0] / stride[0] + 0.5)
        mu_y = int(joints[k][1] / stride[1] + 0.5)
        ul = [int(mu_x - tmp_size), int(mu_y - tmp_size)]
        br = [int(mu_x + tmp_size + 1), int(mu_y + tmp_size + 1)]
        if ul[0] >= heatmap_size[0] or ul[1] >= heatmap_size[1] or br[0] < 0 or br[1] < 0:
            target_weight[k] = 0
            continue
        size = 2 * tmp_size + 1
        x = np.arange(0, size, 1, np.float32)
        y = x[:, np.newaxis]
        x0 = y0 = size // 2
        g = np.exp(-((x - x0) ** 2 + (y - y0) ** 2) / (2 * sigma**2))
        gx = max(0, -ul[0]), min(br[0], heatmap_size[0]) - ul[0]
        gy = max(0, -ul[1]), min(br[1], heatmap_size[1]) - ul[1]
        ix = max(0, ul[0]), min(br[0], heatmap_size[0])
        iy = max(0, ul[1]), min(br[1], heatmap_size[1])
        if target_weight[k] > 0.5:
            target[k][iy[0] : iy[1], ix[0] : ix[1]] = g[gy[0] : gy[1], gx[0] : gx[1]]
    return target, target_weight


def half_body_loop(joints, joints_vis, upper_ids, choice_n, aspect_ratio):
    upper, lower = [], []
    for k in range(len(joints)):
        if joints_vis[k] > 0:
            (upper if k in upper_ids else lower).append(joints[k])
    if choice_n < 0.5 and len(upper) > 2:
        selected = upper
    else:
        selected = lower if len(lower) > 2 else upper
    if len(selected) < 2:
        return None
    selected = np.array(selected, np.float32)
    center = selected.mean(axis=0)[:2]
    w, h = selected.max(axis=0)[:2] - selected.min(axis=0)[:2]
    if w > aspect_ratio * h:
        h = w / aspect_ratio
    elif w < aspect_ratio * h:
        w = h * aspect_ratio
    return center, np.array([w / 200.0, h / 200.0], np.float32) * 1.5


def final_preds_loop(heatmaps_nkhw, centers, scales, affine_inverse):
    """Per-person, per-joint argmax + quarter offset + inverse affine ([N, K, h, w] maps)."""
    import math

    n, k, h, w = heatmaps_nkhw.shape
    preds = np.zeros((n, k, 2))
    maxvals = np.zeros((n, k))
    for i in range(n):
        trans = affine_inverse(centers[i], scales[i], (w, h))
        for j in range(k):
            hm = heatmaps_nkhw[i, j]
            idx = int(np.argmax(hm))
            maxvals[i, j] = hm.reshape(-1)[idx]
            x, y = float(idx % w), float(idx // w)
            if maxvals[i, j] <= 0:
                x, y = 0.0, 0.0
            px, py = int(math.floor(x + 0.5)), int(math.floor(y + 0.5))
            if 1 < px < w - 1 and 1 < py < h - 1:
                x += np.sign(hm[py][px + 1] - hm[py][px - 1]) * 0.25
                y += np.sign(hm[py + 1][px] - hm[py - 1][px]) * 0.25
            preds[i, j] = trans @ np.array([x, y, 1.0])
    return preds, maxvals


def dark_loop(heatmaps_nkhw, coords, kernel):
    """DarkPose: pad `border` zeros, cv2.GaussianBlur (default border), crop, rescale to
    the original maximum; log of max(., 1e-10); then per joint one Newton step, where
    1 < px < w - 2 and 1 < py < h - 2 and the Hessian is invertible."""
    border = (kernel - 1) // 2
    n, k, h, w = heatmaps_nkhw.shape
    blurred = heatmaps_nkhw.astype(np.float32).copy()
    for i in range(n):
        for j in range(k):
            origin_max = np.max(blurred[i, j])
            padded = np.zeros((h + 2 * border, w + 2 * border), np.float32)
            padded[border:-border, border:-border] = blurred[i, j].copy()
            padded = cv2.GaussianBlur(padded, (kernel, kernel), 0)
            blurred[i, j] = padded[border:-border, border:-border].copy()
            with np.errstate(invalid="ignore"):  # a flat map: 0 / 0, as the reference
                blurred[i, j] *= origin_max / np.max(blurred[i, j])
    log_maps = np.log(np.maximum(blurred, 1e-10))
    out = np.array(coords, np.float64).copy()
    for i in range(n):
        for j in range(k):
            hm = log_maps[i, j]
            px, py = int(out[i, j, 0]), int(out[i, j, 1])
            if 1 < px < w - 2 and 1 < py < h - 2:
                dx = 0.5 * (hm[py][px + 1] - hm[py][px - 1])
                dy = 0.5 * (hm[py + 1][px] - hm[py - 1][px])
                dxx = 0.25 * (hm[py][px + 2] - 2 * hm[py][px] + hm[py][px - 2])
                dxy = 0.25 * (
                    hm[py + 1][px + 1]
                    - hm[py - 1][px + 1]
                    - hm[py + 1][px - 1]
                    + hm[py - 1][px - 1]
                )
                dyy = 0.25 * (hm[py + 2][px] - 2 * hm[py][px] + hm[py - 2][px])
                derivative = np.array([dx, dy])
                hessian = np.array([[dxx, dxy], [dxy, dyy]])
                if dxx * dyy - dxy**2 != 0:  # DarkPose: offset = -hessian.I * derivative
                    out[i, j] += -np.linalg.inv(hessian) @ derivative
    return out
