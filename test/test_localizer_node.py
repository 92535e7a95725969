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

"""The live localizer over real rclpy / Fast DDS: live poses equal the offline engine's.

Nodes run in-process in namespaces of one private domain: ``raw`` (a regressor, Image),
``jpeg`` (the same regressor, CompressedImage, default sensor-data QoS), ``gru`` (a temporal
model). A test node publishes real hololens-office images and listens to every output.
"""

import itertools
import threading
import time

import cv2
from diagnostic_msgs.msg import DiagnosticArray
from geometry_msgs.msg import PoseStamped, PoseWithCovarianceStamped
import numpy as np
import pytest
from rclpy.lifecycle import TransitionCallbackReturn
from rclpy.parameter import Parameter
from support import allocate_domain, load_frames, ros_harness, RosHarness
from sensor_msgs.msg import CompressedImage, Image
from std_srvs.srv import Trigger
from tf2_msgs.msg import TFMessage

from camreloc_ros.core.inference.engine import InferenceEngine
from camreloc_ros.ros.conversions import (rgb_to_compressed, rgb_to_image, sec_to_stamp,
                                          stamp_to_ns)
from camreloc_ros.ros.localizer_node import LocalizerNode, TF_QOS

DOMAIN_ID = allocate_domain()
TIMEOUT_S = 10.0
pytestmark = [pytest.mark.timeout(120), pytest.mark.slow]   # real DDS

_stamps = itertools.count()


def next_stamp(step: float = 0.05) -> float:
    """Unique, increasing image stamps across the whole module (seconds)."""
    return 1000.0 + step * next(_stamps)


class Probe:
    """The test side of one localizer: an image publisher and subscribers to every output."""

    def __init__(self, harness: RosHarness, node: LocalizerNode, namespace: str,
                 compressed: bool = False, reliable: bool = True):
        self.harness, self.node, self.reliable = harness, node, reliable
        test_node = harness.node
        self.lock = threading.Lock()
        self.poses: dict[int, PoseStamped] = {}
        self.covs: dict[int, PoseWithCovarianceStamped] = {}
        self.diagnostics: list[DiagnosticArray] = []
        self.subs = [
            test_node.create_subscription(PoseStamped, f'/{namespace}/pose',
                                          self._keep(self.poses), 10),
            test_node.create_subscription(PoseWithCovarianceStamped,
                                          f'/{namespace}/pose_with_covariance',
                                          self._keep(self.covs), 10),
            test_node.create_subscription(DiagnosticArray, '/diagnostics',
                                          self.diagnostics.append, 10),
        ]
        msg_type = CompressedImage if compressed else Image
        topic = f'/{namespace}/image' + ('/compressed' if compressed else '')
        self.pub = test_node.create_publisher(msg_type, topic, 10)
        assert harness.wait_for(lambda: self.pub.get_subscription_count() > 0
                                and self.subs[0].get_publisher_count() > 0
                                and self.subs[1].get_publisher_count() > 0, TIMEOUT_S), \
            f'{topic} never matched the localizer'

    def _keep(self, store: dict):
        def callback(msg) -> None:
            with self.lock:
                store[stamp_to_ns(msg.header.stamp)] = msg
        return callback

    def send(self, msg, stamp: float) -> PoseStamped:
        """Publish ``msg`` stamped ``stamp``; wait for its pose (re-send if best-effort)."""
        msg.header.stamp = sec_to_stamp(stamp)
        key = stamp_to_ns(msg.header.stamp)
        for _ in range(1 if self.reliable else 5):
            self.pub.publish(msg)
            if self.harness.wait_for(lambda: key in self.poses,
                                     TIMEOUT_S if self.reliable else 2.0):
                return self.poses[key]
        raise AssertionError(f'no pose for the image stamped {stamp}')

    def send_no_pose(self, msg, stamp: float, counter: str) -> None:
        """Publish ``msg`` that must not give a pose; wait until ``counter`` goes up."""
        msg.header.stamp = sec_to_stamp(stamp)
        before = self.node.stats.snapshot()[counter]
        for _ in range(1 if self.reliable else 5):
            self.pub.publish(msg)
            if self.harness.wait_for(
                    lambda: self.node.stats.snapshot()[counter] > before,
                    TIMEOUT_S if self.reliable else 2.0):
                break
        assert self.node.stats.snapshot()[counter] == before + 1, f'{counter} did not count it'
        assert stamp_to_ns(msg.header.stamp) not in self.poses


