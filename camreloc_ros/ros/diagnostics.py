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

"""``/diagnostics`` in every lifecycle state: why configure failed, whether it localizes.

The publisher and its timer are plain (not lifecycle) entities made when the node is
created, so a node that is unconfigured (a bad model) or inactive still says so: ERROR with
the reason of the last failed configure, WARN while unconfigured or inactive. The age of the
last image is measured on the node's clock (``now - header.stamp``), so it is right under
``use_sim_time`` with a bag's ``/clock``; the period is steady (wall) time, so diagnostics keep
coming while a bag is paused.
"""

import threading
from typing import Any, Callable

from diagnostic_msgs.msg import DiagnosticArray
from rclpy.clock import Clock, ClockType

DIAGNOSTICS_TOPIC = '/diagnostics'


class Health:
    """State the diagnostics report beyond the counters: configure error, last image stamp."""

    def __init__(self, node: Any, period_s: float, publish: Callable[[], None], qos: Any):
        self.node = node
        self.error: str | None = None           # reason of the last failed configure
        self._lock = threading.Lock()
        self._last_stamp_ns: int | None = None
        self.publisher = node.create_publisher(DiagnosticArray, DIAGNOSTICS_TOPIC, qos)
        self._publish = publish
        self.period_s = float(period_s)
        self.timer = node.create_timer(self.period_s, publish, clock=self._steady())

    def set_period(self, period_s: float) -> None:
        """Recreate the timer when ``diagnostics_period`` changed (read at configure)."""
        if float(period_s) != self.period_s:
            self.node.destroy_timer(self.timer)
            self.period_s = float(period_s)
            self.timer = self.node.create_timer(self.period_s, self._publish,
                                                clock=self._steady())

    @staticmethod
    def _steady() -> Clock:
        return Clock(clock_type=ClockType.STEADY_TIME)

    def image(self, stamp: Any) -> None:
        """Note an image's ``header.stamp`` (callback thread)."""
        with self._lock:
            self._last_stamp_ns = int(stamp.sec) * 1_000_000_000 + int(stamp.nanosec)

    def forget_image(self) -> None:
        """Forget the last image (cleanup)."""
        with self._lock:
            self._last_stamp_ns = None

    def image_age_s(self) -> float | None:
        """Node-clock now minus the last image stamp (s), None before the first image."""
        with self._lock:
            stamp = self._last_stamp_ns
        if stamp is None:
            return None
        return (self.node.get_clock().now().nanoseconds - stamp) * 1e-9

    def values(self) -> dict:
        """Diagnostics key/values of this part."""
        age = self.image_age_s()
        return {'last_image_age_s': 'none' if age is None else f'{age:.3f}',
                'configure_error': self.error or ''}
