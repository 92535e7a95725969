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

"""The localizer in the robot's TF tree (REP 105), as nav2_amcl is: lookups, TF out, Nav2.

* :class:`Tf2Lookup` reads TF through tf2_ros (``Buffer`` + ``TransformListener``) where it
  imports (every ROS install); :class:`TopicTfLookup` subscribes to ``/tf`` and
  ``/tf_static`` itself and answers from :class:`~camreloc_ros.core.robot.tf_tree.TransformTree`
  with the same semantics (a PyPI-only venv has no tf2_ros). Both raise the core's
  :class:`~camreloc_ros.core.robot.tf_tree.TransformError` family.
* :class:`MissingTransforms` turns a failed lookup into what a user needs on the first run:
  which transform is missing, since when, how many frames it cost, and how to fix it (publish
  the extrinsics or the odometry, or change the parameter), for the log, the diagnostics and
  the node's state string (``FrameIO.problem()``).
* :mod:`camreloc_ros.ros.frame_io` (``FrameIO``) is what the node calls; it reads TF
  through these lookups and sends it through :func:`make_sender`.

Over 450 lines because the explanations of a miss need what only the lookups know (the
frames TF has, its topics after remapping), so they live next to them.
"""

import dataclasses
import math
import re
import threading
import time
from typing import Any, Callable, Optional

import numpy as np

from camreloc_ros.core.robot.tf_tree import (ConnectivityError, ExtrapolationError,
                                             FrameLookupError, Pose, strip_frame, TransformError,
                                             TransformTree)
from camreloc_ros.core.robot.messages import NS
from camreloc_ros.ros.conversions import stamp_to_ns
from camreloc_ros.ros.qos import TF_QOS, TF_STATIC_QOS

try:  # a robot has tf2_ros; a PyPI-only venv does not
    import tf2_ros
except ImportError:  # pragma: no cover - depends on the install
    tf2_ros = None
try:
    from tf2_msgs.msg import TFMessage
except ImportError:  # pragma: no cover - depends on the install
    TFMessage = None

TF_MODES = ('none', 'camera', 'map_to_odom')
LOG_PERIOD_S = 5.0
_FRAME_LINE = re.compile(r'^Frame (\S+) exists with parent (\S+)\.$', re.MULTILINE)


def _pose_of(transform: Any) -> Pose:
    """``geometry_msgs/Transform`` -> (position, quaternion) arrays."""
    t, r = transform.translation, transform.rotation
    return np.array([t.x, t.y, t.z]), np.array([r.x, r.y, r.z, r.w])


# ---------------------------------------------------------------------------- lookups

class ListenerNode:
    """A small node with its own executor thread, for the TF subscriptions.

    As tf2_ros' C++ ``TransformListener`` does by default (and AMCL with it): TF arrives
    while the localizer's executor is busy or not spinning yet (an autostart configure runs
    in the constructor), so lookups in the worker and the configure-time check see it.
    """

    def __init__(self, node: Any) -> None:
        from rclpy.executors import SingleThreadedExecutor
        from rclpy.node import Node

        context = node.context
        # TF topics as the localizer resolves them (a launch file's /tf:=tf remap for a
        # namespaced robot); no global arguments, so `-r __node:=...` does not rename it too
        self.tf_topic = node.resolve_topic_name('/tf')
        self.tf_static_topic = node.resolve_topic_name('/tf_static')
        self.node = Node(f'{node.get_name()}_tf_listener', namespace=node.get_namespace(),
                         context=context, use_global_arguments=False,
                         start_parameter_services=False, enable_rosout=False)
        self.executor = SingleThreadedExecutor(context=context)
        self.executor.add_node(self.node)
        self._thread = threading.Thread(target=self._spin, name='camreloc_tf_listener',
                                        daemon=True)
        self._thread.start()

    def _spin(self) -> None:
        from rclpy.executors import ExternalShutdownException

        try:
            self.executor.spin()
        except ExternalShutdownException:   # the context was shut down
            pass

    def close(self) -> None:
        """Stop the thread and destroy the node."""
        self.executor.shutdown(timeout_sec=2.0)
        self._thread.join(timeout=5.0)
        self.node.destroy_node()