def call_reset(harness: RosHarness, service: str) -> Trigger.Response:
    """Call a ``~/reset`` service and wait for the answer."""
    client = harness.node.create_client(Trigger, service)
    try:
        assert client.wait_for_service(timeout_sec=TIMEOUT_S), f'{service} not available'
        future = client.call_async(Trigger.Request())
        assert harness.wait_for(future.done, TIMEOUT_S), f'{service} did not answer'
        return future.result()
    finally:
        harness.node.destroy_client(client)


def assert_pose_equal(msg: PoseStamped, expected, atol: float = 1e-4) -> None:
    """A published pose equals an offline :class:`Prediction`."""
    p, q = msg.pose.position, msg.pose.orientation
    np.testing.assert_allclose([p.x, p.y, p.z], expected.position, atol=atol)
    np.testing.assert_allclose([q.x, q.y, q.z, q.w], expected.quaternion, atol=atol)


# ---------------------------------------------------------------------------- fixtures

@pytest.fixture(scope='module')
def harness(tmp_path_factory):
    """Private domain, localhost discovery, logs in a temp dir; executor in a thread."""
    with ros_harness(DOMAIN_ID, tmp_path_factory.mktemp('ros_log')) as ros:
        ros.tf = []
        ros.node.create_subscription(TFMessage, '/tf', ros.tf.append, TF_QOS)
        yield ros


@pytest.fixture(scope='module')
def frames():
    """Six real frames of the hololens-office sequence (540x360 RGB)."""
    return load_frames(6, stride=5)


def _localizer(harness, namespace: str, **params) -> LocalizerNode:
    return harness.localizer(namespace, **params)


@pytest.fixture(scope='module')
def raw(harness, checkpoints):
    """A regressor localizer on raw images (reliable QoS: no lost test frames)."""
    node = _localizer(harness, 'raw', model=str(checkpoints['reg']),
                      **{'qos.reliability': 'reliable'})
    assert node.is_active
    yield Probe(harness, node, 'raw')
    harness.remove(node)


@pytest.fixture(scope='module')
def jpeg(harness, checkpoints):
    """The same regressor on JPEG images, default sensor-data QoS."""
    node = _localizer(harness, 'jpeg', model=str(checkpoints['reg']), input='compressed')
    assert node.is_active
    yield Probe(harness, node, 'jpeg', compressed=True, reliable=False)
    harness.remove(node)


@pytest.fixture(scope='module')
def gru(harness, checkpoints):
    """A temporal GRU localizer (window 4, max_gap 1 s)."""
    node = _localizer(harness, 'gru', model=str(checkpoints['gru']), max_gap=1.0,
                      **{'qos.reliability': 'reliable', 'camera_pose_frame': 'gru_camera'})
    yield Probe(harness, node, 'gru')
    harness.remove(node)


# ---------------------------------------------------------------------------- tests

def test_rgb8_pose_equals_offline(harness, raw, offline, frames):
    """Pose, covariance and TF of rgb8 frames equal the offline engine; stamps are kept."""
    for frame in frames[:2]:
        stamp = next_stamp()
        pose = raw.send(rgb_to_image(frame, 'rgb8'), stamp)
        expected = offline.predict(frame)
        assert_pose_equal(pose, expected)
        assert pose.header.stamp == sec_to_stamp(stamp)
        assert pose.header.frame_id == 'map'

        key = stamp_to_ns(pose.header.stamp)
        assert harness.wait_for(lambda: key in raw.covs, TIMEOUT_S)
        cov_msg = raw.covs[key]
        assert cov_msg.header.frame_id == 'map'
        assert_pose_equal(cov_msg.pose, expected)
        cov = np.asarray(cov_msg.pose.covariance).reshape(6, 6)
        np.testing.assert_array_equal(cov, cov.T)
        assert np.all(np.linalg.eigvalsh(cov) > 0)
        np.testing.assert_allclose(cov, expected.covariance, rtol=1e-6)

        def tf_for_stamp():
            return [t for m in list(harness.tf) for t in m.transforms
                    if t.child_frame_id == 'camreloc_camera'
                    and t.header.stamp == pose.header.stamp]
        assert harness.wait_for(tf_for_stamp, TIMEOUT_S), 'no TF for the frame on /tf'
        tf = tf_for_stamp()[0]
        assert tf.header.frame_id == 'map'
        t = tf.transform.translation
        np.testing.assert_allclose([t.x, t.y, t.z], expected.position, atol=1e-4)


