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

"""The package as a robot installs and starts it: colcon build, ros2 run, ros2 launch.

colcon (``.venv/bin/colcon``, from PyPI) builds the package into a temporary workspace once per
module. Every command then runs as a user types it after ``source install/setup.bash``, with
``.venv`` as the underlay (a robot's ``/opt/ros/<distro>``): the upstream ``ros2`` CLI and
launch system (../shared/vendor/ros2-launch, installed by ``make setup``). The launched nodes
are separate processes on a private domain; a test node publishes a real image and waits for
the pose. Launch exits 0 even when its node dies, so the tests check topics and output, never
return codes of a running launch. The package.xml / rosdep / robot-pin checks, which need no
ROS, are in ``test_package_files.py``.
"""

import os
from pathlib import Path
import shlex
import subprocess
import sys
import time

from geometry_msgs.msg import PoseStamped
import numpy as np
import pytest
from sensor_msgs.msg import CompressedImage, Image
from support import allocate_domain, load_frames, ros_environment, RosHarness, Started
import yaml

from camreloc_ros.ros.conversions import rgb_to_compressed, rgb_to_image, sec_to_stamp

DOMAIN_ID = allocate_domain()
ROOT = Path(__file__).resolve().parent.parent
VENV_BIN = Path(sys.prefix) / 'bin'
PACKAGE = 'camreloc_ros'
START_TIMEOUT_S = 240.0     # a node importing torch starts in 6-15 s; CI machines are loaded
pytestmark = [pytest.mark.timeout(900), pytest.mark.slow]   # colcon, ros2 run/launch subprocesses


class Workspace:
    """The colcon install space and the environment of a shell that sourced it."""

    def __init__(self, root: Path):
        self.root = root
        self.install = root / 'install'
        self.prefix = self.install / PACKAGE     # colcon's default isolated layout
        self.started: list[Started] = []
        self.env = dict(os.environ)
        self.env.pop('PYTHONPATH', None)
        # the underlay: .venv holds rclpy, the messages, launch and ros2 in its ament index
        self.env['AMENT_PREFIX_PATH'] = sys.prefix
        self.env['PATH'] = f'{VENV_BIN}{os.pathsep}{os.environ.get("PATH", "/usr/bin:/bin")}'

    def argv(self, *command: str) -> list[str]:
        """``command`` run by bash after ``source install/setup.bash``."""
        return ['bash', '-c', 'source "$0/setup.bash" && exec "$@"', str(self.install),
                *command]

    def run(self, *command: str, timeout_s: float = 120.0) -> subprocess.CompletedProcess:
        """Run ``command`` to its end in the sourced environment (cwd: outside the source)."""
        return subprocess.run(self.argv(*command), env=self.env, cwd=self.root,
                              capture_output=True, text=True, timeout=timeout_s,
                              stdin=subprocess.DEVNULL)

    def start(self, name: str, *command: str) -> Started:
        """Start ``command`` in the background (stopped by the module fixture at the latest)."""
        started = Started(self.argv(*command), self.root / f'{name}.log', self.env)
        self.started.append(started)
        return started


def colcon_build(root: Path) -> subprocess.CompletedProcess:
    """``colcon build`` of this repository (symlinked as src/camreloc_ros) under ``root``."""
    (root / 'src').mkdir()
    (root / 'src' / PACKAGE).symlink_to(ROOT, target_is_directory=True)
    colcon = VENV_BIN / 'colcon'
    assert colcon.exists(), f'{colcon} missing: run `make setup` (it installs colcon)'
    env = dict(os.environ, PATH=f'{VENV_BIN}{os.pathsep}{os.environ.get("PATH", "")}')
    env.pop('PYTHONPATH', None)
    return subprocess.run(
        [str(colcon), 'build', '--base-paths', str(root / 'src'),
         '--build-base', str(root / 'build'), '--install-base', str(root / 'install'),
         '--event-handlers', 'console_cohesion+'],
        cwd=root, env=env, capture_output=True, text=True, timeout=600,
        stdin=subprocess.DEVNULL)


