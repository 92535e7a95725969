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

"""The localizer in the robot's TF tree (REP 105), as nav2_amcl is: what the node calls.

:class:`FrameIO` turns the camera pose into the base_frame pose (extrinsics from TF at the
image stamp, covariance propagated), sends TF (``tf_mode``: ``camera`` leaf frame, or AMCL's
future-dated ``map -> odom``), refuses to give a frame a second parent, and runs the Nav2
bootstrap (``~/localize`` -> the next pose on ``initialpose``; ``initialpose`` in -> the jump
gate's reference). TF is read through :mod:`camreloc_ros.ros.tf_io`. Nothing here raises in a
callback or the worker: a missing transform is counted (``tf_missing``), explained in full at
its first miss (both frames, the image stamp, what TF lacks, and both fixes: publish it, or
change the parameter), then logged every 5 s with the count; :meth:`FrameIO.problem` and the
``tf_missing_*`` / ``tf_fix`` diagnostics say the same while it lasts, because a first run
with the default ``base_frame`` and no robot TF otherwise answers nothing without saying why.
"""

import dataclasses
import math
import threading
import time
from typing import Any, Callable, Optional

from geometry_msgs.msg import PoseWithCovarianceStamped
import numpy as np
from rclpy.qos import QoSProfile
from std_msgs.msg import Header
from std_srvs.srv import Trigger

from camreloc_ros.core.inference.engine import Prediction
from camreloc_ros.core.robot.tf_tree import (base_covariance, base_pose, ExtrapolationError,
                                             map_to_odom, parent_conflict, Pose, strip_frame,
                                             TransformError)
from camreloc_ros.core.geometry import unit_quat_problem
from camreloc_ros.core.robot.messages import NS
from camreloc_ros.ros.conversions import (ns_to_stamp, pose_with_covariance_stamped, stamp_to_ns,
                                          stamp_to_sec, transform_stamped)
from camreloc_ros.ros.qos import LATCHED_QOS, OUTPUT_QOS
from camreloc_ros.ros.tf_io import (EXTRINSICS, LOG_PERIOD_S, make_lookup, make_sender,
                                    MissingTransforms, ODOMETRY, TF_MODES)


@dataclasses.dataclass
class FrameConfig:
    """The frame parameters of the node (read in on_configure)."""

    map_frame: str = 'map'
    base_frame: str = 'base_link'
    odom_frame: str = 'odom'
    camera_pose_frame: str = 'camreloc_camera'
    tf_mode: str = 'camera'
    transform_tolerance: float = 1.0
    transform_timeout: float = 0.1
    latched_pose: bool = False

    @classmethod
    def from_parameters(cls, conf: dict) -> 'FrameConfig':
        """From the node's configuration dict; ``publish_tf: false`` is ``tf_mode: none``."""
        names = {f.name for f in dataclasses.fields(cls)}
        out = cls(**{k: v for k, v in conf.items() if k in names})
        for name in ('map_frame', 'base_frame', 'odom_frame', 'camera_pose_frame'):
            setattr(out, name, strip_frame(getattr(out, name)))
            if not getattr(out, name):
                raise ValueError(f"parameter '{name}' is empty: expected a TF frame id")
        if not conf.get('publish_tf', True):
            out.tf_mode = 'none'
        if out.tf_mode not in TF_MODES:
            raise ValueError(f"parameter 'tf_mode' is {out.tf_mode!r}: expected one of "
                             f'{", ".join(TF_MODES)}')
        if out.tf_mode == 'map_to_odom':
            frames = {'map_frame': out.map_frame, 'odom_frame': out.odom_frame,
                      'base_frame': out.base_frame}
            if len(set(frames.values())) < 3:
                raise ValueError('tf_mode map_to_odom needs three different frames, got '
                                 + ', '.join(f'{k} {v!r}' for k, v in frames.items()))
        if out.tf_mode == 'camera' and out.camera_pose_frame == out.map_frame:
            raise ValueError(f'camera_pose_frame and map_frame are both '
                             f'{out.map_frame!r}: a frame cannot be its own parent')
        return out

    @property
    def published_edge(self) -> Optional[tuple[str, str]]:
        """``(parent, child)`` of the transform this node publishes (None: none)."""
        if self.tf_mode == 'camera':
            return self.map_frame, self.camera_pose_frame
        if self.tf_mode == 'map_to_odom':
            return self.map_frame, self.odom_frame
        return None


