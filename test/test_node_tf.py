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

"""The localizer in a robot's TF tree, over real rclpy / Fast DDS (REP 105, Nav2 bootstrap).

The test node plays the robot: camera extrinsics on ``/tf_static`` and odometry on ``/tf``
(tf2_msgs/TFMessage, as robot_state_publisher and a base driver publish them). Without
tf2_ros here, the node reads them through its own ``/tf`` + ``/tf_static`` listener.
Checked: the pose topics give base_link's pose (camera pose composed with the extrinsics at
the image stamp, covariance propagated), ``map -> odom`` as AMCL publishes it (future-dated by
``transform_tolerance``), missing transforms counted in diagnostics, ``~/localize`` ->
``initialpose``, ``initialpose`` -> the gate, ``latched_pose``, and the refusal of a second
parent.
"""

import threading
import time

from diagnostic_msgs.msg import DiagnosticArray
from geometry_msgs.msg import (PoseStamped, PoseWithCovarianceStamped, Transform,
                               TransformStamped)
import numpy as np
import pytest
from rclpy.lifecycle import TransitionCallbackReturn
from rclpy.parameter import Parameter
from rclpy.qos import QoSDurabilityPolicy, QoSProfile, QoSReliabilityPolicy
from support import allocate_domain, load_frames, ros_harness, RosHarness
from sensor_msgs.msg import Image
from std_msgs.msg import Header
from std_srvs.srv import Trigger
from tf2_msgs.msg import TFMessage

from camreloc_ros.core.robot.tf_tree import base_covariance, base_pose
from camreloc_ros.core.geometry import interpolate_pose, matrix_from_pose, quat_from_rotvec
from camreloc_ros.ros.conversions import rgb_to_image, sec_to_stamp, stamp_to_ns
from camreloc_ros.ros.localizer_node import LocalizerNode
from camreloc_ros.ros.tf_io import TF_QOS

DOMAIN_ID = allocate_domain()
TIMEOUT_S = 15.0
TOLERANCE_S = 0.5
pytestmark = [pytest.mark.timeout(240), pytest.mark.slow]   # real DDS

# the robot: camera 0.3 m ahead and 0.6 m up of base_link, optical axes (z forward)
EXTRINSICS = (np.array([0.3, -0.05, 0.6]), quat_from_rotvec([-1.2092, 1.2092, -1.2092]))
ODOM_A = (np.array([1.0, 2.0, 0.0]), quat_from_rotvec([0.0, 0.0, 0.3]))
ODOM_B = (np.array([1.4, 2.2, 0.0]), quat_from_rotvec([0.0, 0.0, 0.5]))


def transform(parent: str, child: str, stamp: float, pose) -> TransformStamped:
    """A TransformStamped ``parent -> child`` (child's pose in parent)."""
    (x, y, z), (qx, qy, qz, qw) = pose
    t = TransformStamped(header=Header(stamp=sec_to_stamp(stamp), frame_id=parent),
                         child_frame_id=child, transform=Transform())
    t.transform.translation.x, t.transform.translation.y, t.transform.translation.z = x, y, z
    r = t.transform.rotation
    r.x, r.y, r.z, r.w = qx, qy, qz, qw
    return t


def pose_of(msg) -> tuple[np.ndarray, np.ndarray]:
    """Position and quaternion of a Pose or Transform message."""
    if hasattr(msg, 'translation'):
        p, q = msg.translation, msg.rotation
    else:
        p, q = msg.position, msg.orientation
    return np.array([p.x, p.y, p.z]), np.array([q.x, q.y, q.z, q.w])


def assert_same_pose(got, expected, atol: float = 1e-4) -> None:
    """Two poses are the same transform."""
    np.testing.assert_allclose(matrix_from_pose(*got), matrix_from_pose(*expected), atol=atol)