def send_until_pose(harness: RosHarness, started: Started, image_topic: str, pose_topic: str,
                    frame: np.ndarray, compressed: bool = False,
                    timeout_s: float = START_TIMEOUT_S) -> PoseStamped:
    """Publish ``frame`` (new stamp each time) until a pose for one of them arrives.

    The node may still be starting (loading torch, exporting ONNX), so images are re-sent
    every half second; a pose must carry the stamp of one of the images sent.
    """
    node = harness.node
    poses: list[PoseStamped] = []
    sub = node.create_subscription(PoseStamped, pose_topic, poses.append, 10)
    pub = node.create_publisher(CompressedImage if compressed else Image,
                                image_topic + ('/compressed' if compressed else ''), 10)
    msg = rgb_to_compressed(frame) if compressed else rgb_to_image(frame)
    sent = set()
    try:
        deadline = time.monotonic() + timeout_s
        while not poses:
            if started.proc.poll() is not None:
                pytest.fail(f'{shlex.join(started.argv[4:])} exited with '
                            f'{started.proc.returncode}:\n{started.output()[-4000:]}')
            if time.monotonic() > deadline:
                pytest.fail(f'no pose on {pose_topic} within {timeout_s:.0f} s; output of '
                            f'{shlex.join(started.argv[4:])}:\n{started.output()[-4000:]}')
            stamp = 2000.0 + 0.25 * len(sent)
            msg.header.stamp = sec_to_stamp(stamp)
            pub.publish(msg)
            sent.add((msg.header.stamp.sec, msg.header.stamp.nanosec))
            harness.wait_for(lambda: bool(poses), 0.5)
        pose = poses[0]
        assert (pose.header.stamp.sec, pose.header.stamp.nanosec) in sent, \
            'the pose does not carry the stamp of an image the test sent'
        q = pose.pose.orientation
        assert np.isclose(np.linalg.norm([q.x, q.y, q.z, q.w]), 1.0, atol=1e-3)
        assert np.all(np.isfinite([pose.pose.position.x, pose.pose.position.y,
                                   pose.pose.position.z]))
        return pose
    finally:
        node.destroy_subscription(sub)
        node.destroy_publisher(pub)


def call_service(harness: RosHarness, srv_type, name: str, request, timeout_s: float = 60.0):
    """Call service ``name`` once it is available; returns the response."""
    client = harness.node.create_client(srv_type, name)
    try:
        assert client.wait_for_service(timeout_sec=timeout_s), f'{name} not available'
        future = client.call_async(request)
        assert harness.wait_for(future.done, timeout_s), f'{name} did not answer'
        return future.result()
    finally:
        harness.node.destroy_client(client)


def write_params(path: Path, **parameters) -> Path:
    """A ROS parameter file for the node under any name and namespace."""
    path.write_text(yaml.safe_dump({'/**': {'ros__parameters': parameters}}))
    return path


# ---------------------------------------------------------------------------- fixtures

@pytest.fixture(scope='module')
def env_scope(tmp_path_factory):
    """Private domain, localhost discovery, logs and the ONNX cache in temp dirs."""
    tmp = tmp_path_factory.mktemp('scope')
    with ros_environment(DOMAIN_ID, tmp / 'ros_log'):
        saved = os.environ.get('CAMRELOC_CACHE_DIR')
        os.environ['CAMRELOC_CACHE_DIR'] = str(tmp / 'cache')
        try:
            yield tmp
        finally:
            if saved is None:
                os.environ.pop('CAMRELOC_CACHE_DIR', None)
            else:
                os.environ['CAMRELOC_CACHE_DIR'] = saved


@pytest.fixture(scope='module')
def workspace(env_scope, tmp_path_factory):
    """The package built once by colcon; every process started in it is stopped at the end."""
    root = tmp_path_factory.mktemp('ws')
    result = colcon_build(root)
    assert result.returncode == 0, \
        f'colcon build failed:\n{result.stdout[-4000:]}\n{result.stderr[-4000:]}'
    ws = Workspace(root)
    yield ws
    for started in ws.started:
        started.stop()


@pytest.fixture(scope='module')
def checkpoint(tmp_path_factory) -> Path:
    """A real lite0 regressor checkpoint (ImageNet trunk, untrained head)."""
    from camreloc_ros.core.models.pose_model import build_model

    model = build_model('posenet')
    model.set_pose_stats([1.0, -2.0, 0.5], 5.0)
    return model.save_checkpoint(tmp_path_factory.mktemp('checkpoint') / 'reg.pt')


@pytest.fixture(scope='module')
def frame() -> np.ndarray:
    """One real hololens-office frame (RGB)."""
    return load_frames(1)[0]


@pytest.fixture(scope='module')
def harness(env_scope):
    """The test's own node on the private domain, spinning in a thread."""
    ros = RosHarness(DOMAIN_ID, name='install_test')
    yield ros
    ros.shutdown()


# ---------------------------------------------------------------------------- tests