@pytest.mark.parametrize('encoding', ['bgr8', 'mono8', 'rgba8', 'bgra8'])
def test_other_encodings_equal_offline(raw, offline, frames, encoding):
    """bgr8/rgba8/bgra8 give the rgb8 pose; mono8 the engine's pose on the mono image."""
    frame = frames[2]
    pose = raw.send(rgb_to_image(frame, encoding), next_stamp())
    if encoding == 'mono8':
        expected = offline.predict(cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY))
    else:
        expected = offline.predict(frame)
    assert_pose_equal(pose, expected)


def test_bayer_is_debayered(raw, offline, frames):
    """A bayer_rggb8 mosaic is debayered with OpenCV before inference."""
    frame = frames[3]
    mosaic = np.empty(frame.shape[:2], np.uint8)
    mosaic[0::2, 0::2] = frame[0::2, 0::2, 0]
    mosaic[0::2, 1::2] = frame[0::2, 1::2, 1]
    mosaic[1::2, 0::2] = frame[1::2, 0::2, 1]
    mosaic[1::2, 1::2] = frame[1::2, 1::2, 2]
    msg = Image(height=mosaic.shape[0], width=mosaic.shape[1], encoding='bayer_rggb8',
                step=mosaic.shape[1], data=mosaic.tobytes())
    pose = raw.send(msg, next_stamp())
    assert_pose_equal(pose, offline.predict(cv2.cvtColor(mosaic, cv2.COLOR_BayerBG2RGB)))


def test_jpeg_pose_equals_offline(jpeg, offline, frames):
    """JPEG CompressedImage: the pose of the decoded image, over sensor-data QoS."""
    msg = rgb_to_compressed(frames[4], 'jpeg', quality=90)
    stamp = next_stamp()
    pose = jpeg.send(msg, stamp)
    decoded = cv2.cvtColor(cv2.imdecode(np.frombuffer(msg.data, np.uint8), cv2.IMREAD_COLOR),
                           cv2.COLOR_BGR2RGB)
    assert_pose_equal(pose, offline.predict(decoded))
    assert pose.header.stamp == sec_to_stamp(stamp)
    png = rgb_to_compressed(frames[4], 'png')
    assert_pose_equal(jpeg.send(png, next_stamp()), offline.predict(frames[4]))


def _bad_raw_messages(frame: np.ndarray) -> dict[str, Image]:
    good = rgb_to_image(frame[:8, :8], 'rgb8')
    float_image = Image(height=4, width=4, encoding='32FC1', step=16, data=bytes(64))
    yuv = Image(height=4, width=4, encoding='yuv422', step=8, data=bytes(32))
    short = rgb_to_image(frame[:8, :8], 'rgb8')
    short.data = bytes(good.data)[:-10]
    zero = Image(height=0, width=0, encoding='rgb8', step=0, data=b'')
    narrow = rgb_to_image(frame[:8, :8], 'rgb8')
    narrow.step = 8
    return {'32FC1': float_image, 'yuv422': yuv, 'short': short, 'zero': zero,
            'narrow_step': narrow}


def test_bad_raw_messages_counted_node_keeps_running(raw, offline, frames):
    """Unknown encodings and malformed images are counted; the next good frame localizes."""
    for name, msg in _bad_raw_messages(frames[0]).items():
        raw.send_no_pose(msg, next_stamp(), 'bad')
    pose = raw.send(rgb_to_image(frames[1]), next_stamp())
    assert_pose_equal(pose, offline.predict(frames[1]))

    bad = raw.node.stats.snapshot()['bad']

    def diag_reports_bad():
        for array in list(raw.diagnostics):
            for status in array.status:
                values = {kv.key: kv.value for kv in status.values}
                if status.name == 'raw/camreloc: localizer' and \
                        int(values['bad_messages']) >= bad:
                    return values
        return None
    assert raw.harness.wait_for(diag_reports_bad, 3.0), 'diagnostics never reported them'
    values = diag_reports_bad()
    for key in ('rate_hz', 'latency_p50_ms', 'latency_p95_ms', 'dropped_frames',
                'gated_poses', 'model', 'device'):
        assert key in values
    assert 'cpu' in values['device']