class Robot:
    """The test node's side: TF publishers and subscribers to every output of one namespace."""

    def __init__(self, harness: RosHarness, namespace: str):
        node = harness.node
        self.harness, self.lock = harness, threading.Lock()
        self.poses: dict[int, PoseStamped] = {}
        self.covs: dict[int, PoseWithCovarianceStamped] = {}
        self.initialposes: list[PoseWithCovarianceStamped] = []
        self.tf: list[TransformStamped] = []
        self.diagnostics: list[DiagnosticArray] = []
        self.tf_pub = node.create_publisher(TFMessage, '/tf', TF_QOS)
        self.image_pub = node.create_publisher(Image, f'/{namespace}/image', 10)
        self.initialpose_pub = node.create_publisher(PoseWithCovarianceStamped,
                                                     f'/{namespace}/initialpose', 10)
        self.subs = [
            node.create_subscription(PoseStamped, f'/{namespace}/pose', self._keep(self.poses),
                                     10),
            node.create_subscription(PoseWithCovarianceStamped,
                                     f'/{namespace}/pose_with_covariance',
                                     self._keep(self.covs), 10),
            node.create_subscription(PoseWithCovarianceStamped, f'/{namespace}/initialpose',
                                     self.initialposes.append, 10),
            node.create_subscription(TFMessage, '/tf', lambda m: self.tf.extend(m.transforms),
                                     TF_QOS),
            node.create_subscription(DiagnosticArray, '/diagnostics',
                                     self.diagnostics.append, 10),
        ]

    def _keep(self, store: dict):
        def callback(msg) -> None:
            with self.lock:
                store[stamp_to_ns(msg.header.stamp)] = msg
        return callback

    def wait_matched(self) -> None:
        assert self.harness.wait_for(lambda: self.image_pub.get_subscription_count() > 0
                                     and self.subs[0].get_publisher_count() > 0
                                     and self.subs[1].get_publisher_count() > 0, TIMEOUT_S)

    def send(self, rgb: np.ndarray, stamp: float, frame_id: str) -> None:
        msg = rgb_to_image(rgb)
        msg.header = Header(stamp=sec_to_stamp(stamp), frame_id=frame_id)
        self.image_pub.publish(msg)

    def wait_pose(self, stamp: float) -> PoseStamped:
        key = stamp_to_ns(sec_to_stamp(stamp))
        assert self.harness.wait_for(lambda: key in self.poses and key in self.covs,
                                     TIMEOUT_S), f'no pose for the image stamped {stamp}'
        return self.poses[key]

    def diagnostic_values(self, name: str, predicate) -> dict | None:
        for array in list(self.diagnostics):
            for status in array.status:
                values = {kv.key: kv.value for kv in status.values}
                if status.name == name and predicate(values):
                    return values
        return None


# ---------------------------------------------------------------------------- fixtures

@pytest.fixture(scope='module')
def harness(tmp_path_factory):
    """Private domain; the robot's static TF latched on /tf_static (one message, as tf2)."""
    with ros_harness(DOMAIN_ID, tmp_path_factory.mktemp('ros_log')) as ros:
        ros.static_pub = ros.node.create_publisher(TFMessage, '/tf_static', QoSProfile(
            depth=1, reliability=QoSReliabilityPolicy.RELIABLE,
            durability=QoSDurabilityPolicy.TRANSIENT_LOCAL))
        ros.static_pub.publish(TFMessage(transforms=[
            transform('base_link', 'camera_optical', 0.0, EXTRINSICS),
            transform('world', 'odom_elsewhere', 0.0, (np.zeros(3), np.array([0, 0, 0, 1.0]))),
        ]))
        yield ros


@pytest.fixture(scope='module')
def frames():
    return load_frames(3, stride=7)


def _localizer(harness, namespace: str, **params) -> LocalizerNode:
    return harness.localizer(namespace, **{'qos.reliability': 'reliable', **params})


@pytest.fixture(scope='module')
def robot(harness, checkpoints):
    """A localizer publishing map -> odom, latched poses, over the node's own TF listener."""
    node = _localizer(harness, 'robot', model=str(checkpoints['reg']), tf_mode='map_to_odom',
                      transform_tolerance=TOLERANCE_S, transform_timeout=3.0,
                      latched_pose=True, diagnostics_period=0.2)
    assert node.is_active
    side = Robot(harness, 'robot')
    side.wait_matched()
    side.node = node
    yield side
    harness.remove(node)


def _publish_odometry(robot: Robot, stamp: float) -> None:
    """odom -> base_link samples 0.1 s either side of ``stamp`` (the image is between)."""
    robot.tf_pub.publish(TFMessage(transforms=[transform('odom', 'base_link', stamp - 0.1,
                                                         ODOM_A)]))
    robot.tf_pub.publish(TFMessage(transforms=[transform('odom', 'base_link', stamp + 0.1,
                                                         ODOM_B)]))


# ---------------------------------------------------------------------------- tests

