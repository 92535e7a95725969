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

"""Point tracks: each 3D point stored once, with its observations and one descriptor.

The same surface seen from 30 neighbouring map images used to be stored 30 times, each copy
with its own 128-byte descriptor and point (567 MB per 1000 VGA images on 7-Scenes). A map
now stores a point once (COLMAP's model): its position, the images that see it (with the
pixel where each sees it) and one representative descriptor, the mean RootSIFT of its
observations quantized to uint8 (:func:`quantize_root`). The mean was chosen over the medoid
(the observation closest to the others) on the HoloLens walk's validation frames, refined
against the map without their blocks: 92 vs 88 % refined (docs/performance.md, "Compact
map"); test frames were only reported.

Depth maps lift every keypoint on its own, so their observations are first chained into
tracks here (:func:`merge_depth_tracks`): a mutual ratio-test match between covisible map
images whose two lifted points agree within ``merge_m`` (or ``merge_rel`` of the depth) is
the same point. Triangulated maps come out of :func:`~.build.triangulate` as tracks already.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from camreloc_ros.core.localization.sift import match_descriptors, root_sift

ROOT_SCALE = 512.0      # RootSIFT components are <= ~0.45: x512 fits uint8 with margin
REPRESENTATIVES = ('mean', 'medoid')


def quantize_root(root_n128: np.ndarray) -> np.ndarray:
    """Unit-norm RootSIFT float -> uint8 (x ``ROOT_SCALE``, rounded, clipped)."""
    return np.clip(np.rint(np.asarray(root_n128, np.float32) * ROOT_SCALE), 0, 255).astype(
        np.uint8)


def dequantize_root(q_n128: np.ndarray) -> np.ndarray:
    """uint8 quantized RootSIFT -> unit-norm float32 (what matching multiplies)."""
    d = np.asarray(q_n128, np.float32)
    return d / np.maximum(np.linalg.norm(d, axis=1, keepdims=True), 1e-6)


def representative_descriptors(obs_point: np.ndarray, obs_desc: np.ndarray, n_points: int,
                               how: str = 'mean', chunk: int = 1 << 18) -> np.ndarray:
    """One quantized RootSIFT ``(P, 128)`` uint8 per point from its observations' SIFT.

    ``mean``: the normalised mean RootSIFT (a point seen from several sides matches queries
    from each of them about equally). ``medoid``: the observation most similar to the sum of
    the others (a real descriptor, never a blend). ``obs_desc`` is uint8 SIFT, converted in
    chunks so the float copy never holds every observation at once.
    """
    if how not in REPRESENTATIVES:
        raise ValueError(f'unknown representative descriptor {how!r}; valid: '
                         f'{", ".join(REPRESENTATIVES)}')
    obs_point = np.asarray(obs_point, np.int64)
    total = np.zeros((n_points, 128), np.float64)
    for a in range(0, len(obs_point), chunk):
        np.add.at(total, obs_point[a:a + chunk], root_sift(obs_desc[a:a + chunk]))
    if how == 'mean':
        return quantize_root(total / np.maximum(
            np.linalg.norm(total, axis=1, keepdims=True), 1e-12))
    best = np.full(n_points, -np.inf)
    pick = np.zeros(n_points, np.int64)
    for a in range(0, len(obs_point), chunk):
        p = obs_point[a:a + chunk]
        sim = np.einsum('nd,nd->n', root_sift(obs_desc[a:a + chunk]), total[p])
        order = np.lexsort((-sim, p))          # per point, the most similar first
        first = np.r_[True, p[order][1:] != p[order][:-1]]
        cand, s = p[order][first], sim[order][first]
        better = s > best[cand]
        best[cand[better]] = s[better]
        pick[cand[better]] = a + order[first][better]
    return quantize_root(root_sift(obs_desc[pick]))


def merge_depth_tracks(keypoints: Sequence[np.ndarray], descriptors: Sequence[np.ndarray],
                       per_image: Sequence[tuple[np.ndarray, np.ndarray]], points: np.ndarray,
                       poses_c2w: np.ndarray, pairs: np.ndarray, conf: dict
                       ) -> tuple[list, np.ndarray, dict]:
    """Chain depth-lifted keypoints of covisible images into tracks; one point per track.

    ``per_image[i] = (kp_idx, point_idx)`` as lifted (one point per keypoint). Image pairs
    ``pairs`` (``(E, 2)``, from :func:`~.build.select_pairs`) are matched (RootSIFT, ratio
    test, mutual); a match whose two points lie within ``merge_m`` metres, or ``merge_rel``
    of the camera distance, joins their tracks. A track's point is the median of its
    members; tracks seen by fewer than ``min_track`` images are dropped (a point no other map
    image saw is rarely seen by a query either, and is most of a depth map's size).
    Returns the new ``per_image`` (point ids renumbered), points ``(P, 3)`` and statistics.
    """
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components
    n_obs = len(points)
    kp_to_point = []
    for (idx, pid), xy in zip(per_image, keypoints):
        m = -np.ones(len(xy), np.int64)
        m[idx] = pid
        kp_to_point.append(m)
    centres = poses_c2w[:, :3, 3]
    roots = {}
    edges = []
    for i, j in pairs:
        for k in (i, j):
            if k not in roots:
                idx = per_image[k][0]
                roots[k] = (idx, root_sift(descriptors[k][idx]))
        (ia_idx, ra), (ib_idx, rb) = roots[i], roots[j]
        a, b = match_descriptors(ra, rb, float(conf['ratio']), mutual=True)
        if len(a) == 0:
            continue
        pa, pb = kp_to_point[i][ia_idx[a]], kp_to_point[j][ib_idx[b]]
        dist = np.linalg.norm(points[pa] - points[pb], axis=1)
        rng = np.minimum(np.linalg.norm(points[pa] - centres[i], axis=1),
                         np.linalg.norm(points[pb] - centres[j], axis=1))
        ok = dist <= np.maximum(float(conf['merge_m']), float(conf['merge_rel']) * rng)
        edges.append(np.stack([pa[ok], pb[ok]], 1))
        if len(roots) > 64:          # bounded: pairs come in image order
            for k in sorted(roots)[:len(roots) - 64]:
                if k < min(i, j):
                    roots.pop(k)
    e = np.concatenate(edges) if edges else np.zeros((0, 2), np.int64)
    graph = coo_matrix((np.ones(len(e)), (e[:, 0], e[:, 1])), shape=(n_obs, n_obs))
    _, track = connected_components(graph, directed=False)
    owner = np.concatenate([np.full(len(pid), i) for i, (_, pid) in enumerate(per_image)]) \
        if n_obs else np.zeros(0, np.int64)
    # a track counts each image once
    views = np.bincount(np.unique(track * len(per_image) + owner) // len(per_image),
                        minlength=track.max() + 1 if n_obs else 0)
    keep = views >= int(conf['min_track'])
    new_id = -np.ones(len(keep), np.int64)
    new_id[keep] = np.arange(int(keep.sum()))
    tid = new_id[track]
    order = np.argsort(tid, kind='stable')
    order = order[tid[order] >= 0]
    merged = _median_rows(points[order], tid[order])
    out = []
    for (idx, pid) in per_image:
        t = tid[pid]
        sel = t >= 0
        # one observation per image and track: the first keypoint
        _, first = np.unique(t[sel], return_index=True)
        out.append((idx[sel][first], t[sel][first]))
    stats = {'merge_pairs': int(len(pairs)), 'merge_edges': int(len(e)),
             'lifted_keypoints': int(n_obs), 'tracks': int(keep.sum()),
             'dropped_single_view': int((~keep).sum()),
             'mean_track_length': float(views[keep].mean()) if keep.any() else 0.0}
    return out, merged, stats


def _median_rows(points_n3: np.ndarray, group_n: np.ndarray) -> np.ndarray:
    """Per-coordinate (lower) median of the rows of each group ``0..G-1`` (all non-empty)."""
    if len(points_n3) == 0:
        return np.zeros((0, 3))
    counts = np.bincount(group_n)
    starts = np.r_[0, np.cumsum(counts)[:-1]]
    out = np.empty((len(counts), 3))
    for c in range(3):
        order = np.lexsort((points_n3[:, c], group_n))
        out[:, c] = points_n3[order, c][starts + (counts - 1) // 2]
    return out


def observations(per_image: Sequence[tuple[np.ndarray, np.ndarray]],
                 keypoints: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-image ``(kp_idx, point_idx)`` -> ``obs_offsets`` (N+1,), ``obs_point``, ``obs_xy``."""
    offsets = np.r_[0, np.cumsum([len(idx) for idx, _ in per_image])].astype(np.int64)
    obs_point = np.concatenate([np.asarray(p, np.int64) for _, p in per_image]) \
        if per_image else np.zeros(0, np.int64)
    obs_xy = np.concatenate([np.asarray(xy, np.float32)[idx].reshape(-1, 2)
                             for (idx, _), xy in zip(per_image, keypoints)]) \
        if per_image else np.zeros((0, 2), np.float32)
    return offsets, obs_point.astype(np.int32), obs_xy.astype(np.float32)
