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

"""Covariance calibration of refined and tracked poses against errors measured at map build.

Why: the PnP covariance ``sigma^2 (J^T J)^-1`` assumes independent pixel noise on exact map
points. The map's triangulated points are not exact (they come from the headset's own
tracking poses and reproject within a few pixels), so on the HoloLens walk ``~/refined_pose``
claimed a 0.6 mm position sigma for a 9-13 mm error (median NEES ~740): a fusion filter
(robot_localization) would trust it blindly and jump. The errors cannot be modelled from
first principles here, but they can be measured where the truth is known: the map's own
images. :func:`calibrate_map` refines a held-out subset of them against the rest of the map,
with the held-out image *and its temporal neighbours* (``window`` images on either side, by
index) removed from matching, retrieval and the tracker's re-seeding, so a calibration
frame is as far from the map as a held-out test frame can be; it then tracks the next few
map images from each refinement (:class:`~camreloc_ros.core.localization.tracker.Tracker`).
From the normalised estimation errors squared (NEES, ``e^T Sigma^-1 e``) of the position
and rotation blocks it fits one scale per block and per kind (``refined``, ``tracked``):
``s = quantile_0.95(NEES) / chi2_3(0.95)``, so 95 % of the calibration errors fall inside the
claimed 95 % ellipsoid. The scales are stored in the map (``meta.covariance_calibration``)
and applied by ``LocalizationMap.calibrated_covariance``
(:mod:`~camreloc_ros.core.localization.map_file`).

ROS-free; torch-free (the caller hands in the descriptor).
"""

from __future__ import annotations

import dataclasses
import logging
import time
from typing import Callable, Sequence

import cv2
import numpy as np

from camreloc_ros.core.config import check_conf, merge_conf, Spec
from camreloc_ros.core.localization.map_file import (  # noqa: F401 - re-exported
    calibration_problem, KINDS, scale_covariance, SCALE_KEYS)

logger = logging.getLogger('camreloc_ros')

CHI2_3_95 = 7.814727903251178     # chi-square, 3 degrees of freedom, 95 %

default_conf = {
    'enabled': True,        # False: write the map without calibration (identity scales)
    'images': 40,           # held-out map images refined (evenly spread over the map)
    'window': 12,           # map images excluded on either side of a held-out one (by index)
    'track_frames': 15,     # map images after each refinement tracked from it (0: none);
                            # live, tracks run a refine.period (~30 frames): 5 gave 81 %
                            # test coverage for tracked poses, 15 gives 84 %
    'frame_dt_s': 0.1,      # stamps the tracker sees between consecutive map images
    'quantile': 0.95,       # NEES quantile matched to chi2(3) at the same probability
    'min_frames': 8,        # fewer accepted poses of a kind: no scale fitted for it
    'refiner': {},          # refiner overrides (the node's defaults otherwise)
    'tracker': {},          # tracker overrides
    'gate': {},             # the localizer's inlier-geometry gate ({}: state.default_conf's)
}

CALIBRATION_DEFAULTS = default_conf   # the name other modules' confs nest it under

schema = {
    'enabled': Spec('bool'), 'images': Spec('int', lo=0), 'window': Spec('int', lo=0),
    'track_frames': Spec('int', lo=0), 'frame_dt_s': Spec('float', lo=0.0, lo_open=True),
    'quantile': Spec('float', lo=0.5, hi=1.0, hi_open=True), 'min_frames': Spec('int', lo=1),
}


def rotation_error_world(R_est_33: np.ndarray, R_gt_33: np.ndarray) -> np.ndarray:
    """Rotation vector ``d`` with ``R_est = exp(d) R_gt``: the covariance's convention."""
    rel_33 = np.asarray(R_est_33, np.float64) @ np.asarray(R_gt_33, np.float64).T
    return cv2.Rodrigues(rel_33)[0].ravel()