def test_base_pose_and_map_to_odom_like_amcl(robot, offline, frames):
    """Pose = base_link in map; map -> odom future-dated, closing the loop with odometry."""
    stamp = 500.0
    _publish_odometry(robot, stamp)
    robot.send(frames[0], stamp, 'camera_optical')
    pose = robot.wait_pose(stamp)
    camera = offline.predict(frames[0])
    cam = (camera.position, camera.quaternion)
    expected = base_pose(cam, EXTRINSICS)
    assert pose.header.frame_id == 'map'
    assert_same_pose(pose_of(pose.pose), expected)
    cov = np.asarray(robot.covs[stamp_to_ns(pose.header.stamp)].pose.covariance).reshape(6, 6)
    np.testing.assert_allclose(cov, base_covariance(camera.covariance, cam, EXTRINSICS),
                               rtol=1e-5, atol=1e-9)
    assert not np.allclose(cov, camera.covariance), 'the lever arm must change it'

    expires = stamp_to_ns(sec_to_stamp(stamp + TOLERANCE_S))

    def map_odom():
        return [t for t in list(robot.tf) if t.child_frame_id == 'odom'
                and stamp_to_ns(t.header.stamp) == expires]
    assert robot.harness.wait_for(map_odom, TIMEOUT_S), 'no future-dated map -> odom'
    tf = map_odom()[0]
    assert tf.header.frame_id == 'map'
    odom_base = interpolate_pose(*ODOM_A, *ODOM_B, 0.5)     # odometry at the image stamp
    composed = matrix_from_pose(*pose_of(tf.transform)) @ matrix_from_pose(*odom_base)
    np.testing.assert_allclose(composed, matrix_from_pose(*expected), atol=1e-4)
    assert not any(t.child_frame_id == 'camreloc_camera' for t in list(robot.tf))


def test_missing_transforms_are_counted_not_raised(robot, frames):
    """Unknown camera frame: no pose, tf_missing in diagnostics; the node keeps localizing."""
    stamp = 510.0
    robot.send(frames[1], stamp, 'no_such_camera')
    assert robot.harness.wait_for(
        lambda: robot.diagnostic_values('robot/camreloc: localizer',
                                        lambda v: int(v['tf_missing']) >= 1), TIMEOUT_S)
    assert stamp_to_ns(sec_to_stamp(stamp)) not in robot.poses
    values = robot.diagnostic_values('robot/camreloc: localizer', lambda v: True)
    assert values['tf_lookup'] == 'tf_listener' and values['tf_mode'] == 'map_to_odom'
    assert values['tf_refused'] == ''
    # the extrinsics are there but the odometry stops before the stamp: pose yes, TF no
    _publish_odometry(robot, 520.0)
    missing = robot.node._frames.tf_missing
    robot.send(frames[1], 530.0, 'camera_optical')
    robot.wait_pose(530.0)
    assert robot.harness.wait_for(lambda: robot.node._frames.tf_missing == missing + 1,
                                  TIMEOUT_S)
    # an image in base_link itself: identity extrinsics
    _publish_odometry(robot, 540.0)
    robot.send(frames[2], 540.0, 'base_link')
    robot.wait_pose(540.0)


def test_localize_publishes_next_pose_on_initialpose(robot, frames):
    """~/localize: the next accepted pose goes to initialpose once (Nav2 AMCL bootstrap)."""
    client = robot.harness.node.create_client(Trigger, '/robot/camreloc/localize')
    try:
        assert client.wait_for_service(timeout_sec=TIMEOUT_S)
        future = client.call_async(Trigger.Request())
        assert robot.harness.wait_for(future.done, TIMEOUT_S)
        assert future.result().success, future.result().message
        assert '/robot/initialpose' in future.result().message
    finally:
        robot.harness.node.destroy_client(client)
    before = len(robot.initialposes)
    for stamp in (550.0, 551.0):
        _publish_odometry(robot, stamp)
        robot.send(frames[0], stamp, 'camera_optical')
        robot.wait_pose(stamp)
    assert robot.harness.wait_for(lambda: len(robot.initialposes) > before, TIMEOUT_S)
    first = robot.initialposes[before]
    assert first.header.frame_id == 'map'
    assert stamp_to_ns(first.header.stamp) == stamp_to_ns(sec_to_stamp(550.0))
    assert_same_pose(pose_of(first.pose.pose),
                     pose_of(robot.poses[stamp_to_ns(first.header.stamp)].pose))
    assert len(robot.initialposes) == before + 1, 'published once per request'


