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

"""Grow a map session by session: register a new recording into its frame, add its points.

``camreloc map --extend MAP`` needs no poses and no network: each new image is localized by
the refiner against the map as it stands (retrieval with the map's own descriptor network,
2D-3D matching, PnP), and kept only when the pose is well supported (``min_inliers`` PnP
inliers spread over ``min_coverage`` of the image), so a doubtful registration never enters
the map. Registration runs in rounds: the images left out of a round are tried again against
the map grown by it (its registered images, their new points), so a stretch of the new
recording that leaves the mapped part registers image by image from its mapped end, each
under the same gates, for at most ``rounds`` rounds or until a round registers nothing. What
stays out is listed with its reason in the session's record (``meta.sessions``).

A registered image then joins the map:

* its keypoints that match a point of the map (the PnP inliers, plus points of the nearest
  map images that project within ``match_px`` of a keypoint with the same descriptor) become
  observations of that point: existing points are extended, not duplicated;
* its other keypoints are triangulated with the other registered images
  (:func:`~camreloc_ros.core.localization.build.triangulate`, the build's own machinery,
  with the registered poses): new points with their tracks. The map stores no keypoints
  without a point, so new points come from the new images alone.

Existing points keep their descriptors; new ones get one the way the build makes them
(``meta.conf.tracks.descriptor``). The map keeps its format (version 2), its scene frame and
its covariance calibration (measured on the images it was built from).
"""

from __future__ import annotations

from dataclasses import dataclass
import datetime
import logging
import time
from typing import Callable, Sequence

import numpy as np

from camreloc_ros.core.config import merge_conf
from camreloc_ros.core.localization.build import default_conf as build_defaults, triangulate
from camreloc_ros.core.localization.map_file import LocalizationMap
from camreloc_ros.core.localization.refiner import Refiner
from camreloc_ros.core.localization.sift import extract_sift, match_descriptors, root_sift
from camreloc_ros.core.localization.tracks import observations, representative_descriptors
from camreloc_ros.core.progress import Progress

logger = logging.getLogger('camreloc_ros')

EXTEND_DEFAULTS = {
    'top_k_retrieval': 5,     # map images ranked highest by the map's descriptor: candidates
    'min_inliers': 40,        # PnP inliers a registration needs (the refiner's gate is 20:
                              # a live pose can fall back later, a map image stays)
    'min_coverage': 0.2,      # share of the 8 x 6 image cells holding an inlier
    'neighbours': 8,          # map images posed nearest a registered image: their points are
                              # matched to it (guided by the pose) to extend existing points
    'match_px': 4.0,          # such a match must reproject within this (pixels)
    'ratio': 0.8,             # Lowe's ratio test of those matches
    'triangulation': dict(build_defaults['triangulation']),   # new points, as the build does
    'rounds': 10,             # images left out are tried again against the map grown by the
                              # round before (images next to registered ones then register)
}


@dataclass
class SessionImage:
    """One image of a new recording: its name, how to read it, its camera (None: the map's)."""

    name: str
    load: Callable[[], np.ndarray]        # RGB uint8
    K: np.ndarray | None = None           # 3x3 for the image as stored


def _guided_matches(lmap: LocalizationMap, xy: np.ndarray, q_root: np.ndarray,
                    pose_c2w: np.ndarray, K: np.ndarray, size: tuple[int, int],
                    images: Sequence[int], conf: dict) -> np.ndarray:
    """Pairs ``(n, 2)`` (keypoint, point id) of points of ``images`` seen by the new image.

    A point matches a keypoint when the descriptors pass the ratio test (over the points
    in view) and the point projects within ``match_px`` of it at the registered pose.
    """
    cand = lmap.image_points(images)
    if len(cand) == 0 or len(xy) == 0:
        return np.zeros((0, 2), np.int64)
    R, C = pose_c2w[:3, :3], pose_c2w[:3, 3]
    xc = (lmap.points[cand] - C) @ R
    with np.errstate(divide='ignore', invalid='ignore'):
        uv = xc[:, :2] / xc[:, 2:3] * [K[0, 0], K[1, 1]] + [K[0, 2], K[1, 2]]
    w, h = size
    seen = ((xc[:, 2] > 0.05) & (uv[:, 0] >= 0) & (uv[:, 0] < w) & (uv[:, 1] >= 0)
            & (uv[:, 1] < h))
    cand, uv = cand[seen], uv[seen]
    qi, ci = match_descriptors(q_root, lmap.point_roots(cand), conf['ratio'])
    ok = np.linalg.norm(xy[qi] - uv[ci], axis=1) <= conf['match_px']
    return np.stack([qi[ok], cand[ci[ok]].astype(np.int64)], 1)


