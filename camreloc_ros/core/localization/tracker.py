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

"""Geometric tracking between refinements: every frame posed against the map's 3D points.

A refinement (:mod:`~camreloc_ros.core.localization.refiner`, ~0.5 s) gives centimetres once
a second; the network's pose in between is decimetres off. As ORB-SLAM3 does in localization
mode, the tracker keeps the refinement's inlier keypoints *with their 3D map points* and
follows them frame to frame, so each frame gets a full geometric pose of its own:

1. pyramidal Lucas-Kanade (``cv2.calcOpticalFlowPyrLK``) from the previous frame, started at
   the 3D points projected with the predicted pose (odometry's or the last frame's motion),
   kept only when tracking back lands within ``klt.fb_px`` of the start (forward-backward);
2. PnP-RANSAC on the tracked 2D-3D pairs with the predicted pose as the initial hypothesis
   and a non-linear refinement on the inliers (poselib; pycolmap / OpenCV as the refiner);
3. checks: enough inliers, inlier ratio, image coverage, and the motion against the
   prediction (``max_translation_m`` / ``max_rotation_deg``): a pose that jumps is a failure,
   never an answer; the caller then sends the frame to the refiner;
4. when fewer than ``reseed_below`` tracks remain, map points of the map images posed
   nearest the new pose are projected into the frame and those that land on texture
   (Shi-Tomasi score) away from existing tracks become new tracks. Their first 2D position
   is the projection, so they inherit the current pose error (1-2 px for centimetres at a
   few metres): tracking drifts slowly between refinements, as visual odometry does, and
   the next refinement re-seeds it exactly.

The tracker is budgeted for <= 15 ms per VGA frame on one core: it tracks at most
``max_points`` points on an image downscaled to ``max_side`` pixels (OpenCV's KLT costs
grow with window area times points; ``benchmarks/tracker.py`` measures it).

Covariance (position, then rotation about the world axes, the refiner's convention):
``Sigma = sigma^2 (J^T J)^-1`` with ``J`` the Jacobian of the inlier pixel residuals with
respect to ``(C + dp, exp(dtheta) R_c2w)`` at the solution, and
``sigma^2 = sum(r^2) / (2 n - 6)`` over the ``n`` inliers' residuals (floored at
``min_sigma_px``): the Gauss-Newton covariance for independent isotropic pixel noise. It
ignores map point errors and correlations between frames (calibration against measured
errors comes later).

ROS-free and single-threaded per instance.

About 520 lines: seeding, KLT, PnP with its gates and re-seeding from the map share the
track arrays and the frame state; split, each part would pass them all around.
"""

from __future__ import annotations

from dataclasses import dataclass, field
import time

import cv2
import numpy as np

from camreloc_ros.core.config import check_conf, merge_conf, Spec
from camreloc_ros.core.geometry import matrix_to_quat
from camreloc_ros.core.localization.map_file import LocalizationMap
from camreloc_ros.core.localization.refiner import (available_solver, pose_covariance,
                                                    pose_neighbours, solve_pnp, SOLVERS)
from camreloc_ros.core.localization.refiner import image_coverage as coverage
from camreloc_ros.core.localization.sift import extract_sift, match_descriptors

default_conf = {
    'max_side': 360,           # track on the image downscaled to this longer side (0: as is)
    'max_points': 200,         # tracks kept (KLT cost is linear in them)
    'reseed_below': 100,       # fewer tracked inliers: add map points near the current view
    'klt': {
        'window': 11,          # pixels at the tracking scale (15: 2x the time, no better here)
        'levels': 3,           # pyramid levels above the base (covers ~8x window motion)
        'iterations': 20,
        'epsilon': 0.03,
        'fb_px': 0.7,          # forward-backward disagreement allowed (tracking-scale px)
    },
    'solver': 'auto',          # as the refiner: auto | poselib | pycolmap | opencv
    'ransac_px': 4.0,          # inlier threshold (pixels of the given image); the map's
                               # triangulated points reproject within 4 px of their views
    'ransac_iterations': 100,  # the prediction is a good first hypothesis; KLT outliers are few
    'min_inliers': 30,
    'min_inlier_ratio': 0.5,   # of the tracks that survived the forward-backward check
    'min_coverage': 0.1,       # share of the 8 x 6 image grid cells holding an inlier
    'max_translation_m': 0.3,  # the solved pose vs the predicted one, per tracked frame
    'max_rotation_deg': 15.0,
    'max_gap_s': 1.0,          # a longer gap since the last tracked frame: lost
    'max_failures': 3,         # consecutive failed frames before the tracks are dropped
    'constant_velocity': True,  # without a motion prior, predict the last frame's motion
    'min_sigma_px': 0.5,       # floor of the pixel noise in the covariance
    'reseed': {
        'images': 3,           # map images posed nearest the current pose
        'margin_px': 10.0,     # projected points this close to the border are skipped
        'quality': 0.02,       # Shi-Tomasi score >= quality * the frame's best score
        'min_distance_px': 8.0,  # from other tracks (pixels of the given image)
    },
    'seed': 0,
}

