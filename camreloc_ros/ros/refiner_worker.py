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

"""The live node's map localization: tracking every frame, refining in a thread of its own.

With a ``map`` parameter the localizer runs a
:class:`~camreloc_ros.core.localization.state.Localizer` next to the network. The network's
worker calls :meth:`RefinerWorker.process` for every frame: the frame is tracked against the
map (KLT + PnP, a few ms), and the localizer says what the robot gets: a ``localized`` pose
(tracked or refined), a ``dead_reckoning`` pose carried by odometry or, as the last resort,
by the network's motion (published only while its covariance is under the limits), or
nothing (``not_localized``: the network's pose still goes out on ``~/network_pose``).

Refinement (:class:`~camreloc_ros.core.localization.refiner.Refiner`: retrieval, SIFT,
2D-3D matching, PnP; ~0.5 s on this 2-core machine) runs in this worker's own thread on
the latest frame handed over (older waiting frames are dropped: refinement work is dropped
before frames), at the lowest CPU priority (nice 19) so that it never starves the network's
worker, and while localized at most once every ``refine.period`` seconds. Each result goes
out on ``~/refined_pose`` and is handed to the localizer, which gates it (inlier geometry,
Mahalanobis distance to the pose it held at that frame), catches it up to the newest frame
by tracking, and re-seeds the tracker with it.

``refine.sync`` refines every frame in the network's worker before its pose is published
(tests, evaluation): the localizer then sees each frame's own refinement, as
``camreloc evaluate --map`` runs it offline.

Retrieval runs the map's own descriptor network through ONNX Runtime
(:mod:`camreloc_ros.core.localization.descriptor_onnx`), so a node with ``model:=x.onnx`` and a
map never imports torch; only maps written before it fall back to the ``.pt``'s trunk in
torch.

The query camera's K is the live ``camera_info``'s (:meth:`CameraCheck.intrinsics
<camreloc_ros.ros.camera_check.CameraCheck.intrinsics>`), scaled to the image received; the
map's K only until a calibrated CameraInfo arrives (``refine_intrinsics`` says which). A
stamp going backwards (a bag replayed from an earlier time) resets the localization (as ROS'
time-jump handling clears TF buffers) and drops the waiting frame.
"""

from __future__ import annotations

import math
import os
import threading
import time
from typing import Any, Callable

from geometry_msgs.msg import PoseWithCovarianceStamped
import numpy as np
from std_msgs.msg import Header

from camreloc_ros.core.data.datasets import Intrinsics
from camreloc_ros.core.inference.engine import Prediction
from camreloc_ros.core.inference.live import LatestSlot
from camreloc_ros.core.localization.refiner import pose_neighbours
from camreloc_ros.ros.conversions import pose_with_covariance_stamped, stamp_to_sec

LOG_PERIOD_S = 5.0


