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

"""The fault suite's live node: bad start parameters, a model directory, tiny images, Jazzy.

Node start failures run the node as a real process (``camreloc node``), as a user starts it;
the other node faults go over real rclpy / Fast DDS in this process, each group in its own
ROS_DOMAIN_ID. The ROS-free faults (checkpoints, training, full disk, bags) are in
``test_faults_core.py``, which imports no rclpy.
"""

from pathlib import Path
import signal
import subprocess
import sys
import textwrap
import threading

import cv2
from diagnostic_msgs.msg import DiagnosticArray
from geometry_msgs.msg import PoseStamped
import pytest
from rclpy.parameter import Parameter
from support import (allocate_domain, child_env, load_frames, ros_environment, ros_harness,
                     RosHarness)
from sensor_msgs.msg import CompressedImage, Image

from camreloc_ros.ros.conversions import (rgb_to_compressed, rgb_to_image, sec_to_stamp,
                                          stamp_to_ns)
from camreloc_ros.ros.localizer_node import LocalizerNode
from camreloc_ros.ros.parameters import ConfigurationError, min_image_side

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.timeout(600)


# ----------------------------------------------------------------------------- live node

START_DOMAIN_ID = allocate_domain()     # start-failure subprocesses
NODE_DOMAIN_ID = allocate_domain()      # in-process nodes
JAZZY_DOMAIN_ID = allocate_domain()     # main() with Jazzy's rclpy.init
TIMEOUT_S = 15.0


@pytest.fixture(scope='module')
def frames():
    """Two real hololens-office frames (540x360 RGB)."""
    return load_frames(2, stride=7)


# ---------------------------------------------------------------------------- start parameters

@pytest.mark.slow   # a node over real DDS or a subprocess node start
@pytest.mark.parametrize('name, value, shown, expected', [
    ('qos.depth', '0', '0', 'an integer in 1..100'),
    ('threads', '-1', '-1', 'an integer in 0..1024'),
    ('threads', 'abc', "'abc'", 'an integer in 0..1024'),
    ('autostart', 'notabool', "'notabool'", 'a boolean (true or false)'),
])
def test_bad_start_parameter_exits_1_with_one_line(tmp_path, name, value, shown, expected):
    """A value rclpy refuses at declare time: exit 1, one line naming it, no traceback."""
    proc = subprocess.run(
        [sys.executable, '-m', 'camreloc_ros.tools.cli', 'node', '--ros-args',
         '-p', f'{name}:={value}', '-p', 'device:=cpu'],
        cwd=ROOT, env=child_env(START_DOMAIN_ID, tmp_path), capture_output=True, text=True,
        timeout=180)
    output = proc.stdout + proc.stderr
    assert 'Traceback' not in output, output
    assert proc.returncode == 1, output
    lines = [line for line in output.splitlines() if f"'{name}'" in line]
    assert len(lines) == 1, output
    assert f"cannot start: parameter '{name}' is {shown}, expected {expected}" in lines[0], \
        lines[0]


def test_bad_start_parameter_in_process_raises_configuration_error(tmp_path):
    """Built in-process, the node raises ConfigurationError; shutting down stays clean."""
    import rclpy

    with ros_environment(NODE_DOMAIN_ID, tmp_path):
        context = rclpy.Context()
        rclpy.init(context=context, domain_id=NODE_DOMAIN_ID)
        try:
            with pytest.raises(ConfigurationError, match=r"'qos\.depth' is 0, expected an "
                               r'integer in 1\.\.100'):
                LocalizerNode(context=context, parameter_overrides=[
                    Parameter('qos.depth', value=0), Parameter('autostart', value=False)])
        finally:
            context.try_shutdown()   # used to raise AttributeError: ... '_cond'


# ---------------------------------------------------------------------------- in-process nodes

