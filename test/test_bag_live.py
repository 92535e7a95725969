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

"""Bags into live ROS 2 over real rclpy / Fast DDS: bag-play, and bag-eval --live on the node.

A JPEG bag of held-out hololens-office frames is played to an in-process localizer node (its
own namespace in a private domain); the poses it publishes must score as offline bag-eval.
"""

import json
from pathlib import Path
import subprocess
import sys
import threading
import time

from geometry_msgs.msg import PoseStamped
import numpy as np
import pytest
from rclpy.parameter import Parameter
from rclpy.qos import QoSProfile, QoSReliabilityPolicy
from support import allocate_domain, DATA_DIR, ros_harness
from sensor_msgs.msg import CameraInfo, CompressedImage

from camreloc_ros.core.bags import Bag, header_stamp_ns
from camreloc_ros.core.evaluation.metrics import load_per_frame
from camreloc_ros.core.models.pose_model import build_model
from camreloc_ros.ros.bag_player import BagPlayer, message_class
from camreloc_ros.ros.localizer_node import LocalizerNode
from camreloc_ros.tools import bag_eval, bag_from_dataset, cli

DOMAIN_ID = allocate_domain()
NS = 1_000_000_000
N_FRAMES = 12
JPEG_TOPIC = '/camera/image_raw/compressed'
GT_TOPIC = '/ground_truth/pose'
NODE_IMAGES = '/bag_live/image/compressed'     # the node lives in namespace bag_live
NODE_POSES = '/bag_live/pose'
ROOT = Path(__file__).resolve().parents[1]

pytestmark = [pytest.mark.timeout(180), pytest.mark.slow]   # real DDS


@pytest.fixture(scope='module')
def ros(tmp_path_factory):
    with ros_harness(DOMAIN_ID, tmp_path_factory.mktemp('ros_log'), 'bag_live_test') as ros:
        yield ros


@pytest.fixture(scope='module')
def bag(tmp_path_factory):
    """Held-out frames 75..86 as JPEG CompressedImage at 10 Hz, with ground truth."""
    return bag_from_dataset.main({'format': 'posed', 'split': 'test', 'limit': N_FRAMES,
                                  'compressed': True, 'rate': 10.0},
                                 {'data': DATA_DIR, 'out': tmp_path_factory.mktemp('b') / 'bag'})


@pytest.fixture(scope='module')
def offline(bag, ckpt, tmp_path_factory):
    out = bag_eval.main({'image_topic': JPEG_TOPIC, 'gt_topic': GT_TOPIC, 'device': 'cpu'},
                        {'bag': bag, 'checkpoint': ckpt, 'out': tmp_path_factory.mktemp('off')})
    return load_per_frame(out / 'per_frame.txt')


@pytest.fixture(scope='module')
def node(ros, ckpt):
    node = LocalizerNode(namespace='bag_live', context=ros.context, parameter_overrides=[
        Parameter('model', value=str(ckpt)), Parameter('input', value='compressed'),
        Parameter('device', value='cpu'), Parameter('base_frame', value='camera')])
    ros.add(node)
    assert node.is_active
    yield node
    ros.remove(node)


def _live_conf(**conf) -> dict:
    return dict({'image_topic': JPEG_TOPIC, 'gt_topic': GT_TOPIC, 'live': True,
                 'live_image_topic': NODE_IMAGES, 'pose_topic': NODE_POSES,
                 'wait_node': 20.0, 'pose_timeout': 10.0}, **conf)


def test_bag_eval_live_scores_like_offline(ros, node, bag, ckpt, offline, tmp_path, capsys):
    code = cli.main(['bag-eval', str(bag), '--live', '--model', str(ckpt), '--image-topic',
                     JPEG_TOPIC, '--gt-topic', GT_TOPIC, '--live-image-topic', NODE_IMAGES,
                     '--pose-topic', NODE_POSES, '--rate-factor', '0', '--device', 'cpu',
                     '--out', str(tmp_path)])
    printed = capsys.readouterr()
    assert code == 0, printed.err
    assert f'received {N_FRAMES} poses' in printed.out
    assert '| offline |' in printed.out and '| live    |' in printed.out
    live = load_per_frame(tmp_path / 'live' / 'per_frame.txt')
    assert live['names'] == offline['names']
    np.testing.assert_allclose(live['position'], offline['position'], atol=1e-4)
    np.testing.assert_allclose(live['pos_err_m'], offline['pos_err_m'], atol=1e-4)
    assert np.max(np.abs(live['rot_err_deg'] - offline['rot_err_deg'])) < 1e-2
    info = json.loads((tmp_path / 'live' / 'bag_eval.json').read_text())
    assert info['received'] == info['published'] == N_FRAMES and info['lockstep']
    assert 'largest position difference' in (tmp_path / 'comparison.md').read_text()


def test_bag_eval_live_without_lockstep_at_a_slow_rate(ros, node, bag, offline, tmp_path):
    """At 2.5 Hz the node keeps up: every image gets its pose, equal to offline."""
    out = bag_eval.main(_live_conf(lockstep=False, rate_factor=0.25), {'bag': bag,
                                                                       'out': tmp_path})
    info = json.loads((out / 'bag_eval.json').read_text())
    assert info['received'] == N_FRAMES and not info['lockstep']
    assert info['seconds'] > (N_FRAMES - 1) * 0.1 / 0.25 * 0.9   # paced, not a burst
    live = load_per_frame(out / 'per_frame.txt')
    np.testing.assert_allclose(live['position'], offline['position'], atol=1e-4)