def pose_nees(T_est_44: np.ndarray, T_gt_44: np.ndarray, cov_66: np.ndarray
              ) -> tuple[float, float]:
    """NEES of the position and the rotation block of a pose estimate (each chi2(3) if right).

    ``cov_66`` orders position (m), then rotation about the world axes (rad), as the refiner,
    the tracker and the network publish it.
    """
    e_p = np.asarray(T_est_44, np.float64)[:3, 3] - np.asarray(T_gt_44, np.float64)[:3, 3]
    e_r = rotation_error_world(T_est_44[:3, :3], T_gt_44[:3, :3])
    cov = np.asarray(cov_66, np.float64)
    return block_nees(e_p, cov[:3, :3]), block_nees(e_r, cov[3:, 3:])


def block_nees(err_3: np.ndarray, cov_33: np.ndarray) -> float:
    """``e^T Sigma^-1 e`` (inf where the block is singular)."""
    try:
        return float(err_3 @ np.linalg.solve(cov_33, err_3))
    except np.linalg.LinAlgError:
        return float('inf')


def fit_scale(nees_n: np.ndarray, quantile: float = 0.95, dof_chi2: float = CHI2_3_95) -> float:
    """Scale ``s`` such that a share ``quantile`` of ``nees / s`` lies below ``dof_chi2``.

    Both ways: an over-confident covariance grows (s > 1), a timid one shrinks (s < 1).
    """
    nees_n = np.asarray(nees_n, np.float64)
    nees_n = nees_n[np.isfinite(nees_n)]
    if len(nees_n) == 0:
        raise ValueError('no finite NEES to fit a covariance scale to')
    return max(float(np.quantile(nees_n, quantile)) / dof_chi2, 1e-12)


def coverage_summary(nees_pos_n: np.ndarray, nees_rot_n: np.ndarray, errors_m_n: np.ndarray,
                     scales: tuple[float, float] = (1.0, 1.0)) -> dict:
    """Share of errors inside the 95 % ellipsoid (position, rotation) and median NEES."""
    p = np.asarray(nees_pos_n, np.float64) / scales[0]
    r = np.asarray(nees_rot_n, np.float64) / scales[1]
    return {'frames': int(len(p)),
            'inside_95_position': float(np.mean(p <= CHI2_3_95)) if len(p) else float('nan'),
            'inside_95_rotation': float(np.mean(r <= CHI2_3_95)) if len(r) else float('nan'),
            'nees_median_position': float(np.median(p)) if len(p) else float('nan'),
            'nees_median_rotation': float(np.median(r)) if len(r) else float('nan'),
            'position_error_median_m': float(np.median(errors_m_n)) if len(p) else float('nan')}


def fit_kind(nees_pos_n: Sequence[float], nees_rot_n: Sequence[float],
             errors_m_n: Sequence[float], quantile: float, min_frames: int) -> dict:
    """Fit one kind's stored entry: scales (given enough frames), raw and calibrated coverage."""
    raw = coverage_summary(nees_pos_n, nees_rot_n, errors_m_n)
    entry = {'frames': raw['frames'], 'nees_median_raw': raw['nees_median_position'],
             'rotation_nees_median_raw': raw['nees_median_rotation'],
             'inside_95_raw': raw['inside_95_position'],
             'position_error_median_m': raw['position_error_median_m'],
             # per pose, for re-fitting and plots: raw NEES of both blocks, error (m)
             'samples': [[float(f'{p:.4g}'), float(f'{r:.4g}'), float(f'{e:.4g}')]
                         for p, r, e in zip(nees_pos_n, nees_rot_n, errors_m_n)]}
    if raw['frames'] < min_frames:
        entry['skipped'] = f'{raw["frames"]} accepted poses (< min_frames {min_frames})'
        return entry
    s_p = fit_scale(nees_pos_n, quantile)
    s_r = fit_scale(nees_rot_n, quantile)
    cal = coverage_summary(nees_pos_n, nees_rot_n, errors_m_n, (s_p, s_r))
    entry.update(position_scale=s_p, rotation_scale=s_r,
                 inside_95_calibrated=cal['inside_95_position'],
                 rotation_inside_95_calibrated=cal['inside_95_rotation'])
    return entry