schema = {
    'max_side': Spec('int', lo=0), 'max_points': Spec('int', lo=4),
    'reseed_below': Spec('int', lo=0),
    'klt': {'window': Spec('int', lo=3), 'levels': Spec('int', lo=0, hi=8),
            'iterations': Spec('int', lo=1), 'epsilon': Spec('float', lo=0.0, lo_open=True),
            'fb_px': Spec('float', lo=0.0, lo_open=True)},
    'solver': Spec('str', choices=SOLVERS, label='PnP solver'),
    'ransac_px': Spec('float', lo=0.0, lo_open=True),
    'ransac_iterations': Spec('int', lo=1), 'min_inliers': Spec('int', lo=4),
    'min_inlier_ratio': Spec('float', lo=0.0, hi=1.0),
    'min_coverage': Spec('float', lo=0.0, hi=1.0),
    'max_translation_m': Spec('float', lo=0.0, lo_open=True),
    'max_rotation_deg': Spec('float', lo=0.0, lo_open=True),
    'max_gap_s': Spec('float', lo=0.0, lo_open=True), 'max_failures': Spec('int', lo=0),
    'constant_velocity': Spec('bool'), 'min_sigma_px': Spec('float', lo=0.0),
    'reseed': {'images': Spec('int', lo=0), 'margin_px': Spec('float', lo=0.0),
               'quality': Spec('float', lo=0.0, hi=1.0),
               'min_distance_px': Spec('float', lo=0.0)},
    'seed': Spec('int', lo=0),
}


@dataclass
class TrackResult:
    """One tracked frame; ``ok=False`` with ``reason`` when it must go to the refiner."""

    ok: bool
    reason: str                                   # 'tracked' or why it failed
    stamp: float
    T_c2w_44: np.ndarray | None = None            # noqa: N815 - camera-to-world
    covariance_66: np.ndarray | None = None       # position, rotation about world x y z
    inliers: int = 0
    tracked: int = 0                              # tracks that passed forward-backward
    inlier_ratio: float = 0.0                     # inliers / tracked
    coverage: float = 0.0                         # share of 8 x 6 grid cells with an inlier
    reproj_px: float = float('nan')               # RMS inlier residual (pixels)
    reseeded: int = 0                             # map points added after this frame
    times: dict = field(default_factory=dict)     # seconds: klt, pnp, reseed, total

    @property
    def position(self) -> np.ndarray:
        """Camera centre in the world (m)."""
        return self.T_c2w_44[:3, 3].copy()

    @property
    def quaternion(self) -> np.ndarray:
        """Camera-to-world rotation, x y z w."""
        return matrix_to_quat(self.T_c2w_44[:3, :3])


@dataclass
class Seed:
    """A refinement's inliers on its own frame, ready to be tracked into a later frame.

    Built where the refinement is (the refiner's thread) with :meth:`Tracker.make_seed`, so
    the tracking worker only runs KLT from this grey image into its current frame: a seed
    from a refinement ~0.5 s old is not replayed frame by frame.
    """

    stamp: float
    T_c2w_44: np.ndarray                          # noqa: N815 - the refined pose
    gray: np.ndarray                              # the refined frame, grey, tracking scale
    scale: float                                  # tracking scale of ``gray``
    xy_n2: np.ndarray                             # inlier keypoints (pixels of the image)
    pts_n3: np.ndarray                            # their 3D map points (world, m)
    size: tuple[int, int]                         # (w, h) of the image
    velocity: np.ndarray | None = None            # last frame-to-frame motion, if tracked