def test_initialpose_seeds_the_gate(robot, offline, frames):
    """A far-away initialpose makes the next pose an implausible jump (gated)."""
    node = robot.node
    assert node.set_parameters([Parameter('gate.max_speed', value=1.0)])[0].successful
    try:
        far = PoseWithCovarianceStamped(header=Header(stamp=sec_to_stamp(559.9),
                                                      frame_id='map'))
        far.pose.pose.position.x = 1000.0
        far.pose.pose.orientation.w = 1.0
        received = node._frames.initialposes_received
        robot.initialpose_pub.publish(far)
        assert robot.harness.wait_for(
            lambda: node._frames.initialposes_received == received + 1, TIMEOUT_S)
        gated = node.stats.snapshot()['gated']
        _publish_odometry(robot, 560.0)
        robot.send(frames[0], 560.0, 'camera_optical')
        assert robot.harness.wait_for(lambda: node.stats.snapshot()['gated'] == gated + 1,
                                      TIMEOUT_S)
        assert stamp_to_ns(sec_to_stamp(560.0)) not in robot.poses
        # a gated frame re-sends the last map -> odom with its own stamp + tolerance
        expires = stamp_to_ns(sec_to_stamp(560.0 + TOLERANCE_S))
        assert robot.harness.wait_for(lambda: any(
            t.child_frame_id == 'odom' and stamp_to_ns(t.header.stamp) == expires
            for t in list(robot.tf)), TIMEOUT_S)
        # an initialpose in another frame is ignored
        far.header.frame_id = 'odom'
        robot.initialpose_pub.publish(far)
    finally:
        node.set_parameters([Parameter('gate.max_speed', value=0.0)])
    _publish_odometry(robot, 570.0)
    robot.send(frames[0], 570.0, 'camera_optical')
    robot.wait_pose(570.0)
    assert node._frames.initialposes_received == received + 1


def test_latched_pose_reaches_a_late_subscriber(robot):
    """latched_pose: a transient-local subscriber created later gets the last pose."""
    got = []
    qos = QoSProfile(depth=1, reliability=QoSReliabilityPolicy.RELIABLE,
                     durability=QoSDurabilityPolicy.TRANSIENT_LOCAL)
    sub = robot.harness.node.create_subscription(PoseWithCovarianceStamped,
                                                 '/robot/pose_with_covariance', got.append, qos)
    try:
        assert robot.harness.wait_for(lambda: got, TIMEOUT_S), 'no latched pose'
        last = max(robot.covs)
        assert stamp_to_ns(got[0].header.stamp) == last
    finally:
        robot.harness.node.destroy_subscription(sub)


def test_odometry_lookup_waits_only_for_a_sample_on_its_way(robot):
    """refine.motion's odometry lookup (FrameIO.odom_camera): with odometry in TF it waits for
    the sample after the image stamp; a frame TF does not know answers None at once."""
    io = robot.node._frames
    robot.tf_pub.publish(TFMessage(transforms=[transform('odom', 'base_link', 575.0, ODOM_A)]))
    first = Header(stamp=sec_to_stamp(575.0), frame_id='camera_optical')
    assert robot.harness.wait_for(lambda: io.odom_camera(first) is not None, TIMEOUT_S)
    later = threading.Timer(0.3, lambda: robot.tf_pub.publish(TFMessage(
        transforms=[transform('odom', 'base_link', 575.2, ODOM_B)])))
    later.start()
    t0 = time.monotonic()
    pose = io.odom_camera(Header(stamp=sec_to_stamp(575.1), frame_id='camera_optical'), 5.0)
    waited = time.monotonic() - t0
    later.join()
    assert pose is not None and 0.2 < waited < 5.0, waited
    odom_base = interpolate_pose(*ODOM_A, *ODOM_B, 0.5)
    expected = matrix_from_pose(*odom_base) @ matrix_from_pose(*EXTRINSICS)
    np.testing.assert_allclose(pose[0], expected[:3, 3], atol=1e-6)
    t0 = time.monotonic()
    unknown = Header(stamp=sec_to_stamp(575.1), frame_id='no_such_camera')
    assert io.odom_camera(unknown, 5.0) is None and time.monotonic() - t0 < 1.0