def test_colcon_install_tree(workspace):
    """colcon puts the executables, the ament index marker, package.xml, launch and config."""
    prefix = workspace.prefix
    for exe in ('localizer', 'camreloc'):
        path = prefix / 'lib' / PACKAGE / exe
        assert path.is_file() and os.access(path, os.X_OK), f'{path} missing or not executable'
        assert path.read_text().startswith(f'#!{sys.prefix}/bin/python'), \
            f'{path} does not start the Python that has rclpy and torch'
    assert (prefix / 'share' / 'ament_index' / 'resource_index' / 'packages' / PACKAGE).is_file()
    share = prefix / 'share' / PACKAGE
    assert (share / 'package.xml').read_text() == (ROOT / 'package.xml').read_text()
    assert (share / 'launch' / 'localizer.launch.py').is_file()
    for name in ('localizer.yaml', 'camreloc.rviz', 'fastdds_large_images.xml'):
        assert (share / 'config' / name).is_file(), name
    assert (workspace.install / 'setup.bash').is_file()


def test_sourced_install_is_what_runs(workspace):
    """After sourcing, Python imports the installed copy and ros2 pkg finds the package."""
    result = workspace.run('python', '-c', 'import camreloc_ros; print(camreloc_ros.__file__)')
    assert result.returncode == 0, result.stderr
    assert Path(result.stdout.strip()).is_relative_to(workspace.prefix), result.stdout
    result = workspace.run('ros2', 'pkg', 'prefix', PACKAGE)
    assert result.returncode == 0, result.stderr
    assert Path(result.stdout.strip()) == workspace.prefix
    result = workspace.run('ros2', 'pkg', 'executables', PACKAGE)
    assert result.returncode == 0, result.stderr
    assert set(result.stdout.split('\n')) >= {f'{PACKAGE} camreloc', f'{PACKAGE} localizer'}


def test_installed_localizer_gives_the_offline_pose(workspace, harness, checkpoint, frame):
    """lib/camreloc_ros/localizer, started directly, publishes the offline engine's pose."""
    from camreloc_ros.core.inference.engine import InferenceEngine

    exe = workspace.prefix / 'lib' / PACKAGE / 'localizer'
    started = workspace.start('direct', str(exe), '--ros-args', '-r', '__ns:=/direct',
                              '-p', f'model:={checkpoint}', '-p', 'qos.reliability:=reliable')
    try:
        pose = send_until_pose(harness, started, '/direct/image', '/direct/pose', frame)
        assert pose.header.frame_id == 'map'
        expected = InferenceEngine.from_checkpoint(checkpoint, device='cpu').predict(frame, 0.0)
        p, q = pose.pose.position, pose.pose.orientation
        np.testing.assert_allclose([p.x, p.y, p.z], expected.position, atol=1e-3)
        np.testing.assert_allclose(np.abs(np.dot([q.x, q.y, q.z, q.w], expected.quaternion)),
                                   1.0, atol=1e-5)
        assert 'active: localizing' in started.output()
    finally:
        started.stop()


def test_ros2_run_with_a_params_file(workspace, harness, checkpoint, frame, tmp_path):
    """``ros2 run camreloc_ros localizer --ros-args --params-file F -p model:=M``."""
    params = write_params(tmp_path / 'run.yaml', map_frame='run_map',
                          qos={'reliability': 'reliable'})
    started = workspace.start('ros2_run', 'ros2', 'run', PACKAGE, 'localizer', '--ros-args',
                              '--params-file', str(params), '-p', f'model:={checkpoint}')
    try:
        pose = send_until_pose(harness, started, '/image', '/pose', frame)
        assert pose.header.frame_id == 'run_map', 'the params file was not applied'
    finally:
        started.stop()


def test_ros2_launch_namespace_remap_params_sim_time(workspace, harness, checkpoint, frame,
                                                     tmp_path):
    """``ros2 launch``: namespace, image_topic remap, params_file, model, use_sim_time."""
    from rcl_interfaces.srv import GetParameters

    params = write_params(tmp_path / 'launch.yaml', map_frame='launch_map',
                          qos={'reliability': 'reliable'})
    started = workspace.start(
        'launch_ns', 'ros2', 'launch', PACKAGE, 'localizer.launch.py', f'model:={checkpoint}',
        'namespace:=robot1', 'image_topic:=/cam/image_raw', f'params_file:={params}',
        'use_sim_time:=true')
    try:
        pose = send_until_pose(harness, started, '/cam/image_raw', '/robot1/pose', frame)
        assert pose.header.frame_id == 'launch_map', 'params_file was not applied'
        answer = call_service(harness, GetParameters, '/robot1/camreloc/get_parameters',
                              GetParameters.Request(names=['use_sim_time', 'model',
                                                           'autostart', 'input']))
        values = [v for v in answer.values]
        assert values[0].bool_value is True, 'use_sim_time:=true did not reach the node'
        assert values[1].string_value == str(checkpoint)
        assert values[2].bool_value is True and values[3].string_value == 'raw', \
            'autostart and input must keep the params_file values when not given'
        assert 'active: localizing' in started.output(), 'log_level info hides INFO lines'
    finally:
        started.stop()