def submap(lmap, keep_n: np.ndarray):
    """Restrict the map to the images ``keep_n`` (bool mask or indices); keep every point.

    Every observation keeps its point index, so 3D points seen only by dropped images are
    never candidates. A point seen by a dropped image and others keeps the position and
    descriptor it has from all of them (a small leak the calibration accepts: rebuilding the
    points per held-out image would cost a map build each). No descriptor network: the
    caller describes queries. No covariance
    calibration either, and no warning about it: a refiner or tracker on the sub-map gives the
    raw PnP covariance, which is what calibration measures.
    """
    keep = np.zeros(len(lmap), bool)
    keep[np.asarray(keep_n)] = True
    counts = np.diff(lmap.obs_offsets)
    obs_keep = np.repeat(keep, counts)
    sub = dataclasses.replace(   # the map's own class: map_file imports this module
        lmap, descriptor_onnx=None, names=[n for n, k in zip(lmap.names, keep) if k],
        poses_c2w=lmap.poses_c2w[keep],
        K=lmap.K[keep], image_size=lmap.image_size[keep], global_desc=lmap.global_desc[keep],
        obs_offsets=np.r_[0, np.cumsum(counts[keep])].astype(np.int64),
        obs_xy=lmap.obs_xy[obs_keep], obs_point=lmap.obs_point[obs_keep],
        meta={k: v for k, v in lmap.meta.items() if k != 'covariance_calibration'},
        path=lmap.path)
    sub.__dict__['_uncalibrated_warned'] = set(KINDS)   # raw on purpose: no warning
    return sub


def held_out_indices(n: int, count: int, window: int) -> np.ndarray:
    """``count`` map indices spread evenly, each leaving images outside its window."""
    if n - (2 * window + 1) < 2 or count <= 0:
        return np.zeros(0, np.int64)
    return np.unique(np.round(np.linspace(0, n - 1, min(count, n))).astype(np.int64))


def state_default_conf() -> dict:
    """Return the localizer's defaults (its gate is what live refinements must pass)."""
    from camreloc_ros.core.localization.state import default_conf as conf
    return conf


def passes_gate(refinement, gate: dict) -> str | None:
    """Return why the localizer's inlier-geometry gate would refuse ``refinement``, or None.

    Live, a refinement with too few inliers, too small an inlier ratio or inliers bunched in
    one part of the image never reaches the robot (:meth:`Localizer.submit
    <camreloc_ros.core.localization.state.Localizer.submit>`), so it must not set the
    covariance scale of those that do: calibration measures the refinements the robot gets.
    """
    if refinement.inliers < gate['min_inliers']:
        return f'{refinement.inliers} inliers'
    if refinement.inlier_ratio < gate['min_inlier_ratio']:
        return f'inlier ratio {refinement.inlier_ratio:.2f}'
    if refinement.coverage < gate['min_coverage']:
        return f'coverage {refinement.coverage:.2f}'
    return None


