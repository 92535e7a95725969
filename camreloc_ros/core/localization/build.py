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

"""Build a :class:`LocalizationMap` from posed training images.

3D points come from depth where the dataset has it (7-Scenes ``frame-*.depth.png``: every
keypoint with a consistent depth is lifted with the depth camera's intrinsics), else they
are triangulated from SIFT matches between training images with their known poses, as hloc
does with COLMAP's triangulator: image pairs chosen by pose proximity, matches verified
against the epipolar geometry of the known poses, matches chained into tracks, each track
triangulated (DLT over at most ``max_track_length`` evenly spaced views, in memory linear
in the observations) and kept only when every view reprojects within a few pixels and the
views see it under a useful angle. With depth in automatic mode, frames whose depth image is
missing stay in the map for retrieval without 3D points (and are reported);
:func:`unusable_reason` says why a built map could not refine, so ``camreloc map`` refuses
to write it.

About 480 lines: depth lifting, pair selection, track chaining and triangulation share the
per-image keypoint arrays and the map statistics; split, each part would pass them around.
"""

from __future__ import annotations

from collections import deque
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
import itertools
import logging
import os
import sys
import time
from pathlib import Path
from typing import Callable, Sequence

import cv2
import numpy as np

from camreloc_ros.core.config import check_conf, merge_conf, Spec
from camreloc_ros.core.geometry import skew
from camreloc_ros.core.progress import Progress
from camreloc_ros.core.localization.sift import (extract_sift, match_descriptors, root_sift,
                                                 SIFT_DEFAULTS)
from camreloc_ros.core.localization.map_file import LocalizationMap
from camreloc_ros.core.localization.tracks import (merge_depth_tracks,
                                                   observations as observation_arrays,
                                                   representative_descriptors)

logger = logging.getLogger('camreloc_ros')

default_conf = {
    'points': 'auto',            # auto (depth where frames have it) | depth | triangulate
    'min_points_per_image': 20,  # camreloc map refuses a map below this (median over images)
    'workers': 0,                # feature threads (0: one per core, at most 4)
    'sift': dict(SIFT_DEFAULTS),
    'gem_p': 3.0,
    'depth': {
        # 7-Scenes' Kinect depth camera (not registered to colour; the usual approximation)
        'fx': 585.0, 'fy': 585.0, 'cx': 320.0, 'cy': 240.0, 'width': 640, 'height': 480,
        'scale': 0.001,          # png units -> metres
        'min_m': 0.1, 'max_m': 10.0,
        'max_spread': 0.05,      # 3x3 neighbourhood must agree within 5 % (no depth edges)
    },
    'tracks': {
        'descriptor': 'mean',    # a point's one descriptor: mean | medoid RootSIFT
        # depth maps: covisible keypoints whose lifted points agree are one point
        'merge': True,
        'ratio': 0.8,
        'merge_m': 0.02,         # points within 2 cm ...
        'merge_rel': 0.01,       # ... or 1 % of their distance to the camera
        'min_track': 1,          # map images a depth point must be seen in (2 drops
                                 # single-view points: smaller maps of dense recordings)
    },
    'triangulation': {
        'pairs_per_image': 12,   # nearest training poses matched with each image
        'max_distance_m': 4.0,
        'max_view_angle_deg': 60.0,
        'ratio': 0.8,
        'epipolar_px': 3.0,      # Sampson distance to the known-pose epipolar line
        'max_reproj_px': 4.0,
        'min_angle_deg': 1.5,    # largest angle between a point's viewing rays
        'min_track': 2,
        'max_track_length': 64,  # views per track the DLT uses (evenly spaced); all checked
    },
}

# Types of the build keys whose bad value would not fail by itself (checked at build).
schema = {
    'min_points_per_image': Spec('float', lo=0.0),
    'workers': Spec('int', lo=0),
    'triangulation': {'max_track_length': Spec('int', lo=2, optional=True)},
}


def depth_path(image_path: Path) -> Path:
    """7-Scenes depth file of a colour frame: ``frame-N.color.png`` -> ``frame-N.depth.png``."""
    name = Path(image_path).name
    if '.color.' not in name:
        return Path(image_path).with_name(name + '.no-depth')
    return Path(image_path).with_name(name[:name.index('.color.')] + '.depth.png')