class TopicTfLookup:
    """``/tf`` + ``/tf_static`` subscriptions over a core :class:`TransformTree`.

    tf2's listener semantics: static transforms hold at every time, dynamic ones are kept for
    ``cache_s`` and interpolated; :meth:`lookup` waits up to ``timeout_s`` for data that has
    not arrived yet (a frame not seen, or a stamp newer than the newest sample).
    """

    backend = 'tf_listener'

    def __init__(self, node: Any, cache_s: float = 10.0) -> None:
        if TFMessage is None:
            raise RuntimeError('neither tf2_ros nor tf2_msgs imports: TF cannot be read')
        self.tree = TransformTree(int(cache_s * NS))
        self._cond = threading.Condition()
        self.bad_transforms = 0
        self._listener = ListenerNode(node)
        sub_node = self._listener.node
        sub_node.create_subscription(TFMessage, self._listener.tf_topic, self._on_tf, TF_QOS)
        sub_node.create_subscription(TFMessage, self._listener.tf_static_topic,
                                     self._on_tf_static, TF_STATIC_QOS)

    def _add(self, msg: Any, static: bool) -> None:
        with self._cond:
            for t in msg.transforms:
                try:
                    self.tree.add(t.header.frame_id, t.child_frame_id, stamp_to_ns(t.header.stamp),
                                  *_pose_of(t.transform), static=static)
                except ValueError:     # an empty or self-referencing frame id: tf2 drops it
                    self.bad_transforms += 1
            self._cond.notify_all()

    def _on_tf(self, msg: Any) -> None:
        self._add(msg, False)

    def _on_tf_static(self, msg: Any) -> None:
        self._add(msg, True)

    def lookup(self, target: str, source: str, stamp_ns: Optional[int],
               timeout_s: float = 0.0) -> Pose:
        """Pose of ``source`` in ``target`` at ``stamp_ns``; raises TransformError."""
        deadline = time.monotonic() + timeout_s
        with self._cond:
            while True:
                try:
                    return self.tree.lookup(target, source, stamp_ns)
                except (FrameLookupError, ConnectivityError, ExtrapolationError) as exc:
                    remaining = deadline - time.monotonic()
                    future = getattr(exc, 'future', True)
                    if remaining <= 0 or not future:   # the past will not arrive
                        raise
                    self._cond.wait(remaining)

    def parents(self, frame: str) -> set[str]:
        """Every parent ``frame`` has had in TF (more than one: publishers disagree)."""
        with self._cond:
            frame = strip_frame(frame)
            seen = set(self.tree.reparented.get(frame, ()))
            parent = self.tree.parent(frame)
            return seen | ({parent} if parent else set())

    def wait_for_frame(self, frame: str, timeout_s: float) -> bool:
        """Wait until ``frame`` has a parent in TF (for the configure-time check)."""
        deadline = time.monotonic() + timeout_s
        with self._cond:
            while self.tree.parent(frame) is None:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._cond.wait(remaining)
        return True

    def describe(self) -> str:
        """Describe the tree, for error messages."""
        with self._cond:
            return self.tree.describe()

    def frames(self) -> set[str]:
        """Every frame TF has named so far (to tell an unknown frame from an empty TF)."""
        with self._cond:
            return self.tree.frames

    @property
    def topics(self) -> tuple[str, str]:
        """The ``/tf`` and ``/tf_static`` names listened to (after remapping)."""
        return self._listener.tf_topic, self._listener.tf_static_topic

    def close(self) -> None:
        """Stop listening (the listener node and its thread go)."""
        self._listener.close()