def test_second_parent_found_later_stops_tf(robot, frames):
    """Another publisher gives odom a second parent: TF stops, poses go on, diagnostics say."""
    robot.tf_pub.publish(TFMessage(transforms=[transform('intruder', 'odom', 580.0,
                                                         ODOM_A)]))
    assert robot.harness.wait_for(lambda: robot.diagnostic_values(
        'robot/camreloc: localizer', lambda v: v['tf_refused'] != ''), TIMEOUT_S)
    values = robot.diagnostic_values('robot/camreloc: localizer', lambda v: v['tf_refused'])
    assert "frame 'odom' already has the parent 'intruder'" in values['tf_refused']
    _publish_odometry(robot, 590.0)
    robot.send(frames[0], 590.0, 'camera_optical')
    robot.wait_pose(590.0)
    expires = stamp_to_ns(sec_to_stamp(590.0 + TOLERANCE_S))
    assert not robot.harness.wait_for(lambda: any(
        t.child_frame_id == 'odom' and stamp_to_ns(t.header.stamp) == expires
        and t.header.frame_id == 'map' for t in list(robot.tf)), 1.0)


def test_second_parent_is_refused(harness, checkpoints, capfd):
    """odom_frame already has a parent in TF: configure fails and says why."""
    node = _localizer(harness, 'twice', model=str(checkpoints['reg']), tf_mode='map_to_odom',
                      odom_frame='odom_elsewhere', transform_timeout=5.0)
    try:
        assert not node.is_active and node.engine is None
        err = capfd.readouterr().err
        assert "frame 'odom_elsewhere' already has the parent 'world'" in err, err[-2000:]
        assert 'second parent' in err
        # tf_mode camera does not publish odom_elsewhere: accepted
        assert node.set_parameters([Parameter('tf_mode', value='camera')])[0].successful
        assert node.trigger_configure() == TransitionCallbackReturn.SUCCESS
        assert node.trigger_cleanup() == TransitionCallbackReturn.SUCCESS
        # three frames that are not different are refused before anything loads
        assert node.set_parameters([Parameter('tf_mode', value='map_to_odom'),
                                    Parameter('odom_frame', value='map')])[0].successful
        assert node.trigger_configure() == TransitionCallbackReturn.FAILURE
        assert 'three different frames' in capfd.readouterr().err
    finally:
        harness.remove(node)


def test_publish_tf_false_still_turns_tf_off(harness, checkpoints):
    """The deprecated publish_tf: false wins over tf_mode."""
    node = _localizer(harness, 'quiet', model=str(checkpoints['reg']), publish_tf=False,
                      autostart=False)
    try:
        assert node.trigger_configure() == TransitionCallbackReturn.SUCCESS
        assert node._frames.conf.tf_mode == 'none' and node._frames._send is None
        assert node.trigger_cleanup() == TransitionCallbackReturn.SUCCESS
    finally:
        harness.remove(node)


def test_camera_mode_with_remapped_tf(harness, checkpoints, offline, frames):
    """tf_mode camera: the leaf TF is the camera pose, the topics base_link's; /tf remapped."""
    node = harness.add(LocalizerNode(
        namespace='robot2', context=harness.context,
        cli_args=['--ros-args', '-r', '/tf:=/robot2/tf', '-r', '/tf_static:=/robot2/tf_static'],
        parameter_overrides=[Parameter('model', value=str(checkpoints['reg'])),
                             Parameter('device', value='cpu'),
                             Parameter('qos.reliability', value='reliable'),
                             Parameter('transform_timeout', value=3.0)]))
    try:
        assert node.is_active
        static = harness.node.create_publisher(TFMessage, '/robot2/tf_static', QoSProfile(
            depth=1, reliability=QoSReliabilityPolicy.RELIABLE,
            durability=QoSDurabilityPolicy.TRANSIENT_LOCAL))
        static.publish(TFMessage(transforms=[transform('base_link', 'cam2', 0.0, EXTRINSICS)]))
        side = Robot(harness, 'robot2')
        remapped_tf = []
        harness.node.create_subscription(TFMessage, '/robot2/tf',
                                         lambda m: remapped_tf.extend(m.transforms), TF_QOS)
        side.wait_matched()
        side.send(frames[1], 600.0, 'cam2')
        pose = side.wait_pose(600.0)
        camera = offline.predict(frames[1])
        assert_same_pose(pose_of(pose.pose),
                         base_pose((camera.position, camera.quaternion), EXTRINSICS))

        def leaf():
            return [t for t in list(remapped_tf) if t.child_frame_id == 'camreloc_camera'
                    and t.header.stamp == pose.header.stamp]
        assert harness.wait_for(leaf, TIMEOUT_S), 'no camera TF on the remapped /tf'
        assert_same_pose(pose_of(leaf()[0].transform), (camera.position, camera.quaternion))
        assert not any(t.child_frame_id == 'camreloc_camera' and
                       t.header.stamp == pose.header.stamp for t in list(side.tf))
    finally:
        harness.remove(node)