def lift_depth(xy: np.ndarray, depth: np.ndarray, image_size: tuple[int, int], pose_c2w,
               conf: dict) -> tuple[np.ndarray, np.ndarray]:
    """Keypoints ``(n, 2)`` of the colour image -> (valid mask ``(n,)``, world points ``(n, 3)``).

    The colour pixel is taken as the same pixel of the depth image (scaled to its size) and
    back-projected with the depth intrinsics: the usual registration approximation for
    7-Scenes.
    """
    h, w = depth.shape[:2]
    sx, sy = w / image_size[0], h / image_size[1]
    u = np.clip(np.round(xy[:, 0] * sx).astype(int), 0, w - 1)
    v = np.clip(np.round(xy[:, 1] * sy).astype(int), 0, h - 1)
    d = depth.astype(np.float64)
    d[(depth == 0) | (depth == 65535)] = np.nan
    d *= float(conf['scale'])
    pad = np.pad(d, 1, constant_values=np.nan)
    nb = np.stack([pad[v + 1 + dy, u + 1 + dx] for dy in (-1, 0, 1) for dx in (-1, 0, 1)])
    z = d[v, u]
    with np.errstate(invalid='ignore', divide='ignore'):
        spread = np.max(np.abs(nb - z), axis=0) / z     # NaN (a hole nearby) fails below
    ok = (np.isfinite(z) & (z >= conf['min_m']) & (z <= conf['max_m'])
          & np.all(np.isfinite(nb), axis=0) & (spread <= conf['max_spread']))
    kx, ky = w / conf['width'], h / conf['height']
    fx, fy, cx, cy = conf['fx'] * kx, conf['fy'] * ky, conf['cx'] * kx, conf['cy'] * ky
    xc = np.stack([(u - cx) / fx * z, (v - cy) / fy * z, z], axis=1)
    T = np.asarray(pose_c2w, np.float64)
    xw = xc @ T[:3, :3].T + T[:3, 3]
    return ok, xw


# ------------------------------------------------------------------------ triangulation

def select_pairs(poses_c2w: np.ndarray, conf: dict) -> np.ndarray:
    """Image pairs ``(E, 2)`` (i < j) of nearby poses looking the same way."""
    pos = poses_c2w[:, :3, 3]
    view = poses_c2w[:, :3, 2]
    dist = np.linalg.norm(pos[:, None] - pos[None], axis=2)
    cosang = np.clip(view @ view.T, -1.0, 1.0)
    ang = np.degrees(np.arccos(cosang))
    cost = dist + ang / 30.0
    ok = (dist <= conf['max_distance_m']) & (ang <= conf['max_view_angle_deg'])
    np.fill_diagonal(ok, False)
    cost[~ok] = np.inf
    pairs = set()
    k = int(conf['pairs_per_image'])
    for i in range(len(pos)):
        for j in np.argsort(cost[i], kind='stable')[:k]:
            if np.isfinite(cost[i, j]):
                pairs.add((min(i, int(j)), max(i, int(j))))
    return np.array(sorted(pairs), np.int64).reshape(-1, 2)


