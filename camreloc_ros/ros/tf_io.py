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
* :mod:`camreloc_ros.ros.frame_io` (``FrameIO``) is what the node calls; it reads TF
  through these lookups and sends it through :func:`make_sender`.
"""

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

    def close(self) -> None:
        """Destroy the listener's subscriptions, node and thread."""
        self.listener.unregister()
        self._listener.close()


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