def calibrate_map(lmap, descriptor: Callable | None, images: Sequence[Callable], conf: dict |
                  None = None, log: Callable[[str], None] | None = None,
                  prior: Callable | None = None) -> dict:
    """Measure refined and tracked errors on held-out map images; return the meta entry.

    ``images[i]`` returns map image ``i`` (RGB uint8); ``descriptor`` describes a query as the
    map's ``global_desc`` were made (None: the refiner picks images by the prior only, and
    there is none here, so nothing refines). ``prior(image)`` -> ``(position, quaternion)``:
    the network's pose of a held-out image, as the live node hands the refiner (None: retrieval
    alone picks the map images). Returns ``{'refined': {...}, 'tracked': {...},
    'window', 'images', 'seconds', ...}``; a kind with too few accepted poses has no scales
    (``skipped`` says why) and stays uncalibrated.
    """
    from camreloc_ros.core.localization.refiner import Refiner
    log = log or logger.info
    conf = merge_conf(default_conf, conf)
    check_conf(conf, schema)
    t0 = time.perf_counter()
    n, w = len(lmap), int(conf['window'])
    held = held_out_indices(n, int(conf['images']), w)
    out = {'window': w, 'images': int(len(held)), 'quantile': conf['quantile'],
           'track_frames': int(conf['track_frames']), 'method':
           'held-out map images refined and tracked against the map without their window'}
    if not len(held):
        out['skipped'] = (f'the map has {n} images: too few to hold out one with a window of '
                          f'{w} images on either side')
        out['seconds'] = round(time.perf_counter() - t0, 2)
        log(f'covariance calibration skipped: {out["skipped"]}')
        return out
    gate = conf['gate'] or state_default_conf()['gate']
    rows = {k: ([], [], []) for k in KINDS}
    idx = np.arange(n)
    refined_count = 0
    for c, i in enumerate(held):
        keep = np.flatnonzero(np.abs(idx - i) > w)
        sub = submap(lmap, keep)
        image = images[i]()
        refiner = Refiner(sub, descriptor, conf['refiner'])
        p_pos, p_quat = prior(image) if prior is not None else (None, None)
        r = refiner.refine(image, p_pos, p_quat, K=lmap.K[i])
        if r.refined and passes_gate(r, gate) is None:
            refined_count += 1
            _record(rows['refined'], r.pose_c2w, lmap.poses_c2w[i], r.covariance)
            if conf['track_frames'] > 0 and len(r.inlier_xy) >= 4:
                _track(sub, image, i, r, lmap, images, conf, rows['tracked'])
        if (c + 1) % 10 == 0:
            log(f'  covariance calibration: {c + 1}/{len(held)} held-out images '
                f'({time.perf_counter() - t0:.0f} s)')
    for kind in KINDS:
        out[kind] = fit_kind(*rows[kind], conf['quantile'], conf['min_frames'])
    out['refined']['attempted'] = int(len(held))
    out['seconds'] = round(time.perf_counter() - t0, 2)
    for kind in KINDS:
        e = out[kind]
        if 'position_scale' in e:
            log(f'covariance calibration, {kind}: {e["frames"]} poses, median error '
                f'{e["position_error_median_m"] * 100:.1f} cm, median position NEES '
                f'{e["nees_median_raw"]:.1f} -> scales position {e["position_scale"]:.3g}, '
                f'rotation {e["rotation_scale"]:.3g} (inside the 95 % ellipsoid: '
                f'{100 * e["inside_95_raw"]:.0f} % -> {100 * e["inside_95_calibrated"]:.0f} %)')
        else:
            log(f'covariance calibration, {kind}: not calibrated ({e["skipped"]})')
    log(f'covariance calibration: {refined_count}/{len(held)} held-out images refined, '
        f'{out["seconds"]:.0f} s')
    return out


def _record(row: tuple, T_est_44: np.ndarray, T_gt_44: np.ndarray, cov_66: np.ndarray) -> None:
    p, r = pose_nees(T_est_44, T_gt_44, cov_66)
    row[0].append(p)
    row[1].append(r)
    row[2].append(float(np.linalg.norm(T_est_44[:3, 3] - T_gt_44[:3, 3])))


def _track(sub, image: np.ndarray, i: int, r, lmap, images: Sequence[Callable], conf: dict,
           row: tuple) -> None:
    """Seed a tracker on ``sub`` (the window excluded) from refinement ``r`` of image ``i``."""
    from camreloc_ros.core.localization.tracker import Tracker
    tracker = Tracker(sub, conf['tracker'])
    dt = float(conf['frame_dt_s'])
    tracker.seed(image, i * dt, r.pose_c2w, r.inlier_xy, r.inlier_points, lmap.K[i])
    for j in range(i + 1, min(i + 1 + int(conf['track_frames']), len(lmap))):
        if j - i > int(conf['window']):
            break          # beyond the window the image itself is in the map
        res = tracker.track(images[j](), j * dt, lmap.K[j])
        if not res.ok:
            if not tracker.seeded:
                break
            continue
        _record(row, res.T_c2w_44, lmap.poses_c2w[j], res.covariance_66)