def _one_to_one(pairs: np.ndarray, xy: np.ndarray, pose_c2w: np.ndarray, K: np.ndarray,
                points: np.ndarray, max_px: float) -> np.ndarray:
    """Keep pairs reprojecting within ``max_px``, each keypoint and point once (best first)."""
    if len(pairs) == 0:
        return pairs.reshape(0, 2)
    R, C = pose_c2w[:3, :3], pose_c2w[:3, 3]
    xc = (points[pairs[:, 1]] - C) @ R
    with np.errstate(divide='ignore', invalid='ignore'):
        uv = xc[:, :2] / xc[:, 2:3] * [K[0, 0], K[1, 1]] + [K[0, 2], K[1, 2]]
        err = np.linalg.norm(uv - xy[pairs[:, 0]], axis=1)
    keep = np.isfinite(err) & (err <= max_px) & (xc[:, 2] > 0)
    pairs, err = pairs[keep], err[keep]
    pairs = pairs[np.argsort(err, kind='stable')]
    pairs = pairs[np.unique(pairs[:, 0], return_index=True)[1]]
    pairs = pairs[np.unique(pairs[:, 1], return_index=True)[1]]
    return pairs[np.argsort(pairs[:, 0], kind='stable')]


def register(refiner: Refiner, descriptor: Callable, image: np.ndarray, K: np.ndarray,
             conf: dict) -> tuple[dict | None, str, dict]:
    """Localize one new image in the map: ``(registration or None, why, its numbers)``.

    The registration holds the pose, keypoints, SIFT, global descriptor and the pairs
    (keypoint, point id) the image shares with the map.
    """
    lmap = refiner.map
    h, w = image.shape[:2]
    xy, desc = extract_sift(image, refiner.sift_conf)
    g = np.asarray(descriptor(image), np.float32).reshape(-1)
    order = np.argsort(-(lmap.global_desc @ g), kind='stable')[:int(conf['top_k_retrieval'])]
    res = refiner.refine(image, K=K, retrieval=order, features=(xy, desc))
    numbers = {'inliers': int(res.inliers), 'matches': int(res.matches),
               'coverage': round(float(res.coverage), 3)}
    if not res.refined:
        return None, res.reason, numbers
    if res.inliers < conf['min_inliers']:
        return None, f'too few inliers ({res.inliers} < extend.min_inliers ' \
            f'{conf["min_inliers"]})', numbers
    if res.coverage < conf['min_coverage']:
        return None, (f'inliers cover {res.coverage:.0%} of the image (< extend.min_coverage '
                      f'{conf["min_coverage"]:.0%})'), numbers
    pose = res.pose_c2w
    q_root = root_sift(desc)
    near = np.argsort(np.linalg.norm(lmap.poses_c2w[:, :3, 3] - pose[:3, 3], axis=1),
                      kind='stable')[:int(conf['neighbours'])]
    images = sorted(set(int(i) for i in near) | set(res.images))
    guided = _guided_matches(lmap, xy, q_root, pose, K, (w, h), images, conf)
    pairs = _one_to_one(np.concatenate([res.inlier_pairs, guided]), xy, pose, K, lmap.points,
                        conf['match_px'])
    return ({'pose_c2w': pose, 'xy': xy, 'desc': desc, 'global_desc': g, 'K': K,
             'size': (w, h), 'pairs': pairs, 'inliers': int(res.inliers)}, 'registered',
            numbers)


def extend_map(lmap: LocalizationMap, images: Sequence[SessionImage], descriptor: Callable,
               conf: dict | None = None, session: dict | None = None,
               log: Callable[[str], None] | None = None
               ) -> tuple[LocalizationMap, dict]:
    """Register ``images`` into ``lmap``'s frame and return the grown map and the session record.

    ``descriptor``: the map's retrieval descriptor
    (:func:`~camreloc_ros.core.localization.refiner.map_descriptor`). ``session``: what to
    record of the recording (source, kind ...); the record, with what registered and what was
    left out and why, is appended to the new map's ``meta['sessions']``. ``lmap`` itself is
    not changed. Images left out in a round are tried again against the map grown by the
    round's registrations, for at most ``rounds`` rounds or until one registers nothing.
    """
    log = log or logger.info
    conf = merge_conf(EXTEND_DEFAULTS, conf)
    t0 = time.perf_counter()
    label = f'session{len(lmap.meta.get("sessions") or []) + 1}'
    regs: dict = {}
    why: dict = {}
    current, grown, per_round = lmap, {}, []
    pending = list(range(len(images)))
    for rnd in range(max(1, int(conf['rounds']))):
        refiner = Refiner(current, descriptor, {'top_k_retrieval': int(conf['top_k_retrieval']),
                                                'top_k_prior': 0})
        before = len(regs)
        with Progress(len(pending), f'registering (round {rnd + 1})', log=log) as bar:
            for i in pending:
                item = images[i]
                image = item.load()
                h, w = image.shape[:2]
                K = (refiner.intrinsics_for(w, h) if item.K is None
                     else np.asarray(item.K, np.float64))
                reg, reason, numbers = register(refiner, descriptor, image, K, conf)
                if reg is None:
                    why[i] = {'name': item.name, 'reason': reason, **numbers}
                else:
                    reg['round'] = rnd + 1
                    regs[i] = reg
                    why.pop(i, None)
                bar.update()
        per_round.append(len(regs) - before)
        pending = [i for i in pending if i not in regs]
        if len(regs) == before:
            break
        order = sorted(regs)
        current, grown = _grown(lmap, [regs[i] for i in order],
                                [f'{label}/{images[i].name}' for i in order], conf, log)
        if not pending:
            break
    record = dict(session or {}, name=label, images=len(images), registered=len(regs),
                  registered_per_round=per_round, left_out=[why[i] for i in sorted(why)],
                  registrations=[{'name': images[i].name, 'round': regs[i]['round'],
                                  'inliers': regs[i]['inliers']} for i in sorted(regs)],
                  conf=conf, created=datetime.datetime.now(datetime.timezone.utc).isoformat(
                      timespec='seconds'))
    seconds = time.perf_counter() - t0
    record.update(grown or {'points_added': 0, 'observations_added': 0,
                            'existing_points_extended': 0},
                  seconds=round(seconds, 2),
                  seconds_per_image=round(seconds / max(len(images), 1), 3))
    if not regs:
        return lmap, record
    current.meta['sessions'] = list(lmap.meta.get('sessions') or []) + [record]
    return current, record