class RefinerWorker:
    """Track every frame, refine the latest one in a thread; the localizer decides the pose."""

    def __init__(self, refiner: Any, localizer: Any, publisher: Any, map_frame: str,
                 sync: bool, logger: Any,
                 odom_pose: Callable[[Header, float], Any] | None = None,
                 odom_timeout: float = 0.0,
                 camera: Callable[[], Intrinsics | None] | None = None,
                 period: float = 0.0, nice: int = 19):
        self.refiner = refiner
        self.localizer = localizer
        self.camera = camera   # the live calibration (camera_info), None until it is known
        self.odom_pose = odom_pose
        self.odom_timeout = float(odom_timeout)   # for a sample after the stamp (odometry on)
        self.publisher = publisher
        self.map_frame = map_frame
        self.sync = bool(sync)
        self.period = float(period)   # s between refinements while localized (0: no limit)
        self.nice = int(nice)         # the refiner thread's niceness (Linux)
        self.logger = logger
        self._slot = LatestSlot()          # newest (rgb, header, prediction, odom) to refine
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()   # counters below
        self.refined = 0        # refinements that gave a pose
        self.fallbacks = 0      # refinements that fell back to the network's pose
        self.dropped = 0        # frames replaced by a newer one before the refiner took them
        self.errors = 0
        self.last_inliers = 0
        self.last_reason = 'none yet'
        self.last_seconds = math.nan
        self.last_refined_stamp = math.nan
        self.newest_stamp = math.nan   # newest network frame handed over
        self._last_handed = -math.inf   # stamp of the last frame handed to the refiner
        self.time_jumps = 0     # stamps that went backwards: localization reset
        self.camera_skipped = 0   # frames not refined: camera_info cannot give their K
        self.intrinsics = 'none yet'   # where the last refinement's K came from
        self.priority = 'not started'   # the refiner thread's CPU priority
        self.last_estimate = None
        self._diag_last = (time.monotonic(), 0)

    @classmethod
    def from_conf(cls, node: Any, conf: dict, qos: Any,
                  odom_pose: Callable[[Header, float], Any] | None = None) -> 'RefinerWorker':
        """Load ``conf['map']`` for ``conf['model']`` and create ``~/refined_pose``.

        ``odom_pose(header, timeout_s)``: the camera's pose in the odometry frame at the image
        stamp, or None (:meth:`FrameIO.odom_camera`).

        A map of another scene frame than the network's (an ``.onnx`` model counts as the
        checkpoint it was exported from; files without a frame id pair only with the map's
        own checkpoint) or a corrupt map is a clear error. The map's own ONNX descriptor does
        the retrieval where it has one (no torch); older maps need the ``.pt``. It runs on
        one thread: the refiner's, at the lowest priority.
        """
        from camreloc_ros.core.localization.refiner import Refiner
        from camreloc_ros.core.localization.state import Localizer
        refiner = Refiner.from_files(conf['map'], conf['model'],
                                     {'min_inliers': conf['refine.min_inliers'],
                                      'max_keypoints': conf['refine.max_keypoints']},
                                     device=conf['device'], threads=1)
        publisher = node.create_lifecycle_publisher(PoseWithCovarianceStamped,
                                                    '~/refined_pose', qos)
        localizer = Localizer(refiner.map, {
            'lost_after': conf['localization.lost_after'],
            'max_position_std': conf['localization.max_position_std'],
            'max_rotation_std': conf['localization.max_rotation_std'],
            'confirmations': conf['localization.confirmations'],
            'motion_noise': conf['localization.motion_noise'],
            'odom_noise': conf['localization.odom_noise'], 'max_gap': conf['max_gap'],
            'gate': {'min_inliers': conf['refine.min_inliers']}})
        if refiner.descriptor is not None:   # warm-up: the first live refinement is not slow
            h, w = (int(v) for v in refiner.map.image_size[0][::-1])
            refiner.retrieve(np.zeros((h, w, 3), np.uint8), 1)
        return cls(refiner, localizer, publisher, conf['map_frame'], conf['refine.sync'],
                   node.get_logger(), odom_pose, conf['transform_timeout'],
                   period=conf['refine.period'], nice=conf['refine.nice'])

    def describe(self) -> str:
        """One line for the configure log."""
        mode = 'every frame (sync)' if self.sync else \
            f'latest frame, at most every {self.period:g} s while localized'
        return (f'map {self.refiner.map.path} ({self.refiner.map.describe()}), solver '
                f'{self.refiner.solver}, {mode}; tracking every frame')

    # ---- thread ------------------------------------------------------------------------
    def start(self) -> None:
        """Start the refiner thread (activate); a no-op in sync mode."""
        self._slot.open()
        if not self.sync:
            self._thread = threading.Thread(target=self._loop, name='camreloc_refiner',
                                            daemon=True)
            self._thread.start()

    def stop(self) -> None:
        """Stop the thread; a refinement in progress finishes first (deactivate, cleanup)."""
        self._slot.close()
        if self._thread is not None:
            self._thread.join(timeout=30.0)
            self._thread = None

    def _loop(self) -> None:
        self.priority = lower_priority(self.nice)
        while (job := self._slot.take()) is not None:
            self._refine(*job)

    def reset(self) -> None:
        """Forget the localization (``~/reset``): not_localized until refinements agree."""
        self._slot.discard()
        self.localizer.reset()

    # ---- network worker side ------------------------------------------------------------
    def process(self, rgb: np.ndarray, header: Header, pred: Prediction) -> Any:
        """Localize one frame against the map; return the localizer's Estimate.

        Called by the network's worker right after the engine. The frame is handed to the
        refiner (latest frame) when one is due; in sync mode it is refined first, so the
        localizer judges its own refinement.
        """
        stamp = stamp_to_sec(header.stamp)
        if not math.isnan(self.newest_stamp) and stamp < self.newest_stamp:
            self._slot.discard()   # a frame from before the jump must not be refined
            self._last_handed = -math.inf
            with self._lock:
                self.time_jumps += 1
            self.logger.warning(
                f'time jumped back {self.newest_stamp - stamp:.3f} s (image stamp '
                f'{stamp:.3f} after {self.newest_stamp:.3f}): localization reset, the '
                'waiting frame dropped')
        self.newest_stamp = stamp
        K = self._query_intrinsics(rgb)
        if K is None:
            return None
        odom = self._odom(header)
        refinement = None
        if self.sync:
            refinement = self._refine(rgb, header, pred, odom, K=K, submit=False)
        est = self.localizer.process(rgb, stamp, K, pred.position, pred.quaternion,
                                     pred.covariance, refinement=refinement, odom=odom)
        self.last_estimate = est
        due = est.state != 'localized' or stamp - self._last_handed >= self.period
        if not self.sync and due:
            self._last_handed = stamp
            if self._slot.put((rgb, header, pred, odom)):
                with self._lock:
                    self.dropped += 1
        return est

    def _query_intrinsics(self, rgb: np.ndarray) -> np.ndarray | None:
        """Return the K to refine this image with, or None (counted, logged) when there is none.

        camera_info's calibration scaled to the image; the map's K (today's assumption: the
        same lens) only while no calibrated CameraInfo has arrived. A calibration of another
        aspect ratio than the image cannot be scaled: the frame is not refined.
        """
        h, w = rgb.shape[:2]
        camera = self.camera() if self.camera is not None else None
        try:
            K = self.refiner.intrinsics_for(w, h, camera)
        except ValueError as exc:
            with self._lock:
                self.camera_skipped += 1
                self.last_reason = self.intrinsics = f'not refined: {exc}'
            self.logger.warning(f'not refining: {exc}', throttle_duration_sec=LOG_PERIOD_S)
            return None
        source = ("the map's K (no calibrated camera_info received)" if camera is None else
                  f'camera_info ({camera.width}x{camera.height}, fx {camera.fx:.1f} fy '
                  f'{camera.fy:.1f} cx {camera.cx:.1f} cy {camera.cy:.1f})')
        with self._lock:
            changed, self.intrinsics = source != self.intrinsics, source
        if changed:   # once per calibration, not per frame
            self.logger.info(f'refining {w}x{h} images with the intrinsics of {source}: '
                             f'fx {K[0, 0]:.1f} fy {K[1, 1]:.1f} cx {K[0, 2]:.1f} '
                             f'cy {K[1, 2]:.1f}')
        return K

    def _refine(self, rgb: np.ndarray, header: Header, pred: Prediction, odom: Any,
                K: np.ndarray | None = None, submit: bool = True) -> Any:
        """Refine one frame; publish it and (``submit``) hand it to the localizer."""
        K = self._query_intrinsics(rgb) if K is None else K
        if K is None:
            return None
        position, quaternion, retrieval = pred.position, pred.quaternion, None
        prior = self.localizer.map_prior() if submit else None
        if prior is not None:   # localized: the map images nearest the held pose, no trunk pass
            position, quaternion = prior
            retrieval = pose_neighbours(self.refiner.map.poses_c2w, position, quaternion,
                                        self.refiner.conf['top_k_retrieval'])
        try:
            res = self.refiner.refine(rgb, position, quaternion, pred.covariance, K=K,
                                      retrieval=retrieval)
        except Exception as exc:  # noqa: BLE001 - the refiner must outlive a bad frame
            with self._lock:
                self.errors += 1
            self.logger.error(f'refinement failed: {exc!r}', throttle_duration_sec=LOG_PERIOD_S)
            return None
        stamp = stamp_to_sec(header.stamp)
        with self._lock:
            self.last_inliers = res.inliers
            self.last_reason = res.reason
            self.last_seconds = float(res.times.get('total', math.nan))
            if res.refined:
                self.refined += 1
                self.last_refined_stamp = stamp
            else:
                self.fallbacks += 1
        if res.refined:
            cov = self.localizer.calibrated('refined', res.covariance)
            self.publisher.publish(pose_with_covariance_stamped(
                Header(stamp=header.stamp, frame_id=self.map_frame), res.position,
                res.quaternion, cov))
        if submit:
            self.localizer.submit(rgb, stamp, res, pred.position, pred.quaternion,
                                  pred.covariance, odom)
        return res

    def _odom(self, header: Header) -> Any:
        """Return the camera's pose in odom_frame at the image stamp (odometry in use)."""
        if self.odom_pose is None:
            return None
        odom = self.odom_pose(header, self.odom_timeout)
        return None if odom is None else (np.asarray(odom[0]), np.asarray(odom[1]))

    # ---- diagnostics ----------------------------------------------------------------------
    def diagnostics(self) -> dict:
        """Return the ``localization_*`` and ``refine_*`` values of the node's diagnostics."""
        now = time.monotonic()
        loc = self.localizer
        counts = loc.counters()
        with self._lock:
            done = self.refined + self.fallbacks
            values = {'refine_refined': self.refined, 'refine_fallbacks': self.fallbacks,
                      'refine_dropped_frames': self.dropped, 'refine_errors': self.errors,
                      'refine_last_inliers': self.last_inliers,
                      'refine_last_reason': self.last_reason,
                      'refine_last_ms': f'{self.last_seconds * 1000:.0f}',
                      'refine_intrinsics': self.intrinsics,
                      'refine_camera_skipped': self.camera_skipped,
                      'refine_time_jumps': self.time_jumps,
                      'refine_priority': self.priority}
        last_time, last_done = self._diag_last
        self._diag_last = (now, done)
        values['refine_rate_hz'] = f'{(done - last_done) / max(now - last_time, 1e-6):.2f}'
        age = self.newest_stamp - self.last_refined_stamp
        values['refine_last_age_s'] = 'none' if math.isnan(age) else f'{age:.2f}'
        values['refine_map'] = str(self.refiner.map.path)
        est = self.last_estimate
        since = loc.state_since
        values.update({
            'localization_state': loc.state,
            'localization_reason': loc.reason,
            'localization_time_in_state_s': 'none' if since is None or math.isnan(
                self.newest_stamp) else f'{self.newest_stamp - since:.2f}',
            'localization_source': est.source if est is not None else 'none',
            'localization_tracked_inliers': est.inliers if est is not None else 0,
            'localization_frames': counts['frames'],
            'localization_tracked': counts['tracked'],
            'localization_dead_reckoning': counts['dead_reckoning'],
            'localization_refinements_accepted': counts['accepted'],
            'localization_refinements_rejected': counts['rejected'],
            'localization_last_rejection': loc.last_rejection or 'none',
            'localization_relocalizations': counts['relocalizations'],
            'localization_lost': counts['lost'],
        })
        return values


def lower_priority(nice: int = 19) -> str:
    """Lower the calling thread's CPU priority (Linux: per-thread ``nice``).

    Refinement is what may wait: the network's worker must get its core first, so every
    frame is answered. Elsewhere (no per-thread nice) the thread keeps its priority.
    """
    try:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), int(nice))
        return f'nice {os.getpriority(os.PRIO_PROCESS, threading.get_native_id())}'
    except (AttributeError, OSError) as exc:
        return f'unchanged ({exc})'
