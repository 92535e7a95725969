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

"""Helpers for tests over real rclpy / Fast DDS: isolation, an executor thread, test data.

Each test module picks its own ``ROS_DOMAIN_ID`` (below 233) so modules never hear each other,
discovery stays on this host, and rcl logs go to a temp dir instead of ``~/.ros/log``.
The variables are set by :func:`ros_environment` before ``rclpy.init`` and restored after,
not at import time: pytest imports every module before running any.
"""

from contextlib import contextmanager
from pathlib import Path
import threading
import time
from typing import Callable

import numpy as np

from camreloc_ros.tools.common import scoped_environ, shared_data_dir

DATA_DIR = shared_data_dir() / 'hololens-office'


def ros_environment(domain_id: int, log_dir: str | Path):
    """Set the isolation variables for the duration of the block, then restore them."""
    assert 0 <= domain_id < 233, 'ROS_DOMAIN_ID must be below 233 for Fast DDS port mapping'
    return scoped_environ({'ROS_DOMAIN_ID': str(domain_id),
                           'ROS_AUTOMATIC_DISCOVERY_RANGE': 'LOCALHOST',
                           'ROS_LOG_DIR': str(log_dir)})


def wait_for_file(path: Path, proc, timeout_s: float, period_s: float = 0.05) -> None:
    """Wait until ``path`` exists while ``proc`` (a Popen) runs; fail if it dies or times out."""
    deadline = time.monotonic() + timeout_s
    while not Path(path).exists():
        assert proc.poll() is None, f'the process died (exit {proc.returncode}) before {path}'
        assert time.monotonic() < deadline, f'no {path} within {timeout_s:g} s'
        time.sleep(period_s)


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


def image_paths(count: int, start: int = 0, stride: int = 1) -> list[Path]:
    """``count`` hololens-office image files in sequence order."""
    paths = sorted((DATA_DIR / 'images').glob('*.jpg'))
    chosen = paths[start:start + count * stride:stride]
    if len(chosen) < count:
        raise FileNotFoundError(f'need {count} images in {DATA_DIR / "images"}, '
                                f'found {len(chosen)}')
    return chosen


def load_frames(count: int, start: int = 0, stride: int = 1,
                size: tuple[int, int] | None = None) -> list[np.ndarray]:
    """RGB uint8 frames from the hololens-office sequence, optionally resized to (w, h)."""
    import cv2

    from camreloc_ros.core.data.transforms import read_rgb

    frames = [read_rgb(p) for p in image_paths(count, start, stride)]
    if size is not None:
        frames = [cv2.resize(f, size, interpolation=cv2.INTER_AREA) for f in frames]
    return frames


def make_checkpoints(directory: Path, window: int = 4) -> dict[str, Path]:
    """Write a regressor (posenet) and a temporal GRU checkpoint with lite0 ImageNet weights.

    Non-trivial pose statistics make poses differ visibly between images (for the gate test).
    """
    from camreloc_ros.core.models.pose_model import build_model

    directory.mkdir(parents=True, exist_ok=True)
    reg = build_model('posenet')
    reg.set_pose_stats([1.0, -2.0, 0.5], 5.0)
    gru = build_model('gru', head={'window': window})
    gru.set_pose_stats([0.5, 0.2, -1.0], 3.0)
    return {'reg': reg.save_checkpoint(directory / 'reg.pt'),
            'gru': gru.save_checkpoint(directory / 'gru.pt')}