def _grown(lmap: LocalizationMap, regs: list, names: list, conf: dict, log
           ) -> tuple[LocalizationMap, dict]:
    """Return the map with the registered images, their observations and new points."""
    p0 = len(lmap.points)
    free, base_pairs = [], []
    for r in regs:      # pairs with points of an earlier round's growth are triangulated anew
        pairs = r['pairs'][r['pairs'][:, 1] < p0]
        mask = np.ones(len(r['xy']), bool)
        mask[pairs[:, 0]] = False
        free.append(np.flatnonzero(mask))
        base_pairs.append(pairs)
    poses = np.stack([r['pose_c2w'] for r in regs])
    Ks = np.stack([r['K'] for r in regs])
    if len(regs) >= 2:
        per_tri, new_points, new_err, tstats = triangulate(
            [r['xy'][f] for r, f in zip(regs, free)], [r['desc'][f] for r, f in zip(regs, free)],
            poses, Ks, conf['triangulation'], log)
    else:
        per_tri = [(np.zeros(0, np.int64), np.zeros(0, np.int64))]
        new_points, new_err, tstats = np.zeros((0, 3)), np.zeros(0, np.float32), {}
    per_image, obs_desc, obs_new = [], [], []
    for r, f, pairs, (kp_t, pt_t) in zip(regs, free, base_pairs, per_tri):
        kp = np.concatenate([pairs[:, 0], f[kp_t]]).astype(np.int64)
        pid = np.concatenate([pairs[:, 1], p0 + np.asarray(pt_t, np.int64)])
        order = np.argsort(kp, kind='stable')
        per_image.append((kp[order], pid[order]))
        obs_desc.append(r['desc'][f[kp_t]])
        obs_new.append(np.asarray(pt_t, np.int64))
    how = ((lmap.meta.get('conf') or {}).get('tracks') or {}).get('descriptor', 'mean')
    new_desc = representative_descriptors(np.concatenate(obs_new), np.concatenate(obs_desc),
                                          len(new_points), how)
    offsets, obs_point, obs_xy = observations(per_image, [r['xy'] for r in regs])
    extended = np.unique(np.concatenate([p[:, 1] for p in base_pairs]))
    grown = {'points_added': int(len(new_points)), 'observations_added': int(offsets[-1]),
             'existing_points_extended': int(len(extended)),
             'triangulation': {k: v for k, v in tstats.items() if k != 'warnings'}}
    log(f'{len(regs)} images registered so far: {grown["existing_points_extended"]} map points '
        f'seen again, {grown["points_added"]} new points triangulated, '
        f'{grown["observations_added"]} observations')
    meta = dict(lmap.meta)
    new = LocalizationMap(
        names=list(lmap.names) + list(names),
        poses_c2w=np.concatenate([lmap.poses_c2w, poses]),
        K=np.concatenate([lmap.K, Ks]),
        image_size=np.concatenate([lmap.image_size,
                                   np.array([r['size'] for r in regs], np.int64)]),
        global_desc=np.concatenate([lmap.global_desc,
                                    np.stack([r['global_desc'] for r in regs])]).astype(
            np.float32),
        points=np.concatenate([lmap.points, np.asarray(new_points, np.float64).reshape(-1, 3)]),
        point_desc=np.concatenate([lmap.point_desc, new_desc]),
        point_error=np.concatenate([lmap.point_error, np.asarray(new_err, np.float32)]),
        obs_offsets=np.concatenate([lmap.obs_offsets,
                                    lmap.obs_offsets[-1] + offsets[1:]]).astype(np.int64),
        obs_point=np.concatenate([lmap.obs_point, obs_point]).astype(np.int32),
        obs_xy=np.concatenate([lmap.obs_xy, obs_xy]).astype(np.float32),
        meta=meta, path=None, descriptor_onnx=lmap.descriptor_onnx)
    return new, grown