def test_corrupt_jpeg_counted(jpeg, offline, frames):
    """A corrupt or truncated JPEG is a bad message; the next good one localizes."""
    good = rgb_to_compressed(frames[0], 'jpeg')
    corrupt = CompressedImage(format='jpeg', data=b'\xff\xd8\xff\xe0' + bytes(range(256)) * 4)
    truncated = CompressedImage(format='jpeg', data=bytes(good.data)[:len(good.data) // 3])
    not_jpeg = CompressedImage(format='jpeg', data=b'GIF89a' + bytes(100))
    depth = CompressedImage(format='16UC1; compressedDepth png', data=bytes(good.data))
    for msg in (corrupt, truncated, not_jpeg, depth):
        jpeg.send_no_pose(msg, next_stamp(), 'bad')
    assert_pose_equal(jpeg.send(good, next_stamp()), offline.predict(
        cv2.cvtColor(cv2.imdecode(np.frombuffer(good.data, np.uint8), cv2.IMREAD_COLOR),
                     cv2.COLOR_BGR2RGB)))


def test_temporal_model_equals_offline_windows(harness, gru, checkpoints, frames):
    """One frame at a time live == predict_frames offline, time-gap reset included."""
    base = next_stamp() + 10.0
    stamps = [base + 0.1 * i for i in range(5)] + [base + 0.4 + 3.0]   # gap > max_gap at 5
    offline_gru = InferenceEngine.from_checkpoint(checkpoints['gru'], device='cpu',
                                                  max_gap=1.0)
    expected = offline_gru.predict_frames(frames, stamps=stamps)
    assert [p.window for p in expected] == [1, 2, 3, 4, 4, 1]
    for frame, stamp, exp in zip(frames, stamps, expected):
        assert_pose_equal(gru.send(rgb_to_image(frame), stamp), exp)

    # ~/reset empties the window: the next frame is localized alone
    response = call_reset(harness, '/gru/camreloc/reset')
    assert response.success, response.message
    alone = offline_gru.predict_frames(frames[:1])[0]
    with_history = offline_gru.predict_frames(frames[5:] + frames[:1],
                                              stamps=[stamps[5], stamps[5] + 0.1])[1]
    assert not np.allclose(alone.position, with_history.position, atol=1e-4)
    assert_pose_equal(gru.send(rgb_to_image(frames[0]), stamps[5] + 0.1), alone)


def test_gate_drops_implausible_jump(harness, raw, offline, frames):
    """With gate.max_speed set live, a jump too fast is not published and is counted."""
    pos = [offline.predict(f).position for f in frames[:2]]
    dt = 0.1
    speed = float(np.linalg.norm(pos[1] - pos[0])) / dt
    assert speed > 0.1
    node = raw.node
    assert node.set_parameters([Parameter('gate.max_speed', value=speed / 2)])[0].successful
    try:
        assert call_reset(harness, '/raw/camreloc/reset').success
        t0 = next_stamp() + 10.0
        raw.send(rgb_to_image(frames[0]), t0)
        raw.send_no_pose(rgb_to_image(frames[1]), t0 + dt, 'gated')
        raw.send(rgb_to_image(frames[0]), t0 + 2 * dt)             # no motion: published
        raw.send(rgb_to_image(frames[1]), t0 + 2 * dt + 5.0)       # reference expired
        # the uncertainty gate: the model's position std is 5 m here
        assert node.set_parameters([Parameter('gate.max_speed', value=0.0),
                                    Parameter('gate.max_position_std', value=1.0)]
                                   )[0].successful
        raw.send_no_pose(rgb_to_image(frames[0]), t0 + 10.0, 'gated')
    finally:
        node.set_parameters([Parameter('gate.max_speed', value=0.0),
                             Parameter('gate.max_position_std', value=0.0)])
    raw.send(rgb_to_image(frames[0]), next_stamp() + 30.0)


def test_latest_frame_policy_drops_older_frames(raw, frames):
    """Frames faster than the model: older waiting frames are dropped, the newest is used."""
    before = raw.node.stats.snapshot()
    msgs = [rgb_to_image(frames[i % len(frames)]) for i in range(20)]
    stamps = [next_stamp() + 100.0 for _ in msgs]
    for msg, stamp in zip(msgs, stamps):   # 200 Hz: the reader's depth 1 keeps up
        msg.header.stamp = sec_to_stamp(stamp)
        raw.pub.publish(msg)
        time.sleep(0.005)
    last = stamp_to_ns(sec_to_stamp(stamps[-1]))
    assert raw.harness.wait_for(lambda: last in raw.poses, TIMEOUT_S)
    after = {k: v - before[k] for k, v in raw.node.stats.snapshot().items()
             if k in ('received', 'processed', 'dropped')}
    assert after['dropped'] > 0, after
    assert after['processed'] < after['received'], after
    assert after['processed'] + after['dropped'] == after['received'], after


def test_configure_params_locked_while_configured(raw):
    """Parameters read in on_configure cannot change silently while the node is configured."""
    result = raw.node.set_parameters([Parameter('input', value='compressed')])[0]
    assert not result.successful and 'on_configure' in result.reason
    assert raw.node.param('input') == 'raw'
    assert not raw.node.set_parameters([Parameter('qos.depth', value=0)])[0].successful


def test_missing_model_fails_configure_then_recovers(harness, checkpoints, capfd):
    """A missing model fails configure with a log naming the file; the node stays usable."""
    node = _localizer(harness, 'bad', model='/nonexistent/camreloc/model.pt')
    try:
        assert not node.is_active and node.engine is None
        assert '/nonexistent/camreloc/model.pt' in capfd.readouterr().err
        assert node.set_parameters([Parameter('model', value=str(checkpoints['reg']))]
                                   )[0].successful
        assert node.trigger_configure() == TransitionCallbackReturn.SUCCESS
        assert node.trigger_activate() == TransitionCallbackReturn.SUCCESS
        assert node.is_active and node.engine is not None
        assert node.trigger_deactivate() == TransitionCallbackReturn.SUCCESS
        assert node.trigger_cleanup() == TransitionCallbackReturn.SUCCESS
        assert node.engine is None and not node.is_active
    finally:
        harness.remove(node)


def test_pose_gate_rules():
    """Speed, angular speed and uncertainty rules; the reference expires after max_gap."""
    from camreloc_ros.core.inference.engine import Prediction
    from camreloc_ros.core.geometry import quat_from_rotvec
    from camreloc_ros.core.inference.live import PoseGate

    def pred(x: float, yaw_deg: float = 0.0, var: float = 0.01) -> Prediction:
        quat = quat_from_rotvec([0.0, 0.0, np.radians(yaw_deg)])
        return Prediction(np.array([x, 0.0, 0.0]), quat, np.eye(6) * var)

    gate = PoseGate()
    gate.max_speed, gate.max_angular_speed_rad, gate.max_gap = 1.0, np.radians(90.0), 1.0
    assert gate.check(0.0, pred(0.0)) is None                  # the first pose is accepted
    assert 'speed' in gate.check(0.1, pred(0.5))               # 5 m/s
    assert gate.check(0.2, pred(0.1)) is None                  # 0.5 m/s from the reference
    assert 'angular' in gate.check(0.3, pred(0.1, yaw_deg=30.0))   # 300 deg/s
    assert gate.check(2.0, pred(9.0, yaw_deg=90.0)) is None    # reference older than max_gap
    gate.max_position_std = 0.5
    assert 'std' in gate.check(2.1, pred(9.0, yaw_deg=90.0, var=1.0))
    gate.reset()
    gate.max_position_std = 0.0
    assert gate.check(2.2, pred(-50.0)) is None                # reset: no reference


def test_latest_slot_keeps_only_the_newest_item():
    """The hand-over of the node's worker and the refiner: newest item wins, close wakes."""
    import threading

    from camreloc_ros.core.inference.live import LatestSlot

    slot = LatestSlot()
    assert slot.put(1) is False
    assert slot.put(2) is True           # 1 was never taken: replaced, and the caller knows
    assert slot.take() == 2
    got = []
    consumer = threading.Thread(target=lambda: got.append(slot.take()))
    consumer.start()
    slot.close()                          # wakes the waiting consumer with None
    consumer.join(timeout=5.0)
    assert got == [None] and not consumer.is_alive()
    assert slot.put(3) is False and slot.take() is None   # closed: nothing comes out
    slot.open()
    assert slot.put(4) is False and slot.take() == 4