class FrameIO:
    """Frames, TF and the Nav2 bootstrap of one configured localizer.

    Made in on_configure, closed in cleanup. ``seed(stamp_s, position, quaternion)`` is
    called with each valid ``initialpose`` (the node seeds its jump gate with it).
    """

    def __init__(self, node: Any, conf: dict,
                 seed: Callable[[float, np.ndarray, np.ndarray], None],
                 lookup: Any = None) -> None:
        self.node = node
        self.conf = FrameConfig.from_parameters(conf)
        if not conf.get('publish_tf', True) and conf.get('tf_mode') != 'none':
            node.get_logger().warning('publish_tf is deprecated: publish_tf false turns TF '
                                      f'off (tf_mode {conf.get("tf_mode")} ignored); set '
                                      'tf_mode: none instead')
        self._seed = seed
        self._created = time.monotonic()   # the listener hears TF from here on
        self._lock = threading.Lock()
        self.tf_missing = 0
        self.initialposes_sent = 0
        self.initialposes_received = 0
        self.refused: Optional[str] = None        # why TF is not published (second parent)
        self._checked = False
        self._localize_requested = False
        self._last_map_odom: Optional[Pose] = None
        self._log_times: dict[str, float] = {}
        # what is missing in TF now, explained for the log, diagnostics and problem()
        self.missing = MissingTransforms(node.get_fully_qualified_name(), self._created)
        self.lookup = lookup
        self._send = self._close_sender = None
        self._entities: list[tuple[str, Any]] = []
        try:
            if self.lookup is None:
                self.lookup = make_lookup(node)
            if self.conf.tf_mode != 'none':
                self._send, self._close_sender = make_sender(node)
                if self._send is None:
                    node.get_logger().warning('neither tf2_ros nor tf2_msgs imports: no TF is '
                                              'published (poses still are)')
            self._entities = [
                ('pub', node.create_lifecycle_publisher(PoseWithCovarianceStamped,
                                                        'initialpose', OUTPUT_QOS)),
                ('sub', node.create_subscription(PoseWithCovarianceStamped, 'initialpose',
                                                 self._on_initialpose, OUTPUT_QOS)),
                ('srv', node.create_service(Trigger, '~/localize', self._on_localize)),
            ]
        except Exception:
            self.close()
            raise

    @property
    def pose_qos(self) -> QoSProfile:
        """Return the ``pose`` topics' QoS: amcl_pose's with ``latched_pose``."""
        return LATCHED_QOS if self.conf.latched_pose else OUTPUT_QOS

    def _log(self, key: str, text: str, error: bool = False) -> None:
        now = time.monotonic()
        if now - self._log_times.get(key, -math.inf) >= LOG_PERIOD_S:
            self._log_times[key] = now
            logger = self.node.get_logger()
            (logger.error if error else logger.warning)(text)

    # ---- second parents ------------------------------------------------------------------
    def check_parents(self, wait_s: float = 0.0) -> Optional[str]:
        """Refuse TF output when its child frame already has another parent; the reason.

        ``wait_s``: how long after this object was made (the listener's start) to wait for
        the child to show up in TF (on_configure: the model load usually covers it).
        """
        edge = self.conf.published_edge
        if edge is None or self.lookup is None:
            return None
        parent, child = edge
        remaining = self._created + wait_s - time.monotonic()
        if remaining > 0:
            self.lookup.wait_for_frame(child, remaining)
        self._checked = True
        others = sorted(self.lookup.parents(child) - {parent})
        if others and self.refused is None:
            self.refused = parent_conflict(child, parent, others[0], self.lookup.describe())
            self.node.get_logger().error(f'TF output refused: {self.refused}')
        return self.refused

    # ---- camera -> base --------------------------------------------------------------------
    def _lookup(self, kind: str, target: str, source: str, stamp_ns: int) -> Optional[Pose]:
        """``kind`` (EXTRINSICS, ODOMETRY) at the stamp; a miss is counted and explained."""
        try:
            pose = self.lookup.lookup(target, source, stamp_ns, self.conf.transform_timeout)
        except TransformError as exc:
            with self._lock:
                self.tf_missing += 1
            text = self.missing.miss(kind, target, source, stamp_ns, exc, self.lookup)
            if text is not None:
                self.node.get_logger().warning(f'{text} [tf_missing: {self.tf_missing}]')
            return None
        self._found(kind)
        return pose

    def _found(self, kind: str) -> None:
        text = self.missing.found(kind)
        if text is not None:
            self.node.get_logger().info(text)

    def problem(self) -> Optional[str]:
        """Why the node cannot publish now, in words a first run can act on (None: it can).

        The missing camera extrinsics (no pose at all) before the missing odometry of
        ``map_to_odom`` (poses, no ``map -> odom``) before a refused TF output (second
        parent); a missing transform's text names both frames, the newest image stamp that
        missed it, for how long and how many frames, what TF lacks, and both fixes.
        """
        text = self.missing.problem()
        if text is None and self.refused is not None:
            text = f'no TF output: {self.refused}'
        return text

    def odom_camera(self, header: Header, wait_s: float = 0.0) -> Optional[Pose]:
        """Return the image's camera pose in odom_frame at its stamp (None: not in TF).

        For carrying a refinement forward (``refine.motion``). Waits up to ``wait_s`` only
        when odometry exists but has no sample after the stamp yet (it usually arrives a few
        ms later); a robot without odometry costs nothing and is not counted as
        ``tf_missing``: it is a normal case.
        """
        lookup = self.lookup
        if lookup is None:
            return None
        camera = strip_frame(header.frame_id) or self.conf.base_frame
        args = (self.conf.odom_frame, camera, stamp_to_ns(header.stamp))
        try:
            return lookup.lookup(*args, 0.0)
        except ExtrapolationError:
            if wait_s <= 0:
                return None
        except TransformError:
            return None
        try:
            return lookup.lookup(*args, wait_s)
        except TransformError:
            return None

    def to_base(self, header: Header, pred: Prediction) -> Optional[Prediction]:
        """Turn the camera pose ``pred`` into base_frame's (None: no extrinsics in TF).

        The camera frame is the image's ``header.frame_id``; empty or equal to base_frame
        means the camera is base_frame (identity extrinsics).
        """
        camera = strip_frame(header.frame_id)
        if not camera or camera == self.conf.base_frame:
            self._found(EXTRINSICS)   # the camera is the base now: nothing is missing
            return pred
        extrinsics = self._lookup(EXTRINSICS, self.conf.base_frame, camera,
                                  stamp_to_ns(header.stamp))
        if extrinsics is None:
            return None
        cam = (pred.position, pred.quaternion)
        position, quaternion = base_pose(cam, extrinsics)
        return dataclasses.replace(pred, position=position, quaternion=quaternion,
                                   covariance=base_covariance(pred.covariance, cam, extrinsics))

    # ---- TF out ---------------------------------------------------------------------------
    def send_tf(self, header: Header, camera: Prediction, base: Prediction) -> None:
        """Publish the TF of ``tf_mode`` for one accepted pose (header: image stamp, map)."""
        if self._send is None or self.refused is not None:
            return
        if not self._checked and self.check_parents() is not None:   # the first frame
            return
        if self.conf.tf_mode == 'camera':
            self._send(transform_stamped(header, self.conf.camera_pose_frame, camera.position,
                                         camera.quaternion))
            return
        odom_base = self._lookup(ODOMETRY, self.conf.odom_frame, self.conf.base_frame,
                                 stamp_to_ns(header.stamp))
        if odom_base is None:
            return
        self._last_map_odom = map_to_odom((base.position, base.quaternion), odom_base)
        self._send_map_odom(header)

    def republish(self, header: Header) -> None:
        """map_to_odom: re-send the last ``map -> odom`` for a frame without a new pose.

        As AMCL does on each scan that does not update the filter, so the transform (valid
        until stamp + transform_tolerance) does not expire while poses are gated.
        """
        if (self.conf.tf_mode == 'map_to_odom' and self._last_map_odom is not None
                and self._send is not None and self.refused is None):
            self._send_map_odom(header)

    def _send_map_odom(self, header: Header) -> None:
        expires = stamp_to_ns(header.stamp) + int(round(self.conf.transform_tolerance * NS))
        position, quaternion = self._last_map_odom
        self._send(transform_stamped(Header(stamp=ns_to_stamp(expires),
                                            frame_id=self.conf.map_frame),
                                     self.conf.odom_frame, position, quaternion))

    # ---- Nav2 bootstrap -------------------------------------------------------------------
    def _on_localize(self, request: Trigger.Request, response: Trigger.Response
                     ) -> Trigger.Response:
        if not getattr(self.node, 'is_active', False):
            response.success, response.message = False, 'not active: no pose to publish'
            return response
        with self._lock:
            self._localize_requested = True
        topic = self._entities[0][1].topic_name
        response.success = True
        response.message = f'the next accepted pose will be published on {topic}'
        return response

    def after_publish(self, header: Header, base: Prediction) -> None:
        """Publish ``base`` on ``initialpose`` when ``~/localize`` asked for it."""
        with self._lock:
            if not self._localize_requested:
                return
            self._localize_requested = False
            self.initialposes_sent += 1
        pub = self._entities[0][1]
        pub.publish(pose_with_covariance_stamped(header, base.position, base.quaternion,
                                                 base.covariance))
        self.node.get_logger().info(f'localize: published the pose on {pub.topic_name}')

    def _on_initialpose(self, msg: PoseWithCovarianceStamped) -> None:
        frame = strip_frame(msg.header.frame_id)
        if frame != self.conf.map_frame:
            self._log('initialpose', f'ignored an initialpose in frame {frame!r}: expected '
                                     f'map_frame {self.conf.map_frame!r}')
            return
        p, q = msg.pose.pose.position, msg.pose.pose.orientation
        quaternion = np.array([q.x, q.y, q.z, q.w])
        problem = unit_quat_problem(quaternion)
        if problem is not None:
            self._log('initialpose', f'ignored an initialpose: orientation {problem}')
            return
        stamp = stamp_to_sec(msg.header.stamp)
        if stamp == 0:     # unstamped: now, as RViz's 2D Pose Estimate is
            stamp = self.node.get_clock().now().nanoseconds / NS
        with self._lock:
            self.initialposes_received += 1
        self._seed(stamp, np.array([p.x, p.y, p.z]), quaternion / np.linalg.norm(quaternion))

    # ---- diagnostics, cleanup ---------------------------------------------------------------
    def diagnostics(self) -> dict:
        """Values for /diagnostics; re-checks the published frame's parent (timer thread).

        ``tf_missing_transform``, ``tf_missing_since_s``, ``tf_missing_frames``,
        ``tf_missing_stamp``, ``tf_missing_reason`` and ``tf_fix`` describe the transform
        missing now (empty when none), so a monitor shows the fix, not only a count.
        """
        if self.refused is None and self.conf.published_edge is not None:
            self.check_parents()
        return {'tf_mode': self.conf.tf_mode, 'base_frame': self.conf.base_frame,
                'tf_lookup': getattr(self.lookup, 'backend', 'none'),
                'tf_missing': self.tf_missing, **self.missing.values(),
                'tf_refused': self.refused or '',
                'initialposes_sent': self.initialposes_sent,
                'initialposes_received': self.initialposes_received}

    def close(self) -> None:
        """Destroy what was created (safe to call twice)."""
        for kind, entity in self._entities:
            if kind == 'pub':
                self.node.destroy_lifecycle_publisher(entity)
            elif kind == 'sub':
                self.node.destroy_subscription(entity)
            else:
                self.node.destroy_service(entity)
        self._entities = []
        if self._close_sender is not None:
            self._close_sender()
        self._send = self._close_sender = None
        if self.lookup is not None:
            self.lookup.close()
            self.lookup = None