class Probe:
    """An image publisher into one localizer and a pose / diagnostics listener."""

    def __init__(self, harness: RosHarness, node: LocalizerNode, namespace: str,
                 compressed: bool):
        self.harness, self.node = harness, node
        self.lock = threading.Lock()
        self.poses: dict[int, PoseStamped] = {}
        self.diagnostics: list[DiagnosticArray] = []
        test_node = harness.node
        self.sub = test_node.create_subscription(PoseStamped, f'/{namespace}/pose',
                                                 self._on_pose, 10)
        test_node.create_subscription(DiagnosticArray, '/diagnostics',
                                      self.diagnostics.append, 10)
        msg_type = CompressedImage if compressed else Image
        topic = f'/{namespace}/image' + ('/compressed' if compressed else '')
        self.pub = test_node.create_publisher(msg_type, topic, 10)
        assert harness.wait_for(lambda: self.pub.get_subscription_count() > 0
                                and self.sub.get_publisher_count() > 0, TIMEOUT_S), \
            f'{topic} never matched the localizer'
        self.stamp = 100.0

    def _on_pose(self, msg: PoseStamped) -> None:
        with self.lock:
            self.poses[stamp_to_ns(msg.header.stamp)] = msg

    def _publish(self, msg) -> int:
        self.stamp += 0.1
        msg.header.stamp = sec_to_stamp(self.stamp)
        self.pub.publish(msg)
        return stamp_to_ns(msg.header.stamp)

    def expect_pose(self, msg) -> PoseStamped:
        """Publish ``msg`` and wait for its pose (reliable QoS: sent once)."""
        key = self._publish(msg)
        assert self.harness.wait_for(lambda: key in self.poses, TIMEOUT_S), 'no pose'
        return self.poses[key]

    def expect_bad(self, msg) -> None:
        """Publish ``msg``; it must be counted as a bad message and give no pose."""
        before = self.node.stats.snapshot()['bad']
        key = self._publish(msg)
        assert self.harness.wait_for(lambda: self.node.stats.snapshot()['bad'] > before,
                                     TIMEOUT_S), 'not counted as a bad message'
        assert self.node.stats.snapshot()['bad'] == before + 1
        assert key not in self.poses

    def diagnostics_bad(self) -> int:
        """Largest bad_messages this node's diagnostics reported so far."""
        values = [int(kv.value) for array in list(self.diagnostics) for status in array.status
                  if status.name.startswith(self.node.get_namespace().strip('/'))
                  for kv in status.values if kv.key == 'bad_messages']
        return max(values, default=-1)


@pytest.fixture(scope='module')
def harness(tmp_path_factory):
    """Private domain, localhost discovery, logs in a temp dir; executor in a thread."""
    with ros_harness(NODE_DOMAIN_ID, tmp_path_factory.mktemp('ros_log'),
                     'camreloc_faults_test') as ros:
        yield ros


def _localizer(harness: RosHarness, namespace: str, **params) -> LocalizerNode:
    return harness.localizer(namespace, **{'runtime': 'torch', 'qos.reliability': 'reliable',
                                           **params})


@pytest.mark.slow   # a node over real DDS or a subprocess node start
def test_model_directory_is_named_as_a_directory(harness, tmp_path, capfd):
    """model:=<a directory> fails configure saying so; the node stays up, unconfigured."""
    node = _localizer(harness, 'dir_model', model=str(tmp_path))
    try:
        assert not node.is_active and node.engine is None
        err = capfd.readouterr().err
        line = next(line for line in err.splitlines() if 'configure failed' in line)
        assert str(tmp_path) in line and 'a directory' in line, line
        assert 'FILE (.pt)' in line and '.onnx' in line, line
        assert 'does not exist' not in line
    finally:
        harness.remove(node)


def _resized(frame, short_side: int):
    h, w = frame.shape[:2]
    scale = short_side / min(h, w)
    size = (max(short_side, round(w * scale)), max(short_side, round(h * scale)))
    out = cv2.resize(frame, size, interpolation=cv2.INTER_AREA)
    assert min(out.shape[:2]) == short_side
    return out