def _w2c(poses_c2w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    R = np.transpose(poses_c2w[:, :3, :3], (0, 2, 1))
    t = -np.einsum('nij,nj->ni', R, poses_c2w[:, :3, 3])
    return R, t


def sampson_px(xy_a: np.ndarray, xy_b: np.ndarray, F: np.ndarray) -> np.ndarray:
    """Sampson distance (pixels) of correspondences to the fundamental matrix ``F``."""
    a = np.c_[xy_a, np.ones(len(xy_a))]
    b = np.c_[xy_b, np.ones(len(xy_b))]
    Fa = a @ F.T
    Ftb = b @ F
    num = np.sum(b * Fa, axis=1) ** 2
    den = Fa[:, 0] ** 2 + Fa[:, 1] ** 2 + Ftb[:, 0] ** 2 + Ftb[:, 1] ** 2
    return np.sqrt(num / np.maximum(den, 1e-12))


def _find(parent: np.ndarray, x: int) -> int:
    while parent[x] != x:
        parent[x] = parent[parent[x]]
        x = parent[x]
    return x


def dlt_subset(track: np.ndarray, n_tracks: int, max_views: int | None) -> np.ndarray:
    """Mask of the observations a track's DLT uses: all, or ``max_views`` evenly spaced ones.

    A camera turning in place sees a point in hundreds of images; more views than this add
    time but no accuracy to the linear estimate (the reprojection check still uses every
    view). Evenly spaced in the given order (image order in :func:`triangulate`), so the
    subset keeps the track's first and last view: for a sequence its widest baseline.
    """
    if max_views is None:
        return np.ones(len(track), bool)
    order = np.argsort(track, kind='stable')
    counts = np.bincount(track, minlength=n_tracks)
    starts = np.r_[0, np.cumsum(counts)[:-1]]
    slot = np.empty(len(track), np.int64)
    slot[order] = np.arange(len(track)) - starts[track[order]]
    n = counts[track]
    m = int(max_views)
    # view j of m is slot round(j * step) (step = (n - 1) / (m - 1) > 1, so at most one j
    # lands on a slot: j = round(slot / step)); the first and the last view are both kept
    step = (n - 1) / max(m - 1, 1)
    with np.errstate(divide='ignore', invalid='ignore'):     # step 0: one view, n <= m
        j = np.round(slot / step)
    return (n <= m) | (np.round(j * step) == slot)


def _dlt(track: np.ndarray, img: np.ndarray, xn: np.ndarray, R: np.ndarray, t: np.ndarray,
         n_tracks: int, max_views: int | None = None) -> np.ndarray:
    """Multi-view DLT of every track at once, in memory linear in the observations.

    The null vector of a track's stacked rows ``A`` (each row normalised) is the eigenvector
    of the smallest eigenvalue of the 4x4 ``A^T A``, accumulated per track: the same point as
    the SVD of ``A`` (to rounding), without the ``(tracks, 2 views, 2 views)`` U a padded SVD
    builds (872 GiB for 139549 tracks of up to 458 views). ``max_views`` caps the views per
    track (:func:`dlt_subset`).
    """
    sel = dlt_subset(track, n_tracks, max_views)
    tr, im, x = track[sel], img[sel], xn[sel]
    P = np.concatenate([R[im], t[im][:, :, None]], axis=2)          # (E, 3, 4)
    rows = np.concatenate([x[:, 0:1] * P[:, 2] - P[:, 0], x[:, 1:2] * P[:, 2] - P[:, 1]])
    rows /= np.maximum(np.linalg.norm(rows, axis=1, keepdims=True), 1e-12)
    owner = np.r_[tr, tr]
    outer = (rows[:, :, None] * rows[:, None, :]).reshape(-1, 16)
    M = np.stack([np.bincount(owner, weights=outer[:, k], minlength=n_tracks)
                  for k in range(16)], axis=1).reshape(n_tracks, 4, 4)
    _, vecs = np.linalg.eigh(M)
    X = vecs[:, :, 0]
    with np.errstate(divide='ignore', invalid='ignore'):
        return X[:, :3] / X[:, 3:4]


def triangulate(keypoints: Sequence[np.ndarray], descriptors: Sequence[np.ndarray],
                poses_c2w: np.ndarray, K: np.ndarray, conf: dict,
                log: Callable[[str], None] | None = None
                ) -> tuple[list, np.ndarray, np.ndarray, dict]:
    """Triangulate tracks of matched keypoints.

    Returns per-image ``(kp_idx, point_idx)``, points ``(P, 3)``, their mean reprojection
    errors ``(P,)`` and statistics.
    """
    log = log or logger.info
    n = len(keypoints)
    R, t = _w2c(poses_c2w)
    offsets = np.r_[0, np.cumsum([len(k) for k in keypoints])].astype(np.int64)
    roots = [root_sift(d) for d in descriptors]
    pairs = select_pairs(poses_c2w, conf)
    Kinv = np.linalg.inv(K)
    edges = []
    verified = 0
    for i, j in pairs:
        ia, ib = match_descriptors(roots[i], roots[j], conf['ratio'])
        if len(ia) == 0:
            continue
        Rji = R[j] @ R[i].T
        tji = t[j] - Rji @ t[i]
        F = Kinv[j].T @ skew(tji) @ Rji @ Kinv[i]
        ok = sampson_px(keypoints[i][ia], keypoints[j][ib], F) <= conf['epipolar_px']
        verified += int(ok.sum())
        edges.append(np.stack([offsets[i] + ia[ok], offsets[j] + ib[ok]], axis=1))
    edges = np.concatenate(edges) if edges else np.zeros((0, 2), np.int64)
    parent = np.arange(int(offsets[-1]))
    for a, b in edges:
        ra, rb = _find(parent, int(a)), _find(parent, int(b))
        if ra != rb:
            parent[max(ra, rb)] = min(ra, rb)
    nodes = np.unique(edges)
    root = np.array([_find(parent, int(x)) for x in nodes], np.int64)
    _, track = np.unique(root, return_inverse=True)
    img = np.searchsorted(offsets, nodes, side='right') - 1
    kp = nodes - offsets[img]
    # one observation per image and track (the first keypoint)
    _, first = np.unique(track * (n + 1) + img, return_index=True)
    track, img, kp = track[first], img[first], kp[first]
    stats = {'pairs': int(len(pairs)), 'verified_matches': verified,
             'tracks': int(track.max() + 1) if len(track) else 0}
    xy = np.concatenate([keypoints[i][k][None] for i, k in zip(img, kp)]) if len(kp) \
        else np.zeros((0, 2))
    xh = np.c_[xy, np.ones(len(xy))]
    xn = np.einsum('nij,nj->ni', Kinv[img], xh)[:, :2]
    keep = np.ones(len(track), bool)
    for it in range(3):   # triangulate, drop views that reproject badly, triangulate again
        uniq, tr = np.unique(track[keep], return_inverse=True)
        X = _dlt(tr, img[keep], xn[keep], R, t, len(uniq), conf['max_track_length']) \
            if len(uniq) else np.zeros((0, 3))
        err, depth = _reproject(X[tr], img[keep], xy[keep], R, t, K)
        good_obs = np.isfinite(err) & (err <= conf['max_reproj_px']) & (depth > 0.05)
        if good_obs.all() or it == 2:   # tracks still bad after that are dropped
            break
        keep[np.flatnonzero(keep)[~good_obs]] = False
    counts = np.bincount(tr, minlength=len(uniq))
    all_good = np.bincount(tr, weights=(~good_obs).astype(float), minlength=len(uniq)) == 0
    # viewing angle: largest angle of a ray to the track's mean ray, times two
    centres = poses_c2w[:, :3, 3]
    rays = X[tr] - centres[img[keep]]
    rays /= np.maximum(np.linalg.norm(rays, axis=1, keepdims=True), 1e-12)
    mean = np.zeros((len(uniq), 3))
    np.add.at(mean, tr, rays)
    mean /= np.maximum(np.linalg.norm(mean, axis=1, keepdims=True), 1e-12)
    ang = np.degrees(np.arccos(np.clip(np.sum(rays * mean[tr], axis=1), -1, 1)))
    max_ang = np.zeros(len(uniq))
    np.maximum.at(max_ang, tr, ang)
    good = (all_good & (counts >= conf['min_track']) & (2 * max_ang >= conf['min_angle_deg'])
            & np.all(np.isfinite(X), axis=1))
    new_id = -np.ones(len(uniq), np.int64)
    new_id[good] = np.arange(int(good.sum()))
    mean_err = np.bincount(tr, weights=np.nan_to_num(err), minlength=len(uniq)) \
        / np.maximum(counts, 1)
    obs = good[tr]
    per_image = []
    im_k, kp_k, pt_k = img[keep][obs], kp[keep][obs], new_id[tr[obs]]
    for i in range(n):
        sel = im_k == i
        order = np.argsort(kp_k[sel])
        per_image.append((kp_k[sel][order], pt_k[sel][order]))
    stats.update(points=int(good.sum()),
                 mean_track_length=float(counts[good].mean()) if good.any() else 0.0)
    return per_image, X[good], mean_err[good].astype(np.float32), stats


def _reproject(X: np.ndarray, img: np.ndarray, xy: np.ndarray, R: np.ndarray, t: np.ndarray,
               K: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Reprojection error (px) and depth of each observation."""
    xc = np.einsum('nij,nj->ni', R[img], X) + t[img]
    z = xc[:, 2]
    with np.errstate(divide='ignore', invalid='ignore'):
        uv = np.einsum('nij,nj->ni', K[img], xc / z[:, None])[:, :2]
    return np.linalg.norm(uv - xy, axis=1), z


# ------------------------------------------------------------------------------- build

def build_map(frames: Sequence, intrinsics, descriptor, conf: dict | None = None,
              meta: dict | None = None, log: Callable[[str], None] | None = None,
              read_image: Callable | None = None,
              observations: Callable | None = None) -> LocalizationMap:
    """Features, 3D points and global descriptors of ``frames`` -> a :class:`LocalizationMap`.

    ``intrinsics`` is the dataset's :class:`~camreloc_ros.core.data.datasets.Intrinsics`
    (for the images as stored); ``descriptor`` a
    :class:`~camreloc_ros.core.localization.retrieval.GlobalDescriptor`.
    ``observations(frames, keypoints)`` -> ``(per_image, points, point_error, stats)``, where
    given, makes the points instead of depth or triangulation: the tracks of a structure-
    from-motion model (:func:`camreloc_ros.core.sfm.map_points.reconstruction_observations`).
    """
    log = log or logger.info
    from camreloc_ros.core.data.transforms import read_rgb
    conf = merge_conf(default_conf, conf)
    read_image = read_image or read_rgb
    if not frames:
        raise ValueError('no training frames to build a map from')
    if intrinsics is None:
        raise ValueError('the dataset has no camera intrinsics (K.txt next to the data, or a '
                         'format that defines them); a map needs them to place 3D points')
    mode = conf['points']
    if mode not in ('auto', 'depth', 'triangulate'):
        raise ValueError(f'points must be auto, depth or triangulate, got {mode!r}')
    check_conf(conf, schema)
    present = [depth_path(f.image_path).is_file() for f in frames]
    missing = [depth_path(f.image_path) for f, ok in zip(frames, present) if not ok]
    if mode == 'depth' and missing:
        raise ValueError(f'points=depth but depth image {missing[0]} does not exist'
                         + (f' ({len(missing)} of {len(frames)} missing)'
                            if len(missing) > 1 else ''))
    # auto: depth as soon as any frame has it (a lost depth png must not turn a depth map
    # into a sparse triangulated one); the frames without depth get no 3D points
    use_depth = observations is None and (any(present) if mode == 'auto' else mode == 'depth')
    t0 = time.perf_counter()
    kps, descs, gdesc, Ks, sizes = [], [], [], [], []
    workers = int(conf['workers']) or max(1, min(4, os.cpu_count() or 1))
    with Progress(len(frames), 'map features', log=log) as bar, _single_threaded(workers > 1):
        for image, xy, d in _features(frames, read_image, conf['sift'], workers):
            h, w = image.shape[:2]
            k = intrinsics.scaled(w, h) if (w, h) != (intrinsics.width, intrinsics.height) \
                else intrinsics
            kps.append(xy)
            descs.append(d)
            gdesc.append(descriptor(image))
            Ks.append(k.matrix())
            sizes.append((w, h))
            bar.update()
    t_feat = time.perf_counter() - t0
    poses = np.stack([f.pose_c2w for f in frames]).astype(np.float64)
    K = np.stack(Ks)
    stats: dict = {'images': len(frames), 'keypoints_extracted': int(sum(map(len, kps)))}
    warnings: list[str] = []
    if observations is not None:
        per_image, points, point_error, ostats = observations(frames, kps)
        stats.update(ostats)
    elif use_depth:
        per_image, points, point_error = _depth_points(frames, kps, sizes, present, conf,
                                                       stats, warnings)
        if conf['tracks']['merge']:
            per_image, points, mstats = merge_depth_tracks(
                kps, descs, per_image, points, poses,
                select_pairs(poses, conf['triangulation']), conf['tracks'])
            point_error = np.zeros(len(points), np.float32)
            stats.update(mstats, points=int(len(points)))
    else:
        per_image, points, point_error, tstats = triangulate(kps, descs, poses, K,
                                                             conf['triangulation'], log)
        stats.update(tstats)
    t_points = time.perf_counter() - t0 - t_feat
    obs_offsets, obs_point, obs_xy = observation_arrays(per_image, kps)
    obs_desc = np.concatenate([d[idx] for (idx, _), d in zip(per_image, descs)]) \
        if len(obs_point) else np.zeros((0, 128), np.uint8)
    point_desc = representative_descriptors(obs_point, obs_desc, len(points),
                                            conf['tracks']['descriptor'])
    del obs_desc
    per_img = np.diff(obs_offsets)
    stats.update(observations=int(obs_offsets[-1]), seconds_features=round(t_feat, 2),
                 seconds_points=round(t_points, 2),
                 points_per_image={'median': float(np.median(per_img)),
                                   'min': int(per_img.min()), 'max': int(per_img.max())})
    if warnings:
        stats['warnings'] = warnings
    points_from = ('reconstruction' if observations is not None
                   else 'depth' if use_depth else 'triangulation')
    info = dict(meta or {}, points_from=points_from,
                conf=conf, stats=stats, descriptor=descriptor.conf())
    return LocalizationMap(
        names=[f.name for f in frames], poses_c2w=poses, K=K,
        image_size=np.array(sizes, np.int64).reshape(-1, 2),
        global_desc=np.stack(gdesc).astype(np.float32),
        points=np.asarray(points, np.float64).reshape(-1, 3), point_desc=point_desc,
        point_error=np.asarray(point_error, np.float32), obs_offsets=obs_offsets,
        obs_point=obs_point, obs_xy=obs_xy, meta=info,
        descriptor_onnx=_descriptor_onnx(descriptor))


@contextmanager
def _single_threaded(on: bool):
    """Run OpenCV and torch on one thread each while feature threads run beside them.

    The parallelism is over images; torch's and OpenCV's own thread pools on top of it
    oversubscribe the cores, and torch's spinning OpenMP threads then cost 3-4x the CPU
    (HoloLens walk on 2 busy cores: 800 vs 217 ms of CPU per image).
    """
    if not on:
        yield
        return
    torch = sys.modules.get('torch')
    cv_threads = cv2.getNumThreads()
    torch_threads = torch.get_num_threads() if torch is not None else None
    cv2.setNumThreads(1)
    if torch is not None:
        torch.set_num_threads(1)
    try:
        yield
    finally:
        cv2.setNumThreads(cv_threads)
        if torch is not None:
            torch.set_num_threads(torch_threads)


def _features(frames: Sequence, read_image: Callable, sift_conf: dict, workers: int):
    """Yield ``(image, keypoints, descriptors)`` of each frame, in order.

    The frames are read and described by ``workers`` threads while the caller runs the
    global descriptor.

    Threads, not processes: OpenCV's SIFT and image decoding release the GIL, and nothing
    is pickled. At most ``2 * workers`` images are in flight, so memory stays bounded
    whatever the number of frames.
    """
    def one(f):
        image = read_image(f.image_path)
        return (image, *extract_sift(image, sift_conf))

    n = int(workers)
    if n <= 1:
        for f in frames:
            yield one(f)
        return
    with ThreadPoolExecutor(n, thread_name_prefix='map-features') as pool:
        pending = deque()
        it = iter(frames)
        for f in itertools.islice(it, 2 * n):
            pending.append(pool.submit(one, f))
        while pending:
            result = pending.popleft().result()
            nxt = next(it, None)
            if nxt is not None:
                pending.append(pool.submit(one, nxt))
            yield result


def _depth_points(frames: Sequence, kps: list, sizes: list, present: list, conf: dict,
                  stats: dict, warnings: list) -> tuple[list, np.ndarray, np.ndarray]:
    """3D points lifted from each frame's depth image; frames without one get none.

    What was not usable is counted in ``stats`` and said in ``warnings`` (and logged): frames
    without a depth image, and depth images whose aspect ratio is not the colour image's
    (the pixel-to-pixel registration then puts points beside their keypoints).
    """
    per_image, pts = [], []
    count = 0
    odd = []
    for f, xy, size, ok_file in zip(frames, kps, sizes, present):
        if not ok_file:
            per_image.append((np.zeros(0, np.int64), np.zeros(0, np.int64)))
            continue
        path = depth_path(f.image_path)
        depth = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
        if depth is None or depth.ndim != 2:
            raise ValueError(f'depth image {path} is not a readable single-channel png')
        h, w = depth.shape[:2]
        if abs(w / h - size[0] / size[1]) > 0.01 * size[0] / size[1]:
            odd.append(path)
            if len(odd) == 1:
                _warn(warnings, f'depth image {path} is {w}x{h} but its colour image is '
                      f'{size[0]}x{size[1]} (another aspect ratio): its points are placed by '
                      'scaling the pixel grid and may be off')
        ok, xw = lift_depth(xy, depth, size, f.pose_c2w, conf['depth'])
        idx = np.flatnonzero(ok)
        per_image.append((idx, count + np.arange(len(idx))))
        pts.append(xw[idx])
        count += len(idx)
    if len(odd) > 1:
        _warn(warnings, f'{len(odd)} depth images have another aspect ratio than their colour '
              'image')
    skipped = len(frames) - int(sum(present))
    if skipped:
        first = next(depth_path(f.image_path) for f, p in zip(frames, present) if not p)
        _warn(warnings, f'{skipped} of {len(frames)} training frames have no depth image (the '
              f'first: {first}); they are in the map for retrieval but without 3D points')
    points = np.concatenate(pts) if pts else np.zeros((0, 3))
    stats.update(points=int(len(points)), images_without_depth=skipped,
                 depth_aspect_mismatch=len(odd))
    return per_image, points, np.zeros(len(points), np.float32)


def _warn(warnings: list, text: str) -> None:
    warnings.append(text)
    logger.warning(text)


def unusable_reason(lmap: LocalizationMap, min_points_per_image: float) -> str | None:
    """Why a freshly built map cannot refine poses (None when it can).

    The refiner needs tens of 2D-3D matches in the retrieved images; a map whose images hold
    fewer 3D keypoints than ``min_points_per_image`` (median over images) falls back on every
    frame, so writing it would only hide the problem until the robot runs.
    """
    stats = lmap.meta.get('stats', {})
    per_img = np.diff(lmap.obs_offsets)
    median = float(np.median(per_img)) if len(per_img) else 0.0
    if median >= min_points_per_image:
        return None
    if lmap.meta.get('points_from') == 'depth':
        skipped = int(stats.get('images_without_depth', 0))
        why = (f'only {stats.get("points", 0)} keypoints of the {len(lmap) - skipped} depth '
               'images have a valid depth (0 and 65535 are holes; valid is '
               'build.depth.min_m..max_m, away from depth edges)'
               + (f', and {skipped} images have no depth image' if skipped else ''))
    elif lmap.meta.get('points_from') == 'reconstruction':
        why = (f'the model\'s tracks left {stats.get("points", 0)} points in the map frames '
               f'({stats.get("observations_without_keypoint", 0)} of '
               f'{stats.get("observations_in_map_frames", 0)} observations had no SIFT '
               'keypoint within keypoint_max_px)')
    else:
        why = (f'triangulation kept {stats.get("points", 0)} points from '
               f'{stats.get("verified_matches", 0)} verified matches between '
               f'{stats.get("pairs", 0)} image pairs (too little overlap or parallax?)')
    return (f'the map would hold a median of {median:g} 3D points per image '
            f'(< build.min_points_per_image = {min_points_per_image:g}, total '
            f'{len(lmap.points)}): it cannot refine any pose; {why}')


def _descriptor_onnx(descriptor) -> bytes | None:
    """Export the descriptor's network to ONNX (stored in the map), when it is a torch one."""
    if getattr(descriptor, 'backbone', None) is None:
        return None
    from camreloc_ros.core.localization.descriptor_onnx import export_descriptor
    return export_descriptor(descriptor)
