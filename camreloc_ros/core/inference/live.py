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

"""ROS-free state of a live localizer: the pose gate and the counters behind diagnostics."""

from collections import deque
import math
import threading

import numpy as np

from camreloc_ros.core.inference.engine import Prediction
from camreloc_ros.core.geometry import orientation_error_rad


class PoseGate:
    """Refuses implausible poses: a jump too fast from the last accepted pose, or too unsure.

    The reference expires after ``max_gap`` seconds, so a robot that really moved (kidnapped,
    or a long occlusion) is accepted again instead of being gated forever.
    """

    def __init__(self) -> None:
        self.max_speed = 0.0
        self.max_angular_speed_rad = 0.0
        self.max_position_std = 0.0
        self.max_gap = 1.0
        self.reset()

    def reset(self) -> None:
        """Forget the reference pose (``~/reset``, cleanup)."""
        self._last: tuple[float, np.ndarray, np.ndarray] | None = None

    def seed(self, stamp: float, position: np.ndarray, quaternion: np.ndarray) -> None:
        """Make a pose the reference (an ``initialpose``): later jumps are measured from it."""
        self._last = (float(stamp), np.asarray(position, np.float64).copy(),
                      np.asarray(quaternion, np.float64).copy())

    def check(self, stamp: float, pred: Prediction) -> str | None:
        """None to publish ``pred`` (it becomes the reference), else the reason it is gated."""
        if self.max_position_std > 0:
            std = math.sqrt(float(np.max(np.diag(pred.covariance)[:3])))
            if std > self.max_position_std:
                return f'position std {std:.3f} m > {self.max_position_std:g} m'
        if self._last is not None and (self.max_speed > 0 or self.max_angular_speed_rad > 0):
            last_stamp, last_pos, last_quat = self._last
            dt = stamp - last_stamp
            if 0 < dt <= self.max_gap:
                speed = float(np.linalg.norm(pred.position - last_pos)) / dt
                if self.max_speed > 0 and speed > self.max_speed:
                    return f'speed {speed:.3f} m/s > {self.max_speed:g} m/s'
                turn = float(orientation_error_rad(pred.quaternion, last_quat)) / dt
                if self.max_angular_speed_rad > 0 and turn > self.max_angular_speed_rad:
                    return (f'angular speed {math.degrees(turn):.1f} deg/s > '
                            f'{math.degrees(self.max_angular_speed_rad):g} deg/s')
        self._last = (stamp, pred.position.copy(), pred.quaternion.copy())
        return None


class LiveStats:
    """Counters and recent latencies, shared by the callback, the worker and diagnostics."""

    def __init__(self, latency_samples: int = 300) -> None:
        self.lock = threading.Lock()
        self.received = 0     # messages that reached the callback while active
        self.processed = 0    # frames the engine ran on
        self.published = 0    # poses published (processed minus gated)
        self.dropped = 0      # frames replaced by a newer one before the worker took them
        self.bad = 0          # malformed messages (encoding, size, corrupt data)
        self.gated = 0        # poses the gate refused
        self.errors = 0       # unexpected inference errors
        self.not_localized = 0   # with a map: frames with no pose the localizer stands behind
        self.latencies_s: deque = deque(maxlen=latency_samples)

    def add(self, **counts: int) -> None:
        """Increment counters atomically."""
        with self.lock:
            for name, n in counts.items():
                setattr(self, name, getattr(self, name) + n)

    def snapshot(self) -> dict:
        """Copy the counters consistently, plus latency percentiles (ms, NaN when empty)."""
        with self.lock:
            lat = np.asarray(self.latencies_s, np.float64) * 1e3
            snap = {k: getattr(self, k) for k in ('received', 'processed', 'published',
                                                  'dropped', 'bad', 'gated', 'errors',
                                                  'not_localized')}
        snap['latency_p50_ms'] = float(np.percentile(lat, 50)) if lat.size else math.nan
        snap['latency_p95_ms'] = float(np.percentile(lat, 95)) if lat.size else math.nan
        return snap


class LatestSlot:
    """A one-item hand-over between threads that keeps only the newest item.

    The latest-frame policy of the node's inference worker and of the refiner: a producer
    that is faster than the consumer replaces the waiting item (and learns it did) instead of
    building a queue. ``take`` blocks until an item arrives or :meth:`close` is called.
    """

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._item = None
        self._closed = False

    def open(self) -> None:
        """Accept items again (activate), with nothing waiting."""
        with self._cond:
            self._item = None
            self._closed = False

    def close(self) -> None:
        """Drop the waiting item and wake the consumer: its ``take`` returns None."""
        with self._cond:
            self._closed = True
            self._item = None
            self._cond.notify_all()

    def discard(self) -> None:
        """Drop the waiting item, if any, and stay open (time jumped back: it is stale)."""
        with self._cond:
            self._item = None

    def put(self, item) -> bool:
        """Offer ``item``; True when it replaced one the consumer had not taken yet."""
        with self._cond:
            replaced = self._item is not None
            self._item = item
            self._cond.notify()
        return replaced

    def take(self):
        """Wait for the newest item and remove it; None once the slot is closed."""
        with self._cond:
            while self._item is None and not self._closed:
                self._cond.wait()
            if self._closed:
                return None
            item, self._item = self._item, None
            return item