@pytest.mark.slow   # a node over real DDS or a subprocess node start
@pytest.mark.parametrize('compressed', [False, True], ids=['raw', 'jpeg'])
def test_too_small_images_are_bad_messages(harness, checkpoints, frames, compressed):
    """1x1 and just-too-small images are counted as bad (no pose); the limit itself works."""
    namespace = 'small_jpeg' if compressed else 'small_raw'
    node = _localizer(harness, namespace, model=str(checkpoints['reg']),
                      input='compressed' if compressed else 'raw')
    try:
        assert node.is_active
        probe = Probe(harness, node, namespace, compressed)
        limit = min_image_side(node.engine.pre.size)
        assert limit == max(32, -(-node.engine.pre.size // 4))

        def encode(rgb):
            return rgb_to_compressed(rgb, 'jpeg') if compressed else rgb_to_image(rgb)
        for rgb in (frames[0][:1, :1], frames[0][:1, :40], _resized(frames[0], limit - 1)):
            probe.expect_bad(encode(rgb))
        probe.expect_pose(encode(_resized(frames[1], limit)))
        probe.expect_pose(encode(frames[1]))
        bad = node.stats.snapshot()['bad']
        assert bad == 3
        assert harness.wait_for(lambda: probe.diagnostics_bad() >= bad, 5.0), \
            'diagnostics never reported the bad messages'
    finally:
        harness.remove(node)


# ---------------------------------------------------------------------------- Jazzy main()

JAZZY_MAIN = textwrap.dedent('''
    import sys

    import rclpy

    _init = rclpy.init


    def jazzy_init(*args, **kwargs):
        """rclpy.init as on Jazzy: initialises, returns None (no context manager)."""
        _init(*args, **kwargs)
        return None


    rclpy.init = jazzy_init
    from camreloc_ros.ros.localizer_node import main  # noqa: E402
    sys.exit(main(['camreloc'] + sys.argv[1:]))
''')


@pytest.mark.slow   # a node over real DDS or a subprocess node start
def test_main_works_with_jazzy_rclpy_init(tmp_path, checkpoints, frames):
    """main() with an rclpy.init that returns None localizes, and Ctrl-C exits 0 cleanly."""
    script = tmp_path / 'jazzy_main.py'
    script.write_text(JAZZY_MAIN)
    env = child_env(JAZZY_DOMAIN_ID, tmp_path / 'child_log')
    proc = subprocess.Popen(
        [sys.executable, str(script), '--ros-args', '-p', f'model:={checkpoints["reg"]}',
         '-p', 'device:=cpu', '-p', 'runtime:=torch', '-p', 'qos.reliability:=reliable',
         '-r', '__ns:=/jazzy'], cwd=ROOT, env=env, stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT, text=True)
    try:
        with ros_environment(JAZZY_DOMAIN_ID, tmp_path / 'ros_log'):
            harness = RosHarness(JAZZY_DOMAIN_ID, name='camreloc_jazzy_test')
            try:
                poses: list[PoseStamped] = []
                sub = harness.node.create_subscription(PoseStamped, '/jazzy/pose',
                                                       poses.append, 10)
                pub = harness.node.create_publisher(Image, '/jazzy/image', 10)
                harness.wait_for(lambda: proc.poll() is not None or (
                    pub.get_subscription_count() > 0 and sub.get_publisher_count() > 0), 120.0)
                assert proc.poll() is None and sub.get_publisher_count() > 0, \
                    'the node never came up: ' + ('' if proc.poll() is None else
                                                  proc.communicate()[0])
                msg = rgb_to_image(frames[0])
                msg.header.stamp = sec_to_stamp(7.0)
                pub.publish(msg)
                assert harness.wait_for(lambda: len(poses) > 0, TIMEOUT_S), 'no pose'
                assert poses[0].header.stamp == msg.header.stamp
            finally:
                harness.shutdown()
        proc.send_signal(signal.SIGINT)
        output, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert 'Traceback' not in output, output
    assert proc.returncode == 0, output
