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

"""The live node's PnP refiner: its own thread, the latest frame only, corrections after.

With a ``map`` parameter the localizer runs
:class:`~camreloc_ros.core.localization.refiner.Refiner` next
to the network. The network still answers every frame; after each one its worker hands the
frame (image, stamp, the network's camera pose) to this worker, which keeps only the newest
(older waiting frames are dropped: latest-frame policy) and refines at whatever rate the CPU
allows. Each refined camera pose goes out on ``~/refined_pose`` and becomes the reference of
a :class:`~camreloc_ros.core.localization.correction.PoseCorrector`, which corrects every later
network pose by the motion since the refined frame (odometry from TF, or the network's own relative
pose: ``refine.motion``), before the node turns it into
base_frame's pose and publishes it on ``pose``, ``pose_with_covariance`` and TF.

``refine.sync`` refines every frame in the network's worker before its pose is published
(tests, evaluation): each published pose is then that frame's refinement (or the network's
pose where it fell back), as ``camreloc evaluate --map`` computes it offline.

Retrieval runs the map's own descriptor network through ONNX Runtime
(:mod:`camreloc_ros.core.localization.descriptor_onnx`), so a node with ``model:=x.onnx`` and a
map never imports torch; only maps written before it fall back to the ``.pt``'s trunk in
torch.

The query camera's K is the live ``camera_info``'s (:meth:`CameraCheck.intrinsics
<camreloc_ros.ros.camera_check.CameraCheck.intrinsics>`), scaled to the image received; the
map's K only until a calibrated CameraInfo arrives (``refine_intrinsics`` says which). A
stamp going backwards (a bag replayed from an earlier time) drops the refinement in use and
the waiting frame, as ROS' time-jump handling clears TF buffers: a reference from the
future would otherwise refuse every new refinement until ``~/reset``.
"""

from __future__ import annotations

import dataclasses
import math
import threading
import time
from typing import Any, Callable

from geometry_msgs.msg import PoseWithCovarianceStamped
import numpy as np
from std_msgs.msg import Header

from camreloc_ros.core.data.datasets import Intrinsics
from camreloc_ros.core.inference.engine import Prediction
from camreloc_ros.core.inference.live import LatestSlot
from camreloc_ros.core.localization.correction import PoseCorrector
from camreloc_ros.core.inference.runtimes import live_threads
from camreloc_ros.ros.conversions import pose_with_covariance_stamped, stamp_to_sec

LOG_PERIOD_S = 5.0