def test_bag_eval_live_without_a_node_says_how_to_start_one(bag, ros, tmp_path):
    with pytest.raises(RuntimeError, match='no localizer found after 0.5 s.*camreloc node'):
        bag_eval.main(_live_conf(live_image_topic='/nobody/image', pose_topic='/nobody/pose',
                                 wait_node=0.5), {'bag': bag, 'out': tmp_path})


def test_temporal_model_live_windows_equal_offline(ros, tmp_path):
    """A GRU over two held-out blocks 7.6 s apart: both restart the window at the gap."""
    model = build_model('gru', head={'window': 4}, backbone={'pretrained': False})
    model.set_pose_stats([0.5, 0.2, -1.0], 3.0)
    gru = model.save_checkpoint(tmp_path / 'gru.pt')
    bag = bag_from_dataset.main({'format': 'posed', 'split': 'test', 'limit': 30,
                                 'compressed': True}, {'data': DATA_DIR, 'out': tmp_path / 'b'})
    node = LocalizerNode(namespace='bag_gru', context=ros.context, parameter_overrides=[
        Parameter('model', value=str(gru)), Parameter('input', value='compressed'),
        Parameter('device', value='cpu'), Parameter('base_frame', value='camera')])
    ros.add(node)
    try:
        out = bag_eval.main(_live_conf(live_image_topic='/bag_gru/image/compressed',
                                       pose_topic='/bag_gru/pose', rate_factor=0.0,
                                       device='cpu'),
                            {'bag': bag, 'checkpoint': gru, 'out': tmp_path / 'out'})
    finally:
        ros.remove(node)
    offline = load_per_frame(out / 'offline' / 'per_frame.txt')
    live = load_per_frame(out / 'live' / 'per_frame.txt')
    assert len(live['names']) == 30
    np.testing.assert_allclose(live['position'], offline['position'], atol=1e-4)


def test_bag_play_cli_publishes_everything_with_recorded_stamps(ros, bag):
    got: dict = {'gt': [], 'info': []}
    done = threading.Event()
    qos = QoSProfile(depth=100, reliability=QoSReliabilityPolicy.RELIABLE)

    def keep(key):
        def callback(msg):
            got[key].append(msg.header.stamp.sec * NS + msg.header.stamp.nanosec)
            if len(got['gt']) == len(got['info']) == N_FRAMES:
                done.set()
        return callback
    subs = [ros.node.create_subscription(PoseStamped, GT_TOPIC, keep('gt'), qos),
            ros.node.create_subscription(CameraInfo, '/camera/camera_info', keep('info'), qos)]
    try:
        proc = subprocess.run(
            [sys.executable, '-m', 'camreloc_ros.tools.cli', 'bag-play', str(bag), '--topics',
             GT_TOPIC, '/camera/camera_info', '--wait-subscribers', '--wait-timeout', '20',
             '--rate-factor', '4'], cwd=ROOT, capture_output=True, text=True, timeout=60)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        assert f'published {2 * N_FRAMES} messages' in proc.stdout
        assert done.wait(10.0), got
    finally:
        for sub in subs:
            ros.node.destroy_subscription(sub)
    with Bag(bag) as b:
        stamps = [header_stamp_ns(m.data) for m in b.messages([GT_TOPIC])]
    assert got['gt'] == stamps and got['info'] == stamps


def test_bag_player_paces_remaps_and_shortens_pauses(ros, tmp_path):
    """Two held-out blocks 7.5 s apart: played at 4x with pauses cut to 0.2 s."""
    bag = bag_from_dataset.main({'format': 'posed', 'split': 'test', 'limit': 30,
                                 'compressed': True}, {'data': DATA_DIR, 'out': tmp_path / 'b'})
    arrivals = []
    sub = ros.node.create_subscription(
        CompressedImage, '/replayed', lambda m: arrivals.append(time.monotonic()),
        QoSProfile(depth=100, reliability=QoSReliabilityPolicy.RELIABLE))
    try:
        with Bag(bag) as b:
            player = BagPlayer(ros.node, b, [JPEG_TOPIC], remap={JPEG_TOPIC: '/replayed'})
            assert player.wait_for_subscribers(10.0) == []
            stats = player.play(rate_factor=4.0, max_idle=0.2)
        assert stats.published == {'/replayed': 30}
        # 29 steps of 0.1 s, one pause of 7.6 s cut to 0.2 s: (2.8 + 0.2) / 4 = 0.75 s
        assert 0.7 < stats.seconds < 2.5
        assert ros.wait_for(lambda: len(arrivals) == 30, 10.0)
    finally:
        ros.node.destroy_subscription(sub)
    assert message_class('sensor_msgs/msg/CompressedImage') is CompressedImage
    with pytest.raises(ImportError, match='not installed here'):
        message_class('no_such_msgs/msg/Thing')