class Tf2Lookup:  # pragma: no cover - tf2_ros is not installable in the test venv
    """tf2_ros' ``Buffer`` + ``TransformListener`` on a :class:`ListenerNode`."""

    backend = 'tf2_ros'

    def __init__(self, node: Any, cache_s: float = 10.0) -> None:
        from rclpy.duration import Duration

        self._duration = Duration
        self.buffer = tf2_ros.Buffer(cache_time=Duration(seconds=cache_s))
        self._listener = ListenerNode(node)
        topics = {}
        if (self._listener.tf_topic, self._listener.tf_static_topic) != ('/tf', '/tf_static'):
            topics = {'tf_topic': self._listener.tf_topic,        # remapped TF (Kilted's
                      'tf_static_topic': self._listener.tf_static_topic}   # listener only)
        try:
            self.listener = tf2_ros.TransformListener(self.buffer, self._listener.node,
                                                      spin_thread=False, **topics)
        except TypeError:     # a tf2_ros without tf_topic: make_lookup falls back
            self._listener.close()
            raise

    def lookup(self, target: str, source: str, stamp_ns: Optional[int],
               timeout_s: float = 0.0) -> Pose:
        """Pose of ``source`` in ``target`` at ``stamp_ns``; raises the core's TransformError."""
        from rclpy.time import Time

        try:
            msg = self.buffer.lookup_transform(
                strip_frame(target), strip_frame(source), Time(nanoseconds=int(stamp_ns or 0)),
                timeout=self._duration(seconds=timeout_s))
        except tf2_ros.LookupException as exc:
            raise FrameLookupError(str(exc)) from None
        except tf2_ros.ConnectivityException as exc:
            raise ConnectivityError(str(exc)) from None
        except tf2_ros.ExtrapolationException as exc:
            raise ExtrapolationError(str(exc)) from None
        except tf2_ros.TransformException as exc:
            raise TransformError(str(exc)) from None
        return _pose_of(msg.transform)

    def _parent_map(self) -> dict[str, str]:
        return dict(_FRAME_LINE.findall(self.buffer.all_frames_as_string()))

    def parents(self, frame: str) -> set[str]:
        """Return the parent ``frame`` has in tf2's buffer (the newest one)."""
        parent = self._parent_map().get(strip_frame(frame))
        return {parent} if parent and parent != 'NO_PARENT' else set()

    def wait_for_frame(self, frame: str, timeout_s: float) -> bool:
        """Wait until ``frame`` has a parent in TF."""
        deadline = time.monotonic() + timeout_s
        while not self.parents(frame):
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.02)
        return True

    def describe(self) -> str:
        """Describe the tree, for error messages."""
        return ', '.join(f'{p} -> {c}' for c, p in sorted(self._parent_map().items()))

    def frames(self) -> set[str]:
        """Every frame in tf2's buffer (children and their parents)."""
        parents = self._parent_map()
        return (set(parents) | set(parents.values())) - {'NO_PARENT'}

    @property
    def topics(self) -> tuple[str, str]:
        """The ``/tf`` and ``/tf_static`` names listened to (after remapping)."""
        return self._listener.tf_topic, self._listener.tf_static_topic

    def close(self) -> None:
        """Destroy the listener's subscriptions, node and thread."""
        self.listener.unregister()
        self._listener.close()


# ---------------------------------------------------------------------------- first run

EXTRINSICS = 'camera extrinsics'
ODOMETRY = 'odometry'
SETTLE_S = 2.0        # a miss this soon after the listener started: latched TF may be on its way
TREE_CHARS = 400      # of the TF tree quoted in an explanation


def _reconfigure(node: str, settings: str) -> str:
    """How to change configure-time parameters of a running lifecycle node (refused else)."""
    sets = '; '.join(f'ros2 param set {node} {k} {v}'
                     for k, v in (kv.split(':=') for kv in settings.split()))
    return (f'on a running node: `ros2 lifecycle set {node} deactivate`, `ros2 lifecycle set '
            f'{node} cleanup`, `{sets}`, then `configure` and `activate` the same way')


def _ros_args(settings: str) -> str:
    return '`--ros-args ' + ' '.join(f'-p {kv}' for kv in settings.split()) + '`'


def extrinsics_fix(base: str, camera: str, node: str) -> tuple[str, str]:
    """Both ways out of missing camera extrinsics ``base -> camera``: (full, short)."""
    settings = f'base_frame:={camera}'
    full = (f'Fix it either way: (1) publish where the camera sits on the robot: '
            f'`ros2 run tf2_ros static_transform_publisher --x X --y Y --z Z --roll ROLL '
            f'--pitch PITCH --yaw YAW --frame-id {base} --child-frame-id {camera}` (X Y Z: the '
            f"camera's position on {base} in m, ROLL PITCH YAW its rotation in rad), or the "
            f"robot's URDF with a {camera} link through robot_state_publisher; or (2) if the "
            f'camera is all there is (no robot model), make it the base: {_ros_args(settings)} '
            f'(params file: `base_frame: {camera}`; {_reconfigure(node, settings)}), and the '
            f'poses describe the camera')
    short = (f'publish {base} -> {camera} in TF (static_transform_publisher or '
             f'robot_state_publisher) or set {settings}')
    return full, short