def test_ros2_launch_autostart_false_compressed_log_level(workspace, harness, checkpoint,
                                                          frame, tmp_path):
    """autostart:=false waits for a lifecycle manager; input:=compressed; log_level:=warn.

    The model comes from the params file (no model:= argument).
    """
    from lifecycle_msgs.msg import State, Transition
    from lifecycle_msgs.srv import ChangeState, GetState

    params = write_params(tmp_path / 'lifecycle.yaml', model=str(checkpoint), autostart=True,
                          qos={'reliability': 'reliable'})
    started = workspace.start(
        'launch_lifecycle', 'ros2', 'launch', PACKAGE, 'localizer.launch.py',
        f'params_file:={params}', 'autostart:=false', 'input:=compressed',
        'image_topic:=/cam2/image', 'log_level:=warn')
    try:
        state = call_service(harness, GetState, '/camreloc/get_state', GetState.Request(),
                             timeout_s=START_TIMEOUT_S)
        assert state.current_state.id == State.PRIMARY_STATE_UNCONFIGURED, \
            f'autostart:=false must leave the node unconfigured:\n{started.output()[-3000:]}'
        for transition in (Transition.TRANSITION_CONFIGURE, Transition.TRANSITION_ACTIVATE):
            answer = call_service(harness, ChangeState, '/camreloc/change_state',
                                  ChangeState.Request(transition=Transition(id=transition)),
                                  timeout_s=START_TIMEOUT_S)
            assert answer.success, f'transition {transition} failed:\n{started.output()}'
        send_until_pose(harness, started, '/cam2/image', '/pose', frame, compressed=True)
        output = started.output()
        assert 'process started' in output
        assert 'active: localizing' not in output, 'log_level:=warn let an INFO line through'
    finally:
        started.stop()


@pytest.mark.parametrize('argument, message', [
    ('image_topic:=/', 'image_topic is empty'),
    ('image_topic:= ', 'image_topic is empty'),
    ('autostart:=maybe', "autostart:='maybe' is not valid: expected one of true, false"),
    ('input:=video', "input:='video' is not valid: expected one of raw, compressed"),
    ('log_level:=verbose', "log_level:='verbose' is not valid"),
    ('use_sim_time:=yes', "use_sim_time:='yes' is not valid"),
])
def test_ros2_launch_refuses_bad_arguments(workspace, argument, message):
    """A bad argument stops the launch with a message naming it; no node is started."""
    result = workspace.run('ros2', 'launch', PACKAGE, 'localizer.launch.py', 'model:=m.pt',
                           argument)
    assert result.returncode != 0
    output = result.stdout + result.stderr
    assert message in output, output
    assert 'process started' not in output


def test_empty_image_topic_from_an_including_launch_file(workspace, tmp_path):
    """image_topic '' (possible only from another launch file) is refused, not remapped."""
    parent = tmp_path / 'robot.launch.py'
    parent.write_text(
        'from launch import LaunchDescription\n'
        'from launch.actions import IncludeLaunchDescription\n'
        'from launch.launch_description_sources import PythonLaunchDescriptionSource\n'
        'from launch.substitutions import PathJoinSubstitution\n'
        'from launch_ros.substitutions import FindPackageShare\n\n\n'
        'def generate_launch_description():\n'
        '    return LaunchDescription([IncludeLaunchDescription(\n'
        '        PythonLaunchDescriptionSource(PathJoinSubstitution([\n'
        "            FindPackageShare('camreloc_ros'), 'launch', 'localizer.launch.py'])),\n"
        "        launch_arguments={'image_topic': '', 'model': 'm.pt'}.items())])\n")
    result = workspace.run('ros2', 'launch', str(parent))
    output = result.stdout + result.stderr
    assert result.returncode != 0
    assert 'launch argument image_topic is empty' in output, output
    assert 'process started' not in output
