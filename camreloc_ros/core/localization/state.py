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

"""The localization state: what the robot is told, and when it may believe it.

A global localizer must say whether its pose is a centimetre pose or a guess (nav2_amcl,
robot_localization and an inspection planner act on that), and must never publish a wrong
pose as a good one. :class:`Localizer` runs, per camera frame, the parts that give a pose
against the map and decides which one the robot gets:

* the **tracker** (:mod:`~camreloc_ros.core.localization.tracker`): every frame posed by KLT +
  PnP against map points, seeded and refreshed by accepted refinements;
* **refinements** (:mod:`~camreloc_ros.core.localization.refiner`, retrieval + SIFT + PnP):
  slow (live, about one a second, from another thread through :meth:`Localizer.submit`;
  offline, every frame through :meth:`Localizer.process`'s ``refinement``). Each is gated
  before use: its inlier geometry (inliers, inlier ratio, image coverage), then the
  Mahalanobis distance to the pose the localizer already had at that frame (tracked or dead
  reckoned, calibrated covariances, chi-square at ``gate.chi2``);
* **dead reckoning**: when tracking fails, the last localized pose carried through odometry
  (TF ``odom -> camera``) or, as the last resort, the network's relative motion
  (:func:`~camreloc_ros.core.localization.correction.compose_correction`), with a covariance
  that grows with the motion.

States (as ORB-SLAM3's localization mode and isaac_ros visual global localization report
them):

* ``not_localized``: no map, before localization is confirmed, after a reset, a jump back
  in time or a gap of over ``max_gap`` s between frames (nothing measured the motion over
  it), or after tracking and refinement both failed for ``lost_after`` seconds. Confirmation
  needs ``confirmations`` consistent refinements (the second checked against the first one
  tracked, or carried, to its frame): one lucky PnP on a repetitive structure is not enough.
* ``localized``: this frame was tracked or refined, and localization is confirmed.
* ``dead_reckoning``: tracking failed this frame; the pose is carried from the last localized
  one. Published only while its position and rotation standard deviations stay under
  ``max_position_std`` / ``max_rotation_std``.

A refinement inconsistent with a confirmed track is rejected and kept as a *challenger*; a
second refinement consistent with the challenger (and not with the track) means the track
is wrong (a kidnapped robot): tracking restarts from the new refinement. Covariances are the
map's calibrated ones where the map carries a calibration
(``LocalizationMap.calibrated_covariance``), so the gates and the published ellipsoids mean
what they say.

ROS-free; :meth:`submit` may be called from another thread than :meth:`process`.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
import math
import threading
from typing import Any

import cv2
import numpy as np

from camreloc_ros.core.config import check_conf, merge_conf, Spec
from camreloc_ros.core.geometry import matrix_from_pose, matrix_to_quat
from camreloc_ros.core.localization.correction import compose_correction
from camreloc_ros.core.localization import tracker as tracker_
from camreloc_ros.core.localization.tracker import Seed, Tracker

STATES = ('not_localized', 'localized', 'dead_reckoning')
SOURCES = ('tracked', 'refined', 'odom', 'network', 'none')

default_conf = {
    'lost_after': 2.0,          # s without a tracked or accepted refined pose: not_localized
    'max_position_std': 0.25,   # m: dead_reckoning poses published while under it
    'max_rotation_std': 5.0,    # deg: likewise
    'confirmations': 2,         # consistent refinements before localized (start, reset, jump)
    'motion_noise': 0.1,        # dead reckoning by the network: std per m and per rad moved
    'odom_noise': 0.02,         # dead reckoning by odometry: std per m and per rad moved
    'history_s': 10.0,          # seconds of per-frame estimates kept to gate late refinements
    'catch_up_frames': 90,      # grey frames kept to track a late refinement up to now
    'max_gap': 1.0,             # s between frames beyond which the localization is reset
    'gate': {
        'chi2': 22.46,          # 6-DoF Mahalanobis^2 bound (chi2(6) 99.9 %)
        'position_floor_m': 0.03,   # std added to both sides: map and ground-truth noise
        'rotation_floor_deg': 1.0,
        'min_inliers': 20,
        'min_inlier_ratio': 0.15,   # PnP inliers / 2D-3D matches
        'min_coverage': 0.08,       # share of 8 x 6 image cells holding an inlier
    },
    'tracker': tracker_.default_conf,   # the tracker's own (tracker.default_conf)
}

schema = {
    'lost_after': Spec('float', lo=0.0), 'max_position_std': Spec('float', lo=0.0),
    'max_rotation_std': Spec('float', lo=0.0), 'confirmations': Spec('int', lo=1),
    'motion_noise': Spec('float', lo=0.0), 'odom_noise': Spec('float', lo=0.0),
    'history_s': Spec('float', lo=0.0), 'catch_up_frames': Spec('int', lo=0),
    'max_gap': Spec('float', lo=0.0, lo_open=True),
    'gate': {'chi2': Spec('float', lo=0.0, lo_open=True),
             'position_floor_m': Spec('float', lo=0.0),
             'rotation_floor_deg': Spec('float', lo=0.0), 'min_inliers': Spec('int', lo=4),
             'min_inlier_ratio': Spec('float', lo=0.0, hi=1.0),
             'min_coverage': Spec('float', lo=0.0, hi=1.0)},
    'tracker': tracker_.schema,
}


@dataclass
class Estimate:
    """What the localizer says about one frame (camera-to-world, quaternion x y z w)."""

    stamp: float
    state: str                              # one of STATES
    source: str                             # one of SOURCES: what measured this pose
    publish: bool                           # goes out on pose / pose_with_covariance / TF
    position: np.ndarray | None = None      # (3,) m
    quaternion: np.ndarray | None = None    # (4,) x y z w
    covariance: np.ndarray | None = None    # (6, 6) x y z, rotation about world x y z
    reason: str = ''                        # why this state (and why not published)
    inliers: int = 0                        # tracked (or refined) PnP inliers of this frame
    refinement: str = ''                    # verdict on a refinement handled this frame


@dataclass
class _Pose:
    """A pose the localizer holds at a stamp, with what carries it to another stamp."""

    stamp: float
    T: np.ndarray                           # 4x4 camera-to-world
    cov: np.ndarray                         # 6x6, calibrated
    net: tuple | None = None                # the network's (position, quaternion, cov) then
    odom: tuple | None = None               # the camera in the odometry frame then
    kind: str = 'tracked'


@dataclass
class _Pending:
    """A refinement waiting for the tracking thread (its seed is built already)."""

    pose: _Pose
    seed: Seed | None
    inliers: int
    verdict: str = ''


def rotation_vector(R_33: np.ndarray) -> np.ndarray:
    """Axis-angle vector of a rotation matrix (radians; OpenCV's Rodrigues, robust at pi)."""
    return cv2.Rodrigues(np.asarray(R_33, np.float64))[0].ravel()


def pose_mahalanobis2(T_a_44: np.ndarray, cov_a_66: np.ndarray, T_b_44: np.ndarray,
                      cov_b_66: np.ndarray, floor_m: float = 0.0, floor_rad: float = 0.0
                      ) -> float:
    """Squared Mahalanobis distance between two 6-DoF poses with independent errors.

    The difference is the position difference and the rotation ``R_a R_b^T`` as a vector
    about the world axes (the covariance convention of the whole package); the floors are
    added as independent noise to both sides (what neither covariance models: the map's and
    the ground truth's own errors).
    """
    e = np.concatenate([T_a_44[:3, 3] - T_b_44[:3, 3],
                        rotation_vector(T_a_44[:3, :3] @ T_b_44[:3, :3].T)])
    S = np.asarray(cov_a_66, np.float64) + np.asarray(cov_b_66, np.float64)
    S = S + np.diag([2.0 * floor_m ** 2] * 3 + [2.0 * floor_rad ** 2] * 3)
    try:
        return float(e @ np.linalg.solve(S, e))
    except np.linalg.LinAlgError:
        return math.inf


def _pose(position: np.ndarray, quaternion: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return (np.asarray(position, np.float64).copy(), np.asarray(quaternion, np.float64).copy())


def _net(position: np.ndarray, quaternion: np.ndarray, covariance: np.ndarray | None
         ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Return the network's pose with its (calibrated) covariance: what dead reckoning carries."""
    cov = np.diag([1e6] * 3 + [1e3] * 3) if covariance is None else \
        np.asarray(covariance, np.float64).copy()
    return (*_pose(position, quaternion), cov)


class Localizer:
    """Tracking, gated refinements and dead reckoning -> one :class:`Estimate` per frame.

    ``lmap``: the :class:`~camreloc_ros.core.localization.map_file.LocalizationMap` (its
    points for tracking, its covariance calibration). See the module docstring for the states.
    """

    def __init__(self, lmap: Any, conf: dict | None = None):
        self.conf = merge_conf(default_conf, conf)
        check_conf(self.conf, schema)
        self.map = lmap
        self.tracker = Tracker(lmap, self.conf['tracker'])
        self._lock = threading.Lock()    # the pending refinement and the counters
        self._pending: _Pending | None = None
        self.stats = {'frames': 0, 'tracked': 0, 'refinements': 0, 'accepted': 0,
                      'rejected': 0, 'relocalizations': 0, 'lost': 0, 'dead_reckoning': 0,
                      'time_jumps': 0, 'resets': 0}
        self.last_rejection = ''
        self.reset('start', count=False)

    # ---- state ------------------------------------------------------------------------
    def reset(self, why: str = '~/reset', count: bool = True) -> None:
        """Forget everything: ``not_localized`` until ``confirmations`` refinements agree."""
        with self._lock:
            self._pending = None
            if count:
                self.stats['resets'] += 1
        self.tracker.reset()
        self.state = 'not_localized'
        self.state_since: float | None = None
        self.reason = f'not localized yet ({why}): waiting for consistent refinements'
        self.confirmed = False
        self._candidate: _Pose | None = None    # unconfirmed refinement (tracked tentatively)
        self._agreeing = 0                      # consistent refinements in the candidate's chain
        self._challenger: _Pose | None = None   # refinement that disagreed with the track
        self._last_good: _Pose | None = None    # last localized (tracked / refined) pose
        self._history: deque[_Pose] = deque()   # per-frame estimates, for late refinements
        self._frames: deque[tuple] = deque()    # (stamp, net, odom) per frame
        with self._lock:
            self._grays: deque[tuple] = deque(maxlen=self.conf['catch_up_frames'])
        self._last_stamp: float | None = None
        self._epoch: float = -math.inf          # refinements of frames before it are stale

    def calibrated(self, kind: str, cov: np.ndarray) -> np.ndarray:
        """``cov`` of a ``kind`` (refined, tracked) pose as the map's calibration scales it."""
        calibrate = getattr(self.map, 'calibrated_covariance', None)
        cov = np.asarray(cov, np.float64)
        return cov if calibrate is None else np.asarray(calibrate(kind, cov), np.float64)

    def map_prior(self) -> tuple[np.ndarray, np.ndarray] | None:
        """Return the localized pose ``(position, quaternion)`` a refinement may start from.

        While ``localized``, the held pose is centimetres from the truth, so the refiner
        picks the map images posed nearest to it instead of running retrieval (a trunk pass
        beside the network on the same cores). Otherwise None: relocalizing needs retrieval.
        Safe from the refiner's thread: the held pose is replaced, never changed in place.
        """
        last = self._last_good
        if self.state != 'localized' or last is None:
            return None
        return last.T[:3, 3].copy(), matrix_to_quat(last.T[:3, :3])

    def counters(self) -> dict:
        """Return a copy of the frame, tracking and refinement counts (thread-safe)."""
        with self._lock:
            return dict(self.stats)

    # ---- refinements (any thread) -----------------------------------------------------
    def submit(self, image: np.ndarray, stamp: float, refinement: Any,
               net_position: np.ndarray, net_quaternion: np.ndarray,
               net_covariance: np.ndarray | None = None, odom: tuple | None = None
               ) -> str | None:
        """Hand over a refinement of the frame ``image`` stamped ``stamp``.

        Returns why it is refused at once (a fallback, or its inlier geometry), else None:
        it is then judged against the pose held at its frame by the next :meth:`process`.
        ``net_*``: the network's pose (and calibrated covariance) of that frame; ``odom``:
        the camera's pose in the odometry frame then, or None.
        """
        g = self.conf['gate']
        why = None
        if not refinement.refined:
            why = f'fell back: {refinement.reason}'
        elif refinement.inliers < g['min_inliers']:
            why = f'{refinement.inliers} inliers < {g["min_inliers"]}'
        elif refinement.inlier_ratio < g['min_inlier_ratio']:
            why = f'inlier ratio {refinement.inlier_ratio:.2f} < {g["min_inlier_ratio"]:g}'
        elif refinement.coverage < g['min_coverage']:
            why = f'inliers cover {refinement.coverage:.2f} of the image < {g["min_coverage"]:g}'
        with self._lock:
            self.stats['refinements'] += 1
            if why is not None:
                self.stats['rejected'] += refinement.refined
                if refinement.refined:
                    self.last_rejection = why
                return why
        T = matrix_from_pose(refinement.position, refinement.quaternion)
        seed = None
        if len(refinement.inlier_xy) >= 4:
            seed = self.tracker.make_seed(image, stamp, T, refinement.inlier_xy,
                                          refinement.inlier_points)
        pose = _Pose(float(stamp), T, self.calibrated('refined', refinement.covariance),
                     _net(net_position, net_quaternion, net_covariance),
                     None if odom is None else _pose(*odom), 'refined')
        if seed is not None:
            pose, seed = self._catch_up(pose, seed)
        with self._lock:
            self._pending = _Pending(pose, seed, int(refinement.inliers))
        return None

    def _catch_up(self, pose: _Pose, seed: Seed) -> tuple[_Pose, Seed]:
        """Track a late refinement through the frames seen since, up to the newest one.

        Live, a refinement finishes ~0.5 s after its frame: a camera moving 5-10 cm a frame
        has moved too far for one KLT step from the refined frame to the current one. So
        the refiner's thread (not the frame worker: this costs a few ms a frame) tracks it
        frame by frame through the buffered grey images with a tracker of its own, and hands
        over the pose and tracks of the newest frame it reached. Where tracking breaks off,
        what it reached so far is handed over.
        """
        tracker = Tracker(self.map, dict(self.tracker.conf, max_failures=0))
        s0 = seed.scale   # the catch-up runs on the buffered images, at the tracking scale
        small = (seed.gray.shape[1], seed.gray.shape[0])
        tracker.seed_from(Seed(seed.stamp, seed.T_c2w_44, seed.gray, 1.0,
                               (seed.xy_n2 + 0.5) * s0 - 0.5, seed.pts_n3, small))
        done = seed.stamp
        for _ in range(self.conf['catch_up_frames']):
            with self._lock:
                later = [g for g in self._grays if g[0] > done]
            if not later:
                break
            stamp, gray, s, K_s, net, odom = later[0]
            prior = None
            if odom is not None and pose.odom is not None:
                prior = np.linalg.inv(matrix_from_pose(*pose.odom)) @ matrix_from_pose(*odom)
            res = tracker.track(gray, stamp, K_s, prior)
            if not res.ok:
                break
            xy = (tracker._xy + 0.5) / s - 0.5   # tracking scale -> image pixels
            seed = Seed(stamp, res.T_c2w_44, gray, s, xy, tracker._pts.copy(), seed.size,
                        tracker.velocity)
            pose = _Pose(stamp, res.T_c2w_44,
                         self.calibrated('tracked', res.covariance_66), net, odom, 'refined')
            done = stamp
        return pose, seed

    # ---- every frame (the tracking thread) ---------------------------------------------
    def process(self, image: np.ndarray, stamp: float, K: np.ndarray,
                net_position: np.ndarray, net_quaternion: np.ndarray,
                net_covariance: np.ndarray, refinement: Any = None,
                odom: tuple | None = None) -> Estimate:
        """Localize one frame; ``refinement``: this frame's own (offline, every frame).

        ``odom``: the camera's ``(position, quaternion)`` in the odometry frame at ``stamp``,
        or None. The network's pose is the last resort of dead reckoning only: it is never
        published as localized.
        """
        stamp = float(stamp)
        net = _net(net_position, net_quaternion, net_covariance)
        odom = None if odom is None else _pose(*odom)
        if self._last_stamp is not None and stamp < self._last_stamp:
            jump = self._last_stamp - stamp
            self.reset(f'time jumped back {jump:.3f} s', count=False)
            self._epoch = stamp
            with self._lock:
                self.stats['time_jumps'] += 1
        gap = None if self._last_stamp is None else stamp - self._last_stamp
        self._last_stamp = stamp
        with self._lock:
            self.stats['frames'] += 1
        if gap is not None and gap > self.conf['max_gap']:
            # a break in the stream (another sequence, a paused bag, a carried robot):
            # nothing measured the motion across it, so nothing is carried over it
            lost = self.confirmed
            self.reset(f'{gap:.2f} s without frames', count=False)
            self._last_stamp, self._epoch = stamp, stamp
            with self._lock:
                self.stats['lost'] += lost
        if refinement is not None:
            self.submit(image, stamp, refinement, net_position, net_quaternion,
                        net_covariance, odom)
        with self._lock:
            pending, self._pending = self._pending, None
        if pending is not None and not self._epoch <= pending.pose.stamp <= stamp:
            pending = None   # refined before a jump or a gap: not this stretch's
        self._remember_frame(stamp, net, odom)
        if self.conf['catch_up_frames'] > 0:
            gray, s = self.tracker._gray(image)
            K_s = np.asarray(K, np.float64).copy()
            K_s[:2] *= s
            K_s[:2, 2] += 0.5 * s - 0.5
            with self._lock:
                self._grays.append((stamp, gray, s, K_s, net, odom))
        same = pending is not None and abs(pending.pose.stamp - stamp) < 1e-9
        verdict = ''
        if pending is not None and not same:   # a late refinement: judged at its own frame
            verdict = self._judge(pending, self._held_at(pending.pose.stamp))
        refresh = pending.seed if pending is not None and not same and \
            verdict in ('accepted', 'candidate', 'relocalized') else None
        res = None
        if self.tracker.seeded or refresh is not None:
            res = self.tracker.track(image, stamp, K, self._motion_prior(stamp, odom, refresh),
                                     refresh=refresh)
        held = None
        if res is not None and res.ok:
            with self._lock:
                self.stats['tracked'] += 1
            held = _Pose(stamp, res.T_c2w_44, self.calibrated('tracked', res.covariance_66),
                         net, odom, 'tracked')
        if same:   # this frame's own refinement: judged against what tracking made of it
            verdict = self._judge(pending, held or self._carried(stamp, net, odom))
            if verdict in ('accepted', 'candidate', 'relocalized'):
                held = pending.pose
                if pending.seed is not None:
                    self.tracker.seed_from(pending.seed)
        est = self._decide(stamp, held, net, odom, res)
        est.refinement = verdict
        if held is not None and held.kind == 'refined':
            est.inliers = pending.inliers
        return est

    def _remember_frame(self, stamp: float, net: tuple, odom: tuple | None) -> None:
        self._frames.append((stamp, net, odom))
        horizon = stamp - self.conf['history_s']
        while self._frames and self._frames[0][0] < horizon:
            self._frames.popleft()
        while self._history and self._history[0].stamp < horizon:
            self._history.popleft()

    def _motion_prior(self, stamp: float, odom: tuple | None,
                      refresh: Seed | None) -> np.ndarray | None:
        """Odometry's motion since the tracker's last frame (or the seed's), else None."""
        if odom is None:
            return None
        start = self.tracker.last_stamp
        if refresh is not None and (start is None or refresh.stamp > start + 1.0):
            start = refresh.stamp
        if start is None:
            return None
        then = self._frame_at(start)
        if then is None or then[1] is None:
            return None
        A0, A1 = matrix_from_pose(*then[1]), matrix_from_pose(*odom)
        return np.linalg.inv(A0) @ A1

    def _held_at(self, stamp: float) -> _Pose | None:
        """Return the estimate held at ``stamp`` (tracked, refined or carried), or None."""
        for pose in reversed(self._history):
            if abs(pose.stamp - stamp) < 1e-9:
                return pose
            if pose.stamp < stamp:
                break
        return None

    def _carry(self, ref: _Pose, stamp: float, net: tuple, odom: tuple | None
               ) -> _Pose | None:
        """Carry ``ref`` to a later frame by odometry, else by the network's motion."""
        pos, quat = ref.T[:3, 3], matrix_to_quat(ref.T[:3, :3])
        if odom is not None and ref.odom is not None:
            p, q, c = compose_correction(pos, quat, ref.cov, *ref.odom, *odom,
                                         self.conf['odom_noise'])
            kind = 'odom'
        elif net is not None and ref.net is not None:
            p, q, c = compose_correction(pos, quat, ref.cov, *ref.net[:2], *net[:2],
                                         self.conf['motion_noise'])
            # the network's frame-to-frame error is as large as its absolute error (its
            # errors are not one slowly varying bias): both ends' covariances add
            c = c + ref.net[2] + net[2]
            kind = 'network'
        else:
            return None
        return _Pose(stamp, matrix_from_pose(p, q), c, net, odom, kind)

    def _carried(self, stamp: float, net: tuple, odom: tuple | None) -> _Pose | None:
        """Return the last localized pose (confirmed) or the candidate carried to ``stamp``."""
        ref = self._last_good if self.confirmed else self._candidate
        return None if ref is None else self._carry(ref, stamp, net, odom)

    def _consistent(self, a: _Pose, b: _Pose | None) -> tuple[bool, float]:
        if b is None:
            return False, math.inf
        g = self.conf['gate']
        d2 = pose_mahalanobis2(a.T, a.cov, b.T, b.cov, g['position_floor_m'],
                               math.radians(g['rotation_floor_deg']))
        return d2 <= g['chi2'], d2

    def _frame_at(self, stamp: float) -> tuple | None:
        """Return the ``(net, odom)`` remembered for the frame stamped ``stamp``, or None."""
        return next(((n, o) for s, n, o in reversed(self._frames) if abs(s - stamp) < 1e-9),
                    None)

    def _judge(self, pending: _Pending, held: _Pose | None) -> str:
        """Accept, reject, or keep as a candidate a refinement, against the pose ``held``."""
        new = pending.pose
        if self.confirmed:
            if held is None and self._last_good is not None:
                held = self._carry(self._last_good, new.stamp, new.net, new.odom)
            ok, d2 = self._consistent(new, held)
            if ok or held is None:
                self._challenger = None
                return self._count('accepted')
            challenger = self._challenger
            if challenger is not None:
                carried = self._carry(challenger, new.stamp, new.net, new.odom)
                agree, _ = self._consistent(new, carried)
                if agree:   # two refinements agree against the track: it is the track
                    self.tracker.reset()
                    self._history.clear()
                    return self._localize(new, 'relocalized')
            self._challenger = new
            with self._lock:
                self.stats['rejected'] += 1
                self.last_rejection = (f'refinement at {new.stamp:.3f} s is {math.sqrt(d2):.1f} '
                                       'sigma from the tracked pose')
            return 'rejected'
        candidate = self._candidate
        if candidate is not None:
            ref = held if held is not None and held.kind in ('tracked', 'refined') else \
                self._carry(candidate, new.stamp, new.net, new.odom)
            agree, _ = self._consistent(new, ref)
            if agree and not self._informative(ref):
                agree = False   # carried by the network alone: no check at all (1 m std)
            if agree:
                self._agreeing += 1
                if self._agreeing >= self.conf['confirmations']:
                    return self._localize(new, 'accepted')
                self._candidate = new
                return 'candidate'
        self._candidate = new   # the first (or a disagreeing) one: track it tentatively
        self._agreeing = 1
        self.tracker.reset()
        if self.conf['confirmations'] <= 1:
            return self._localize(new, 'accepted')
        return 'candidate'

    def _informative(self, ref: _Pose | None) -> bool:
        """Whether ``ref`` is precise enough to confirm a refinement by agreeing with it.

        A candidate carried by the network's motion has a metre-scale covariance: anything
        agrees with it, so agreement confirms nothing. The bound is what may be published.
        """
        if ref is None:
            return False
        std_m = math.sqrt(max(float(np.linalg.eigvalsh(ref.cov[:3, :3]).max()), 0.0))
        return std_m <= self.conf['max_position_std']

    def _count(self, verdict: str) -> str:
        with self._lock:
            self.stats['accepted'] += 1
        return verdict

    def _localize(self, new: _Pose, verdict: str) -> str:
        """Become (or stay, relocalized) ``localized`` at the refinement ``new``."""
        self._candidate = self._challenger = None
        self.confirmed, self._last_good = True, new
        with self._lock:
            self.stats['relocalizations'] += 1
        return self._count(verdict)

    def _decide(self, stamp: float, held: _Pose | None, net: tuple, odom: tuple | None,
                res: Any) -> Estimate:
        """Turn what this frame got into its state (and remember it for late refinements)."""
        conf = self.conf
        if held is not None and self.confirmed:
            self._last_good = held
            self._history.append(held)
            return self._estimate(stamp, 'localized', held.kind, True, held,
                                  f'{held.kind} against the map',
                                  res.inliers if res is not None and res.ok else 0)
        if held is not None:   # tentative: tracked from an unconfirmed refinement
            self._history.append(held)
            if self._candidate is not None:
                self._candidate = held   # carry the candidate on with its track
            return self._estimate(stamp, 'not_localized', held.kind, False, held,
                                  f'{held.kind} from one refinement: waiting for '
                                  f'{conf["confirmations"]} consistent ones')
        why = res.reason if res is not None else 'not tracking'
        last = self._last_good
        if self.confirmed and last is not None and stamp - last.stamp <= conf['lost_after']:
            carried = self._carry(last, stamp, net, odom)
            if carried is not None:
                self._history.append(carried)
                with self._lock:
                    self.stats['dead_reckoning'] += 1
                std_m = math.sqrt(max(np.linalg.eigvalsh(carried.cov[:3, :3]).max(), 0.0))
                std_deg = math.degrees(math.sqrt(max(
                    np.linalg.eigvalsh(carried.cov[3:, 3:]).max(), 0.0)))
                publish = (std_m <= conf['max_position_std']
                           and std_deg <= conf['max_rotation_std'])
                text = (f'tracking failed ({why}): carried by {carried.kind} for '
                        f'{stamp - last.stamp:.2f} s, std {std_m:.3f} m / {std_deg:.1f} deg')
                if not publish:
                    text += (f' (over max_position_std {conf["max_position_std"]:g} m or '
                             f'max_rotation_std {conf["max_rotation_std"]:g} deg: not published)')
                return self._estimate(stamp, 'dead_reckoning', carried.kind, publish, carried,
                                      text)
        if self.confirmed:   # lost: start over
            self.confirmed = False
            self._candidate = None
            with self._lock:
                self.stats['lost'] += 1
        if self._candidate is not None and stamp - self._candidate.stamp > conf['lost_after']:
            self._candidate = None
        text = (f'not localized: {why}; waiting for {conf["confirmations"]} consistent '
                'refinements')
        if self.state != 'not_localized' or self.reason.startswith('lost'):
            text = (f'lost: tracking and refinement failed for {conf["lost_after"]:g} s '
                    f'({why}); waiting for {conf["confirmations"]} consistent refinements')
        return self._estimate(stamp, 'not_localized', 'none', False, None, text)

    def _estimate(self, stamp: float, state: str, source: str, publish: bool,
                  pose: _Pose | None, reason: str, inliers: int = 0) -> Estimate:
        if state != self.state or self.state_since is None:
            self.state, self.state_since = state, stamp
        self.reason = reason
        if pose is None:
            return Estimate(stamp, state, source, publish, reason=reason, inliers=inliers)
        return Estimate(stamp, state, source, publish, pose.T[:3, 3].copy(),
                        matrix_to_quat(pose.T[:3, :3]), pose.cov.copy(), reason, inliers)


__all__ = ['default_conf', 'Estimate', 'Localizer', 'pose_mahalanobis2', 'rotation_vector',
           'schema', 'SOURCES', 'STATES']