def spread_subset(xy_n2: np.ndarray, n: int, size: tuple[int, int],
                  rng: np.random.Generator) -> np.ndarray:
    """Pick at most ``n`` points spread over the image: one per cell, round-robin.

    A refinement's inliers crowd on texture; keeping the first ``n`` would leave parts of the
    image without tracks, keeping a spread set keeps the pose well conditioned.
    """
    if len(xy_n2) <= n:
        return np.arange(len(xy_n2))
    w, h = size
    side = max(np.sqrt(w * h / float(n)), 1.0)
    cell = (xy_n2[:, 1] // side).astype(np.int64) * 100000 + (xy_n2[:, 0] // side)
    order = rng.permutation(len(xy_n2))
    cell = cell[order]
    srt = np.argsort(cell, kind='stable')
    first = np.r_[True, cell[srt][1:] != cell[srt][:-1]]
    start = np.maximum.accumulate(np.where(first, np.arange(len(srt)), 0))
    rank = np.empty(len(srt), np.int64)
    rank[srt] = np.arange(len(srt)) - start
    return order[np.argsort(rank, kind='stable')[:n]]


def solve_with_prior(xy_n2: np.ndarray, pts_n3: np.ndarray, K: np.ndarray,
                     size: tuple[int, int], T_c2w_prior: np.ndarray | None, solver: str,
                     threshold_px: float, iterations: int = 500, seed: int = 0
                     ) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """PnP-RANSAC + non-linear refinement -> (R_c2w, camera centre, inlier mask), or None.

    With poselib the prior pose is scored as the first hypothesis (its ``initial_pose``), so a
    good prediction is kept and refined unless RANSAC finds a better one; pycolmap and OpenCV
    solve as the refiner does (:func:`~camreloc_ros.core.localization.refiner.solve_pnp`).
    """
    solver = available_solver(solver)
    if solver != 'poselib' or T_c2w_prior is None:
        return solve_pnp(xy_n2, pts_n3, K, size, solver, threshold_px, seed, iterations)
    import poselib
    fx, fy, cx, cy = K[0, 0], K[1, 1], K[0, 2], K[1, 2]
    cam = {'model': 'PINHOLE', 'width': int(size[0]), 'height': int(size[1]),
           'params': [fx, fy, cx, cy]}
    R_w2c = T_c2w_prior[:3, :3].T
    init = poselib.CameraPose()
    init.R = R_w2c
    init.t = -R_w2c @ T_c2w_prior[:3, 3]
    pose, info = poselib.estimate_absolute_pose(
        np.ascontiguousarray(xy_n2, np.float64), np.ascontiguousarray(pts_n3, np.float64),
        cam, {'max_reproj_error': float(threshold_px), 'seed': int(seed),
              'max_iterations': int(iterations)}, {}, init)
    mask = np.asarray(info['inliers'], bool)
    R, t = np.asarray(pose.R), np.asarray(pose.t)
    if mask.shape != (len(xy_n2),) or not (np.all(np.isfinite(R)) and np.all(np.isfinite(t))):
        return None
    return R.T, -R.T @ t, mask


def solve_tracked(xy_n2: np.ndarray, pts_n3: np.ndarray, K: np.ndarray, size: tuple[int, int],
                  T_c2w_prior: np.ndarray | None, conf: dict | None = None
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray, float] | None:
    """Solve a tracked frame: (T_c2w_44, inlier mask, 6x6 covariance, RMS px), or None.

    :func:`solve_with_prior`, then the covariance ``sigma^2 (J^T J)^-1`` of the module
    docstring on the inliers (:func:`~camreloc_ros.core.localization.refiner.pose_covariance`,
    the refiner's, so tracked and refined poses claim their accuracy alike).
    ``conf``: the tracker's (its ``solver``, ``ransac_px``, ``ransac_iterations``,
    ``min_sigma_px``, ``seed``).
    """
    conf = merge_conf(default_conf, conf)
    return _solve_tracked(xy_n2, pts_n3, K, size, T_c2w_prior, conf)


def _solve_tracked(xy_n2, pts_n3, K, size, T_c2w_prior, conf):
    sol = solve_with_prior(xy_n2, pts_n3, K, size, T_c2w_prior, conf['solver'],
                           conf['ransac_px'], conf['ransac_iterations'], conf['seed'])
    if sol is None or sol[2].sum() < 4:
        return None
    R, C, mask = sol
    T = np.eye(4)
    T[:3, :3], T[:3, 3] = R, C
    cov = pose_covariance(R, C, K, pts_n3[mask], xy_n2[mask], conf['min_sigma_px'])
    r = (project(T, K, pts_n3[mask])[0] - xy_n2[mask]).ravel()
    return T, mask, cov, float(np.sqrt(r @ r / max(len(r) // 2, 1)))


def project(T_c2w_44: np.ndarray, K: np.ndarray, pts_n3: np.ndarray
            ) -> tuple[np.ndarray, np.ndarray]:
    """Pixels ``(n, 2)`` of world points and their depth ``(n,)`` in the camera."""
    xc = (pts_n3 - T_c2w_44[:3, 3]) @ T_c2w_44[:3, :3]
    z = xc[:, 2]
    zs = np.where(np.abs(z) < 1e-9, 1e-9, z)
    uv = xc[:, :2] / zs[:, None] * [K[0, 0], K[1, 1]] + [K[0, 2], K[1, 2]]
    return uv, z


def motion_error(T_a_44: np.ndarray, T_b_44: np.ndarray) -> tuple[float, float]:
    """Return (translation m, rotation deg) between two camera-to-world poses."""
    dt = float(np.linalg.norm(T_a_44[:3, 3] - T_b_44[:3, 3]))
    c = (np.trace(T_a_44[:3, :3].T @ T_b_44[:3, :3]) - 1.0) / 2.0
    return dt, float(np.degrees(np.arccos(np.clip(c, -1.0, 1.0))))


def map_correspondences(lmap: LocalizationMap, image: np.ndarray, T_c2w_44: np.ndarray,
                        K: np.ndarray, images: int = 3, max_px: float = 3.0,
                        sift_conf: dict | None = None) -> tuple[np.ndarray, np.ndarray]:
    """2D-3D pairs ``(xy_n2, pts_n3)`` of a frame whose pose is known: what a seed needs.

    SIFT of ``image`` matched (ratio test) to the map images posed nearest ``T_c2w_44``,
    kept where the 3D point reprojects within ``max_px``: the inliers a refinement at that
    pose would report. For seeding from ground truth (tests, benchmarks) or from a refiner
    that does not hand its inliers over; costs a SIFT pass (~85 ms).
    """
    xy, desc = extract_sift(image, sift_conf or (lmap.meta.get('conf') or {}).get('sift'))
    quat = matrix_to_quat(T_c2w_44[:3, :3])
    cand = lmap.image_points(pose_neighbours(lmap.poses_c2w, T_c2w_44[:3, 3], quat, images))
    if len(cand) == 0:
        return np.zeros((0, 2)), np.zeros((0, 3))
    qi, ci = match_descriptors(desc, lmap.point_roots(cand))
    pairs = np.stack([qi, cand[ci].astype(np.int64)], 1)
    x2, X3 = xy[pairs[:, 0]].astype(np.float64), lmap.points[pairs[:, 1]]
    uv, z = project(T_c2w_44, K, X3)
    keep = (z > 0) & (np.linalg.norm(uv - x2, axis=1) <= max_px)
    x2, X3 = x2[keep], X3[keep]
    _, first = np.unique(x2, axis=0, return_index=True)      # one 3D point per keypoint
    return x2[np.sort(first)], X3[np.sort(first)]


class Tracker:
    """Frame-to-frame geometric tracking against a map's 3D points (see the module doc).

    ``seed`` after each accepted refinement, ``track`` on every later frame; a failed frame
    (``ok=False``) goes to the refiner, and after ``max_failures`` of them in a row the
    tracks are dropped until the next seed.
    """

    def __init__(self, lmap: LocalizationMap | None, conf: dict | None = None):
        self.conf = merge_conf(default_conf, conf)
        check_conf(self.conf, schema)
        self.solver = available_solver(self.conf['solver'])
        self.map = lmap
        self.rng = np.random.default_rng(self.conf['seed'])
        self.reset()

    # ------------------------------------------------------------------ state

    def reset(self) -> None:
        """Forget every track (after ``~/reset`` or a jump): ``track`` fails until ``seed``."""
        self._prev = None                    # last tracked grey image (tracking scale)
        self._xy = np.zeros((0, 2))          # tracks in the last image's pixels
        self._pts = np.zeros((0, 3))         # their 3D map points
        self._ids = np.zeros(0, np.int64)    # map point index, -1 when given by a seed
        self._T = None                       # camera-to-world of the last tracked frame
        self._velocity = None                # last frame-to-frame motion (camera frame)
        self._stamp = None
        self._failures = 0

    @property
    def seeded(self) -> bool:
        """Whether tracks exist to follow."""
        return self._T is not None

    @property
    def velocity(self) -> np.ndarray | None:
        """Last frame-to-frame motion ``T_prev_cur`` (4x4), or None."""
        return None if self._velocity is None else self._velocity.copy()

    @property
    def last_stamp(self) -> float | None:
        """Stamp of the last tracked (or seeded) frame."""
        return self._stamp

    @property
    def pose(self) -> np.ndarray | None:
        """Camera-to-world of the last tracked (or seeded) frame."""
        return None if self._T is None else self._T.copy()

    def _nearest_images(self, k: int) -> np.ndarray:
        """Return the ``k`` map images posed nearest the current pose.

        The cost is metres + degrees / 10, the refiner's
        :func:`~camreloc_ros.core.localization.refiner.pose_neighbours` cost.
        """
        P = self.map.poses_c2w
        cos = (np.einsum('nij,ij->n', P[:, :3, :3], self._T[:3, :3]) - 1.0) / 2.0
        cost = (np.linalg.norm(P[:, :3, 3] - self._T[:3, 3], axis=1)
                + np.degrees(np.arccos(np.clip(cos, -1.0, 1.0))) / 10.0)
        return np.argsort(cost, kind='stable')[:k]

    def _scale(self, size: tuple[int, int]) -> float:
        side = self.conf['max_side']
        return 1.0 if not side or max(size) <= side else side / float(max(size))

    def _gray(self, image: np.ndarray) -> tuple[np.ndarray, float]:
        """Return the grey image at the tracking scale, and that scale.

        OpenCV's Python KLT takes images, not pyramids: it builds them, ~0.3 ms a VGA frame.
        """
        gray = image if image.ndim == 2 else cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
        s = self._scale((gray.shape[1], gray.shape[0]))
        if s != 1.0:
            gray = cv2.resize(gray, None, fx=s, fy=s, interpolation=cv2.INTER_AREA)
        return gray, s

    def seed(self, image: np.ndarray, stamp: float, T_c2w: np.ndarray, inlier_xy_n2: np.ndarray,
             inlier_pts_n3: np.ndarray, K: np.ndarray) -> int:
        """Start tracking from an accepted refinement; returns the number of tracks kept.

        ``inlier_xy_n2`` (pixels of ``image``) and ``inlier_pts_n3`` (world, m) are the
        refinement's PnP inliers, ``T_c2w`` its pose, ``K`` the intrinsics of ``image``.
        """
        xy = np.asarray(inlier_xy_n2, np.float64).reshape(-1, 2)
        pts = np.asarray(inlier_pts_n3, np.float64).reshape(-1, 3)
        if len(xy) != len(pts):
            raise ValueError(f'seed: {len(xy)} keypoints but {len(pts)} 3D points')
        self.reset()
        size = (image.shape[1], image.shape[0])
        keep = spread_subset(xy, self.conf['max_points'], size, self.rng)
        self._prev, _ = self._gray(image)
        self._xy, self._pts = xy[keep], pts[keep]
        self._ids = np.full(len(keep), -1, np.int64)
        self._T = np.asarray(T_c2w, np.float64).copy()
        self._stamp = float(stamp)
        return len(keep)

    def make_seed(self, image: np.ndarray, stamp: float, T_c2w: np.ndarray,
                  inlier_xy_n2: np.ndarray, inlier_pts_n3: np.ndarray) -> Seed:
        """Package a refinement for :meth:`track`'s ``refresh`` (thread-safe: no state).

        At most ``max_points`` inliers, spread over the image (a generator seeded by the
        refined stamp, so reruns pick the same ones whichever thread builds it).
        """
        xy = np.asarray(inlier_xy_n2, np.float64).reshape(-1, 2)
        pts = np.asarray(inlier_pts_n3, np.float64).reshape(-1, 3)
        if len(xy) != len(pts):
            raise ValueError(f'seed: {len(xy)} keypoints but {len(pts)} 3D points')
        size = (image.shape[1], image.shape[0])
        rng = np.random.default_rng([self.conf['seed'], int(abs(float(stamp)) * 1e6)])
        keep = spread_subset(xy, self.conf['max_points'], size, rng)
        gray, s = self._gray(image)
        return Seed(float(stamp), np.asarray(T_c2w, np.float64).copy(), gray, s, xy[keep],
                    pts[keep], size)

    def seed_from(self, seed: Seed) -> int:
        """Start tracking from a :class:`Seed` (its frame becomes the last tracked one).

        A seed of the frame just tracked keeps the tracker's velocity (constant-velocity
        prediction of the next frame); any other starts with the seed's own (a seed caught
        up by tracking carries it), or none.
        """
        velocity = self._velocity if self._stamp == seed.stamp else seed.velocity
        self.reset()
        self._velocity = None if velocity is None else np.array(velocity, np.float64)
        self._prev = seed.gray
        self._xy, self._pts = seed.xy_n2.copy(), seed.pts_n3.copy()
        self._ids = np.full(len(self._xy), -1, np.int64)
        self._T, self._stamp = seed.T_c2w_44.copy(), seed.stamp
        return len(self._xy)

    # ------------------------------------------------------------------ tracking

    def _klt(self, prev: np.ndarray, s_prev: float, gray: np.ndarray, s: float,
             xy_n2: np.ndarray, pts_n3: np.ndarray, T_pred: np.ndarray, K: np.ndarray
             ) -> np.ndarray:
        """Track ``xy_n2`` from ``prev`` into ``gray``: the new pixels, NaN where lost.

        Started at the 3D points' projections under ``T_pred`` (pyramidal LK then only
        corrects the prediction's error) and kept only when tracking back lands within
        ``klt.fb_px`` of the start (forward-backward check).
        """
        k = self.conf['klt']
        p0 = ((xy_n2 + 0.5) * s_prev - 0.5).astype(np.float32)
        uv, z = project(T_pred, K, pts_n3)
        ok = (z > 0)[:, None] & np.all(np.isfinite(uv), 1)[:, None]
        guess = np.where(ok, (uv + 0.5) * s - 0.5, (xy_n2 + 0.5) * s - 0.5).astype(np.float32)
        crit = (cv2.TERM_CRITERIA_COUNT | cv2.TERM_CRITERIA_EPS, k['iterations'], k['epsilon'])
        lk = dict(winSize=(k['window'], k['window']), maxLevel=k['levels'], criteria=crit,
                  flags=cv2.OPTFLOW_USE_INITIAL_FLOW)
        p1, st1, _ = cv2.calcOpticalFlowPyrLK(prev, gray, p0, guess.copy(), **lk)
        p0b, st2, _ = cv2.calcOpticalFlowPyrLK(gray, prev, p1, p0.copy(), **lk)
        hs, ws = gray.shape[:2]
        good = ((st1.ravel() == 1) & (st2.ravel() == 1)
                & (np.linalg.norm(p0b - p0, axis=1) <= k['fb_px'])
                & (p1[:, 0] >= 0) & (p1[:, 1] >= 0) & (p1[:, 0] <= ws - 1)
                & (p1[:, 1] <= hs - 1))
        out = (p1.astype(np.float64) + 0.5) / s - 0.5
        out[~good] = np.nan
        return out

    def _fail(self, reason: str, stamp: float, t0: float, **kw) -> TrackResult:
        self._failures += 1
        if self._failures > self.conf['max_failures']:
            self.reset()
            reason += ' (tracks dropped: refine to re-seed)'
        kw.setdefault('times', {})['total'] = time.perf_counter() - t0
        return TrackResult(False, reason, float(stamp), **kw)

    def track(self, image: np.ndarray, stamp: float, K: np.ndarray,
              motion_prior: np.ndarray | None = None, refresh: Seed | None = None
              ) -> TrackResult:
        """Pose ``image`` (RGB or mono uint8, intrinsics ``K``) from the tracks.

        ``motion_prior``: the camera's motion since the last tracked frame as a 4x4
        ``T_prev_cur`` (``T_c2w_cur = T_c2w_prev @ T_prev_cur``), e.g. odometry's
        ``inv(A_prev) @ A_now`` or the network's relative pose; without it the last frame's
        motion is repeated (``constant_velocity``) or none is assumed.

        ``refresh``: an accepted refinement of an earlier frame (:meth:`make_seed`). Its
        inliers are tracked straight from their own frame into this one and replace the
        tracks that re-seeding projected from the map (those inherit the pose error: this is
        what keeps tracking from drifting). Without tracks, the seed starts tracking: then
        ``motion_prior`` is the motion since the seed's frame.
        """
        conf = self.conf
        t0 = time.perf_counter()
        times: dict = {}
        K = np.asarray(K, np.float64)
        caught_up = False
        if refresh is not None and (not self.seeded or refresh.stamp > self._stamp + 1.0):
            self.seed_from(refresh)   # no tracks to refresh, or tracks older than the seed
            refresh, caught_up = None, True
        if not self.seeded:
            return TrackResult(False, 'not seeded (no refinement to track from)', float(stamp),
                               times={'total': time.perf_counter() - t0})
        dt = float(stamp) - self._stamp
        if dt <= 0 or dt > conf['max_gap_s']:
            self.reset()
            return TrackResult(False, f'time gap {dt:.3f} s since the last tracked frame '
                               f'(allowed 0-{conf["max_gap_s"]:g} s): tracks dropped',
                               float(stamp), times={'total': time.perf_counter() - t0})
        size = (image.shape[1], image.shape[0])
        if motion_prior is not None:
            motion = np.asarray(motion_prior, np.float64)
        elif conf['constant_velocity'] and self._velocity is not None:
            motion = self._velocity
        else:
            motion = np.eye(4)
        T_pred = self._T @ motion
        gray, s = self._gray(image)
        s_prev = self._scale(size)
        xy = self._klt(self._prev, s_prev, gray, s, self._xy, self._pts, T_pred, K)
        pts, ids = self._pts, self._ids
        if refresh is not None:
            fresh = self._klt(refresh.gray, refresh.scale, gray, s, refresh.xy_n2,
                              refresh.pts_n3, T_pred, K)
            if np.isfinite(fresh[:, 0]).sum() >= conf['min_inliers']:
                old = ids < 0    # projected re-seeds (ids >= 0) inherit the pose error: drop
                xy = np.concatenate([fresh, xy[old]])
                pts = np.concatenate([refresh.pts_n3, pts[old]])
                ids = np.concatenate([np.full(len(fresh), -1, np.int64), ids[old]])
        good = np.isfinite(xy[:, 0])
        xy, pts, ids = xy[good], pts[good], ids[good]
        t1 = time.perf_counter()
        times['klt'] = t1 - t0
        n_tr = int(len(xy))
        if n_tr < conf['min_inliers']:
            return self._fail(f'too few tracks ({n_tr} < {conf["min_inliers"]} passed the '
                              'forward-backward check)', stamp, t0, tracked=n_tr, times=times)
        sol = _solve_tracked(xy, pts, K, size, T_pred, conf)
        times['pnp'] = time.perf_counter() - t1
        if sol is None:
            return self._fail('PnP failed', stamp, t0, tracked=n_tr, times=times)
        T, mask, cov, rms = sol
        n_in = int(mask.sum())
        ratio = n_in / float(n_tr)
        cover = coverage(xy[mask], size)
        common = dict(tracked=n_tr, inliers=n_in, inlier_ratio=ratio, coverage=cover,
                      times=times)
        if n_in < conf['min_inliers']:
            return self._fail(f'too few inliers ({n_in} < {conf["min_inliers"]})', stamp, t0,
                              **common)
        if ratio < conf['min_inlier_ratio']:
            return self._fail(f'inlier ratio {ratio:.2f} < {conf["min_inlier_ratio"]:g}',
                              stamp, t0, **common)
        if cover < conf['min_coverage']:
            return self._fail(f'inliers cover {cover:.2f} of the image '
                              f'(< {conf["min_coverage"]:g})', stamp, t0, **common)
        d_m, d_deg = motion_error(T, T_pred)
        # a seed caught up over several frames without a motion prior predicts no motion:
        # the limits grow with the gap (per 0.1 s), the geometric gates above still hold
        grow = max(1.0, dt / 0.1) if caught_up and motion_prior is None else 1.0
        max_m, max_deg = conf['max_translation_m'] * grow, conf['max_rotation_deg'] * grow
        if d_m > max_m or d_deg > max_deg:
            return self._fail(f'inconsistent motion: {d_m:.2f} m / {d_deg:.1f} deg from the '
                              f'predicted pose (limits {max_m:g} m / {max_deg:g} deg)', stamp,
                              t0, **common)
        t2 = time.perf_counter()
        # accept: the inliers are the tracks from now on (at most max_points, spread)
        # a seed caught up over a gap of several frames says nothing about one frame's motion
        self._velocity = None if caught_up and dt > conf['max_gap_s'] / 2 else \
            np.linalg.inv(self._T) @ T
        self._T, self._stamp, self._prev, self._failures = T, float(stamp), gray, 0
        keep = np.flatnonzero(mask)
        if len(keep) > conf['max_points']:
            keep = keep[np.sort(spread_subset(xy[keep], conf['max_points'], size, self.rng))]
        self._xy, self._pts, self._ids = xy[keep], pts[keep], ids[keep]
        added = 0
        if n_in < conf['reseed_below'] and self.map is not None:
            added = self._reseed(gray, s, K, size)
        times['reseed'] = time.perf_counter() - t2
        times['total'] = time.perf_counter() - t0
        return TrackResult(True, 'tracked', float(stamp), T, cov, reproj_px=rms,
                           reseeded=added, **common)

    def _reseed(self, gray: np.ndarray, s: float, K: np.ndarray, size: tuple[int, int]) -> int:
        """Add map points of the nearest map images that land on texture in this frame."""
        rc = self.conf['reseed']
        room = self.conf['max_points'] - len(self._xy)
        if room <= 0 or rc['images'] <= 0:
            return 0
        lmap = self.map
        near = self._nearest_images(rc['images'])
        ids = lmap.image_points(near)
        ids = ids[~np.isin(ids, self._ids)]
        if len(ids) == 0:
            return 0
        uv, z = project(self._T, K, lmap.points[ids])
        w, h = size
        m = rc['margin_px']
        ok = (z > 0.05) & (uv[:, 0] >= m) & (uv[:, 1] >= m) & (uv[:, 0] < w - m) \
            & (uv[:, 1] < h - m)
        ids, uv = ids[ok], uv[ok]
        if len(ids) == 0:
            return 0
        # texture: KLT needs a corner-like patch (Shi-Tomasi minimum eigenvalue)
        eig = cv2.cornerMinEigenVal(gray, 3)
        q = np.clip(np.round((uv + 0.5) * s - 0.5).astype(int), 0,
                    [gray.shape[1] - 1, gray.shape[0] - 1])
        score = eig[q[:, 1], q[:, 0]]
        ok = score >= rc['quality'] * float(eig.max())
        ids, uv, score = ids[ok], uv[ok], score[ok]
        # strongest first, one per cell of min_distance, none in a cell next to a track's
        cell = max(rc['min_distance_px'], 1.0)
        gw, gh = int(w // cell) + 3, int(h // cell) + 3
        busy = np.zeros((gh, gw), bool)
        own = np.clip(np.floor(self._xy / cell).astype(int) + 1, 0, [gw - 1, gh - 1])
        busy[own[:, 1], own[:, 0]] = True
        busy = cv2.dilate(busy.astype(np.uint8), np.ones((3, 3), np.uint8)).astype(bool)
        c = np.clip(np.floor(uv / cell).astype(int) + 1, 0, [gw - 1, gh - 1])
        order = np.argsort(-score, kind='stable')
        order = order[~busy[c[order, 1], c[order, 0]]]
        _, first = np.unique(c[order, 1] * gw + c[order, 0], return_index=True)
        pick = order[np.sort(first)][:room]
        if len(pick) == 0:
            return 0
        self._xy = np.concatenate([self._xy, uv[pick]])
        self._pts = np.concatenate([self._pts, lmap.points[ids[pick]]])
        self._ids = np.concatenate([self._ids, ids[pick]])
        return len(pick)
