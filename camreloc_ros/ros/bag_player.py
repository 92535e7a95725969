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

"""Publish a bag into live ROS 2 with rclpy, and collect the localizer's poses.

For machines without ``ros2 bag play`` (rosbag2_py is not on PyPI): messages are read with
:mod:`camreloc_ros.core.bags` and published as the raw CDR bytes of the bag
(``Publisher.publish(bytes)``), so nothing is deserialised on the way; the message class,
needed only to create the publisher, is imported from the type name
(``sensor_msgs/msg/Image`` -> ``sensor_msgs.msg.Image``). Timing follows the bag's receive
times, scaled by a rate factor, with long pauses optionally shortened.
"""

from __future__ import annotations

from dataclasses import dataclass, field
import importlib
import threading
import time
from typing import Any, Callable, Iterable

from geometry_msgs.msg import PoseStamped
import numpy as np
from rclpy.node import Node
from rclpy.qos import (QoSDurabilityPolicy, QoSHistoryPolicy, QoSProfile,
                       QoSReliabilityPolicy)

from camreloc_ros.core.bags import Bag, BagMessage, TopicInfo
from camreloc_ros.core.robot.messages import header_stamp_ns, NS, stamp_ns, time_fields


def message_class(msgtype: str) -> type:
    """Import the rclpy message class of a bag type name, e.g. ``sensor_msgs/msg/Image``."""
    parts = msgtype.split('/')
    if len(parts) != 3:
        raise ValueError(f'type name {msgtype!r} is not of the form pkg/msg/Name')
    pkg, kind, name = parts
    try:
        return getattr(importlib.import_module(f'{pkg}.{kind}'), name)
    except (ImportError, AttributeError) as exc:
        raise ImportError(f'message type {msgtype} is not installed here ({exc})') from None


def qos_profile(info: TopicInfo) -> QoSProfile:
    """Return the QoS the recorded publisher offered (reliability, durability, depth).

    Without a recorded one: reliable, depth 10; ``/tf_static`` transient local (latched),
    ``/tf`` depth 100, as tf2 does.
    """
    reliable, latched = True, info.name == '/tf_static'
    depth = 1 if latched else 100 if info.name == '/tf' else 10
    if info.qos:
        offered = info.qos[0]
        reliable = getattr(offered.reliability, 'name', '') != 'BEST_EFFORT'
        latched = getattr(offered.durability, 'name', '') == 'TRANSIENT_LOCAL'
        if int(getattr(offered, 'depth', 0) or 0) > 0:
            depth = int(offered.depth)
    return QoSProfile(history=QoSHistoryPolicy.KEEP_LAST, depth=depth,
                      reliability=QoSReliabilityPolicy.RELIABLE if reliable
                      else QoSReliabilityPolicy.BEST_EFFORT,
                      durability=QoSDurabilityPolicy.TRANSIENT_LOCAL if latched
                      else QoSDurabilityPolicy.VOLATILE)


@dataclass
class PlayStats:
    """What one :meth:`BagPlayer.play` did."""

    published: dict = field(default_factory=dict)   # output topic -> messages
    skipped: dict = field(default_factory=dict)     # bag topic -> why it is not published
    seconds: float = 0.0
    loops: int = 0

    @property
    def total(self) -> int:
        """Messages published on all topics."""
        return sum(self.published.values())