def odometry_fix(odom: str, base: str, node: str) -> tuple[str, str]:
    """Both ways out of missing odometry ``odom -> base`` in map_to_odom: (full, short)."""
    frames, camera = 'odom_frame:=ODOM base_frame:=BASE', 'tf_mode:=camera'
    full = (f"Fix it either way: (1) run what publishes the robot's odometry as TF {odom} -> "
            f"{base} (the base driver, or robot_localization's ekf_node with publish_tf: true), "
            f'or name the frames it uses: {_ros_args(frames)}; or (2) without odometry, '
            f'publish the camera frame instead of map -> odom: {_ros_args(camera)} (params '
            f'file: `tf_mode: camera`; {_reconfigure(node, camera)}). Poses are published '
            f'either way: only the map -> odom TF is missing')
    short = f'publish {odom} -> {base} in TF (odometry) or set {camera}'
    return full, short


def explain_cause(exc: Exception, target: str, source: str, lookup: Any,
                  listening_s: float) -> str:
    """Say what TF lacks for ``target -> source`` (tf2's own text is about the lookup)."""
    frames = lookup.frames() if hasattr(lookup, 'frames') else None
    tf_topic, static_topic = getattr(lookup, 'topics', ('/tf', '/tf_static'))
    tree = lookup.describe() if hasattr(lookup, 'describe') else ''
    if len(tree) > TREE_CHARS:
        tree = tree[:TREE_CHARS] + ' ...'
    if isinstance(exc, ExtrapolationError):
        cause = (f'TF has {target} -> {source} but not at this stamp ({exc}); a rigid mounting '
                 f'belongs on {static_topic} (static: valid at every time), and the image '
                 'stamps and TF must use one clock (use_sim_time)')
    elif frames is not None and not frames:
        cause = f'TF is empty: nothing was received on {tf_topic} or {static_topic}'
    elif frames is not None and (unknown := [f for f in (target, source) if f not in frames]):
        cause = (f'no transform in TF names {" or ".join(repr(f) for f in unknown)} (TF now: '
                 f'{tree})')
    elif isinstance(exc, ConnectivityError):
        cause = (f'{target!r} and {source!r} are both in TF but not connected (two separate '
                 f'trees; TF now: {tree})')
    else:
        cause = str(exc)
    if listening_s < SETTLE_S:
        cause += (f' (the TF listener started {listening_s:.1f} s ago: if it is published, '
                  'it is probably still on its way)')
    return cause


@dataclasses.dataclass
class Missing:
    """One transform the node keeps missing: from its first miss to the next lookup of it."""

    kind: str          # EXTRINSICS or ODOMETRY
    target: str
    source: str
    since: float       # time.monotonic(): the first miss, or the listener's start if never seen
    stamp_ns: int      # the newest image stamp that missed it
    cause: str         # what TF lacks, in words
    fix: str           # both ways out, with the commands
    short_fix: str     # the same in one clause, for the repeated warning
    frames: int = 1    # frames lost to it (extrinsics: no pose; odometry: no map -> odom)

    @property
    def transform(self) -> str:
        """``target -> source``: the TF edge (chain) that is missing."""
        return f'{self.target} -> {self.source}'

    def what(self) -> str:
        """Say what the node cannot publish, and which transform it would need."""
        if self.kind == ODOMETRY:
            return (f'no map -> odom TF (tf_mode map_to_odom): TF has no {self.transform} '
                    '(odom_frame -> base_frame, the odometry)')
        return (f"no pose: TF has no {self.transform} (base_frame -> the image's "
                'header.frame_id, the camera extrinsics)')

    def lost(self) -> str:
        """Count the frames it cost, in words."""
        what = 'without map -> odom' if self.kind == ODOMETRY else 'lost'
        return f'{self.frames} frame(s) {what}'

    def explain(self, now: float) -> str:
        """Tell the whole story: what, where, since when, how many frames, why, both fixes."""
        return (f'{self.what()} at the image stamp {self.stamp_ns / NS:.3f} s, missing for '
                f'{now - self.since:.1f} s, {self.lost()}: {self.cause}. {self.fix}')

    def remind(self, now: float) -> str:
        """Return the repeated warning: the count and the fixes in short."""
        return (f'still {self.what()} at the image stamp {self.stamp_ns / NS:.3f} s (missing '
                f'for {now - self.since:.1f} s, {self.lost()}): {self.short_fix}')


