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
"""tf2_msgs (built by scripts/build_ros_interfaces.sh or from ROS) imports and works over rclpy."""

import time

import pytest
from support import allocate_domain

UPSTREAM_TFMESSAGE_HASH = (
    'RIHS01_e369d0f05a23ae52508854b66f6aa0437f3449d652e8cbf22d5abe85d020f087')
DOMAIN_ID = allocate_domain()


def _wait_for(predicate, executor, timeout_s):
    """Spin ``executor`` until ``predicate()`` is true or ``timeout_s`` passes."""
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            return False
        executor.spin_once(timeout_sec=0.05)
    return True


def test_tf2_msgs_importable():
    """After `make setup` tf2_msgs/msg/TFMessage imports and constructs."""
    from tf2_msgs.msg import TFMessage

    message = TFMessage()
    assert list(message.transforms) == []


@pytest.fixture
def ros_env(monkeypatch, tmp_path):
    """Isolate rclpy: own domain, localhost discovery, logs in a temp dir."""
    monkeypatch.setenv('ROS_DOMAIN_ID', str(DOMAIN_ID))
    monkeypatch.setenv('ROS_AUTOMATIC_DISCOVERY_RANGE', 'LOCALHOST')
    monkeypatch.setenv('ROS_LOG_DIR', str(tmp_path / 'ros_log'))


def test_tfmessage_round_trip(ros_env):
    """A TFMessage published on /tf arrives at a subscriber with the upstream type hash."""
    import rclpy
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.qos import QoSDurabilityPolicy, QoSProfile, QoSReliabilityPolicy

    from geometry_msgs.msg import TransformStamped
    from tf2_msgs.msg import TFMessage

    context = rclpy.Context()
    rclpy.init(context=context, domain_id=DOMAIN_ID)
    try:
        node = rclpy.create_node('tf2_msgs_round_trip', context=context)
        executor = SingleThreadedExecutor(context=context)
        executor.add_node(node)
        qos = QoSProfile(depth=10, reliability=QoSReliabilityPolicy.RELIABLE,
                         durability=QoSDurabilityPolicy.VOLATILE)
        received = []
        node.create_subscription(TFMessage, '/tf', received.append, qos)
        publisher = node.create_publisher(TFMessage, '/tf', qos)

        assert _wait_for(lambda: publisher.get_subscription_count() > 0, executor, 10.0), \
            'subscriber never matched the /tf publisher'

        stamped = TransformStamped()
        stamped.header.frame_id = 'map'
        stamped.header.stamp.sec = 12
        stamped.child_frame_id = 'camera'
        stamped.transform.translation.x = 1.5
        stamped.transform.rotation.w = 1.0
        publisher.publish(TFMessage(transforms=[stamped]))

        assert _wait_for(lambda: len(received) > 0, executor, 10.0), 'no TFMessage received'
        got = received[0].transforms
        assert len(got) == 1
        assert got[0].header.frame_id == 'map'
        assert got[0].header.stamp.sec == 12
        assert got[0].child_frame_id == 'camera'
        assert got[0].transform.translation.x == pytest.approx(1.5)
        assert got[0].transform.rotation.w == pytest.approx(1.0)

        infos = node.get_publishers_info_by_topic('/tf')
        assert infos, 'the /tf publisher is not in the graph'
        assert infos[0].topic_type == 'tf2_msgs/msg/TFMessage'
        assert str(infos[0].topic_type_hash) == UPSTREAM_TFMESSAGE_HASH

        executor.remove_node(node)
        executor.shutdown()
        node.destroy_node()
    finally:
        rclpy.shutdown(context=context)
