# Copyright 2026 camreloc_ros authors
#
# Licensed under the Apache License, Version 2.0 (the "License");
# you may not use this file except in compliance with the License.
# You may obtain a copy of the License at
#
#     http://www.apache.org/licenses/LICENSE-2.0
#
# Unless required by applicable law or agreed to in writing, software
# distributed under the License is distributed on an "AS IS" BASIS,
# WITHOUT WARRANTIES OR CONDITIONS OF ANY KIND, either express or implied.
# See the License for the specific language governing permissions and
# limitations under the License.

"""SIFT keypoints and ratio-test matching (weight-free, OpenCV).

OpenCV's SIFT was chosen over pycolmap's after measuring both on the HoloLens walk
(540x360): with a lower contrast threshold (0.005) and RootSIFT matching, OpenCV finds as
many keypoints and verified matches as pycolmap's default SIFT at ~70 ms per image instead
of 190-380 ms on this CPU, and OpenCV is already a dependency.
"""

from __future__ import annotations

import cv2
import numpy as np

SIFT_DEFAULTS = {
    'max_keypoints': 4096,        # strongest kept (0 = all)
    'contrast_threshold': 0.005,  # OpenCV default 0.04 finds too few points indoors
    'edge_threshold': 10.0,
    'max_side': 1024,             # larger images are downscaled first (keypoints rescaled)
}


def _gray(image: np.ndarray) -> np.ndarray:
    if image.ndim == 2:
        return image
    if image.ndim == 3 and image.shape[2] == 3:
        return cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
    raise ValueError(f'expected an RGB (H, W, 3) or mono (H, W) uint8 image, got shape '
                     f'{image.shape}')


def extract_sift(image: np.ndarray, conf: dict | None = None) -> tuple[np.ndarray, np.ndarray]:
    """RGB or mono uint8 image -> keypoints ``(N, 2)`` float32 (x, y pixels), ``(N, 128)`` uint8.

    Keypoints are in the pixel frame of ``image`` (OpenCV convention: pixel centres at
    integers) whatever internal downscaling happened.
    """
    conf = {**SIFT_DEFAULTS, **(conf or {})}
    gray = _gray(np.asarray(image))
    if gray.dtype != np.uint8:
        raise ValueError(f'expected a uint8 image, got {gray.dtype}')
    scale = 1.0
    side = max(gray.shape)
    if conf['max_side'] and side > int(conf['max_side']):
        scale = int(conf['max_side']) / side
        gray = cv2.resize(gray, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
    sift = cv2.SIFT_create(int(conf['max_keypoints']), 3, float(conf['contrast_threshold']),
                           float(conf['edge_threshold']), 1.6, cv2.CV_8U)
    kps, desc = sift.detectAndCompute(gray, None)
    if not kps or desc is None:
        return np.zeros((0, 2), np.float32), np.zeros((0, 128), np.uint8)
    xy = np.array([k.pt for k in kps], np.float32) / scale
    return xy, np.ascontiguousarray(desc, dtype=np.uint8)


def root_sift(desc: np.ndarray) -> np.ndarray:
    """uint8 SIFT -> RootSIFT float32 (L1-normalise, square root: unit L2 norm)."""
    d = np.asarray(desc, np.float32)
    d = d / np.maximum(d.sum(axis=1, keepdims=True), 1e-6)
    return np.sqrt(d)


def match_descriptors(desc_a: np.ndarray, desc_b: np.ndarray, ratio: float = 0.8,
                      mutual: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Nearest neighbour of each ``a`` in ``b`` passing Lowe's ratio test -> (idx_a, idx_b).

    Descriptors are uint8 SIFT (RootSIFT is taken here) or already-normalised float32
    RootSIFT. Distances come from one matrix product, which on a CPU beats a FLANN index
    at a few thousand descriptors. ``mutual`` also requires ``a`` to be ``b``'s nearest.
    """
    if len(desc_a) == 0 or len(desc_b) == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    a = root_sift(desc_a) if desc_a.dtype == np.uint8 else desc_a
    b = root_sift(desc_b) if desc_b.dtype == np.uint8 else desc_b
    sim = a @ b.T
    rows = np.arange(len(a))
    best = np.argmax(sim, axis=1)
    s_best = sim[rows, best]
    if mutual:
        back = np.argmax(sim, axis=0)
    if sim.shape[1] == 1:
        ok = np.ones(len(a), bool)
    else:
        sim[rows, best] = -np.inf   # second best: one more pass (argpartition is ~10x slower)
        s_second = np.max(sim, axis=1)
        d_best = np.sqrt(np.maximum(2.0 - 2.0 * s_best, 0.0))
        d_second = np.sqrt(np.maximum(2.0 - 2.0 * s_second, 0.0))
        ok = d_best < ratio * d_second
    if mutual:
        ok &= back[best] == rows
    idx = np.flatnonzero(ok)
    return idx, best[idx]