class BagPlayer:
    """Publishers for a bag's topics on ``node``, and a paced replay loop."""

    def __init__(self, node: Node, bag: Bag, topics: Iterable[str] | None = None,
                 remap: dict[str, str] | None = None, clock: bool = False):
        self.node = node
        self.bag = bag
        remap = dict(remap or {})
        chosen = list(bag.topics) if topics is None else list(topics)
        unknown = [t for t in chosen if t not in bag.topics]
        if unknown:
            raise ValueError(f'{bag.path}: topic(s) {", ".join(unknown)} not in the bag; its '
                             f'topics are: {bag.describe_topics()}')
        self.publishers: dict[str, Any] = {}
        self.out_topics: dict[str, str] = {}
        self.skipped: dict[str, str] = {}
        for topic in chosen:
            info = bag.topics[topic]
            try:
                cls = message_class(info.msgtype)
            except (ImportError, ValueError) as exc:
                self.skipped[topic] = str(exc)
                continue
            out = remap.get(topic, topic)
            self.out_topics[topic] = out
            self.publishers[topic] = node.create_publisher(cls, out, qos_profile(info))
        if not self.publishers:
            raise ValueError(f'{bag.path}: none of the chosen topics can be published here '
                             f'({"; ".join(f"{k}: {v}" for k, v in self.skipped.items())})')
        self._clock = None
        if clock:
            from rosgraph_msgs.msg import Clock
            self._clock = (node.create_publisher(Clock, '/clock', 10), Clock)

    def wait_for_subscribers(self, timeout_s: float, topics: Iterable[str] | None = None,
                             stop: threading.Event | None = None) -> list[str]:
        """Wait until each topic (bag names) has a subscriber; return those still without."""
        names = [t for t in (topics or self.publishers) if t in self.publishers]
        deadline = time.monotonic() + timeout_s
        while True:
            missing = [t for t in names if self.publishers[t].get_subscription_count() == 0]
            if not missing or time.monotonic() > deadline or (stop and stop.is_set()):
                return missing
            time.sleep(0.02)

    def play(self, rate_factor: float = 1.0, loop: bool = False, max_idle: float | None = None,
             stop: threading.Event | None = None,
             after_publish: Callable[[BagMessage], None] | None = None) -> PlayStats:
        """Publish every message at its recorded time / ``rate_factor`` (0: no waiting).

        ``max_idle`` (seconds of bag time) shortens longer pauses; ``after_publish`` is called
        after each message and may block (lock-step with a consumer): the time it takes
        shifts the rest of the schedule instead of causing a burst. A damaged bag is played
        as far as it reads, then its :class:`BagCorruptError` is raised.
        """
        if rate_factor < 0:
            raise ValueError(f'rate factor must be >= 0, got {rate_factor}')
        stats = PlayStats(published={self.out_topics[t]: 0 for t in self.publishers},
                          skipped=dict(self.skipped))
        wait = stop.wait if stop is not None else time.sleep
        t_start = time.monotonic()
        while True:
            base_wall = time.monotonic()
            base_bag = None
            prev_log = None
            shift = 0.0    # bag seconds removed by max_idle
            for msg in self.bag.messages(self.publishers):
                if stop is not None and stop.is_set():
                    stats.seconds = time.monotonic() - t_start
                    return stats
                if base_bag is None:
                    base_bag = msg.log_ns
                if prev_log is not None and max_idle is not None:
                    gap = (msg.log_ns - prev_log) / NS
                    if gap > max_idle:
                        shift += gap - max_idle
                prev_log = msg.log_ns
                if rate_factor > 0:
                    due = base_wall + ((msg.log_ns - base_bag) / NS - shift) / rate_factor
                    delay = due - time.monotonic()
                    if delay > 0:
                        wait(delay)
                if self._clock is not None:
                    pub, clock_cls = self._clock
                    clock = clock_cls()
                    fields = time_fields(msg.log_ns)
                    clock.clock.sec, clock.clock.nanosec = fields['sec'], fields['nanosec']
                    pub.publish(clock)
                self.publishers[msg.topic].publish(msg.data)
                stats.published[self.out_topics[msg.topic]] += 1
                if after_publish is not None:
                    t0 = time.monotonic()
                    after_publish(msg)
                    base_wall += time.monotonic() - t0
            stats.loops += 1
            if not loop or (stop is not None and stop.is_set()):
                break
        stats.seconds = time.monotonic() - t_start
        return stats

    def linger(self, timeout_s: float = 2.0) -> None:
        """Give reliable subscribers time to receive the last messages before shutdown."""
        from rclpy.duration import Duration
        for pub in self.publishers.values():
            if pub.get_subscription_count() > 0:
                pub.wait_for_all_acked(Duration(seconds=timeout_s))


class PoseCollector:
    """Subscribes to the localizer's ``PoseStamped`` and keeps each pose by header stamp."""

    def __init__(self, node: Node, topic: str):
        self.poses: dict[int, tuple[np.ndarray, np.ndarray]] = {}
        self.arrival: dict[int, float] = {}
        self._cond = threading.Condition()
        qos = QoSProfile(depth=100, reliability=QoSReliabilityPolicy.RELIABLE)
        self.subscription = node.create_subscription(PoseStamped, topic, self._on_pose, qos)

    def _on_pose(self, msg: PoseStamped) -> None:
        stamp = stamp_ns(msg.header.stamp)
        p, q = msg.pose.position, msg.pose.orientation
        with self._cond:
            self.poses[stamp] = (np.array([p.x, p.y, p.z]), np.array([q.x, q.y, q.z, q.w]))
            self.arrival[stamp] = time.monotonic()
            self._cond.notify_all()

    def wait_for(self, stamps: Iterable[int], timeout_s: float) -> bool:
        """Wait until poses for all ``stamps`` arrived (True) or ``timeout_s`` passed."""
        wanted = set(stamps)
        deadline = time.monotonic() + timeout_s
        with self._cond:
            while not wanted <= self.poses.keys():
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(left)
        return True

    def lockstep(self, timeout_s: float) -> Callable[[BagMessage], None]:
        """Return an ``after_publish`` hook that waits for the pose of the image just sent."""
        def hook(msg: BagMessage) -> None:
            self.wait_for([header_stamp_ns(msg.data)], timeout_s)
        return hook