class MissingTransforms:
    """The transforms a node misses now, and what to say about them (thread-safe).

    The worker reports each lookup (:meth:`miss`, :meth:`found`); the first miss of a
    transform is explained in full at once, later ones are summed up every ``period_s``
    with the count, so a first run says what is wrong on its first frame without flooding
    the log. :meth:`problem` and :meth:`values` are for the state string and /diagnostics.
    """

    ORDER = (EXTRINSICS, ODOMETRY)   # no pose at all comes before no map -> odom

    def __init__(self, node: str, started: float, period_s: float = LOG_PERIOD_S) -> None:
        self.node = node               # fully qualified name, for the ros2 commands
        self.started = started         # time.monotonic() the TF listener started
        self.period_s = period_s
        self._lock = threading.Lock()
        self._missing: dict[str, Missing] = {}
        self._explained: set[tuple] = set()
        self._logged: dict[str, float] = {}
        self._seen: set[str] = set()   # kinds found at least once (else missing from the start)

    def miss(self, kind: str, target: str, source: str, stamp_ns: int, exc: Exception,
             lookup: Any) -> Optional[str]:
        """Count one frame lost to ``target -> source``; the warning to log now, if any."""
        now = time.monotonic()
        cause = explain_cause(exc, target, source, lookup, now - self.started)
        with self._lock:
            old = self._missing.get(kind)
            if old is not None and (old.target, old.source) == (target, source):
                old.frames += 1
                old.stamp_ns, old.cause = stamp_ns, cause
                missing = old
            else:
                explain = odometry_fix if kind == ODOMETRY else extrinsics_fix
                fix = explain(target, source, self.node)
                since = now if kind in self._seen else self.started
                missing = self._missing[kind] = Missing(kind, target, source, since, stamp_ns,
                                                        cause, *fix)
            key = (kind, target, source, type(exc).__name__)
            if key not in self._explained:
                self._explained.add(key)
                self._logged[kind] = now
                return missing.explain(now)
            if now - self._logged.get(kind, -math.inf) >= self.period_s:
                self._logged[kind] = now
                return missing.remind(now)
        return None

    def found(self, kind: str) -> Optional[str]:
        """End ``kind``'s miss (its lookup worked, or is not needed); the line to log, if any."""
        with self._lock:
            self._seen.add(kind)
            missing = self._missing.pop(kind, None)
        if missing is None:
            return None
        return (f'{missing.transform} ({kind}) is in TF now: found after '
                f'{time.monotonic() - missing.since:.1f} s, {missing.lost()}')

    def current(self) -> Optional[Missing]:
        """Return the missing transform that matters most now (extrinsics first), a copy."""
        with self._lock:
            for kind in self.ORDER:
                if kind in self._missing:
                    return dataclasses.replace(self._missing[kind])
        return None

    def problem(self) -> Optional[str]:
        """Explain :meth:`current` in full (None: nothing is missing)."""
        missing = self.current()
        return None if missing is None else missing.explain(time.monotonic())

    def values(self) -> dict:
        """Diagnostics values of :meth:`current` (empty strings and 0 when nothing misses)."""
        missing = self.current()
        if missing is None:
            return {'tf_missing_transform': '', 'tf_missing_since_s': '',
                    'tf_missing_frames': 0, 'tf_missing_stamp': '', 'tf_missing_reason': '',
                    'tf_fix': ''}
        return {'tf_missing_transform': missing.transform,
                'tf_missing_since_s': f'{time.monotonic() - missing.since:.1f}',
                'tf_missing_frames': missing.frames,
                'tf_missing_stamp': f'{missing.stamp_ns / NS:.3f}',
                'tf_missing_reason': missing.cause, 'tf_fix': missing.fix}


def make_lookup(node: Any, prefer_tf2_ros: bool = True) -> Any:
    """tf2_ros' buffer where it imports, else the ``/tf`` + ``/tf_static`` listener."""
    if prefer_tf2_ros and tf2_ros is not None:
        try:
            return Tf2Lookup(node)
        except TypeError:  # pragma: no cover - remapped TF with an older tf2_ros listener
            pass
    return TopicTfLookup(node)


def make_sender(node: Any) -> tuple[Optional[Callable], Optional[Callable]]:
    """``(send(TransformStamped), close())`` over tf2_ros' broadcaster or a /tf publisher."""
    if tf2_ros is not None:  # pragma: no cover - tf2_ros is not installable in the test venv
        broadcaster = tf2_ros.TransformBroadcaster(node, qos=TF_QOS)
        return broadcaster.sendTransform, lambda: node.destroy_publisher(broadcaster.pub_tf)
    if TFMessage is not None:
        pub = node.create_lifecycle_publisher(TFMessage, '/tf', TF_QOS)
        return (lambda t: pub.publish(TFMessage(transforms=[t])),
                lambda: node.destroy_lifecycle_publisher(pub))
    return None, None
