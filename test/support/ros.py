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

"""Helpers for tests over real rclpy / Fast DDS: isolation and an executor thread.

Each test module takes its ``ROS_DOMAIN_ID`` from :func:`allocate_domain` (the allocator the
demo and the benchmarks use: an exclusive lock per id on this host), so modules, parallel runs
and ``make demo`` never hear each other; discovery stays on this host, and rcl logs go to a
temp dir instead of ``~/.ros/log``. The variables are set by :func:`ros_environment` before
``rclpy.init`` and restored after, not at import time: pytest imports every module before
running any.
"""

from contextlib import contextmanager
import os
from pathlib import Path
import threading
import time
from typing import Callable

from camreloc_ros.ros.domain import allocate_domain, DOMAIN_POOL, release_domain
from camreloc_ros.tools.common import scoped_environ

ROOT = Path(__file__).resolve().parents[2]

__all__ = ['allocate_domain', 'child_env', 'DOMAIN_POOL', 'release_domain', 'ros_environment',
           'ros_harness', 'RosHarness']


def ros_environment(domain_id: int, log_dir: str | Path):
    """Set the isolation variables for the duration of the block, then restore them."""
    assert 0 <= domain_id < 233, 'ROS_DOMAIN_ID must be below 233 for Fast DDS port mapping'
    return scoped_environ({'ROS_DOMAIN_ID': str(domain_id),
                           'ROS_AUTOMATIC_DISCOVERY_RANGE': 'LOCALHOST',
                           'ROS_LOG_DIR': str(log_dir)})


def child_env(domain_id: int, log_dir: str | Path) -> dict[str, str]:
    """Environment of a node process: private domain, localhost discovery, logs in a temp dir."""
    return dict(os.environ, ROS_DOMAIN_ID=str(domain_id),
                ROS_AUTOMATIC_DISCOVERY_RANGE='LOCALHOST', ROS_LOG_DIR=str(log_dir),
                PYTHONPATH=str(ROOT))


@contextmanager
def ros_harness(domain_id: int, log_dir: str | Path, name: str = 'camreloc_test'):
    """A :class:`RosHarness` in :func:`ros_environment`, shut down when the block ends."""
    with ros_environment(domain_id, log_dir):
        harness = RosHarness(domain_id, name)
        try:
            yield harness
        finally:
            harness.shutdown()


class RosHarness:
    """A private rclpy context, a test node and an executor spinning in a thread."""

    def __init__(self, domain_id: int, name: str = 'camreloc_test'):
        import rclpy
        from rclpy.executors import MultiThreadedExecutor

        self.context = rclpy.Context()
        rclpy.init(context=self.context, domain_id=domain_id)
        self.executor = MultiThreadedExecutor(num_threads=2, context=self.context)
        self.node = rclpy.create_node(name, context=self.context)
        self.executor.add_node(self.node)
        self._thread = threading.Thread(target=self._spin, daemon=True)
        self._thread.start()

    def _spin(self) -> None:
        from rclpy.executors import ExternalShutdownException

        try:
            self.executor.spin()
        except ExternalShutdownException:
            pass

    def add(self, node):
        """Spin ``node`` too; returns it."""
        self.executor.add_node(node)
        return node

    def localizer(self, namespace: str = '', **params):
        """A LocalizerNode in ``namespace`` with ``params``, spun here (CPU unless given)."""
        from rclpy.parameter import Parameter

        from camreloc_ros.ros.localizer_node import LocalizerNode

        params = {'device': 'cpu', **params}
        return self.add(LocalizerNode(
            namespace=namespace, context=self.context,
            parameter_overrides=[Parameter(k, value=v) for k, v in params.items()]))

    def remove(self, node) -> None:
        """Stop spinning ``node`` and destroy it."""
        self.executor.remove_node(node)
        node.destroy_node()

    @staticmethod
    def wait_for(predicate: Callable[[], bool], timeout_s: float = 10.0,
                 period_s: float = 0.005) -> bool:
        """Poll ``predicate`` until it is true or ``timeout_s`` passes."""
        deadline = time.monotonic() + timeout_s
        while not predicate():
            if time.monotonic() > deadline:
                return False
            time.sleep(period_s)
        return True

    def shutdown(self) -> None:
        """Stop the executor, destroy the test node, shut the context down."""
        self.executor.shutdown(timeout_sec=5.0)
        self.node.destroy_node()
        self.context.try_shutdown()
        self._thread.join(timeout=5.0)