class RefinerWorker:
    """Refine the latest frame in a thread; correct the network's poses with the result."""

    def __init__(self, refiner: Any, corrector: PoseCorrector, publisher: Any,
                 map_frame: str, sync: bool, logger: Any,
                 odom_pose: Callable[[Header, float], Any] | None = None,
                 odom_timeout: float = 0.0,
                 camera: Callable[[], Intrinsics | None] | None = None):
        self.refiner = refiner
        self.camera = camera   # the live calibration (camera_info), None until it is known
        self.corrector = corrector
        self.odom_pose = odom_pose if corrector.motion != 'network' else None
        self.odom_timeout = float(odom_timeout)   # for a sample after the stamp (odometry on)
        self.publisher = publisher
        self.map_frame = map_frame
        self.sync = bool(sync)
        self.logger = logger
        self._slot = LatestSlot()          # newest (rgb, header, prediction) to refine
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()   # counters below
        self.refined = 0        # refinements that gave a pose
        self.fallbacks = 0      # refinements that fell back to the network's pose
        self.dropped = 0        # frames replaced by a newer one before the refiner took them
        self.errors = 0
        self.corrected = 0      # network poses corrected by a refinement
        self.corrected_by_odom = 0   # of those, with odometry as the motion since
        self.last_inliers = 0
        self.last_reason = 'none yet'
        self.last_seconds = math.nan
        self.newest_stamp = math.nan   # newest network frame handed over
        self.time_jumps = 0     # stamps that went backwards: refinement and waiting frame dropped
        self.camera_skipped = 0   # frames not refined: camera_info cannot give their K
        self.intrinsics = 'none yet'   # where the last refinement's K came from
        self._diag_last = (time.monotonic(), 0)

    @classmethod
    def from_conf(cls, node: Any, conf: dict, qos: Any,
                  odom_pose: Callable[[Header, float], Any] | None = None) -> 'RefinerWorker':
        """Load ``conf['map']`` for ``conf['model']`` and create ``~/refined_pose``.

        ``odom_pose(header, timeout_s)``: the camera's pose in the odometry frame at the image
        stamp, or None (:meth:`FrameIO.odom_camera`).

        A map of another checkpoint (an ``.onnx`` model counts as the checkpoint it was
        exported from) or a corrupt map is a clear error. The map's own ONNX descriptor does
        the retrieval where it has one (no torch); older maps need the ``.pt``.
        """
        from camreloc_ros.core.localization.refiner import Refiner
        refiner = Refiner.from_files(conf['map'], conf['model'],
                                     {'min_inliers': conf['refine.min_inliers']},
                                     device=conf['device'],
                                     threads=conf['threads'] or live_threads())
        publisher = node.create_lifecycle_publisher(PoseWithCovarianceStamped,
                                                    '~/refined_pose', qos)
        corrector = PoseCorrector(conf['refine.max_age'], conf['refine.motion_noise'],
                                  conf['refine.odom_noise'], conf['refine.motion'])
        return cls(refiner, corrector, publisher, conf['map_frame'], conf['refine.sync'],
                   node.get_logger(), odom_pose, conf['transform_timeout'])

    def describe(self) -> str:
        """One line for the configure log."""
        return (f'map {self.refiner.map.path} ({self.refiner.map.describe()}), solver '
                f'{self.refiner.solver}, {"every frame (sync)" if self.sync else "latest frame"}')

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
        while (job := self._slot.take()) is not None:
            self._refine(*job)

    # ---- network worker side ------------------------------------------------------------
    def process(self, rgb: np.ndarray, header: Header, pred: Prediction) -> Prediction:
        """Hand the frame to the refiner; return the network's camera pose, corrected.

        Called by the network's worker right after the engine, before the camera pose becomes
        base_frame's. In sync mode the frame is refined first, so its own refinement corrects
        it (exactly: no motion since).
        """
        stamp = stamp_to_sec(header.stamp)
        jump = self.corrector.observe(stamp)   # before the frame can refine (sync mode)
        if jump is not None:
            self._slot.discard()   # a frame from before the jump must not become the reference
            with self._lock:
                self.time_jumps += 1
            self.logger.warning(
                f'time jumped back {jump:.3f} s (image stamp {stamp:.3f} after '
                f'{stamp + jump:.3f}): the refinement in use and the waiting frame are '
                'dropped, the next refinement corrects poses again')
        self.newest_stamp = stamp
        job = (rgb, header, pred)
        if self.sync:
            self._refine(*job)
        elif self._slot.put(job):
            with self._lock:
                self.dropped += 1
        # odometry is looked up (and maybe waited for) only when a refinement applies
        odom = self._odom(header) if self.corrector.applies(stamp) else None
        fix = self.corrector.correct(stamp, pred.position, pred.quaternion, odom)
        if fix is None:
            return pred
        with self._lock:
            self.corrected += 1
            self.corrected_by_odom += fix.source == 'odom'
        return dataclasses.replace(pred, position=fix.position, quaternion=fix.quaternion,
                                   covariance=fix.covariance)

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

    def _refine(self, rgb: np.ndarray, header: Header, pred: Prediction) -> None:
        K = self._query_intrinsics(rgb)
        if K is None:
            return
        try:
            res = self.refiner.refine(rgb, pred.position, pred.quaternion, pred.covariance,
                                      K=K)
        except Exception as exc:  # noqa: BLE001 - the refiner must outlive a bad frame
            with self._lock:
                self.errors += 1
            self.logger.error(f'refinement failed: {exc!r}', throttle_duration_sec=LOG_PERIOD_S)
            return
        with self._lock:
            self.last_inliers = res.inliers
            self.last_reason = res.reason
            self.last_seconds = float(res.times.get('total', math.nan))
            if res.refined:
                self.refined += 1
            else:
                self.fallbacks += 1
        if not res.refined:   # the network's pose: nothing to learn, the last one stays
            return
        stamp = stamp_to_sec(header.stamp)
        self.corrector.update(stamp, res.position, res.quaternion, res.covariance,
                              pred.position, pred.quaternion, self._odom(header))
        self.publisher.publish(pose_with_covariance_stamped(
            Header(stamp=header.stamp, frame_id=self.map_frame), res.position, res.quaternion,
            res.covariance))

    def _odom(self, header: Header) -> Any:
        """Return the camera's pose in odom_frame at the image stamp (odometry in use)."""
        return None if self.odom_pose is None else self.odom_pose(header, self.odom_timeout)

    # ---- diagnostics ----------------------------------------------------------------------
    def diagnostics(self) -> dict:
        """Return the ``refine_*`` values of the node's diagnostics, rate over the last period."""
        now = time.monotonic()
        with self._lock:
            done = self.refined + self.fallbacks
            values = {'refine_refined': self.refined, 'refine_fallbacks': self.fallbacks,
                      'refine_dropped_frames': self.dropped, 'refine_errors': self.errors,
                      'refine_corrected_poses': self.corrected,
                      'refine_corrected_by_odom': self.corrected_by_odom,
                      'refine_last_inliers': self.last_inliers,
                      'refine_last_reason': self.last_reason,
                      'refine_last_ms': f'{self.last_seconds * 1000:.0f}',
                      'refine_intrinsics': self.intrinsics,
                      'refine_camera_skipped': self.camera_skipped,
                      'refine_time_jumps': self.time_jumps}
        last_time, last_done = self._diag_last
        self._diag_last = (now, done)
        values['refine_rate_hz'] = f'{(done - last_done) / max(now - last_time, 1e-6):.2f}'
        ref = self.corrector.stamp
        age = math.nan if ref is None else self.newest_stamp - ref
        values['refine_last_age_s'] = 'none' if math.isnan(age) else f'{age:.2f}'
        values['refine_map'] = str(self.refiner.map.path)
        return values
